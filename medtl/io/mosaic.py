"""Siemens mosaics: one DICOM image holding a whole volume as a grid of tiles.

Siemens EPI (fMRI, diffusion) stores each volume as one 2D image whose ImageType contains
``MOSAIC``. The Siemens CSA image header (private element (0029,xx10) of the block "SIEMENS CSA
HEADER", format "SV10") says how many tiles hold slices (``NumberOfImagesInMosaic``) and the
direction in which consecutive tiles advance (``SliceNormalVector``). The grid has
ceil(sqrt(N)) tiles per side, read left to right, then top to bottom.

ImagePositionPatient of a mosaic is the corner of the whole grid laid in the slice plane, not the
first tile's: the first slice's first pixel lies (Columns - tile columns) / 2 pixels along the row
direction and (Rows - tile rows) / 2 pixels down the column direction from it. Slices then follow
at SpacingBetweenSlices (SliceThickness when absent) along SliceNormalVector.

>>> import numpy as np
>>> grid = np.arange(16).reshape(4, 4)  # 4 tiles of 2×2 in a 2×2 grid, 3 of them used
>>> split_tiles(grid, n_tiles=3).tolist()
[[[0, 1], [4, 5]], [[2, 3], [6, 7]], [[8, 9], [12, 13]]]
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import ImageReadError, UnsupportedImageError
from .volumes import private_element

__all__ = ["CSA_CREATOR", "is_mosaic", "csa_image_header", "MosaicLayout", "mosaic_layout", "split_tiles"]

#: Private creator of the Siemens CSA headers in group 0029.
CSA_CREATOR = "SIEMENS CSA HEADER"
# Private blocks a header-only read looks in: creators (0029,0010-0013), image headers (0029,xx10).
CSA_TAGS = tuple((0x0029, 0x0010 + b) for b in range(4)) + tuple((0x0029, ((0x10 + b) << 8) | 0x10) for b in range(4))


def is_mosaic(ds) -> bool:
    """True if ImageType holds ``MOSAIC``."""
    image_type = ds.get("ImageType") or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    return any(str(v).strip().upper() == "MOSAIC" for v in values)


def csa_image_header(ds) -> dict[str, list] | None:
    """Items of each tag of the Siemens CSA image header, ``{name: [values]}``; None if absent.

    Parsed with nibabel's CSA reader (``nibabel.nicom.csareader``); an unreadable header raises
    ``ValueError``.
    """
    element = private_element(ds, 0x0029, CSA_CREATOR, 0x10)
    if element is None or not element.value:
        return None
    with warnings.catch_warnings():  # nibabel.nicom warns that its DICOM readers are experimental
        warnings.simplefilter("ignore")
        from nibabel.nicom import csareader
    try:
        parsed = csareader.read(bytes(element.value))
    except (csareader.CSAError, AssertionError, ValueError, IndexError) as exc:
        raise ValueError(f"unreadable Siemens CSA image header ({exc})") from exc
    return {name: tag["items"] for name, tag in parsed["tags"].items()}


@dataclass
class MosaicLayout:
    """Where the tiles of a mosaic lie.

    Attributes:
        n_tiles: images in the mosaic (NumberOfImagesInMosaic).
        grid: tiles per side of the grid.
        tile_rows, tile_cols: size of one tile (pixels).
        positions: (n_tiles, 3) LPS position of each tile's first pixel, in tile order.
    """

    n_tiles: int
    grid: int
    tile_rows: int
    tile_cols: int
    positions: np.ndarray


def _floats(values, n: int, what: str, path: str) -> np.ndarray:
    try:
        out = np.array([float(v) for v in list(values)[:n]], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ImageReadError(path, f"Siemens mosaic: unreadable {what} ({exc})") from exc
    if out.size != n:
        raise ImageReadError(path, f"Siemens mosaic: {what} has {out.size} of {n} values")
    return out


def mosaic_layout(ds, path: str | os.PathLike, csa: dict | None = None) -> MosaicLayout:
    """Tile count, grid and tile positions of the mosaic ``ds``.

    Raises:
        UnsupportedImageError: no (readable) CSA image header, or it lacks NumberOfImagesInMosaic
            or SliceNormalVector, so the tiles cannot be placed.
        ImageReadError: the grid does not divide the image, or geometry attributes are missing.
    """
    path = os.fspath(path)
    if csa is None:
        try:
            csa = csa_image_header(ds)
        except ValueError as exc:
            raise UnsupportedImageError(path, f"MOSAIC image: {exc}") from exc
    if csa is None:
        raise UnsupportedImageError(
            path, "MOSAIC image without a Siemens CSA image header (0029,xx10): its tiles cannot be placed"
        )
    n_items, normal_items = csa.get("NumberOfImagesInMosaic") or [], csa.get("SliceNormalVector") or []
    if not n_items or not int(n_items[0]) > 0:
        raise UnsupportedImageError(path, "MOSAIC image whose CSA header lacks NumberOfImagesInMosaic")
    if len(normal_items) < 3:
        raise UnsupportedImageError(path, "MOSAIC image whose CSA header lacks SliceNormalVector")
    n = int(n_items[0])
    grid = math.ceil(math.sqrt(n))
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows % grid or cols % grid:
        raise ImageReadError(
            path, f"mosaic of {rows}x{cols} pixels does not split into {grid}x{grid} tiles ({n} images)"
        )
    tile_rows, tile_cols = rows // grid, cols // grid
    for kw in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        if kw not in ds:
            raise ImageReadError(path, f"Siemens mosaic without {kw}: its tiles cannot be placed")
    iop = _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", path)
    ipp = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", path)
    d_row, d_col = _floats(ds.PixelSpacing, 2, "PixelSpacing", path)
    normal = _floats(normal_items, 3, "SliceNormalVector", path)
    normal = normal / np.linalg.norm(normal)
    step = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 0.0)
    if not step > 0:
        raise ImageReadError(path, "Siemens mosaic without SpacingBetweenSlices or SliceThickness")
    # ImagePositionPatient is the corner of the whole grid: move it to the first tile's first pixel
    first = ipp + iop[:3] * d_col * (cols - tile_cols) / 2.0 + iop[3:] * d_row * (rows - tile_rows) / 2.0
    positions = first + np.arange(n)[:, None] * step * normal
    return MosaicLayout(n_tiles=n, grid=grid, tile_rows=tile_rows, tile_cols=tile_cols, positions=positions)


def split_tiles(frame: np.ndarray, n_tiles: int) -> np.ndarray:
    """(rows, cols) mosaic → (n_tiles, tile rows, tile cols), tiles left to right, top to bottom."""
    grid = math.ceil(math.sqrt(n_tiles))
    rows, cols = frame.shape[:2]
    tiles = frame.reshape(grid, rows // grid, grid, cols // grid).transpose(0, 2, 1, 3)
    return tiles.reshape(grid * grid, rows // grid, cols // grid)[:n_tiles]
