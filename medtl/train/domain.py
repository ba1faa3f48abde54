"""Adapting to a new site or scanner with unlabelled target images.

- :func:`adabn` (Li et al. 2016): re-estimate every BatchNorm layer's statistics on target
  images; weights stay as trained.
- :class:`GradientReversal` and :class:`DomainClassifier` (Ganin & Lempitsky 2015): a
  domain head trained through reversed gradients pushes the backbone toward features that
  do not tell the sites apart.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["adabn", "GradientReversal", "DomainClassifier"]


@torch.no_grad()
def adabn(model: nn.Module, images: Iterable[torch.Tensor]) -> nn.Module:
    """Replace BatchNorm running statistics by those of ``images`` (batches of target data).

    Statistics are a cumulative average over all batches (not an exponential one), so the
    result does not depend on batch order. Returns the model in eval mode.

    Example:
        >>> from medtl.models import create
        >>> model = adabn(create("resnet10", num_classes=2), [torch.randn(4, 1, 32, 32)])
        >>> model.training
        False
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.train()
    seen = 0
    for batch in images:
        model(batch)
        seen += 1
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
        m.eval()
    if seen == 0:
        raise ValueError("adabn needs at least one batch of target images")
    return model


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, strength):
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.strength * grad, None


class GradientReversal(nn.Module):
    """Identity forward; multiplies the gradient by ``-strength`` on the way back."""

    def __init__(self, strength: float = 1.0):
        super().__init__()
        self.strength = strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Reverse.apply(x, self.strength)


class DomainClassifier(nn.Module):
    """Predicts the domain (site) from backbone features, through a gradient reversal."""

    def __init__(self, num_features: int, num_domains: int = 2, hidden: int = 256, strength: float = 1.0):
        super().__init__()
        self.reverse = GradientReversal(strength)
        self.net = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_domains))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.reverse(features))


def adapt_run(run_dir, target_manifest, out_dir, *, batch_size: int = 16, progress: bool = False):
    """AdaBN on a finished run: a copy of ``run_dir`` in ``out_dir`` whose BatchNorm statistics
    come from the (unlabelled) images of ``target_manifest``. Returns the new model.

    The target CSV needs only a ``path`` column; rows that cannot be read are skipped and
    listed in ``out_dir/adaptation.json``.
    """
    import json
    import shutil
    from pathlib import Path

    from ..data.dataset import prepare_unlabelled
    from .finetune import load_run

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model, spec, _ = load_run(run_dir)
    data = prepare_unlabelled(target_manifest, spec, cache_dir=out_dir / "cache", progress=progress)
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=batch_size)
    adabn(model, (batch["image"] for batch in loader))
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in run_dir.iterdir():
        if f.is_file() and f.name != "model.pt":
            shutil.copy2(f, out_dir / f.name)
    torch.save(model.state_dict(), out_dir / "model.pt")
    (out_dir / "adaptation.json").write_text(
        json.dumps(
            {
                "method": "adabn",
                "source_run": str(run_dir),
                "target": str(target_manifest),
                "n_target": len(data.indices),
                "skipped": data.failures,
            },
            indent=2,
        )  # fmt: skip
    )
    return model
