"""PNG, JPEG, TIFF (8/16-bit) and NumPy ``.npy``/``.npz`` images.

Raster files carry no patient geometry: the affine is the pixel grid with spacing 1 mm
(flagged ``spacing_unknown``) unless a spacing is given. Axes follow medtl's (column, row)
order, as MONAI's readers do. Colour follows :mod:`medtl.io.colour`: real colour is read as
(3, column, row), grey stored as RGB (or RGBA, or a palette) as one channel;
``meta["colour"]`` says which, and ``meta["full_scale"]`` is the file's white (255 for 8 bits).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ImageReadError
from .colour import full_scale, resolve_colour
from .image import Image

__all__ = ["load_raster", "load_numpy"]


def _grid_affine(ndim: int, spacing=None) -> np.ndarray:
    sp = list(spacing) if spacing is not None else [1.0] * ndim
    return np.diag(sp + [1.0] * (4 - len(sp)))


def _from_pixels(pixels: np.ndarray, path: str, fmt: str, spacing=None) -> Image:
    meta: dict = {"source_format": fmt, "geometry": "none", "full_scale": full_scale(pixels.dtype)}
    if spacing is None:
        meta["flags"] = ["spacing_unknown"]
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        # alpha carries no image content; grey saved as RGB (many radiograph PNGs and JPEGs) → one channel
        pixels, found = resolve_colour(np.moveaxis(pixels[..., :3], -1, 0), meta["full_scale"])
        meta.update(found)
        if found["colour"] == "rgb":
            return Image(pixels.transpose(0, 2, 1), _grid_affine(2, spacing), meta)
    else:
        meta["colour"] = "gray"
    if pixels.ndim != 2:
        raise ImageReadError(path, f"unsupported {fmt} pixel layout {pixels.shape}")
    return Image(pixels.T, _grid_affine(2, spacing), meta)


def load_raster(path: str | os.PathLike, fmt: str, *, spacing=None) -> Image:
    """Read a PNG/JPEG (Pillow) or TIFF (tifffile) as a 2D image.

    Args:
        path: the file.
        fmt: ``png``, ``jpeg`` or ``tiff`` (from :func:`medtl.io.sniff`).
        spacing: pixel size (column, row) in mm, when the user knows it.
    """
    path = os.fspath(path)
    try:
        if fmt == "tiff":
            import tifffile

            pixels = tifffile.imread(path)
            if pixels.ndim == 3 and pixels.shape[0] in (3, 4) and pixels.shape[-1] not in (3, 4):
                pixels = np.moveaxis(pixels, 0, -1)
        else:
            from PIL import Image as PILImage

            with PILImage.open(path) as im:
                im.load()
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                elif im.mode in ("LA", "CMYK", "YCbCr"):
                    im = im.convert("L" if im.mode == "LA" else "RGB")
                pixels = np.asarray(im)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL/tifffile raise many types
        raise ImageReadError(path, f"unreadable {fmt.upper()} ({type(exc).__name__}: {exc})") from exc
    return _from_pixels(pixels, path, fmt, spacing)


def load_numpy(path: str | os.PathLike, fmt: str, *, key: str | None = None, spacing=None) -> Image:
    """Read a ``.npy`` array, or one array of a ``.npz`` (``key``; an ``affine`` entry is used).

    Arrays are taken as already in medtl's (column, row[, slice]) axis order.
    """
    path = os.fspath(path)
    affine = None
    try:
        if fmt == "npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as npz:
                keys = [k for k in npz.files if k != "affine"]
                if key is None:
                    if len(keys) != 1:
                        raise ImageReadError(path, f"npz holds arrays {keys}; pick one with key=<name>")
                    key = keys[0]
                if key not in npz.files:
                    raise ImageReadError(path, f"npz has no array '{key}'; it holds {keys}")
                arr = npz[key]
                if "affine" in npz.files:
                    affine = np.asarray(npz["affine"], dtype=np.float64)
        arr = np.asarray(arr, dtype=np.float32)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(path, f"unreadable {fmt} ({type(exc).__name__}: {exc})") from exc
    if arr.ndim not in (2, 3):
        raise ImageReadError(path, f"array of shape {arr.shape}: expected 2D or 3D")
    meta: dict = {"source_format": fmt, "geometry": "none" if affine is None else "patient"}
    if affine is None:
        affine = _grid_affine(arr.ndim, spacing)
        if spacing is None:
            meta["flags"] = ["spacing_unknown"]
    return Image(arr, affine, meta)
