"""``evaluate_run``: a trained run directory applied to a labelled manifest, measured honestly.

The run directory supplies everything: weights, preprocessing, the flips used for test-time
averaging, the temperature fitted on validation (``calibration.json``) and the operating threshold
chosen on validation (``threshold.json``). Nothing is re-tuned on the evaluated rows. Each image
becomes one row of ``predictions.csv`` (patient pseudonym, group columns, label, calibrated
score); metrics carry bootstrap CIs that resample patients; with ``groups`` the same call runs
the bias audit (:func:`medtl.evaluate.audit`) on those rows.

>>> import inspect
>>> list(inspect.signature(evaluate_run).parameters)[:3]
['run_dir', 'manifest', 'out_dir']
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EvaluationError

__all__ = ["evaluate_run", "predict_manifest"]


def _run_findings(cfg, names: list[str]) -> list[str] | None:
    """The findings of a run trained on one column of ``|``-joined finding names (its outputs'
    order), so that another CSV's findings line up with them; ``None`` for ordinary labels."""
    if len(cfg.label_columns) != 1:
        return None
    column = cfg.label_columns[0]
    if all(n.startswith(f"{column}=") for n in names):
        return None  # binary or multi-class on the column itself
    heads = list(dict.fromkeys(n.split("=", 1)[0] if "=" in n else n for n in names))
    return heads


def _records(run_dir: Path, manifest: str | os.PathLike, split: str | None):
    """The rows to evaluate, read with the run's label and patient columns: a whole CSV, a part
    of a ``.npz`` (``test`` by default), or a part of the run's own split of its own manifest."""
    import dataclasses

    from ..data import read_manifest
    from ..train.finetune import run_config, run_data

    cfg = run_config(run_dir)
    names = json.loads((run_dir / "labels.json").read_text()) if (run_dir / "labels.json").is_file() else []
    findings = _run_findings(cfg, names)
    path = os.fspath(manifest)
    is_npz = path.endswith(".npz")
    split = split or ("test" if is_npz else "all")
    if split not in ("all", "train", "val", "test"):
        raise EvaluationError(path, f"split must be all, train, val or test, not '{split}'")
    if is_npz:
        from ..data.npz import read_npz

        data, splits = read_npz(path)
        return cfg, data, list(range(len(data))) if split == "all" else list(getattr(splits, split))
    if split == "all":
        data = read_manifest(path, label_columns=cfg.label_columns, patient_column=cfg.patient_column,
                             findings=findings)  # fmt: skip
        return cfg, data, list(range(len(data)))
    if not cfg.manifest or os.path.realpath(cfg.manifest) != os.path.realpath(path):
        raise EvaluationError(path, f"--split {split} re-creates the run's own split, so it needs the manifest the "
                              f"run was trained on ({cfg.manifest or cfg.npz}); use --split all for another CSV")  # fmt: skip
    data, splits = run_data(dataclasses.replace(cfg, train_fraction=1.0))
    return cfg, data, list(getattr(splits, split))


def predict_manifest(
    run_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    *,
    split: str | None = None,
    groups: Sequence[str] = (),
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, Any]]:
    """Calibrated probabilities of a run for every readable row of a manifest.

    Returns ``(rows, skipped, info)``: one dict per image with ``path``, ``patient``, the group
    columns, the label column(s) and ``score`` (binary: P(positive)) or ``score_<k>`` per
    output; the ``{"path", "reason"}`` of unreadable rows; and ``info`` (labels, temperature,
    threshold, task). ``split``: ``all`` rows (a CSV's default), or ``train`` / ``val`` / ``test``
    of a ``.npz`` (default ``test``) or of the run's own split of the manifest it was trained on.
    ``groups`` must be group columns of the manifest (checked before any image is read).
    """
    import torch

    from ..data.dataset import prepare
    from ..tasks import task_for
    from ..train.finetune import load_run
    from ..train.inference import predict_logits
    from .calibration import apply_calibration, read_calibration

    run_dir = Path(run_dir)
    if not (run_dir / "model.pt").is_file():
        raise EvaluationError(run_dir, "not a run directory (no model.pt): train one with `medtl train`")
    cfg, data, indices = _records(run_dir, manifest, split)
    unknown = [g for g in groups if g not in data.group_columns]
    if unknown:
        from ..errors import suggest

        raise EvaluationError(
            manifest, f"no group column '{unknown[0]}'" + suggest(unknown[0], data.group_columns, listing="groups are")
        )
    model, spec, names = load_run(run_dir)
    cache = tempfile.mkdtemp(prefix="medtl-eval-")
    try:
        prepared = prepare(data, indices, spec, cache_dir=cache, progress=progress)
        if not prepared.indices:
            raise EvaluationError(manifest, f"none of its {len(indices)} images could be read")
        loader = torch.utils.data.DataLoader(prepared.dataset, batch_size=cfg.batch_size)
        logits, _ = predict_logits(model, loader, flips=cfg.flips if cfg.tta else (), device="cpu")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    task = task_for(data.label_columns, logits.shape[1])
    calibration = read_calibration(run_dir)
    temperature, fitted_on = float(calibration["temperature"]), calibration.get("fitted_on", "val")
    probs = apply_calibration(logits, calibration, task)
    threshold_file = run_dir / "threshold.json"
    threshold = json.loads(threshold_file.read_text())["threshold"] if threshold_file.is_file() else 0.5
    rows = []
    for k, i in enumerate(prepared.indices):
        rec = data.records[i]
        row: dict[str, Any] = {"path": rec.path, "patient": rec.patient, **rec.groups}
        row.update({c: (None if np.isnan(v) else v) for c, v in zip(data.label_columns, rec.labels, strict=True)})
        if task == "binary":
            row["score"] = float(probs[k, 1])
            row["prediction"] = int(probs[k, 1] >= threshold)
        else:
            row.update({f"score_{j}": float(p) for j, p in enumerate(probs[k])})
        rows.append(row)
    info = {"labels": names, "label_columns": list(data.label_columns), "temperature": temperature,
            "temperature_fitted_on": fitted_on, "calibration": calibration.get("method", "temperature"),
            "threshold": threshold, "task": task, "group_columns": list(data.group_columns)}  # fmt: skip
    return rows, prepared.failures, info


