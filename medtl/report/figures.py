"""The pictures of a clinician report: plain arrays in, PNG bytes out (Pillow, no matplotlib figure).

A report page layers a transparent saliency picture over the image (a slider sets its opacity), so
the image and the map are drawn as separate PNGs on the same pixel grid: :func:`image_png` for the
windowed image, :func:`heat_png` for the map (colour and opacity both grow with saliency, so the
image shows through where the model did not look). Volumes are reoriented to RAS and cut through
the map's peak in the radiological convention (:func:`planes`), with a strip of axial slices
(:func:`slice_strip`). Pictures are scaled down to ``max_side`` pixels: a report page is for
reading the model's output, the original stays in the PACS viewer.

>>> import numpy as np
>>> pic = image_png(np.random.rand(40, 30))
>>> pic.png[:4] == b"\\x89PNG", pic.width, pic.height
(True, 30, 40)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["Picture", "Plane", "image_png", "heat_png", "composite_png", "to_ras", "planes", "slice_strip",
           "display_2d", "COLOURMAP"]  # fmt: skip

#: The saliency colour map (perceptually uniform, readable in greyscale print).
COLOURMAP = "inferno"
_HEAT_ALPHA = 0.6  # the most opaque a saliency pixel gets at full slider: the anatomy shows through


@dataclass
class Picture:
    """PNG bytes and their size in pixels."""

    png: bytes
    width: int
    height: int


@dataclass
class Plane:
    """One view of a volume: the image and map as display rows × columns, their physical width and
    height in mm, the patient directions at its top, bottom, left and right edges, and where it cuts."""

    name: str
    image: np.ndarray
    saliency: np.ndarray | None
    width_mm: float
    height_mm: float
    edges: tuple[str, str, str, str]
    position: str


@lru_cache(maxsize=1)
def _lut() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[COLOURMAP](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def colour_stops(n: int = 6) -> list[str]:
    """CSS colours along the map's colour scale, for the legend.

    >>> colour_stops(2)
    ['#000004', '#fcffa4']
    """
    lut = _lut()
    return ["#%02x%02x%02x" % tuple(lut[int(round(i))]) for i in np.linspace(0, 255, n)]


def _encode(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _fit(shape: Sequence[int], max_side: int) -> tuple[int, int]:
    """(width, height) no larger than ``max_side``, keeping the pixel grid's proportions."""
    h, w = int(shape[0]), int(shape[1])
    scale = min(1.0, max_side / max(h, w, 1))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _unit(array: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.clip(np.asarray(array, np.float32), 0.0, 1.0))


