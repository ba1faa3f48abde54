"""``predict_folder``: a run over a folder tree, one row per image or series, that survives anything.

How it works, and why each piece is there:

* **Work list.** Step 1's scanner lists every image and series once (headers only, in parallel);
  every input it found, and every file it could not read, gets a place in one list sorted by
  relative path, and an ``index`` (its place) and a ``key`` (a salted pseudonym of its relative
  path and series: no identifier, stable on this machine).
* **Chunks.** The list is cut into chunks of ``batch_size`` consecutive inputs; a chunk is one
  batch through the network. ``--shard I/N`` takes chunks ``I, I+N, I+2N ...``: the same
  batches as a single run, so two shards merged give byte for byte the rows of one run.
* **Loading** runs in DataLoader worker processes while the network works on the previous
  batch. A file that cannot be read, or does not fit the run (dimensions, channels), becomes a
  row of ``errors.csv`` with the reason, never a stop.
* **Writing.** Each finished chunk appends its rows to ``predictions.csv`` and ``errors.csv``,
  flushed to disk, and then one line to a journal with both files' lengths. A process killed at
  any moment (``kill -9``, a lost node) leaves at worst a chunk half written; ``--resume``
  cuts both files back to the journal's last line and redoes only what is missing, so the final
  files equal those of an uninterrupted run.
* **Out-of-distribution.** Each row carries the Mahalanobis score of its embedding against the
  statistics the run stored at training time (:mod:`medtl.predict.ood`) and a flag above the
  run's threshold.

>>> parse_shard("1/4"), parse_shard(None)
((1, 4), (0, 1))
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..csvcells import read_dicts
from ..errors import ConfigError, ImageReadError, MedtlError, NoInputError, OutputError, is_fatal
from ..rundir import describe, environment_versions, mark_complete, output_folder, weights_digest, write_json

__all__ = ["predict_folder", "parse_shard", "Input", "collect_inputs", "encode_csv", "ERROR_COLUMNS", "PREDICTIONS",
           "ERRORS", "SUMMARY", "inputs_fingerprint", "NOT_ASSESSED"]  # fmt: skip

PREDICTIONS, ERRORS, SUMMARY = "predictions.csv", "errors.csv", "summary.json"
#: The ``decision`` of an input unlike the training data (``ood`` is 1, ``ood_reason`` says why):
#: the model's output does not apply to it, so it is not turned into a decision.
NOT_ASSESSED = "not assessed"
#: Columns of ``errors.csv``.
ERROR_COLUMNS = ("index", "key", "path", "stage", "error", "reason")
# Internal state of an output folder: what the job is (checked on resume) and which chunks are done.
JOB, JOURNAL = ".predict-job.json", ".predict-journal"
_ID_COLUMNS = ("index", "key", "path", "patient", "study", "series", "modality", "kind", "pixel_digest")
#: How inputs are keyed (:func:`input_key`); recorded in each job so a report finds old outputs' images.
KEY_SCHEME = "image"


@dataclass
class Input:
    """One input of the work list: a scanned image or series, or a file the scan could not read."""

    index: int
    key: str
    rel: str
    full: str
    series: str = ""
    row: dict | None = None
    error: dict | None = None

    def shown(self, redact: bool) -> str:
        return self.key if redact else self.rel


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"I/N"`` (0-based, ``0 <= I < N``) → ``(I, N)``; ``None`` → ``(0, 1)``.

    >>> parse_shard("3/2")
    Traceback (most recent call last):
    ...
    medtl.errors.ConfigError: --shard must be I/N with 0 <= I < N (e.g. 0/4), not '3/2'
    """
    if text is None:
        return (0, 1)
    if isinstance(text, tuple):
        i, n = text
    else:
        try:
            i, n = (int(v) for v in str(text).split("/"))
        except ValueError:
            i, n = -1, 0
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(None, f"--shard must be I/N with 0 <= I < N (e.g. 0/4), not '{text}'")
    return int(i), int(n)


