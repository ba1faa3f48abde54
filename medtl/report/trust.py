"""What a report says first: how well the model separates the classes on held-out data, and why
its decisions should not be trusted when they should not.

A clinician reads the top of a page. A near-chance model with calibrated probabilities, a passed
saliency check and no flagged group gap looks reassuring everywhere below it, so the header puts
the one number that decides whether any of it matters first: the held-out AUROC with its CI. The
header is red, saying the decisions are not evidence, when

* there is no held-out figure (no ``--evaluation`` and no test split in the run),
* the figure is not held out (the evaluated rows include images the run trained or tuned on), or
* its CI includes 0.5 (chance), or it has no CI at all (too few images to bootstrap).

Below it, in amber: the confounder check's flags, flagged group gaps, a missing intended use; and,
plainly, what calibration did (the range of scores it leaves: a model squeezed towards the
prevalence has a low ECE because it says little). Nothing here is ever green.

Numbers in, sentences out: :func:`medtl.report.model.model_summary` reads the files and calls
:func:`trust_header`.

>>> disc = discrimination({"overall": {"auroc": 0.59, "auroc_ci": [0.43, 0.76], "n": 30, "n_pos": 15},
...                        "split": "test", "data": "cxr.csv", "held_out": {"checked": True, "n": 30, "train": 0, "val": 0}})
>>> header = trust_header(disc, None, confounders=[], gaps=[], intended_stated=True)
>>> header["level"], header["lines"][0]["text"][:60]
('red', 'The decisions in this report are not evidence: the held-out ')
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["discrimination", "score_range", "trust_header"]


def _ci_text(ci: Sequence[float] | None) -> str:
    return f" (95 % CI {ci[0]:.2f}–{ci[1]:.2f})" if ci and ci[0] is not None and ci[1] is not None else " (no CI)"


def _items(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One AUROC per finding: the binary overall, or each class / label of a multi-output run."""
    if metrics.get("per_label"):
        parts = [(name, (part or {}).get("overall") or {}) for name, part in metrics["per_label"].items()]
    else:
        parts = [(None, metrics.get("overall") or {})]
    return [{"label": name, "auroc": o.get("auroc"), "ci": o.get("auroc_ci"), "n": o.get("n"), "n_pos": o.get("n_pos")}
            for name, o in parts]  # fmt: skip


def discrimination(evaluation: dict[str, Any] | None, run_test: dict[str, Any] | None = None) -> dict[str, Any]:
    """The held-out AUROC(s) a report leads with: from a ``medtl evaluate`` output's
    ``metrics.json`` when one is given, else from the run's own test split (``run_test``:
    ``metrics.json["test"]`` of a run), else none.

    Returns ``source`` (a sentence, or ``None``), ``items`` (label, auroc, ci, n, n_pos),
    ``held_out`` (``True``, ``False`` or ``None`` when unknown), ``overlap`` (a sentence when not held
    out), ``chance`` (the labels whose CI includes 0.5 or is missing) and ``text``.

    >>> discrimination(None)["source"] is None
    True
    >>> d = discrimination(None, {"auroc": 0.91, "auroc_ci": [0.84, 0.97], "n": 40, "n_pos": 20})
    >>> d["text"], d["chance"]
    ("Held-out AUROC 0.91 (95 % CI 0.84–0.97) on 40 images (20 positive), the run's own test split.", [])
    """
    if evaluation:
        what = (
            f"the {evaluation.get('split')} split"
            if evaluation.get("split") not in (None, "default", "all")
            else "all rows"
        )
        source = f"{what} of {evaluation.get('data', 'the evaluated data')} (medtl evaluate)"
        items, seen = _items(evaluation), evaluation.get("held_out") or {}
    elif run_test and (run_test.get("auroc") is not None or run_test.get("per_label")):
        parts = {"per_label": {k: {"overall": v} for k, v in run_test["per_label"].items()}} if run_test.get(
            "per_label") else {"overall": run_test}  # fmt: skip
        source, items, seen = "the run's own test split", _items(parts), {"checked": True}
    else:
        return {"source": None, "items": [], "held_out": None, "overlap": None, "chance": [], "text": ""}
    overlap = None
    held = None if not seen.get("checked") else not (seen.get("train") or seen.get("val"))
    if held is False:
        overlap = (f"{seen.get('train') or 0} of its {seen.get('n', '?')} images trained the model and "
                   f"{seen.get('val') or 0} tuned it")  # fmt: skip
    chance = [it["label"] for it in items if it["auroc"] is None or not it["ci"] or it["ci"][0] <= 0.5]
    parts = []
    for it in items:
        name = f"{it['label']}: " if it["label"] is not None else ""
        value = "undefined (one class only)" if it["auroc"] is None else f"{it['auroc']:.2f}{_ci_text(it['ci'])}"
        parts.append(f"{name}AUROC {value} on {it['n']} images ({it['n_pos']} positive)")
    text = f"Held-out {'; '.join(parts)}, {source}."
    return {"source": source, "items": items, "held_out": held, "overlap": overlap, "chance": chance, "text": text}


