"""Identical and near-identical images, found by a perceptual hash before a patient split.

Public collections list the same radiograph under several patient IDs (re-exports, crops,
re-encodings). Split by patient, such an image lands in training and test at once and inflates the
test result. :func:`find_duplicates` finds them: each 2D image is reduced to a 1024-bit
difference hash (dHash: a 32×33 grey thumbnail, one bit per horizontal neighbour pair telling
which is brighter), which survives re-encoding, resizing and brightness changes but not a
different image; two images whose hashes differ in at most :data:`MAX_DISTANCE` bits (8 %) are
near-identical. Measured (docs/evaluate.md): distinct real chest radiographs (PneumoniaMNIST) differ
in 17 % of the bits or more, medtl's synthetic sample radiographs, far more alike than real ones, in
9 % or more; a 128-pixel radiograph enlarged twofold, re-encoded as JPEG (quality 75) and brightened
moves at most 6.3 %. A 28-pixel thumbnail treated that way can move up to 11 % and escape. The split then keeps every group of duplicates in one part
(:func:`medtl.data.splits.split_patients` ``groups``).

Volumes are not hashed (reading every series twice would double a first run's time; the same
series twice is rare and shows as identical ``series`` keys in ``medtl scan``).

>>> import numpy as np
>>> from medtl.io import Image
>>> rng = np.random.default_rng(0)
>>> a = rng.random((96, 96)).astype(np.float32)
>>> near = a * 0.9 + 0.05                           # a brightness and contrast change
>>> other = rng.random((96, 96)).astype(np.float32)
>>> ha, hn, ho = (fingerprint(Image(x, np.eye(4))) for x in (a, near, other))
>>> int(distance(ha, hn)), int(distance(ha, ho)) > MAX_DISTANCE
(0, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import MedtlError
from ..io.image import Image

__all__ = ["MAX_DISTANCE", "fingerprint", "distance", "find_duplicates", "DuplicateReport"]

#: Hashes within this many bits (of 1024, 8 %) are the same picture.
MAX_DISTANCE = 82
_THUMB = (32, 33)  # rows × columns of the thumbnail: 32 rows of 32 neighbour comparisons


def fingerprint(img: Image) -> np.ndarray:
    """The 1024-bit dHash of a 2D image (128 bytes), from its luma when it is colour."""
    arr = img.array
    if img.meta.get("channel_axis") == 0:
        arr = arr.mean(axis=0) if arr.shape[0] != 3 else 0.299 * arr[0] + 0.587 * arr[1] + 0.114 * arr[2]
    if arr.ndim != 2:
        raise ValueError("only 2D images are fingerprinted")
    thumb = _thumbnail(np.asarray(arr, dtype=np.float64).T, _THUMB)  # (rows, columns), as displayed
    bits = thumb[:, 1:] > thumb[:, :-1]
    return np.packbits(bits.reshape(-1))


def _thumbnail(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-average ``img`` down to ``shape`` (block means over a regular partition)."""
    for axis, n in enumerate(shape):
        if img.shape[axis] < n:  # a tiny image: repeat pixels until every cell has one
            img = np.repeat(img, -(-n // img.shape[axis]), axis=axis)
    rows = np.linspace(0, img.shape[0], shape[0] + 1).astype(int)
    cols = np.linspace(0, img.shape[1], shape[1] + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(img, rows[:-1], axis=0), cols[:-1], axis=1)
    return sums / np.outer(np.diff(rows), np.diff(cols))


_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint16)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between packed hashes (broadcasting over leading axes)."""
    return _POPCOUNT[np.bitwise_xor(a, b)].sum(axis=-1)


@dataclass
class DuplicateReport:
    """Groups of near-identical images (record indices) and what could not be hashed."""

    groups: list[list[int]] = field(default_factory=list)
    hashed: int = 0
    skipped: int = 0

    def summary(self) -> str:
        n = sum(len(g) for g in self.groups)
        return (f"{len(self.groups)} group(s) of identical or near-identical images ({n} images) among "
                f"{self.hashed} hashed")  # fmt: skip


def find_duplicates(
    load, indices: Sequence[int], *, max_distance: int = MAX_DISTANCE, progress: bool = False
) -> DuplicateReport:
    """Groups of near-identical images among ``indices``.

    Args:
        load: ``load(i) -> Image`` for a record index (unreadable records raise a ``MedtlError``
            and are left out: caching reports them).
        indices: the records to compare.
        max_distance: the largest Hamming distance (bits of 1024) still called the same picture.
        progress: report the hashing (:func:`medtl.progress.progress_bar`).
    """
    indices = list(indices)
    from ..progress import track

    hashes, kept, skipped = [], [], 0
    for i in track(indices, "duplicates", "image", enabled=progress, leave=False):
        try:
            img = load(i)
            if img.ndim != 2:
                skipped += 1
                continue
            hashes.append(fingerprint(img))
            kept.append(i)
        except (MedtlError, ValueError):
            skipped += 1
    report = DuplicateReport(hashed=len(kept), skipped=skipped)
    if len(kept) < 2:
        return report
    h = np.stack(hashes)
    parent = list(range(len(kept)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for start in range(0, len(kept), 512):  # blocks keep the pairwise table small
        block = distance(h[start : start + 512, None, :], h[None, :, :])
        for a, b in zip(*np.nonzero(block <= max_distance), strict=True):
            a = int(a) + start
            if a < b:
                parent[root(int(b))] = root(a)
    members: dict[int, list[int]] = {}
    for k, i in enumerate(kept):
        members.setdefault(root(k), []).append(i)
    report.groups = sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])
    return report
