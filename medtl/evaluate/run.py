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

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EvaluationError, MedtlError

__all__ = ["evaluate_run", "predict_manifest", "select_rows", "shown_path"]


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


def _csv_columns(path: str) -> list[str]:
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh), [])
    except OSError:
        return []


def select_rows(run_dir: str | os.PathLike, manifest: str | os.PathLike, split: str | None):
    """``(cfg, manifest, indices, notes)``: the rows to evaluate, read with the run's label
    columns: a whole CSV, a part of a ``.npz`` (``test`` by default), or a part of the split the run
    stored (``split.json``), found by key in whatever manifest is given."""
    run_dir = Path(run_dir)
    import dataclasses

    from ..data import read_manifest
    from ..data.splits import stored_part
    from ..rundir import read_config, read_split
    from ..train.finetune import run_data

    cfg = read_config(run_dir)
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
        return cfg, data, list(range(len(data))) if split == "all" else list(getattr(splits, split)), []
    # the run's own patient column where this CSV has it; else the usual ones, or none
    column = cfg.patient_column if cfg.patient_column in _csv_columns(path) else "auto"
    data = read_manifest(path, label_columns=cfg.label_columns, patient_column=column, findings=findings)
    if split == "all":
        return cfg, data, list(range(len(data))), []
    stored = read_split(run_dir)
    if stored is None:  # a run from before splits were stored: drawn again from its config
        if not cfg.manifest or os.path.realpath(cfg.manifest) != os.path.realpath(path):
            raise EvaluationError(path, f"--split {split} needs the manifest the run was trained on (this run "
                                  "predates stored splits); use --split all for another CSV")  # fmt: skip
        data, splits = run_data(dataclasses.replace(cfg, train_fraction=1.0))
        return cfg, data, list(getattr(splits, split)), [
            f"the {split} split was drawn again from the run's config (the run predates stored splits): it is the "
            "run's own only if the manifest has not changed since"
        ]
    indices, account = stored_part(data, stored, split)
    if not indices:
        raise EvaluationError(path, f"holds none of the run's {account['stored']} {split} images (the run stores "
                              "its split by image; is this the manifest it was trained on?)")  # fmt: skip
    notes = []
    if account["missing"]:
        notes.append(f"{account['missing']} of the run's {account['stored']} {split} images are no longer in the "
                     f"manifest; the other {account['found']} were scored")  # fmt: skip
    return cfg, data, indices, notes


def held_out(run_dir: str | os.PathLike, data, indices: Sequence[int]) -> dict[str, Any]:
    """How many of the evaluated rows the run trained or validated on: an evaluation is held out
    only when both counts are zero. The run's manifest itself is matched by the keys of its stored
    split; another CSV by the real files behind those keys (two datasets that both name their
    images ``images/img000.png`` are not the same images). ``checked`` is ``False`` where it
    cannot be known: a run that stores no split, or whose training manifest is gone.

    >>> import inspect
    >>> list(inspect.signature(held_out).parameters)
    ['run_dir', 'data', 'indices']
    """
    from ..data.splits import record_key
    from ..rundir import read_config, read_split

    stored, cfg = read_split(run_dir), read_config(run_dir)
    unknown = {"checked": False, "n": len(indices), "train": None, "val": None, "test": None}
    source = cfg.npz or cfg.manifest
    if not stored or "keys" not in stored or not source or not os.path.isfile(source):
        return unknown
    parts = {part: set(stored["keys"].get(part, [])) for part in ("train", "val", "test")}
    if os.path.realpath(source) == os.path.realpath(data.source or ""):
        keys = [record_key(data, i) for i in indices]
        return {"checked": True, "n": len(indices), **{p: sum(k in ks for k in keys) for p, ks in parts.items()}}
    if cfg.npz:  # npz items are keyed by their official split and index, inside that one file
        return {"checked": True, "n": len(indices), "train": 0, "val": 0, "test": 0}
    try:
        trained = _run_manifest(cfg)
    except MedtlError:
        return unknown
    files = {p: {os.path.realpath(r.path) for i, r in enumerate(trained.records) if record_key(trained, i) in ks}
             for p, ks in parts.items()}  # fmt: skip
    mine = [os.path.realpath(data.records[i].path) for i in indices]
    return {"checked": True, "n": len(indices), **{p: sum(f in fs for f in mine) for p, fs in files.items()}}


def _run_manifest(cfg):
    """The manifest a run was trained on, read as training read it."""
    from ..data import read_manifest

    column = cfg.patient_column if cfg.patient_column in _csv_columns(cfg.manifest) else "auto"
    return read_manifest(cfg.manifest, label_columns=cfg.label_columns, patient_column=column)


def _check_task(data, names: list[str], path) -> None:
    """Labels the run cannot predict: a binary run on labels 0..4, a run on other findings."""
    if len(data.label_columns) > 1:
        return
    values = sorted({r.labels[0] for r in data.records if not np.isnan(r.labels[0])})
    outside = [v for v in values if v != int(v) or not 0 <= v < len(names)]
    if outside:
        shown = ", ".join(f"{v:g}" for v in outside[:5])
        raise EvaluationError(path, f"label column '{data.label_columns[0]}' holds {shown}, but the run predicts "
                              f"{len(names)} classes (0..{len(names) - 1}): is this data of the task the run was "
                              "trained for?")  # fmt: skip


