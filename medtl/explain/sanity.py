"""Sanity checks for saliency maps: cascading model-parameter randomization (Adebayo et al. 2018).

The model's parameter groups are re-initialised one after another from the head down (head,
last stage, ..., stem; :meth:`medtl.models.Classifier.param_groups`). After each step every
sampled input's map is compared with the trained model's map by Spearman rank correlation
(scipy) and SSIM (scikit-image, on maps scaled to [0, 1]). A map that still looks the same once
the network has been scrambled shows the image, not the model.

**The rule** (:data:`RULE`): a method passes when the mean Spearman correlation is below 0.5 by
the time half of the parameter groups (rounded up) are random. A map that vanishes (a constant)
counts as correlation 0: it has changed.

>>> import torch
>>> from medtl.models import create
>>> model = create("resnet18", num_classes=2, in_channels=1)
>>> [name for name, _ in cascade(model)][:3]
['head', 'stage4', 'stage3']
>>> edges = lambda m, x, t: np.abs(np.diff(x[0, 0].numpy(), axis=0, append=0))  # ignores the model
>>> check = sanity_check(edges, model, [torch.randn(1, 1, 16, 16)], [1])
>>> check["passed"], check["spearman"][0]
(False, 1.0)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["RULE", "cascade", "similarity", "sanity_check"]

RULE = ("passed when the mean Spearman rank correlation with the trained model's map is below 0.5 once half of "
        "the parameter groups (rounded up), from the head down, are re-initialised")  # fmt: skip
THRESHOLD = 0.5


def _reinitialise(model: nn.Module, params: Sequence[nn.Parameter]) -> None:
    wanted = {id(p) for p in params}
    done: set[int] = set()
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if id(p) in wanted]
        if not own:
            continue
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()  # the layer's own initialisation (batch norm: statistics too)
            done.update(id(p) for p in module.parameters(recurse=False))
        else:
            for p in own:
                with torch.no_grad():
                    p.normal_(0.0, 0.02)
                done.add(id(p))
    missed = wanted - done
    if missed:
        raise AssertionError(f"bug: {len(missed)} parameters were not re-initialised")


def cascade(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Copies of ``model`` (a :class:`~medtl.models.Classifier`) with its parameter groups
    re-initialised cumulatively from the head down: yields ``(group just randomised, model)``;
    the same copy is changed in place, so use each before asking for the next."""
    scrambled = copy.deepcopy(model).eval()
    groups = list(scrambled.param_groups().items())[::-1]
    for step, (name, params) in enumerate(groups):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + step)
            _reinitialise(scrambled, params)
        yield name, scrambled


def _scaled(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    span = float(np.ptp(a))
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


def similarity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(Spearman, SSIM)`` of two maps; a constant map correlates 0 with anything.

    >>> a = np.arange(64.0).reshape(8, 8)
    >>> [round(v, 3) for v in similarity(a, a)], similarity(a, np.zeros((8, 8)))[0]
    ([1.0, 1.0], 0.0)
    """
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if float(np.ptp(a)) == 0.0 or float(np.ptp(b)) == 0.0:
        rho = 0.0
    else:
        rho = float(spearmanr(a.ravel(), b.ravel()).statistic)
    win = min(7, *a.shape)
    win -= 1 - win % 2  # odd
    ssim = float(structural_similarity(_scaled(a), _scaled(b), data_range=1.0, win_size=win)) if win >= 3 else math.nan
    return (0.0 if math.isnan(rho) else rho), ssim


def sanity_check(
    map_fn: Callable[[nn.Module, torch.Tensor, int], np.ndarray],
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    targets: Sequence[int],
    *,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Cascading randomization of ``model`` for one method.

    ``map_fn(model, x, target)`` returns the map of one input; ``inputs`` (each (1, C, *spatial))
    and ``targets`` are the sample. Returns ``{"layers": [...], "spearman": [mean per step],
    "spearman_sd", "ssim", "n", "checked_at": index of the step the rule reads, "passed", "rule"}``.
    Inputs whose trained map is empty (a constant) are left out: an empty map "changes" into
    anything, so it would pass without being tested. With none left the method does not pass,
    and ``note`` says why.
    """
    trained = [map_fn(model, x, t) for x, t in zip(inputs, targets, strict=True)]
    kept = [k for k, m in enumerate(trained) if float(np.ptp(m)) > 0.0]
    empty = len(trained) - len(kept)
    trained = [trained[k] for k in kept]
    inputs, targets = [inputs[k] for k in kept], [targets[k] for k in kept]
    if not kept:
        return {"layers": [], "spearman": [], "spearman_sd": [], "ssim": [], "n": 0, "checked_at": None,
                "passed": False, "rule": RULE,
                "note": f"the trained model's maps are empty on all {empty} sampled inputs: nothing to test"}  # fmt: skip
    layers, rho_mean, rho_sd, ssim_mean = [], [], [], []
    for name, scrambled in cascade(model, seed):
        pairs = [similarity(ref, map_fn(scrambled, x, t)) for ref, x, t in zip(trained, inputs, targets, strict=True)]
        rho = np.array([p[0] for p in pairs])
        ssim = np.array([p[1] for p in pairs])
        layers.append(name)
        rho_mean.append(round(float(rho.mean()), 4))
        rho_sd.append(round(float(rho.std()), 4))
        ssim_mean.append(round(float(np.nanmean(ssim)), 4) if np.isfinite(ssim).any() else None)
        if progress is not None:
            progress()
    at = math.ceil(len(layers) / 2) - 1
    out = {"layers": layers, "spearman": rho_mean, "spearman_sd": rho_sd, "ssim": ssim_mean, "n": len(inputs),
           "checked_at": at, "passed": bool(rho_mean[at] < THRESHOLD), "rule": RULE}  # fmt: skip
    if empty:
        out["note"] = f"{empty} sampled input(s) left out: their trained map is empty"
    return out
