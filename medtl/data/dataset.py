"""Manifest records → cached, preprocessed tensors (MONAI ``PersistentDataset``).

Decoding DICOM and resampling happen once: the deterministic part (load + :func:`preprocess`)
is cached on disk under a key that covers the file and the :class:`PreprocessSpec`, so epochs
and later runs do not re-read DICOM. Random augmentation runs after the cache. Records whose
image cannot be read are reported (path and reason) and left out, never silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np
from monai.data import PersistentDataset
from monai.transforms import Randomizable, Transform

from ..errors import MedtlError, is_fatal
from .manifest import Manifest, Record
from .npz import NPZ_SCHEME, load_npz_item
from .transforms import PreprocessSpec, preprocess

__all__ = ["LoadPreprocess", "PreparedData", "prepare", "prepare_unlabelled"]


class LoadPreprocess(Transform):
    """The cached, deterministic step: a record dict → ``{"image", "label", "index"}``.

    Errors keep the file's name: every failure is a :class:`~medtl.errors.MedtlError` whose
    message starts with the path.
    """

    def __init__(self, spec: PreprocessSpec):
        self.spec = spec

    def __call__(self, item: dict) -> dict:
        import torch

        from ..io import load_image

        try:
            if item["path"].startswith(NPZ_SCHEME):
                img = load_npz_item(item["path"])
            else:
                img = load_image(item["path"], series=item.get("series"))
            image = preprocess(img, self.spec)
        except MedtlError:
            raise
        except Exception as exc:  # noqa: BLE001 - a transform failure must still name the file
            raise MedtlError(item["path"], f"preprocessing failed ({type(exc).__name__}: {exc})") from exc
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "label": torch.tensor(item["labels"], dtype=torch.float32),
            "index": item["index"],
        }


def _items(manifest: Manifest, indices) -> list[dict]:
    def item(i: int, r: Record) -> dict:
        # the cache key: file identity (path, size, mtime) plus the spec, never the patient
        real = r.path[len(NPZ_SCHEME) :].rpartition("#")[0] if r.path.startswith(NPZ_SCHEME) else r.path
        stat = os.stat(real) if os.path.exists(real) else None
        stamp = (stat.st_size, stat.st_mtime_ns) if stat and os.path.isfile(real) else None
        return {"path": r.path, "series": r.series, "labels": list(r.labels), "index": i, "stamp": stamp}

    return [item(i, manifest.records[i]) for i in indices]


def _medtl_cause(exc: BaseException | None) -> MedtlError | None:
    while exc is not None:
        if isinstance(exc, MedtlError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@dataclass
class PreparedData:
    """A dataset of the readable records and the list of those that were not."""

    dataset: object
    indices: list[int]
    failures: list[dict] = field(default_factory=list)


def prepare(
    manifest: Manifest,
    indices,
    spec: PreprocessSpec,
    *,
    cache_dir: str | os.PathLike,
    augment=None,
    progress: bool = False,
) -> PreparedData:
    """Preprocess and cache ``manifest.records[indices]``; return a dataset over the readable ones.

    Args:
        manifest, indices: the records to use (e.g. ``split.train``).
        spec: preprocessing; part of the cache key.
        cache_dir: MONAI ``PersistentDataset`` folder.
        augment: a random transform applied after the cache (see :func:`augmentation`).
        progress: report caching (:func:`medtl.progress.progress_bar`: a bar, or lines in a log).

    Returns:
        :class:`PreparedData`; ``failures`` lists ``{"path", "reason"}`` for skipped records.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from medtl.data import read_manifest
        >>> m = read_manifest(Path(__file__).resolve().parents[2] / "sample_data" / "labels.csv")
        >>> rows = [i for i, r in enumerate(m.records) if "/cxr/" in r.path][:4]
        >>> data = prepare(m, rows, PreprocessSpec(size=(32, 32)), cache_dir=tempfile.mkdtemp())
        >>> data.dataset[0]["image"].shape, data.failures
        (torch.Size([1, 32, 32]), [])
    """
    from monai.transforms import Compose

    spec_key = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = os.path.join(os.fspath(cache_dir), spec_key)
    items = _items(manifest, list(indices))
    warm = _cached_dataset(items, LoadPreprocess(spec), cache)
    good, failures = [], []
    from ..progress import track

    for k in track(range(len(items)), "cache", "image", enabled=progress):
        try:
            warm[k]  # computes and stores the cached tensor
            good.append(items[k])
        except Exception as exc:  # noqa: BLE001 - MONAI wraps transform errors in RuntimeError
            cause = _medtl_cause(exc)
            if cause is None or is_fatal(cause):  # a full disk is no fault of the image
                raise
            failures.append({"path": items[k]["path"], "reason": cause.reason})
    transform = Compose([LoadPreprocess(spec), _Augment(augment)]) if augment is not None else LoadPreprocess(spec)
    dataset = _cached_dataset(good, transform, cache)
    return PreparedData(dataset, [it["index"] for it in good], failures)


class _RepairingPersistentDataset(PersistentDataset):
    """MONAI's ``PersistentDataset``, except that a cache file it cannot read (empty or torn: a full
    disk, a copy cut short) is computed again instead of failing the run."""

    def _cachecheck(self, item_transformed):
        from ..errors import WriteError
        from ..files import claim

        hashfile = None
        if self.cache_dir is not None:
            name = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash
            hashfile = self.cache_dir / f"{name}.pt"
            claim(hashfile)  # a cache inside a run is the run's own, file by file
        try:
            return super()._cachecheck(item_transformed)
        except (EOFError, RuntimeError, OSError, ValueError) as exc:
            if is_fatal(exc):  # the cache could not be written: a full disk stops the command
                raise WriteError(hashfile, f"could not be written ({getattr(exc, 'strerror', None) or exc})") from None
            if hashfile is None or not hashfile.is_file() or _medtl_cause(exc) is not None:
                raise  # not the cache's fault: the image itself
            hashfile.unlink()
            return super()._cachecheck(item_transformed)


def _cached_dataset(items: list[dict], transform, cache: str) -> PersistentDataset:
    return _RepairingPersistentDataset(items, transform=transform, cache_dir=cache)


class _Augment(Randomizable):
    """Random augmentation of the ``image`` entry. Being ``Randomizable`` is what tells MONAI's
    ``PersistentDataset`` to cache everything before it and run it fresh every time."""

    def __init__(self, transform):
        self.transform = transform

    def set_random_state(self, seed=None, state=None):
        if hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=seed, state=state)
        return self

    def randomize(self, data=None) -> None:  # the wrapped transform draws its own numbers
        pass

    def __call__(self, item: dict) -> dict:
        return {**item, "image": self.transform(item["image"])}


def prepare_unlabelled(csv_path, spec: PreprocessSpec, *, cache_dir, progress: bool = False) -> PreparedData:
    """Target-site images for domain adaptation: a CSV with just a ``path`` column.

    Raises:
        ConfigError: not one of its images can be read.
    """
    from ..errors import ConfigError
    from .manifest import read_manifest

    target = read_manifest(csv_path, label_columns=[])
    data = prepare(target, range(len(target)), spec, cache_dir=cache_dir, progress=progress)
    if not data.indices:
        raise ConfigError(csv_path, f"no readable image among its {len(target)} rows ({data.failures[0]['reason']})")
    return data
