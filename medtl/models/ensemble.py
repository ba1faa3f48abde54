"""An ensemble of classifiers that every command treats as one network.

:class:`EnsembleClassifier` holds K trained :class:`~medtl.models.Classifier` members of one
architecture (``medtl train --ensemble K``: K seeds on one split) and averages their
*probabilities* (softmax for binary and multi-class, a sigmoid per finding for multi-label). Its
``forward`` returns the logarithm of those averages as logits (multi-label: their log-odds), so
the run's calibration, threshold, evaluation and saliency code applies unchanged: a softmax (or
sigmoid) of the ensemble's logits gives back the averaged probabilities exactly.

Its embedding (``forward_features``) is the members' embeddings side by side, which is what the
out-of-distribution statistics are fitted on; ``member_probabilities`` gives each member's own
probabilities, whose spread says how much the members disagree on an input.

>>> import torch
>>> from medtl.models import create
>>> members = [create("resnet10", num_classes=2).eval() for _ in range(3)]
>>> ens = EnsembleClassifier(members, task="binary").eval()
>>> x = torch.randn(4, 1, 32, 32)
>>> mean = torch.stack([m(x).softmax(1) for m in members]).mean(0)
>>> torch.allclose(ens(x).softmax(1), mean, atol=1e-6), ens.num_features
(True, 1536)
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["EnsembleClassifier"]

_EPS = 1e-7


class EnsembleClassifier(nn.Module):
    """K members averaged in probability (see the module docstring).

    Args:
        members: trained classifiers of one backbone, input and output size.
        task: ``binary``, ``multiclass`` (softmax) or ``multilabel`` (sigmoid per output).

    Raises:
        ConfigError: fewer than two members, or members that differ in backbone or sizes.
    """

    def __init__(self, members: list[nn.Module], task: str):
        super().__init__()
        if len(members) < 2:
            raise ConfigError(None, f"an ensemble needs two or more members, not {len(members)}")
        first = members[0]
        for m in members[1:]:
            if (m.backbone, m.num_features, m.num_classes) != (first.backbone, first.num_features, first.num_classes):
                raise ConfigError(None, "ensemble members must share backbone, embedding width and outputs")
        self.members = nn.ModuleList(members)
        self.task = task
        self.spec, self.backbone, self.source = first.spec, first.backbone, None
        self.input_convention = first.input_convention
        self.spatial_dims, self.in_channels = first.spatial_dims, first.in_channels
        self.member_features = first.num_features
        self.num_features = first.num_features * len(members)

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The members' embeddings side by side, (batch, K × F)."""
        return torch.cat([m.forward_features(x) for m in self.members], dim=1)

    def member_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Each member's logits from :meth:`forward_features` output, (K, batch, outputs)."""
        chunks = features.split(self.member_features, dim=1)
        return torch.stack([m.forward_head(f) for m, f in zip(self.members, chunks, strict=True)])

    def member_probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """Each member's probabilities, (K, batch, outputs)."""
        logits = self.member_logits(features)
        return logits.sigmoid() if self.task == "multilabel" else logits.softmax(-1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of the averaged probabilities (their logarithm; multi-label: their log-odds)."""
        p = self.member_probabilities(features).mean(0)
        if self.task == "multilabel":
            p = p.clamp(_EPS, 1 - _EPS)
            return torch.log(p) - torch.log1p(-p)
        return torch.log(p.clamp_min(_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def cam_layer(self) -> nn.Module:
        """The first member's Grad-CAM layer (its grid is every member's); Grad-CAM of an ensemble
        averages the members' maps (:mod:`medtl.explain.methods`)."""
        return self.members[0].cam_layer()

    def cam_module(self, level: str | None = None) -> tuple[nn.Module, bool]:
        """The first member's layer at ``level`` (see :meth:`Classifier.cam_module`)."""
        return self.members[0].cam_module(level)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every member's parameters by depth, group by group (``stem`` ... ``head``): freezing and
        the saliency sanity check act on all members at once."""
        groups: dict[str, list[nn.Parameter]] = {}
        for m in self.members:
            for name, params in m.param_groups().items():
                groups.setdefault(name, []).extend(params)
        return groups
