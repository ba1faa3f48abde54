"""Upstream checkpoint formats → MONAI networks, each proven on a file in the upstream's layout.

Every test writes a checkpoint the way its upstream does: the key names, shapes and container
come from the upstream's architecture definition (re-derived here from torchvision's
``resnet.py``/``densenet.py``, TorchXRayVision's ``models.py``, MedicalNet's ``models/resnet.py``
and RadImageNet's example loaders), never from MONAI's names. medtl then reads the file,
converts it against the MONAI network, and the network must load it strictly and compute what
an independent functional forward of the *upstream* architecture computes from the same file.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import types
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medtl.errors import WeightsError
from medtl.models.networks import build_network
from medtl.models.registry import SOURCES, get_backbone
from medtl.models.upstream import EXTRA_PREFIX, convert, read_checkpoint, split_extras

_CHANNELS = (64, 128, 256, 512)
_LAYERS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}
_DENSENET121 = dict(growth=32, blocks=(6, 12, 24, 16), init=64, bn_size=4)
XRV_LABELS = [
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis", "Effusion",
    "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia", "Lung Lesion", "Fracture",
    "Lung Opacity", "Enlarged Cardiomediastinum",
]  # fmt: skip


# ----------------------------------------------------------------------------- upstream layouts
class _Init:
    """Random but well-scaled tensors, so deep forwards stay finite and comparisons meaningful."""

    def __init__(self, seed: int, counters: bool):
        self.gen = torch.Generator().manual_seed(seed)
        self.counters = counters

    def conv(self, sd, name, cout, cin, k, dims=2, bias=False):
        shape = (cout, cin) + (k,) * dims
        sd[f"{name}.weight"] = torch.randn(shape, generator=self.gen) * math.sqrt(2.0 / (cin * k**dims))
        if bias:
            sd[f"{name}.bias"] = 0.1 * torch.randn(cout, generator=self.gen)

    def bn(self, sd, name, c):
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=self.gen)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=self.gen)
        sd[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=self.gen)
        sd[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=self.gen)
        if self.counters:
            sd[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    def linear(self, sd, name, cout, cin):
        sd[f"{name}.weight"] = torch.randn(cout, cin, generator=self.gen) / math.sqrt(cin)
        sd[f"{name}.bias"] = 0.1 * torch.randn(cout, generator=self.gen)


def resnet_state(depth, *, dims=2, in_ch=3, num_classes=1000, shortcut="B", counters=True, seed=0):
    """torchvision ``ResNet`` / MedicalNet ``ResNet`` state dict, in the upstream's key order.

    Both build ``layer{i}`` with a first block that gets a shortcut when the stride or the
    width changes; type "B" is a 1×1 conv + BN (``downsample.0``/``.1``), type "A" (MedicalNet
    18/34) a parameter-free zero-padded identity.
    """
    block, layers = _LAYERS[depth]
    expansion = 4 if block == "bottleneck" else 1
    init, sd = _Init(seed, counters), OrderedDict()
    init.conv(sd, "conv1", 64, in_ch, 7, dims)
    init.bn(sd, "bn1", 64)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip(_CHANNELS, layers, strict=True), start=1):
        for b in range(blocks):
            p = f"layer{i}.{b}"
            if block == "basic":
                init.conv(sd, f"{p}.conv1", planes, inplanes, 3, dims)
                init.bn(sd, f"{p}.bn1", planes)
                init.conv(sd, f"{p}.conv2", planes, planes, 3, dims)
                init.bn(sd, f"{p}.bn2", planes)
            else:
                init.conv(sd, f"{p}.conv1", planes, inplanes, 1, dims)
                init.bn(sd, f"{p}.bn1", planes)
                init.conv(sd, f"{p}.conv2", planes, planes, 3, dims)
                init.bn(sd, f"{p}.bn2", planes)
                init.conv(sd, f"{p}.conv3", planes * 4, planes, 1, dims)
                init.bn(sd, f"{p}.bn3", planes * 4)
            needs_shortcut = b == 0 and (i > 1 or inplanes != planes * expansion)
            if needs_shortcut and shortcut == "B":
                init.conv(sd, f"{p}.downsample.0", planes * expansion, inplanes, 1, dims)
                init.bn(sd, f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    if num_classes:
        init.linear(sd, "fc", num_classes, 512 * expansion)
    return sd


def resnet_forward(sd, x, depth, *, shortcut="B", strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1), head=True):
    """The upstream ResNet's forward, written with ``torch.nn.functional`` over upstream keys.

    torchvision puts a bottleneck's stride on its 3×3 ``conv2`` and a basic block's on
    ``conv1``; MedicalNet does the same (and dilates ``conv2``/the 3×3 conv when asked).
    """
    block, layers = _LAYERS[depth]
    expansion = 4 if block == "bottleneck" else 1
    dims = x.dim() - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    maxpool = F.max_pool2d if dims == 2 else F.max_pool3d
    avgpool = F.avg_pool2d if dims == 2 else F.avg_pool3d

    def bn(h, p):
        w = sd[f"{p}.weight"]
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], w, sd[f"{p}.bias"], False, 0.0, 1e-5)

    h = F.relu(bn(conv(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    h = maxpool(h, 3, 2, 1)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip(_CHANNELS, layers, strict=True), start=1):
        d = dilations[i - 1]
        for b in range(blocks):
            p, s = f"layer{i}.{b}", strides[i - 1] if b == 0 else 1
            if block == "basic":
                out = F.relu(bn(conv(h, sd[f"{p}.conv1.weight"], stride=s, padding=d, dilation=d), f"{p}.bn1"))
                out = bn(conv(out, sd[f"{p}.conv2.weight"], padding=d, dilation=d), f"{p}.bn2")
            else:
                out = F.relu(bn(conv(h, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
                out = F.relu(bn(conv(out, sd[f"{p}.conv2.weight"], stride=s, padding=d, dilation=d), f"{p}.bn2"))
                out = bn(conv(out, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            if b == 0 and (s != 1 or inplanes != planes * expansion):
                if shortcut == "B":
                    residual = bn(conv(h, sd[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1")
                else:  # MedicalNet's downsample_basic_block: strided sampling, zero channels appended
                    sampled = avgpool(h, kernel_size=1, stride=s)
                    pad = sampled.new_zeros(
                        (sampled.shape[0], planes * expansion - sampled.shape[1]) + sampled.shape[2:]
                    )
                    residual = torch.cat([sampled, pad], 1)
            else:
                residual = h
            h = F.relu(out + residual)
            inplanes = planes * expansion
    features = h.mean(dim=tuple(range(2, h.dim())))
    return F.linear(features, sd["fc.weight"], sd["fc.bias"]) if head else features


def densenet_state(*, in_ch=3, num_classes=1000, counters=True, seed=0, growth, blocks, init, bn_size):
    """torchvision/xrv ``DenseNet`` state dict with the code's names (``denselayerN.norm1``)."""
    ini, sd = _Init(seed, counters), OrderedDict()
    ini.conv(sd, "features.conv0", init, in_ch, 7)
    ini.bn(sd, "features.norm0", init)
    c = init
    for i, n in enumerate(blocks, start=1):
        for j in range(1, n + 1):
            p, cin = f"features.denseblock{i}.denselayer{j}", c + (j - 1) * growth
            ini.bn(sd, f"{p}.norm1", cin)
            ini.conv(sd, f"{p}.conv1", bn_size * growth, cin, 1)
            ini.bn(sd, f"{p}.norm2", bn_size * growth)
            ini.conv(sd, f"{p}.conv2", growth, bn_size * growth, 3)
        c += n * growth
        if i != len(blocks):
            ini.bn(sd, f"features.transition{i}.norm", c)
            ini.conv(sd, f"features.transition{i}.conv", c // 2, c, 1)
            c //= 2
    ini.bn(sd, "features.norm5", c)
    if num_classes:
        ini.linear(sd, "classifier", num_classes, c)
    return sd


def old_style_densenet_keys(sd):
    """The published torchvision DenseNet files' spelling: ``denselayerN.norm.1`` for ``norm1``."""
    return OrderedDict((re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k), v) for k, v in sd.items())


