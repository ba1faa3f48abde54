"""What a head's outputs mean, and the one rule that turns them into probabilities.

* ``binary`` — one label column with values 0/1: two outputs, a softmax (P(positive) is column 1);
* ``multiclass`` — one label column with values 0..K-1: K outputs, a softmax;
* ``multilabel`` — several findings, each present or not: one output per finding, a sigmoid
  each. The findings are independent: a softmax across them would make one finding's
  probability fall when another rises, and rank images wrongly for both.

Validation during training, ``medtl evaluate``, calibration and prediction all call
:func:`probabilities` with the run's task, so the rule cannot drift apart between them. It
takes NumPy arrays and torch tensors alike.

>>> import numpy as np
>>> z = np.array([[2.0, 2.0]])
>>> probabilities(z, "multilabel").round(3).tolist(), probabilities(z, "binary").round(3).tolist()
([[0.881, 0.881]], [[0.5, 0.5]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["TASKS", "task_for", "probabilities", "calibration_kind"]

TASKS = ("binary", "multiclass", "multilabel")


def task_for(label_columns: Sequence[str], num_outputs: int) -> str:
    """The task of a head with ``num_outputs`` outputs trained on ``label_columns``.

    >>> task_for(["label"], 2), task_for(["label"], 4), task_for(["effusion", "edema"], 2)
    ('binary', 'multiclass', 'multilabel')
    """
    if len(label_columns) > 1:
        return "multilabel"
    return "binary" if num_outputs <= 2 else "multiclass"


def _check(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'; choose from {', '.join(TASKS)}")


def probabilities(logits: Any, task: str) -> Any:
    """Probabilities from logits (N, outputs): a sigmoid per output for ``multilabel`` (and for a
    single-output head), a softmax over the outputs otherwise. Same type out as in.

    >>> import torch
    >>> probabilities(torch.tensor([[0.0, 0.0]]), "binary").tolist()
    [[0.5, 0.5]]
    """
    _check(task)
    sigmoid = task == "multilabel" or logits.shape[-1] == 1
    if not isinstance(logits, np.ndarray) and hasattr(logits, "sigmoid"):  # a torch tensor
        return logits.sigmoid() if sigmoid else logits.softmax(-1)
    from scipy.special import expit, softmax

    z = np.asarray(logits, dtype=np.float64)
    return expit(z) if sigmoid else softmax(z, axis=-1)


def calibration_kind(task: str) -> str:
    """The likelihood calibration fits for a task: ``multilabel`` or ``softmax``.

    >>> calibration_kind("binary"), calibration_kind("multilabel")
    ('softmax', 'multilabel')
    """
    _check(task)
    return "multilabel" if task == "multilabel" else "softmax"