def _torchrun_shard() -> tuple[int, int, int] | None:
    """``(rank, world size, local rank)`` when started by ``torchrun`` with several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def input_key(rel: str, series: str = "", scheme: str = "image") -> str:
    """The key of an input: :func:`medtl.data.splits.image_key` (what every command calls an image),
    or for a predict output written before keys were shared (``scheme="input"``), its own."""
    if scheme == "input":
        from ..io.phi import pseudonym

        return pseudonym(f"{rel}\x00{series}", "input")
    from ..data.splits import image_key

    return image_key(rel, series or None)


def collect_inputs(
    root: str | os.PathLike,
    *,
    workers: int | None = None,
    progress: bool = False,
    exclude: str | os.PathLike | None = None,
    key_scheme: str = KEY_SCHEME,
):
    """``(inputs, scan_result)``: the work list of a folder (or one file), sorted by relative path
    and series, each with its index and salted key (:func:`input_key`). Anything under ``exclude``
    (a predict output that an older medtl let lie inside the input tree) is left out."""
    from ..io.scan import scan

    root = os.path.abspath(os.fspath(root))
    result = scan(root, workers=workers, progress=progress)
    base = root if os.path.isdir(root) else os.path.dirname(root)

    def rel(path: str) -> str:
        return os.path.relpath(os.path.abspath(path), base).replace(os.sep, "/")

    entries = [(rel(r["path"]), r.get("series") or "", r, None) for r in result.rows]
    entries += [(rel(e["path"]), "", None, e) for e in result.errors]
    if exclude is not None:
        out = rel(os.fspath(exclude))
        if out != "." and not out.startswith("../"):
            entries = [e for e in entries if e[0] != out and not e[0].startswith(out + "/")]
    entries.sort(key=lambda e: (e[0], e[1], e[3] is not None))
    inputs = []
    for k, (r, series, row, error) in enumerate(entries):
        full = os.path.join(base, r) if r != "." else base
        inputs.append(Input(k, input_key(r, series, key_scheme), r, full, series, row, error))
    return inputs, result


def inputs_fingerprint(inputs: list[Input]) -> str:
    """A digest of a work list (relative paths and series): equal lists, equal digests."""
    h = hashlib.sha256()
    for it in inputs:
        h.update(f"{it.rel}\x00{it.series}\n".encode())
    return h.hexdigest()[:16]


def _scrub(text: str, it: Input, root: str, redact: bool) -> str:
    """An error text with the input's own path shown as outputs show it (its relative path, or
    its key with ``redact``), no absolute path left, and with ``redact`` no other path either."""
    import re

    shown = it.shown(redact)
    for p in sorted({it.full, os.path.realpath(it.full)}, key=len, reverse=True):
        text = text.replace(p, shown)
    for p in sorted({root, os.path.realpath(root)}, key=len, reverse=True):
        text = text.replace(p + os.sep, "").replace(p, ".")
    if redact:
        text = text.replace(it.rel, shown)
        text = re.sub(r"[^\s:'\"()]*/[^\s:'\"()]*", "<path>", text)  # another file's relative path
    return " ".join(text.split())


# ----------------------------------------------------------------------------- loading (workers)
class _Items:
    """Dataset over the work list: each item loaded and prepared for the run, or its error."""

    def __init__(self, spec, inputs: list[Input], root: str, redact: bool):
        self.spec, self.inputs, self.root, self.redact = spec, inputs, root, redact

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from ..data.familiar import input_facts
        from ..io import load_image
        from ..train.inference import prepare_input

        it = self.inputs[i]
        shown = it.shown(self.redact)
        if it.error is not None:
            return {"index": i, "stage": "scan", "error": it.error.get("error", "ImageReadError"),
                    "reason": _scrub(it.error.get("reason", ""), it, self.root, self.redact)}  # fmt: skip
        try:
            img = load_image(it.full, series=it.series or None)
            x, _ = prepare_input(img, self.spec)
            return {"index": i, "x": x[0], "digest": img.digest(), "facts": input_facts(img)}
        except MedtlError as exc:
            reason = exc.reason_for(it.full, shown)
            return {"index": i, "stage": "load", "error": type(exc).__name__,
                    "reason": _scrub(reason, it, self.root, self.redact)}  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - one strange file must not stop thousands
            return {
                "index": i,
                "stage": "load",
                "error": type(exc).__name__,
                "reason": _scrub(f"unexpected failure while reading: {exc}", it, self.root, self.redact),
            }


def _collate(items: list[dict]) -> dict[str, Any]:
    import torch

    good = [d for d in items if "x" in d]
    return {
        "indices": [d["index"] for d in good],
        "digests": [d["digest"] for d in good],
        "facts": [d["facts"] for d in good],  # what the run's rules judge (colour, modality, 2D/3D)
        "x": torch.stack([d["x"] for d in good]) if good else None,
        "errors": [d for d in items if "x" not in d],
        "all": [d["index"] for d in items],
    }


# ----------------------------------------------------------------------------- durable CSV output
def encode_csv(rows) -> bytes:
    """CSV lines (``\\n`` endings, UTF-8) of ``rows``, ready to append: the one format every
    ``predictions.csv`` and ``errors.csv`` is written in, so merged and resumed files compare by bytes."""
    from ..csvcells import csv_line

    return "".join(csv_line(row) for row in rows).encode("utf-8")


class _Output:
    """``predictions.csv`` and ``errors.csv`` appended chunk by chunk, with a journal of their
    lengths after each chunk, so a resumed job cuts both back to the last finished chunk. Every
    write reaches the disk before the journal says so; a failed one raises
    :class:`~medtl.errors.WriteError` (the job stops, unfinished, and ``--resume`` goes on)."""

    def __init__(self, out: Path, columns: list[str], resume: bool):
        from ..files import open_append

        self.out = out
        self.paths = {"pred": out / PREDICTIONS, "err": out / ERRORS}
        self.headers = {"pred": columns, "err": list(ERROR_COLUMNS)}
        self.done: set[int] = set()
        offsets = self._journal() if resume else None
        for name, path in self.paths.items():
            if offsets is not None and path.is_file() and path.stat().st_size >= offsets[name]:
                with open(path, "r+b") as fh:
                    fh.truncate(offsets[name])
            else:
                self.done.clear()
                offsets = None
                break
        if offsets is None:  # a new job (or state that cannot be trusted): headers only
            for name, path in self.paths.items():
                with open_append(path, truncate=True) as fh:
                    fh.write(encode_csv([self.headers[name]]))
            self._journal_line(-1, truncate=True)
        self.fh = {name: open_append(path) for name, path in self.paths.items()}

    def _journal(self) -> dict[str, int] | None:
        """The lengths of both files after the last finished chunk (and which chunks are done)."""
        journal = self.out / JOURNAL
        offsets = None
        if journal.is_file():
            # a line without its newline was cut by the kill: its digits may be a prefix of the truth
            for line in journal.read_text().split("\n")[:-1]:
                parts = line.split()
                if len(parts) == 3 and all(p.lstrip("-").isdigit() for p in parts):
                    chunk, pred, err = (int(p) for p in parts)
                    if chunk >= 0:
                        self.done.add(chunk)
                    offsets = {"pred": pred, "err": err}
        return offsets

    def _journal_line(self, chunk: int, truncate: bool = False) -> None:
        from ..files import open_append

        sizes = [self.paths[n].stat().st_size for n in ("pred", "err")]
        with open_append(self.out / JOURNAL, truncate=truncate) as fh:
            fh.write(f"{chunk} {sizes[0]} {sizes[1]}\n".encode())

    def write_chunk(self, chunk: int, rows: list[dict], errors: list[dict]) -> None:
        for name, data in (("pred", rows), ("err", errors)):
            if data:
                cols = self.headers[name]
                self.fh[name].write(encode_csv([[r.get(c, "") for c in cols] for r in data]))
        self._journal_line(chunk)
        self.done.add(chunk)

    def close(self) -> None:
        for fh in self.fh.values():
            fh.close()


# ----------------------------------------------------------------------------- the job
def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else ("inf" if value > 0 else "nan")


def _columns(labels: list[str], saliency: str | None, ensemble: bool = False) -> list[str]:
    cols = list(_ID_COLUMNS) + [f"p_{n}" for n in labels] + ["decision", "ood_score", "ood", "ood_reason"]
    if ensemble:
        cols.append("member_spread")
    if saliency:
        cols += ["saliency", "saliency_nifti", *SALIENCY_COLUMNS]
    return cols


#: What each map says beyond its files: the output it explains, its peak (one colour scale for a
#: report), and the shortcut check (:mod:`medtl.explain.anatomy`).
SALIENCY_COLUMNS = ("saliency_target", "saliency_peak", "anatomy_inside", "anatomy_area", "shortcut")


def _job_record(predictor, input_dir: str, inputs, scanned, shard, batch_size, saliency, redact, columns) -> dict:
    """Everything that makes a job this job: a finished or resumed output must match it whole."""
    from ..io.phi import pseudonym
    from ..rundir import decision_digest

    return {
        "run_weights": weights_digest(predictor.run_dir),
        "run_decisions": decision_digest(predictor.run_dir),
        # which folder, as a pseudonym: the job file names no path, --redact-paths or not
        "input": pseudonym(os.path.realpath(input_dir), "input-folder"),
        "input_fingerprint": inputs_fingerprint(inputs),
        "input_content": scanned.content_digest(),
        "inputs": len(inputs),
        "shard": list(shard),
        "batch_size": batch_size,
        "saliency": saliency,
        "redact_paths": redact,
        "columns": columns,
        "key_scheme": KEY_SCHEME,
    }


_DIFFERS = {
    "run_weights": "another run",
    "run_decisions": "the run's calibration, threshold or out-of-distribution statistics have changed since",
    "input": "another input folder",
    "input_fingerprint": "other inputs (files were added, removed or renamed since)",
    "input_content": "inputs that have changed since (a file was added, removed, replaced or edited)",
    "inputs": "another number of inputs", "shard": "another --shard", "batch_size": "another --batch-size",
    "saliency": "another --saliency", "redact_paths": "another --redact-paths", "columns": "other output columns",
    "key_scheme": "an older medtl",
    "assess_unfamiliar": "another --assess-unfamiliar (or an older medtl, which gave unfamiliar inputs decisions)",
}  # fmt: skip


def _check_resume(out: Path, job: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The previous job in ``out`` when it is continued (``None`` for a new one); refuse one that
    is not this job, naming every difference. Its thread count is kept: float sums in another order
    could change the last printed digit, and a resumed file must equal an uninterrupted one."""
    from ..rundir import read_json

    if not resume:
        return None
    old = read_json(out / JOB, "predict job record")
    finished = bool((describe(out) or {}).get("complete"))
    if old is None:
        if finished:
            raise OutputError(out, f"holds a finished job without its record ({JOB}), so it cannot be checked to "
                              "be this job: pass --overwrite to predict again, or give another -o")  # fmt: skip
        return None
    differ = [k for k in job if k != "threads" and old.get(k) != job[k]]
    if differ:
        said = "; ".join(_DIFFERS.get(k, k) for k in differ)
        state = "finished" if finished else "unfinished"
        raise OutputError(out, f"holds a {state} job that differs from this one ({said}): resume only the same run, "
                          "input and options; pass --overwrite to start again, or give another -o")  # fmt: skip
    return old


