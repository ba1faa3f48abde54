"""Threshold and ranking metrics for binary, multi-class and multi-label predictions.

Every value comes from scikit-learn (``roc_auc_score``, ``average_precision_score``,
``confusion_matrix``, ``brier_score_loss`` ...); what this module adds is the bookkeeping around
them: a metric that is undefined on the rows given (AUROC with one class present, PPV with no
predicted positives, Brier/ECE on scores that are not probabilities) comes back as ``None`` and
its reason goes into ``notes``, instead of a NaN, a warning or a crash.

Conventions:

* a row is predicted positive when ``score >= threshold`` (the convention of
  ``sklearn.metrics.roc_curve``, so thresholds read off a ROC curve mean the same here);
* ``tpr`` is sensitivity (recall), ``tnr`` specificity, ``fnr = 1 - tpr`` the miss rate
  (under-diagnosis), ``fpr = 1 - tnr``;
* the expected calibration error (ECE) uses ``n_bins`` equal-width bins on [0, 1] (default 10),
  binned exactly like ``sklearn.calibration.calibration_curve(strategy="uniform")``, and is
  ``sum_k n_k / n * |mean score_k - observed rate_k|``.

>>> m = binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], threshold=0.5)
>>> m["auroc"], m["tpr"], m["tnr"], m["ppv"]
(0.75, 0.5, 0.5, 0.5)
>>> binary_metrics([1, 1], [0.2, 0.9])["auroc"] is None
True
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from ..errors import EvaluationError

__all__ = [
    "METRICS",
    "HIGHER_IS_BETTER",
    "binary_metrics",
    "multiclass_metrics",
    "multilabel_metrics",
    "classification_metrics",
    "choose_threshold",
    "threshold_between",
    "expected_calibration_error",
    "reliability_diagram",
    "bin_index",
    "proportion_ci",
]

#: Binary metrics reported by :func:`binary_metrics`, with what each one is.
METRICS: dict[str, str] = {
    "auroc": "area under the ROC curve",
    "auprc": "average precision (area under the precision-recall curve)",
    "accuracy": "fraction of rows predicted correctly at the threshold",
    "balanced_accuracy": "mean of TPR and TNR",
    "tpr": "sensitivity, recall: TP / (TP + FN)",
    "tnr": "specificity: TN / (TN + FP)",
    "ppv": "positive predictive value, precision: TP / (TP + FP)",
    "npv": "negative predictive value: TN / (TN + FN)",
    "fpr": "false-positive rate: FP / (FP + TN)",
    "fnr": "false-negative rate, miss rate (under-diagnosis): FN / (FN + TP)",
    "brier": "mean squared error of the score as a probability",
    "ece": "expected calibration error, equal-width bins",
    "prevalence": "fraction of positive rows",
}

#: Direction of each metric: ``True`` when a higher value is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "auroc": True,
    "auprc": True,
    "accuracy": True,
    "balanced_accuracy": True,
    "tpr": True,
    "tnr": True,
    "ppv": True,
    "npv": True,
    "fpr": False,
    "fnr": False,
    "brier": False,
    "ece": False,
}


def _as_binary(y: Any, name: str = "labels") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise EvaluationError(None, f"{name} must be one-dimensional, got shape {arr.shape}")
    try:
        values = arr.astype(float)
    except (TypeError, ValueError):
        raise EvaluationError(None, f"{name} must be 0/1, got values such as {arr[:3].tolist()}") from None
    if np.isnan(values).any():
        raise EvaluationError(None, f"{name} hold {int(np.isnan(values).sum())} NaN value(s); drop those rows first")
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        found = sorted({float(v) for v in values[bad]})[:5]
        raise EvaluationError(None, f"{name} must be 0/1 for a binary metric, found {found}")
    return values.astype(np.int8)


def _as_scores(score: Any, n: int, name: str = "scores") -> np.ndarray:
    try:
        arr = np.asarray(score, dtype=float)
    except (TypeError, ValueError):
        raise EvaluationError(None, f"{name} must be numbers") from None
    if arr.shape != (n,):
        raise EvaluationError(None, f"{name} have shape {arr.shape}, labels ({n},)")
    if not np.isfinite(arr).all():
        raise EvaluationError(None, f"{name} hold {int((~np.isfinite(arr)).sum())} NaN or infinite value(s)")
    return arr


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def _is_probability(score: np.ndarray) -> bool:
    return bool(score.size) and float(score.min()) >= 0.0 and float(score.max()) <= 1.0


def bin_index(prob: Any, n_bins: int = 10) -> np.ndarray:
    """The equal-width bin (0 .. n_bins-1) of each probability, as ``calibration_curve`` bins them.

    Bin ``k`` holds ``(k/n, (k+1)/n]`` (bin 0 also holds 0), the same rule as
    ``sklearn.calibration.calibration_curve(strategy="uniform")``.

    >>> bin_index([0.0, 0.1, 0.15, 0.95, 1.0], n_bins=10).tolist()
    [0, 0, 1, 9, 9]
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(prob, dtype=float)).astype(np.intp)


