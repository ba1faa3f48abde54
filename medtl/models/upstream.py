"""Upstream checkpoint formats → MONAI state dicts, key by key.

Each format has a reader (the file → a flat ``{key: tensor}`` of upstream names) and a
converter (upstream names → the parameter names of the MONAI network the source's
:class:`~medtl.models.registry.BackboneSpec` builds). Converters map every key explicitly and
raise :class:`~medtl.errors.WeightsError` listing what is missing, unexpected or mis-shaped:
never a silent partial load. Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from ..errors import WeightsError

__all__ = ["read_checkpoint", "convert", "CONVERTERS", "READERS", "check_against"]

Tensor = Any  # torch.Tensor, imported lazily
StateDict = dict[str, Tensor]
# keys that carry no learned state: BatchNorm's counter is rebuilt by the target network
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def _torch_load(path: str) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt zip, pickle refusing a global, truncation...
        raise WeightsError(path, f"cannot read checkpoint with torch.load(weights_only=True): {exc}") from exc


def _plain_state_dict(path: str) -> StateDict:
    """A checkpoint that is a state dict, possibly wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``."""
    obj = _torch_load(path)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise WeightsError(path, f"expected a state dict, found {type(obj).__name__}")
    return dict(obj)


READERS: dict[str, Callable[[str], StateDict]] = {}


def read_checkpoint(path: str | os.PathLike, fmt: str) -> StateDict:
    """Read an upstream file of format ``fmt`` into ``{upstream key: tensor}``."""
    path = os.fspath(path)
    return READERS.get(fmt, _plain_state_dict)(path)


def check_against(state: StateDict, reference: StateDict, where: str) -> None:
    """Raise unless ``state`` has exactly ``reference``'s keys with the same shapes."""
    ref = {k: v for k, v in reference.items() if not k.endswith(_IGNORED_SUFFIXES)}
    got = {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}
    missing = sorted(set(ref) - set(got))
    unexpected = sorted(set(got) - set(ref))
    shapes = [
        f"{k}: file {tuple(got[k].shape)} vs model {tuple(ref[k].shape)}"
        for k in sorted(set(ref) & set(got))
        if tuple(got[k].shape) != tuple(ref[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:8])}{more}")
        raise WeightsError(where, "weights do not match the model; " + "; ".join(parts))


# ----------------------------------------------------------------------------- lukemelas EfficientNet
_FLAT_BLOCK = re.compile(r"^_blocks\.(\d+)\.(.+)$")
_NESTED_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\d+)\.(.+)$")


def _lukemelas_efficientnet(upstream: StateDict, reference: StateDict) -> StateDict:
    """lukemelas numbers blocks flat (``_blocks.7.``); MONAI nests them per stage
    (``_blocks.3.1.``). Blocks are matched in order, and everything else by name."""
    ref_blocks = sorted(
        {(int(m[1]), int(m[2])) for k in reference if (m := _NESTED_BLOCK.match(k))}
    )  # (stage, index) in network order
    flat_to_nested = {i: f"{s}.{b}" for i, (s, b) in enumerate(ref_blocks)}
    out: StateDict = {}
    for key, value in upstream.items():
        m = _FLAT_BLOCK.match(key)
        if m:
            idx = int(m[1])
            if idx not in flat_to_nested:
                raise WeightsError(None, f"checkpoint has block {idx}; the model has {len(ref_blocks)} blocks")
            key = f"_blocks.{flat_to_nested[idx]}.{m[2]}"
        out[key] = value
    return out


#: format → converter(upstream state, reference MONAI state) → MONAI-keyed state
CONVERTERS: dict[str, Callable[[StateDict, StateDict], StateDict]] = {
    "lukemelas-efficientnet": _lukemelas_efficientnet,
}


def convert(upstream: StateDict, fmt: str, reference: StateDict, where: str) -> StateDict:
    """Map an upstream state dict onto ``reference``'s keys and check it matches exactly."""
    if fmt not in CONVERTERS:
        raise WeightsError(where, f"no converter for upstream format '{fmt}'")
    try:
        state = CONVERTERS[fmt](upstream, reference)
    except WeightsError as exc:
        raise WeightsError(where, exc.reason) from exc
    check_against(state, reference, where)
    return state
