"""Subgroup bias audit: metrics with CIs per group, gaps between groups, and flags.

:func:`audit` takes predictions joined with patient attributes (a DataFrame, or a CSV such as a
``medtl scan`` manifest merged with ``predictions.csv``) and answers, for every attribute (sex,
age band, site, scanner manufacturer ...): how well does the model do in each group, how far
apart are the groups, and is the difference more than noise?

What it does, in order:

1. Rows whose label or score is missing are **excluded and counted** (``settings.excluded``);
   a score that is present but not a number is an error naming its row.
2. The threshold is the one given (chosen on validation data, as it should be) or else Youden's J
   on the audited rows themselves (optimistic; ``settings.threshold_rule`` says which).
3. A column named ``age`` is binned by ``age_bins`` (default 0/40/60/75/200: ``0-39``, ``40-59``,
   ``60-74``, ``75+``); DICOM age strings such as ``045Y`` are read too. Missing values form a
   group ``(missing)`` that is shown but not compared.
4. Per group: n, positives, prevalence and every metric of
   :data:`~medtl.evaluate.metrics.METRICS` with a 95 % percentile bootstrap CI. A group with fewer
   than ``min_group`` patients (rows, without a patient column; default 30) has ``status: "too
   small"``, one with one class only ``"single class"``, one with fewer than ``min_class``
   positives or negatives (default 5) ``"too few positives"`` / ``"too few negatives"``: all are
   reported (point values where defined, no AUROC for one class) but take no part in gaps or flags.
5. Gaps per attribute and metric: ``value`` = max - min over the compared groups and ``ratio`` =
   min / max, exactly fairlearn's ``MetricFrame.difference()`` / ``ratio()``; the equalized-odds
   difference is ``max(TPR gap, FPR gap)`` as in ``fairlearn.metrics.equalized_odds_difference``.
   The CI is a simultaneous (max-T) bootstrap interval ``[gap - c, gap + c]``: on every resample
   (the same one for all groups) each group's value deviates from its estimate, and ``c`` is the
   ``level`` quantile of the range of those deviations. It bounds every pairwise difference at
   once, so it covers the true max - min whatever the number of groups, and it can include zero.
   (A percentile interval of max - min itself never reaches zero, and one of the worst-minus-best
   pair is too narrow, since that pair was picked for being far apart: with five or more groups
   it excludes zero for pure noise most of the time.) For the equalized-odds difference the
   deviations of TPR and FPR are taken together.
6. A flag is raised for an attribute and metric when the gap's CI excludes zero *and* the gap
   exceeds ``min_gap``. Flags are checked for AUROC, FNR (under-diagnosis), FPR, PPV, ECE and the
   equalized-odds difference (the TPR gap is reported, but equals the FNR gap).

Resampling is by patient when ``patient`` names a column (every row of a patient moves together;
by default the ``patient`` column medtl writes, when there is one), by row otherwise;
``settings.resampling_unit`` says which.

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(1)
>>> df = pd.DataFrame({"y": rng.integers(0, 2, 400), "sex": rng.choice(["F", "M"], 400)})
>>> df["p"] = 1 / (1 + np.exp(-(2 * df.y - 1 + rng.normal(0, 1, 400))))
>>> res = audit(df, "y", "p", ["sex"], threshold=0.5, n_boot=100)
>>> sorted(res.groups["sex"]), res.groups["sex"]["F"]["status"], res.flags
(['F', 'M'], 'ok', [])
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import EvaluationError, suggest
from .bootstrap import BOOT_METRICS, cluster_codes, group_replicates, percentile_ci
from .confounders import CONFOUNDER_RULE, confounder_check, confounder_rows
from .metrics import (
    HIGHER_IS_BETTER,
    binary_metrics,
    calibration_fit,
    choose_threshold,
    net_benefit,
    reliability_diagram,
)

__all__ = [
    "AuditResult",
    "audit",
    "DEFAULT_AGE_BINS",
    "GROUP_METRICS",
    "GAP_METRICS",
    "FLAG_METRICS",
    "MISSING_GROUP",
    "audit_html",
    "threshold_from_csv",
]

#: Age band edges in years: [0, 40), [40, 60), [60, 75), [75, 200).
DEFAULT_AGE_BINS = (0, 40, 60, 75, 200)
#: Metrics reported per group (each with ``<metric>_ci``).
GROUP_METRICS = BOOT_METRICS
#: Metrics whose gap between groups is reported; ``equalized_odds`` comes on top.
GAP_METRICS = ("auroc", "auprc", "tpr", "fpr", "fnr", "ppv", "npv", "ece", "brier")
#: Gaps that can raise a flag.
FLAG_METRICS = ("auroc", "fnr", "fpr", "ppv", "ece", "equalized_odds")
#: Name of the group of rows with no value for an attribute.
MISSING_GROUP = "(missing)"
_MISSING_TEXT = {"", "nan", "na", "n/a", "none", "null"}
_SCHEMA = "medtl.audit/2"  # /2: the confounder check


# --------------------------------------------------------------------------------------------
# Reading and checking the input
# --------------------------------------------------------------------------------------------


@dataclass
class _Input:
    frame: Any  # pandas.DataFrame
    source: str | None
    #: For a CSV, the line each row starts on (header = 1; blank lines and quoted line breaks count).
    lines: list[int] | None = None

    def where(self, pos: int) -> str:
        """Human name of the row at position ``pos``: a CSV line or a DataFrame index label."""
        if self.source is not None:
            return f"line {self.lines[pos] if self.lines else pos + 2}"
        return f"row {self.frame.index[pos]!r}"


def _read(frame_or_csv: Any) -> _Input:
    import pandas as pd

    if isinstance(frame_or_csv, pd.DataFrame):
        return _Input(frame_or_csv, None)
    if not isinstance(frame_or_csv, (str, os.PathLike)):
        raise EvaluationError(None, f"audit takes a pandas DataFrame or a CSV path, not {type(frame_or_csv).__name__}")
    path = os.fspath(frame_or_csv)
    if not os.path.isfile(path):
        raise EvaluationError(path, "no such predictions file")
    from ..data.csvfile import read_csv_rows

    # strict, not pandas: an unclosed quote would join rows into one, or fail naming no line
    columns, rows = read_csv_rows(path, error=EvaluationError)
    # everything as text: the audit decides what is missing or numeric, column by column
    frame = pd.DataFrame([list(r.values()) for r in rows], columns=columns, dtype=str)
    return _Input(frame, path, [r.line for r in rows])


def _missing(series) -> np.ndarray:
    import pandas as pd

    miss = series.isna().to_numpy(dtype=bool, copy=True)
    if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
        text = series.astype(object).where(~miss, "").map(lambda v: str(v).strip().lower())
        miss |= text.isin(_MISSING_TEXT).to_numpy(dtype=bool)
    return miss


def _numeric(inp: _Input, column: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Values as float and the mask of missing ones; a present value that is not a number is an error."""
    import pandas as pd

    series = inp.frame[column]
    miss = _missing(series)
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=float), miss
    values = pd.to_numeric(series.where(~pd.Series(miss, index=series.index)), errors="coerce")
    values = values.to_numpy(dtype=float, na_value=np.nan)
    bad = np.flatnonzero(np.isnan(values) & ~miss)
    if bad.size:
        pos = int(bad[0])
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        raise EvaluationError(
            inp.source, f"{inp.where(pos)}: {what} column '{column}' holds {series.iloc[pos]!r}, not a number{more}"
        )
    inf = np.flatnonzero(np.isinf(values))
    if inf.size:
        raise EvaluationError(inp.source, f"{inp.where(int(inf[0]))}: {what} column '{column}' is not finite")
    return values, miss


