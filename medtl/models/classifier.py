"""One model contract for every backbone: features, head, reset, parameter groups."""

from __future__ import annotations

import re
from dataclasses import replace

import torch
from torch import nn

from ..errors import ConfigError
from .networks import build_network, head_in_features
from .registry import BackboneSpec, InputConvention, PretrainedSource, get_backbone, resolve_source

__all__ = ["Classifier", "create"]


def _strip_head(net: nn.Module, spec: BackboneSpec) -> nn.Linear:
    """Replace the MONAI network's classifier by identity (so it returns pooled features);
    return the removed linear layer."""
    if spec.family == "resnet":
        head, net.fc = net.fc, nn.Identity()
    elif spec.family == "densenet":
        head, net.class_layers.out = net.class_layers.out, nn.Identity()
    else:  # EfficientNet applies its dropout just before _fc: the new head owns dropout
        head, net._fc, net._dropout = net._fc, nn.Identity(), nn.Identity()
    return head


class Classifier(nn.Module):
    """A backbone (``encoder``, returning pooled features) and a linear ``head``.

    Attributes:
        backbone: the :class:`BackboneSpec` name.
        source: the :class:`PretrainedSource` the weights came from, or ``None``.
        input_convention: what inputs the weights expect (see :class:`InputConvention`).
        num_features: width of :meth:`forward_features`' output.

    ``forward(x)`` returns logits; ``forward_features(x)`` returns embeddings (B, F) for linear
    probes and nearest-neighbour classifiers; ``create(..., num_classes=0)`` makes ``forward``
    return them too.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, spec: BackboneSpec, num_features: int, **info):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.spec = spec
        self.backbone = spec.name
        self.num_features = num_features
        self.source: PretrainedSource | None = info.get("source")
        self.input_convention: InputConvention | None = info.get("input_convention")
        self.spatial_dims: int = info.get("spatial_dims", 2)
        self.in_channels: int = info.get("in_channels", 1)

    @property
    def num_classes(self) -> int:
        last = [m for m in self.head.modules() if isinstance(m, nn.Linear)]
        return last[-1].out_features if last else 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings, shape (batch, ``num_features``)."""
        return self.encoder(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from embeddings."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def cam_layer(self) -> nn.Module:
        """The global pooling module (:attr:`BackboneSpec.cam_layer`): its input is the last spatial
        feature map, where Grad-CAM looks.

        >>> model = create("resnet18")
        >>> model.cam_layer() is model.encoder.avgpool
        True
        >>> type(create("densenet121").cam_layer()).__name__
        'AdaptiveAvgPool2d'
        """
        return self.encoder.get_submodule(self.spec.cam_layer)

    def cam_module(self, level: str | None = None) -> tuple[nn.Module, bool]:
        """Grad-CAM's layer at ``level`` (``None``: the last feature map; else a name of
        :attr:`BackboneSpec.cam_stages`, such as ``"1/8"``) and whether its *input* (the last map,
        read at the pooling) or its output (an earlier stage) is the feature map.

        >>> model = create("resnet18")
        >>> model.cam_module("1/8") == (model.encoder.layer2, False)
        True
        >>> model.cam_module("1/4")
        Traceback (most recent call last):
        ...
        medtl.errors.ConfigError: resnet18 declares Grad-CAM layers at 1/32 (the last), 1/16, 1/8, not 1/4
        """
        if level in (None, "", "1/32"):
            return self.cam_layer(), True
        stages = dict(self.spec.cam_stages)
        if level not in stages:
            known = ", ".join(["1/32 (the last)", *stages])
            raise ConfigError(None, f"{self.backbone} declares Grad-CAM layers at {known}, not {level}")
        return self.encoder.get_submodule(stages[level]), False

    def reset_classifier(self, num_classes: int, dropout: float = 0.2) -> None:
        """A new, randomly initialised head (``num_classes=0``: identity, for embeddings)."""
        self.head = _new_head(self.num_features, num_classes, dropout)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by depth: ``stem``, ``stage1`` ... ``stageN``, ``head`` (in that order).

        Every trainable parameter is in exactly one group; freezing, gradual unfreezing and
        layer-wise learning rates build on this.
        """
        patterns = [("stem", self.spec.stem)] + [(f"stage{i + 1}", p) for i, p in enumerate(self.spec.stages)]
        groups: dict[str, list[nn.Parameter]] = {name: [] for name, _ in patterns}
        for name, param in self.encoder.named_parameters():
            group = next((g for g, p in patterns if re.search(p, name)), None)
            if group is None:
                raise ConfigError(None, f"{self.backbone}: parameter '{name}' is in no declared group")
            groups[group].append(param)
        groups["head"] = list(self.head.parameters())
        return groups


def _new_head(num_features: int, num_classes: int, dropout: float) -> nn.Module:
    if num_classes == 0:
        return nn.Identity()
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))


def create(
    name: str,
    pretrained: str | None = None,
    *,
    in_channels: int = 1,
    num_classes: int = 2,
    spatial_dims: int = 2,
    dropout: float = 0.2,
    download: bool | None = None,
) -> Classifier:
    """Build a backbone, optionally with pretrained weights, adapted to your inputs.

    Args:
        name: a backbone from :func:`medtl.models.list_models` (``"resnet18"``,
            ``"densenet121"``, ``"efficientnet-lite0"`` ...).
        pretrained: ``None`` (random init), a tag (``"imagenet"``, ``"xrv-all"``,
            ``"radimagenet"``, ``"medicalnet"``) or a full source name (``"resnet18.imagenet"``).
        in_channels: input channels; the first convolution is adapted (summed for 1 channel,
            tiled and rescaled for N).
        num_classes: outputs. Equal to the source's own head (1000 for ImageNet): that head is
            kept. ``0``: no head, the model returns embeddings.
        spatial_dims: 2, or 3 for volumes (2D weights are inflated, I3D style).
        dropout: dropout before a new head.
        download: allow downloading missing weights (default: unless ``MEDTL_OFFLINE=1``).

    Raises:
        ConfigError: unknown backbone or source (with the nearest valid name).
        WeightsError: weights missing offline (says which file to get and how to import it),
            a checksum mismatch, or keys that do not fit.

    Example:
        >>> import torch
        >>> model = create("resnet18", in_channels=1, num_classes=3)
        >>> model(torch.zeros(2, 1, 64, 64)).shape, model.forward_features(torch.zeros(2, 1, 64, 64)).shape
        (torch.Size([2, 3]), torch.Size([2, 512]))
    """
    from .loading import pretrained_state

    spec = get_backbone(name)
    source = resolve_source(name, pretrained)
    if spatial_dims not in spec.dims:
        raise ConfigError(None, f"{name} is available in {spec.dims}D, not {spatial_dims}D")
    if source is not None and source.spatial_dims > spatial_dims:
        raise ConfigError(None, f"{source.name} holds {source.spatial_dims}D weights; use spatial_dims=3")
    src_classes = source.num_classes if source is not None else num_classes
    net = build_network(
        spec,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=max(src_classes, 1),
        overrides=source.config if source is not None else None,
    )
    convention = None
    if source is not None:
        state = pretrained_state(source, net.state_dict(), download=download)
        result = net.load_state_dict(state, strict=False)
        head_keys = [k for k in net.state_dict() if re.search(spec.head, k)]
        if result.unexpected_keys or set(result.missing_keys) - set(head_keys):
            raise AssertionError(f"bug: converted weights did not fit {name}: {result}")  # convert() checked this
        convention = replace(source.convention, channels=in_channels)
        if spatial_dims == 3 and source.spatial_dims == 2:
            convention = replace(convention, axes="depth, rows, columns", size=convention.size)
    features = head_in_features(net, spec)
    old_head = _strip_head(net, spec)
    if source is not None and num_classes == src_classes and src_classes > 0:
        head: nn.Module = old_head  # e.g. ImageNet's 1000 classes: check the weights on a photograph
    else:
        head = _new_head(features, num_classes, dropout)
    return Classifier(
        net, head, spec, features, source=source, input_convention=convention,
        spatial_dims=spatial_dims, in_channels=in_channels,
    )  # fmt: skip