def densenet_forward(sd, x, *, blocks, head=True, **_):
    """torchvision's (and xrv's) DenseNet forward over upstream keys, in ``torch.nn.functional``."""

    def bn(h, p):
        w = sd[f"{p}.weight"]
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], w, sd[f"{p}.bias"], False, 0.0, 1e-5)

    h = F.relu(bn(F.conv2d(x, sd["features.conv0.weight"], stride=2, padding=3), "features.norm0"))
    h = F.max_pool2d(h, 3, 2, 1)
    for i, n in enumerate(blocks, start=1):
        for j in range(1, n + 1):
            p = f"features.denseblock{i}.denselayer{j}"
            y = F.conv2d(F.relu(bn(h, f"{p}.norm1")), sd[f"{p}.conv1.weight"])
            y = F.conv2d(F.relu(bn(y, f"{p}.norm2")), sd[f"{p}.conv2.weight"], padding=1)
            h = torch.cat([h, y], 1)
        if i != len(blocks):
            p = f"features.transition{i}"
            h = F.avg_pool2d(F.conv2d(F.relu(bn(h, f"{p}.norm")), sd[f"{p}.conv.weight"]), 2, 2)
    features = F.relu(bn(h, "features.norm5")).mean(dim=(2, 3))
    return F.linear(features, sd["classifier.weight"], sd["classifier.bias"]) if head else features


