"""The Lightning module that fine-tunes a :class:`~medtl.models.Classifier`: strategy phases,
L2-SP, mixup and CutMix, label smoothing, class weights, warm-up and cosine schedule, domain
confusion, and validation AUROC under the task's probability rule (:mod:`medtl.tasks`).
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch import nn

from ..errors import MedtlError
from ..tasks import probabilities, task_for
from .config import TrainConfig
from .domain import DomainClassifier
from .inference import tta_logits
from .regularizers import L2SP
from .strategies import StrategyConfig, configure_strategy, train_mode

__all__ = ["FineTuneModule", "auroc", "cutmix"]


class FineTuneModule(L.LightningModule):
    """Lightning wrapper: strategy phases, L2-SP, mixup, label smoothing, class weights,
    warm-up + cosine schedule, AUROC on validation."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        num_classes: int,
        weights: torch.Tensor | None,
        domain_loader=None,
        task: str | None = None,
    ):
        super().__init__()
        self.model, self.cfg, self.num_classes = model, cfg, num_classes
        # the probability rule validation AUROC (and so checkpoint choice) is computed with
        self.task = task or task_for(cfg.label_columns, num_classes)
        self.strategy = StrategyConfig(
            cfg.strategy, cfg.lr, cfg.layer_decay, cfg.probe_epochs, cfg.ft_scale, cfg.unfreeze_every
        )
        self.l2sp = L2SP(model, cfg.l2sp_alpha, cfg.l2sp_beta) if (cfg.l2sp_alpha or cfg.l2sp_beta) else None
        self.register_buffer("class_weight", weights if weights is not None else torch.ones(num_classes))
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []
        # domain confusion: unlabelled target images, a domain head behind gradient reversal
        self.domain_loader = domain_loader
        self.domain = DomainClassifier(model.num_features) if domain_loader is not None else None
        self._target_iter = None

    def _target_batch(self) -> torch.Tensor:
        try:
            batch = next(self._target_iter)
        except (StopIteration, TypeError):  # exhausted, or not started: cycle the target set
            self._target_iter = iter(self.domain_loader)
            batch = next(self._target_iter)
        return batch["image"].to(self.device)

    def forward(self, x):
        return self.model(x)

    # -- phases -------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        configure_strategy(self.model, self.strategy, self.current_epoch)  # which groups train now
        train_mode(self.model)  # frozen BatchNorm keeps its statistics

    def _phase_scale(self, epoch: int) -> float:
        s = self.strategy
        return s.ft_scale if s.name == "lpft" and epoch >= s.probe_epochs else 1.0

    def configure_optimizers(self):
        groups = configure_strategy(self.model, StrategyConfig("full", self.cfg.lr, self.cfg.layer_decay))
        decay = 0.0 if self.l2sp is not None else self.cfg.weight_decay  # L2-SP replaces decay to zero
        if self.domain is not None:
            groups.append({"params": list(self.domain.parameters()), "lr": self.cfg.lr, "name": "domain"})
        optimizer = torch.optim.AdamW(groups, weight_decay=decay)
        total, warm = max(self.cfg.epochs, 1), max(self.cfg.warmup_epochs, 0)

        def factor(epoch: int) -> float:
            ramp = (epoch + 1) / warm if epoch < warm else 1.0
            return ramp * 0.5 * (1 + math.cos(math.pi * epoch / total)) * self._phase_scale(epoch)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # -- steps --------------------------------------------------------------------------------
    def _loss(self, logits, target):
        if self.num_classes == 1 or target.dim() == 2 and target.shape[1] > 1:  # multi-label
            known = ~torch.isnan(target)  # a finding not reported for an image teaches nothing
            if not known.any():
                return logits.sum() * 0.0
            return nn.functional.binary_cross_entropy_with_logits(logits[known], target[known].to(logits.dtype))
        return nn.functional.cross_entropy(
            logits, target, weight=self.class_weight, label_smoothing=self.cfg.label_smoothing
        )

    def training_step(self, batch, batch_idx):
        x, y = batch["image"], self._target(batch["label"])
        if (self.cfg.mixup > 0 or self.cfg.cutmix > 0) and y.dim() == 1:
            perm = torch.randperm(x.shape[0], device=x.device)
            if self.cfg.cutmix > 0 and (self.cfg.mixup <= 0 or np.random.rand() < 0.5):
                x, lam = cutmix(x, perm, float(np.random.beta(self.cfg.cutmix, self.cfg.cutmix)))
            else:
                lam = float(np.random.beta(self.cfg.mixup, self.cfg.mixup))
                x = lam * x + (1 - lam) * x[perm]
            logits = self.model(x)
            loss = lam * self._loss(logits, y) + (1 - lam) * self._loss(logits, y[perm])
        else:
            loss = self._loss(self.model(x), y)
        if self.domain is not None:
            target = self._target_batch()
            feats = torch.cat([self.model.forward_features(x), self.model.forward_features(target)])
            domains = torch.cat([torch.zeros(len(x)), torch.ones(len(target))]).long().to(self.device)
            domain_loss = nn.functional.cross_entropy(self.domain(feats), domains)
            self.log("domain_loss", domain_loss, on_epoch=True, on_step=False, batch_size=x.shape[0])
            loss = loss + self.cfg.domain_weight * domain_loss
        if self.l2sp is not None:
            loss = loss + self.l2sp(self.model)
        if not torch.isfinite(loss):
            raise MedtlError(None, f"loss became {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}: "
                             "lower the learning rate or check the inputs")  # fmt: skip
        self.log("train_loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=x.shape[0])
        return loss

    def _target(self, label: torch.Tensor) -> torch.Tensor:
        return label[:, 0].long() if label.shape[1] == 1 else label

    def validation_step(self, batch, batch_idx):
        x, y = batch["image"], self._target(batch["label"])
        logits = tta_logits(self.model, x, self.cfg.flips if self.cfg.tta else ())
        self.log("val_loss", self._loss(logits, y), on_epoch=True, batch_size=x.shape[0])
        self._val.append((probabilities(logits.float(), self.task).detach().cpu(), batch["label"].cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        probs = torch.cat([p for p, _ in self._val])
        labels = torch.cat([y for _, y in self._val])
        self._val.clear()
        if self.trainer.world_size > 1:  # DDP: each process saw a shard; AUROC needs them all
            probs = self.all_gather(probs.to(self.device)).flatten(0, 1).cpu()
            labels = self.all_gather(labels.to(self.device)).flatten(0, 1).cpu()
        self.log("val_auroc", auroc(labels.numpy(), probs.float().numpy()), prog_bar=True)


def auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    """AUROC: binary, the positive class; multi-class, macro one-vs-rest; multi-label, the mean
    over findings that have both classes among the known (non-NaN) labels. NaN if none has.

    >>> auroc(np.array([[0, 1], [1, 1], [1, 0], [0, 0]]), np.array([[.1, .9], [.8, .7], [.9, .2], [.2, .1]]))
    1.0
    """
    from sklearn.metrics import roc_auc_score

    if labels.shape[1] > 1:  # multi-label: one sigmoid output per finding
        per = []
        for j in range(labels.shape[1]):
            known = ~np.isnan(labels[:, j])
            if len(np.unique(labels[known, j])) == 2:
                per.append(roc_auc_score(labels[known, j], probs[known, j]))
        return float(np.mean(per)) if per else float("nan")
    y = labels[:, 0]
    if len(np.unique(y)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))))


def cutmix(x: torch.Tensor, perm: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Paste a box of ``x[perm]`` into ``x`` covering about ``1 - lam`` of the image (2D or 3D);
    returns the mixed batch and the exact share of the original image left.

    >>> x = torch.zeros(2, 1, 8, 8); x[1] = 1
    >>> mixed, lam = cutmix(x, torch.tensor([1, 0]), 0.75)
    >>> round(float(mixed[0].mean()), 4) == round(1 - lam, 4)
    True
    """
    # not monai.transforms.CutMix: it needs a fixed batch size and sizes its box as if every image
    # were 2D; here the loss mixes by the area actually pasted, in 2D and 3D
    spatial = x.shape[2:]
    side = (1 - lam) ** (1 / len(spatial))  # the box's share of each axis
    box = []
    for n in spatial:
        length = int(round(n * side))
        start = int(np.random.randint(0, n - length + 1))
        box.append(slice(start, start + length))
    out = x.clone()
    out[(slice(None), slice(None), *box)] = x[perm][(slice(None), slice(None), *box)]
    kept = 1 - float(np.prod([b.stop - b.start for b in box])) / float(np.prod(spatial))
    return out, kept
