"""Reading medical images: DICOM (files, multi-frame, series), NIfTI, PNG/JPEG/TIFF, NumPy.

Everything returns an :class:`Image` with a RAS+ affine and non-identifying metadata.
This package never imports torch or MONAI, so scans and single loads start fast.

>>> from medtl.io import load_image, Image
>>> callable(load_image)
True
"""

from .colour import probe_colour
from .display import WINDOWS, window
from .image import Image
from .load import load_image
from .nifti import save_nifti
from .scan import ScanResult, scan
from .sniff import sniff

__all__ = ["Image", "load_image", "save_nifti", "scan", "ScanResult", "sniff", "window", "WINDOWS", "probe_colour"]