# ----------------------------------------------------------------------------- MONAI side
def monai_network(source_name):
    """The network :mod:`medtl.models.loading` checks a source against (its own head, if any)."""
    source = SOURCES[source_name]
    spec = get_backbone(source.backbone)
    net = build_network(
        spec,
        spatial_dims=source.spatial_dims,
        in_channels=source.convention.channels,
        num_classes=max(source.num_classes, 1),
        overrides=source.config,
    )
    return net.eval(), spec, source


def reference_of(net, spec, source):
    state = net.state_dict()
    if source.num_classes == 0:  # headless upstream: the file provides the backbone only
        state = {k: v for k, v in state.items() if not re.search(spec.head, k)}
    return state


def load_strict(net, spec, state):
    """Strict load; a headless source's head is the network's own (the caller replaces it)."""
    head = {k: v for k, v in net.state_dict().items() if re.search(spec.head, k) and k not in state}
    net.load_state_dict({**state, **head}, strict=True)
    return net


def read_and_convert(path, source_name):
    net, spec, source = monai_network(source_name)
    upstream = read_checkpoint(path, source.format)
    state = convert(upstream, source.format, reference_of(net, spec, source), where=str(path))
    return load_strict(net, spec, state), upstream, state


def assert_same_function(net, reference_forward, upstream_state, x):
    """MONAI network (float64) vs the upstream architecture's functional forward on the file's tensors."""
    wide = {k: v.double() if v.is_floating_point() else v for k, v in upstream_state.items()}
    with torch.no_grad():
        got = net.double()(x.double())
        want = reference_forward(wide, x.double())
    assert got.shape == want.shape
    assert torch.isfinite(want).all() and want.abs().max() > 1e-3  # a real signal, not zeros
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- torchvision
@pytest.mark.parametrize(("depth", "counters"), [(18, False), (50, True)])
def test_torchvision_resnet(tmp_path, depth, counters):
    # resnet50 exercises the bottleneck: the stride must sit on conv2 in MONAI as in torchvision
    sd = resnet_state(depth, counters=counters, seed=depth)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(sd, path)  # torchvision publishes model.state_dict()
    net, upstream, state = read_and_convert(path, f"resnet{depth}.imagenet")
    assert list(upstream) == list(sd)
    assert torch.equal(state["layer2.0.downsample.0.weight"], sd["layer2.0.downsample.0.weight"])
    assert torch.equal(state["fc.weight"], sd["fc.weight"])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert_same_function(net, lambda s, x: resnet_forward(s, x, depth), sd, x)


