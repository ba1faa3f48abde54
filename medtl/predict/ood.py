"""Out-of-distribution scores from a run's embeddings: is this image like the training data?

The method (Lee et al., NeurIPS 2018, "A simple unified framework for detecting out-of-distribution
samples"; one layer, no input pre-processing):

1. The pooled penultimate features of the training images (after the run's test-time flips) give
   one mean per class (one mean overall for multi-label runs) and a covariance shared by the
   classes, shrunk towards a multiple of the identity by the Ledoit-Wolf rule (scikit-learn),
   because a few hundred images cannot estimate a 1,280 × 1,280 covariance.
2. An image's score is its Mahalanobis distance to the nearest class mean.
3. The flag threshold is the split-conformal 99% quantile (:func:`conformal_threshold`) of the
   scores of the validation images, which the statistics were *not* fitted on (training images
   score far lower: the fit overfits them). With at least 99 validation images, on average over
   their draw at most 1% of new in-distribution images are flagged; with fewer, about
   ``1 / (n + 1)`` are (:attr:`OODStats.expected_false_alarm`). It lies halfway between two
   neighbouring validation scores, never on one, so no image is flagged or not by floating-point
   noise. ``false_alarm`` records the rate on those images: in-sample, so near 0 by construction.
4. The false-alarm rate is *measured* on held-out in-distribution images that took part in
   neither step (the run's test split: :meth:`OODStats.measure_false_alarm`) and reported as
   "k of n" with an exact 95% interval (:func:`false_alarm_text`), never as a promise.

Features are L2-normalised first (``normalise``, the default since it ranked foreign images
better on validation data: ``benchmarks/bench_ood.py``): the direction of an embedding carries
the content, its length mostly contrast. Everything here is arrays in, numbers out: training writes
``ood.npz`` at the end of a run, and ``medtl calibrate-ood`` adds it to an older run.

>>> rng = np.random.default_rng(0)
>>> def like_training(n):  # embeddings point one way (ReLU features are positive)
...     return rng.normal(size=(n, 8)) + 3.0
>>> stats = fit_ood(like_training(200), np.zeros(200, int), like_training(100))
>>> inside, far = stats.scores(like_training(1)), stats.scores(np.full((1, 8), -3.0))
>>> bool(inside[0] < stats.threshold < far[0])
True
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["OODStats", "fit_ood", "save_ood", "read_ood", "conformal_threshold", "false_alarm_text", "OOD_FILE",
           "NORMALISE"]

#: The file in a run directory that holds the statistics.
OOD_FILE = "ood.npz"
#: Features are L2-normalised by default: chosen on validation halves of foreign sets in
#: benchmarks/bench_ood.py (mean AUROC 0.951 vs 0.880 unnormalised; docs/benchmarks.md).
NORMALISE = True


@dataclass
class OODStats:
    """Class means, a shared precision matrix and the flag threshold of a run's embeddings.

    Attributes:
        means: (K, F) class means of the (optionally normalised) training features.
        precision: (F, F) inverse of the shrunk shared covariance.
        threshold: scores above it are flagged.
        quantile: the validation quantile the threshold was set at.
        normalise: features are L2-normalised before scoring.
        n_fit, n_threshold: images the means/covariance and the threshold came from.
        false_alarm: share of the threshold images above the threshold (in-sample: the
            threshold was set on them, so it says nothing about new images).
        shrinkage: the Ledoit-Wolf shrinkage coefficient.
        fitted_on, threshold_on: which parts of the data they were (``train``, ``val``).
        n_tested, tested_flagged, tested_on: the measured false-alarm rate: held-out
            in-distribution images (the run's test split) scored after the fit, used for
            nothing else, and how many of them were flagged; ``None`` / ``0`` / ``""`` when
            not measured (statistics written before medtl measured it, or a run without a
            test split).
    """

    means: np.ndarray
    precision: np.ndarray
    threshold: float
    quantile: float = 0.99
    normalise: bool = False
    n_fit: int = 0
    n_threshold: int = 0
    false_alarm: float = 0.0
    shrinkage: float = 0.0
    fitted_on: str = "train"
    threshold_on: str = "val"
    method: str = "mahalanobis"
    extra: dict = field(default_factory=dict)
    n_tested: int = 0
    tested_flagged: int | None = None
    tested_on: str = ""

    def _features(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float64)
        if self.normalise:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance (N,) of each feature row to the nearest class mean; ``inf`` for a
        row that is not finite (it cannot be like the training data).

        >>> s = OODStats(np.zeros((1, 2)), np.eye(2), threshold=1.0)
        >>> s.scores(np.array([[3.0, 4.0], [np.nan, 0.0]])).tolist()
        [5.0, inf]
        """
        x = self._features(features)
        finite = np.isfinite(x).all(axis=1)
        x = np.where(finite[:, None], x, 0.0)
        # distances to each mean through a whitening factor computed once: float32 for the (N, F)
        # by (F, F) product that dominates (a 1,280-wide embedding), float64 elsewhere
        w, centres = self._whitening
        z = (x.astype(np.float32) @ w).astype(np.float64)
        d2 = np.sum(z * z, axis=1)[:, None] - 2.0 * (z @ centres.T) + np.sum(centres * centres, axis=1)[None, :]
        out = np.sqrt(np.maximum(d2, 0.0)).min(axis=1)
        return np.where(finite, out, np.inf)

    @cached_property
    def _whitening(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, means @ W)`` with ``W W^T`` = precision (eigen-decomposition, clipped at 0);
        computed on first use (the statistics are not changed after fitting)."""
        vals, vecs = np.linalg.eigh(np.asarray(self.precision, np.float64))
        w = vecs * np.sqrt(np.clip(vals, 0.0, None))
        return w.astype(np.float32), np.asarray(self.means, np.float64) @ w

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """``True`` where a score is above the threshold."""
        return np.asarray(scores) > self.threshold

    def measure_false_alarm(self, features: np.ndarray, on: str = "test") -> None:
        """Record how many of ``features`` (M, F), held-out in-distribution images used neither for
        the fit nor for the threshold, are flagged: the false-alarm rate new images of the same
        collection meet (the validation images' own rate is in-sample and always near 0).

        >>> s = OODStats(np.zeros((1, 1)), np.eye(1), threshold=1.5)
        >>> s.measure_false_alarm(np.array([[0.5], [1.0], [2.0], [0.1]]))
        >>> s.tested_flagged, s.n_tested, s.tested_on
        (1, 4, 'test')
        """
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or len(x) == 0:
            return
        self.tested_flagged = int(self.flags(self.scores(x)).sum())
        self.n_tested, self.tested_on = int(len(x)), on

    @property
    def expected_false_alarm(self) -> float | None:
        """The false-alarm rate the conformal threshold gives on average over draws of its
        ``n_threshold`` validation images: ``(n + 1 - k) / (n + 1)`` with ``k`` the order
        statistic kept (:func:`conformal_threshold`). With fewer than 99 images at the 0.99
        quantile the threshold lies just above the highest score and the rate is ``1 / (n + 1)``,
        far above 1 % (12 images: 8 %). ``None`` when the threshold images are not recorded.

        >>> OODStats(np.zeros((1, 1)), np.eye(1), 1.0, n_threshold=12).expected_false_alarm
        0.07692307692307693
        >>> round(OODStats(np.zeros((1, 1)), np.eye(1), 1.0, n_threshold=199).expected_false_alarm, 4)
        0.01
        """
        n = int(self.n_threshold)
        if n < 1:
            return None
        k = min(int(np.ceil((n + 1) * self.quantile)), n)
        return (n + 1 - k) / (n + 1)

    def false_alarm_ci(self, level: float = 0.95) -> tuple[float, float] | None:
        """The exact confidence interval of the measured false-alarm rate, or ``None`` when it was
        not measured.

        >>> s = OODStats(np.zeros((1, 1)), np.eye(1), 1.0, n_tested=40, tested_flagged=2)
        >>> [round(v, 3) for v in s.false_alarm_ci()], OODStats(np.zeros((1, 1)), np.eye(1), 1.0).false_alarm_ci()
        ([0.006, 0.169], None)
        """
        from ..evaluate.metrics import proportion_ci

        if self.tested_flagged is None or self.n_tested < 1:
            return None
        return proportion_ci(self.tested_flagged, self.n_tested, level)

    def describe(self) -> dict[str, Any]:
        """Everything but the arrays, for ``summary.json`` and model cards (with the measured
        false-alarm rate's 95 % interval when there is one)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("means", "precision")}
        d.update(classes=int(np.asarray(self.means).shape[0]), features=int(np.asarray(self.means).shape[1]))
        ci = self.false_alarm_ci()
        d.update(tested_rate=None if ci is None else self.tested_flagged / self.n_tested,
                 tested_ci95=None if ci is None else list(ci), expected_false_alarm=self.expected_false_alarm)
        return d


def fit_ood(
    fit_features: np.ndarray,
    fit_classes: np.ndarray | None,
    threshold_features: np.ndarray,
    *,
    quantile: float = 0.99,
    normalise: bool = NORMALISE,
    fitted_on: str = "train",
    threshold_on: str = "val",
) -> OODStats:
    """Fit class means and a shared Ledoit-Wolf covariance on ``fit_features`` (N, F), then set the
    threshold at ``quantile`` of the scores of ``threshold_features`` (M, F), held-out images.

    Args:
        fit_classes: the class of each fitting row (N,), or ``None`` for one mean (multi-label
            runs). A class with fewer than 2 rows joins the overall mean.
        quantile: of the held-out scores; 0.99 flags at most 1% of in-distribution images on
            average when there are at least 99 held-out images, about ``1 / (n + 1)`` with
            fewer (:attr:`OODStats.expected_false_alarm`); measure it with
            :meth:`OODStats.measure_false_alarm`.
        normalise: L2-normalise the features first.

    Raises:
        ConfigError: fewer than 2 fitting rows or no held-out row, or non-finite features.

    >>> rng = np.random.default_rng(1)
    >>> s = fit_ood(rng.normal(size=(50, 4)), None, rng.normal(size=(30, 4)))
    >>> s.means.shape, s.precision.shape, s.n_fit, s.n_threshold
    ((1, 4), (4, 4), 50, 30)
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(fit_features, np.float64)
    held = np.asarray(threshold_features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ConfigError(None, f"out-of-distribution statistics need at least 2 training images, not {len(x)}")
    if held.ndim != 2 or len(held) == 0:
        raise ConfigError(None, "out-of-distribution statistics need held-out (validation) images for the threshold")
    if not (np.isfinite(x).all() and np.isfinite(held).all()):
        raise ConfigError(None, "the run's features hold non-finite values; out-of-distribution statistics "
                          "cannot be fitted")  # fmt: skip
    probe = OODStats(np.zeros((1, x.shape[1])), np.eye(x.shape[1]), 0.0, normalise=normalise)
    x = probe._features(x)
    classes = np.zeros(len(x), int) if fit_classes is None else np.asarray(fit_classes).astype(int).ravel()
    values, counts = np.unique(classes, return_counts=True)
    kept = [v for v, n in zip(values, counts, strict=True) if n >= 2]
    means = np.stack([x[classes == v].mean(axis=0) for v in kept]) if kept else x.mean(axis=0, keepdims=True)
    centred = x.copy()
    for k, v in enumerate(kept):
        centred[classes == v] -= means[k]
    rest = ~np.isin(classes, kept)
    if rest.any():
        overall = x.mean(axis=0)
        centred[rest] -= overall
        if not kept:
            means = overall[None]
    lw = LedoitWolf(assume_centered=True).fit(centred)
    stats = OODStats(means=means, precision=lw.precision_, threshold=0.0, quantile=float(quantile),
                     normalise=normalise, n_fit=len(x), n_threshold=len(held), shrinkage=float(lw.shrinkage_),
                     fitted_on=fitted_on, threshold_on=threshold_on)  # fmt: skip
    held_scores = stats.scores(held)
    stats.threshold = conformal_threshold(held_scores, quantile)
    stats.false_alarm = float(np.mean(held_scores > stats.threshold))
    return stats


def conformal_threshold(scores: np.ndarray, quantile: float) -> float:
    """The split-conformal threshold of ``n`` held-out scores, applied as ``score > threshold``.

    The ``k = ceil((n + 1) * quantile)``-th smallest score is the last one not flagged: a new image
    exchangeable with the held-out ones is flagged with probability at most ``1 - quantile``, on
    average over draws of the held-out set (any single draw of a few hundred images still
    scatters: see docs/benchmarks.md). With fewer than ``1 / (1 - quantile) - 1`` images there
    is no such order statistic and none of them is flagged, but a new image is, with probability
    about ``1 / (n + 1)``: far more than ``1 - quantile`` (12 images: 8 %;
    :attr:`OODStats.expected_false_alarm`), which the run's measured rate then shows. The
    threshold lies halfway between that score and the next higher distinct one (:func:`medtl.evaluate.metrics.threshold_between`),
    so it equals no held-out score: an image on the threshold would be flagged or not by
    floating-point noise (its score differs in the last bits between batch sizes and devices).
    The held-out images flagged are the same as at the order statistic itself (what thresholds
    fitted before were, and stay: a stored one is never recomputed). Above the highest score,
    the gap below it is mirrored: ``max + (max - second highest) / 2``.

    Raises:
        ConfigError: no scores, NaN or infinite ones, or a quantile outside (0, 1].

    >>> conformal_threshold(np.arange(1, 200), 0.99)  # n = 199: between the 198th and 199th
    198.5
    >>> conformal_threshold(np.arange(1, 11), 0.99)   # too few: above the maximum, by half a gap
    10.5
    """
    from ..evaluate.metrics import threshold_between

    s = np.sort(np.asarray(scores, np.float64).ravel())
    if s.size == 0 or not np.isfinite(s).all():
        raise ConfigError(None, "the out-of-distribution threshold needs finite held-out scores")
    if not 0.0 < quantile <= 1.0:
        raise ConfigError(None, f"the quantile must be in (0, 1], not {quantile}")
    k = int(np.ceil((len(s) + 1) * quantile))
    kept = s[min(k, len(s)) - 1]  # the highest score not flagged
    above = s[s > kept]
    cut = float(above[0]) if above.size else np.inf  # the lowest score flagged
    t = threshold_between(s, cut)
    # threshold_between keeps "score >= cut" on the upper side; with no float strictly between
    # the two it returns the cut, which "score > t" would not flag: keep the old threshold then
    return t if t < cut else float(kept)


def _pct(value: float) -> str:
    """A share as a percentage number: whole percent, one decimal below 1 % (not "0" for 0.4 %)."""
    v = 100.0 * value
    return f"{v:.1f}" if 0 < v < 1 else f"{v:.0f}"


def false_alarm_text(stats: OODStats | None, why_not: str = "") -> str:
    """What the flag's false alarms are, as measured: "flags k of n held-out in-distribution
    images (r %, 95 % CI a–b %)", a warning when few validation images set the threshold (its
    expected rate is then well above ``1 - quantile``), or why nothing was measured
    (``why_not``, else the statistics predate the measurement). Never a promised rate.

    >>> s = OODStats(np.zeros((1, 1)), np.eye(1), 1.0, n_threshold=200, n_tested=40, tested_flagged=2,
    ...              tested_on="test")
    >>> false_alarm_text(s)
    'flags 2 of 40 held-out in-distribution images (test split) as unfamiliar (5 %, 95 % CI 0.6–17 %)'
    >>> false_alarm_text(None)
    'no out-of-distribution statistics: unfamiliar images are flagged by rule only, or not at all'
    """
    if stats is None:
        return "no out-of-distribution statistics: unfamiliar images are flagged by rule only, or not at all"
    ci = stats.false_alarm_ci()
    if ci is None:
        text = ("its false-alarm rate on new in-distribution images was not measured ("
                + (why_not or "statistics written before medtl measured it: `medtl calibrate-ood RUN DATA "
                   "--overwrite` measures it on the run's test images") + ")")  # fmt: skip
    else:
        k, n = int(stats.tested_flagged or 0), stats.n_tested
        part = f" ({stats.tested_on} split)" if stats.tested_on else ""
        text = (f"flags {k} of {n} held-out in-distribution images{part} as unfamiliar ({_pct(k / n)} %, "
                f"95 % CI {_pct(ci[0])}–{_pct(ci[1])} %)")  # fmt: skip
    expected = stats.expected_false_alarm
    if expected is not None and expected > 1.5 * (1.0 - stats.quantile):
        # the conformal guarantee needs >= 1/(1-q) - 1 validation images; below that it is 1/(n+1)
        text += (f"; a threshold set on only {stats.n_threshold} validation images flags about "
                 f"{_pct(expected)} % of in-distribution images on average")  # fmt: skip
    return text


def save_ood(run_dir: str | os.PathLike, stats: OODStats) -> Path:
    """Write ``run_dir/ood.npz`` atomically (arrays as float32, the rest as JSON; no pickle)."""
    from ..rundir import write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, means=np.asarray(stats.means, np.float32), precision=np.asarray(stats.precision, np.float32),
                        info=np.array(json.dumps(stats.describe())))  # fmt: skip
    return write_bytes(Path(run_dir) / OOD_FILE, buf.getvalue())


def read_ood(run_dir: str | os.PathLike) -> OODStats | None:
    """The statistics stored in a run, or ``None`` for a run trained before they existed.

    Raises:
        ConfigError: the file exists but cannot be read.
    """
    path = Path(run_dir) / OOD_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
            means, precision = z["means"].astype(np.float64), z["precision"].astype(np.float64)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(path, f"unreadable out-of-distribution statistics ({exc}); rebuild them with "
                          "`medtl calibrate-ood`") from None  # fmt: skip
    info.pop("classes", None)
    info.pop("features", None)
    known = set(OODStats.__dataclass_fields__) - {"means", "precision"}
    return OODStats(means=means, precision=precision, **{k: v for k, v in info.items() if k in known})
