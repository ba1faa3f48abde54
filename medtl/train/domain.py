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


#: The files of a run an adapted copy keeps (the weights are its own; checkpoints and logs belong
#: to the training it did not do).
_RUN_FILES = ("config.yaml", "split.json", "preprocess.json", "labels.json", "calibration.json", "threshold.json",
              "metrics.json", "model_card.md", "curves.csv", "curves.png")  # fmt: skip


def adapt_run(
    run_dir, target_manifest, out_dir, *, batch_size: int = 16, progress: bool = False, overwrite: bool = False
):
    """AdaBN on a finished run: a new run in ``out_dir`` whose BatchNorm statistics come from the
    (unlabelled) images of ``target_manifest``. Returns the new model.

    The target CSV needs only a ``path`` column; rows that cannot be read are skipped and
    counted in ``out_dir/adaptation.json``. The source run is only read.

    Raises:
        OutputError: ``out_dir`` is the source run or breaks the output rule
            (:func:`medtl.outputs.output_folder`): holds another run or output (without
            ``overwrite``, which removes the files that output recorded), files medtl did not
            write, is a file, or is being written.
    """
    from pathlib import Path

    from ..data.dataset import prepare_unlabelled
    from ..errors import ConfigError
    from ..rundir import load_run, mark_complete, output_folder, save_torch, write_bytes, write_json

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.resolve() == run_dir.resolve():
        raise ConfigError(out_dir, "is the run being adapted: the adapted run goes to another folder (-o)")
    model, spec, _ = load_run(run_dir)
    from ..data.manifest import image_folders

    inputs = [run_dir, target_manifest, *image_folders(target_manifest)]
    with output_folder(out_dir, "adapt", inputs=inputs, overwrite=overwrite) as out:
        data = prepare_unlabelled(target_manifest, spec, cache_dir=out / "cache", progress=progress)
        loader = torch.utils.data.DataLoader(data.dataset, batch_size=batch_size)
        adabn(model, (batch["image"] for batch in loader))
        for name in _RUN_FILES:
            if (run_dir / name).is_file():
                write_bytes(out / name, (run_dir / name).read_bytes())
        save_torch(model.state_dict(), out / "model.pt")
        reasons = sorted({f["reason"] for f in data.failures})
        write_json(out / "adaptation.json", {"method": "adabn", "source_run": run_dir.resolve().name,
                                             "target": Path(target_manifest).name, "n_target": len(data.indices),
                                             "skipped": len(data.failures), "skipped_reasons": reasons[:20]})  # fmt: skip
        mark_complete(out, "adapt")
    return model
