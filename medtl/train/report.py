"""What a run says about itself: learning curves and the model card draft.

Both are written from plain results (the CSV logs, the resolved config, the calibration record);
nothing here imports Lightning.
"""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig

__all__ = ["write_curves", "model_card", "held_out_summary", "discrimination_section"]


def write_curves(run_dir: Path) -> None:
    """``curves.csv`` and ``curves.png`` from the run's CSV logs (every version: a resumed run
    logs to the next one, and its rows override what it repeated)."""
    import csv

    from ..rundir import atomic_path, write_csv

    sources = sorted((run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not sources:
        return
    by_epoch: dict[int, dict] = {}
    for src in sources:
        with open(src, newline="") as fh:
            for record in csv.DictReader(fh):
                e = int(float(record.get("epoch") or 0))
                by_epoch.setdefault(e, {"epoch": e}).update({k: v for k, v in record.items() if v and k != "step"})
    cols = ["epoch", "train_loss", "val_loss", "val_auroc"]
    write_csv(run_dir / "curves.csv", [by_epoch[e] for e in sorted(by_epoch)], cols)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = sorted(by_epoch)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (("train_loss", a), ("val_loss", a), ("val_auroc", b)):
        xs = [e for e in epochs if key in by_epoch[e]]
        ax.plot(xs, [float(by_epoch[e][key]) for e in xs], marker="o", label=key)
    a.set(xlabel="epoch", ylabel="loss"), b.set(xlabel="epoch", ylabel="validation AUROC")
    a.legend(), b.legend()
    fig.tight_layout()
    with atomic_path(run_dir / "curves.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _calibration_line(cal: dict) -> str:
    method = cal.get("method", "temperature")
    if cal.get("fitted_on") != "val":
        return (f"**none** — {cal.get('fitted_on', 'not fitted')}: validation is too small to calibrate, so "
                "probabilities are the network's raw outputs; treat them as scores, not risks")  # fmt: skip
    what = {"none": "none (the raw outputs had the lowest cross-validated NLL)",
            "temperature": f"temperature scaling (T = {cal.get('temperature', 1.0):.3f})",
            "platt": "Platt scaling (a slope and an intercept per output)",
            "vector": "vector scaling (a slope and an intercept per class)"}[method]  # fmt: skip
    ece = ""
    if cal.get("ece_before") is not None:
        ece = f"; validation ECE {cal['ece_before']:.3f} → {cal['ece_after']:.3f} on {cal['n']} images"
    return f"{what}, chosen by {cal.get('chosen_by', 'validation')}{ece} (`calibration.json`)"


def _ensemble_line(cfg: TrainConfig) -> str:
    if cfg.ensemble <= 1:
        return ""
    return (f"\n- **Ensemble**: {cfg.ensemble} members (seeds {cfg.seed}..{cfg.seed + cfg.ensemble - 1}, one split, "
            "each a run under `members/`), probabilities averaged; calibration and threshold fitted on the "
            "ensemble's validation outputs")  # fmt: skip


def held_out_summary(probs, ys, patients, names: list[str], task: str, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The run's held-out discrimination: AUROC with a 95 % patient-bootstrap CI on the test
    split, per output (one for a binary run), and the range of calibrated scores it leaves.

    ``probs`` (N, K) calibrated probabilities, ``ys`` (N, L) labels (NaN: unlabelled), one
    ``patients`` id per row. A binary run's figure is at the top level (``auroc``, ``auroc_ci``,
    ``n``, ``n_pos``, ``n_patients``, ``score_range``); a multi-output run's under ``per_label``.

    >>> import numpy as np
    >>> out = held_out_summary(np.array([[0.8, 0.2], [0.3, 0.7]] * 10), np.array([[0], [1]] * 10), list(range(20)),
    ...                    ["label=0", "label=1"], "binary", n_boot=50)
    >>> out["auroc"], out["auroc_ci"], out["n"], out["n_pos"]
    (1.0, [1.0, 1.0], 20, 10)
    """
    import numpy as np

    from ..evaluate.bootstrap import bootstrap_ci
    from ..report.trust import score_range

    probs, ys = np.asarray(probs, float), np.asarray(ys, float)
    if task == "binary":
        targets = [(None, ys[:, 0] == 1, probs[:, 1], np.isfinite(ys[:, 0]))]
    elif task == "multiclass":
        targets = [(n, ys[:, 0] == k, probs[:, k], np.isfinite(ys[:, 0])) for k, n in enumerate(names)]
    else:
        targets = [(n, ys[:, k] == 1, probs[:, k], np.isfinite(ys[:, k])) for k, n in enumerate(names)]
    out: dict = {"split": "test", "n_boot": n_boot, "unit": "patient"}
    per = {}
    for name, y, s, keep in targets:
        y, s, who = y[keep].astype(int), s[keep], [p for p, k in zip(patients, keep, strict=True) if k]
        part = {"n": int(len(y)), "n_pos": int(y.sum()), "n_patients": len(set(who)), "auroc": None, "auroc_ci": None}
        if len(y) and 0 < y.sum() < len(y):
            boot = bootstrap_ci(y, s, cluster=who, n_boot=n_boot, seed=seed)
            part.update(auroc=boot["estimate"]["auroc"], auroc_ci=boot["ci"]["auroc"])
        part["score_range"] = score_range(s.tolist(), y.tolist())
        per[name] = part
    if task == "binary":
        out.update(per[None])
    else:
        out["per_label"] = per
    return out


def discrimination_section(test: dict | None, cfg: TrainConfig) -> str:
    """The card's first section: the held-out AUROC with its CI, or why there is none, in words
    that do not let a chance-level model read as a working one."""
    if not test:
        return ("**Unknown.** This run has no held-out test split (`test_fraction` "
                f"{cfg.test_fraction:g}): measure it with `medtl evaluate RUN DATA` on patients it never saw "
                "before reading anything else on this card.")  # fmt: skip
    parts = [(None, test)] if "per_label" not in test else list(test["per_label"].items())
    lines = []
    for name, part in parts:
        label = f"{name}: " if name is not None else ""
        ci = part.get("auroc_ci")
        if part.get("auroc") is None:
            lines.append(f"- {label}test AUROC undefined ({part['n']} images, {part['n_pos']} positive: one class only)")
            continue
        value = f"{part['auroc']:.3f}" + (f" (95 % CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else " (no CI)")
        verdict = (" — **not shown to separate the classes**: the interval includes 0.5 (chance)"
                   if not ci or ci[0] <= 0.5 else "")  # fmt: skip
        lines.append(f"- {label}**test AUROC {value}** on {part['n']} images of {part['n_patients']} patients "
                     f"({part['n_pos']} positive){verdict}")  # fmt: skip
    return ("\n".join(lines) + "\n\nThe test split took no part in training, the choice of epoch, calibration or the "
            "threshold; intervals resample patients. Data from another hospital, scanner or population can differ.")


def _intended_use(cfg: TrainConfig) -> str:
    text = " ".join(cfg.intended_use.split())
    return text or ("Not stated: set `intended_use` in the training config (what the model is for, on whom, "
                    "and who reads its output).")  # fmt: skip


def model_card(cfg: TrainConfig, spec, result: dict, calibration: dict, split: dict) -> str:
    """The model card draft (Markdown). ``result``: ``val_auroc``, ``best_epoch``, ``n_val``,
    ``skipped``, ``threshold``, ``rule``; ``split``: the run's ``split.json`` summary. Names no
    path: only the data file's name, which a user chose."""
    data = Path(cfg.npz or cfg.manifest).name
    channels = spec.extra.get("channels_rule", f"{spec.channels} channel(s)")
    return f"""# Model card (draft)

## Discrimination on held-out data
{discrimination_section(result.get("test"), cfg)}

## Details
- **Backbone**: {cfg.backbone}, pretrained: {cfg.pretrained or "none"}, {cfg.spatial_dims}D, input {list(cfg.size)}
- **Input**: {spec.channels} channel(s), preset {spec.preset} ({channels})
- **Task**: {", ".join(cfg.label_columns)} from `{data}`
- **Split**: {split["description"]}
- **Training**: strategy {cfg.strategy}, lr {cfg.lr}, {cfg.epochs} epochs max (best epoch {result["best_epoch"]}), seed {cfg.seed}{_ensemble_line(cfg)}
- **Validation AUROC**: {result["val_auroc"]:.3f} on {result["n_val"]} images. Not a test result.
- **Calibration**: {_calibration_line(calibration)}
- **Operating point**: threshold {result["threshold"]:.3f} ({result["rule"]}) on calibrated validation probabilities
- **Out-of-distribution flag**: {result.get("ood") or "none"} (`ood.npz`, `familiar.json`; `medtl predict` does not assess a flagged image)
- **Skipped records**: {len(result["skipped"])}

## Intended use
{_intended_use(cfg)}

## Known limits
- Validated only on data like the training manifest; check subgroups (`medtl audit`) before use.
- Probabilities are calibrated on the validation split only; check calibration on your own data
  with `medtl evaluate` before reading them as risks.
- The out-of-distribution flag catches images whose embedding is far from the training images
  (another modality or body part, a photograph); shifts the embedding does not see pass unflagged.
- Research use only; not a medical device.
"""