def _whole(out: Path) -> dict[str, Any]:
    """The summary of a finished job, once every file it wrote is checked to be there."""
    _check_whole(out, (PREDICTIONS, ERRORS, SUMMARY), "is marked complete, but")
    return json.loads((out / SUMMARY).read_text())


def _check_whole(out: Path, names: tuple[str, ...], state: str) -> None:
    """Refuse a job whose files (``names``, and every map its rows name) are not all there: a map
    deleted from a chunk done in an earlier session is not made again by ``--resume``."""
    missing = [name for name in names if not (out / name).is_file()]
    if not missing:
        missing = [m for row in read_dicts(out / PREDICTIONS) for c in ("saliency", "saliency_nifti")
                   if (m := row.get(c)) and not (out / m).is_file()][:1]  # fmt: skip
    if missing:
        raise OutputError(out, f"{state} {missing[0]} is missing: its results are not whole; pass --overwrite to "
                          "predict again, or give another -o")  # fmt: skip


def _count(out: Path) -> dict[str, int]:
    rows, errors = read_dicts(out / PREDICTIONS), read_dicts(out / ERRORS)
    failed_keys = {e["key"] for e in errors if e["stage"] != "saliency"}
    return {
        "predicted": len(rows),
        "failed": len(failed_keys),
        "flagged": sum(r.get("ood") == "1" for r in rows),
        "saliency_failed": sum(e["stage"] == "saliency" for e in errors),
    }


