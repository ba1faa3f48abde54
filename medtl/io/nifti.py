"""NIfTI-1/2 (``.nii``, ``.nii.gz``) via nibabel, and writing any Image to NIfTI."""

from __future__ import annotations

import os

import numpy as np

from ..errors import ImageReadError
from .image import Image

__all__ = ["load_nifti", "save_nifti", "open_nifti", "check_nifti_size", "check_nifti_name"]


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_nifti(path: str | os.PathLike):
    """nibabel image for ``path``; files without a NIfTI extension are read from their bytes."""
    import gzip

    import nibabel as nib

    path = os.fspath(path)
    if path.lower().endswith((".nii", ".nii.gz")):
        return nib.load(path)
    with (gzip.open if _is_gzip(path) else open)(path, "rb") as fh:
        data = fh.read()
    two = int.from_bytes(data[:4], "little") == 540 or int.from_bytes(data[:4], "big") == 540
    return (nib.Nifti2Image if two else nib.Nifti1Image).from_bytes(data)


def check_nifti_size(path: str | os.PathLike, header) -> None:
    """Raise if the file is shorter than its header says (a cheap truncation check).

    For gzip the trailer's ISIZE field (uncompressed size mod 2**32) is compared, so the
    data need not be decompressed.
    """
    path = os.fspath(path)
    offset = int(header.get_data_offset()) if hasattr(header, "get_data_offset") else 352
    need = offset + int(np.prod(header.get_data_shape(), dtype=np.int64)) * header.get_data_dtype().itemsize
    size = os.path.getsize(path)
    if _is_gzip(path):
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            isize = int.from_bytes(fh.read(4), "little")
        # writers may pad after the data, but a truncated file's last 4 bytes are random
        if need < 2**32 and not need <= isize <= need + 2**16:
            raise ImageReadError(path, f"NIfTI file is truncated or corrupt: gzip holds {isize} of {need} bytes")
    elif size < need:
        raise ImageReadError(path, f"NIfTI file is truncated: {size} of {need} bytes")


def load_nifti(path: str | os.PathLike, *, volume: int | str | None = None) -> Image:
    """Read a NIfTI image with its scaling (scl_slope/scl_inter) and RAS+ affine.

    Args:
        path: ``.nii`` or ``.nii.gz`` (recognised by content).
        volume: for 4D data (x, y, z, t) with t > 1: an index picks one volume, ``"all"`` returns
            every volume as channels (t, x, y, z). Left ``None``, 4D data with t > 1 raises, so a
            time series is never mistaken for a volume.

    Raises:
        ImageReadError: unreadable, truncated, or 4D without ``volume``.
    """
    path = os.fspath(path)
    try:
        img = open_nifti(path)
        check_nifti_size(path, img.header)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise ImageReadError(path, f"unreadable NIfTI ({type(exc).__name__}: {exc})") from exc
    # (x, y, z, 1, c) vector images and trailing singleton axes
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    meta: dict = {"source_format": "nifti", "geometry": "patient"}
    if data.ndim == 4:
        n = data.shape[3]
        if volume is None:
            raise ImageReadError(
                path, f"4D NIfTI with {n} volumes; pick one with volume=<index> (CLI: --volume N), or all with volume='all' (CLI: --volume all)"
            )
        if volume == "all":
            data = np.moveaxis(data, 3, 0)
            meta["channel_axis"] = 0
        else:
            if not 0 <= int(volume) < n:
                raise ImageReadError(path, f"volume {volume} out of range: file holds {n}")
            data = data[..., int(volume)]
        meta["n_volumes"] = n
    elif data.ndim > 4:
        raise ImageReadError(path, f"NIfTI with {data.ndim} dimensions {data.shape} is not supported")
    affine = np.asarray(img.affine, dtype=np.float64)
    if data.ndim == 2 or (data.ndim == 3 and data.shape[2] == 1 and "channel_axis" not in meta):
        data = data.reshape(data.shape[:2])
    return Image(data, affine, meta)


def check_nifti_name(path: str | os.PathLike) -> None:
    """Raise :class:`~medtl.errors.OutputError` unless ``path`` ends in ``.nii`` or ``.nii.gz``.

    >>> check_nifti_name("ct.nii.gz")
    >>> check_nifti_name("ct.nrrd")
    Traceback (most recent call last):
    ...
    medtl.errors.OutputError: ct.nrrd: NIfTI files end in .nii or .nii.gz; medtl writes no other format
    """
    from ..errors import OutputError

    if not os.fspath(path).lower().endswith((".nii", ".nii.gz")):
        raise OutputError(path, "NIfTI files end in .nii or .nii.gz; medtl writes no other format")


def save_nifti(image: Image, path: str | os.PathLike) -> str:
    """Write an :class:`Image` as NIfTI-1 with its RAS+ affine (qform and sform, code 1, mm).

    2D images become (i, j, 1); channels go to the 4th axis. The output opens in 3D Slicer
    and ITK-SNAP in the right place. Returns the path written.

    >>> import numpy as np, tempfile, os, nibabel as nib
    >>> from medtl.io import Image
    >>> img = Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([0.5, 0.5, 2.0, 1.0]))
    >>> p = save_nifti(img, os.path.join(tempfile.mkdtemp(), "x.nii.gz"))
    >>> [float(z) for z in nib.load(p).header.get_zooms()]
    [0.5, 0.5, 2.0]
    """
    import nibabel as nib

    from ..files import write_bytes

    check_nifti_name(path)
    data = image.array
    if image.meta.get("channel_axis") == 0:
        data = np.moveaxis(data, 0, -1)
        if image.ndim == 2:
            data = data[:, :, None, :]
    elif image.ndim == 2:
        data = data[:, :, None]
    nii = nib.Nifti1Image(np.asarray(data, dtype=np.float32), image.affine)
    nii.header.set_xyzt_units("mm", "sec")
    nii.set_qform(image.affine, code=1)
    nii.set_sform(image.affine, code=1)
    path = os.fspath(path)
    data = nii.to_bytes()
    if path.lower().endswith(".gz"):
        import gzip

        data = gzip.compress(data, compresslevel=6, mtime=0)
    # whole or not at all, and a link at ``path`` is replaced, never written through
    write_bytes(path, data)
    return path
