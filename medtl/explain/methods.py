"""Saliency methods on captum, for 2D and 3D inputs, as one call: :func:`saliency`.

Every method explains the **log-odds** of the target's probability under the run's task
(:func:`log_odds`): for a softmax head ``z_t − logsumexp(z_j, j ≠ t)``, for a multi-label head
the finding's own logit. Calibration maps log-odds monotonically, so it changes a map's scale,
never its shape; the raw logit of one softmax class would also credit evidence that raises every
class alike.

Each map is on the network's input grid, one value per voxel, ``≥ 0`` = evidence *for* the
target:

* ``gradcam`` — captum's ``LayerGradCam`` on the last spatial feature map (after its
  activation: the input of the global pooling the registry declares,
  :attr:`medtl.models.BackboneSpec.cam_layer`), upsampled with
  ``LayerAttribution.interpolate`` (bilinear / trilinear);
* ``gradcam++`` — Chattopadhay et al. 2018 (captum has no Grad-CAM++): the layer's activations
  and gradients come from captum's ``LayerActivation`` and ``LayerGradientXActivation``;
* ``ig`` — integrated gradients from the all-black input (:func:`medtl.data.transforms.black_input`),
  summed over channels, positive part;
* ``smoothgrad`` — mean gradient magnitude under Gaussian noise of 15 % of the input's range
  (Smilkov et al. 2017), summed over channels;
* ``occlusion`` — the fall of the target's log-odds when a patch (1/8 of each axis, half
  overlapping; 1/4 tiling a volume) is set to the black input, positive part.

A method may name a variant after ``@``: Grad-CAM's layer (``gradcam@1/16``, ``gradcam@1/8``:
earlier stages, :data:`LAYERS`) and the baseline of integrated gradients and occlusion
(``ig@blur``, ``ig@mean``, :data:`BASELINES`). Which one a run shows by default is decided by
evidence on its validation images (:mod:`medtl.explain.choice`).

Test-time flips of the run apply: the pixel methods differentiate the flip-averaged output, the
layer methods average the maps of each flipped view, flipped back. Memory stays bounded on
volumes: integrated gradients, SmoothGrad and occlusion evaluate at most ``batch_size`` inputs
at a time.

>>> import torch
>>> from medtl.models import create
>>> model = create("resnet18", num_classes=2)
>>> x = torch.randn(1, 1, 32, 32)
>>> [tuple(saliency(model, x, 1, m, task="binary").shape) for m in ("gradcam", "occlusion")]
[(32, 32), (32, 32)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, suggest

__all__ = ["METHODS", "LAYER_METHODS", "LAYERS", "BASELINES", "Settings", "check_methods", "split_method", "log_odds",
           "LogOdds", "saliency", "integrated_gradients", "make_baseline"]  # fmt: skip

METHODS = ("gradcam", "gradcam++", "ig", "smoothgrad", "occlusion")
LAYER_METHODS = ("gradcam", "gradcam++")
BASELINE_METHODS = ("ig", "occlusion")
#: Grad-CAM's layers (``gradcam@1/8``): the last feature map and the earlier stages each backbone
#: declares (:attr:`medtl.models.BackboneSpec.cam_stages`).
LAYERS = ("1/32", "1/16", "1/8")
#: What integrated gradients and occlusion replace the image with (``ig@blur``): the all-black
#: input; the image blurred (Gaussian, σ a tenth of the image side), which removes detail but
#: keeps brightness; a constant at the mean of the images the baseline was set on.
BASELINES = ("black", "blur", "mean")
BLUR_SIGMA = 0.1


@dataclass(frozen=True)
class Settings:
    """How each method is run (the defaults are what ``medtl explain`` uses and documents).

    Attributes:
        batch_size: inputs evaluated at once by ``ig``, ``smoothgrad`` and ``occlusion``.
        ig_steps: integration steps (Gauss–Legendre) of ``ig``.
        smoothgrad_samples, smoothgrad_noise: noisy copies, and their standard deviation as a
            fraction of the input's value range.
        occlusion_window: the patch as a fraction of each axis in 2D (patches overlap by half:
            15 × 15 positions at 1/8); volumes use patches twice as large that tile (4 × 4 × 4
            positions), as a 3D grid of overlapping patches would cost thousands of passes.
        seed: SmoothGrad's noise.
    """

    batch_size: int = 16
    ig_steps: int = 32
    smoothgrad_samples: int = 16
    smoothgrad_noise: float = 0.15
    occlusion_window: float = 1 / 8
    seed: int = 0


def split_method(method: str) -> tuple[str, str | None]:
    """``"ig@blur"`` → ``("ig", "blur")``; a method without a variant has ``None``.

    >>> split_method("gradcam@1/8"), split_method("occlusion")
    (('gradcam', '1/8'), ('occlusion', None))
    """
    name, _, variant = method.partition("@")
    return name, (variant or None)


def _check_one(method: str) -> str:
    name, variant = split_method(method)
    if name not in METHODS:
        raise ConfigError(None, f"unknown saliency method '{name}'" + suggest(name, METHODS)
                          + f" (methods: {', '.join(METHODS)})")  # fmt: skip
    allowed = LAYERS if name in LAYER_METHODS else BASELINES if name in BASELINE_METHODS else ()
    if variant is not None and variant not in allowed:
        what = (f"takes a layer ({', '.join(LAYERS)})" if name in LAYER_METHODS else
                f"takes a baseline ({', '.join(BASELINES)})" if allowed else "has no variants")  # fmt: skip
        raise ConfigError(None, f"saliency method '{method}': {name} {what}" + suggest(variant, allowed))
    default = {**dict.fromkeys(LAYER_METHODS, "1/32"), **dict.fromkeys(BASELINE_METHODS, "black")}.get(name)
    return name if variant in (None, default) else f"{name}@{variant}"


def check_methods(methods: str | Sequence[str]) -> list[str]:
    """Method names, validated and canonical (a default variant is dropped: ``ig@black`` is ``ig``);
    ``"all"`` is every method. A comma-separated string is split.

    >>> check_methods("gradcam,ig@blur,gradcam@1/32")
    ['gradcam', 'ig@blur']
    >>> check_methods(["grad-cam"])
    Traceback (most recent call last):
    ...
    medtl.errors.ConfigError: unknown saliency method 'grad-cam'; did you mean 'gradcam'? (methods: gradcam, gradcam++, ig, smoothgrad, occlusion)
    """
    names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    if names == ["all"]:
        return list(METHODS)
    if not names:
        raise ConfigError(None, f"no saliency method given; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(_check_one(name) for name in names))


def log_odds(logits: torch.Tensor, task: str) -> torch.Tensor:
    """(B, K) log-odds of each output's probability: ``z_t − logsumexp_{j≠t} z_j`` under a softmax,
    the logit itself for a multi-label (sigmoid) head.

    >>> z = torch.tensor([[0.0, 2.0]])
    >>> log_odds(z, "binary").tolist(), log_odds(z, "multilabel").tolist()
    ([[-2.0, 2.0]], [[0.0, 2.0]])
    """
    if task == "multilabel" or logits.shape[1] == 1:
        return logits
    k = logits.shape[1]
    own = torch.eye(k, dtype=torch.bool, device=logits.device)
    others = logits.unsqueeze(1).expand(-1, k, -1).masked_fill(own, float("-inf"))
    return logits - torch.logsumexp(others, dim=2)


class LogOdds(nn.Module):
    """The function every method explains: a model's flip-averaged logits as :func:`log_odds`."""

    def __init__(self, model: nn.Module, task: str, flips: Sequence[int] = ()):
        super().__init__()
        self.model, self.task, self.flips = model, task, tuple(flips)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..train.inference import tta_logits

        return log_odds(tta_logits(self.model, x, self.flips), self.task)