def predict_folder(
    run_dir: str | os.PathLike,
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    batch_size: int = 16,
    workers: int | None = None,
    shard: str | tuple[int, int] | None = None,
    saliency: str | None = None,
    redact_paths: bool = False,
    device: str | None = None,
    progress: bool = False,
    assess_unfamiliar: bool = False,
) -> dict[str, Any]:
    """Predict every image and series under ``input_dir`` with the run at ``run_dir``.

    Args:
        run_dir: a finished ``medtl train`` output.
        input_dir: a folder tree (or one file) of DICOM, NIfTI, PNG/JPEG/TIFF, .npy images.
        out_dir: gets ``predictions.csv`` (one row per image or series: index, salted key, path
            relative to ``input_dir``, pseudonymised patient/study/series, a calibrated
            probability per output ``p_<name>``, the decision, ``ood_score``, ``ood`` and
            ``ood_reason``; an input unlike the training data has the decision ``not assessed``),
            ``errors.csv`` (every input that failed, with the stage and the reason) and
            ``summary.json`` (counts, timing, the run, versions).
        resume: continue an interrupted job in ``out_dir``, or confirm a finished one, only when it
            is the same job: same run, input folder, inputs (names, sizes, times) and options.
        overwrite: replace a finished or unfinished ``medtl predict`` output in ``out_dir``.
        batch_size: images per network batch (also the unit of resuming and sharding).
        workers: DataLoader processes that read and preprocess (default: half the CPU cores this
            job may use when the network runs on the CPU, the network's threads taking the rest;
            ``min(8, cores)`` with a GPU; 0 reads in the main process).
        shard: ``"I/N"``: only this job's share of a split into N (job arrays); join the shard
            outputs with :func:`medtl.predict.merge_outputs`. Under ``torchrun`` with several
            processes it defaults to ``RANK/WORLD_SIZE`` and each rank writes
            ``out_dir/rank-RANK-of-WORLD_SIZE``.
        saliency: also draw one map per prediction with this method (``gradcam``, ``ig`` ...;
            see :mod:`medtl.explain`), for the decided class (multi-label: the most probable
            finding), into ``out_dir/maps/``.
        redact_paths: no paths in the outputs: inputs are named by their salted key only.
        device: ``cpu``, ``cuda``, ``cuda:1``; default a GPU when there is one.
        progress: show progress with counts and ETA on stderr (a bar on a terminal, lines in a log).
        assess_unfamiliar: write the model's decision for inputs unlike the training data too
            (``ood`` and ``ood_reason`` still flag them); by default their decision is
            ``not assessed``.

    Returns:
        The summary (also written as ``summary.json``).

    Raises:
        ConfigError: not a finished run; a bad ``shard`` or ``saliency``; ``batch_size`` < 1.
        ImageReadError: ``input_dir`` does not exist.
        NoInputError: ``input_dir`` holds no image (empty, only non-images or unreadable files),
            or none of its inputs could be predicted (the output stays unfinished).
        OutputError: ``out_dir`` is, holds or sits inside the run or the input, sits inside other
            medtl output, holds files medtl did not write, or other output (unless
            ``overwrite``); ``resume`` of a job (finished or not) with another run, input folder,
            inputs or options.
        WriteError: a write failed (a full disk): the output stays unfinished; free space and
            resume.
        LockedError: another process is writing ``out_dir``.

    Example:
        >>> s = predict_folder("out/run-cxr", "sample_data/cxr", "out/predict")  # doctest: +SKIP
        >>> s["counts"]                                                          # doctest: +SKIP
        {'predicted': 48, 'failed': 0, 'flagged': 0, 'saliency_failed': 0}
    """
    from ..outputs import check_destination, check_not_reading
    from .predictor import Predictor

    if resume and overwrite:
        raise ConfigError(None, "--resume finishes the job in the folder, --overwrite replaces it: give one of them")
    start = time.perf_counter()
    shard_ix, out_dir, device = _shard_and_folder(shard, out_dir, device)
    saliency, chosen = _check_options(batch_size, saliency, run_dir)
    input_dir = os.path.abspath(os.fspath(input_dir))
    if not os.path.exists(input_dir):
        raise ImageReadError(input_dir, "no such file or folder")
    predictor = Predictor(run_dir, device=device, assess_unfamiliar=assess_unfamiliar)
    check_destination(out_dir, inputs=[run_dir, input_dir])  # before a long scan, not after it
    cores = _cores()
    if workers is None:  # on the CPU the network needs cores too; on a GPU reading is the whole CPU job
        workers = (cores // 2 if cores > 1 else 0) if predictor.device.type == "cpu" else min(8, cores)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(None, f"--workers must be 0 or more, not {workers!r}")
    labels = [str(n) for n in predictor.labels]
    columns = _columns(labels, saliency, ensemble=hasattr(predictor.model, "members"))
    t_scan = time.perf_counter()
    inputs, scanned = collect_inputs(input_dir, workers=None, progress=progress)
    scan_seconds = time.perf_counter() - t_scan
    if not scanned.rows:
        raise NoInputError(input_dir, scanned.why_empty())
    check_not_reading(out_dir, scanned.files)  # a link in the input tree that leads into the output
    job = _job_record(predictor, input_dir, inputs, scanned, shard_ix, batch_size, saliency, redact_paths, columns)
    job["threads"] = max(1, cores - workers) if predictor.device.type == "cpu" else None
    job["assess_unfamiliar"] = predictor.assess_unfamiliar  # it changes the decision column
    settings = {"batch_size": batch_size, "workers": workers, "device": str(predictor.device),
                "assess_unfamiliar": predictor.assess_unfamiliar,
                "saliency": saliency, "redact_paths": redact_paths, **_saliency_settings(chosen),
                # where `medtl report` finds the images again (never written with --redact-paths)
                "input": None if redact_paths else input_dir}  # fmt: skip
    with output_folder(out_dir, "predict", inputs=[run_dir, input_dir], overwrite=overwrite, resume=resume) as out:
        previous_job = _check_resume(out, job, resume)
        if previous_job is not None and (describe(out) or {}).get("complete"):
            summary = _whole(out)
            summary["note"] = "already complete: nothing to do (the same run, input and options)"
            return summary
        if previous_job is not None and previous_job.get("threads"):
            job["threads"] = previous_job["threads"]
        write_json(out / JOB, job)
        timing = _run_job(predictor, inputs, input_dir, out, job, columns, labels, workers, run_dir, progress,
                          resume=previous_job is not None)  # fmt: skip
        timing.update(seconds=round(time.perf_counter() - start, 3), scan_seconds=round(scan_seconds, 3))
        _check_whole(out, (PREDICTIONS, ERRORS), "holds a job whose")
        summary = _summary(out, predictor, inputs, scanned, shard_ix, timing, settings, job)
        if shard_ix[1] == 1 and not summary["counts"]["predicted"]:  # a shard's share may fail whole: merge judges
            raise NoInputError(input_dir, f"none of its {len(inputs)} input(s) could be predicted: the reason for "
                               f"each is in {out / ERRORS}; the output is left unfinished")  # fmt: skip
        write_json(out / SUMMARY, summary)
        mark_complete(out, "predict", **summary["counts"])
    return summary


def _saliency_settings(chosen: dict | None) -> dict[str, Any]:
    if chosen is None:
        return {}
    from ..explain.anatomy import BODY_RULE, SHORTCUT_RULE

    return {"saliency_choice": chosen, "anatomy_rule": BODY_RULE, "shortcut_rule": SHORTCUT_RULE,
            "saliency_scale": "the log-odds of the explained output (one scale for every map of one method)"}


def _shard_and_folder(shard, out_dir, device) -> tuple[tuple[int, int], Path, str | None]:
    """``--shard`` as ``(I, N)``; under ``torchrun`` the rank's share, its own sub-folder and GPU."""
    import torch

    shard_ix = parse_shard(shard)
    ranked = _torchrun_shard() if shard is None else None
    if ranked is not None:
        rank, world, local = ranked
        shard_ix = (rank, world)
        out_dir = Path(out_dir) / f"rank-{rank}-of-{world}"
        if device is None and torch.cuda.is_available():
            device = f"cuda:{local}"
    return shard_ix, Path(out_dir), device


def _check_options(batch_size, saliency: str | None, run_dir) -> tuple[str | None, dict | None]:
    """Refuse a bad ``batch_size``; the saliency method's canonical name (``auto``: the run's
    choice) and how it was chosen."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(None, f"--batch-size must be a positive number, not {batch_size!r}")
    if saliency is None:
        return None, None
    from ..explain.choice import read_choice, resolve

    if "," in saliency or saliency.strip() == "all":
        raise ConfigError(None, f"--saliency takes one method, not {saliency}")
    choice = read_choice(run_dir)
    method, how = resolve(saliency.strip(), choice if saliency.strip() == "auto" else None, run_dir)
    if method.endswith("@mean") and not (choice or {}).get("baseline_mean"):
        raise ConfigError(run_dir, f"--saliency {method} needs the mean input the run's saliency check records: run "
                          f"`medtl saliency-check {run_dir}` first, or choose another baseline (ig@blur)")  # fmt: skip
    return method, how


def _run_job(predictor, inputs, input_dir, out, job, columns, labels, workers, run_dir, progress, *, resume):
    """Predict the chunks of this shard that are not done yet, appending each as it finishes.
    Returns the timing of this session."""
    import torch

    batch_size, shard_ix, saliency = job["batch_size"], job["shard"], job["saliency"]
    output = _Output(out, columns, resume=resume)
    previous = len(output.done)
    n_chunks = (len(inputs) + batch_size - 1) // batch_size
    members = [list(range(c * batch_size, min(len(inputs), (c + 1) * batch_size))) for c in range(n_chunks)]
    mine = [c for c in range(n_chunks) if c % shard_ix[1] == shard_ix[0]]
    todo = [c for c in mine if c not in output.done]
    total = sum(len(members[c]) for c in mine)
    explainer = None
    if saliency:
        from ..explain import Explainer

        explainer = Explainer(run_dir)
    bar = None
    if progress:
        from ..progress import progress_bar

        done_items = total - sum(len(members[c]) for c in todo)
        bar = progress_bar(total, "predict", "image", initial=done_items)
    infer_seconds, n_new, finished = 0.0, 0, False
    threads = _thread_budget(job["threads"])
    redact = job["redact_paths"]
    try:
        if todo:
            from ..data.workers import worker_init

            loader = torch.utils.data.DataLoader(
                _Items(predictor.spec, inputs, input_dir, redact), batch_sampler=[members[c] for c in todo],
                num_workers=workers, collate_fn=_collate, pin_memory=predictor.device.type == "cuda",
                **({"prefetch_factor": 2, "persistent_workers": False, "worker_init_fn": worker_init()}
                   if workers else {}),  # fmt: skip
            )  # fmt: skip
            for chunk, batch in zip(todo, loader, strict=True):
                t0 = time.perf_counter()
                rows, errors = _chunk_rows(predictor, batch, inputs, input_dir, redact, explainer, saliency, out,
                                           labels)  # fmt: skip
                infer_seconds += time.perf_counter() - t0
                output.write_chunk(chunk, rows, errors)
                n_new += len(batch["all"])
                if bar is not None:
                    bar.update(len(batch["all"]))
        finished = True
    finally:
        threads.close()
        output.close()
        if bar is not None:
            from ..progress import stop

            bar.close() if finished else stop(bar)  # after an error its message is the last line
    return {"model_seconds": round(infer_seconds, 3), "inputs_this_session": n_new,
            "resumed_chunks": previous, "in_this_shard": total}  # fmt: skip


def _summary(out: Path, predictor, inputs, scanned, shard_ix, timing, settings, job) -> dict[str, Any]:
    """``summary.json``: counts from the finished files (so a resumed job counts every session)."""
    total = timing.pop("in_this_shard")
    seconds = timing["seconds"]
    timing["inputs_per_second"] = round(timing["inputs_this_session"] / seconds, 3) if seconds > 0 else None
    labels = [str(n) for n in predictor.labels]
    return {
            "counts": _count(out),
            "inputs": {"files": scanned.n_files, "inputs": len(inputs), "in_this_shard": total,
                       "scan_errors": sum(it.error is not None for it in inputs),
                       "skipped_non_images": scanned.skipped},
            "shard": {"index": shard_ix[0], "count": shard_ix[1]},
            "timing": timing,
            "run": {"name": predictor.run_dir.name, "weights_sha256_16": job["run_weights"],
                    "backbone": predictor.cfg.backbone, "task": predictor.task, "labels": labels,
                    "threshold": predictor.threshold, "calibration": predictor.calibration.get("method", "temperature"),
                    "tta_flips": list(predictor.flips),
                    "ood": predictor.ood.describe() if predictor.ood is not None else None,
                    "familiar": predictor.familiar},
            "settings": settings,
            "job": job,
            "versions": environment_versions(),
            "notes": _familiarity_notes(predictor),
        }  # fmt: skip


def _familiarity_notes(predictor) -> list[str]:
    """What an older run cannot tell about unfamiliar inputs: no distance statistics, or no record
    of its training images (then no rule flags a colour image or an unseen modality)."""
    notes = []
    if predictor.ood is None:
        notes.append("the run holds no out-of-distribution statistics (trained before medtl wrote them): add them "
                     "with `medtl calibrate-ood RUN DATA`; ood_score is empty and only the run's rules flag inputs")  # fmt: skip
    if predictor.familiar is None:
        notes.append("the run does not record what its training images were (familiar.json: trained before medtl "
                     "wrote it): no input is flagged by rule (a colour image for a grey run, an unseen DICOM "
                     "modality), only by its distance; `medtl calibrate-ood RUN DATA --overwrite` records it")  # fmt: skip
    return notes


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this job may use (SLURM, taskset), not the whole node
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class _thread_budget:
    """On the CPU, the network's threads and the reading workers share the cores: the network
    gets what the workers leave (``n`` = cores − workers, at least 1), and BLAS (the OOD scores)
    the same. Two
    pools contending for two cores spin-wait each other to a crawl (measured: 18× slower forward).
    Restored by :meth:`close`, so a script calling :func:`predict_folder` keeps its settings."""

    def __init__(self, n: int | None):
        import torch

        self.torch_threads = torch.get_num_threads()
        self.limits = None
        if not n:  # on a GPU
            return
        try:  # first: threadpoolctl remembers every pool as it finds it, OpenMP's included
            from threadpoolctl import threadpool_limits

            self.limits = threadpool_limits(limits=n, user_api="blas")
        except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
            pass
        torch.set_num_threads(n)

    def close(self) -> None:
        import torch

        # in reverse: threadpoolctl's restore also resets the OpenMP pool that torch shares, so
        # torch's own count is set last (the other order left a 1-thread process at 2 threads,
        # and a later training in it computed other floats than a fresh process)
        if self.limits is not None:
            self.limits.restore_original_limits()
        torch.set_num_threads(self.torch_threads)


def _chunk_rows(predictor, batch, inputs, root, redact, explainer, method, out, labels):
    """The prediction and error rows of one chunk, in work-list order."""
    rows: list[dict] = []
    errors = [_error_row(inputs[e["index"]], e["stage"], e["error"], e["reason"], redact) for e in batch["errors"]]
    if batch["x"] is None:
        return rows, sorted(errors, key=lambda r: r["index"])
    logits, feats, ok = _outputs(predictor, batch["x"])
    facts = [f for f, good in zip(batch["facts"], ok, strict=True) if good]
    preds = predictor.predictions(logits, feats, facts) if ok.any() else []
    k = 0
    for pos, index in enumerate(batch["indices"]):
        it = inputs[index]
        if not ok[pos]:
            errors.append(_error_row(it, "model", "RuntimeError", "the network failed on this input", redact))
            continue
        p = preds[k]
        k += 1
        row = {"index": it.index, "key": it.key, "path": "" if redact else it.rel}
        src = it.row or {}
        row.update({c: src.get(c, "") for c in ("patient", "study", "series", "modality", "kind")})
        row["pixel_digest"] = batch["digests"][pos]  # the report shows the image only while it matches
        row.update({f"p_{n}": _fmt(p.probabilities[n], 6) for n in labels})
        # an unfamiliar input gets no decision (its probabilities stay: they are data)
        row["decision"] = "|".join(p.decision) if p.assessed else NOT_ASSESSED
        row["ood_score"] = "" if p.ood_score is None else _fmt(p.ood_score, 4)
        row["ood"] = "" if p.ood is None else str(int(p.ood))
        row["ood_reason"] = p.ood_reason
        if p.spread is not None:
            row["member_spread"] = _fmt(p.spread, 4)
        if explainer is not None:
            fields, failed = _saliency_or_error(explainer, it, method, out, redact, p)
            row.update(fields)
            errors.extend(failed)
        rows.append(row)
    errors = [dict(e, reason=_scrub(e["reason"], inputs[e["index"]], root, redact))
              for e in errors]  # fmt: skip
    return rows, sorted(errors, key=lambda r: (r["index"], r["stage"] == "saliency"))


def _outputs(predictor, x):
    """Logits and features of a batch; a batch the network fails on is retried one input at a
    time, so one bad input fails alone. Returns ``(logits, features, ok mask)``."""
    try:
        logits, feats = predictor.outputs(x, batch_size=len(x))
        return logits, feats, np.ones(len(x), bool)
    except (RuntimeError, ValueError):
        pass
    logits, feats, ok = [], [], np.zeros(len(x), bool)
    for i in range(len(x)):
        try:
            lo, fe = predictor.outputs(x[i : i + 1], batch_size=1)
        except (RuntimeError, ValueError):
            continue
        logits.append(lo[0])
        feats.append(fe[0])
        ok[i] = True
    if not logits:
        return np.zeros((0, len(predictor.labels))), np.zeros((0, 1)), ok
    return np.stack(logits), np.stack(feats), ok


def _error_row(it: Input, stage: str, error: str, reason: str, redact: bool) -> dict[str, Any]:
    return {"index": it.index, "key": it.key, "path": "" if redact else it.rel, "stage": stage, "error": error,
            "reason": reason}  # fmt: skip


def _saliency_or_error(explainer, it: Input, method: str, out: Path, redact: bool, pred) -> tuple[dict, list[dict]]:
    """The map's columns, or the row of ``errors.csv`` saying why it could not be drawn (the
    prediction stands without it). A failed write is no fault of the image: it is raised, and the
    job stops unfinished."""
    try:
        return _saliency(explainer, it, method, out, redact, pred), []
    except Exception as exc:  # noqa: BLE001 - one map must not stop thousands of predictions
        if is_fatal(exc):
            raise
        if isinstance(exc, MedtlError):
            reason = exc.reason_for(it.full, it.shown(redact))
        else:
            reason = f"unexpected failure: {exc}"
        return {}, [_error_row(it, "saliency", type(exc).__name__, reason, redact)]


def _saliency(explainer, it: Input, method: str, out: Path, redact: bool, pred) -> dict[str, str]:
    """One map via step 7: of the finding for a binary run, whatever was decided; of the
    predicted class, or the first finding at or above 0.5 (else the most probable), otherwise."""
    from ..explain.explainer import load_item
    from ..explain.run import Item, render_map

    img = load_item(it.full, it.series or None)
    x, affine = explainer.prepare(img)
    probs = np.array([pred.probabilities[str(n)] for n in explainer.labels])
    target = explainer.predicted_targets(probs)[0][0]
    item = Item(it.key, it.full, it.series or None)
    checked = ((explainer.choice or {}).get("candidates") or {}).get(method)
    sanity = None if checked is None else {"passed": checked["passed_randomization"]}
    rec = render_map(explainer, out, it.index, item, img, x, affine, explainer.display(img), method, target, probs,
                     sanity)  # fmt: skip
    inside = rec["anatomy_inside"]
    # marked where the model decided the finding it explains: a negative's faint map may lie anywhere
    marked = rec["shortcut"] and rec["target"] in pred.decision
    return {"saliency": rec["map"], "saliency_nifti": rec["nifti"], "saliency_target": rec["target"],
            "saliency_peak": _fmt(rec["peak_value"], 6), "anatomy_inside": "" if inside is None else _fmt(inside, 4),
            "anatomy_area": _fmt(rec["anatomy_area"], 4), "shortcut": str(int(marked))}  # fmt: skip


def print_summary(summary: dict[str, Any], out_dir: str | os.PathLike, stream=None) -> None:
    """The one-line account the CLI prints at the end."""
    c, t = summary["counts"], summary["timing"]
    stream = stream or sys.stderr
    rate = f" ({t['inputs_per_second']:.1f} inputs/s)" if t.get("inputs_per_second") else ""
    assessed = (summary.get("settings") or {}).get("assess_unfamiliar")
    print(f"predicted {c['predicted']}, failed {c['failed']}, flagged {c['flagged']} out-of-distribution "
          f"({'assessed anyway' if assessed else 'not assessed'}), "
          f"in {t['seconds']:.1f} s{rate} → {Path(out_dir) / PREDICTIONS}", file=stream)  # fmt: skip
