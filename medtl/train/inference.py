"""Turning a trained network's outputs into logits, the same way everywhere.

Validation during training, the test read in benchmarks, ``medtl evaluate`` and ``medtl predict``
all call :func:`predict_logits` (or :func:`tta_logits` on a batch), so test-time augmentation
cannot drift apart between them; the probability rule is :func:`medtl.tasks.probabilities`,
decided by the run's task (softmax for one label, a sigmoid per finding for several).

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
>>> x = torch.randn(3, 1, 4, 4)
>>> tta_logits(net, x, flips=(1,)).shape
torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["tta_logits", "predict_logits"]


def tta_logits(model: nn.Module, x: torch.Tensor, flips: Sequence[int] = ()) -> torch.Tensor:
    """Logits averaged over the input and its flips along ``flips`` (network spatial axes).

    Only flips the training augmentation used belong here: an unseen flip is a different image
    to the model. Averaging logits rather than probabilities keeps temperature scaling valid.

    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))
    >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
    >>> bool(torch.allclose(tta_logits(net, x, (1,)), (net(x) + net(x.flip(3))) / 2))
    True
    """
    out = model(x)
    for axis in flips:
        out = out + model(x.flip(axis + 2))  # +2 skips the batch and channel axes
    return out / (1 + len(flips))


@torch.no_grad()
def predict_logits(
    model: nn.Module, loader, *, flips: Sequence[int] = (), device: str | torch.device | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (N, outputs) and labels (N, k), or None when the loader has none, over a loader
    of ``{"image", ["label"]}`` batches, in loader order, with the model in eval mode.

    >>> data = [{"image": torch.ones(2, 1, 4, 4), "label": torch.tensor([[0.0], [1.0]])}]
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> logits, labels = predict_logits(net, data)
    >>> logits.shape, labels[:, 0].tolist()
    ((2, 2), [0.0, 1.0])
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs, labels = [], []
    try:
        for batch in loader:
            outs.append(tta_logits(model, batch["image"].to(device), flips).float().cpu().numpy())
            if "label" in batch:
                labels.append(np.asarray(batch["label"], dtype=np.float64))
    finally:
        model.train(was_training)
    width = outs[0].shape[1] if outs else 0
    logits = np.concatenate(outs) if outs else np.zeros((0, width), np.float32)
    return logits, (np.concatenate(labels) if labels else None)
