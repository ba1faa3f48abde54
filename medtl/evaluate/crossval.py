"""k-fold cross-validation of a training config: every patient tested once, by a model that never
saw them, with the spread across folds and one pooled estimate.

Fold ``i`` of :func:`medtl.data.kfold_patients` (``with_test=True``) holds patients out for
testing, the next fold validates (early stopping, temperature, threshold) and the rest train.
The report gives each fold's held-out AUROC, their mean, SD and 95 % t-interval (the spread a
reader should expect from one split), and the AUROC of the pooled out-of-fold predictions with a
patient-bootstrap CI. Pooled scores come from k different models, each calibrated on its own
validation fold, which is why both numbers are reported.

>>> import inspect
>>> list(inspect.signature(cross_validate).parameters)[:3]
['cfg', 'out_dir', 'folds']
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["cross_validate"]


def cross_validate(
    cfg,
    out_dir: str | os.PathLike,
    folds: int = 5,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = False,
    resume: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``folds`` runs (``out_dir/fold_<i>``) and test each on its held-out patients.

    Writes ``out_dir/folds.json`` (per-fold and pooled results) and ``out_dir/predictions.csv``
    (every patient's out-of-fold score, with its fold). Binary tasks; a CSV manifest only (an
    ``npz`` comes with its official split).

    ``resume`` continues the folds already in ``out_dir`` (each only under its own configuration);
    ``resume=False`` replaces an earlier cross-validation there; ``overwrite`` another command's
    output (only the files it recorded).

    Raises:
        ConfigError: an ``npz`` config, fewer than 3 folds, or too few patients per class.
        OutputError: ``out_dir`` holds other output, is a file, or is being written.
    """
    from ..rundir import mark_complete, output_folder

    if cfg.npz or not cfg.manifest:
        raise ConfigError(cfg.npz or None, "cross-validation needs a manifest CSV (an npz has its official split)")
    from ..train.finetune import data_inputs

    with output_folder(out_dir, "cross-validate", inputs=data_inputs(cfg), overwrite=overwrite, resume=resume,
                       restart=not resume) as out:  # fmt: skip
        summary = _folds(cfg, out, folds, n_boot, seed, progress)
        mark_complete(out, "cross-validate")
    return summary


def _folds(cfg, out: Path, folds: int, n_boot: int, seed: int, progress: bool) -> dict[str, Any]:
    from scipy import stats

    from ..rundir import write_csv, write_json
    from ..train.finetune import finetune
    from .bootstrap import bootstrap_ci
    from .metrics import binary_metrics
    from .run import predict_manifest

    per_fold, pooled = [], []
    for i in range(folds):
        run = out / f"fold_{i}"
        result = finetune(dataclasses.replace(cfg, folds=folds, fold=i), run, progress=progress)
        rows, skipped, info = predict_manifest(run, cfg.manifest, split="test")
        if info["task"] != "binary":
            raise ConfigError(cfg.manifest, "cross-validation reports binary tasks only")
        label = info["label_columns"][0]
        y = np.array([r[label] for r in rows], dtype=float)
        s = np.array([r["score"] for r in rows], dtype=float)
        m = binary_metrics(y, s, threshold=info["threshold"])
        per_fold.append({"fold": i, "n_test": len(rows), "test_auroc": m["auroc"], "val_auroc": result.val_auroc,
                         "best_epoch": result.best_epoch, "skipped": len(skipped)})  # fmt: skip
        pooled += [{**r, "fold": i} for r in rows]
    values = np.array([f["test_auroc"] for f in per_fold if f["test_auroc"] is not None], dtype=float)
    summary: dict[str, Any] = {"folds": per_fold, "k": folds, "seed": cfg.seed}
    if len(values):
        summary["mean"], summary["sd"] = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None
    if len(values) > 1:
        half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
        summary["ci95"] = [summary["mean"] - half, summary["mean"] + half]
    label = cfg.label_columns[0]
    y = np.array([r[label] for r in pooled], dtype=float)
    s = np.array([r["score"] for r in pooled], dtype=float)
    boot = bootstrap_ci(y, s, cluster=[r["patient"] for r in pooled], n_boot=n_boot, seed=seed)
    summary["pooled"] = {"n": len(pooled), "auroc": boot["estimate"]["auroc"], "auroc_ci": boot["ci"]["auroc"],
                         "n_boot": n_boot, "resampling_unit": boot["unit"]}  # fmt: skip
    write_csv(out / "predictions.csv", pooled)
    write_json(out / "folds.json", summary)
    return summary