def test_torchvision_densenet_old_style_keys(tmp_path):
    # densenet121-a639ec97.pth (2017): ``norm.1``-style keys and no BatchNorm counters
    sd = densenet_state(counters=False, **_DENSENET121)
    published = old_style_densenet_keys(sd)
    assert "features.denseblock1.denselayer1.norm.1.weight" in published
    path = tmp_path / "densenet121.pth"
    torch.save(published, path)
    net, upstream, state = read_and_convert(path, "densenet121.imagenet")
    assert torch.equal(
        state["features.denseblock3.denselayer7.layers.conv2.weight"],
        published["features.denseblock3.denselayer7.conv.2.weight"],
    )
    assert torch.equal(state["class_layers.out.bias"], sd["classifier.bias"])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert_same_function(net, lambda s, x: densenet_forward(s, x, **_DENSENET121), sd, x)


def test_torchvision_densenet_new_style_keys(tmp_path):
    sd = densenet_state(**_DENSENET121)
    path = tmp_path / "densenet121.pth"
    torch.save(sd, path)
    _, _, state = read_and_convert(path, "densenet121.imagenet")
    assert torch.equal(state["features.denseblock4.denselayer16.layers.norm2.running_var"], sd["features.denseblock4.denselayer16.norm2.running_var"])  # fmt: skip


def test_densenet_key_given_twice_is_refused():
    sd = densenet_state(counters=False, **_DENSENET121)
    both = {**sd, **old_style_densenet_keys(sd)}
    net, spec, source = monai_network("densenet121.imagenet")
    with pytest.raises(WeightsError, match="given twice: .*denselayer1.norm1.weight and .*denselayer1.norm.1.weight"):
        convert(both, "torchvision-densenet", reference_of(net, spec, source), where="f")


