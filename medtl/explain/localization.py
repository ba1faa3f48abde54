"""Does the map point at the lesion? Pointing game and IoU against a mask, with patient CIs.

The protocol follows CheXlocalize (Saporta et al. 2022, Nature Machine Intelligence): maps are
upsampled to the image's own grid and compared with the ground-truth mask there; only images
with a lesion count.

* **pointing game** — a hit when the map's maximum falls inside the mask (a map without a
  maximum, all equal, is a miss);
* **IoU** — of the mask and the map thresholded with Otsu's method (scikit-image) on the map's
  values, or at a fixed fraction of its maximum;
* **energy-based pointing game** — the share of the map's positive mass inside the mask (Wang et
  al. 2020, Score-CAM): unlike a hit, it sees how much of the map lies elsewhere.

All are means over images (for the energy score, those whose map has positive mass) with a
percentile bootstrap CI that resamples patients (:func:`summarize`), as every interval in medtl
does.

>>> import numpy as np
>>> mask = np.zeros((8, 8), bool); mask[2:5, 2:5] = True
>>> smap = np.zeros((8, 8)); smap[3, 3] = 1.0; smap[2:5, 2:5] += 0.5
>>> pointing_hit(smap, mask), round(iou(smap, mask)[0], 3)
(True, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .anatomy import anatomy_share
from .grid import peak_index

__all__ = ["pointing_hit", "iou", "energy_pointing", "summarize"]


def pointing_hit(saliency: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the map's maximum lies inside ``mask`` (same shape)."""
    peak = peak_index(saliency)
    return peak is not None and bool(np.asarray(mask, bool)[peak])


def iou(saliency: np.ndarray, mask: np.ndarray, threshold: str | float = "otsu") -> tuple[float, float | None]:
    """``(IoU, threshold value)`` of ``mask`` and the map above a threshold: ``"otsu"`` on the map's
    values, or a fraction of its maximum (``0.5``). A map without contrast selects nothing.

    >>> iou(np.zeros((4, 4)), np.ones((4, 4), bool))
    (0.0, None)
    """
    m = np.asarray(mask, bool)
    s = np.asarray(saliency, np.float64)
    if s.size == 0 or float(np.ptp(s)) == 0.0:
        return 0.0, None
    if threshold == "otsu":
        from skimage.filters import threshold_otsu

        cut = float(threshold_otsu(s))
    else:
        cut = float(threshold) * float(s.max())
    chosen = s > cut
    union = np.logical_or(chosen, m).sum()
    return (float(np.logical_and(chosen, m).sum() / union) if union else 0.0), cut


def energy_pointing(saliency: np.ndarray, mask: np.ndarray) -> float | None:
    """Energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the map's positive
    mass inside ``mask`` (same shape); ``None`` for a map with no positive mass. The same figure
    as the shortcut check's :func:`medtl.explain.anatomy.anatomy_share`, with a lesion for the body.

    >>> mask = np.zeros((4, 4), bool); mask[1:3, 1:3] = True
    >>> smap = np.zeros((4, 4)); smap[1, 1] = 3.0; smap[0, 0] = 1.0; smap[3, 3] = -2.0
    >>> energy_pointing(smap, mask), energy_pointing(np.zeros((4, 4)), mask)
    (0.75, None)
    """
    return anatomy_share(saliency, mask)[0]


def summarize(values: Sequence[float], patients: Sequence[Any], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean of per-image values with a 95 % percentile bootstrap CI over patients.

    >>> out = summarize([1.0, 0.0, 1.0, 1.0], ["a", "a", "b", "c"], n_boot=200)
    >>> out["value"], out["n"], out["n_patients"], len(out["ci"])
    (0.75, 4, 3, 2)
    """
    from ..evaluate.bootstrap import cluster_codes, percentile_ci, resample_weights

    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {"value": None, "ci": None, "n": 0, "n_patients": 0}
    codes, k = cluster_codes(list(patients), len(v))
    reps = np.empty(n_boot)
    for first, w in resample_weights(codes, k, n_boot, seed):
        reps[first : first + w.shape[1]] = (v @ w) / w.sum(0)
    ci, _ = percentile_ci(reps)
    return {"value": float(v.mean()), "ci": ci, "n": int(v.size), "n_patients": int(k)}
