"""The shortcut check: how much of a saliency map's mass lies inside the anatomy.

A classifier that looks at a laterality marker, a burned-in label or the collimator edge instead
of the patient can still score well (Zech et al. 2018, PLOS Medicine; DeGrave et al. 2021, Nature
Machine Intelligence). Without a lesion mask one can still ask where the map's mass lies: inside
the body, or outside it.

* :func:`body_mask` — the body, found from the image alone (:data:`BODY_RULE`);
* :func:`anatomy_share` — the share of the map's positive mass inside it, and the share of the
  image it covers (a map spread evenly scores that share, not 1);
* :func:`outside_anatomy` — the per-image mark (:data:`SHORTCUT_RULE`);
* :func:`summarize_shares` — run-level median and marked share, with CIs that resample patients.

Arrays in, numbers out: numpy, scipy and scikit-image only.

>>> import numpy as np
>>> image = np.zeros((8, 8)); image[2:7, 2:7] = 0.8; image[0, 7] = 1.0  # body and a corner marker
>>> smap = np.zeros((8, 8)); smap[0, 7] = 3.0; smap[4, 4] = 1.0
>>> inside, area = anatomy_share(smap, body_mask(image))
>>> inside, round(area, 3), outside_anatomy(inside)
(0.25, 0.391, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "BODY_RULE",
    "SHORTCUT_THRESHOLD",
    "SHORTCUT_RULE",
    "body_mask",
    "anatomy_share",
    "outside_anatomy",
    "summarize_shares",
]

#: How :func:`body_mask` finds the body, in words for a report.
BODY_RULE = ("the body: pixels brighter than Otsu's threshold, the largest connected region, holes filled (in a "
             "volume, also slice by slice); where the image does not split into body and background (Otsu's "
             "effectiveness below 0.75, or a region under a fifth of the image) all of it counts")

#: An image is marked when less than this share of its map's positive mass lies inside the body.
SHORTCUT_THRESHOLD = 0.5

#: The per-image mark of :func:`outside_anatomy`, in words for a report.
SHORTCUT_RULE = "marked when less than half of the map's mass lies inside the anatomy"


MIN_EFFECTIVENESS = 0.75  # Gaussian noise scores 2/π ≈ 0.64, two clean modes 1
MIN_BODY = 0.2


def _effectiveness(img: np.ndarray, above: np.ndarray) -> float:
    """Otsu's separability η: between-class over total variance (1 for two clean modes)."""
    w = float(above.mean())
    if w in (0.0, 1.0) or float(img.var()) == 0.0:
        return 0.0
    gap = float(img[above].mean() - img[~above].mean())
    return w * (1 - w) * gap * gap / float(img.var())


