"""DICOM geometry: direction cosines, slice order and RAS+ affines.

DICOM positions are LPS millimetres; medtl (like nibabel and MONAI) reports RAS+, which
negates x and y. Array axes are (i, j, k) = (column, row, slice).

>>> import numpy as np
>>> A = dicom_affine([1, 0, 0, 0, 1, 0], (0.5, 0.8), (10.0, 20.0, 30.0), (0.0, 0.0, 2.5))
>>> A[:3].round(3).tolist()
[[-0.8, 0.0, 0.0, -10.0], [0.0, -0.5, 0.0, -20.0], [0.0, 0.0, 2.5, 30.0]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

__all__ = [
    "LPS_TO_RAS", "SAME_POSITION_MM", "dicom_affine", "slice_normal", "SliceStack", "stack_slices", "spacing_pattern",
]  # fmt: skip

#: Multiply an LPS affine on the left to get RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# A series whose gaps differ by less than this (mm or fraction of the median gap) is even.
_SPACING_ABS_TOL = 0.01
_SPACING_REL_TOL = 0.01
#: Slices whose positions along the normal differ by less than this (mm) lie at the same position.
SAME_POSITION_MM = _SPACING_ABS_TOL
# A run of at least this many equal steps is a spacing of its own ("several consecutive steps"); two
# equal odd steps in a row are too few to tell a change of spacing from two gaps.
_MIN_SEGMENT_STEPS = 3
# Steps deviating from the slice normal by more than this are a gantry tilt (degrees).
_TILT_TOL_DEG = 0.05


def slice_normal(iop) -> np.ndarray:
    """Unit normal (LPS) of a slice with ImageOrientationPatient ``iop``."""
    iop = np.asarray(iop, dtype=np.float64)
    n = np.cross(iop[:3], iop[3:6])
    return n / np.linalg.norm(n)


def dicom_affine(iop, pixel_spacing, origin, slice_step) -> np.ndarray:
    """RAS+ affine of (column, row, slice) indices.

    Args:
        iop: ImageOrientationPatient, six direction cosines (row direction, column direction).
        pixel_spacing: PixelSpacing as DICOM orders it: (between rows, between columns), mm.
        origin: ImagePositionPatient of the first slice (LPS mm): centre of its first pixel.
        slice_step: LPS vector from one slice's origin to the next (mm).
    """
    iop = np.asarray(iop, dtype=np.float64)
    dr, dc = float(pixel_spacing[0]), float(pixel_spacing[1])
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * dc  # i runs along a row: column index, spaced by column spacing
    lps[:3, 1] = iop[3:6] * dr
    lps[:3, 2] = np.asarray(slice_step, dtype=np.float64)
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ lps


@dataclass
class SliceStack:
    """How a set of slices forms a volume.

    ``order`` sorts the input slices along the normal; ``step`` is the LPS vector between
    consecutive sorted slices (the mean one when spacing is uneven); ``flags`` lists
    ``uneven_spacing``, ``missing_slices``, ``spacing_change`` and ``gantry_tilt`` where they apply
    (see :func:`spacing_pattern`).
    """

    order: np.ndarray
    step: np.ndarray
    spacing: float
    flags: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


def stack_slices(positions, iop, where: str = "series") -> SliceStack:
    """Order slices by their position along the normal and check the spacing.

    Args:
        positions: (N, 3) ImagePositionPatient of each slice, N >= 2.
        iop: the shared ImageOrientationPatient.
        where: names the series in error messages.

    Raises:
        SeriesError: two slices share a position (several volumes mixed in one series).

    >>> s = stack_slices([[0, 0, 5], [0, 0, 0], [0, 0, 10]], [1, 0, 0, 0, 1, 0])
    >>> s.order.tolist(), s.spacing, s.flags
    ([1, 0, 2], 5.0, [])
    """
    from ..errors import SeriesError

    pos = np.asarray(positions, dtype=np.float64)
    normal = slice_normal(iop)
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    along, pos = along[order], pos[order]
    gaps = np.diff(along)
    if np.any(gaps < _SPACING_ABS_TOL):
        dup = int(np.sum(gaps < _SPACING_ABS_TOL))
        raise SeriesError(
            where,
            f"{dup} slice(s) share a position with another: the series mixes several volumes "
            "(echoes, phases, repeats); split it by acquisition before loading",
        )
    flags, details = spacing_pattern(gaps)
    step = (pos[-1] - pos[0]) / (len(pos) - 1)
    cos = float(np.clip(np.dot(step, normal) / np.linalg.norm(step), -1.0, 1.0))
    tilt = float(np.degrees(np.arccos(cos)))
    if tilt > _TILT_TOL_DEG:
        flags.append("gantry_tilt")
        details["gantry_tilt_deg"] = round(tilt, 3)
    return SliceStack(order=order, step=step, spacing=float(np.linalg.norm(step)), flags=flags, details=details)


def _tol(step: float) -> float:
    return max(_SPACING_ABS_TOL, _SPACING_REL_TOL * abs(step))


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _tol(min(abs(a), abs(b)))


def _runs(gaps: np.ndarray) -> list[list]:
    """Maximal runs of consecutive equal steps: ``[first gap, last gap, step]`` (step = the run's mean)."""
    runs: list[list] = []
    for i, gap in enumerate(gaps):
        if runs and _same(gap, runs[-1][2]):
            first = runs[-1][0]
            runs[-1][1:] = [i, float(np.mean(gaps[first : i + 1]))]
        else:
            runs.append([i, i, float(gap)])
    return runs


def _missing_in(runs: list[list]) -> dict[int, int]:
    """Single steps that are k >= 2 usual steps, with the same usual step on each side: run index → k - 1."""
    missing = {}
    for r, (first, last, step) in enumerate(runs):
        sides = [runs[q][2] for q in (r - 1, r + 1) if 0 <= q < len(runs)]
        if first != last or not sides or not all(_same(s, sides[0]) for s in sides):
            continue
        k = int(round(step / sides[0]))
        if k >= 2 and abs(step - k * sides[0]) <= _tol(sides[0]):
            missing[r] = k - 1
    return missing


def _segments(runs: list[list], missing: dict[int, int]) -> list[dict]:
    """Runs joined across missing slices: ``{"first", "last"`` (gap indices), ``"step", "n_steps"}``.

    A missing-slice gap has the same usual step on both sides (:func:`_missing_in`), so the runs
    before and after it are one segment; ``n_steps`` counts its steps at the usual spacing.
    """
    segments: list[dict] = []
    across_gap, gap_first = False, None
    for r, (first, last, step) in enumerate(runs):
        if r in missing:
            if segments:
                segments[-1]["last"] = last
            else:
                gap_first = first  # the series starts with a missing slice
            across_gap = True
            continue
        if across_gap and segments:
            segments[-1].update(last=last, n_steps=segments[-1]["n_steps"] + last - first + 1)
        else:
            start = first if gap_first is None else gap_first
            segments.append({"first": start, "last": last, "step": step, "n_steps": last - first + 1})
        across_gap, gap_first = False, None
    return segments


def spacing_pattern(gaps) -> tuple[list[str], dict]:
    """Name what uneven slice steps are: missing slices, a change of spacing, or irregular.

    ``gaps`` are the steps (mm) between consecutive slices, sorted along the normal. Flags:

    - ``uneven_spacing`` whenever the steps are not all equal (the umbrella flag), with
      ``details["gap_range_mm"]``;
    - ``missing_slices``: a single step that is an integer multiple k >= 2 of the usual step, with
      that usual step on each side (``details["missing_slices"]`` counts the k - 1 absent slices);
    - ``spacing_change``: two or more runs of at least three consecutive steps at different constant
      spacings (say a CT reconstructed at 1.25 mm, then at 2.5 mm), joined by at most one odd step
      each, and nothing else irregular besides missing slices; ``details["spacing_segments"]``
      lists ``{"first_slice", "last_slice", "spacing_mm"}`` with slice indices in position order.

    Anything else (steps that vary without a pattern) keeps only ``uneven_spacing``.

    >>> spacing_pattern([2.5, 2.5, 5.0, 2.5])
    (['uneven_spacing', 'missing_slices'], {'gap_range_mm': [2.5, 5.0], 'missing_slices': 1})
    >>> flags, details = spacing_pattern([1.25] * 4 + [2.5] * 3)
    >>> flags, details["spacing_segments"]  # doctest: +NORMALIZE_WHITESPACE
    (['uneven_spacing', 'spacing_change'],
     [{'first_slice': 0, 'last_slice': 4, 'spacing_mm': 1.25}, {'first_slice': 4, 'last_slice': 7, 'spacing_mm': 2.5}])
    >>> spacing_pattern([1.0, 1.0, 1.6, 1.0, 1.0])[0]  # no pattern
    ['uneven_spacing']
    """
    gaps = np.asarray(gaps, dtype=np.float64)
    runs = _runs(gaps)
    if len(runs) <= 1:
        return [], {}
    flags = ["uneven_spacing"]
    details: dict = {"gap_range_mm": [round(float(gaps.min()), 4), round(float(gaps.max()), 4)]}
    missing = _missing_in(runs)
    if missing:
        flags.append("missing_slices")
        details["missing_slices"] = int(sum(missing.values()))
    segments = _segments(runs, missing)
    if _is_spacing_change(segments):
        flags.append("spacing_change")
        details["spacing_segments"] = [
            {"first_slice": s["first"], "last_slice": s["last"] + 1, "spacing_mm": round(s["step"], 4)}
            for s in segments
            if s["n_steps"] >= _MIN_SEGMENT_STEPS
        ]
    return flags, details


def _is_spacing_change(segments: list[dict]) -> bool:
    """Long segments at two or more spacings, separated by no more than one odd step each."""
    long = [s for s in segments if s["n_steps"] >= _MIN_SEGMENT_STEPS]
    if len({round(s["step"], 3) for s in long}) < 2:
        return False
    for i, seg in enumerate(segments):
        if seg["n_steps"] >= _MIN_SEGMENT_STEPS:
            continue
        # a lone odd step is the hand-over between two segments of different spacing, or unexplained
        inner = 0 < i < len(segments) - 1 and seg["first"] == seg["last"]
        if not (inner and min(segments[i - 1]["n_steps"], segments[i + 1]["n_steps"]) >= _MIN_SEGMENT_STEPS):
            return False
        if _same(segments[i - 1]["step"], segments[i + 1]["step"]):
            return False
    return all(not _same(a["step"], b["step"]) for a, b in pairwise(long))