def reliability_diagram(y: Sequence[float], prob: Sequence[float], n_bins: int = 10) -> dict[str, list]:
    """Data of a reliability diagram: per equal-width bin, mean probability, observed rate, count.

    Empty bins have ``None`` for their mean and rate (and count 0), so the lists always have
    ``n_bins`` entries.

    >>> d = reliability_diagram([0, 1, 1, 1], [0.05, 0.15, 0.85, 0.95], n_bins=2)
    >>> d["count"], d["mean_prob"], d["observed"]
    ([2, 2], [0.1, 0.9], [0.5, 1.0])
    """
    yv = np.asarray(y, dtype=float)
    pv = np.asarray(prob, dtype=float)
    idx = bin_index(pv, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=pv, minlength=n_bins)
    sum_y = np.bincount(idx, weights=yv, minlength=n_bins)
    mean = [None if c == 0 else round(float(s / c), 12) for s, c in zip(sum_p, count, strict=True)]
    rate = [None if c == 0 else round(float(s / c), 12) for s, c in zip(sum_y, count, strict=True)]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {
        "bin_lower": [round(float(e), 12) for e in edges[:-1]],
        "bin_upper": [round(float(e), 12) for e in edges[1:]],
        "mean_prob": mean,
        "observed": rate,
        "count": [int(c) for c in count],
    }


def expected_calibration_error(y: Sequence[float], prob: Sequence[float], n_bins: int = 10) -> float | None:
    """Expected calibration error with ``n_bins`` equal-width bins (default 10).

    ``sum_k (n_k / n) * |mean prob in bin k - fraction positive in bin k|``. For multi-label
    outputs pass the flattened labels and probabilities. ``None`` when there are no rows or a
    probability lies outside [0, 1].

    >>> expected_calibration_error([0, 1, 1, 1], [0.05, 0.15, 0.85, 0.95], n_bins=2)
    0.25
    >>> expected_calibration_error([0, 1], [0.0, 2.0]) is None
    True
    """
    yv = np.asarray(y, dtype=float).ravel()
    pv = np.asarray(prob, dtype=float).ravel()
    if pv.size == 0 or not _is_probability(pv) or yv.shape != pv.shape:
        return None
    idx = bin_index(pv, n_bins)
    gap = np.bincount(idx, weights=pv - yv, minlength=n_bins)
    return round(float(np.abs(gap).sum() / pv.size), 15)