def _spatial(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, t.dim()))


def _upsample(cam: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    from captum.attr import LayerAttribution

    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return LayerAttribution.interpolate(cam, tuple(size), interpolate_mode=mode)


def _gradcam(f: nn.Module, layer: nn.Module, x: torch.Tensor, target: int, to_input: bool) -> torch.Tensor:
    from captum.attr import LayerGradCam

    cam = LayerGradCam(f, layer).attribute(x, target=target, relu_attributions=True, attribute_to_layer_input=to_input)
    return _upsample(cam, x.shape[2:])


def _gradcam_pp(f: nn.Module, layer: nn.Module, x: torch.Tensor, target: int, to_input: bool) -> torch.Tensor:
    from captum.attr import LayerActivation, LayerGradientXActivation

    acts = LayerActivation(f, layer).attribute(x, attribute_to_layer_input=to_input).detach()
    grads = LayerGradientXActivation(f, layer, multiply_by_inputs=False).attribute(
        x, target=target, attribute_to_layer_input=to_input
    ).detach()
    dims = _spatial(acts)
    g2, g3 = grads.pow(2), grads.pow(3)
    denom = 2 * g2 + acts.sum(dims, keepdim=True) * g3
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    weights = (alpha * grads.clamp(min=0)).sum(dims, keepdim=True)
    cam = (weights * acts).sum(1, keepdim=True).clamp(min=0)
    return _upsample(cam, x.shape[2:])


def integrated_gradients(
    f: nn.Module, x: torch.Tensor, target: int, baseline: torch.Tensor, *, steps: int = 32, batch_size: int = 16
) -> tuple[torch.Tensor, float]:
    """Raw integrated-gradients attributions (the input's shape) and captum's convergence delta:
    by completeness, ``attributions.sum() ≈ f(x)[target] − f(baseline)[target]`` up to the delta.

    >>> f = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> x = torch.ones(1, 1, 2, 2)
    >>> attr, delta = integrated_gradients(f, x, 1, torch.zeros_like(x))
    >>> bool(torch.isclose(attr.sum(), (f(x) - f(torch.zeros_like(x)))[0, 1], atol=1e-5))
    True
    """
    from captum.attr import IntegratedGradients

    attr, delta = IntegratedGradients(f).attribute(
        x, baselines=baseline, target=target, n_steps=steps, internal_batch_size=batch_size,
        return_convergence_delta=True,
    )  # fmt: skip
    return attr.detach(), float(delta.abs().max())


def _smoothgrad(f: nn.Module, x: torch.Tensor, target: int, s: Settings) -> torch.Tensor:
    from captum.attr import NoiseTunnel, Saliency

    spread = float(x.max() - x.min()) or 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        attr = NoiseTunnel(Saliency(f)).attribute(
            x, nt_type="smoothgrad", nt_samples=s.smoothgrad_samples, nt_samples_batch_size=s.batch_size,
            stdevs=s.smoothgrad_noise * spread, target=target, abs=True,
        )  # fmt: skip
    return attr.detach().sum(1, keepdim=True)


def _occlusion(f: nn.Module, x: torch.Tensor, target: int, baseline: torch.Tensor, s: Settings) -> torch.Tensor:
    from captum.attr import Occlusion

    size = x.shape[2:]
    fraction = s.occlusion_window if len(size) == 2 else 2 * s.occlusion_window
    window = tuple(max(1, round(n * fraction)) for n in size)
    stride = tuple(max(1, w // 2) for w in window) if len(size) == 2 else window
    c = x.shape[1]
    attr = Occlusion(f).attribute(
        x, sliding_window_shapes=(c, *window), strides=(c, *stride), baselines=baseline, target=target,
        perturbations_per_eval=s.batch_size,
    )  # fmt: skip
    return attr.detach().mean(1, keepdim=True).clamp(min=0)


def _layer_map(model, method: str, x: torch.Tensor, target: int, task: str, flips: Sequence[int]) -> torch.Tensor:
    """A layer method, averaged over the run's flipped views (each flipped back); for an ensemble,
    averaged over its members (each member's map of its own output: one layer has no meaning
    across networks)."""
    if hasattr(model, "members"):
        maps = [_layer_map(m, method, x, target, task, flips) for m in model.members]
        return torch.stack(maps).mean(0)
    name, level = split_method(method)
    f = LogOdds(model, task)
    layer, to_input = model.cam_module(level)
    fn = _gradcam if name == "gradcam" else _gradcam_pp
    total = fn(f, layer, x, target, to_input)
    for axis in flips:
        total = total + fn(f, layer, x.flip(axis + 2), target, to_input).flip(axis + 2)
    return total / (1 + len(flips))


def make_baseline(x: torch.Tensor, kind: str | None, black: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """The baseline ``kind`` (:data:`BASELINES`; ``None`` is black) for one input ``x``
    (1, C, *spatial), broadcast to its shape. ``black`` is the network input of an all-black
    image, ``mean`` the per-channel mean input the ``"mean"`` baseline was set on (1, C, 1, ...).

    >>> x = torch.zeros(1, 1, 20, 20); x[..., 10, 10] = 1.0
    >>> b = make_baseline(x, "blur", torch.zeros(1, 1, 1, 1))
    >>> round(float(b.sum()), 3), float(b.max()) < 0.1
    (1.0, True)
    """
    if kind in (None, "black"):
        return black.to(x).expand_as(x).contiguous()
    if kind == "mean":
        if mean is None:
            raise ConfigError(None, "the 'mean' baseline needs the mean input it was set on (the run's saliency check)")
        return mean.to(x).expand_as(x).contiguous()
    from scipy.ndimage import gaussian_filter

    arr = x.detach().cpu().numpy()[0]
    sigma = [0] + [BLUR_SIGMA * n for n in arr.shape[1:]]
    return torch.from_numpy(gaussian_filter(arr.astype("float64"), sigma, mode="nearest")).to(x)[None].contiguous()


def saliency(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    method: str,
    *,
    task: str,
    flips: Sequence[int] = (),
    baseline: torch.Tensor | None = None,
    mean: torch.Tensor | None = None,
    settings: Settings | None = None,
) -> torch.Tensor:
    """The ``method`` map of one input ``x`` (1, C, *spatial) for output ``target``: a float tensor
    of shape ``spatial``, ``≥ 0``, on the network's input grid. ``model`` is a
    :class:`medtl.models.Classifier` (evaluated in eval mode); ``baseline`` (default zeros) is the
    black input, broadcast to ``x``; a method's variant (``ig@blur``, ``gradcam@1/8``) picks
    another baseline (:func:`make_baseline`; ``mean`` for ``@mean``) or layer; ``task`` is the
    run's (:mod:`medtl.tasks`).

    Raises:
        ConfigError: an unknown method (naming the choices).
    """
    check_methods([method])
    if x.dim() < 4 or x.shape[0] != 1:
        raise ValueError(f"saliency takes one input of shape (1, C, *spatial), not {tuple(x.shape)}")
    _, variant = split_method(method)
    if baseline is None or variant not in (None, "black"):
        base = make_baseline(x, variant, torch.zeros(1) if baseline is None else baseline, mean)
    else:
        base = baseline.to(x).expand_as(x).contiguous()
    x = x.detach().clone()
    was_training = model.training
    model.eval()  # batch statistics of one input would be noise; dropout would make maps random
    try:
        out = _attribute(model, x, target, method, task, flips, base, settings or Settings())
    finally:
        model.train(was_training)
    return torch.nan_to_num(out.detach()[0, 0].float(), nan=0.0, posinf=0.0, neginf=0.0)


def _attribute(model, x, target, method, task, flips, base, settings) -> torch.Tensor:
    name, _ = split_method(method)
    if name in LAYER_METHODS:
        out = _layer_map(model, method, x, target, task, flips)
    else:
        f = LogOdds(model, task, flips)
        if name == "ig":
            attr, _ = integrated_gradients(f, x, target, base, steps=settings.ig_steps, batch_size=settings.batch_size)
            out = attr.sum(1, keepdim=True).clamp(min=0)
        elif name == "smoothgrad":
            out = _smoothgrad(f, x, target, settings)
        else:
            out = _occlusion(f, x, target, base, settings)
    return out
