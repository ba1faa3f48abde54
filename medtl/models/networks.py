"""Build the MONAI network a :class:`~medtl.models.registry.BackboneSpec` describes."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .registry import BackboneSpec

__all__ = ["build_network", "head_in_features", "SamePad", "HalvingAvgPool"]


class SamePad(nn.Module):
    """TensorFlow "SAME" padding for the convolution that follows, computed from each input's size.

    MONAI's EfficientNet computes these paddings once, for the ``image_size`` it is built with
    (224): at 28 pixels a 5×5 kernel then meets a 4×4 feature map and fails. Computed per input,
    the network takes any size, and at the built size the padding is the one MONAI computes.

    >>> pad = SamePad(nn.Conv2d(1, 1, 5, stride=2))
    >>> pad(torch.zeros(1, 1, 7, 7)).shape  # (ceil(7/2) - 1)·2 + 5 - 7 = 4 → 2 on each side
    torch.Size([1, 1, 11, 11])
    """

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = conv.kernel_size, conv.stride, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for n, k, s, d in zip(x.shape[2:], self.kernel_size, self.stride, self.dilation, strict=True):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads = [total // 2, total - total // 2] + pads  # F.pad lists the last axis first
        return nn.functional.pad(x, pads) if any(pads) else x


class HalvingAvgPool(nn.Module):
    """A DenseNet transition's 2×2(×2) average pooling that keeps a 1-voxel axis and rounds odd
    sizes up: identical on the even sizes ImageNet weights saw (224 → 56, 28, 14), and a 28-voxel
    input, whose last transition meets a 1-voxel map, still trains.

    >>> HalvingAvgPool()(torch.ones(1, 2, 7, 1, 4)).shape
    torch.Size([1, 2, 4, 1, 2])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = [2 if n > 1 else 1 for n in x.shape[2:]]
        pool = nn.functional.avg_pool3d if x.dim() == 5 else nn.functional.avg_pool2d
        return pool(x, kernel, stride=kernel, ceil_mode=True)


def _dynamic_same_padding(net: nn.Module) -> None:
    """Replace every ``<conv>_padding`` module of a MONAI EfficientNet by :class:`SamePad`."""
    for module in list(net.modules()):
        for name, _ in list(module.named_children()):
            conv = getattr(module, name[: -len("_padding")], None) if name.endswith("_padding") else None
            if isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                setattr(module, name, SamePad(conv))


def _halving_transitions(net: nn.Module) -> None:
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.AvgPool2d, nn.AvgPool3d)) and child.kernel_size in (2, (2, 2), (2, 2, 2)):
                setattr(module, name, HalvingAvgPool())


def _use_activation(net, name: str) -> None:
    """MONAI's EfficientNet hard-wires swish in ``_swish`` attributes; Lite variants use ReLU6."""
    from torch import nn

    if name == "swish":
        return
    if name != "relu6":
        raise ValueError(f"unsupported EfficientNet activation '{name}'")
    for module in net.modules():
        if hasattr(module, "_swish"):
            module._swish = nn.ReLU6(inplace=False)


def _dilate_stages(net, dilations: dict[str, int]) -> None:
    """Turn ResNet stages into MedicalNet's dilated ones: stride 1, 3×3 convs dilated by d.

    MedicalNet keeps resolution in layer3/layer4 (stride 1, dilation 2 and 4) for
    segmentation; with MONAI's strided stages its weights would compute a different function.
    """
    from functools import partial

    from torch import nn

    for stage, d in dilations.items():
        for block in getattr(net, stage):
            for conv in block.modules():
                if not isinstance(conv, (nn.Conv2d, nn.Conv3d)):
                    continue
                n = len(conv.kernel_size)
                conv.stride = (1,) * n
                if conv.kernel_size[0] == 3:
                    conv.dilation, conv.padding = (d,) * n, (d,) * n
            if isinstance(block.downsample, partial):  # type-A shortcut: a strided avg-pool + zero channels
                block.downsample = partial(block.downsample.func, **{**block.downsample.keywords, "stride": 1})


def build_network(
    spec: BackboneSpec,
    *,
    spatial_dims: int = 2,
    in_channels: int = 3,
    num_classes: int = 1000,
    overrides: dict[str, Any] | None = None,
):
    """A MONAI network for ``spec`` with its own classifier (``num_classes`` outputs).

    ``overrides`` are constructor arguments a pretrained source needs (MedicalNet's shortcut
    type). ``num_classes=0`` still builds a 1-output head: the caller replaces it.

    >>> from medtl.models.registry import get_backbone
    >>> net = build_network(get_backbone("resnet18"), in_channels=1, num_classes=5)
    >>> net.conv1.weight.shape[1], net.fc.out_features
    (1, 5)
    """
    from monai.networks import nets

    if spatial_dims not in spec.dims:
        raise ValueError(f"{spec.name} is available in {spec.dims}D, not {spatial_dims}D")
    config = {**spec.config, **(overrides or {})}
    outputs = max(num_classes, 1)
    if spec.family == "resnet":
        dilations = config.pop("dilated_stages", None)
        net = nets.ResNet(spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=outputs, **config)
        if dilations:
            _dilate_stages(net, dilations)
        return net
    if spec.family == "densenet":
        net = nets.DenseNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=outputs, **config)
        _halving_transitions(net)
        return net
    if spec.family == "efficientnet":
        activation = config.pop("activation", "swish")
        # MONAI keeps TensorFlow's BatchNorm momentum (0.01): running statistics then need hundreds
        # of steps to settle, and a small medical set gives tens per epoch, so a model trained from
        # scratch evaluates to a constant. PyTorch's 0.1 settles within an epoch.
        config.setdefault("norm", ("batch", {"eps": 1e-3, "momentum": 0.1}))
        net = nets.EfficientNet(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=outputs, **config)
        _use_activation(net, activation)
        _dynamic_same_padding(net)
        return net
    raise ValueError(f"unknown family '{spec.family}'")


def head_in_features(net, spec: BackboneSpec) -> int:
    """Width of the pooled features that feed the classifier."""
    if spec.family == "resnet":
        return net.fc.in_features
    if spec.family == "densenet":
        return net.class_layers.out.in_features
    return net._fc.in_features
