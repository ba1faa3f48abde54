"""Figures of a bias audit: ROC and reliability curves per group, and a forest plot of the gaps.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so
nothing here touches the global backend or a display, and rendering is thread-safe. Colours are
the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies); past eight
groups the line style changes too. Every legend entry carries the group's n.

>>> import numpy as np
>>> from medtl.evaluate.audit import audit
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 200)
>>> res = audit({"y": y, "p": (y + rng.random(200)) / 2, "g": ["a", "b"] * 100}, "y", "p", "g", n_boot=20)
>>> figs = audit_figures(res)
>>> sorted(figs), figs["roc"][:8] == b"\\x89PNG\\r\\n\\x1a\\n"
(['calibration', 'decision', 'gaps', 'roc'], True)
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from .audit import FLAG_METRICS

__all__ = ["PALETTE", "roc_figure", "calibration_figure", "gap_figure", "figure_png", "audit_figures"]

#: Okabe-Ito colours, most legible on white first (the yellow last).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
_STYLES = ("-", "--", ":", "-.")
_MAX_GROUPS = 12  # more lines than this in one panel cannot be told apart: the largest groups are drawn


def _style(i: int) -> dict[str, Any]:
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": _STYLES[(i // len(PALETTE)) % len(_STYLES)]}


def _panels(n: int, width: float = 4.2, height: float = 4.0):
    from matplotlib.figure import Figure

    cols = min(3, max(n, 1))
    rows = math.ceil(max(n, 1) / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _drawn_groups(groups: dict[str, dict[str, Any]]) -> list[str]:
    names = [g for g in groups if groups[g]["n"] > 0]
    if len(names) > _MAX_GROUPS:
        names = sorted(names, key=lambda g: -groups[g]["n"])[:_MAX_GROUPS]
    return names


def _groups_of(result: Any, data: dict[str, Any], attr: str | None) -> tuple[dict[str, dict[str, Any]], np.ndarray]:
    """The groups of one panel and each row's group; ``attr=None`` is one group of every row."""
    if attr is not None:
        return data["groups"][attr], result._labels[attr]
    return {"all": {"status": "ok", **data["overall"]}}, np.full(len(result._y), "all", dtype=object)


def roc_figure(result: Any):
    """ROC curve of every group with both classes, one panel per attribute.

    >>> fig = roc_figure(_tiny())
    >>> fig.axes[0].get_xlabel()
    'False-positive rate (1 - specificity)'
    """
    from sklearn.metrics import roc_curve

    data = result.to_dict()
    attrs = list(data["groups"]) or [None]  # no attribute: one panel of all rows
    fig, axes = _panels(len(attrs))
    what = "per group" if attrs[0] is not None else "of all rows"
    fig.suptitle(f"ROC {what} (threshold {data['settings']['threshold']:.3g} marked)")
    thr = data["settings"]["threshold"]
    for ax, attr in zip(axes, attrs, strict=True):
        groups, labels = _groups_of(result, data, attr)
        for i, g in enumerate(_drawn_groups(groups)):
            info = groups[g]
            rows = labels == g
            if info["auroc"] is None or info["status"] == "too small":
                # a handful of rows draws a staircase that looks like evidence: listed, not drawn
                ax.plot([], [], label=f"{g} (n={info['n']:,}, {info['status']}, not drawn)", **_style(i))
                continue
            fpr, tpr, _ = roc_curve(result._y[rows], result._score[rows])
            tag = "" if info["status"] == "ok" else f", {info['status']}"
            ax.plot(fpr, tpr, lw=1.6, label=f"{g} (n={info['n']:,}, AUROC {info['auroc']:.3f}{tag})", **_style(i))
            if info["fpr"] is not None and info["tpr"] is not None:
                ax.plot([info["fpr"]], [info["tpr"]], "o", ms=5, color=_style(i)["color"])
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, linestyle=(0, (2, 2)))
        ax.set(xlim=(0, 1), ylim=(0, 1.01), title=f"by {attr}" if attr else "", aspect="equal")
        ax.set_xlabel("False-positive rate (1 - specificity)")
        ax.set_ylabel("True-positive rate (sensitivity)")
        ax.legend(loc="lower right", fontsize=7, title_fontsize=7, title=f"dots: threshold {thr:.3g}")
    return fig


def calibration_figure(result: Any):
    """Reliability diagram of every group, one panel per attribute; ``None`` if scores are not probabilities.

    >>> calibration_figure(_tiny()).axes[0].get_ylabel()
    'Observed rate of positives'
    """
    data = result.to_dict()
    if "reliability" not in data["overall"]:
        return None
    attrs = list(data["groups"]) or [None]
    n_bins = data["settings"]["n_bins"]
    fig, axes = _panels(len(attrs))
    what = "per group" if attrs[0] is not None else "of all rows"
    fig.suptitle(f"Calibration {what}\n({n_bins} equal-width bins; marker size ~ rows in bin)")
    for ax, attr in zip(axes, attrs, strict=True):
        groups, _ = _groups_of(result, data, attr)
        for i, g in enumerate(_drawn_groups(groups)):
            info = groups[g]
            rel = info.get("reliability")
            if not rel or info["status"] == "too small":
                ax.plot([], [], label=f"{g} (n={info['n']:,}, {info['status']}, not drawn)", **_style(i))
                continue
            pts = [(p, o, c) for p, o, c in zip(rel["mean_prob"], rel["observed"], rel["count"], strict=True) if c > 0]
            x, yv, c = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
            ece = "" if info["ece"] is None else f", ECE {info['ece']:.3f}"
            ax.plot(x, yv, marker="o", lw=1.4, ms=3, label=f"{g} (n={info['n']:,}{ece})", **_style(i))
            ax.scatter(x, yv, s=8 + 60 * c / c.max(), color=_style(i)["color"], alpha=0.35, linewidths=0)
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, linestyle=(0, (2, 2)), label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), title=f"by {attr}" if attr else "", aspect="equal")
        ax.set_xlabel("Mean predicted probability")
        ax.set_ylabel("Observed rate of positives")
        ax.legend(loc="upper left", fontsize=7)
    return fig