# ----------------------------------------------------------------------------- TorchXRayVision
@contextlib.contextmanager
def stand_in_torchxrayvision():
    """A ``torchxrayvision.models`` in ``sys.modules`` whose classes mirror xrv's DenseNet.

    The names, base classes and attributes follow mlmed/torchxrayvision ``models.py``:
    ``_DenseLayer``/``_DenseBlock``/``_Transition`` are ``nn.Sequential``s, ``DenseNet`` holds
    ``features`` and ``classifier`` plus ``op_threshs`` (a plain attribute in the releases'
    training code, a buffer in later xrv), and later versions' ``weights``, ``apply_sigmoid``,
    ``pathologies``/``targets`` and ``upsample``. Pickles made while it is installed refer to
    ``torchxrayvision.models.*`` exactly as xrv's release files do. Removed on exit.
    """
    package, models = types.ModuleType("torchxrayvision"), types.ModuleType("torchxrayvision.models")
    package.models = models

    class _DenseLayer(nn.Sequential):
        def __init__(self, cin, growth, bn_size, drop_rate):
            super().__init__()
            self.add_module("norm1", nn.BatchNorm2d(cin))
            self.add_module("relu1", nn.ReLU(inplace=True))
            self.add_module("conv1", nn.Conv2d(cin, bn_size * growth, kernel_size=1, stride=1, bias=False))
            self.add_module("norm2", nn.BatchNorm2d(bn_size * growth))
            self.add_module("relu2", nn.ReLU(inplace=True))
            self.add_module(
                "conv2", nn.Conv2d(bn_size * growth, growth, kernel_size=3, stride=1, padding=1, bias=False)
            )
            self.drop_rate = drop_rate

    class _DenseBlock(nn.Sequential):
        def __init__(self, n, cin, bn_size, growth, drop_rate):
            super().__init__()
            for j in range(n):
                self.add_module(f"denselayer{j + 1}", _DenseLayer(cin + j * growth, growth, bn_size, drop_rate))

    class _Transition(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__()
            self.add_module("norm", nn.BatchNorm2d(cin))
            self.add_module("relu", nn.ReLU(inplace=True))
            self.add_module("conv", nn.Conv2d(cin, cout, kernel_size=1, stride=1, bias=False))
            self.add_module("pool", nn.AvgPool2d(kernel_size=2, stride=2))

    class DenseNet(nn.Module):
        def __init__(self, growth, blocks, init, bn_size, num_classes=18, in_channels=1, resaved=False, extra=None):
            super().__init__()
            self.features = nn.Sequential(
                OrderedDict(
                    conv0=nn.Conv2d(in_channels, init, kernel_size=7, stride=2, padding=3, bias=False),
                    norm0=nn.BatchNorm2d(init),
                    relu0=nn.ReLU(inplace=True),
                    pool0=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
                )
            )
            c = init
            for i, n in enumerate(blocks, start=1):
                self.features.add_module(f"denseblock{i}", _DenseBlock(n, c, bn_size, growth, 0))
                c += n * growth
                if i != len(blocks):
                    self.features.add_module(f"transition{i}", _Transition(c, c // 2))
                    c //= 2
            self.features.add_module("norm5", nn.BatchNorm2d(c))
            self.classifier = nn.Linear(c, num_classes)
            if resaved:  # a model built with weights=... and saved again by a later xrv
                self.apply_sigmoid = False
                self.weights = "densenet121-res224-all"
                self.targets = self.pathologies = list(XRV_LABELS)
                self.register_buffer("op_threshs", torch.linspace(0.01, 0.2, num_classes))
                self.upsample = nn.Upsample(size=(224, 224), mode="bilinear", align_corners=False)
            else:  # the training script's model: DenseNet(num_classes=18, in_channels=1, ...)
                self.op_threshs = None
            if extra is not None:
                self.extra = extra

    for cls in (_DenseLayer, _DenseBlock, _Transition, DenseNet):
        cls.__module__, cls.__qualname__ = "torchxrayvision.models", cls.__name__
        setattr(models, cls.__name__, cls)
    previous = {name: sys.modules.get(name) for name in ("torchxrayvision", "torchxrayvision.models")}
    sys.modules.update({"torchxrayvision": package, "torchxrayvision.models": models})
    try:
        yield models
    finally:
        for name, module in previous.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


_TINY_DENSENET = dict(growth=4, blocks=(1, 1), init=8, bn_size=2)  # for files that must fail before converting


def save_xrv_model(path, sd, *, legacy, resaved=False, extra=None, config=_DENSENET121):
    with stand_in_torchxrayvision() as xrv:
        with torch.device("meta"):  # skip the initialisation: every tensor comes from ``sd``
            model = xrv.DenseNet(**config, resaved=resaved, extra=extra)
        result = model.load_state_dict(sd, strict=False, assign=True)  # the generator's names are xrv's names
        assert not result.unexpected_keys and set(result.missing_keys) <= {"op_threshs"}
        if resaved:
            model.op_threshs = torch.linspace(0.01, 0.2, 18)
        with warnings.catch_warnings():  # the legacy format records class source, ours has none on disk
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
            torch.save(model, path, _use_new_zipfile_serialization=not legacy)  # the whole module, as xrv does
    assert "torchxrayvision" not in sys.modules and "torchxrayvision.models" not in sys.modules


@pytest.mark.parametrize(
    ("legacy", "resaved"),
    [(True, False), (False, True)],
    ids=["as-released-legacy-format", "resaved-with-thresholds"],
)
def test_xrv_densenet(tmp_path, legacy, resaved):
    # The release files date from before PyTorch 1.6 (xrv patches in _non_persistent_buffers_set
    # when loading them), hence the legacy non-zip container for the as-released case.
    sd = densenet_state(in_ch=1, num_classes=18, seed=3, **_DENSENET121)
    path = tmp_path / "nih-pc-chex-densenet121-best.pt"
    save_xrv_model(path, sd, legacy=legacy, resaved=resaved)

    net, upstream, state = read_and_convert(path, "densenet121.xrv-all")
    weights, extras = split_extras(upstream)
    assert list(weights) == list(sd)
    if resaved:
        torch.testing.assert_close(extras["op_threshs"], torch.linspace(0.01, 0.2, 18))
        assert extras["pathologies"] == XRV_LABELS
    else:
        assert extras == {}
    assert "op_threshs" not in weights and not any(k.startswith(EXTRA_PREFIX) for k in state)
    assert torch.equal(state["class_layers.out.weight"], sd["classifier.weight"])
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(4)) * 500
    assert_same_function(net, lambda s, x: densenet_forward(s, x, **_DENSENET121), sd, x)


def test_xrv_extras_survive_the_cache(tmp_path):
    # medtl caches pickled-module formats as a plain state dict, read back with the "plain" reader
    sd = densenet_state(in_ch=1, num_classes=18, **_DENSENET121)
    save_xrv_model(tmp_path / "xrv.pt", sd, legacy=False, resaved=True)
    state = read_checkpoint(tmp_path / "xrv.pt", "xrv-densenet")
    torch.save(state, tmp_path / "xrv.pt.state_dict.pt")
    again = read_checkpoint(tmp_path / "xrv.pt.state_dict.pt", "plain")
    assert again.keys() == state.keys() and again[EXTRA_PREFIX + "pathologies"] == XRV_LABELS
    net, spec, source = monai_network("densenet121.xrv-all")
    convert(again, "xrv-densenet", reference_of(net, spec, source), where="cache")


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-format", "zip-format"])
def test_xrv_refuses_a_module_class_off_the_list(tmp_path, legacy):
    sd = densenet_state(in_ch=1, num_classes=18, **_TINY_DENSENET)
    save_xrv_model(tmp_path / "xrv.pt", sd, legacy=legacy, extra=nn.Dropout(0.5), config=_TINY_DENSENET)
    with pytest.raises(WeightsError, match=r"refusing to unpickle global 'torch\.nn\.modules\.dropout\.Dropout'"):
        read_checkpoint(tmp_path / "xrv.pt", "xrv-densenet")


class _CallsAFunction:
    """Unpickling this calls ``os.getpid`` (harmless, but arbitrary code all the same)."""

    def __reduce__(self):
        return (os.getpid, ())


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-format", "zip-format"])
def test_xrv_refuses_arbitrary_callables(tmp_path, legacy):
    payload = {"features.conv0.weight": torch.zeros(1), "payload": _CallsAFunction()}
    torch.save(payload, tmp_path / "evil.pt", _use_new_zipfile_serialization=not legacy)
    with pytest.raises(WeightsError, match=r"refusing to unpickle global '\w+\.getpid'"):
        read_checkpoint(tmp_path / "evil.pt", "xrv-densenet")


def test_xrv_refuses_a_file_that_is_not_a_densenet(tmp_path):
    torch.save(nn.Sequential(nn.Conv2d(1, 2, 3)), tmp_path / "seq.pt")
    with pytest.raises(WeightsError, match="expected a pickled torchxrayvision.models.DenseNet, found torch.nn.modules.container.Sequential"):  # fmt: skip
        read_checkpoint(tmp_path / "seq.pt", "xrv-densenet")


# ----------------------------------------------------------------------------- MedicalNet
@pytest.mark.parametrize(
    ("depth", "with_decoder"),
    [(10, True), (18, False)],
    ids=["resnet10-shortcutB-training-checkpoint", "resnet18-shortcutA-pretrain"],
)
def test_medicalnet_resnet(tmp_path, depth, with_decoder):
    source = SOURCES[f"resnet{depth}.medicalnet"]
    shortcut = source.config["shortcut_type"]
    sd = resnet_state(depth, dims=3, in_ch=1, num_classes=0, shortcut=shortcut, seed=depth)
    saved = OrderedDict((f"module.{k}", v) for k, v in sd.items())  # nn.DataParallel's prefix
    if with_decoder:  # models/resnet.py's conv_seg: ConvTranspose3d, BN, ReLU, Conv3d, BN, ReLU, Conv3d
        init = _Init(7, True)
        c = 512 * (4 if _LAYERS[depth][0] == "bottleneck" else 1)
        saved["module.conv_seg.0.weight"] = torch.randn(c, 32, 2, 2, 2, generator=init.gen)
        saved["module.conv_seg.0.bias"] = torch.zeros(32)
        init.bn(saved, "module.conv_seg.1", 32)
        init.conv(saved, "module.conv_seg.3", 32, 32, 3, dims=3)
        init.bn(saved, "module.conv_seg.4", 32)
        init.conv(saved, "module.conv_seg.6", 2, 32, 1, dims=3)
    torch.save({"ecpoch": 3, "batch_id": 0, "state_dict": saved}, tmp_path / source.filename)  # train.py's container

    net, upstream, state = read_and_convert(tmp_path / source.filename, source.name)
    assert not any(k.startswith("conv_seg") for k in state)
    assert ("layer2.0.downsample.0.weight" in state) == (shortcut == "B")
    assert torch.equal(state["layer4.0.conv1.weight"], saved["module.layer4.0.conv1.weight"])
    # MedicalNet's own forward: layer3/layer4 at stride 1, 3×3 convs dilated by 2 and 4
    medicalnet = dict(shortcut=shortcut, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), head=False)
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(5))
    net.fc = nn.Identity()
    assert_same_function(net, lambda s, x: resnet_forward(s, x, depth, **medicalnet), sd, x)


