"""Pretrained source → state dict for the network a user asked for."""

from __future__ import annotations

import re

from ..errors import WeightsError
from .adapt import adapt_state_dict
from .networks import build_network
from .registry import PretrainedSource, get_backbone

__all__ = ["reference_state", "pretrained_state"]


def _reference_network(source: PretrainedSource):
    spec = get_backbone(source.backbone)
    return build_network(
        spec,
        spatial_dims=source.spatial_dims,
        in_channels=source.convention.channels,
        num_classes=max(source.num_classes, 1),
        overrides=source.config,
    )


def reference_state(source: PretrainedSource) -> dict:
    """Keys and shapes the source's file must provide: its own network, head only if it has one."""
    spec = get_backbone(source.backbone)
    state = _reference_network(source).state_dict()
    if source.num_classes == 0:
        state = {k: v for k, v in state.items() if not re.search(spec.head, k)}
    return state


def pretrained_state(source: PretrainedSource, target_reference: dict, *, download: bool | None = None) -> dict:
    """Read, convert, check and adapt ``source``'s weights to a target network's state dict.

    ``target_reference`` is ``target.state_dict()`` of the network being built (any input
    channels, 2D or 3D); the result loads into it with only head keys possibly missing.
    """
    from .upstream import convert, read_checkpoint
    from .weights import CONVERT_ON_IMPORT, fetch

    path = fetch(source, download=download)
    # pickled-module formats were turned into a plain state dict (upstream keys) on import
    converted_on_import = source.format in CONVERT_ON_IMPORT and path.name.endswith(".state_dict.pt")
    upstream = read_checkpoint(path, "plain" if converted_on_import else source.format)
    state = convert(upstream, source.format, reference_state(source), where=str(path))
    try:
        return adapt_state_dict(state, target_reference, get_backbone(source.backbone).first_conv)
    except WeightsError as exc:
        raise WeightsError(path, exc.reason) from exc