def decision_figure(result: Any):
    """Decision curve of all rows: the model's net benefit against treating everyone and no one,
    over threshold probabilities 1-99 %; ``None`` if scores are not probabilities.

    >>> decision_figure(_tiny()).axes[0].get_ylabel()
    'Net benefit'
    """
    from .metrics import net_benefit

    data = result.to_dict()
    if "reliability" not in data["overall"]:
        return None
    t = np.linspace(0.01, 0.99, 99)
    nb = net_benefit(result._y, result._score, t)
    prevalence = float(np.mean(result._y)) if len(result._y) else 0.0
    fig, axes = _panels(1, width=5.2)
    ax = axes[0]
    ax.plot(t, nb["model"], lw=1.8, label="the model", **_style(0))
    ax.plot(t, nb["treat_all"], lw=1.0, color="#777777", label="treat all")
    ax.axhline(0, lw=1.0, color="#222222", linestyle=(0, (2, 2)), label="treat none")
    thr = data["settings"]["threshold"]
    if 0 < thr < 1:
        ax.axvline(thr, lw=0.8, color="#D55E00", label=f"run threshold {thr:.3g}")
    ax.set(xlim=(0, 1), ylim=(-0.05, max(prevalence, 0.05) * 1.1))
    ax.set_xlabel("Threshold probability")
    ax.set_ylabel("Net benefit")
    ax.legend(loc="upper right", fontsize=7)
    fig.suptitle(f"Decision curve (n={len(result._y):,}, prevalence {prevalence:.1%})")
    return fig


def gap_figure(result: Any):
    """Forest plot of the flaggable gaps (attribute x metric) with CIs; ±min_gap shaded, flags in vermillion.

    ``None`` when there is no gap to show (no attribute, or no two groups large enough to compare).

    >>> gap_figure(_tiny()).axes[0].get_xlabel()
    'Gap between worst and best group (max - min), with 95% CI'
    """
    from matplotlib.figure import Figure

    data = result.to_dict()
    st = data["settings"]
    rows = []
    for attr, gaps in data["gaps"].items():
        for metric in FLAG_METRICS:  # the gaps that can be flagged; the rest are in gaps.csv
            gap = gaps.get(metric)
            if gap and gap["value"] is not None:
                rows.append((attr, metric, gap))
    if not rows:  # no attribute, or no group large enough to compare: nothing to draw
        return None
    fig = Figure(figsize=(8.0, 1.5 + 0.28 * max(len(rows), 1)), layout="constrained")
    ax = fig.subplots()
    band = st["min_gap"]
    ax.axvspan(-band, band, color="#E0E0E0", zorder=0, label=f"within ±min_gap ({band:g})")
    ax.axvline(0, color="#666666", lw=0.8)
    for i, (_, _, gap) in enumerate(rows):
        color = PALETTE[1] if gap.get("flagged") else PALETTE[0]
        if gap.get("ci"):
            lo, hi = gap["ci"]
            ax.plot([lo, hi], [i, i], color=color, lw=2)
        ax.plot([gap["value"]], [i], "D" if gap.get("flagged") else "o", color=color, ms=5)
    ax.set_yticks(range(len(rows)), [f"{a} · {m}" + (" (flagged)" if g.get("flagged") else "") for a, m, g in rows])
    for i in range(1, len(rows)):
        if rows[i][0] != rows[i - 1][0]:
            ax.axhline(i - 0.5, color="#BBBBBB", lw=0.6)
    ax.invert_yaxis()
    ax.set_xlabel(f"Gap between worst and best group (max - min), with {st['level']:.0%} CI")
    ax.set_title(f"Gaps between groups ({st['n_boot']} {st['resampling_unit']} resamples)")
    ax.plot([], [], "D", color=PALETTE[1], label="flagged")
    ax.plot([], [], "o", color=PALETTE[0], label="not flagged")
    fig.legend(loc="outside lower center", ncols=3, fontsize=7)
    return fig


def figure_png(fig, dpi: int = 100) -> bytes:
    """PNG bytes of a figure, rendered with the Agg canvas.

    >>> from matplotlib.figure import Figure
    >>> figure_png(Figure(figsize=(1, 1)))[:4]
    b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def audit_figures(result: Any) -> dict[str, bytes]:
    """All figures of an audit as PNG bytes: ``roc``, ``calibration`` and ``decision`` (probabilities
    only), ``gaps``."""
    figures = {"roc": roc_figure(result), "calibration": calibration_figure(result),
               "decision": decision_figure(result), "gaps": gap_figure(result)}  # fmt: skip
    return {name: figure_png(fig) for name, fig in figures.items() if fig is not None}


def _tiny():
    """A small audit for the examples."""
    from .audit import audit

    y = np.array([0, 1] * 40)
    p = np.linspace(0.05, 0.95, 80)
    return audit({"y": y, "p": p, "g": ["a", "b", "b", "a"] * 20}, "y", "p", "g", n_boot=10)