def test_medicalnet_mixed_prefix_is_refused():
    sd = {f"module.{k}" if k.startswith("layer1") else k: v for k, v in resnet_state(10, dims=3, in_ch=1, num_classes=0).items()}  # fmt: skip
    net, spec, source = monai_network("resnet10.medicalnet")
    with pytest.raises(WeightsError, match="start with 'module.' and .* do not"):
        convert(sd, "medicalnet-resnet", reference_of(net, spec, source), where="f")


# ----------------------------------------------------------------------------- RadImageNet
_RIN_CHILD = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


def radimagenet_resnet_file(sd):
    """``Backbone.backbone = nn.Sequential(*list(resnet50().children())[:-1])`` state dict."""
    return OrderedDict((f"backbone.{_RIN_CHILD[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}", v) for k, v in sd.items())


def test_radimagenet_resnet(tmp_path):
    sd = resnet_state(50, num_classes=0, seed=11)
    published = radimagenet_resnet_file(sd)
    assert "backbone.0.weight" in published and "backbone.7.2.bn3.running_var" in published
    torch.save(published, tmp_path / "RadImageNet-ResNet50.pt")
    net, _, state = read_and_convert(tmp_path / "RadImageNet-ResNet50.pt", "resnet50.radimagenet")
    assert torch.equal(state["layer3.0.downsample.0.weight"], published["backbone.6.0.downsample.0.weight"])
    net.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    assert_same_function(net, lambda s, x: resnet_forward(s, x, 50, head=False), sd, x)