def _labels(inp: _Input, column: str, positive: Any) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels and the mask of missing ones."""
    import pandas as pd

    series = inp.frame[column]
    miss = _missing(series)
    if positive is not None:
        values = pd.to_numeric(series.where(~pd.Series(miss, index=series.index)), errors="coerce")
        if (
            isinstance(positive, (int, float, np.number))
            and not isinstance(positive, bool)
            and not values[~miss].isna().any()
        ):
            y = values.to_numpy(dtype=float, na_value=np.nan) == float(positive)
        else:
            y = series.astype(object).map(lambda v: str(v).strip()).to_numpy() == str(positive)
        if not y[~miss].any():
            raise EvaluationError(inp.source, f"label column '{column}' never holds the positive class {positive!r}")
        return y.astype(np.int8), miss
    values, miss = _numeric(inp, column, "label")
    present = values[~miss]
    odd = ~np.isin(present, (0.0, 1.0))
    if odd.any():
        found = sorted({float(v) for v in present})
        shown = ", ".join(f"{v:g}" for v in found[:8]) + (" ..." if len(found) > 8 else "")
        pos = int(np.flatnonzero(~miss)[np.flatnonzero(odd)[0]])
        raise EvaluationError(
            inp.source,
            f"label column '{column}' is not binary (values {shown}; first at {inp.where(pos)}): a binary audit "
            "needs 0/1 labels; pass positive=<class> to audit one class against the rest",
        )
    return np.where(miss, 0, values).astype(np.int8), miss


def _age_labels(values: np.ndarray, missing: np.ndarray, edges: Sequence[float]) -> tuple[np.ndarray, list[str], int]:
    """Age band of each row, the bands in order, and how many ages fell outside every band."""
    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in pairwise(edges)):
        raise EvaluationError(None, f"age_bins must be at least two increasing edges, got {list(edges)}")

    def fmt(v: float) -> str:
        return f"{v:g}"

    names = []
    for i, (lo, hi) in enumerate(pairwise(edges)):
        last = i == len(edges) - 2
        if last and hi >= 120:
            names.append(f"{fmt(lo)}+")
        elif float(lo).is_integer() and float(hi).is_integer():
            names.append(f"{fmt(lo)}-{fmt(hi - 1)}")
        else:
            names.append(f"{fmt(lo)}-<{fmt(hi)}")
    idx = np.searchsorted(edges, np.where(missing, -np.inf, values), side="right") - 1
    outside = (~missing) & ((idx < 0) | (idx >= len(names)))
    labels = np.array(names + [MISSING_GROUP], dtype=object)[np.where(missing | outside, len(names), idx)]
    return labels, names, int(outside.sum())


def _ages(inp: _Input, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Ages in years (NaN where unknown): numbers, or DICOM age strings such as ``045Y``."""
    import pandas as pd

    from ..io.phi import parse_age

    series = inp.frame[column]
    miss = _missing(series)
    values = pd.to_numeric(series.where(~pd.Series(miss, index=series.index)), errors="coerce").to_numpy(
        copy=True, dtype=float, na_value=np.nan
    )
    for pos in np.flatnonzero(np.isnan(values) & ~miss):
        parsed = parse_age(series.iloc[pos])
        values[pos] = np.nan if parsed is None else parsed
    return values, np.isnan(values)


def _group_text(series) -> tuple[np.ndarray, np.ndarray]:
    """Group names as text (integers stored as floats lose their '.0'), and the missing mask."""
    import pandas as pd

    miss = _missing(series)
    if pd.api.types.is_float_dtype(series.dtype):
        vals = series.to_numpy(dtype=float, na_value=np.nan)
        ok = ~miss
        if ok.any() and np.all(vals[ok] == np.round(vals[ok])):
            text = np.array(
                [MISSING_GROUP if m else str(int(v)) for v, m in zip(vals, miss, strict=True)], dtype=object
            )
            return text, miss
    text = series.astype(object).to_numpy()
    out = np.array([MISSING_GROUP if m else str(v).strip() for v, m in zip(text, miss, strict=True)], dtype=object)
    return out, miss


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


