"""Patient-level, stratified splits: no patient ever appears in two splits.

Built on scikit-learn's ``StratifiedGroupKFold`` (groups = patients, strata = the first
label), so splits are as balanced as whole patients allow and reproducible from the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from .manifest import Manifest

__all__ = ["Split", "split_patients", "kfold_patients"]


@dataclass(frozen=True)
class Split:
    """Indices into ``manifest.records`` for each part."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...] = ()


def _arrays(manifest: Manifest):
    import numpy as np

    y = np.array([r.labels[0] for r in manifest.records], dtype=float)
    y = np.where(np.isnan(y), -1, y)  # unknown first label: its own stratum
    groups = np.array([r.patient for r in manifest.records])
    return y, groups


def _check_classes(manifest: Manifest, n_parts: int) -> None:
    per_class: dict[float, set] = {}
    for r in manifest.records:
        per_class.setdefault(r.labels[0], set()).add(r.patient)
    small = {k: len(v) for k, v in per_class.items() if len(v) < n_parts and not math.isnan(k)}
    if small:
        detail = ", ".join(f"label {k:g}: {n} patient(s)" for k, n in sorted(small.items()))
        raise ConfigError(
            manifest.source, f"too few patients per class for a {n_parts}-way stratified split ({detail})"
        )


def _fold_indices(manifest: Manifest, n_splits: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    y, groups = _arrays(manifest)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [tuple(sorted(int(i) for i in test)) for _, test in cv.split(y, y, groups)]


def split_patients(manifest: Manifest, *, val: float = 0.15, test: float = 0.15, seed: int = 0) -> Split:
    """Train / validation / test indices with whole patients in each part, stratified by label.

    Fractions are approximate (whole patients, folds of size 1/k): ``val`` and ``test`` are
    rounded to the nearest fold of a k-fold split with k = round(1 / min(val, test)).

    Example:
        >>> from pathlib import Path
        >>> from medtl.data import read_manifest
        >>> m = read_manifest(Path(__file__).resolve().parents[2] / "sample_data" / "labels.csv")
        >>> s = split_patients(m, seed=0)
        >>> len(s.train) + len(s.val) + len(s.test) == len(m)
        True
    """
    parts = [f for f in (val, test) if f > 0]
    if not parts:
        raise ConfigError(None, "need a validation or a test fraction above 0")
    k = max(2, round(1 / min(parts)))
    _check_classes(manifest, k)
    folds = _fold_indices(manifest, k, seed)
    n_val = max(1, round(val * k)) if val > 0 else 0
    n_test = max(1, round(test * k)) if test > 0 else 0
    if n_val + n_test >= k:
        raise ConfigError(None, f"val={val} and test={test} leave nothing to train on")
    test_idx = sorted(i for f in folds[:n_test] for i in f)
    val_idx = sorted(i for f in folds[n_test : n_test + n_val] for i in f)
    train_idx = sorted(i for f in folds[n_test + n_val :] for i in f)
    return Split(tuple(train_idx), tuple(val_idx), tuple(test_idx))


def kfold_patients(manifest: Manifest, k: int = 5, *, seed: int = 0, with_test: bool = False) -> list[Split]:
    """k cross-validation splits over whole patients, stratified by label.

    Without ``with_test``: fold i validates, the others train. With it: fold i is held out as
    the test part, fold i+1 (cyclically) validates (early stopping, calibration, threshold) and
    the other k-2 train, so every patient is tested exactly once and never tunes its own model.

    Example:
        >>> from pathlib import Path
        >>> from medtl.data import read_manifest
        >>> m = read_manifest(Path(__file__).resolve().parents[2] / "sample_data" / "cxr.csv")
        >>> folds = kfold_patients(m, k=4, with_test=True)
        >>> sorted(i for f in folds for i in f.test) == list(range(len(m)))
        True
    """
    if k < 2 or (with_test and k < 3):
        raise ConfigError(None, f"k-fold needs k >= {3 if with_test else 2}, got {k}")
    _check_classes(manifest, k)
    folds = _fold_indices(manifest, k, seed)
    every = set(range(len(manifest)))
    if not with_test:
        return [Split(tuple(sorted(every - set(f))), f) for f in folds]
    return [
        Split(tuple(sorted(every - set(f) - set(folds[(i + 1) % k]))), folds[(i + 1) % k], f)
        for i, f in enumerate(folds)
    ]