def body_mask(image: np.ndarray) -> np.ndarray:
    """The body in a grey image (2D or 3D, display range [0, 1], air dark): see :data:`BODY_RULE`.

    Otsu's threshold splits the grey values in two; the largest connected region (voxels sharing
    a face) drops markers, labels and noise; filling holes puts dark structures enclosed by the
    body, such as the lungs, back in. A volume is also filled slice by slice along each axis: the
    lungs of a chest CT reach the volume's edge through the airway, so in 3D alone they are no hole.
    A constant image has nothing to separate: all of it counts as anatomy.

    >>> ring = np.zeros((7, 7)); ring[1:6, 1:6] = 0.9; ring[3, 3] = 0.1
    >>> body_mask(ring).astype(int)[3].tolist(), int(body_mask(ring).sum())
    ([0, 1, 1, 1, 1, 1, 0], 25)
    >>> bool(body_mask(np.full((3, 3, 3), 0.4)).all())
    True
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    img = np.asarray(image, np.float64)
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"body_mask needs a non-empty 2D or 3D image, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise ValueError("body_mask needs finite grey values (the image has NaN or inf)")
    if float(np.ptp(img)) == 0.0:
        return np.ones(img.shape, bool)
    above = img > threshold_otsu(img)
    labels, n = ndimage.label(above)
    # a unimodal image (noise, a phantom without air around it) has no background to leave out
    if n == 0 or _effectiveness(img, above) < MIN_EFFECTIVENESS:
        return np.ones(img.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))
    if body.mean() < MIN_BODY:  # a bright lesion or marker alone, not a body
        return np.ones(img.shape, bool)
    if body.ndim == 3:
        for axis in range(3):
            body |= np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(body, axis, 0)], axis=axis)
    return body


def anatomy_share(saliency: np.ndarray, mask: np.ndarray) -> tuple[float | None, float]:
    """``(inside, area)``: the share of the map's positive mass inside ``mask``, and the share of
    the image ``mask`` covers. Negative and NaN values carry no mass (a signed map's negative part
    argues against the class, it does not point at it); a map with no positive mass gives
    ``inside = None``. ``area`` is what a map spread evenly over the image would score.

    >>> mask = np.zeros((4, 4), bool); mask[:2] = True
    >>> smap = np.zeros((4, 4)); smap[0, 0] = 3.0; smap[3, 3] = 1.0; smap[3, 0] = -5.0
    >>> anatomy_share(smap, mask), anatomy_share(-smap.clip(0), mask)
    ((0.75, 0.5), (None, 0.5))
    """
    s = np.asarray(saliency, np.float64)
    m = np.asarray(mask, bool)
    if s.shape != m.shape:
        raise ValueError(f"saliency has shape {s.shape} but mask has shape {m.shape}; they must match")
    area = float(m.mean()) if m.size else 0.0
    mass = np.where(s > 0, s, 0.0)  # NaN > 0 is False: NaN carries no mass
    total = float(mass.sum())
    if total <= 0.0:
        return None, area
    return float(mass[m].sum() / total), area


def outside_anatomy(inside: float | None) -> bool:
    """Whether an image is marked (:data:`SHORTCUT_RULE`); a map without mass is never marked.

    >>> outside_anatomy(0.3), outside_anatomy(0.5), outside_anatomy(None)
    (True, False, False)
    """
    return inside is not None and inside < SHORTCUT_THRESHOLD


def _weighted_medians(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Median of every column's sample, ``values[i]`` drawn ``w[i, j]`` times (integer counts):
    the same as ``np.median(np.repeat(values, w[:, j]))``, without building the repeats."""
    order = np.argsort(values, kind="stable")
    v, cw = values[order], np.cumsum(w[order], axis=0)
    total = cw[-1]
    # the expanded sample's p-th element (0-based) is the first sorted value whose cumulative count exceeds p
    lo = (cw <= np.floor((total - 1) / 2)).sum(0)
    hi = (cw <= np.floor(total / 2)).sum(0)
    return (v[lo] + v[hi]) / 2


def summarize_shares(
    inside: Sequence[float | None], patients: Sequence[Any], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Run-level figures of per-image ``inside`` shares: their median and the share of images
    marked (:func:`outside_anatomy`), each with a 95 % percentile bootstrap CI that resamples
    patients. Images without a share (None or NaN: a map with no positive mass) are left out and
    counted in ``n_empty``; with none left, values and CIs are None.

    >>> out = summarize_shares([0.9, 0.2, 0.8, None, 0.7], ["a", "a", "b", "b", "c"], n_boot=200)
    >>> out["median_inside"], out["marked_share"], out["n"], out["n_patients"], out["n_empty"]
    (0.75, 0.25, 4, 3, 1)
    >>> lo, hi = out["median_ci"]; bool(lo <= 0.75 <= hi)
    True
    """
    from ..evaluate.bootstrap import cluster_codes, percentile_ci, resample_weights

    if len(inside) != len(patients):
        raise ValueError(f"{len(inside)} shares but {len(patients)} patient ids; give one id per image")
    keep = [i for i, v in enumerate(inside) if v is not None and np.isfinite(v)]
    v = np.array([inside[i] for i in keep], np.float64)
    counts = {"n": int(v.size), "n_empty": len(inside) - int(v.size)}
    if v.size == 0:
        return {"median_inside": None, "median_ci": None, "marked_share": None, "marked_ci": None,
                **counts, "n_patients": 0, "rule": SHORTCUT_RULE}  # fmt: skip
    codes, k = cluster_codes([patients[i] for i in keep], len(v))
    marked = (v < SHORTCUT_THRESHOLD).astype(np.float64)
    med_reps, marked_reps = np.empty(n_boot), np.empty(n_boot)
    for first, w in resample_weights(codes, k, n_boot, seed):
        med_reps[first : first + w.shape[1]] = _weighted_medians(v, w)
        marked_reps[first : first + w.shape[1]] = (marked @ w) / w.sum(0)
    return {
        "median_inside": float(np.median(v)),
        "median_ci": percentile_ci(med_reps)[0],
        "marked_share": float(marked.mean()),
        "marked_ci": percentile_ci(marked_reps)[0],
        **counts,
        "n_patients": int(k),
        "rule": SHORTCUT_RULE,
    }