def evaluate_run(
    run_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    groups: Sequence[str] = (),
    split: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    min_group: int = 30,
    min_gap: float = 0.05,
    intersections: bool = False,
    age_bins: Sequence[float] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a run on a labelled manifest (or a ``.npz`` split) and write the results to ``out_dir``.

    Writes ``predictions.csv``, ``metrics.json`` (every metric with a 95 % CI, resampling patients,
    at the run's validation threshold, on temperature-calibrated probabilities), ``roc.png``,
    ``calibration.png`` and, for a binary task, the audit files (``audit.json``, ``groups.csv``,
    ``gaps.csv``, ``gaps.png``, ``audit_section.html``) over ``groups``. A multi-class or
    multi-label run is measured one class / label against the rest, each in its own sub-folder.

    Returns the content of ``metrics.json``.

    Raises:
        EvaluationError: not a run directory, no readable image, a missing label or group column.
    """
    from .audit import audit

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped, info = predict_manifest(run_dir, manifest, split=split, groups=groups, progress=progress)
    columns = write_rows(out / "predictions.csv", rows)
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    kw = dict(patient="patient", n_boot=n_boot, seed=seed, min_group=min_group, min_gap=min_gap,
              intersections=intersections, **({"age_bins": tuple(age_bins)} if age_bins else {}))  # fmt: skip
    result: dict[str, Any] = {
        "run": os.fspath(run_dir), "data": os.fspath(manifest), "task": info["task"], "n": len(rows),
        "skipped": skipped, "calibration": info["calibration"], "temperature": info["temperature"],
        "temperature_fitted_on": info["temperature_fitted_on"],
        "threshold": info["threshold"],
        "threshold_source": "threshold.json (chosen on validation)", "n_boot": n_boot, "seed": seed,
        "resampling_unit": "patient",
    }  # fmt: skip
    if info["task"] == "binary":
        res = audit(frame, info["label_columns"][0], "score", list(groups), threshold=info["threshold"], **kw)
        res.save(out)
        result.update(overall=res.overall, flags=res.flags)
    else:
        per: dict[str, Any] = {}
        targets = (
            [(c, c, f"score_{j}", None) for j, c in enumerate(info["label_columns"])]
            if info["task"] == "multilabel"
            else [(info["labels"][j], info["label_columns"][0], f"score_{j}", j) for j in range(len(info["labels"]))]
        )
        for name, label, score, positive in targets:
            res = audit(frame, label, score, list(groups), threshold=0.5, positive=positive, **kw)
            res.save(out / _folder(name))
            per[name] = {"overall": res.overall, "flags": res.flags, "folder": _folder(name)}
        result["per_label"] = per
        result["overall"] = _summary(rows, info)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=False, default=str) + "\n")
    return result


def write_rows(path: Path, rows: list[dict[str, Any]]) -> list[str]:
    """One CSV row per dict (columns in first-seen order, ``None`` as empty); returns the columns."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return columns


def _summary(rows: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """Point metrics over all outputs: macro AUROC/AUPRC and accuracy (multi-class), or per label
    and macro (multi-label); the per-class / per-label folders carry the CIs."""
    from .metrics import multiclass_metrics, multilabel_metrics

    k = len(info["labels"])
    scores = np.array([[r[f"score_{j}"] for j in range(k)] for r in rows], dtype=float)
    if info["task"] == "multiclass":
        y = np.array([r[info["label_columns"][0]] for r in rows], dtype=float)
        m = multiclass_metrics(y.astype(int), scores)
        keys = ("n", "macro_auroc", "macro_auprc", "accuracy", "balanced_accuracy", "ece", "notes")
    else:
        y = np.array([[np.nan if r[c] is None else r[c] for c in info["label_columns"]] for r in rows], dtype=float)
        m = multilabel_metrics(y, scores)
        keys = ("n", "macro_auroc", "macro_auprc", "ece", "notes")
    return {key: m.get(key) for key in keys}


def _folder(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