def _check_images(data, indices: list[int], spec, path) -> None:
    """The first readable image must have the run's number of dimensions (a 2D run on CT volumes)."""
    from ..data.npz import NPZ_SCHEME, load_npz_item
    from ..errors import MedtlError
    from ..io import load_image

    want = len(spec.size)
    for i in indices[:20]:
        rec = data.records[i]
        try:
            img = load_npz_item(rec.path) if rec.path.startswith(NPZ_SCHEME) else load_image(rec.path,
                                                                                              series=rec.series)
        except MedtlError:
            continue
        if img.ndim != want:
            raise EvaluationError(path, f"the run takes {want}D images, but its images are {img.ndim}D (e.g. "
                                  f"{shown_path(data, i)}): is this data of the task the run was trained for?")
        return


def shown_path(data, index: int, *, redact: bool = False) -> str:
    """A record's path as outputs show it: relative to the manifest's folder (an npz item by its
    split and index), or with ``redact`` its salted key (:func:`medtl.data.splits.record_key`)."""
    from ..data.splits import record_key

    rec = data.records[index]
    if redact:
        return record_key(data, index)
    if rec.path.startswith("npz://"):
        return rec.path.rpartition("#")[2]
    return os.path.relpath(rec.path, data.root).replace(os.sep, "/") if data.root else os.path.basename(rec.path)


