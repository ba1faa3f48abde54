"""MedMNIST-style ``.npz`` files as manifests with their official splits.

The file holds ``{train,val,test}_images`` ((N, H, W), (N, H, W, 3) or (N, D, H, W)) and
``{train,val,test}_labels`` ((N, 1) or (N, L)). Each image becomes a record whose path is
``npz://<file>#<split>/<index>``; :func:`load_npz_item` reads it as an
:class:`~medtl.io.Image` in medtl's (column, row[, slice]) axis order.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ImageReadError
from ..io.colour import full_scale, resolve_colour
from ..io.image import Image
from .manifest import Manifest, Record
from .splits import Split

__all__ = ["read_npz", "load_npz_item", "NPZ_SCHEME"]

NPZ_SCHEME = "npz://"
_SPLITS = ("train", "val", "test")


@lru_cache(maxsize=4)
def _arrays(path: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - zip or format errors
        raise ImageReadError(path, f"unreadable npz ({type(exc).__name__}: {exc})") from exc


def read_npz(path: str | os.PathLike) -> tuple[Manifest, Split]:
    """The file's images as a :class:`Manifest` plus its official train/val/test :class:`Split`.

    Raises:
        ConfigError: the file lacks a ``<split>_images``/``<split>_labels`` pair.
    """
    path = str(Path(path).resolve())
    arrays = _arrays(path)
    records, parts = [], {}
    for split in _SPLITS:
        if f"{split}_images" not in arrays or f"{split}_labels" not in arrays:
            raise ConfigError(path, f"npz lacks {split}_images/{split}_labels; it holds {sorted(arrays)}")
        labels = arrays[f"{split}_labels"].reshape(len(arrays[f"{split}_labels"]), -1).astype(float)
        start = len(records)
        for i, row in enumerate(labels):
            # MedMNIST has no patient IDs: each image is its own patient, and the official
            # splits (made by the dataset's authors) are what keeps patients apart
            records.append(Record(f"{NPZ_SCHEME}{path}#{split}/{i}", tuple(row), patient=f"{split}/{i}", row=i))
        parts[split] = tuple(range(start, len(records)))
    n_labels = len(records[0].labels)
    columns = ("label",) if n_labels == 1 else tuple(f"label{j}" for j in range(n_labels))
    return Manifest(records, columns, (), path), Split(parts["train"], parts["val"], parts["test"])


def load_npz_item(item_path: str) -> Image:
    """One image of an ``npz://file#split/index`` path, float32 in the file's units."""
    body = item_path[len(NPZ_SCHEME) :]
    path, _, ref = body.rpartition("#")
    split, _, index = ref.partition("/")
    stored = _arrays(path)[f"{split}_images"][int(index)]
    arr = stored.astype(np.float32)
    meta: dict = {"source_format": "npz", "geometry": "none", "flags": ["spacing_unknown"],
                  "full_scale": full_scale(stored.dtype)}  # fmt: skip
    if arr.ndim == 3 and arr.shape[-1] == 3:  # (H, W, 3): colour, or grey stored as colour
        pixels, found = resolve_colour(np.moveaxis(arr, -1, 0), meta["full_scale"])
        meta.update(found)
        # (3, H, W) → (3, W, H); (H, W) → (W, H): medtl's (column, row) order
        return Image(pixels.transpose(0, 2, 1) if pixels.ndim == 3 else pixels.T, np.eye(4), meta)
    meta["colour"] = "gray"
    # (H, W) → (W, H); (D, H, W) → (W, H, D): medtl's (column, row[, slice]) order
    return Image(arr.T, np.eye(4), meta)
