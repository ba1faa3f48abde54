"""Fine-tuning strategies: which parameter groups train, and at which learning rate.

Built on :meth:`medtl.models.Classifier.param_groups` (``stem``, ``stage1`` … ``head``):

- ``linear_probe``: backbone frozen (its BatchNorm statistics too), head trains.
- ``full``: everything trains; ``layer_decay`` < 1 gives discriminative rates
  (``lr · decay^k`` for the group k steps below the head).
- ``lpft``: ``linear_probe`` for the first ``probe_epochs``, then ``full`` at ``lr · ft_scale``
  (Kumar et al. 2022: probing first keeps features from being distorted by a random head).
- ``gradual``: the head, then one more stage from the top every ``unfreeze_every`` epochs
  (ULMFiT-style gradual unfreezing).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError, suggest

__all__ = ["STRATEGIES", "StrategyConfig", "configure_strategy", "train_mode"]

STRATEGIES = ("linear_probe", "full", "lpft", "gradual")


@dataclass(frozen=True)
class StrategyConfig:
    name: str = "lpft"
    lr: float = 1e-3
    layer_decay: float = 1.0
    probe_epochs: int = 5
    ft_scale: float = 0.1
    unfreeze_every: int = 2

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ConfigError(None, f"unknown strategy '{self.name}'" + suggest(self.name, STRATEGIES))


def _trainable_groups(groups: list[str], cfg: StrategyConfig, epoch: int) -> tuple[list[str], float]:
    """(names of groups that train this epoch, base learning rate)."""
    if cfg.name == "linear_probe" or (cfg.name == "lpft" and epoch < cfg.probe_epochs):
        return ["head"], cfg.lr
    if cfg.name == "lpft":
        return groups, cfg.lr * cfg.ft_scale
    if cfg.name == "gradual":
        k = 1 + epoch // max(cfg.unfreeze_every, 1)  # head alone, then one more group each step
        return groups[-k:], cfg.lr
    return groups, cfg.lr


def configure_strategy(model, cfg: StrategyConfig, epoch: int = 0) -> list[dict]:
    """Set ``requires_grad`` for ``epoch`` and return optimizer parameter groups.

    Returns a list of ``{"params", "lr", "name"}`` dicts, one per trainable group, for
    ``torch.optim.AdamW(groups)``; call again when the strategy changes phase.

    Example:
        >>> from medtl.models import create
        >>> model = create("resnet10", num_classes=2)
        >>> [g["name"] for g in configure_strategy(model, StrategyConfig("linear_probe"))]
        ['head']
    """
    groups = model.param_groups()
    names = list(groups)  # stem ... head, shallow to deep
    trainable, lr = _trainable_groups(names, cfg, epoch)
    out = []
    for depth_from_top, name in enumerate(reversed(names)):
        on = name in trainable
        for p in groups[name]:
            p.requires_grad_(on)
        if on and groups[name]:
            out.append({"params": groups[name], "lr": lr * cfg.layer_decay**depth_from_top, "name": name})
    return list(reversed(out))


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except normalisation layers whose parameters are all frozen stay in
    eval mode, so a frozen backbone's running statistics do not drift."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
    return model
