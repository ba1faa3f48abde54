"""What a run says about itself: learning curves and the model card draft.

Both are written from plain results (the CSV logs, the resolved config, the calibration record);
nothing here imports Lightning.
"""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig

__all__ = ["write_curves", "model_card"]


def write_curves(run_dir: Path) -> None:
    """``curves.csv`` and ``curves.png`` from the run's CSV logs (every version: a resumed run
    logs to the next one, and its rows override what it repeated)."""
    import csv
    import io

    from ..rundir import atomic_path, write_text

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
    buffer = io.StringIO()
    w = csv.DictWriter(buffer, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(by_epoch[e] for e in sorted(by_epoch))
    write_text(run_dir / "curves.csv", buffer.getvalue())
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

- **Backbone**: {cfg.backbone}, pretrained: {cfg.pretrained or "none"}, {cfg.spatial_dims}D, input {list(cfg.size)}
- **Input**: {spec.channels} channel(s), preset {spec.preset} ({channels})
- **Task**: {", ".join(cfg.label_columns)} from `{data}`
- **Split**: {split["description"]}
- **Training**: strategy {cfg.strategy}, lr {cfg.lr}, {cfg.epochs} epochs max (best epoch {result["best_epoch"]}), seed {cfg.seed}{_ensemble_line(cfg)}
- **Validation AUROC**: {result["val_auroc"]:.3f} on {result["n_val"]} images. Not a test result.
- **Calibration**: {_calibration_line(calibration)}
- **Operating point**: threshold {result["threshold"]:.3f} ({result["rule"]}) on calibrated validation probabilities
- **Out-of-distribution flag**: {result.get("ood") or "none"} (`ood.npz`; used by `medtl predict`)
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
