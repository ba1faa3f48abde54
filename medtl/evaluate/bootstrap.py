"""Percentile bootstrap confidence intervals, resampling patients (clusters) rather than rows.

A bootstrap resample is drawn as integer weights: each patient is drawn ``count`` times
(multinomial counts over patients, i.e. patients drawn with replacement) and every row of that
patient gets weight ``count``. Rows of one patient move together, so correlated rows (several
images, series or visits of one person) do not pass for independent evidence. Without a patient
column every row is its own cluster (the ordinary row bootstrap).

Every metric is then a *weighted* metric of the original rows, computed for a whole chunk of
resamples at once instead of one resample at a time:

* confusion counts, Brier and calibration bins are sums of weights over cells
  (group x bin x label x prediction): one sparse-matrix product per chunk gives all of them for
  every group of every attribute;
* weighted AUROC is the Mann-Whitney statistic: negatives sorted by score once, a cumulative sum
  of their weights gives, for every positive, the weight of negatives scored below it (ties count
  one half), for all resamples together; weighted average precision reuses the same sums.

Resample ``b`` uses its own generator (``SeedSequence(seed).spawn``), so results do not depend on
the chunk size and the first 100 resamples of ``n_boot=1000`` are those of ``n_boot=100``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 400); s = y + rng.normal(0, 1, 400)
>>> out = bootstrap_ci(y, s, threshold=0.5, n_boot=200, seed=1)
>>> lo, hi = out["ci"]["auroc"]
>>> bool(lo < out["estimate"]["auroc"] < hi), out["n_boot"], out["unit"]
(True, 200, 'row')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import EvaluationError
from .metrics import _as_binary, _as_scores, _is_probability, bin_index, binary_metrics

__all__ = [
    "BOOT_METRICS",
    "cluster_codes",
    "resample_weights",
    "weighted_auroc",
    "weighted_average_precision",
    "group_replicates",
    "percentile_ci",
    "bootstrap_ci",
]

#: Metrics computed on every resample by :func:`group_replicates`.
BOOT_METRICS = (
    "prevalence", "auroc", "auprc", "accuracy", "balanced_accuracy", "tpr", "tnr",
    "ppv", "npv", "fpr", "fnr", "brier", "ece",
)  # fmt: skip

#: Default bound on the weight matrix of one chunk (elements, float64): about 64 MB.
CHUNK_ELEMENTS = 1 << 23


def _is_missing(value: Any) -> bool:
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return isinstance(value, str) and not value.strip()


def cluster_codes(cluster: Sequence[Any] | None, n: int) -> tuple[np.ndarray, int]:
    """Integer cluster code per row (0..k-1) and k; every row its own cluster when ``cluster`` is None.

    Missing ids (None/NaN/"") each become a cluster of their own, since nothing links them.

    >>> codes, k = cluster_codes(["p1", "p2", "p1", None], 4)
    >>> codes.tolist(), k
    ([0, 1, 0, 2], 3)
    """
    if cluster is None:
        return np.arange(n, dtype=np.intp), n
    arr = np.asarray(cluster)
    if arr.shape == (n,) and arr.dtype.kind in "iub":  # integer ids: nothing can be missing
        _, first, codes = np.unique(arr, return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.intp)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        return rank[codes.ravel()], len(first)
    ids = np.asarray(cluster, dtype=object)
    if ids.shape != (n,):
        raise EvaluationError(None, f"cluster ids have shape {ids.shape}, expected ({n},)")
    missing = np.array([_is_missing(v) for v in ids], dtype=bool)
    keys = np.array([str(v) for v in ids], dtype=object)
    _, first, codes = np.unique(keys, return_index=True, return_inverse=True)
    # number clusters in order of first appearance, so codes do not depend on the ids' sort order
    rank = np.empty(len(first), dtype=np.intp)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    codes = rank[codes.ravel()]
    k = len(first)
    if missing.any():
        codes = codes.copy()
        codes[missing] = k + np.arange(int(missing.sum()))
        k += int(missing.sum())
        # compact: the clusters only the missing rows had are now unused
        used, codes = np.unique(codes, return_inverse=True)
        k = len(used)
    return codes.astype(np.intp), int(k)


def _resample_counts(n_clusters: int, seeds: Sequence[np.random.SeedSequence]) -> np.ndarray:
    """How often each cluster is drawn, one column per resample: shape (n_clusters, len(seeds))."""
    counts = np.empty((len(seeds), n_clusters), dtype=np.float64)
    for j, ss in enumerate(seeds):
        draws = np.random.default_rng(ss).integers(0, n_clusters, size=n_clusters)
        counts[j] = np.bincount(draws, minlength=n_clusters)
    return np.ascontiguousarray(counts.T)


def resample_weights(
    codes: np.ndarray, n_clusters: int, n_boot: int, seed: int = 0, chunk: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Bootstrap weights per row, ``chunk`` resamples at a time: yields ``(first, W)``, W (n_rows, chunk).

    ``W[i, j]`` is how many times row ``i``'s cluster was drawn in resample ``first + j``.

    >>> codes = np.array([0, 0, 1, 2])
    >>> [(first, w.shape) for first, w in resample_weights(codes, 3, n_boot=5, chunk=2)]
    [(0, (4, 2)), (2, (4, 2)), (4, (4, 1))]
    >>> w = next(resample_weights(codes, 3, n_boot=1))[1]
    >>> bool(w[0, 0] == w[1, 0]), float(w[[0, 2, 3], 0].sum())
    (True, 3.0)
    """
    n = len(codes)
    if chunk is None:
        chunk = max(1, min(n_boot, CHUNK_ELEMENTS // max(n, 1)))
    seeds = np.random.SeedSequence(seed).spawn(n_boot)
    identity = n_clusters == n and bool(np.array_equal(codes, np.arange(n)))
    for first in range(0, n_boot, chunk):
        counts = _resample_counts(n_clusters, seeds[first : first + chunk])
        yield first, (counts if identity else counts[codes])


class _RankPlan:
    """Sorted positives and negatives of one set of rows, ready to score weight matrices."""

    def __init__(self, y: np.ndarray, score: np.ndarray, rows: np.ndarray):
        ys = y[rows]
        pos, neg = rows[ys == 1], rows[ys == 0]
        self.pos = pos[np.argsort(score[pos], kind="stable")]
        self.neg = neg[np.argsort(score[neg], kind="stable")]
        ps, ns = score[self.pos], score[self.neg]
        self.lo = np.searchsorted(ns, ps, "left")  # negatives strictly below each positive
        self.hi = np.searchsorted(ns, ps, "right")  # ... and those tied with it
        self.ties = bool((self.lo != self.hi).any())
        self.plo = np.searchsorted(ps, ps, "left")  # positives strictly below each positive

    def __call__(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = w.shape[1]
        cn = np.zeros((len(self.neg) + 1, b))
        np.cumsum(w[self.neg], axis=0, out=cn[1:])
        wp = w[self.pos]
        cp = np.zeros((len(self.pos) + 1, b))
        np.cumsum(wp, axis=0, out=cp[1:])
        w_neg, w_pos = cn[-1], cp[-1]
        below = cn[self.lo]
        # negatives at or above each positive's score: the false positives of its threshold
        fp_at = w_neg - below
        if self.ties:
            below = 0.5 * (below + cn[self.hi])
        with np.errstate(divide="ignore", invalid="ignore"):
            auroc = np.einsum("ij,ij->j", wp, below) / (w_pos * w_neg)
            tp_at = w_pos - cp[self.plo]
            prec = tp_at / (tp_at + fp_at)
            # a threshold with no weight at or above it has zero weight of its own: contributes 0
            prec[~np.isfinite(prec)] = 0.0
            auprc = np.einsum("ij,ij->j", wp, prec) / w_pos
        auroc[~(w_pos * w_neg > 0)] = np.nan
        auprc[~(w_pos > 0)] = np.nan
        return auroc, auprc


def _weighted_rank(y: Any, score: Any, weights: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    yv = _as_binary(y)
    sv = _as_scores(score, len(yv))
    w = np.asarray(weights, dtype=np.float64)
    single = w.ndim == 1
    w2 = w[:, None] if single else w
    if w2.shape[0] != len(yv) or w2.ndim != 2:
        raise EvaluationError(None, f"weights have shape {w.shape}, expected ({len(yv)},) or ({len(yv)}, B)")
    if (w2 < 0).any() or not np.isfinite(w2).all():
        raise EvaluationError(None, "weights must be finite and non-negative")
    auroc, auprc = _RankPlan(yv, sv, np.arange(len(yv)))(np.ascontiguousarray(w2))
    return auroc, auprc, single


def weighted_auroc(y: Sequence[float], score: Sequence[float], weights: Any) -> float | np.ndarray:
    """AUROC with sample weights, for one weight vector (n,) or many at once (n, B).

    Equals ``sklearn.metrics.roc_auc_score(y, score, sample_weight=w)`` (ties count one half);
    NaN where a weight column leaves one class only.

    >>> weighted_auroc([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], [1, 1, 1, 1])
    0.75
    >>> weighted_auroc([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], [[1, 2], [0, 1], [1, 1], [1, 0]]).round(3).tolist()
    [1.0, 0.667]
    """
    auroc, _, single = _weighted_rank(y, score, weights)
    return float(auroc[0]) if single else auroc


def weighted_average_precision(y: Sequence[float], score: Sequence[float], weights: Any) -> float | np.ndarray:
    """Average precision with sample weights, for (n,) or (n, B) weights.

    Equals ``sklearn.metrics.average_precision_score(y, score, sample_weight=w)``; NaN where a
    weight column has no positive weight.

    >>> weighted_average_precision([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], [1, 1, 1, 1])
    0.8333333333333333
    """
    _, auprc, single = _weighted_rank(y, score, weights)
    return float(auprc[0]) if single else auprc


@dataclass
class _Partition:
    name: str
    codes: np.ndarray  # group index of each row
    n_groups: int
    rank: np.ndarray  # bool per group: compute AUROC/AUPRC for it
    plans: list  # _RankPlan or None per group


class _CellPlan:
    """One sparse matrix whose product with the weights gives every sum the threshold metrics need."""

    def __init__(self, y, score, pred, partitions: list[_Partition], n_bins: int, prob: bool):
        import scipy.sparse as sp

        n = len(y)
        self.nb = nb = n_bins if prob else 1
        self.prob = prob
        bins = bin_index(np.clip(score, 0, 1), n_bins) if prob else np.zeros(n, dtype=np.intp)
        rows, cols, vals = [], [], []
        self.offsets = []
        base = 0
        arange = np.arange(n)
        for part in partitions:
            g = part.codes
            size_w = part.n_groups * nb * 4
            cell = base + ((g * nb + bins) * 2 + y) * 2 + pred
            rows.append(cell), cols.append(arange), vals.append(np.ones(n))
            entry = [base, base + size_w]
            base += size_w
            if prob:
                rows.append(base + g * nb + bins), cols.append(arange), vals.append(score.astype(np.float64))
                base += part.n_groups * nb
                rows.append(base + g), cols.append(arange), vals.append((score - y) ** 2)
                entry += [base, base + part.n_groups]
                base += part.n_groups
            self.offsets.append(entry)
        self.matrix = sp.csr_array(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(base, n)
        )
        self.matrix.sum_duplicates()

    def metrics(self, w: np.ndarray, partitions: list[_Partition]) -> list[dict[str, np.ndarray]]:
        sums = self.matrix @ w  # (cells, B)
        b = w.shape[1]
        nb = self.nb
        out = []
        for part, entry in zip(partitions, self.offsets, strict=True):
            c = sums[entry[0] : entry[1]].reshape(part.n_groups, nb, 2, 2, b)
            tn, fp = c[:, :, 0, 0].sum(1), c[:, :, 0, 1].sum(1)
            fn, tp = c[:, :, 1, 0].sum(1), c[:, :, 1, 1].sum(1)
            n = tn + fp + fn + tp
            with np.errstate(divide="ignore", invalid="ignore"):
                m = {
                    "n": n,
                    "prevalence": (tp + fn) / n,
                    "accuracy": (tp + tn) / n,
                    "tpr": tp / (tp + fn),
                    "tnr": tn / (tn + fp),
                    "fnr": fn / (tp + fn),
                    "fpr": fp / (tn + fp),
                    "ppv": tp / (tp + fp),
                    "npv": tn / (tn + fn),
                }
                m["balanced_accuracy"] = (m["tpr"] + m["tnr"]) / 2
                if self.prob:
                    sum_p = sums[entry[1] : entry[2]].reshape(part.n_groups, nb, b)
                    sum_y = c[:, :, 1].sum(2)  # (G, nb, B)
                    m["ece"] = np.abs(sum_p - sum_y).sum(1) / n
                    m["brier"] = sums[entry[2] : entry[3]] / n
                else:
                    m["ece"] = m["brier"] = np.full_like(n, np.nan)
            out.append(m)
        return out


def group_replicates(
    y: Sequence[float],
    score: Sequence[float],
    partitions: Mapping[str, tuple[np.ndarray, int] | tuple[np.ndarray, int, Sequence[bool]]],
    *,
    threshold: float = 0.5,
    cluster: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 10,
    chunk: int | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Every metric of :data:`BOOT_METRICS` for every group, on the same ``n_boot`` resamples.

    Args:
        y, score: 0/1 labels and scores, shape (n,).
        partitions: name -> ``(codes, n_groups)`` or ``(codes, n_groups, rank)``: ``codes[i]`` is the
            group (0..n_groups-1) of row ``i``; ``rank[g]`` False skips AUROC/AUPRC of group ``g``
            (NaN), the costly part, for groups that will not be judged.
        threshold: rows with ``score >= threshold`` are predicted positive.
        cluster: patient (cluster) id per row; None resamples rows.
        n_boot, seed: number of resamples and the seed they derive from.
        chunk: resamples per chunk (default: bounded by :data:`CHUNK_ELEMENTS`).

    Returns:
        name -> metric -> array (n_groups, n_boot), NaN where a metric is undefined in a resample
        (e.g. no positives drawn). Because all groups share each resample, differences between
        groups taken resample by resample are bootstrap draws of the gap itself.

    >>> y = np.array([0, 1] * 50); s = np.linspace(0, 1, 100)
    >>> reps = group_replicates(y, s, {"all": (np.zeros(100, int), 1)}, n_boot=20)
    >>> reps["all"]["auroc"].shape
    (1, 20)
    """
    yv = _as_binary(y).astype(np.intp)
    sv = _as_scores(score, len(yv))
    n = len(yv)
    pred = (sv >= threshold).astype(np.intp)
    parts = []
    for name, spec in partitions.items():
        codes = np.asarray(spec[0], dtype=np.intp)
        n_groups = int(spec[1])
        rank = np.ones(n_groups, bool) if len(spec) < 3 else np.asarray(spec[2], dtype=bool)
        if codes.shape != (n,) or (codes.size and (codes.min() < 0 or codes.max() >= n_groups)):
            raise EvaluationError(None, f"partition '{name}': codes must be 0..{n_groups - 1} for each of {n} rows")
        plans = [_RankPlan(yv, sv, np.flatnonzero(codes == g)) if rank[g] else None for g in range(n_groups)]
        parts.append(_Partition(name, codes, n_groups, rank, plans))
    cells = _CellPlan(yv, sv, pred, parts, n_bins, _is_probability(sv))
    codes_c, k = cluster_codes(cluster, n)
    out = {p.name: {m: np.full((p.n_groups, n_boot), np.nan) for m in ("n", *BOOT_METRICS)} for p in parts}
    for first, w in resample_weights(codes_c, k, n_boot, seed, chunk):
        sl = slice(first, first + w.shape[1])
        for part, m in zip(parts, cells.metrics(w, parts), strict=True):
            for key, arr in m.items():
                out[part.name][key][:, sl] = arr
            for g, plan in enumerate(part.plans):
                if plan is not None:
                    auroc, auprc = plan(w)
                    out[part.name]["auroc"][g, sl] = auroc
                    out[part.name]["auprc"][g, sl] = auprc
    return out


def percentile_ci(
    replicates: np.ndarray, level: float = 0.95, max_undefined: float = 0.1
) -> tuple[list[float] | None, str | None]:
    """Percentile interval of bootstrap replicates, ignoring undefined (NaN) ones.

    Returns ``([low, high], note)``: ``note`` says how many resamples were undefined, if any;
    the interval is ``None`` when more than ``max_undefined`` of them were.

    >>> ci, note = percentile_ci(np.arange(101.0))
    >>> [round(v, 6) for v in ci], note
    ([2.5, 97.5], None)
    >>> percentile_ci(np.array([1.0, np.nan, np.nan, 2.0]))
    (None, 'undefined in 2 of 4 resamples')
    """
    arr = np.asarray(replicates, dtype=float)
    ok = np.isfinite(arr)
    n_bad = int(arr.size - ok.sum())
    note = f"undefined in {n_bad} of {arr.size} resamples" if n_bad else None
    if ok.sum() == 0 or n_bad > max_undefined * arr.size:
        return None, note
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(arr[ok], [tail, 100 - tail])
    return [float(lo), float(hi)], note


def bootstrap_ci(
    y: Sequence[float],
    score: Sequence[float],
    *,
    threshold: float = 0.5,
    cluster: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    n_bins: int = 10,
) -> dict[str, Any]:
    """Point estimates (:func:`~medtl.evaluate.metrics.binary_metrics`) with percentile bootstrap CIs.

    Resamples patients when ``cluster`` (one id per row) is given, rows otherwise.

    Returns:
        ``{"estimate": {...}, "ci": {metric: [low, high] | None}, "notes": {metric: why},
        "n_boot", "seed", "level", "method": "percentile", "unit": "patient" | "row",
        "n_clusters"}``. A CI is ``None`` where the estimate is undefined, or where the metric is
        undefined in more than 10 % of the resamples.

    >>> out = bootstrap_ci([0, 1] * 20, [0.2, 0.8] * 20, n_boot=50, cluster=[i // 2 for i in range(40)])
    >>> out["ci"]["auroc"], out["unit"], out["n_clusters"]
    ([1.0, 1.0], 'patient', 20)
    """
    yv = _as_binary(y)
    sv = _as_scores(score, len(yv))
    if n_boot < 1:
        raise EvaluationError(None, f"n_boot must be at least 1, got {n_boot}")
    estimate = binary_metrics(yv, sv, threshold, n_bins=n_bins)
    _, k = cluster_codes(cluster, len(yv))
    reps = group_replicates(
        yv, sv, {"all": (np.zeros(len(yv), np.intp), 1)}, threshold=threshold, cluster=cluster,
        n_boot=n_boot, seed=seed, n_bins=n_bins,
    )["all"]  # fmt: skip
    ci: dict[str, list[float] | None] = {}
    notes: dict[str, str] = {}
    for key in BOOT_METRICS:
        if estimate.get(key) is None:
            ci[key] = None
            continue
        ci[key], note = percentile_ci(reps[key][0], level)
        if note:
            notes[key] = note
    return {
        "estimate": estimate,
        "ci": ci,
        "notes": notes,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": float(level),
        "method": "percentile",
        "unit": "row" if cluster is None else "patient",
        "n_clusters": int(k),
    }
