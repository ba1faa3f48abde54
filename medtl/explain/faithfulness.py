"""Is the map faithful to the model? The deletion curve (Petsiuk et al. 2018, RISE).

The most salient voxels are replaced by the baseline (the black input) in ``steps`` equal parts
and the calibrated probability of the target is read after each; the area under that curve
(fraction deleted on the x-axis, 0 to 1) is low when the map found what the model uses. The same
curve with the voxels in random order is the reference: a map is faithful when its area is below
the random one.

>>> import numpy as np
>>> prob = lambda batch: batch.reshape(len(batch), -1).mean(1)  # "probability" = mean brightness
>>> x = np.zeros((1, 4, 4), np.float32); x[0, :2] = 1.0
>>> smap = x[0].copy()
>>> c = deletion_curve(prob, x, smap, np.zeros_like(x), steps=4)
>>> [round(float(v), 3) for v in c], round(auc(c), 3)
([0.5, 0.25, 0.0, 0.0, 0.0], 0.125)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["deletion_curve", "random_deletion_curve", "auc"]


def _curve(prob: Callable[[np.ndarray], np.ndarray], x: np.ndarray, order: np.ndarray, baseline: np.ndarray,
           steps: int, batch_size: int) -> np.ndarray:  # fmt: skip
    c = x.shape[0]
    flat_x = x.reshape(c, -1)
    flat_b = np.broadcast_to(baseline, x.shape).reshape(c, -1)
    n = flat_x.shape[1]
    cuts = [round(n * k / steps) for k in range(steps + 1)]
    out = []
    for first in range(0, len(cuts), batch_size):
        batch = []
        for cut in cuts[first : first + batch_size]:
            img = flat_x.copy()
            img[:, order[:cut]] = flat_b[:, order[:cut]]
            batch.append(img.reshape(x.shape))
        out.append(np.asarray(prob(np.stack(batch)), np.float64).reshape(-1))
    return np.concatenate(out)


def deletion_curve(
    prob: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    saliency: np.ndarray,
    baseline: np.ndarray,
    *,
    steps: int = 16,
    batch_size: int = 16,
) -> np.ndarray:
    """The target's probability after deleting 0, 1/steps, ..., all of the voxels, most salient
    first. ``prob`` maps a batch (B, C, *spatial) to B probabilities; ``x`` is one input
    (C, *spatial); ``saliency`` has its spatial shape; every channel of a voxel goes at once."""
    order = np.argsort(-np.asarray(saliency, np.float64).reshape(-1), kind="stable")
    return _curve(prob, x, order, baseline, steps, batch_size)


def random_deletion_curve(
    prob: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    baseline: np.ndarray,
    *,
    steps: int = 16,
    repeats: int = 2,
    seed: int = 0,
    batch_size: int = 16,
) -> np.ndarray:
    """The mean deletion curve over ``repeats`` random voxel orders (seeded): the reference."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(x.shape[1:]))
    curves = [_curve(prob, x, rng.permutation(n), baseline, steps, batch_size) for _ in range(repeats)]
    return np.mean(curves, axis=0)


def auc(curve: np.ndarray) -> float:
    """Area under a deletion curve sampled at equal steps from 0 to 1 (trapezoid rule)."""
    c = np.asarray(curve, np.float64)
    return float(((c[1:] + c[:-1]) / 2).sum() / (len(c) - 1))