def _clean(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


@dataclass
class AuditResult:
    """What :func:`audit` found. ``to_dict()`` is the JSON of ``audit.json``; ``save()`` writes every file.

    Attributes:
        settings: threshold and how it was chosen, resampling unit, n_boot, seed, min_group,
            min_gap, age_bins, excluded rows ...
        overall: metrics over all rows, each with ``<metric>_ci``.
        groups: ``groups[attribute][group]`` -> status, n, metrics with CIs, notes.
        gaps: ``gaps[attribute][metric]`` -> value, ci, ratio, groups [worst, best].
        flags: one dict per flagged attribute and metric (gaps between groups).
        confounders: ``confounders[attribute]`` -> the confounder check
            (:func:`medtl.evaluate.confounders.confounder_check`): does the score predict the
            attribute, does the model work within each level, does the attribute alone predict
            the label; with its own ``flags``.
    """

    settings: dict[str, Any]
    overall: dict[str, Any]
    groups: dict[str, dict[str, dict[str, Any]]]
    gaps: dict[str, dict[str, dict[str, Any]]]
    flags: list[dict[str, Any]]
    confounders: dict[str, dict[str, Any]] = field(default_factory=dict)
    _y: np.ndarray = field(default=None, repr=False)
    _score: np.ndarray = field(default=None, repr=False)
    _labels: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The audit as plain JSON types (no NaN: undefined values are ``None``).

        >>> import json
        >>> res = audit({"y": [0, 1] * 20, "p": [0.3, 0.7] * 20, "g": ["a"] * 40}, "y", "p", "g", n_boot=0)
        >>> sorted(res.to_dict())
        ['confounder_flags', 'confounders', 'flags', 'gaps', 'groups', 'overall', 'schema', 'settings']
        >>> _ = json.dumps(res.to_dict(), allow_nan=False)
        """
        return _clean(
            {
                "schema": _SCHEMA,
                "settings": self.settings,
                "overall": self.overall,
                "groups": self.groups,
                "gaps": self.gaps,
                "flags": self.flags,
                "confounders": self.confounders,
                "confounder_flags": self.confounder_flags,
            }
        )

    @property
    def confounder_flags(self) -> list[dict[str, Any]]:
        """Every attribute's confounder flags, in attribute order.

        >>> y = [0, 1] * 20
        >>> res = audit({"y": y, "p": [0.3, 0.7] * 20, "view": ["PA", "AP"] * 20}, "y", "p", "view", n_boot=50)
        >>> [f["check"] for f in res.confounder_flags]
        ['attribute_predicts_label']
        """
        return [f for entry in self.confounders.values() for f in entry.get("flags", [])]

    def group_rows(self) -> list[dict[str, Any]]:
        """One flat row per attribute and group (the rows of ``groups.csv``).

        >>> res = audit({"y": [0, 1] * 20, "p": [0.3, 0.7] * 20, "g": ["a"] * 40}, "y", "p", "g", n_boot=0)
        >>> row = res.group_rows()[0]
        >>> row["attribute"], row["group"], row["n"], row["auroc"]
        ('g', 'a', 40, 1.0)
        """
        rows = []
        for attr, groups in self.to_dict()["groups"].items():
            for name, g in groups.items():
                row = {"attribute": attr, "group": name, "status": g["status"], "compared": g["compared"]}
                row.update({"n": g["n"], "n_patients": g.get("n_patients"), "n_pos": g["n_pos"]})
                for m in GROUP_METRICS:
                    ci = g.get(f"{m}_ci") or [None, None]
                    row.update({m: g.get(m), f"{m}_low": ci[0], f"{m}_high": ci[1]})
                row["note"] = g.get("note") or ""
                rows.append(row)
        return rows

    def gap_rows(self) -> list[dict[str, Any]]:
        """One flat row per attribute and metric (the rows of ``gaps.csv``).

        >>> res = audit({"y": [0, 1] * 20, "p": [0.3, 0.7] * 20, "g": ["a"] * 40}, "y", "p", "g", n_boot=0)
        >>> res.gap_rows()[0]["metric"], res.gap_rows()[0]["value"]
        ('auroc', None)
        """
        rows = []
        for attr, gaps in self.to_dict()["gaps"].items():
            for metric, gap in gaps.items():
                ci = gap.get("ci") or [None, None]
                pair = gap.get("groups") or [None, None]
                rows.append(
                    {
                        "attribute": attr,
                        "metric": metric,
                        "value": gap.get("value"),
                        "ci_low": ci[0],
                        "ci_high": ci[1],
                        "ratio": gap.get("ratio"),
                        "worst": pair[0],
                        "best": pair[1],
                        "n_groups": gap.get("n_groups"),
                        "flagged": gap.get("flagged", False),
                        "note": gap.get("note") or "",
                    }
                )
        return rows

    def save(self, out_dir: str | os.PathLike, *, plots: bool = True) -> dict[str, Path]:
        """Write ``audit.json``, ``groups.csv``, ``gaps.csv``, ``confounders.csv``, the PNG plots and
        ``audit_section.html``.

        Returns the written paths by name (``json``, ``groups``, ``gaps``, ``confounders``, ``roc``, ``calibration``,
        ``gaps_plot``, ``html``); ``calibration`` is absent when the scores are not probabilities.

        >>> import tempfile
        >>> res = audit({"y": [0, 1] * 20, "p": [0.3, 0.7] * 20, "g": ["a"] * 40}, "y", "p", "g", n_boot=0)
        >>> sorted(res.save(tempfile.mkdtemp(), plots=False))
        ['confounders', 'gaps', 'groups', 'html', 'json']
        """
        from ..rundir import write_bytes, write_csv, write_json, write_text
        from . import plots as plotting

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {"json": write_json(out / "audit.json", self.to_dict())}
        tables = (("groups", "groups.csv", self.group_rows()), ("gaps", "gaps.csv", self.gap_rows()),
                  ("confounders", "confounders.csv", confounder_rows(self.confounders)))  # fmt: skip
        for key, name, rows in tables:
            paths[key] = out / name
            if rows:
                write_csv(paths[key], rows)
            else:
                write_text(paths[key], "")
        images: dict[str, bytes] = {}
        if plots:
            images = plotting.audit_figures(self)
            for name, png in images.items():
                paths["gaps_plot" if name == "gaps" else name] = write_bytes(out / f"{name}.png", png)
        paths["html"] = write_text(out / "audit_section.html", audit_html(self, images))
        return paths


# --------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------


def _point(y: np.ndarray, s: np.ndarray, threshold: float, n_bins: int) -> dict[str, Any]:
    return binary_metrics(y, s, threshold, n_bins=n_bins) if len(y) else {"n": 0, "n_pos": 0, "notes": {}}


def _with_cis(point: dict[str, Any], reps: dict[str, np.ndarray] | None, g: int, level: float) -> dict[str, Any]:
    out: dict[str, Any] = {"n": point["n"], "n_pos": point["n_pos"]}
    notes = dict(point.get("notes", {}))
    for m in GROUP_METRICS:
        out[m] = point.get(m)
        ci = None
        if reps is not None and out[m] is not None:
            ci, note = percentile_ci(reps[m][g], level)
            if note:
                notes[f"{m}_ci"] = note
        out[f"{m}_ci"] = ci
    out["notes"] = notes
    return out


def _simultaneous(value: float, spread: np.ndarray, level: float, max_undefined: float = 0.1):
    """``[value - c, value + c]`` with c the ``level`` quantile of the resamples' spread, and a note."""
    ok = np.isfinite(spread)
    n_bad = int(spread.size - ok.sum())
    note = f"undefined in {n_bad} of {spread.size} resamples" if n_bad else None
    if ok.sum() == 0 or n_bad > max_undefined * spread.size:
        return None, note
    c = float(np.percentile(spread[ok], 100 * level))
    return [value - c, value + c], note


def _gap(
    metric: str, values: dict[str, float], reps: dict[str, np.ndarray] | None, index: dict[str, int], level: float
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Gap of one metric over the compared groups, and the per-resample spread behind its CI (or None)."""
    names = [g for g, v in values.items() if v is not None]
    if len(names) < 2:
        return {"value": None, "ci": None, "ratio": None, "groups": [], "n_groups": len(names),
                "flagged": False, "note": "fewer than two groups to compare"}, None  # fmt: skip
    vals = np.array([values[g] for g in names], dtype=float)
    hi_name, lo_name = names[int(np.argmax(vals))], names[int(np.argmin(vals))]
    value = float(vals.max() - vals.min())
    ratio = float(vals.min() / vals.max()) if vals.max() > 0 else None
    worst, best = (lo_name, hi_name) if HIGHER_IS_BETTER.get(metric, True) else (hi_name, lo_name)
    out = {"value": value, "ci": None, "ratio": ratio, "groups": [worst, best], "n_groups": len(names),
           "flagged": False}  # fmt: skip
    spread = None
    if reps is not None:
        # Max-T interval: how far each group's resampled value strays from its estimate, and the range
        # of those deviations over groups bounds every pairwise error at once. So [gap - c, gap + c]
        # covers the true max - min with the stated level however many groups there are, whereas the
        # interval of the one pair picked as worst and best (picked for being far apart) would not.
        deviations = np.stack([reps[metric][index[g]] - values[g] for g in names])
        spread = deviations.max(axis=0) - deviations.min(axis=0)  # NaN if any group is undefined
        out["ci"], note = _simultaneous(value, spread, level)
        if note:
            out["note"] = note
    return out, spread


def audit(
    frame_or_csv: Any,
    label: str,
    score: str,
    groups: str | Sequence[str],
    *,
    threshold: float | None = None,
    patient: str | None = "auto",
    intersections: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    min_group: int = 30,
    min_gap: float = 0.05,
    age_bins: Sequence[float] = DEFAULT_AGE_BINS,
    positive: Any = None,
    level: float = 0.95,
    n_bins: int = 10,
    threshold_rule: str | None = None,
    min_class: int = 5,
) -> AuditResult:
    """Audit binary predictions for differences between groups of patients.

    Args:
        frame_or_csv: a pandas DataFrame (or a dict of columns), or the path of a CSV.
        label: column of 0/1 labels (or any labels with ``positive``).
        score: column of scores, higher = more likely positive (probabilities for ECE/Brier).
        groups: attribute column(s), e.g. ``["sex", "age", "site"]``; ``age`` is binned.
        threshold: decision threshold (``score >= threshold`` is positive); by default Youden's J on
            these rows, which is optimistic: pass the one chosen on validation data.
        patient: column of patient ids: resample patients instead of rows, and count a group's
            size in patients. ``"auto"`` (the default) uses a column named ``patient`` (the one
            ``medtl evaluate`` and ``medtl scan`` write) when there is one; ``None`` resamples rows.
        intersections: also audit every pair of attributes (``sex×site`` ...).
        n_boot: bootstrap resamples (0: point values only, no CIs and so no flags).
        seed: seed of the resamples.
        min_group: groups with fewer patients (rows without a patient column) are reported as
            ``too small`` and not compared.
        min_class: groups with fewer positives or negatives than this are reported as
            ``too few positives`` / ``too few negatives`` and not compared: their AUROC, sensitivity
            or specificity would rest on a handful of cases.
        min_gap: a gap must exceed this (and its CI exclude zero) to be flagged.
        age_bins: edges of the age bands, in years.
        positive: the positive class when ``label`` is not 0/1 (one-vs-rest audit of that class).
            A multi-class model is audited one class at a time (``positive=k`` with the score column
            of class k); a multi-label model one label column (and its score column) at a time.
        level: confidence level of the intervals.
        n_bins: equal-width bins of the ECE and reliability data.
        threshold_rule: how a given ``threshold`` was chosen, recorded in ``settings`` (default "given").

    Raises:
        EvaluationError: unreadable file, missing column (with the nearest name), a score or label
            that is not a number (naming its row), labels that are not binary, no usable rows.

    >>> res = audit({"y": [0, 1] * 30, "p": [0.2, 0.9] * 30, "s": ["a", "b", "b", "a"] * 15}, "y", "p", "s", n_boot=0)
    >>> res.settings["threshold"], res.groups["s"]["a"]["auroc"], res.gaps["s"]["auroc"]["value"]
    (0.55, 1.0, 0.0)
    """
    import pandas as pd

    if isinstance(frame_or_csv, dict):
        frame_or_csv = pd.DataFrame(frame_or_csv)
    inp = _read(frame_or_csv)
    if patient == "auto":
        patient = "patient" if "patient" in inp.frame.columns else None
    attrs = [groups] if isinstance(groups, str) else list(groups)
    columns = [str(c) for c in inp.frame.columns]
    for what, col in [("label", label), ("score", score), *[("group", a) for a in attrs]] + (
        [("patient", patient)] if patient is not None else []
    ):
        if col not in inp.frame.columns:
            raise EvaluationError(
                inp.source, f"no {what} column '{col}'" + suggest(str(col), columns, listing="columns are")
            )
    if len(set(attrs)) != len(attrs):
        raise EvaluationError(inp.source, f"group columns repeat: {attrs}")
    if n_boot < 0 or min_group < 1 or not 0 <= min_gap or not 0 < level < 1:
        raise EvaluationError(None, "n_boot >= 0, min_group >= 1, min_gap >= 0 and 0 < level < 1 are required")

    y_all, y_missing = _labels(inp, label, positive)
    s_all, s_missing = _numeric(inp, score, "score")
    keep = ~(y_missing | s_missing)
    excluded = {
        "missing_label": int(y_missing.sum()),
        "missing_score": int(s_missing.sum()),
        "rows": int((~keep).sum()),
    }
    y, s = y_all[keep].astype(np.int8), s_all[keep]
    n = int(len(y))
    if n == 0:
        raise EvaluationError(inp.source, "no rows with both a label and a score")

    if threshold is None:
        if y.min() == y.max():
            raise EvaluationError(inp.source, "only one class among the rows: pass threshold= (Youden needs both)")
        threshold = choose_threshold(y, s, rule="youden")
        rule = "youden on the audited rows (optimistic; prefer a threshold chosen on validation data)"
    else:
        threshold = float(threshold)
        rule = threshold_rule or "given"

    # group labels per attribute, in display order
    labels: dict[str, np.ndarray] = {}
    orders: dict[str, list[str]] = {}
    attr_notes: dict[str, str] = {}
    for a in attrs:
        if str(a).lower() == "age":
            ages, miss = _ages(inp, a)
            lab, names, outside = _age_labels(ages, miss, age_bins)
            if outside:
                attr_notes[a] = f"{outside} age(s) outside the bins {list(age_bins)} counted as {MISSING_GROUP}"
        else:
            lab, _ = _group_text(inp.frame[a])
            names = sorted({v for v in lab if v != MISSING_GROUP}, key=_natural)
        labels[a] = lab[keep]
        present = set(labels[a].tolist())
        orders[a] = [g for g in names if g in present] + ([MISSING_GROUP] if MISSING_GROUP in present else [])
    if intersections:
        for a, b in combinations(attrs, 2):
            name = f"{a}×{b}"
            la, lb = labels[a], labels[b]
            both = np.array(
                [MISSING_GROUP if MISSING_GROUP in (u, v) else f"{u}×{v}" for u, v in zip(la, lb, strict=True)],
                dtype=object,
            )
            labels[name] = both
            present = set(both.tolist())
            orders[name] = [f"{u}×{v}" for u in orders[a] for v in orders[b] if f"{u}×{v}" in present]
            orders[name] += [MISSING_GROUP] if MISSING_GROUP in present else []

    cluster = None
    n_clusters = n
    if patient is not None:
        pid, _ = _group_text(inp.frame[patient])
        pid = pid[keep]
        codes, uniques = pd.factorize(pd.Series(pid, dtype=object))
        missing_pid = pid == MISSING_GROUP
        codes = codes.astype(np.int64)
        # rows with no patient id link to nothing: each is a patient of its own
        codes[missing_pid] = len(uniques) + np.arange(int(missing_pid.sum()))
        cluster = codes
        n_clusters = int(len(np.unique(codes)))
        if missing_pid.any():
            attr_notes.setdefault("patient", f"{int(missing_pid.sum())} row(s) without a patient id resampled alone")

    # status of every group; only judgeable ones pay for AUROC on every resample
    partitions: dict[str, tuple] = {"__overall__": (np.zeros(n, np.intp), 1, [True])}
    status: dict[str, dict[str, str]] = {}
    group_index: dict[str, dict[str, int]] = {}
    for a, order in orders.items():
        index = {g: i for i, g in enumerate(order)}
        codes = np.array([index[v] for v in labels[a]], dtype=np.intp)
        counts = np.bincount(codes, minlength=len(order))
        pos = np.bincount(codes, weights=y, minlength=len(order))
        units = counts if cluster is None else np.array([len(np.unique(cluster[codes == i])) for i in range(len(order))])
        st = {}
        for g, i in index.items():
            if units[i] < min_group:
                st[g] = "too small"
            elif pos[i] == 0 or pos[i] == counts[i]:
                st[g] = "single class"
            elif pos[i] < min_class:
                st[g] = "too few positives"
            elif counts[i] - pos[i] < min_class:
                st[g] = "too few negatives"
            else:
                st[g] = "ok"
        status[a], group_index[a] = st, index
        partitions[a] = (codes, len(order), [st[g] == "ok" for g in order])

    reps = None
    if n_boot > 0:
        reps = group_replicates(
            y, s, partitions, threshold=threshold, cluster=cluster, n_boot=n_boot, seed=seed, n_bins=n_bins
        )

    overall_point = _point(y, s, threshold, n_bins)
    overall = _with_cis(overall_point, reps["__overall__"] if reps else None, 0, level)
    overall["threshold"] = threshold
    prob = overall_point.get("ece") is not None
    if prob:
        overall["reliability"] = reliability_diagram(y, s, n_bins)
        overall.update(_calibration_fit_with_cis(y, s, cluster, n_boot, seed, level))
        if 0 < threshold < 1:
            nb = net_benefit(y, s, [threshold])
            overall["net_benefit"] = {"model": nb["model"][0], "treat_all": nb["treat_all"][0], "threshold": threshold}

    result_groups: dict[str, dict[str, dict[str, Any]]] = {}
    result_gaps: dict[str, dict[str, dict[str, Any]]] = {}
    flags: list[dict[str, Any]] = []
    for a, order in orders.items():
        codes = partitions[a][0]
        result_groups[a] = {}
        compared: dict[str, dict[str, Any]] = {}
        for g in order:
            i = group_index[a][g]
            rows = codes == i
            point = _point(y[rows], s[rows], threshold, n_bins)
            st = status[a][g]
            entry = {"status": st, "compared": st == "ok" and g != MISSING_GROUP}
            entry.update(_with_cis(point, reps[a] if reps and st != "too small" else None, i, level))
            # a characteristics table counts people, not images (TRIPOD+AI 20b)
            entry["n_patients"] = int(len(np.unique(cluster[rows]))) if cluster is not None else None
            notes = []
            if st == "too small":
                unit = "patients" if cluster is not None else "rows"
                notes.append(f"fewer than min_group={min_group} {unit}: shown, not compared")
            elif st.startswith("too few"):
                notes.append(f"fewer than min_class={min_class} {st.split()[-1]}: shown, not compared")
            elif st == "single class":
                notes.append(f"only {'positive' if point['n_pos'] else 'negative'} rows: no AUROC, not compared")
            if g == MISSING_GROUP:
                notes.append(f"rows with no value for '{a}': shown, not compared")
            entry["note"] = "; ".join(notes) or None
            if prob and point["n"]:
                entry["reliability"] = reliability_diagram(y[rows], s[rows], n_bins)
            result_groups[a][g] = entry
            if entry["compared"]:
                compared[g] = entry
        gaps: dict[str, dict[str, Any]] = {}
        draws: dict[str, np.ndarray | None] = {}
        for m in GAP_METRICS:
            gaps[m], draws[m] = _gap(m, {g: e[m] for g, e in compared.items()}, reps[a] if reps else None,
                                     group_index[a], level)  # fmt: skip
        gaps["equalized_odds"] = _equalized_odds(gaps, draws, level)
        for m in FLAG_METRICS:
            gap = gaps[m]
            ci = gap.get("ci")
            gap["flagged"] = bool(gap["value"] is not None and ci is not None and ci[0] > 0 and gap["value"] > min_gap)
            if gap["flagged"]:
                worst, best = gap["groups"]
                what = "equalized-odds difference" if m == "equalized_odds" else m.upper()
                flags.append(
                    {
                        "attribute": a,
                        "metric": m,
                        "gap": gap["value"],
                        "ci": ci,
                        "groups": [worst, best],
                        "reason": (
                            f"{what} gap {gap['value']:.3f} between '{worst}' (worst) and '{best}' (best): "
                            f"{level:.0%} CI {ci[0]:.3f} to {ci[1]:.3f} excludes 0 and the gap exceeds "
                            f"min_gap {min_gap:g}"
                        ),
                    }
                )
        result_gaps[a] = gaps

    confounders = confounder_check(y, s, {a: labels[a] for a in attrs}, cluster=cluster, n_boot=n_boot, seed=seed,
                                   level=level, min_class=min_class, missing=MISSING_GROUP)  # fmt: skip
    settings = {
        "label": label,
        "score": score,
        "positive": positive,
        "attributes": list(orders),
        "intersections": bool(intersections),
        "threshold": threshold,
        "threshold_rule": rule,
        "n_rows": n,
        "excluded": excluded,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": float(level),
        "ci_method": "percentile bootstrap",
        "gap_ci": "simultaneous max-T bootstrap: gap ± level-quantile of the range of groups' deviations",
        "resampling_unit": "patient" if patient is not None else "row",
        "patient_column": patient,
        "n_clusters": n_clusters,
        "min_group": int(min_group),
        "min_class": int(min_class),
        "min_gap": float(min_gap),
        "age_bins": [float(e) if not float(e).is_integer() else int(e) for e in age_bins],
        "n_bins": int(n_bins),
        "source": None if inp.source is None else os.path.basename(inp.source),
        "notes": {k: v for k, v in attr_notes.items()},
        "confounder_rule": CONFOUNDER_RULE,
    }
    return AuditResult(settings, overall, result_groups, result_gaps, flags, confounders, y, s, labels)


def threshold_from_csv(
    path: str | os.PathLike, label: str, score: str, *, rule: str = "youden", target: float = 0.9, positive: Any = None
) -> tuple[float, str]:
    """The operating threshold chosen on validation predictions (same label and score columns as
    the audited CSV), and a description of how, for ``audit(..., threshold_rule=)``.

    Rows with a missing label or score are left out; bad values raise as in :func:`audit`.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "val.csv"
    >>> _ = p.write_text("y,p\\n0,0.125\\n0,0.5\\n1,0.375\\n1,0.875\\n")
    >>> threshold_from_csv(p, "y", "p")  # halfway between 0.5 (negative) and 0.875 (positive)
    (0.6875, 'youden on val.csv (4 validation rows)')
    """
    inp = _read(path)
    for what, col in (("label", label), ("score", score)):
        if col not in inp.frame.columns:
            columns = [str(c) for c in inp.frame.columns]
            raise EvaluationError(
                inp.source, f"no {what} column '{col}'" + suggest(col, columns, listing="columns are")
            )
    y, y_missing = _labels(inp, label, positive)
    s, s_missing = _numeric(inp, score, "score")
    keep = ~(y_missing | s_missing)
    threshold = choose_threshold(y[keep], s[keep], rule=rule, target=target)
    what = "youden" if rule == "youden" else f"sensitivity >= {target:g}"
    return threshold, f"{what} on {os.path.basename(os.fspath(path))} ({int(keep.sum())} validation rows)"


def _equalized_odds(gaps: dict[str, dict], spreads: dict[str, np.ndarray | None], level: float) -> dict[str, Any]:
    tpr, fpr = gaps["tpr"], gaps["fpr"]
    if tpr["value"] is None or fpr["value"] is None:
        return {"value": None, "ci": None, "ratio": None, "groups": [], "component": None, "flagged": False,
                "note": "needs TPR and FPR in at least two groups"}  # fmt: skip
    component = "tpr" if tpr["value"] >= fpr["value"] else "fpr"
    ratios = [r for r in (tpr["ratio"], fpr["ratio"]) if r is not None]
    out = {
        "value": max(tpr["value"], fpr["value"]),
        "ci": None,
        "ratio": min(ratios) if len(ratios) == 2 else None,
        "groups": gaps[component]["groups"],
        "component": component,
        "n_groups": gaps[component]["n_groups"],
        "flagged": False,
    }
    if spreads["tpr"] is not None and spreads["fpr"] is not None:
        # simultaneous over both rates, so the maximum of the two gaps is covered too
        out["ci"], note = _simultaneous(out["value"], np.maximum(spreads["tpr"], spreads["fpr"]), level)
        if note:
            out["note"] = note
    return out


def _natural(text: str) -> tuple:
    """Sort key that puts '2' before '10' and numbers before words."""
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text.lower())


# --------------------------------------------------------------------------------------------
# HTML fragment
# --------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(ci: Any) -> str:
    return "" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def audit_html(result: AuditResult, images: dict[str, bytes] | None = None) -> str:
    """A self-contained ``<section>`` (tables, plots as base64 PNG) for a report to embed; all text escaped.

    >>> res = audit({"y": [0, 1] * 20, "p": [0.3, 0.7] * 20, "g": ["<b>"] * 40}, "y", "p", "g", n_boot=0)
    >>> text = audit_html(res)
    >>> text.startswith('<section class="medtl-audit"'), "<b>" in text, "&lt;b&gt;" in text
    (True, False, True)
    """
    import base64

    e = html.escape
    data = result.to_dict()
    st = data["settings"]
    level = f"{st['level']:.0%}"
    parts = [
        '<section class="medtl-audit" id="medtl-audit">',
        "<style>.medtl-audit table{border-collapse:collapse;margin:.5em 0 1.2em}"
        ".medtl-audit th,.medtl-audit td{border:1px solid #bbb;padding:2px 6px;text-align:right}"
        ".medtl-audit th:first-child,.medtl-audit td:first-child{text-align:left}"
        ".medtl-audit .flag{color:#D55E00;font-weight:bold}.medtl-audit img{max-width:100%}</style>",
        "<h2>Evaluation and bias audit</h2>",
        "<p>"
        + e(
            f"{st['n_rows']:,} predictions ({st['excluded']['rows']} excluded for a missing label or score); "
            f"threshold {st['threshold']:.4g} ({st['threshold_rule']}); {level} {st['ci_method']} intervals from "
            f"{st['n_boot']} resamples of {st['resampling_unit']}s (seed {st['seed']}); groups under "
            f"{st['min_group']} {'patients' if st['resampling_unit'] == 'patient' else 'rows'} or {st.get('min_class', 5)} "
            f"positives or negatives are not compared; a gap is flagged when its CI excludes 0 and it exceeds "
            f"{st['min_gap']:g}."
        )
        + "</p>",
        "<h3>Flags</h3>",
    ]
    if data["flags"]:
        parts.append("<ul>" + "".join(f'<li class="flag">{e(f["reason"])}</li>' for f in data["flags"]) + "</ul>")
    else:
        parts.append("<p>" + e("No gap was flagged.") + "</p>")
    overall = data["overall"]
    parts.append(f"<h3>Overall</h3><table><tr><th>metric</th><th>value</th><th>{e(level)} CI</th></tr>")
    for m in GROUP_METRICS:
        parts.append(
            f"<tr><td>{e(m)}</td><td>{e(_fmt(overall.get(m)))}</td><td>{e(_ci(overall.get(m + '_ci')).strip())}</td></tr>"
        )
    parts.append("</table>")
    shown = ("auroc", "tpr", "fpr", "fnr", "ppv", "ece")
    for attr, groups in data["groups"].items():
        parts.append(
            f"<h3>Groups by {e(attr)}</h3><table><tr><th>group</th><th>status</th><th>n</th><th>positives</th>"
        )
        parts.append("".join(f"<th>{e(m.upper())}</th>" for m in shown) + "<th>note</th></tr>")
        for name, g in groups.items():
            cells = "".join(f"<td>{e(_fmt(g.get(m)) + _ci(g.get(m + '_ci')))}</td>" for m in shown)
            parts.append(
                f"<tr><td>{e(name)}</td><td>{e(g['status'])}</td><td>{e(_fmt(g['n']))}</td><td>{e(_fmt(g['n_pos']))}</td>"
                f"{cells}<td>{e(g.get('note') or '')}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        f"<h3>Gaps between groups</h3><table><tr><th>attribute</th><th>metric</th><th>gap (max − min)</th>"
        f"<th>{e(level)} CI</th><th>ratio (min / max)</th><th>worst</th><th>best</th><th>flagged</th></tr>"
    )
    for row in result.gap_rows():
        cls = ' class="flag"' if row["flagged"] else ""
        ci = "" if row["ci_low"] is None else f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        parts.append(
            f"<tr{cls}><td>{e(row['attribute'])}</td><td>{e(row['metric'])}</td><td>{e(_fmt(row['value']))}</td>"
            f"<td>{e(ci)}</td><td>{e(_fmt(row['ratio']))}</td><td>{e(_fmt(row['worst']))}</td>"
            f"<td>{e(_fmt(row['best']))}</td><td>{e('yes' if row['flagged'] else '')}</td></tr>"
        )
    parts.append("</table>")
    parts += _confounder_html(result, level)
    captions = {
        "roc": "ROC curves per group (one panel per attribute)",
        "calibration": "Reliability diagrams per group (mean score vs. observed rate per bin)",
        "decision": "Decision curve: net benefit of acting on the model at each threshold probability",
        "gaps": f"Gaps with {level} CIs; the shaded band is ±min_gap",
    }
    for name, png in (images or {}).items():
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        cap = captions.get(name, name)
        parts.append(f'<figure><img src="{uri}" alt="{e(cap)}"><figcaption>{e(cap)}</figcaption></figure>')
    parts.append("</section>")
    return "\n".join(parts) + "\n"


def _confounder_html(result: AuditResult, level: str) -> list[str]:
    """The confounder check's flags, what could not be measured, and its table."""
    e = html.escape
    parts = ["<h3>Confounder check</h3>", "<p>" + e(f"Per attribute: how well the score predicts the attribute (one "
             "level vs the rest), the model's AUROC within each level, and the attribute alone as a predictor of the "
             f"finding; {CONFOUNDER_RULE}.") + "</p>"]  # fmt: skip
    flags = result.confounder_flags
    parts.append("<ul>" + "".join(f'<li class="flag confounder-flag">{e(f["reason"])}</li>' for f in flags) + "</ul>"
                 if flags else "<p>" + e("No confounder was flagged.") + "</p>")  # fmt: skip
    missing = [m for entry in result.confounders.values() for m in entry.get("not_measured", [])]
    if missing:
        parts.append("<p>Not measured:</p><ul>" + "".join(f"<li>{e(m)}</li>" for m in missing) + "</ul>")
    parts.append(f"<table><tr><th>attribute</th><th>figure</th><th>level</th><th>n</th><th>positives</th>"
                 f"<th>AUROC</th><th>{e(level)} CI</th><th>flagged</th><th>note</th></tr>")  # fmt: skip
    for r in confounder_rows(result.confounders):
        ci = "" if r["ci_low"] is None else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        cls = ' class="flag"' if r["flagged"] else ""
        parts.append(f"<tr{cls}><td>{e(r['attribute'])}</td><td>{e(r['figure'])}</td>"
                     f"<td>{e(_fmt(r['level']) if r['level'] is not None else '')}</td><td>{e(_fmt(r['n']))}</td>"
                     f"<td>{e(_fmt(r['n_pos']))}</td><td>{e(_fmt(r['auroc']))}</td><td>{e(ci)}</td>"
                     f"<td>{'yes' if r['flagged'] else ''}</td><td>{e(r['note'])}</td></tr>")  # fmt: skip
    parts.append("</table>")
    return parts


def _calibration_fit_with_cis(y: np.ndarray, s: np.ndarray, cluster, n_boot: int, seed: int,
                              level: float) -> dict[str, Any]:  # fmt: skip
    """Calibration slope and intercept with percentile CIs from resampling the same units (patients
    or rows) as the other metrics; a separate stream of the same seed, so they add no draws to it."""
    fit = calibration_fit(y, s)
    out: dict[str, Any] = {"calibration_slope": fit["slope"], "calibration_intercept": fit["intercept"]}
    for key in ("calibration_slope", "calibration_intercept"):
        out[f"{key}_ci"] = None
    if fit["note"]:
        out["calibration_note"] = fit["note"]
    if n_boot < 1 or (fit["slope"] is None and fit["intercept"] is None):
        return out
    codes, k = cluster_codes(cluster, len(y))
    order = np.argsort(codes, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(codes, minlength=k))[:-1])
    rng = np.random.default_rng([seed, 7])  # its own stream: the other metrics' resamples stay as they were
    reps = np.full((2, n_boot), np.nan)
    for b in range(n_boot):
        idx = np.concatenate([members[c] for c in rng.integers(0, k, k)])
        f = calibration_fit(y[idx], s[idx])
        reps[:, b] = [np.nan if f["slope"] is None else f["slope"], np.nan if f["intercept"] is None else f["intercept"]]
    for row, key in enumerate(("calibration_slope", "calibration_intercept")):
        if out[key] is not None:
            out[f"{key}_ci"], _ = percentile_ci(reps[row], level)
    return out