def score_range(scores: Sequence[float], labels: Sequence[float] | None = None) -> dict[str, Any] | None:
    """What calibration left: the min, max and 5th–95th percentiles of (calibrated) scores, and
    the prevalence of the finding among them when labels are given.

    >>> score_range([0.48, 0.5, 0.6, 0.89], [0, 1, 0, 1])["text"]
    'scores from 0.48 to 0.89 (90 % of them 0.48–0.85) on 4 images, where 50 % are positive'
    """
    s = np.asarray([v for v in scores if v is not None and np.isfinite(v)], dtype=float)
    if not len(s):
        return None
    lo, hi = np.percentile(s, [5, 95])
    out = {"min": float(s.min()), "max": float(s.max()), "p5": float(lo), "p95": float(hi), "n": int(len(s))}
    text = (f"scores from {out['min']:.2f} to {out['max']:.2f} (90 % of them {out['p5']:.2f}–{out['p95']:.2f}) on "
            f"{out['n']} images")  # fmt: skip
    if labels is not None and len(labels):
        out["prevalence"] = float(np.nanmean(np.asarray(labels, dtype=float)))
        text += f", where {100 * out['prevalence']:.0f} % are positive"
    out["text"] = text
    return out


def _line(severity: str, kind: str, text: str) -> dict[str, str]:
    return {"severity": severity, "kind": kind, "text": text}


def _not_evidence(disc: dict[str, Any]) -> str | None:
    """The red sentence, or ``None`` when the held-out figure stands."""
    lead = "The decisions in this report are not evidence: "
    if disc["source"] is None:
        return lead + ("this model has no held-out evaluation. Run `medtl evaluate RUN DATA --split test --groups …` "
                       "and build the report with `--evaluation` that folder.")  # fmt: skip
    if disc["held_out"] is False:
        return (
            lead + f"the evaluation is not held out ({disc['overlap']}), so its AUROC says nothing about new patients."
        )
    if disc["chance"]:
        which = "" if disc["chance"] == [None] else f" for {', '.join(str(c) for c in disc['chance'])}"
        return lead + (f"the held-out AUROC's 95 % CI{which} includes 0.5 (chance) or could not be estimated: the "
                       "model is not shown to separate the classes.")  # fmt: skip
    return None


def trust_header(disc: dict[str, Any], calibration: dict[str, Any] | None, *, confounders: Sequence[str],
                 gaps: Sequence[str], intended_stated: bool) -> dict[str, Any]:  # fmt: skip
    """The header every page of a report opens with.

    Args:
        disc: :func:`discrimination`'s result.
        calibration: ``{"method", "n", "fitted_on", "range"}``: the calibration (``fitted_on`` is
            ``val``, or why it was not fitted) and the
            :func:`score_range` of held-out scores (``range`` may be ``None``), or ``None``.
        confounders: the confounder check's flag sentences.
        gaps: the bias audit's flagged gaps, as sentences.
        intended_stated: whether the run states an intended use.

    Returns:
        ``level`` (``red``, ``amber`` or ``plain``) and ``lines`` (severity, kind, text), the
        discrimination first.

    >>> trust_header(discrimination(None), None, confounders=[], gaps=[], intended_stated=False)["level"]
    'red'
    """
    lines = []
    red = _not_evidence(disc)
    if red:
        lines.append(_line("red", "not-evidence", red))
    if disc["text"]:
        lines.append(_line("red" if red else "plain", "discrimination", disc["text"]))
    lines += [_line("amber", "confounder", f"Confounder check: {c}.") for c in confounders]
    if gaps:
        lines.append(_line("amber", "gap", f"Bias audit: {len(gaps)} flagged gap{'s' if len(gaps) != 1 else ''} between "
                           "patient groups (see About this model)."))  # fmt: skip
    if not intended_stated:
        lines.append(_line("amber", "intended-use", "No intended use was stated for this model (its training config sets "
                           "no intended_use): what it is for, and for whom, is not known."))  # fmt: skip
    if calibration:
        fitted = calibration.get("fitted_on", "val")
        if fitted != "val":  # too few validation images: the network's raw outputs
            what = f"Uncalibrated ({fitted})"
        elif calibration.get("method") in (None, "none"):
            what = "Uncalibrated (no calibration beat the raw outputs on validation)"
        else:
            what = f"After calibration ({calibration['method']}, fitted on {calibration.get('n', '?')} validation images)"
        rng = calibration.get("range")
        lines.append(_line("plain", "calibration", f"{what}: held-out {rng['text']}." if rng else
                           f"{what}: no held-out scores show the range they span."))  # fmt: skip
    level = "red" if red else "amber" if any(x["severity"] == "amber" for x in lines) else "plain"
    return {"level": level, "lines": lines}
