"""Step 4 · Evaluation and bias audit: metrics with bootstrap CIs, calibration, subgroup audit.

* :mod:`~medtl.evaluate.metrics` — binary / multi-class / multi-label metrics (scikit-learn),
  threshold choice, ECE and reliability data; undefined values are ``None`` with a reason.
* :mod:`~medtl.evaluate.bootstrap` — percentile bootstrap CIs resampling patients, vectorised
  over resamples (weighted AUROC/AP and confusion counts for many resamples at once).
* :mod:`~medtl.evaluate.calibration` — temperature scaling and ``calibration.json`` in a run.
* :mod:`~medtl.evaluate.audit` — per-group metrics, gaps (as fairlearn defines them) with CIs, flags.
* :mod:`~medtl.evaluate.plots` — ROC, reliability and gap figures (matplotlib, Agg).

Importing this package is cheap: scikit-learn, scipy, pandas and matplotlib load inside the
functions that use them.

>>> from medtl.evaluate import binary_metrics
>>> binary_metrics([0, 1, 1], [0.2, 0.8, 0.6])["auroc"]
1.0
"""

from .audit import AuditResult, audit
from .bootstrap import bootstrap_ci, group_replicates, weighted_auroc, weighted_average_precision
from .calibration import apply_temperature, fit_temperature, load_calibration, save_calibration
from .metrics import (
    METRICS,
    binary_metrics,
    choose_threshold,
    classification_metrics,
    expected_calibration_error,
    multiclass_metrics,
    multilabel_metrics,
    reliability_diagram,
)

__all__ = [
    "audit",
    "AuditResult",
    "METRICS",
    "binary_metrics",
    "multiclass_metrics",
    "multilabel_metrics",
    "classification_metrics",
    "choose_threshold",
    "expected_calibration_error",
    "reliability_diagram",
    "bootstrap_ci",
    "group_replicates",
    "weighted_auroc",
    "weighted_average_precision",
    "fit_temperature",
    "apply_temperature",
    "save_calibration",
    "load_calibration",
    "evaluate_run",
    "cross_validate",
]

# a run's evaluation and cross-validation load on first use: they pull in the training stack
_LAZY = {"evaluate_run": ".run", "cross_validate": ".crossval"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