def binary_metrics(
    y: Sequence[float], score: Sequence[float], threshold: float = 0.5, *, n_bins: int = 10
) -> dict[str, Any]:
    """All binary metrics of :data:`METRICS` at ``threshold``; undefined ones are ``None``.

    Args:
        y: 0/1 labels (bools and 0.0/1.0 are fine), shape (n,).
        score: scores, shape (n,); higher means more likely positive. Probabilities are needed
            only for ``brier`` and ``ece``.
        threshold: rows with ``score >= threshold`` are predicted positive.
        n_bins: equal-width bins of the ECE.

    Returns:
        A JSON-ready dict: ``n``, ``n_pos``, ``n_neg``, ``threshold`` and every key of
        :data:`METRICS` (a float or ``None``), plus ``notes`` mapping each ``None`` metric to why.

    Raises:
        EvaluationError: labels not 0/1, scores not finite numbers, or lengths that differ.

    >>> m = binary_metrics([0, 1, 1], [0.2, 0.7, 0.4], threshold=0.9)
    >>> m["tpr"], m["ppv"], m["notes"]["ppv"]
    (0.0, None, 'no predicted positives at threshold 0.9')
    """
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        confusion_matrix,
        roc_auc_score,
    )

    yv = _as_binary(y)
    sv = _as_scores(score, len(yv))
    n = int(yv.size)
    n_pos = int(yv.sum())
    out: dict[str, Any] = {"n": n, "n_pos": n_pos, "n_neg": n - n_pos, "threshold": float(threshold)}
    notes: dict[str, str] = {}
    if n == 0:
        for key in METRICS:
            out[key] = None
            notes[key] = "no rows"
        out["notes"] = notes
        return out
    out["prevalence"] = n_pos / n
    pred = (sv >= threshold).astype(np.int8)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(yv, pred, labels=[0, 1]).ravel())
    one_class = n_pos == 0 or n_pos == n
    if one_class:
        why = f"only {'positive' if n_pos else 'negative'} rows"
        out["auroc"] = None
        notes["auroc"] = why
    else:
        out["auroc"] = float(roc_auc_score(yv, sv))
    if n_pos == 0:
        out["auprc"] = None
        notes["auprc"] = "no positive rows"
    else:
        out["auprc"] = float(average_precision_score(yv, sv))
    out["accuracy"] = (tp + tn) / n
    out["tpr"] = _ratio(tp, tp + fn)
    out["tnr"] = _ratio(tn, tn + fp)
    out["fnr"] = _ratio(fn, tp + fn)
    out["fpr"] = _ratio(fp, tn + fp)
    out["ppv"] = _ratio(tp, tp + fp)
    out["npv"] = _ratio(tn, tn + fn)
    for key in ("tpr", "fnr"):
        if out[key] is None:
            notes[key] = "no positive rows"
    for key in ("tnr", "fpr"):
        if out[key] is None:
            notes[key] = "no negative rows"
    if out["ppv"] is None:
        notes["ppv"] = f"no predicted positives at threshold {threshold:g}"
    if out["npv"] is None:
        notes["npv"] = f"no predicted negatives at threshold {threshold:g}"
    if out["tpr"] is None or out["tnr"] is None:
        out["balanced_accuracy"] = None
        notes["balanced_accuracy"] = notes.get("tpr") or notes["tnr"]
    else:
        out["balanced_accuracy"] = (out["tpr"] + out["tnr"]) / 2
    if _is_probability(sv):
        out["brier"] = float(brier_score_loss(yv, sv, pos_label=1))
        out["ece"] = expected_calibration_error(yv, sv, n_bins)
    else:
        out["brier"] = out["ece"] = None
        notes["brier"] = notes["ece"] = "scores are not probabilities in [0, 1]"
    out["notes"] = notes
    return out


def calibration_fit(y: Sequence[float], prob: Sequence[float]) -> dict[str, Any]:
    """Calibration slope and intercept (calibration-in-the-large) of probabilities, as TRIPOD+AI
    and Van Calster et al. (J Clin Epidemiol 2016) define them.

    The slope is ``b`` of the logistic regression ``logit P(y=1) = a + b·logit(p)`` (1 when the
    spread of the probabilities is right, below 1 when they are too extreme); the intercept is
    ``a`` of ``logit P(y=1) = a + logit(p)`` with the slope fixed at 1 (0 when the probabilities
    are right on average, below 0 when they are too high). Both are maximum-likelihood fits by
    Newton's method.

    Returns:
        ``{"slope": float | None, "intercept": float | None, "note": str | None}``: ``None``
        with a note where a fit has no finite answer (one class only, or scores that separate
        the classes perfectly, where the slope grows without bound).

    >>> fit = calibration_fit([0, 0, 1, 1, 0, 1, 1, 0], [0.1, 0.4, 0.6, 0.9, 0.3, 0.45, 0.8, 0.7])
    >>> round(fit["slope"], 2), round(fit["intercept"], 2)
    (1.55, -0.17)
    """
    yv = _as_binary(y)
    pv = np.clip(_as_scores(prob, len(yv)), 1e-7, 1 - 1e-7)
    if yv.size == 0 or yv.min() == yv.max():
        return {"slope": None, "intercept": None, "note": "only one class: no calibration slope or intercept"}
    x = np.log(pv / (1 - pv))
    design = np.column_stack([np.ones_like(x), x])
    coef = _newton_logistic(yv, design, np.zeros(2), offset=np.zeros_like(x))
    a = _newton_logistic(yv, design[:, :1], np.zeros(1), offset=x)
    note = None
    if coef is None:
        note = "the scores separate the classes perfectly: the calibration slope is unbounded"
    return {"slope": None if coef is None else float(coef[1]), "intercept": None if a is None else float(a[0]),
            "note": note}  # fmt: skip