def test_radimagenet_densenet(tmp_path):
    sd = densenet_state(num_classes=0, seed=12, **_DENSENET121)
    published = OrderedDict((k.replace("features.", "backbone.0.", 1), v) for k, v in sd.items())
    torch.save(published, tmp_path / "RadImageNet-DenseNet121.pt")
    net, _, state = read_and_convert(tmp_path / "RadImageNet-DenseNet121.pt", "densenet121.radimagenet")
    assert torch.equal(state["features.norm5.weight"], published["backbone.0.norm5.weight"])
    net.class_layers.out = nn.Identity()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    assert_same_function(net, lambda s, x: densenet_forward(s, x, head=False, **_DENSENET121), sd, x)


# ----------------------------------------------------------------------------- failures name the keys
def _resnet18():
    return resnet_state(18)


def _densenet_old():
    return old_style_densenet_keys(densenet_state(counters=False, **_DENSENET121))


def _xrv():
    return densenet_state(in_ch=1, num_classes=18, **_DENSENET121)


def _medicalnet18():
    return OrderedDict((f"module.{k}", v) for k, v in resnet_state(18, dims=3, in_ch=1, num_classes=0, shortcut="A").items())  # fmt: skip


def _rin_resnet():
    return radimagenet_resnet_file(resnet_state(50, num_classes=0))