def _resized(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float image (rows × columns[, 3]) resampled to ``size`` = (width, height)."""
    from PIL import Image

    if (array.shape[1], array.shape[0]) == size:
        return array
    if array.ndim == 2:
        return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    return np.stack([_resized(array[..., c], size) for c in range(array.shape[2])], axis=-1)


def image_png(image: np.ndarray, max_side: int = 1024) -> Picture:
    """The windowed image (rows × columns grey, or × 3 RGB, values in [0, 1]) as a PNG."""
    from PIL import Image

    size = _fit(image.shape, max_side)
    pixels = (_unit(_resized(_unit(image), size)) * 255).round().astype(np.uint8)
    return Picture(_encode(Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")), *size)


def _normalised(saliency: np.ndarray) -> tuple[np.ndarray, float]:
    s = np.nan_to_num(np.asarray(saliency, np.float32))
    top = float(s.max()) if s.size else 0.0
    return (np.clip(s / top, 0, 1) if top > 0 else np.zeros_like(s)), top


def heat_png(saliency: np.ndarray, max_side: int = 1024, *, top: float | None = None) -> Picture:
    """The map (rows × columns) as an RGBA PNG: colour from :data:`COLOURMAP`, opacity growing with
    saliency, both relative to ``top`` (default the map's own maximum; pass the volume's maximum so
    that every plane of one volume shares a scale)."""
    from PIL import Image

    size = _fit(saliency.shape, max_side)
    s = np.nan_to_num(np.asarray(saliency, np.float32))
    top = float(s.max()) if top is None else top
    s = np.clip(_resized(s / top, size), 0, 1) if top > 0 else np.zeros((size[1], size[0]), np.float32)
    index = (s * 255).round().astype(np.uint8)
    rgba = np.concatenate([_lut()[index], (s * _HEAT_ALPHA * 255).round().astype(np.uint8)[..., None]], axis=-1)
    return Picture(_encode(Image.fromarray(rgba, mode="RGBA")), *size)


def composite_png(image: np.ndarray, saliency: np.ndarray | None, max_side: int = 192, *,
                  top: float | None = None) -> Picture:  # fmt: skip
    """The image with the map blended in (one flat picture, for small thumbnails)."""
    from PIL import Image

    size = _fit(image.shape, max_side)
    base = _unit(_resized(_unit(image), size))
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=-1)
    if saliency is not None:
        s = np.nan_to_num(np.asarray(saliency, np.float32))
        top = float(s.max()) if top is None else top
        if top > 0:
            s = np.clip(_resized(s / top, size), 0, 1)
            alpha = (s * _HEAT_ALPHA)[..., None]
            base = base * (1 - alpha) + (_lut()[(s * 255).round().astype(np.uint8)] / 255.0) * alpha
    pixels = (_unit(base) * 255).round().astype(np.uint8)
    return Picture(_encode(Image.fromarray(pixels, mode="RGB")), *size)


def display_2d(array: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, float, float]:
    """A medtl 2D array (column, row[, RGB]) as display rows × columns, with its width and height in
    mm (so anisotropic pixels are drawn to scale).

    >>> rows, w, h = display_2d(np.zeros((4, 3)), (0.5, 2.0))
    >>> rows.shape, w, h
    ((3, 4), 2.0, 6.0)
    """
    rows = np.swapaxes(array, 0, 1)
    sx, sy = (float(v) if v and v > 0 else 1.0 for v in spacing[:2])
    return rows, rows.shape[1] * sx, rows.shape[0] * sy


def to_ras(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` (i, j, k) reordered and flipped so its axes run towards the patient's Right,
    Anterior and Superior (nearest axes; obliques keep their tilt), and the affine of the result.

    >>> vol = np.arange(24.0).reshape(2, 3, 4)
    >>> lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM's LPS axes, as RAS+ world sees them
    >>> ras, aff = to_ras(vol, lps)
    >>> bool((ras == vol[::-1, ::-1, :]).all()), [float(v) for v in np.diag(aff)]
    (True, [1.0, 1.0, 1.0, 1.0])
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    out = nib.orientations.apply_orientation(volume, ornt)
    return np.ascontiguousarray(out), affine @ nib.orientations.inv_ornt_aff(ornt, volume.shape)


def _view(plane: np.ndarray) -> np.ndarray:
    # a RAS slice (first axis towards R or A, second towards A or S) shown radiologically: the
    # patient's right on the viewer's left, anterior or superior at the top
    return plane[::-1, ::-1].T


def planes(volume: np.ndarray, saliency: np.ndarray | None, affine: np.ndarray,
           at: Sequence[int] | None = None) -> list[Plane]:  # fmt: skip
    """Axial, coronal and sagittal planes of a RAS volume (see :func:`to_ras`) through voxel ``at``
    (default: the map's peak, else the centre).

    >>> vol = np.zeros((4, 5, 6)); vol[1, 2, 3] = 1.0
    >>> views = planes(vol, vol, np.eye(4))
    >>> [(p.name, p.image.shape, p.edges[0]) for p in views]
    [('axial', (5, 4), 'A'), ('coronal', (6, 4), 'S'), ('sagittal', (6, 5), 'S')]
    >>> [float(p.image.max()) for p in views]  # every plane passes through the peak
    [1.0, 1.0, 1.0]
    """
    if at is None:
        if saliency is not None and np.isfinite(saliency).any() and np.nanmax(saliency) > 0:
            at = np.unravel_index(int(np.nanargmax(saliency)), saliency.shape)
        else:
            at = tuple(n // 2 for n in volume.shape)
    x, y, z = (int(v) for v in at)
    sx, sy, sz = (float(v) if v > 0 else 1.0 for v in np.linalg.norm(affine[:3, :3], axis=0))
    nx, ny, nz = volume.shape
    world = affine @ np.array([x, y, z, 1.0])

    def cut(index) -> tuple[np.ndarray, np.ndarray | None]:
        return _view(volume[index]), (None if saliency is None else _view(saliency[index]))

    out = []
    for name, index, w, h, edges, pos in (
        ("axial", (slice(None), slice(None), z), nx * sx, ny * sy, ("A", "P", "R", "L"), f"S {world[2]:.1f} mm"),
        ("coronal", (slice(None), y, slice(None)), nx * sx, nz * sz, ("S", "I", "R", "L"), f"A {world[1]:.1f} mm"),
        ("sagittal", (x, slice(None), slice(None)), ny * sy, nz * sz, ("S", "I", "A", "P"), f"R {world[0]:.1f} mm"),
    ):  # fmt: skip
        img, sal = cut(index)
        out.append(Plane(name, img, sal, w, h, edges, pos))
    return out


def slice_strip(volume: np.ndarray, saliency: np.ndarray | None, affine: np.ndarray, n: int = 10,
                max_side: int = 160, *, top: float | None = None) -> list[tuple[Picture, str, bool]]:  # fmt: skip
    """``n`` axial slices of a RAS volume spread over its height (inferior to superior), each with
    the map blended in on one scale (``top``, default the map's maximum: pass a report's shared
    scale so that every case is coloured alike), its position in mm, and whether it holds the
    map's peak.

    >>> vol = np.zeros((8, 8, 20)); vol[2, 3, 9] = 1.0
    >>> [(label, peak) for _, label, peak in slice_strip(vol, vol, np.eye(4), n=4)]
    [('S 4.0 mm', False), ('S 9.0 mm', True), ('S 11.0 mm', False), ('S 15.0 mm', False)]
    """
    nz = volume.shape[2]
    ks = sorted({int(round(v)) for v in np.linspace(0, nz - 1, n + 2)[1:-1]}) if nz > n else list(range(nz))
    peak_k = None
    if saliency is not None:
        _, peak = _normalised(saliency)
        top = peak if top is None or not top > 0 else top
        if peak > 0:
            peak_k = int(np.unravel_index(int(np.nanargmax(saliency)), saliency.shape)[2])
            if peak_k not in ks:  # the slice a reader most wants is always in the strip
                ks[int(np.argmin([abs(k - peak_k) for k in ks]))] = peak_k
    out = []
    for k in ks:
        sal = None if saliency is None else _view(saliency[:, :, k])
        pic = composite_png(_view(volume[:, :, k]), sal, max_side, top=top)
        z_mm = float((affine @ np.array([0.0, 0.0, k, 1.0]))[2])
        out.append((pic, f"S {z_mm:.1f} mm", k == peak_k))
    return out