def _check_run(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` as a path, when it holds a finished run's weights."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.pt").is_file():
        raise EvaluationError(run_dir, "not a run directory (no model.pt): train one with `medtl train`")
    return run_dir


def predict_manifest(
    run_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    *,
    split: str | None = None,
    groups: Sequence[str] = (),
    progress: bool = False,
    redact_paths: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, Any]]:
    """Calibrated probabilities of a run for every readable row of a manifest.

    Returns ``(rows, skipped, info)``: one dict per image with ``path`` (relative to the
    manifest's folder, or its salted key with ``redact_paths``), ``patient`` (a pseudonym), the
    group columns, the label column(s) and ``score`` (binary: P(positive)) or ``score_<k>`` per
    output; the ``{"path", "reason"}`` of unreadable rows; and ``info`` (labels, calibration,
    threshold, task, notes, and ``paths``: the key of each row to its full path, for the private
    key file). ``split``: ``all`` rows (a CSV's default), or ``train`` / ``val`` / ``test`` of a
    ``.npz`` (default ``test``) or of the split the run stored. ``groups`` must be group columns of
    the manifest (checked before any image is read).

    Raises:
        EvaluationError: not a finished run; labels or images of another task (naming the check
            that failed); no readable image (with the reason); an unknown group column.
    """
    import torch

    from ..data.dataset import prepare
    from ..progress import track
    from ..rundir import load_run
    from ..tasks import task_for
    from ..train.inference import predict_logits
    from .calibration import apply_calibration, read_calibration

    run_dir = _check_run(run_dir)
    cfg, data, indices, notes = select_rows(run_dir, manifest, split)
    unknown = [g for g in groups if g not in data.group_columns]
    if unknown:
        from ..errors import suggest

        raise EvaluationError(
            manifest, f"no group column '{unknown[0]}'" + suggest(unknown[0], data.group_columns, listing="groups are")
        )
    model, spec, names = load_run(run_dir)
    _check_task(data, names, manifest)
    _check_images(data, indices, spec, manifest)
    cache = tempfile.mkdtemp(prefix="medtl-eval-")
    try:
        prepared = prepare(data, indices, spec, cache_dir=cache, progress=progress)
        if not prepared.indices:
            reasons = sorted({f["reason"] for f in prepared.failures})
            raise EvaluationError(manifest, f"none of its {len(indices)} images could be read: {reasons[0]}"
                                  + (f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""))
        loader = torch.utils.data.DataLoader(prepared.dataset, batch_size=cfg.batch_size)
        batches = track(loader, "evaluate", "batch", total=len(loader), enabled=progress)
        logits, _ = predict_logits(model, batches, flips=cfg.flips if cfg.tta else (), device="cpu")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    task = task_for(data.label_columns, logits.shape[1])
    calibration = read_calibration(run_dir)
    temperature, fitted_on = float(calibration["temperature"]), calibration.get("fitted_on", "val")
    probs = apply_calibration(logits, calibration, task)
    threshold_file = run_dir / "threshold.json"
    threshold = json.loads(threshold_file.read_text())["threshold"] if threshold_file.is_file() else 0.5
    rows, paths = [], {}
    for k, i in enumerate(prepared.indices):
        rec = data.records[i]
        shown = shown_path(data, i, redact=redact_paths)
        paths[shown] = rec.path
        row: dict[str, Any] = {"path": shown, "patient": rec.patient, **rec.groups}
        row.update({c: (None if np.isnan(v) else v) for c, v in zip(data.label_columns, rec.labels, strict=True)})
        if task == "binary":
            row["score"] = float(probs[k, 1])
            row["prediction"] = int(probs[k, 1] >= threshold)
        else:
            row.update({f"score_{j}": float(p) for j, p in enumerate(probs[k])})
        rows.append(row)
    index_of = {rec.path: i for i, rec in enumerate(data.records)}
    skipped = [{"path": shown_path(data, index_of[f["path"]], redact=redact_paths), "reason": f["reason"]}
               for f in prepared.failures]  # fmt: skip
    info = {"labels": names, "label_columns": list(data.label_columns), "temperature": temperature,
            "temperature_fitted_on": fitted_on, "calibration": calibration.get("method", "temperature"),
            "threshold": threshold, "task": task, "group_columns": list(data.group_columns), "notes": notes,
            "paths": paths, "patient_column": data.patient_column,
            "held_out": held_out(run_dir, data, prepared.indices)}  # fmt: skip
    return rows, skipped, info


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
    overwrite: bool = False,
    redact_paths: bool = False,
) -> dict[str, Any]:
    """Evaluate a run on a labelled manifest (or a ``.npz`` split) and write the results to ``out_dir``.

    Writes ``predictions.csv``, ``metrics.json`` (every metric with a 95 % CI, resampling patients,
    at the run's validation threshold, on calibrated probabilities), ``roc.png``,
    ``calibration.png`` and, for a binary task, the audit files (``audit.json``, ``groups.csv``,
    ``gaps.csv``, ``gaps.png``, ``audit_section.html``) over ``groups``. A multi-class or
    multi-label run is measured one class / label against the rest, each in its own sub-folder.
    No output names a file by its full path: ``predictions.csv`` holds paths relative to the
    manifest's folder, or with ``redact_paths`` salted keys, whose paths go to the private
    ``path_keys.csv`` beside it (keep it out of anything you share).

    Returns the content of ``metrics.json``.

    Raises:
        EvaluationError: not a run directory, no readable image, a missing label or group column,
            data of another task.
        OutputError: ``out_dir`` is a run directory, a file, holds other output (without
            ``overwrite``) or is being written.
    """
    from ..data.manifest import image_folders
    from ..rundir import mark_complete, output_folder, weights_digest, write_csv, write_json
    from .audit import audit

    _check_run(run_dir)  # a wrong run is named as such, before where its output would go
    inputs = [run_dir, manifest, *image_folders(manifest)]
    with output_folder(out_dir, "evaluate", inputs=inputs, overwrite=overwrite) as out:
        rows, skipped, info = predict_manifest(run_dir, manifest, split=split, groups=groups, progress=progress,
                                               redact_paths=redact_paths)  # fmt: skip
        columns = write_csv(out / "predictions.csv", rows)
        if redact_paths:
            write_csv(out / "path_keys.csv", [{"key": k, "path": p} for k, p in info["paths"].items()])
        import pandas as pd

        frame = pd.DataFrame(rows, columns=columns)
        unit = "patient" if info["patient_column"] else None
        kw = dict(patient=unit, n_boot=n_boot, seed=seed, min_group=min_group, min_gap=min_gap,
                  intersections=intersections, **({"age_bins": tuple(age_bins)} if age_bins else {}))  # fmt: skip
        result: dict[str, Any] = {
            "run": Path(run_dir).resolve().name, "run_weights": weights_digest(run_dir), "data": Path(manifest).name,
            "split": split or "default",
            "task": info["task"], "n": len(rows), "skipped": skipped, "notes": info["notes"],
            "calibration": info["calibration"], "temperature": info["temperature"],
            "temperature_fitted_on": info["temperature_fitted_on"], "threshold": info["threshold"],
            "threshold_source": "threshold.json (chosen on validation)", "n_boot": n_boot, "seed": seed,
            "resampling_unit": "patient" if unit else "image (the manifest has no patient column)",
            "held_out": info["held_out"],
        }  # fmt: skip
        if info["task"] == "binary":
            res = audit(frame, info["label_columns"][0], "score", list(groups), threshold=info["threshold"], **kw)
            res.save(out)
            result.update(overall=res.overall, flags=res.flags, confounder_flags=res.confounder_flags,
                          groups=_group_status(res), excluded=res.settings.get("excluded"))  # fmt: skip
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
                per[name] = {"overall": res.overall, "flags": res.flags, "confounder_flags": res.confounder_flags,
                             "folder": _folder(name),
                             "groups": _group_status(res), "excluded": res.settings.get("excluded")}  # fmt: skip
            result["per_label"] = per
            result["overall"] = _summary(rows, info)
        write_json(out / "metrics.json", result)
        mark_complete(out, "evaluate")
    return result


def _group_status(res) -> dict[str, dict[str, str]]:
    """Each audited group's status (``ok``, ``too small`` ...), for the console summary."""
    return {attr: {name: g["status"] for name, g in groups.items()} for attr, groups in res.groups.items()}


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
