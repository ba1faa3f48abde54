"""medtl: transfer learning for medical imaging.

Importing ``medtl`` is cheap: the sub-packages (``medtl.io`` ...) load their heavy
dependencies (torch, MONAI) only inside the functions that need them.

>>> import medtl
>>> medtl.__version__.count(".") >= 1
True
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
