"""Patient-level, stratified splits: no patient ever appears in two splits.

Built on scikit-learn's ``StratifiedGroupKFold`` (groups = patients, strata = the first
label), so splits are as balanced as whole patients allow and reproducible from the seed.
Patients that share an identical or near-identical image (:mod:`medtl.data.duplicates`) can be
joined into one unit first (:func:`join_duplicates`), so the copy never sits in another part.

A run stores its split (:func:`split_record`) as keys of its images, not indices: evaluating the
run's test part later picks exactly those images (:func:`stored_part`), whatever was added to or
removed from the manifest since, and says how many are gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from .manifest import Manifest

__all__ = [
    "Split", "split_patients", "kfold_patients", "join_duplicates", "record_key", "image_key", "split_record",
    "stored_part",
]  # fmt: skip


@dataclass(frozen=True)
class Split:
    """Indices into ``manifest.records`` for each part."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...] = ()


def _arrays(manifest: Manifest, groups=None):
    import numpy as np

    y = np.array([r.labels[0] for r in manifest.records], dtype=float)
    y = np.where(np.isnan(y), -1, y)  # unknown first label: its own stratum
    groups = np.array([r.patient for r in manifest.records] if groups is None else list(groups))
    return y, groups


def _check_classes(manifest: Manifest, n_parts: int, groups=None) -> None:
    per_class: dict[float, set] = {}
    units = [r.patient for r in manifest.records] if groups is None else list(groups)
    for r, unit in zip(manifest.records, units, strict=True):
        per_class.setdefault(r.labels[0], set()).add(unit)
    small = {k: len(v) for k, v in per_class.items() if len(v) < n_parts and not math.isnan(k)}
    if small:
        detail = ", ".join(f"label {k:g}: {n} patient(s)" for k, n in sorted(small.items()))
        joined = "; patients sharing an identical image count as one (dedup: false keeps them apart)" if groups else ""
        raise ConfigError(
            manifest.source, f"too few patients per class for a {n_parts}-way stratified split ({detail}){joined}"
        )


def _fold_indices(manifest: Manifest, n_splits: int, seed: int, groups=None):
    from sklearn.model_selection import StratifiedGroupKFold

    y, groups = _arrays(manifest, groups)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [tuple(sorted(int(i) for i in test)) for _, test in cv.split(y, y, groups)]


