"""Calibration on validation rows: temperature scaling, Platt / vector scaling, and the choice.

A run calibrates with :func:`fit_calibration`, which compares, by cross-validated negative
log-likelihood on the validation rows, three maps of the logits ``z``:

* ``none`` — the raw outputs;
* ``temperature`` — ``z / T`` (one parameter; keeps every ranking; cannot move a base rate);
* ``platt`` (binary and multi-label) — ``a·z + b`` per output (binary: on the margin
  ``z1 - z0``), the intercept undoing a shifted base rate such as a class-weighted loss makes;
  ``vector`` (multi-class) — ``a_k·z_k + b_k`` per class.

The chosen map is refitted on all validation rows and stored in ``calibration.json``;
:func:`apply_calibration` applies it, then :func:`medtl.tasks.probabilities`. Temperature
scaling alone, as below, remains available to scripts.

Temperature scaling: one scalar T > 0 that divides the logits, fitted on validation rows.

Which likelihood is minimised follows from the shapes (or ``kind``):

* logits (n,), labels (n,) 0/1 -> ``sigmoid``: one logit per row (binary);
* logits (n, K), labels (n,) class indices -> ``softmax``: binary with 2 logits, or multi-class;
* logits (n, L), labels (n, L) 0/1 -> ``multilabel``: a sigmoid per output, one T shared by all
  outputs (NaN labels are unknown and left out).

T is found by minimising the mean negative log-likelihood over log T (so T stays positive) with
``scipy.optimize.minimize_scalar`` on a bounded interval, T in [0.01, 100]. Dividing by T keeps
the ranking of every output (AUROC is unchanged); T > 1 softens over-confident scores.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> true = rng.normal(0, 2, 4000); y = (rng.random(4000) < 1 / (1 + np.exp(-true))).astype(int)
>>> T = fit_temperature(3 * true, y)
>>> bool(2.7 < T < 3.3)
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EvaluationError
from .metrics import expected_calibration_error

__all__ = [
    "CALIBRATION_FILE",
    "METHODS",
    "fit_calibration",
    "calibrated_logits",
    "apply_calibration",
    "write_calibration",
    "fit_temperature",
    "apply_temperature",
    "calibration_nll",
    "calibration_stats",
    "save_calibration",
    "load_calibration",
    "read_calibration",
]

#: Name of the calibration file inside a run directory.
CALIBRATION_FILE = "calibration.json"
#: Every calibration map a ``calibration.json`` may hold.
METHODS = ("none", "temperature", "platt", "vector")
#: Fewer validation rows than this, or a single class, leave the outputs uncalibrated.
MIN_CALIBRATION_ROWS = 20
_LOG_T_BOUNDS = (float(np.log(0.01)), float(np.log(100.0)))


def _infer_kind(logits: np.ndarray, labels: np.ndarray, kind: str | None) -> str:
    if kind is not None:
        if kind not in ("sigmoid", "softmax", "multilabel"):
            raise EvaluationError(None, f"unknown kind '{kind}'; choose from sigmoid, softmax, multilabel")
        return kind
    if logits.ndim == 1:
        return "sigmoid"
    if logits.ndim == 2 and labels.ndim == 2:
        return "multilabel"
    if logits.ndim == 2 and labels.ndim == 1:
        return "softmax"
    raise EvaluationError(None, f"logits of shape {logits.shape} with labels of shape {labels.shape} are not supported")


def _prepare(logits: Any, labels: Any, kind: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    kind = _infer_kind(z, y, kind)
    if not np.isfinite(z).all():
        raise EvaluationError(None, "logits hold NaN or infinite values")
    if kind == "sigmoid":
        if z.ndim != 1 or y.shape != z.shape:
            raise EvaluationError(None, f"sigmoid logits (n,) need labels (n,), got {z.shape} and {y.shape}")
        if not np.isin(y, (0.0, 1.0)).all():
            raise EvaluationError(None, "binary labels must be 0/1")
    elif kind == "softmax":
        if z.ndim != 2 or y.shape != (z.shape[0],):
            raise EvaluationError(None, f"softmax logits (n, K) need labels (n,), got {z.shape} and {y.shape}")
        if (y != np.round(y)).any() or y.min(initial=0) < 0 or y.max(initial=0) >= z.shape[1]:
            raise EvaluationError(None, f"class labels must be integers 0..{z.shape[1] - 1}")
    else:
        if y.shape != z.shape:
            raise EvaluationError(
                None, f"multi-label logits and labels must have one shape, got {z.shape} and {y.shape}"
            )
        known = ~np.isnan(y)
        if not np.isin(y[known], (0.0, 1.0)).all():
            raise EvaluationError(None, "multi-label labels must be 0/1 (NaN for unknown)")
    if z.shape[0] == 0:
        raise EvaluationError(None, "no rows to fit a temperature on")
    return z, y, kind


def _nll(z: np.ndarray, y: np.ndarray, kind: str, temperature: float) -> float:
    from scipy.special import log_expit, log_softmax

    s = z / temperature
    if kind == "softmax":
        return float(-log_softmax(s, axis=1)[np.arange(len(y)), y.astype(np.intp)].mean())
    known = ~np.isnan(y)
    s, t = s[known], y[known]
    # log sigmoid(s) for positives, log sigmoid(-s) for negatives: stable for large |s|
    return float(-(t * log_expit(s) + (1 - t) * log_expit(-s)).mean())


def calibration_nll(logits: Any, labels: Any, temperature: float = 1.0, *, kind: str | None = None) -> float:
    """Mean negative log-likelihood of ``labels`` under ``logits / temperature``.

    >>> round(calibration_nll([0.0, 0.0], [0, 1]), 4)
    0.6931
    """
    z, y, kind = _prepare(logits, labels, kind)
    return _nll(z, y, kind, float(temperature))


def fit_temperature(logits: Any, labels: Any, *, kind: str | None = None) -> float:
    """The temperature T > 0 minimising the NLL of ``labels`` under ``logits / T``.

    Args:
        logits: (n,) binary logits, (n, K) softmax logits (K=2 for a two-logit binary head) or
            (n, L) multi-label logits; validation rows, never the test set.
        labels: (n,) 0/1 or class indices, or (n, L) 0/1 with NaN for unknown.
        kind: ``sigmoid``, ``softmax`` or ``multilabel``; inferred from the shapes when None.

    Raises:
        EvaluationError: NaN logits, labels that do not fit the logits, or no rows.

    >>> round(fit_temperature([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]], [0, 1, 1]), 2)
    2.89
    """
    from scipy.optimize import minimize_scalar

    z, y, kind = _prepare(logits, labels, kind)
    res = minimize_scalar(
        lambda log_t: _nll(z, y, kind, float(np.exp(log_t))),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))


def apply_temperature(logits: Any, temperature: float, *, kind: str | None = None) -> np.ndarray:
    """Calibrated probabilities: ``sigmoid(logits / T)`` or ``softmax(logits / T)``.

    ``kind`` as in :func:`fit_temperature`; without it 1-D logits get a sigmoid and 2-D logits a
    softmax over the last axis (pass ``kind="multilabel"`` for per-output sigmoids).

    >>> apply_temperature([0.0, 2.0], 2.0).round(4).tolist()
    [0.5, 0.7311]
    >>> apply_temperature([[0.0, 2.0]], 2.0).round(4).tolist()
    [[0.2689, 0.7311]]
    """
    from scipy.special import expit, softmax

    if not temperature > 0:
        raise EvaluationError(None, f"temperature must be positive, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if kind is None:
        kind = "sigmoid" if z.ndim == 1 else "softmax"
    if kind in ("sigmoid", "multilabel"):
        return expit(z)
    if kind == "softmax":
        return softmax(z, axis=-1)
    raise EvaluationError(None, f"unknown kind '{kind}'; choose from sigmoid, softmax, multilabel")


def _ece(z: np.ndarray, y: np.ndarray, kind: str, temperature: float) -> float | None:
    p = apply_temperature(z, temperature, kind=kind)
    if kind == "sigmoid":
        return expected_calibration_error(y, p)
    task = kind if kind == "multilabel" else ("binary" if p.shape[1] == 2 else "multiclass")
    return _task_ece(p, y, task)


def calibration_stats(logits: Any, labels: Any, temperature: float, *, kind: str | None = None) -> dict[str, Any]:
    """NLL and ECE (10 bins) before and after scaling by ``temperature``, and the row count.

    >>> s = calibration_stats([3.0, -3.0, 3.0], [1, 0, 0], 2.0)
    >>> s["n"], s["nll_after"] < s["nll_before"]
    (3, True)
    """
    z, y, kind = _prepare(logits, labels, kind)
    return {
        "kind": kind,
        "n": int(z.shape[0]),
        "nll_before": _nll(z, y, kind, 1.0),
        "nll_after": _nll(z, y, kind, float(temperature)),
        "ece_before": _ece(z, y, kind, 1.0),
        "ece_after": _ece(z, y, kind, float(temperature)),
    }


def save_calibration(
    run_dir: str | os.PathLike,
    temperature: float,
    logits: Any = None,
    labels: Any = None,
    *,
    kind: str | None = None,
    fitted_on: str = "val",
) -> Path:
    """Write ``run_dir/calibration.json``; with ``logits`` and ``labels`` it records NLL/ECE before/after.

    The file: ``{"method": "temperature", "temperature": T, "fitted_on": "val", "n": ...,
    "nll_before": ..., "nll_after": ..., "ece_before": ..., "ece_after": ...}`` (the statistics are
    null when no logits are given).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> path = save_calibration(d, 1.7, [2.0, -1.0, 0.5], [1, 0, 0])
    >>> path.name, load_calibration(d)
    ('calibration.json', 1.7)
    """
    if not (isinstance(temperature, (int, float, np.floating)) and np.isfinite(temperature) and temperature > 0):
        raise EvaluationError(run_dir, f"temperature must be a positive number, got {temperature!r}")
    record: dict[str, Any] = {"method": "temperature", "temperature": float(temperature), "fitted_on": fitted_on}
    stats = {"n": None, "nll_before": None, "nll_after": None, "ece_before": None, "ece_after": None}
    if logits is not None and labels is not None:
        stats.update(calibration_stats(logits, labels, float(temperature), kind=kind))
    record.update(stats)
    from ..files import write_json

    path = Path(run_dir) / CALIBRATION_FILE
    write_json(path, record)  # atomic, and recorded as the run's own file
    return path


def load_calibration(run_dir: str | os.PathLike) -> float:
    """The temperature stored in ``run_dir/calibration.json``; 1.0 (no scaling) when there is no file.

    Raises:
        EvaluationError: the file exists but is not valid JSON, not a temperature, or T <= 0.

    >>> import tempfile
    >>> load_calibration(tempfile.mkdtemp())
    1.0
    """
    return float(read_calibration(run_dir)["temperature"])


def read_calibration(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The whole checked ``calibration.json`` record; without the file, ``temperature`` 1.0 and a
    ``fitted_on`` that says there was none.

    >>> import tempfile
    >>> read_calibration(tempfile.mkdtemp())["fitted_on"]
    'no calibration.json'
    """
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return {"method": "temperature", "temperature": 1.0, "fitted_on": f"no {CALIBRATION_FILE}"}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EvaluationError(path, f"cannot read calibration: {exc}") from None
    if not isinstance(record, dict) or record.get("method", "temperature") not in METHODS:
        raise EvaluationError(path, f"not a calibration file medtl knows (method must be one of {', '.join(METHODS)})")
    record.setdefault("method", "temperature")
    value = record.get("temperature", 1.0)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or not np.isfinite(value):
        raise EvaluationError(path, f"temperature must be a positive number, got {value!r}")
    if record["method"] in ("platt", "vector"):
        scale, bias = record.get("scale"), record.get("bias")
        ok = isinstance(scale, list) and isinstance(bias, list) and len(scale) == len(bias) > 0
        if not ok or not np.isfinite(np.asarray(scale + bias, dtype=float)).all():
            raise EvaluationError(path, f"{record['method']} calibration needs equal-length finite 'scale' and 'bias' lists")
    return record