def _rin_densenet():
    sd = densenet_state(num_classes=0, **_DENSENET121)
    return OrderedDict((k.replace("features.", "backbone.0.", 1), v) for k, v in sd.items())


# (source, upstream state, an upstream key, the MONAI key it becomes)
_CASES = {
    "torchvision-resnet": ("resnet18.imagenet", _resnet18, "layer2.0.downsample.0.weight", "layer2.0.downsample.0.weight"),
    "torchvision-densenet": ("densenet121.imagenet", _densenet_old, "features.denseblock2.denselayer3.norm.1.weight", "features.denseblock2.denselayer3.layers.norm1.weight"),
    "xrv-densenet": ("densenet121.xrv-all", _xrv, "classifier.weight", "class_layers.out.weight"),
    "medicalnet-resnet": ("resnet18.medicalnet", _medicalnet18, "module.layer1.0.conv1.weight", "layer1.0.conv1.weight"),
    "radimagenet-resnet": ("resnet50.radimagenet", _rin_resnet, "backbone.5.0.conv2.weight", "layer2.0.conv2.weight"),
    "radimagenet-densenet": ("densenet121.radimagenet", _rin_densenet, "backbone.0.transition1.conv.weight", "features.transition1.conv.weight"),
}  # fmt: skip
_BUILT: dict[str, tuple] = {}  # fmt -> (upstream, reference): built once, never mutated


def _case(fmt):
    source_name, make, key, monai_key = _CASES[fmt]
    if fmt not in _BUILT:
        upstream, reference = make(), reference_of(*monai_network(source_name))
        assert SOURCES[source_name].format == fmt and key in upstream
        convert(upstream, fmt, reference, where="ok")  # the intact file converts
        _BUILT[fmt] = (upstream, reference)
    return (*_BUILT[fmt], key, monai_key)


@pytest.mark.parametrize("fmt", sorted(_CASES))
def test_renamed_key_is_named(fmt):
    upstream, reference, key, monai_key = _case(fmt)
    renamed = key.replace(".weight", ".wieght")
    state = OrderedDict((renamed if k == key else k, v) for k, v in upstream.items())
    with pytest.raises(WeightsError) as err:
        convert(state, fmt, reference, where="upstream.pth")
    message = str(err.value)
    assert message.startswith("upstream.pth: ")
    assert f"not in the {fmt} layout: {renamed}" in message and f"missing: {monai_key}" in message


@pytest.mark.parametrize("fmt", sorted(_CASES))
def test_wrong_shape_is_named(fmt):
    upstream, reference, key, monai_key = _case(fmt)
    state = dict(upstream)
    state[key] = torch.zeros(3)
    with pytest.raises(WeightsError, match=rf"1 wrong shape: {re.escape(monai_key)}: file \(3,\) vs model"):
        convert(state, fmt, reference, where="upstream.pth")


@pytest.mark.parametrize("fmt", sorted(_CASES))
def test_missing_key_is_named(fmt):
    upstream, reference, key, monai_key = _case(fmt)
    state = {k: v for k, v in upstream.items() if k != key}
    with pytest.raises(WeightsError, match=rf"1 missing: {re.escape(monai_key)}$"):
        convert(state, fmt, reference, where="upstream.pth")


def test_training_checkpoint_left_wrapped_is_refused(tmp_path):
    # a container the plain reader cannot unwrap must not pass epoch counters off as weights
    torch.save({"epoch": 3, "weights": {"conv1.weight": torch.zeros(1)}}, tmp_path / "ckpt.pt")
    with pytest.raises(WeightsError, match="not tensors: epoch"):
        read_checkpoint(tmp_path / "ckpt.pt", "torchvision-resnet")
