"""Backbones and pretrained weights: one door (:func:`create`) and a catalogue (:func:`list_models`).

>>> from medtl import models
>>> "efficientnet-lite0" in {row["name"] for row in models.list_models()}
True
"""

from __future__ import annotations

from .adapt import adapt_input_conv, inflate_weight
from .classifier import Classifier, create
from .ensemble import EnsembleClassifier
from .registry import BACKBONES, SOURCES, BackboneSpec, InputConvention, PretrainedSource, get_backbone, get_source

__all__ = [
    "create",
    "list_models",
    "list",
    "Classifier",
    "EnsembleClassifier",
    "BackboneSpec",
    "PretrainedSource",
    "InputConvention",
    "BACKBONES",
    "SOURCES",
    "get_backbone",
    "get_source",
    "adapt_input_conv",
    "inflate_weight",
]


def list_models(pattern: str = "*", *, with_params: bool = True) -> list[dict]:
    """One row per backbone: dims, smallest input size (2D/3D), pretrained sources, parameter
    count, input conventions.

    ``pattern`` is a shell-style filter (``"resnet*"``). Parameter counts are for a
    1-channel, 2-class 2D model (building each takes a moment; ``with_params=False`` skips it).
    """
    import fnmatch

    from .networks import build_network
    from .registry import sources_for

    rows = []
    for name, spec in BACKBONES.items():
        if not fnmatch.fnmatch(name, pattern):
            continue
        sources = sources_for(name)
        row = {
            "name": name,
            "family": spec.family,
            "dims": "/".join(f"{d}D" for d in spec.dims),
            "min_size": "/".join(str(spec.minimum(d)) for d in spec.dims),
            "sources": ", ".join(s.tag + ("(3D)" if s.spatial_dims == 3 else "") for s in sources) or "-",
            "conventions": "; ".join(
                f"{s.tag}: {s.convention.channels}ch {s.convention.value_range} size {s.convention.size}"
                for s in sources
            ),
        }
        if with_params:
            net = build_network(spec, in_channels=1, num_classes=2)
            row["params_m"] = round(sum(p.numel() for p in net.parameters()) / 1e6, 2)
        rows.append(row)
    return rows


list = list_models  # noqa: A001 - the issue's `medtl.models.list()`; builtins stay untouched elsewhere
