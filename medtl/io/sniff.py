"""Recognise an image file by its content, not its name.

Hospitals export DICOM files without extensions (``IM000123``) and with wrong ones; the first
bytes say what a file is.

>>> import os, tempfile
>>> p = os.path.join(tempfile.mkdtemp(), "noext")
>>> _ = open(p, "wb").write(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(32))
>>> sniff(p)
'png'
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

__all__ = ["sniff", "FORMATS"]

#: Format names :func:`sniff` returns (``None`` for anything else).
FORMATS = ("dicom", "nifti", "png", "jpeg", "tiff", "npy", "npz")

# Group 0x0002/0x0008 tags open a DICOM stream that lacks the 128-byte preamble + "DICM".
_BARE_DICOM_GROUPS = (0x0002, 0x0008)


def _nifti_header(head: bytes) -> bool:
    if len(head) >= 348 and struct.unpack("<i", head[:4])[0] in (348, 540):
        return head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00")
    if len(head) >= 348 and struct.unpack(">i", head[:4])[0] in (348, 540):
        return head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00")
    return False


def sniff(path: str | os.PathLike) -> str | None:
    """Return the image format of ``path`` from its leading bytes, or ``None``.

    One of :data:`FORMATS`. Gzipped NIfTI is recognised by decompressing its first block.
    Raises ``OSError`` if the file cannot be opened.
    """
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "npz" if str(path).lower().endswith(".npz") or b".npy" in head else None
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as gz:
                inner = gz.read(540)
        except (OSError, EOFError, zlib.error):
            return None
        return "nifti" if _nifti_header(inner) else None
    if _nifti_header(head):
        return "nifti"
    if len(head) >= 8:
        for order in "<>":  # little- and big-endian bare streams
            group, elem = struct.unpack(order + "HH", head[:4])
            if group in _BARE_DICOM_GROUPS and elem < 0x0200:
                return "dicom"
    return None
