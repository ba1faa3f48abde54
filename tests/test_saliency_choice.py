"""Step 13: the default saliency map is chosen by evidence, and Grad-CAM may read earlier layers."""

import pytest
import torch

from medtl.errors import ConfigError
from medtl.explain.choice import choose, resolve
from medtl.explain.methods import check_methods, make_baseline, saliency
from medtl.models import create


def _evidence(**overrides):
    base = {
        "gradcam": dict(randomization_spearman=0.2, deletion_gain=0.30, grid=[4, 4], pointing_game=0.9),
        "gradcam@1/8": dict(randomization_spearman=0.3, deletion_gain=0.05, grid=[16, 16], pointing_game=0.4),
        "ig": dict(randomization_spearman=0.1, deletion_gain=0.10, grid=[128, 128], pointing_game=0.8),
        "ig@blur": dict(randomization_spearman=0.1, deletion_gain=0.15, grid=[128, 128], pointing_game=0.7),
        "occlusion": dict(randomization_spearman=0.7, deletion_gain=0.40, grid=[128, 128], pointing_game=1.0),
    }
    for name, change in overrides.items():
        base[name].update(change)
    return base


def test_a_method_that_fails_randomization_or_is_too_coarse_is_never_the_default():
    evidence = _evidence()
    method, why = choose(evidence, masked=10)
    # occlusion has the best pointing game and deletion gain but survives randomization; Grad-CAM's
    # 4 x 4 map is too coarse: the pointing game picks among the rest
    assert method == "ig" and "pointing game" in why
    assert "randomization" in evidence["occlusion"]["excluded_because"]
    assert "4x4" in evidence["gradcam"]["excluded_because"]
    assert evidence["ig"]["eligible"] and not evidence["occlusion"]["eligible"]


def test_without_enough_masks_the_most_faithful_method_wins():
    assert choose(_evidence(), masked=4)[0] == "ig@blur"  # largest deletion gain among the eligible
    unfaithful = _evidence(**{"ig@blur": {"deletion_gain": -0.01}})
    assert choose(unfaithful, masked=0)[0] == "ig"
    assert "not faithful" in unfaithful["ig@blur"]["excluded_because"]


def test_no_eligible_method_means_no_default_and_auto_refuses():
    evidence = {"ig": dict(randomization_spearman=0.9, deletion_gain=0.1, grid=[8, 8])}
    method, why = choose(evidence)
    assert method is None and "no candidate" in why
    with pytest.raises(ConfigError, match="found no method to trust"):
        resolve("auto", {"method": None, "why": why}, "runs/x")
    with pytest.raises(ConfigError, match="saliency-check runs/x"):
        resolve("auto", None, "runs/x")
    assert resolve("ig@black", None)[0] == "ig"  # a named method is taken as given, canonical


def test_method_variants_are_validated():
    assert check_methods("gradcam@1/16,ig@mean,occlusion@blur") == ["gradcam@1/16", "ig@mean", "occlusion@blur"]
    with pytest.raises(ConfigError, match="takes a layer"):
        check_methods("gradcam@blur")
    with pytest.raises(ConfigError, match="takes a baseline"):
        check_methods("ig@1/8")
    with pytest.raises(ConfigError, match="has no variants"):
        check_methods("smoothgrad@blur")


def test_the_blurred_baseline_keeps_brightness_and_removes_detail():
    x = torch.zeros(1, 1, 40, 40)
    x[..., 10:30, 10:30] = 1.0
    b = make_baseline(x, "blur", torch.full((1, 1, 1, 1), -5.0))
    assert b.shape == x.shape and float(b.mean()) == pytest.approx(float(x.mean()), rel=0.02)
    assert float(b[..., 20, 20]) < 1.0 and float(b[..., 0, 0]) > 0.0
    with pytest.raises(ConfigError, match="mean input"):
        make_baseline(x, "mean", torch.zeros(1, 1, 1, 1))


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet-lite0", "densenet121"])
def test_gradcam_reads_the_declared_earlier_stages(backbone):
    """At 128 px the last map is 4 x 4; the declared stages are 8 x 8 (1/16) and 16 x 16 (1/8), and
    a map from them has as many distinct cells (it can point 4x finer)."""
    model = create(backbone, num_classes=2, in_channels=1).eval()
    x = torch.randn(1, 1, 128, 128)
    for level, cells in ((None, 4), ("1/16", 8), ("1/8", 16)):
        module, to_input = model.cam_module(level)
        seen = {}

        def grab(m, a, o, seen=seen, to_input=to_input):
            seen.update(s=(a[0] if to_input else o).shape[2:])

        hook = module.register_forward_hook(grab)
        with torch.no_grad():
            model(x)
        hook.remove()
        assert tuple(seen["s"]) == (cells, cells)
    coarse = saliency(model, x, 1, "gradcam", task="binary")
    fine = saliency(model, x, 1, "gradcam@1/8", task="binary")
    assert coarse.shape == fine.shape == (128, 128)
    assert bool(torch.isfinite(fine).all()) and float(fine.min()) >= 0


def test_predict_refuses_the_mean_baseline_without_the_runs_check(tmp_path):
    """`ig@mean` needs the mean input the check recorded: refused before any image is read."""
    from medtl.predict.folder import _check_options

    with pytest.raises(ConfigError, match="saliency-check"):
        _check_options(4, "ig@mean", tmp_path)
    assert _check_options(4, "ig@blur", tmp_path) == (
        "ig@blur", {"method": "ig@blur", "why": "named by the user", "source": "given on the command line"})
    with pytest.raises(ConfigError, match="one method"):
        _check_options(4, "ig,occlusion", tmp_path)
