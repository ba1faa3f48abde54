"""``medtl report``: a folder of self-contained HTML pages for clinicians, from a predict output.

The report reads plain results only: the run directory (what the model is and is known to get
wrong), a finished ``medtl predict`` folder (``predictions.csv``, ``errors.csv``, the saliency
maps) and the images themselves, found again under the input folder the predictions recorded (or
``input_dir``) by the same salted keys. It writes ``index.html`` (every case in one sortable,
filterable table, failures and out-of-distribution inputs included), one page per case under
``cases/``, and ``report.json`` (what the review server needs). Every page opens from disk with no
network: styles, scripts and pictures are inside it, and a Content-Security-Policy forbids
fetching anything. Every text from a header, a CSV or a path goes through Jinja2's autoescaping.

Paths and identifying header fields appear only with ``show_identifiers=True``.

>>> import inspect
>>> list(inspect.signature(build_report).parameters)[:3]
['run_dir', 'predictions_dir', 'out_dir']
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ..csvcells import read_dicts
from ..errors import ConfigError

__all__ = ["build_report", "REPORT_FILE", "VERDICTS_FILE", "environment"]

REPORT_FILE = "report.json"
#: The reviewers' verdicts (SQLite); kept when a report is rebuilt in place.
VERDICTS_FILE = "verdicts.sqlite"
CASES = "cases"


def environment():
    """The Jinja2 environment of the report templates: autoescaping on for every template, and
    undefined names are errors (a typo must not print an empty cell)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("medtl.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * float(v):.1f}%"
    env.filters["prob"] = lambda v: "" if v is None else f"{float(v):.3f}"
    env.filters["pct0"] = lambda v: "" if v is None else f"{100 * float(v):.0f} %"
    return env


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    return read_dicts(path)


def _predictions(folder: Path) -> tuple[dict[str, Any], list[dict[str, str]], list[dict[str, str]]]:
    from ..predict.folder import ERRORS, PREDICTIONS, SUMMARY
    from ..rundir import describe

    found = describe(folder) if folder.is_dir() else None
    if not found or found.get("command") not in ("predict", "predict-merge") or not (folder / PREDICTIONS).is_file():
        raise ConfigError(folder, "is not a `medtl predict` output (no predictions.csv): give the folder "
                          "`medtl predict RUN INPUT -o FOLDER` wrote")  # fmt: skip
    if not found.get("complete"):
        raise ConfigError(folder, "is an unfinished `medtl predict` output: finish it with `medtl predict ... "
                          "--resume` first")  # fmt: skip
    summary = json.loads((folder / SUMMARY).read_text())
    return summary, _read_csv(folder / PREDICTIONS), _read_csv(folder / ERRORS)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _headline(probs: dict[str, float], decision: str, task: str, labels: list[str]) -> tuple[str, float | None]:
    """The output a case is sorted and reviewed by: binary, the positive class; multi-class, the
    decided class; multi-label, the most probable finding."""
    if not probs:
        return "", None
    if task == "binary" and len(labels) == 2:
        return labels[1], probs.get(labels[1])
    if task == "multiclass" and decision in probs:
        return decision, probs[decision]
    name = max(probs, key=lambda k: probs[k])
    return name, probs[name]


def _review_status(latest: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(status for filtering, text for the table) from each reviewer's newest verdict."""
    if not latest:
        return "not reviewed", "not reviewed"
    verdicts = sorted({row["verdict"] for row in latest.values()})
    text = "; ".join(f"{row['verdict']} ({who}{', imported' if row.get('source') == 'import' else ''})"
                     for who, row in sorted(latest.items()))  # fmt: skip
    return (verdicts[0] if len(verdicts) == 1 else "mixed"), text


def verdict_statuses(latest: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, str]]:
    """``{case key: {"status", "text"}}`` for the index's review column (what its script reads)."""
    return {key: dict(zip(("status", "text"), _review_status(rows), strict=True)) for key, rows in latest.items()}


def _verdicts(out: Path, notes: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """The verdicts the pages show: none for a review with readers, which stay blind to each other
    (a report folder is often shared as plain files)."""
    from .verdicts import VerdictStore

    if not (out / VERDICTS_FILE).is_file():
        return {}
    with VerdictStore(out / VERDICTS_FILE) as store:
        if store.readers():
            notes.append("this review has readers, who stay blind to each other: the pages on disk show no verdicts "
                         "(each reader sees their own through their link; the lead exports all with `medtl review "
                         "export`)")  # fmt: skip
            return {}
        return store.latest()


def build_report(
    run_dir: str | os.PathLike,
    predictions_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    input_dir: str | os.PathLike | None = None,
    evaluation: str | os.PathLike | None = None,
    explanation: str | os.PathLike | None = None,
    show_identifiers: bool = False,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the clinician report of a ``medtl predict`` output.

    Args:
        run_dir: the run that made the predictions (checked by its weights' digest).
        predictions_dir: a finished ``medtl predict`` (or ``medtl predict merge``) output.
        out_dir: the report folder (``index.html``, ``cases/``, ``report.json``). Rebuilding it with
            ``overwrite`` keeps the reviewers' verdicts (``verdicts.sqlite``).
        input_dir: where the images are now (default: the folder the predictions recorded; needed
            when they were made with ``--redact-paths`` or the folder moved).
        evaluation: a ``medtl evaluate --groups`` output of this run: its audit goes on every page.
        explanation: a ``medtl explain --sanity`` output of this run: the saliency method's check.
        show_identifiers: show paths and identifying header fields (name, ID, accession number,
            dates, descriptions). Off by default: pages carry salted keys only.
        workers: processes drawing the cases (default: up to 4, one per core; 0 draws in this one).
        progress: report progress on stderr (a bar on a terminal, lines in a log).

    Returns:
        The report's summary (counts, notes), also in ``report.json``.

    Raises:
        ConfigError: ``run_dir`` is not a run, ``predictions_dir`` not a finished predict output of
            it, or an evaluation / explanation folder that does not belong to it.
        OutputError: ``out_dir`` cannot be written or holds other output (see ``overwrite``).

    >>> import tempfile
    >>> build_report("no-such-run", tempfile.mkdtemp(), tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    medtl.errors.ConfigError: no-such-run: not a run directory (no config.yaml): train one with `medtl train`
    """
    from ..outputs import check_destination
    from ..rundir import mark_complete, output_folder, read_config, read_spec, weights_digest, write_json, write_text
    from .model import model_summary

    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ConfigError(None, f"--workers must be 0 or more, not {workers!r}")
    start = time.perf_counter()
    run = Path(run_dir)
    read_config(run)
    pred = Path(predictions_dir)
    summary, rows, errors = _predictions(pred)
    digest = weights_digest(run)
    if summary.get("run", {}).get("weights_sha256_16") != digest:
        raise ConfigError(pred, f"was predicted by another run ({summary.get('run', {}).get('name', '?')}, weights "
                          f"{summary.get('run', {}).get('weights_sha256_16', '?')}), not {run.name} ({digest})")  # fmt: skip
    out = Path(out_dir)
    settings = summary.get("settings", {})
    # the images are read again: the report may not go where a later scan of them would read it
    report_inputs = [run, pred, evaluation, explanation, input_dir if input_dir is not None else settings.get("input")]
    check_destination(out, inputs=report_inputs)
    method = settings.get("saliency")
    notes: list[str] = []
    saliency = saliency_overview(settings, rows, notes)
    model = model_summary(run, evaluation, explanation, method, anatomy=saliency["anatomy"])
    spec = read_spec(run)
    labels = model["labels"]
    task = model["task"]

    root, by_key, by_path = _find_images(input_dir, settings, summary.get("job", {}), rows, pred, notes, progress)
    if root is not None and rows and "pixel_digest" not in rows[0]:
        notes.append("these predictions were made by a medtl that did not record what each image looked like: the "
                     "images are shown as they are now, and a change since the prediction cannot be detected; "
                     "predict again to have every image checked")  # fmt: skip

    with output_folder(out, "report", inputs=report_inputs, overwrite=overwrite) as folder:
        latest = _verdicts(folder, notes)
        nonce = secrets.token_urlsafe(18)
        cases, jobs = [], []
        for row in rows:
            it = by_key.get(row["key"]) or by_path.get(row.get("path") or "\0")
            cases.append(_case(row, it, task, labels, method, show_identifiers, latest.get(row["key"], {}),
                               assess_unfamiliar=bool(settings.get("assess_unfamiliar"))))  # fmt: skip
            jobs.append(_job(row, it, spec, pred, show_identifiers, saliency["scale"]["top"]))
        failed = []
        for e in errors:
            it = by_key.get(e.get("key", ""))
            failed.append({"index": int(e["index"]), "key": e.get("key", ""), "page": None, "status": "error",
                           "stage": e.get("stage", ""), "reason": e.get("reason", ""),
                           "path": (e.get("path") or (it.rel if it else "")) if show_identifiers else ""})  # fmt: skip
        env = environment()
        page = env.get_template("case.html")
        order = sorted(range(len(cases)), key=lambda i: cases[i]["index"])
        ordered = [cases[i] for i in order]
        # pages are written as their pictures arrive: a report of thousands of cases never holds
        # more than a few cases' pictures in memory
        for pos, drawn in enumerate(_drawn([jobs[i] for i in order], workers, progress)):
            case = ordered[pos]
            drawn = _settle(case, drawn, root is not None)
            html = page.render(
                case=case, drawn=drawn, model=model, method=method, task=task, labels=labels, nonce=nonce,
                threshold=model["threshold"], show_identifiers=show_identifiers, saliency=saliency,
                previous=ordered[pos - 1]["key"] if pos > 0 else None,
                next=ordered[pos + 1]["key"] if pos + 1 < len(ordered) else None,
                verdicts=[dict(row, reviewer=who) for who, row in sorted(latest.get(case["key"], {}).items())],
            )  # fmt: skip
            write_text(folder / case["page"], html)
        counts = _counts(cases, failed, notes)
        built = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        index = env.get_template("index.html").render(
            rows=sorted(ordered + failed, key=lambda c: c["index"]), model=model, counts=counts, notes=notes,
            method=method, nonce=nonce, built=built, show_identifiers=show_identifiers, task=task,
            decisions=sorted({c["decision"] for c in cases if c["decision"]}), saliency=saliency,
            verdicts=verdict_statuses(latest),
        )  # fmt: skip
        write_text(folder / "index.html", index)
        record = {
            "schema": "medtl.report/1", "run": run.name, "run_weights": digest, "task": task, "labels": labels,
            "threshold": model["threshold"], "saliency": method, "saliency_scale": saliency["scale"]["top"],
            "show_identifiers": show_identifiers,
            "built": built, "counts": counts, "notes": notes, "seconds": round(time.perf_counter() - start, 2),
            "cases": [{"key": c["key"], "index": c["index"], "page": c["page"], "headline": c["headline"],
                       "probability": c["probability"], "decision": c["decision"], "ood": c["ood"],
                       "saliency_target": c["target"], "shortcut": c["shortcut"]} for c in ordered],
        }  # fmt: skip
        write_json(folder / REPORT_FILE, record)
        mark_complete(folder, "report", cases=len(cases), errors=len(failed))
    return record


def _case(row: dict[str, str], it, task: str, labels: list[str], method: str | None, show_identifiers: bool,
          latest: dict[str, dict[str, Any]], *, assess_unfamiliar: bool = False) -> dict[str, Any]:  # fmt: skip
    """What the index and a case page say about one row of ``predictions.csv`` (``it``: its input
    found again, or ``None``). A case unlike the training data is not assessed (its decision
    reads ``not assessed``), unless the predictions were made with ``--assess-unfamiliar``;
    older predictions, which gave such cases a decision, are shown the same way."""
    from ..predict.folder import NOT_ASSESSED

    probs = {c[2:]: v for c, t in row.items() if c.startswith("p_") and (v := _float(t)) is not None}
    headline, p = _headline(probs, row.get("decision", ""), task, labels)
    nifti = row.get("saliency_nifti") or ""
    ood = {"1": True, "0": False}.get(row.get("ood", ""))
    assessed = not ood or assess_unfamiliar
    case = {
        "index": int(row["index"]), "key": row["key"], "page": f"{CASES}/{row['key']}.html", "status": "predicted",
        "path": (row.get("path") or (it.rel if it else "")) if show_identifiers else "",
        "modality": row.get("modality", ""), "kind": row.get("kind", ""),
        "patient": row.get("patient", ""), "study": row.get("study", ""), "series": row.get("series", ""),
        "probabilities": probs, "headline": headline, "probability": p,
        "decision": row.get("decision", "") if assessed else NOT_ASSESSED, "assessed": assessed,
        "ood_score": _float(row.get("ood_score")), "ood": ood, "ood_reason": _ood_reason(row, ood),
        "saliency": "shown" if nifti else ("not computed" if not method else "failed"),
        "spread": _float(row.get("member_spread")),
    }  # fmt: skip
    case.update(saliency_fields(row))
    case["target_recorded"] = case["target"] is not None
    if case["target"] is None and nifti:  # older predictions mapped the decided output
        case["target"] = headline if task == "multilabel" else row.get("decision", "")
    case["review"], case["review_text"] = _review_status(latest)
    return case


def _ood_reason(row: dict[str, str], ood: bool | None) -> str:
    """Why a case is unlike the training data: the row's ``ood_reason``, or for predictions made
    before medtl wrote it, its distance score.

    >>> _ood_reason({"ood_score": "41.2"}, True)
    'far from the training images (score 41.2)'
    """
    if not ood:
        return ""
    reason = (row.get("ood_reason") or "").strip()
    if reason:
        return reason
    score = _float(row.get("ood_score"))
    return "far from the training images" + (f" (score {score:.1f})" if score is not None else "")


def _job(row: dict[str, str], it, spec, pred: Path, show_identifiers: bool, top: float | None) -> dict | None:
    """What :func:`~medtl.report.cases.render_case` needs to draw one case (``None``: no image)."""
    if it is not None and it.error is not None:  # reason without its path: pages name no folder
        return {"error": f"the file can no longer be read ({it.error.get('reason', 'unreadable')}): it changed "
                "since the prediction"}  # fmt: skip
    if it is None:
        return None
    nifti = row.get("saliency_nifti") or ""
    return {"full": it.full, "rel": it.rel, "series": it.series, "spec": spec, "dims": len(spec.size),
            "nifti": os.fspath(pred / nifti) if nifti else None, "identifiers": show_identifiers,
            "digest": row.get("pixel_digest") or None, "top": top}  # fmt: skip


def _settle(case: dict[str, Any], drawn: dict[str, Any] | None, have_images: bool) -> dict[str, Any]:
    """A drawn case (or why it is not drawn), with the case's status updated from it."""
    if drawn is None:
        drawn = {"error": "the image was not found under the input folder" if have_images else
                 "the image is not available (no input folder)", "notes": [], "identifiers": None, "meta": []}  # fmt: skip
    if case["saliency"] == "shown" and drawn.get("map_note"):
        case["saliency"] = "missing"
    if drawn.get("changed"):
        case["status"] = "changed"
    return drawn


def _counts(cases: list[dict[str, Any]], failed: list[dict[str, Any]], notes: list[str]) -> dict[str, int]:
    """The index's counts (a note added when images changed since prediction)."""
    n_changed = sum(c["status"] == "changed" for c in cases)
    if n_changed:
        notes.append(f"{n_changed} image(s) have changed since they were predicted: their pages show no image and "
                     "say so; predict them again")  # fmt: skip
    return {"cases": len(cases), "errors": len(failed), "ood": sum(bool(c["ood"]) for c in cases),
            "not_assessed": sum(not c["assessed"] for c in cases),
            "maps": sum(c["saliency"] == "shown" for c in cases),
            "missing_maps": sum(c["saliency"] == "missing" for c in cases),
            "reviewed": sum(c["review"] != "not reviewed" for c in cases), "changed": n_changed,
            "shortcut": sum(c["shortcut"] is True for c in cases)}  # fmt: skip


#: What the index and every case page say when the maps share one colour scale.
SHARED_SCALE = ("Colours share one scale across this report: full colour is the 95th percentile of the cases' map "
                "peaks, so a pale map means little evidence for the finding.")  # fmt: skip
#: The percentile of the cases' map peaks that is drawn in full colour.
SCALE_PERCENTILE = 95.0


def saliency_fields(row: dict[str, str]) -> dict[str, Any]:
    """The map facts of one ``predictions.csv`` row, each ``None`` where the predictions do not
    record it (older outputs): ``target`` (the output the map explains), ``peak`` (its maximum),
    ``inside`` (share of its positive mass inside the anatomy), ``area`` (share of the image the
    anatomy covers), ``shortcut`` (most of the map outside the anatomy).

    >>> saliency_fields({"saliency_target": "label=1", "saliency_peak": "0.5", "anatomy_inside": "",
    ...                  "anatomy_area": "0.4", "shortcut": "1"})
    {'target': 'label=1', 'peak': 0.5, 'inside': None, 'area': 0.4, 'shortcut': True}
    >>> saliency_fields({})["shortcut"] is None
    True
    """

    def share(text: str | None) -> float | None:
        v = _float(text)
        return v if v is not None and math.isfinite(v) and 0.0 <= v <= 1.0 else None

    peak = _float(row.get("saliency_peak"))
    return {
        "target": (row.get("saliency_target") or "").strip() or None,
        "peak": peak if peak is not None and math.isfinite(peak) else None,
        "inside": share(row.get("anatomy_inside")),
        "area": share(row.get("anatomy_area")),
        "shortcut": {"1": True, "0": False}.get((row.get("shortcut") or "").strip()),
    }


def shared_scale(peaks: list[float | None]) -> float | None:
    """Full colour for every map of one report: the 95th percentile of the cases' map peaks (a map
    above it saturates); ``None`` when no case records a positive peak (each map on its own).

    >>> round(shared_scale([1.0] * 19 + [10.0]), 3), shared_scale([None, 0.0]), shared_scale([])
    (1.45, None, None)
    """
    import numpy as np

    values = [float(v) for v in peaks if v is not None and math.isfinite(v)]
    top = float(np.percentile(values, SCALE_PERCENTILE)) if values else 0.0
    return top if top > 0 else None


def _choice_line(method: str | None, settings: dict[str, Any]) -> str | None:
    """The index line: "Saliency: M — chosen by the run's saliency check: why", or "— given on the command line"."""
    if not method:
        return None
    choice = settings.get("saliency_choice")
    if not isinstance(choice, dict) or not choice.get("source"):
        return f"Saliency: {method}"
    source, why = str(choice["source"]), str(choice.get("why") or "").strip()
    if why and source != "given on the command line":
        return f"Saliency: {method} — chosen by {source}: {why}"
    return f"Saliency: {method} — {source if source == 'given on the command line' else 'chosen by ' + source}"


def _anatomy_figure(fields: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The report-level shortcut figure from the rows' anatomy shares, or ``None`` when the
    predictions record none."""
    import numpy as np

    inside = [f["inside"] for f in fields if f["inside"] is not None]
    known = [f["shortcut"] for f in fields if f["shortcut"] is not None]
    if not inside and not known:
        return None
    median = float(np.median(inside)) if inside else None
    marked = sum(known)
    text = "In this report: " + (f"median share of evidence inside the anatomy {100 * median:.0f} % over "
                                 f"{len(inside)} map(s); " if median is not None else "")  # fmt: skip
    text += f"{marked} of {len(known)} map(s) marked as mostly outside the anatomy"
    text += f" ({100 * marked / len(known):.0f} %)." if known else "."
    return {"median_inside": median, "n_inside": len(inside), "marked": marked, "n": len(known),
            "share_marked": marked / len(known) if known else None, "text": text}  # fmt: skip


def saliency_overview(settings: dict[str, Any], rows: list[dict[str, str]], notes: list[str]) -> dict[str, Any]:
    """What the report says about its maps as a whole: ``line`` (the method and why it was used),
    ``anatomy_rule``, ``scale`` (``top``: full colour shared by every case, or ``None``; ``text``)
    and ``anatomy`` (the report-level shortcut figure). Older predictions lack peaks and anatomy
    shares: then each map keeps its own scale, and ``notes`` say so."""
    method = settings.get("saliency")
    with_map = [saliency_fields(r) for r in rows if r.get("saliency_nifti")]
    top = shared_scale([f["peak"] for f in with_map])
    rule = settings.get("anatomy_rule")
    scale = {"top": top, "shared": top is not None, "text": SHARED_SCALE if top is not None else
             "Colours are relative to each case's own maximum (these predictions record no map peaks): compare "
             "maps between cases by where they lie, not by how bright they are."}  # fmt: skip
    if method and with_map and top is None:
        notes.append("these predictions record no map peaks (made by an older medtl): each map is coloured "
                     "relative to its own maximum, so maps cannot be compared between cases by colour; predict "
                     "again to put every case on one scale")  # fmt: skip
    anatomy = _anatomy_figure(with_map)
    if method and with_map and anatomy is None:
        notes.append("these predictions record no anatomy share: no map is checked for evidence lying outside the "
                     "body (a possible shortcut); predict again to have every map checked")  # fmt: skip
    return {"method": method, "line": _choice_line(method, settings), "scale": scale, "anatomy": anatomy,
            "anatomy_rule": rule.strip().rstrip(".") if isinstance(rule, str) and rule.strip() else None}  # fmt: skip


def _find_images(input_dir, settings: dict, job: dict, rows: list[dict], pred: Path, notes: list[str], progress: bool):
    """``(root, by_key, by_path)``: the predicted inputs found again under ``input_dir`` (default: the
    folder predict read), by key, and the unreadable ones by path. A folder given and mistyped, or
    holding none of the predicted images, is an error; a recorded folder that is gone is a note."""
    from ..predict.folder import collect_inputs, inputs_fingerprint

    root = os.fspath(input_dir) if input_dir is not None else settings.get("input")
    if root is None:
        notes.append("the predictions were made with --redact-paths and no --input was given: cases are shown "
                     "without their images")  # fmt: skip
        return None, {}, {}
    if not os.path.exists(root):
        if input_dir is not None:
            raise ConfigError(root, "no such file or folder (--input): give the folder the images are in now")
        notes.append("the input folder the predictions recorded is gone: give --input where the images are now; "
                     "cases are shown without their images")  # fmt: skip
        return None, {}, {}
    # outputs of an older medtl keyed inputs their own way
    inputs, _ = collect_inputs(root, progress=progress, exclude=pred, key_scheme=job.get("key_scheme", "input"))
    by_key = {it.key: it for it in inputs}
    # a file broken since prediction is a scan error now (no series, so another key): found by path
    by_path = {it.rel: it for it in inputs if it.error is not None}
    if input_dir is not None and rows and not any(r["key"] in by_key or (r.get("path") or "\0") in by_path
                                                  for r in rows):  # fmt: skip
        raise ConfigError(root, f"holds none of the {len(rows)} predicted images (--input): give the folder "
                          "`medtl predict` read, or where it was moved to")  # fmt: skip
    if inputs_fingerprint(inputs) != job.get("input_fingerprint"):
        notes.append("the input folder has changed since the predictions were made (files added, moved or "
                     "removed): images are read as they are now, and cases no longer there are shown without them")  # fmt: skip
    return root, by_key, by_path


def _drawn(jobs: list[dict | None], workers: int | None, progress: bool) -> Iterator[dict | None]:
    """:func:`~medtl.report.cases.render_case` of every job (``None`` for ``None``), in order, drawn
    in ``workers`` processes."""
    from .cases import safe_render_case

    todo = sum(j is not None for j in jobs)
    if workers is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
        workers = min(4, cores) if todo > 8 else 0
    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(todo, "report", "case")
    pool = ProcessPoolExecutor(max_workers=workers) if workers and todo > 1 else None
    finished = False
    try:
        results = pool.map(safe_render_case, jobs, chunksize=4) if pool else map(safe_render_case, jobs)
        for job, drawn in zip(jobs, results, strict=True):
            if bar is not None and job is not None:
                bar.update(1)
            yield drawn
        finished = True
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            from ..progress import stop

            bar.close() if finished else stop(bar)  # after an error its message is the last line
