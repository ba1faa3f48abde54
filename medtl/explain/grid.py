"""Moving maps and masks between voxel grids through world millimetres.

A saliency map lives on the network's input grid; the scan, and a lesion mask drawn on it, live
on the image's own grid. Both grids have an affine to RAS+ mm
(:func:`medtl.data.transforms.preprocess_with_affine`, :attr:`medtl.io.Image.affine`), so one
resampling rule moves anything between them. scipy's ``affine_transform`` never builds a
coordinate array: a 512 × 512 × 300 scan costs the output and nothing more.

>>> import numpy as np
>>> src = np.zeros((4, 4), np.float32); src[1, 2] = 1.0
>>> out = resample(src, np.diag([2.0, 2.0, 1.0, 1.0]), (8, 8), np.eye(4), order=0)
>>> [int(v) for v in np.argwhere(out == 1).min(0)], [int(v) for v in np.argwhere(out == 1).max(0)]
([1, 3], [2, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["resample", "peak_index", "world"]


def resample(
    array: np.ndarray, src_affine: np.ndarray, shape: Sequence[int], dst_affine: np.ndarray, *, order: int = 1
) -> np.ndarray:
    """``array`` (on the grid of ``src_affine``) sampled at every voxel of the grid ``shape`` /
    ``dst_affine``: linear (``order=1``) for maps, nearest (``order=0``) for masks; zero outside.
    2D arrays use the first two columns of the affines (both images in one plane)."""
    from scipy.ndimage import affine_transform

    n = array.ndim
    step = np.linalg.inv(np.asarray(src_affine, np.float64)) @ np.asarray(dst_affine, np.float64)
    matrix, offset = step[:n, :n], step[:n, 3]
    return affine_transform(np.asarray(array, np.float32), matrix, offset, output_shape=tuple(int(s) for s in shape),
                            order=order, mode="constant", cval=0.0)  # fmt: skip


def peak_index(saliency: np.ndarray) -> tuple[int, ...] | None:
    """The voxel of the map's maximum; ``None`` for a map without one (all equal). Where the
    maximum is a plateau (an upsampled coarse map is flat between its last cell centre and the
    border), the plateau's middle, not its first corner.

    >>> peak_index(np.array([[0.0, 1.0], [0.5, 0.0]])), peak_index(np.zeros((2, 2)))
    ((0, 1), None)
    >>> flat = np.zeros((5, 5)); flat[:3, :3] = 1.0
    >>> peak_index(flat)
    (1, 1)
    """
    s = np.nan_to_num(np.asarray(saliency, np.float64), nan=-np.inf)
    if s.size == 0 or not np.isfinite(s).any() or float(np.ptp(s[np.isfinite(s)])) == 0.0:
        return None
    top = float(s.max())
    tied = np.argwhere(s >= top - 1e-6 * max(abs(top), 1e-12))
    if len(tied) == 1:
        return tuple(int(i) for i in tied[0])
    middle = tied.mean(0)
    return tuple(int(i) for i in tied[int(np.argmin(((tied - middle) ** 2).sum(1)))])


def world(affine: np.ndarray, index: Sequence[float]) -> list[float]:
    """RAS+ mm of a voxel index (2 or 3 numbers), rounded to 0.01 mm.

    >>> world(np.diag([0.5, 0.5, 2.0, 1.0]), (4, 2, 1))
    [2.0, 1.0, 2.0]
    """
    idx = np.zeros(4)
    idx[3] = 1.0
    idx[: len(index)] = index
    return [round(float(v), 2) for v in (np.asarray(affine, np.float64) @ idx)[:3]]
