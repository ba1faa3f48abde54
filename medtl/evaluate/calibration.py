"""Temperature scaling: one scalar T > 0 that divides the logits, fitted on validation rows.

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
    if kind == "multilabel":
        known = ~np.isnan(y)
        return expected_calibration_error(y[known], p[known])
    if p.shape[1] == 2:  # binary with two logits: calibration of P(positive), as the audit reads it
        return expected_calibration_error(y, p[:, 1])
    pred = p.argmax(axis=1)  # multi-class: top-label ECE
    return expected_calibration_error((pred == y).astype(float), p.max(axis=1))


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
    path = Path(run_dir) / CALIBRATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)  # never leave a half-written file for a later predict to read
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
    if not isinstance(record, dict) or record.get("method", "temperature") != "temperature":
        raise EvaluationError(path, "not a temperature-scaling calibration file")
    value = record.get("temperature")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or not np.isfinite(value):
        raise EvaluationError(path, f"temperature must be a positive number, got {value!r}")
    return record
