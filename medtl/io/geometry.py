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

import numpy as np

__all__ = ["LPS_TO_RAS", "dicom_affine", "slice_normal", "SliceStack", "stack_slices"]

#: Multiply an LPS affine on the left to get RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# A series whose gaps differ by less than this (mm or fraction of the median gap) is even.
_SPACING_ABS_TOL = 0.01
_SPACING_REL_TOL = 0.01
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
    ``uneven_spacing``, ``missing_slices`` and ``gantry_tilt`` where they apply.
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
    flags: list[str] = []
    details: dict = {}
    median = float(np.median(gaps))
    tol = max(_SPACING_ABS_TOL, _SPACING_REL_TOL * median)
    if np.any(np.abs(gaps - median) > tol):
        flags.append("uneven_spacing")
        details["gap_range_mm"] = [round(float(gaps.min()), 4), round(float(gaps.max()), 4)]
        missing = int(np.sum(np.round(gaps / median) - 1)) if median > 0 else 0
        if np.any(gaps > 1.5 * median):
            flags.append("missing_slices")
            details["missing_slices"] = missing
    step = (pos[-1] - pos[0]) / (len(pos) - 1)
    cos = float(np.clip(np.dot(step, normal) / np.linalg.norm(step), -1.0, 1.0))
    tilt = float(np.degrees(np.arccos(cos)))
    if tilt > _TILT_TOL_DEG:
        flags.append("gantry_tilt")
        details["gantry_tilt_deg"] = round(tilt, 3)
    return SliceStack(order=order, step=step, spacing=float(np.linalg.norm(step)), flags=flags, details=details)