def net_benefit(y: Sequence[float], prob: Sequence[float], thresholds: Sequence[float]) -> dict[str, list[float]]:
    """Net benefit of acting on ``prob >= t`` at each threshold probability ``t`` (Vickers and
    Elkin, Med Decis Making 2006): ``TP/n - FP/n · t/(1 - t)``, beside treating everyone
    (``prevalence - (1 - prevalence) · t/(1 - t)``) and no one (0). A model is useful at ``t``
    where it beats both.

    >>> nb = net_benefit([0, 0, 1, 1], [0.1, 0.6, 0.7, 0.9], [0.5])
    >>> nb["model"], nb["treat_all"]
    ([0.25], [0.0])
    """
    yv = _as_binary(y)
    pv = _as_scores(prob, len(yv))
    t = np.asarray(thresholds, dtype=float)
    if np.any((t <= 0) | (t >= 1)):
        raise EvaluationError(None, "net benefit needs threshold probabilities strictly between 0 and 1")
    n = max(len(yv), 1)
    odds = t / (1 - t)
    act = pv[None, :] >= t[:, None]
    tp = (act & (yv[None, :] == 1)).sum(axis=1) / n
    fp = (act & (yv[None, :] == 0)).sum(axis=1) / n
    prevalence = float(yv.mean()) if len(yv) else 0.0
    return {"threshold": t.tolist(), "model": (tp - fp * odds).tolist(),
            "treat_all": (prevalence - (1 - prevalence) * odds).tolist()}  # fmt: skip


def _newton_logistic(y: np.ndarray, design: np.ndarray, beta: np.ndarray, *, offset: np.ndarray):
    """Maximum-likelihood logistic coefficients, or ``None`` when they diverge (separation)."""
    for _ in range(100):
        eta = np.clip(design @ beta + offset, -35, 35)
        mu = 1 / (1 + np.exp(-eta))
        w = mu * (1 - mu)
        hessian = design.T @ (design * w[:, None])
        try:
            step = np.linalg.solve(hessian, design.T @ (y - mu))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if np.abs(beta).max() > 1e3:
            return None
        if np.abs(step).max() < 1e-10:
            return beta
    return None