def split_patients(
    manifest: Manifest, *, val: float = 0.15, test: float = 0.15, seed: int = 0, groups=None
) -> Split:
    """Train / validation / test indices with whole patients in each part, stratified by label.

    Fractions are approximate (whole patients, folds of size 1/k): ``val`` and ``test`` are
    rounded to the nearest fold of a k-fold split with k = round(1 / min(val, test)).
    ``groups`` (one unit per record, e.g. from :func:`join_duplicates`) replaces the patients.

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
    _check_classes(manifest, k, groups)
    folds = _fold_indices(manifest, k, seed, groups)
    n_val = max(1, round(val * k)) if val > 0 else 0
    n_test = max(1, round(test * k)) if test > 0 else 0
    if n_val + n_test >= k:
        raise ConfigError(None, f"val={val} and test={test} leave nothing to train on")
    test_idx = sorted(i for f in folds[:n_test] for i in f)
    val_idx = sorted(i for f in folds[n_test : n_test + n_val] for i in f)
    train_idx = sorted(i for f in folds[n_test + n_val :] for i in f)
    return Split(tuple(train_idx), tuple(val_idx), tuple(test_idx))


def kfold_patients(
    manifest: Manifest, k: int = 5, *, seed: int = 0, with_test: bool = False, groups=None
) -> list[Split]:
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
    _check_classes(manifest, k, groups)
    folds = _fold_indices(manifest, k, seed, groups)
    every = set(range(len(manifest)))
    if not with_test:
        return [Split(tuple(sorted(every - set(f))), f) for f in folds]
    return [
        Split(tuple(sorted(every - set(f) - set(folds[(i + 1) % k]))), folds[(i + 1) % k], f)
        for i, f in enumerate(folds)
    ]


def join_duplicates(manifest: Manifest, duplicate_groups) -> list[str]:
    """One split unit per record: its patient, or, for patients that share a duplicate image, one
    unit for all of them (transitively), so the copies stay in one part.

    >>> from medtl.data.manifest import Record
    >>> m = Manifest([Record(f"{i}.png", (0.0,), p) for i, p in enumerate("abcc")], ("label",), (), "m.csv")
    >>> join_duplicates(m, [[0, 2]])
    ['a', 'b', 'a', 'a']
    """
    parent: dict[str, str] = {}

    def root(p: str) -> str:
        while parent.get(p, p) != p:
            p = parent[p]
        return p

    for group in duplicate_groups:
        patients = [manifest.records[i].patient for i in group]
        first = root(patients[0])
        for p in patients[1:]:
            other = root(p)
            if other != first:
                parent[other] = first
    return [root(r.patient) for r in manifest.records]


def record_key(manifest: Manifest, index: int) -> str:
    """A stable key of one record: its path as the manifest writes it (and its series), salted and
    hashed (:func:`medtl.io.phi.pseudonym`), so a stored split names no file. An edited copy of the
    manifest, or the manifest moved together with relative image paths, gives the same keys.
    ``npz`` items keep their official ``split/index``.
    """
    rec = manifest.records[index]
    if rec.path.startswith("npz://"):
        return rec.path.rpartition("#")[2]
    return image_key(rec.ref or rec.path, rec.series)


def image_key(rel: str, series: str | None = None) -> str:
    """The one key every command gives an image: its path relative to the folder the command was
    given (a manifest: as the manifest writes it), and its series, salted and hashed
    (:func:`medtl.io.phi.pseudonym`). ``medtl predict``, ``explain`` and ``evaluate`` (with
    ``--redact-paths``), the report and its verdicts name one image by the same key, so their
    rows join; it names no file, and stays the same when the folder moves.

    >>> image_key("p001/IM1.dcm") == image_key("p001" + chr(92) + "IM1.dcm") != image_key("p001/IM1.dcm", "s1")
    True
    """
    from ..io.phi import pseudonym

    return pseudonym(rel.replace("\\", "/") + (f"#{series}" if series else ""), "image")


def _label_counts(manifest: Manifest, idx) -> dict[str, dict[str, int]]:
    """Images per value of each label column in one part (``unknown`` for an empty cell): the
    events per partition a paper reports (TRIPOD+AI 20, CLAIM 35)."""
    out: dict[str, dict[str, int]] = {}
    for c, column in enumerate(manifest.label_columns):
        tally: dict[str, int] = {}
        for i in idx:
            v = manifest.records[i].labels[c]
            name = "unknown" if v != v else (str(int(v)) if float(v).is_integer() else str(v))
            tally[name] = tally.get(name, 0) + 1
        out[column] = dict(sorted(tally.items()))
    return out


def split_record(manifest: Manifest, split: Split, description: str, **extra) -> dict:
    """What a run stores of its split: the keys of every part, its size in images and patients,
    how it was made (``description``) and anything in ``extra`` (duplicates joined ...)."""
    parts = {"train": split.train, "val": split.val, "test": split.test}
    record = {"description": description, "patient_column": manifest.patient_column, **extra}
    record["counts"] = {
        name: {"images": len(idx), "patients": len({manifest.records[i].patient for i in idx}),
               "labels": _label_counts(manifest, idx)}
        for name, idx in parts.items()
    }  # fmt: skip
    record["keys"] = {name: [record_key(manifest, i) for i in idx] for name, idx in parts.items()}
    return record


def stored_part(manifest: Manifest, stored: dict, part: str) -> tuple[list[int], dict]:
    """Indices of the manifest rows that a run's stored split put in ``part``, and an account:
    ``{"stored", "found", "missing"}`` (stored members no longer in the manifest)."""
    wanted = set(stored["keys"][part])
    keys = [record_key(manifest, i) for i in range(len(manifest))]
    found = [i for i, key in enumerate(keys) if key in wanted]
    present = {keys[i] for i in found}
    return found, {"stored": len(wanted), "found": len(found), "missing": len(wanted - present)}
