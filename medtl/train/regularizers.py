"""Regularizers for small labelled sets.

Mixup and CutMix come from MONAI (``monai.transforms.MixUp``/``CutMix``) and label smoothing
from ``torch.nn.CrossEntropyLoss``; what is here is what neither provides.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["L2SP", "class_weights"]


class L2SP(nn.Module):
    """L2-SP (Li, Grandvalet & Davoine 2018): pull the backbone toward its *pretrained*
    weights, not toward zero; plain L2 on the new head.

    ``penalty = alpha/2 · Σ‖w − w₀‖² (encoder) + beta/2 · Σ‖w‖² (head)``. It is zero at the
    start (for the encoder) and grows as the weights move away. Use it with weight decay off
    for the encoder, since decay toward zero is what it replaces.

    >>> from medtl.models import create
    >>> model = create("resnet10", num_classes=2)
    >>> reg = L2SP(model, alpha=0.01, beta=0.0)
    >>> reg(model).item()
    0.0
    """

    def __init__(self, model: nn.Module, alpha: float = 0.01, beta: float = 0.01):
        super().__init__()
        self.alpha, self.beta = alpha, beta
        encoder = getattr(model, "encoder", model)
        self._names = [n for n, p in encoder.named_parameters() if p.requires_grad]
        # a frozen copy, kept as buffers so it moves with .to(device) and lands in checkpoints
        for i, (_, p) in enumerate((n, p) for n, p in encoder.named_parameters() if p.requires_grad):
            self.register_buffer(f"start_{i}", p.detach().clone())

    def forward(self, model: nn.Module) -> torch.Tensor:
        encoder = getattr(model, "encoder", model)
        params = dict(encoder.named_parameters())
        device = next(iter(params.values())).device
        total = torch.zeros((), device=device)
        for i, name in enumerate(self._names):
            total = total + (params[name] - getattr(self, f"start_{i}")).pow(2).sum()
        penalty = 0.5 * self.alpha * total
        head = getattr(model, "head", None)
        if self.beta and head is not None:
            penalty = penalty + 0.5 * self.beta * sum(p.pow(2).sum() for p in head.parameters())
        return penalty


def class_weights(labels: Sequence[int]) -> torch.Tensor:
    """Inverse-frequency ("balanced") weights per class, as scikit-learn computes them.

    >>> [round(w, 3) for w in class_weights([0, 0, 0, 1]).tolist()]
    [0.667, 2.0]
    """
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(labels)
    classes = np.unique(y)
    return torch.tensor(compute_class_weight("balanced", classes=classes, y=y), dtype=torch.float32)