def choose_threshold(y: Sequence[float], score: Sequence[float], rule: str = "youden", target: float = 0.9) -> float:
    """Operating threshold chosen on validation rows, applied as ``score >= threshold``.

    ``rule="youden"`` maximises TPR - FPR (Youden's J); ``rule="sensitivity"`` takes the most
    specific cut whose TPR is at least ``target``. Either criterion is constant between two
    neighbouring distinct scores, so the rule picks which rows are positive, and the threshold is
    set halfway between the lowest score decided positive and the highest decided negative
    (:func:`threshold_between`): never a validation score itself, because an image on the
    threshold would be decided by floating-point noise (its probability differs in the last bits
    between batch sizes, worker counts and devices). When every row is decided positive it goes
    halfway to 0 below the lowest probability (for scores that are not probabilities, as far
    below as half the gap to the next score). Tied scores always share one side. Sensitivity and
    specificity on the validation rows are those of ``score >= lowest positive score``, which was
    the threshold itself before: runs trained then keep the one they stored (it is read as
    written, never recomputed).

    Raises:
        EvaluationError: one class only, NaN or infinite scores, an unknown rule or a target
            outside (0, 1].

    >>> choose_threshold([0, 0, 1, 1], [0.125, 0.5, 0.375, 0.875])  # 0.875 positive, 0.5 not
    0.6875
    >>> choose_threshold([0, 0, 1, 1], [0.125, 0.5, 0.375, 0.875], rule="sensitivity", target=1.0)
    0.25
    >>> choose_threshold([0, 1, 1], [0.5, 0.5, 0.5])  # one score: all positive, halfway to 0
    0.25
    """
    from sklearn.metrics import roc_curve

    yv = _as_binary(y)
    sv = _as_scores(score, len(yv))
    if yv.min(initial=1) == yv.max(initial=0):
        raise EvaluationError(None, "choosing a threshold needs both classes among the rows")
    fpr, tpr, thr = roc_curve(yv, sv, drop_intermediate=False)
    # the first point of roc_curve is the +inf threshold (nothing positive): never a usable choice
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]
    if rule == "youden":
        cut = float(thr[int(np.argmax(tpr - fpr))])
    elif rule == "sensitivity":
        if not 0.0 < target <= 1.0:
            raise EvaluationError(None, f"target sensitivity must be in (0, 1], got {target}")
        cut = float(thr[int(np.argmax(tpr >= target - 1e-12))])
    else:
        raise EvaluationError(None, f"unknown threshold rule '{rule}'; choose from youden, sensitivity")
    # the cut is the lowest score decided positive: move off it to the middle of its gap
    return threshold_between(sv, cut, bounds=(0.0, 1.0) if _is_probability(sv) else None)


def threshold_between(scores: Sequence[float], cut: float, *, bounds: tuple[float, float] | None = None) -> float:
    """A threshold that splits ``scores`` exactly as ``score >= cut`` does, equal to none of them:
    halfway between the highest score below ``cut`` and the lowest one at or above it.

    An image whose score sits on a threshold is decided by floating-point noise: the same image
    gets scores that differ in their last bits at another batch size, worker count or device
    (summation order), and lands on either side. Halfway is as far from both neighbours as the
    split allows, so the same image gets the same answer.

    At the ends there is one neighbour. When every score is at or above ``cut`` the threshold
    goes halfway from the lowest score to the lower bound of ``bounds`` (0 for probabilities);
    when every score is below, halfway from the highest to the upper bound. Without bounds, or
    with the end score on its bound, the gap to the nearest other distinct score is mirrored
    (``min - gap / 2``, ``max + gap / 2``: as far outside as an inner threshold sits from its
    neighbours), the gap being ``max(|score|, 1)`` when all scores are equal. Two scores one
    float apart have no number between them: then the upper one is returned (the same split).

    Raises:
        EvaluationError: no scores, NaN or infinite ones, or a NaN ``cut``.

    >>> threshold_between([0.25, 0.5, 0.5, 0.75], 0.5)   # 0.25 below, the tied 0.5s above
    0.375
    >>> threshold_between([0.25, 0.5, 0.75], 0.1, bounds=(0.0, 1.0))  # all above: halfway to 0
    0.125
    >>> threshold_between([1.0, 2.0, 4.0], 9.0)          # all below, unbounded: 4 + (4 - 2) / 2
    5.0
    """
    s = np.unique(np.asarray(scores, dtype=float).ravel())  # sorted, ties merged
    if s.size == 0 or not np.isfinite(s).all() or np.isnan(cut):
        raise EvaluationError(None, "a threshold needs finite scores (and a cut that is a number)")
    i = int(np.searchsorted(s, cut, side="left"))  # s[:i] below the cut, s[i:] at or above it
    if 0 < i < s.size:
        lo, hi = float(s[i - 1]), float(s[i])
        mid = (lo + hi) / 2  # one rounding; the other form where the sum would overflow
        mid = mid if np.isfinite(mid) else lo + (hi - lo) / 2
        return mid if lo < mid < hi else hi
    gap = float(s[1] - s[0] if i == 0 else s[-1] - s[-2]) if s.size > 1 else max(abs(float(s[0])), 1.0)
    if i == 0:  # every score decided at or above: go below the lowest
        low = float(s[0])
        bound = bounds[0] if bounds is not None and bounds[0] < low else None
        t = low - gap / 2 if bound is None else bound + (low - bound) / 2
        return t if t < low else low
    high = float(s[-1])  # every score below: go above the highest
    bound = bounds[1] if bounds is not None and bounds[1] > high else None
    t = high + gap / 2 if bound is None else high + (bound - high) / 2
    return t if t > high else float(np.nextafter(high, np.inf))