# ----------------------------------------------------------------------------- the choice
def calibrated_logits(logits: Any, record: dict[str, Any], task: str) -> np.ndarray:
    """The logits after a calibration ``record``'s map (:func:`apply_calibration` without the
    probability rule). A binary Platt map returns two logits ``[0, a·(z1 - z0) + b]``.

    >>> calibrated_logits([[0.0, 2.0]], {"method": "platt", "scale": [0.5], "bias": [1.0]}, "binary").tolist()
    [[0.0, 2.0]]
    """
    z = np.asarray(logits, dtype=np.float64)
    method = record.get("method", "temperature")
    if method == "none":
        return z
    if method == "temperature":
        return z / float(record.get("temperature", 1.0))
    scale, bias = np.asarray(record["scale"], dtype=np.float64), np.asarray(record["bias"], dtype=np.float64)
    if task == "binary" and z.ndim == 2 and z.shape[1] == 2:
        margin = scale[0] * (z[:, 1] - z[:, 0]) + bias[0]
        return np.stack([np.zeros_like(margin), margin], axis=1)
    if z.shape[-1] != len(scale):
        raise EvaluationError(None, f"{method} calibration has {len(scale)} outputs, the logits {z.shape[-1]}")
    return z * scale + bias


def apply_calibration(logits: Any, record: dict[str, Any], task: str) -> np.ndarray:
    """Calibrated probabilities: the record's map, then the task's probability rule.

    >>> apply_calibration([[0.0, 0.0]], {"method": "platt", "scale": [1.0], "bias": [0.0]}, "binary").tolist()
    [[0.5, 0.5]]
    """
    from ..tasks import probabilities

    return probabilities(calibrated_logits(logits, record, task), task)


