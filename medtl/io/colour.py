"""Colour or grey: one rule for every reader, and the conversions between the two.

Radiograph collections hold grey images stored as RGB whose channels differ by a few levels
(JPEG chroma rounding, colour-managed exports, a tinted scan), while fundus, dermoscopy,
histology and endoscopy photographs carry real colour. :func:`colour_mode` tells them apart
from the pixels: an RGB image is grey when the spread between its channels
(``max(R, G, B) - min(R, G, B)`` per pixel) stays within :data:`GRAY_TOLERANCE` of the full
scale for 99 % of its pixels. The percentile, not the maximum, lets a small burned-in coloured
annotation on a radiograph stay grey; real colour covers far more than 1 % of a photograph.

>>> import numpy as np
>>> grey = np.full((3, 8, 8), 100.0); grey[0] += 2           # a JPEG's "grey": R two levels up
>>> colour_mode(grey, 255.0)
('gray', 0.0078)
>>> red = np.zeros((3, 8, 8)); red[0] = 200
>>> colour_mode(red, 255.0)[0]
'rgb'
>>> float(luma(np.array([[[1.0]], [[1.0]], [[1.0]]]))[0, 0])
1.0
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "GRAY_TOLERANCE", "COLOUR_MODES", "LUMA_WEIGHTS", "colour_mode", "luma", "full_scale", "resolve_colour",
    "probe_colour", "image_colour",
]  # fmt: skip

#: An RGB image is grey when 99 % of its pixels have channels within this share of full scale
#: (0.04 × 255 ≈ 10 levels of an 8-bit image).
GRAY_TOLERANCE = 0.04
#: ITU-R BT.601 luma weights (R, G, B), the rule Pillow's ``convert("L")`` and most viewers use.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: Values of ``Image.meta["colour"]``: a grey source, a grey image that was stored as RGB and
#: read as one channel, and real colour.
COLOUR_MODES = ("gray", "gray-rgb", "rgb")


def full_scale(dtype_or_bits) -> float:
    """The largest value of an unsigned integer type or bit depth (255 for 8-bit); 1.0 for floats.

    >>> full_scale(np.uint8), full_scale(12), full_scale(np.float32)
    (255.0, 4095.0, 1.0)
    """
    if isinstance(dtype_or_bits, (int, np.integer)) and not isinstance(dtype_or_bits, bool):
        return float(2 ** int(dtype_or_bits) - 1)
    dtype = np.dtype(dtype_or_bits)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def colour_mode(channels_first: np.ndarray, scale: float) -> tuple[str, float]:
    """``("gray" | "rgb", chroma)`` of a (3, ...) array whose values run up to ``scale``.

    ``chroma`` is the 99th percentile of the per-pixel channel spread as a share of ``scale``,
    rounded to 4 digits; the image is grey when it is at most :data:`GRAY_TOLERANCE`. Large
    images are judged on a regular subsample (every k-th pixel), which is plenty for a percentile.
    """
    arr = np.asarray(channels_first)
    flat = arr.reshape(arr.shape[0], -1)
    step = max(1, flat.shape[1] // 262_144)
    flat = flat[:, ::step].astype(np.float32)
    spread = flat.max(axis=0) - flat.min(axis=0)
    chroma = round(float(np.percentile(spread, 99)) / max(float(scale), 1e-12), 4)
    return ("gray" if chroma <= GRAY_TOLERANCE else "rgb"), chroma


def luma(channels_first: np.ndarray) -> np.ndarray:
    """BT.601 luma of a (3, ...) RGB array (float32, same spatial shape); for a grey image
    stored as RGB it is the grey itself.
    """
    arr = np.asarray(channels_first, dtype=np.float32)
    if arr.shape[0] != 3:
        raise ValueError(f"luma needs 3 channels (R, G, B), got {arr.shape[0]}")
    r, g, b = LUMA_WEIGHTS
    return (r * arr[0] + g * arr[1] + b * arr[2]).astype(np.float32)


def resolve_colour(channels_first: np.ndarray, scale: float) -> tuple[np.ndarray, dict]:
    """Apply the rule to a decoded (3, ...) RGB array: ``(array, meta)``.

    Real colour stays (3, ...) with ``meta = {"colour": "rgb", "channel_axis": 0, "chroma": c}``;
    grey stored as RGB becomes one channel (the channel itself when all three are equal, else
    :func:`luma`) with ``meta = {"colour": "gray-rgb", "gray_from_rgb": True, "chroma": c}``.

    >>> arr, meta = resolve_colour(np.full((3, 2, 2), 7.0), 255.0)
    >>> arr.shape, meta["colour"]
    ((2, 2), 'gray-rgb')
    """
    rgb = np.asarray(channels_first)
    mode, chroma = colour_mode(rgb, scale)
    if mode == "rgb":
        return rgb, {"colour": "rgb", "channel_axis": 0, "chroma": chroma}
    exact = np.array_equal(rgb[0], rgb[1]) and np.array_equal(rgb[0], rgb[2])
    return (rgb[0] if exact else luma(rgb)), {"colour": "gray-rgb", "gray_from_rgb": True, "chroma": chroma}


def probe_colour(path, *, series: str | None = None) -> str:
    """The colour mode (:data:`COLOUR_MODES`) :func:`medtl.io.load_image` gives ``path``, read as
    cheaply as that allows: grey DICOM and NIfTI from their headers; rasters, colour DICOM and
    ``.npz`` arrays by decoding, because only pixels tell grey stored as RGB from colour.

    Raises:
        ImageReadError: the file cannot be read (as :func:`~medtl.io.load_image` would).

    >>> from pydicom.data import get_testdata_file
    >>> probe_colour(get_testdata_file("CT_small.dcm"))
    'gray'
    """
    import os

    from ..errors import ImageReadError
    from .load import load_image
    from .sniff import sniff

    path = os.fspath(path)
    if os.path.isdir(path):
        from .dicom import dicom_files_under

        files = dicom_files_under(path)
        if not files:
            raise ImageReadError(path, "folder holds no DICOM files")
        first = files[0]
    else:
        first = path
    try:
        fmt = sniff(first)
    except OSError as exc:
        raise ImageReadError(first, f"cannot open ({exc.strerror or exc})") from exc
    if fmt == "nifti":
        return "gray"
    if fmt == "dicom":
        from .dicom import read_dataset

        ds = read_dataset(first, header_only=True)
        if int(ds.get("SamplesPerPixel", 1)) == 1 and ds.get("PhotometricInterpretation") != "PALETTE COLOR":
            return "gray"
    img = load_image(path, series=series)
    return image_colour(img)


def image_colour(img) -> str:
    """An :class:`~medtl.io.Image`'s colour mode: ``meta["colour"]`` where a reader set it,
    else ``gray`` for one channel and ``rgb`` for three (a colour DICOM, say).

    >>> from medtl.io import Image
    >>> image_colour(Image(np.zeros((3, 4, 4)), np.eye(4), {"channel_axis": 0}))
    'rgb'
    """
    mode = img.meta.get("colour")
    if mode in COLOUR_MODES:
        return mode
    return "rgb" if img.channels == 3 else ("gray" if img.channels == 1 else f"{img.channels}-channel")