def _check_matrix(scores: Any, n: int) -> np.ndarray:
    arr = np.asarray(scores, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise EvaluationError(None, f"scores must have shape (n, classes) with n={n}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise EvaluationError(None, "scores hold NaN or infinite values")
    return arr


def multiclass_metrics(y: Sequence[int], scores: Any, *, n_bins: int = 10) -> dict[str, Any]:
    """Multi-class metrics: accuracy from argmax, macro AUROC/AUPRC, one-vs-rest per class.

    ``y`` holds class indices 0..K-1, ``scores`` is (n, K) (probabilities or logits). Per class,
    :func:`binary_metrics` of "class k vs rest" with the argmax prediction as the decision (so
    ``tpr`` of class k is its recall). Macro values average the classes where they are defined
    (which classes were left out is in ``notes``). ``ece`` is the top-label ECE (confidence of
    the argmax vs. whether it is right) and needs probabilities.

    >>> m = multiclass_metrics([0, 1, 2, 2], [[.8, .1, .1], [.2, .7, .1], [.1, .2, .7], [.5, .1, .4]])
    >>> m["accuracy"], m["macro_auroc"], m["per_class"][2]["tpr"]
    (0.75, 1.0, 0.5)
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    yv = np.asarray(y)
    try:
        yi = yv.astype(float)
    except (TypeError, ValueError):
        raise EvaluationError(None, "multi-class labels must be class indices 0..K-1") from None
    sv = _check_matrix(scores, len(yv))
    k = sv.shape[1]
    if np.isnan(yi).any() or (yi != np.round(yi)).any() or yi.min(initial=0) < 0 or yi.max(initial=0) >= k:
        raise EvaluationError(None, f"multi-class labels must be class indices 0..{k - 1}")
    yi = yi.astype(int)
    pred = sv.argmax(axis=1)
    out: dict[str, Any] = {"n": int(len(yi)), "n_classes": int(k), "notes": {}}
    out["accuracy"] = float(accuracy_score(yi, pred)) if len(yi) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when a class is never predicted; the value is still right
        out["balanced_accuracy"] = float(balanced_accuracy_score(yi, pred)) if len(yi) else None
    per_class = []
    for c in range(k):
        # the argmax decision as a 0/1 score, thresholded at 0.5, gives the one-vs-rest confusion counts
        m = binary_metrics((yi == c).astype(int), (pred == c).astype(float), threshold=0.5, n_bins=n_bins)
        ranking = binary_metrics((yi == c).astype(int), sv[:, c], threshold=0.5, n_bins=n_bins)
        for key in ("auroc", "auprc"):
            m[key] = ranking[key]
            m["notes"].pop(key, None)
            if key in ranking["notes"]:
                m["notes"][key] = ranking["notes"][key]
        for key in ("brier", "ece", "threshold"):
            m.pop(key, None)
            m["notes"].pop(key, None)
        per_class.append(m)
    out["per_class"] = per_class
    _macro(out, per_class, "class(es)")
    if _is_probability(sv):
        conf = sv.max(axis=1)
        out["ece"] = expected_calibration_error((pred == yi).astype(float), conf, n_bins)
    else:
        out["ece"] = None
        out["notes"]["ece"] = "scores are not probabilities in [0, 1]"
    return out


def _macro(out: dict[str, Any], parts: list[dict[str, Any]], what: str) -> None:
    """Macro AUROC / AUPRC over the parts where they are defined; the others are named in a note."""
    for key in ("auroc", "auprc"):
        vals = [m[key] for m in parts if m[key] is not None]
        missing = [i for i, m in enumerate(parts) if m[key] is None]
        out[f"macro_{key}"] = float(np.mean(vals)) if vals else None
        if missing:
            out["notes"][f"macro_{key}"] = f"{what} {missing} left out: {key} undefined"


def multilabel_metrics(
    y: Any, scores: Any, threshold: float | Sequence[float] = 0.5, *, n_bins: int = 10
) -> dict[str, Any]:
    """Multi-label metrics: :func:`binary_metrics` per label, plus macro AUROC/AUPRC and pooled ECE.

    ``y`` and ``scores`` are (n, L); ``threshold`` is one value or one per label. Rows with an
    unknown (NaN) label are left out of that label only (counted in its ``n``).

    >>> m = multilabel_metrics([[0, 1], [1, 1], [0, 0], [1, 0]], [[.2, .9], [.8, .6], [.3, .4], [.6, .2]])
    >>> m["macro_auroc"], m["per_label"][0]["tpr"]
    (1.0, 1.0)
    """
    yv = np.asarray(y, dtype=float)
    sv = _check_matrix(scores, len(yv))
    if yv.shape != sv.shape:
        raise EvaluationError(None, f"labels have shape {yv.shape}, scores {sv.shape}")
    n_labels = sv.shape[1]
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=float), (n_labels,))
    per_label = []
    for j in range(n_labels):
        known = ~np.isnan(yv[:, j])
        per_label.append(binary_metrics(yv[known, j], sv[known, j], float(thresholds[j]), n_bins=n_bins))
    out: dict[str, Any] = {"n": int(len(yv)), "n_labels": int(n_labels), "per_label": per_label, "notes": {}}
    _macro(out, per_label, "label(s)")
    known = ~np.isnan(yv)
    out["ece"] = expected_calibration_error(yv[known], sv[known], n_bins)
    if out["ece"] is None:
        out["notes"]["ece"] = "scores are not probabilities in [0, 1]"
    return out


def classification_metrics(
    y: Any, scores: Any, *, task: str | None = None, threshold: float | Sequence[float] = 0.5, n_bins: int = 10
) -> dict[str, Any]:
    """One door to the three metric sets: ``task`` is ``binary``, ``multiclass`` or ``multilabel``.

    Without ``task``: 1-D scores are binary, 2-D scores with 1-D labels multi-class, 2-D scores
    with 2-D labels multi-label. The result carries ``task``.

    >>> classification_metrics([0, 1], [0.3, 0.6])["task"]
    'binary'
    >>> classification_metrics([0, 1], [[0.7, 0.3], [0.4, 0.6]])["accuracy"]
    1.0
    """
    sv = np.asarray(scores, dtype=float)
    yv = np.asarray(y)
    if task is None:
        task = "binary" if sv.ndim == 1 else ("multilabel" if yv.ndim == 2 else "multiclass")
    if task == "binary":
        if isinstance(threshold, (list, tuple, np.ndarray)):
            raise EvaluationError(None, "a binary task takes one threshold")
        out = binary_metrics(yv, sv, float(threshold), n_bins=n_bins)
    elif task == "multiclass":
        out = multiclass_metrics(yv, sv, n_bins=n_bins)
    elif task == "multilabel":
        out = multilabel_metrics(yv, sv, threshold, n_bins=n_bins)
    else:
        raise EvaluationError(None, f"unknown task '{task}'; choose from binary, multiclass, multilabel")
    return {"task": task, **out}


def proportion_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) confidence interval of a proportion ``k`` of ``n``.

    Exact rather than Wilson because the proportions it serves (an out-of-distribution flag's
    false alarms) are near 0 with tens of images, where the normal-based intervals undercover.

    Raises:
        EvaluationError: ``n`` < 1, or ``k`` outside [0, n].

    >>> [round(v, 3) for v in proportion_ci(2, 40)]
    [0.006, 0.169]
    >>> proportion_ci(0, 10)[0], proportion_ci(10, 10)[1]
    (0.0, 1.0)
    """
    from scipy.stats import beta

    if n < 1 or not 0 <= k <= n:
        raise EvaluationError(None, f"a proportion needs 0 <= k <= n and n >= 1, not {k} of {n}")
    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high