def _nll_of(z: np.ndarray, y: np.ndarray, task: str) -> float:
    """Mean NLL of labels under already-calibrated logits."""
    from scipy.special import log_expit, log_softmax

    if task == "multilabel":
        known = ~np.isnan(y)
        s, t = z[known], y[known]
        return float(-(t * log_expit(s) + (1 - t) * log_expit(-s)).mean())
    return float(-log_softmax(z, axis=1)[np.arange(len(y)), y.astype(np.intp)].mean())


def _fit_affine(z: np.ndarray, y: np.ndarray, task: str) -> dict[str, Any]:
    """Maximum-likelihood ``scale``/``bias`` (log-scale bounded like the temperature)."""
    from scipy.optimize import minimize
    from scipy.special import log_expit

    def platt_1d(x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
        def nll(theta):
            s = np.exp(theta[0]) * x + theta[1]
            return -(t * log_expit(s) + (1 - t) * log_expit(-s)).mean()

        res = minimize(nll, np.zeros(2), method="L-BFGS-B", bounds=[_LOG_T_BOUNDS, (-50, 50)])
        return float(np.exp(res.x[0])), float(res.x[1])

    if task == "binary":
        a, b = platt_1d(z[:, 1] - z[:, 0], y)
        return {"method": "platt", "scale": [a], "bias": [b]}
    if task == "multilabel":
        scale, bias = [], []
        for j in range(z.shape[1]):
            known = ~np.isnan(y[:, j])
            a, b = platt_1d(z[known, j], y[known, j]) if len(np.unique(y[known, j])) == 2 else (1.0, 0.0)
            scale.append(a), bias.append(b)
        return {"method": "platt", "scale": scale, "bias": bias}
    k = z.shape[1]

    def nll(theta):  # vector scaling; the first class's bias is fixed at 0 (softmax is shift-free)
        rec = {"method": "vector", "scale": np.exp(theta[:k]), "bias": np.concatenate([[0.0], theta[k:]])}
        return _nll_of(calibrated_logits(z, rec, task), y, task)

    res = minimize(nll, np.zeros(2 * k - 1), method="L-BFGS-B", bounds=[_LOG_T_BOUNDS] * k + [(-50, 50)] * (k - 1))
    return {"method": "vector", "scale": np.exp(res.x[:k]).tolist(), "bias": [0.0, *res.x[k:].tolist()]}


def _fit_method(method: str, z: np.ndarray, y: np.ndarray, task: str) -> dict[str, Any]:
    from ..tasks import calibration_kind

    if method == "none":
        return {"method": "none"}
    if method == "temperature":
        target = y if task == "multilabel" else y.astype(int)
        return {"method": "temperature", "temperature": fit_temperature(z, target, kind=calibration_kind(task))}
    return _fit_affine(z, y, task)


def _folds(y: np.ndarray, task: str, folds: int, seed: int):
    from sklearn.model_selection import KFold, StratifiedKFold

    if task == "multilabel":
        return list(KFold(min(folds, len(y)), shuffle=True, random_state=seed).split(y))
    counts = np.bincount(y.astype(int))
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        return []
    return list(StratifiedKFold(min(folds, smallest), shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def fit_calibration(
    logits: Any, labels: Any, task: str, *, folds: int = 5, seed: int = 0, min_rows: int = MIN_CALIBRATION_ROWS
) -> dict[str, Any]:
    """Choose and fit a calibration map on validation rows (see the module docstring).

    Each candidate (``none``, ``temperature``, and ``platt`` or ``vector``) is scored by its
    ``folds``-fold cross-validated NLL on these rows (fitted on the other folds, scored on the
    held-out one); the lowest wins, ties going to fewer parameters, and is refitted on all rows.

    Args:
        logits: (n, outputs) validation logits.
        labels: (n,) class indices (binary, multi-class) or (n, L) 0/1 with NaN for unknown.
        task: ``binary``, ``multiclass`` or ``multilabel`` (:mod:`medtl.tasks`).

    Returns:
        A record for :func:`write_calibration`: ``method`` and its parameters, ``fitted_on``
        (``val``, or ``not fitted: ...`` with the reason), ``cv_nll`` per candidate, ``chosen_by``.

    >>> rng = np.random.default_rng(0)
    >>> y = (rng.random(400) < 0.8).astype(int)               # prevalence 0.8 ...
    >>> m = rng.normal(0, 1, 400) + 2 * y - 2.4                # ... scored as if it were 0.5
    >>> fit_calibration(np.stack([np.zeros(400), m], 1), y, "binary")["method"]
    'platt'
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if task != "multilabel":
        y = y.reshape(-1)
    n = len(y)
    classes = len(np.unique(y[~np.isnan(y)])) if task != "multilabel" else 2
    if n < min_rows or classes < 2:
        why = f"{n} validation images (fewer than {min_rows})" if n < min_rows else "one class in validation"
        return {"method": "none", "temperature": 1.0, "fitted_on": f"not fitted: {why}", "cv_nll": {},
                "chosen_by": "validation too small to calibrate"}  # fmt: skip
    candidates = ["none", "temperature", "vector" if task == "multiclass" else "platt"]
    splits = _folds(y, task, folds, seed)
    cv: dict[str, float] = {}
    if splits:
        for method in candidates:
            total = 0.0
            for train, held in splits:
                rec = _fit_method(method, z[train], y[train], task)
                total += _nll_of(calibrated_logits(z[held], rec, task), y[held], task) * len(held)
            cv[method] = round(total / n, 6)
        best = min(candidates, key=lambda m: (cv[m], candidates.index(m)))
        chosen_by = f"{len(splits)}-fold cross-validated NLL on the validation rows"
    else:  # a class with one image: no fold can hold it out; one parameter is all it can bear
        best, chosen_by = "temperature", "too few images of a class to cross-validate: temperature only"
    record = _fit_method(best, z, y, task)
    record.setdefault("temperature", 1.0)
    record.update(fitted_on="val", cv_nll=cv, chosen_by=chosen_by)
    return record


def write_calibration(
    run_dir: str | os.PathLike, record: dict[str, Any], logits: Any = None, labels: Any = None, *, task: str
) -> Path:
    """Write a :func:`fit_calibration` record to ``run_dir/calibration.json`` with NLL and ECE
    on the given rows before and after (null without rows), atomically.
    """
    from ..tasks import probabilities

    out = dict(record)
    out["task"] = task
    stats: dict[str, Any] = {"n": None, "nll_before": None, "nll_after": None, "ece_before": None, "ece_after": None}
    if logits is not None and labels is not None:
        z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
        if task != "multilabel":
            y = y.reshape(-1)
        after = calibrated_logits(z, record, task)
        stats.update(n=int(len(y)), nll_before=_nll_of(z, y, task), nll_after=_nll_of(after, y, task),
                     ece_before=_task_ece(probabilities(z, task), y, task),
                     ece_after=_task_ece(probabilities(after, task), y, task))  # fmt: skip
    out.update(stats)
    from ..files import write_json

    path = Path(run_dir) / CALIBRATION_FILE
    write_json(path, out)  # atomic, and recorded as the run's own file
    return path


def _task_ece(p: np.ndarray, y: np.ndarray, task: str) -> float | None:
    if task == "multilabel":
        known = ~np.isnan(y)
        return expected_calibration_error(y[known], p[known])
    if task == "binary":
        return expected_calibration_error(y, p[:, 1])
    pred = p.argmax(axis=1)  # multi-class: top-label ECE
    return expected_calibration_error((pred == y).astype(float), p.max(axis=1))
