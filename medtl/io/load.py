"""One door for every image: :func:`load_image`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import ImageReadError, MedtlError, NotAnImageError
from .image import Image
from .sniff import sniff

__all__ = ["load_image"]

PathLike = str | os.PathLike


def load_image(
    path: PathLike | Sequence[PathLike],
    *,
    series: str | None = None,
    volume: int | str | None = None,
    key: str | None = None,
    apply_voi: bool = False,
) -> Image:
    """Read a medical image from a file, a folder holding one DICOM series, or a list of files.

    The format is recognised by content (a DICOM file named ``IM0001`` loads as DICOM).

    Args:
        path: a DICOM, NIfTI, PNG, JPEG, TIFF, ``.npy`` or ``.npz`` file; a folder (read
            recursively) whose DICOM files form one series; or a list of files of one series.
        series: SeriesInstanceUID, or the pseudonymised ``series`` key of a ``medtl scan``
            manifest, when the folder holds several series.
        volume: for 4D data (a 4D NIfTI; a DICOM series or enhanced multi-frame file holding
            several volumes: fMRI, diffusion, multi-echo): an index picks one 3D volume, ``"all"``
            returns every volume with the volume axis first (``meta["channel_axis"] == 0``). Left
            ``None``, 4D data raises, naming the number of volumes. Ignored for 3D data. See
            :func:`medtl.io.nifti.load_nifti` and :func:`medtl.io.dicom.load_dicom_series`.
        key: the array to read from an ``.npz`` holding several.
        apply_voi: DICOM only: return display values in [0, 1] through the file's VOI LUT
            or window instead of modality units.

    Returns:
        :class:`Image` with float32 ``array`` in modality units and display polarity,
        ``affine`` to RAS+ mm and non-identifying ``meta``.

    Raises:
        ImageReadError (or a subclass) naming the file and the reason, whatever is wrong with
        the file (a malformed header value included): never another exception type.

    Example:
        >>> from pydicom.data import get_testdata_file
        >>> img = load_image(get_testdata_file("CT_small.dcm"))
        >>> img.meta["modality"], img.spatial_shape, img.spacing
        ('CT', (128, 128), (0.661468, 0.661468))
        >>> float(img.array.min()) < -500  # HU: air is strongly negative
        True
    """
    try:
        return _load(path, series=series, volume=volume, key=key, apply_voi=apply_voi)
    except MedtlError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed value ('1A' frames) must name the file, not crash a batch
        where = os.path.commonpath([os.fspath(q) for q in path]) if isinstance(path, (list, tuple)) and path else path
        raise ImageReadError(where, f"malformed file: {type(exc).__name__}: {exc}") from exc


def _load(path, *, series, volume, key, apply_voi) -> Image:
    from .dicom import load_dicom_file, load_dicom_folder, load_dicom_series

    if isinstance(path, (list, tuple)):
        return load_dicom_series(path, series=series, apply_voi=apply_voi, volume=volume)
    p = Path(path)
    if p.is_dir():
        return load_dicom_folder(p, series=series, apply_voi=apply_voi, volume=volume)
    if not p.exists():
        raise ImageReadError(p, "no such file or folder")
    try:
        fmt = sniff(p)
    except OSError as exc:
        raise ImageReadError(p, f"cannot open ({exc.strerror or exc})") from exc
    if fmt == "dicom":
        return load_dicom_file(p, apply_voi=apply_voi, volume=volume)
    if fmt == "nifti":
        from .nifti import load_nifti

        return load_nifti(p, volume=volume)
    if fmt in ("png", "jpeg", "tiff"):
        from .raster import load_raster

        return load_raster(p, fmt)
    if fmt in ("npy", "npz"):
        from .raster import load_numpy

        return load_numpy(p, fmt, key=key)
    if p.stat().st_size == 0:
        raise NotAnImageError(p, "empty file")
    raise NotAnImageError(p, "not a recognised image format (DICOM, NIfTI, PNG, JPEG, TIFF, NPY/NPZ)")
