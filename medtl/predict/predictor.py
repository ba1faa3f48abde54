"""One trained run, one call per image: :class:`Predictor`.

>>> import inspect
>>> list(inspect.signature(Predictor.predict).parameters)
['self', 'image', 'series']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..train.inference import RunModel
from .ood import read_ood

__all__ = ["Predictor", "Prediction"]


@dataclass
class Prediction:
    """What a run says about one image.

    Attributes:
        probabilities: calibrated probability per output name (the run's ``labels.json``).
        decision: the outputs decided present (binary: the class at the run's threshold;
            multi-class: the most probable; multi-label: every finding at 0.5 or above).
        ood_score: Mahalanobis distance of the image's embedding to the training data (``None``
            when the run holds no statistics: see ``medtl calibrate-ood``).
        ood: the score is above the run's threshold: the image is unlike the training data, and
            the probabilities should not be trusted.
        spread: an ensemble's disagreement on the image: the largest standard deviation, over
            outputs, of its members' (uncalibrated) probabilities; ``None`` for one network.
    """

    probabilities: dict[str, float]
    decision: list[str]
    ood_score: float | None = None
    ood: bool | None = None
    logits: list[float] = field(default_factory=list)
    spread: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"probabilities": self.probabilities, "decision": self.decision, "ood_score": self.ood_score,
                "ood": self.ood, "spread": self.spread}  # fmt: skip


class Predictor(RunModel):
    """A finished run loaded once: preprocessing, test-time flips, calibration, threshold and
    out-of-distribution statistics, applied exactly as ``medtl evaluate`` and ``medtl predict`` do.

    Args:
        run_dir: a ``medtl train`` (or ``medtl adapt``) output folder.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; default: a GPU when there is one.

    Raises:
        ConfigError: not a finished run directory.

    Example:
        >>> pred = Predictor("out/run-cxr")                       # doctest: +SKIP
        >>> p = pred.predict("sample_data/cxr/p002/IM000102.dcm")  # doctest: +SKIP
        >>> p.probabilities, p.decision, p.ood                     # doctest: +SKIP
        ({'label=0': 0.12, 'label=1': 0.88}, ['label=1'], False)
    """

    def __init__(self, run_dir: str | os.PathLike, *, device: str | torch.device | None = None):
        super().__init__(run_dir, device=device)
        self.ood = read_ood(self.run_dir)

    def predict(self, image, series: str | None = None) -> Prediction:
        """Predict one image: an :class:`~medtl.io.Image`, a file, or a folder holding a DICOM
        series (``series``: its UID or the scan's pseudonym when the folder holds several).

        Raises:
            ImageReadError: the file cannot be read (naming it and why).
            ConfigError: the image does not fit the run (dimensions, channels).
        """
        from ..io import Image, load_image

        img = image if isinstance(image, Image) else load_image(image, series=series)
        x, _ = self.prepare(img)
        return self.predict_inputs(x)[0]

    def predict_inputs(self, x: torch.Tensor | np.ndarray, batch_size: int = 16) -> list[Prediction]:
        """Predictions for prepared network inputs (B, C, *size) (what :meth:`prepare` returns)."""
        logits, feats = self.outputs(x, batch_size)
        return self.predictions(logits, feats)

    def predictions(self, logits: np.ndarray, features: np.ndarray) -> list[Prediction]:
        """Predictions from logits (B, K) and embeddings (B, F) of :meth:`outputs`."""
        probs = self.calibrated(logits)
        scores = self.ood.scores(features) if self.ood is not None else [None] * len(probs)
        spread = [None] * len(probs)
        if hasattr(self.model, "member_probabilities") and len(probs):
            # the heads are linear, so members' heads on flip-averaged embeddings give their
            # flip-averaged logits
            with torch.no_grad():
                members = self.model.member_probabilities(torch.as_tensor(features, device=self.device))
            spread = members.std(0, unbiased=False).amax(1).cpu().numpy().tolist()
        names = [str(n) for n in self.labels]
        out = []
        for k, p in enumerate(probs):
            score = None if scores[k] is None else float(scores[k])
            out.append(Prediction(
                probabilities={n: float(v) for n, v in zip(names, p, strict=True)},
                decision=[names[j] for j in self.decide(p)],
                ood_score=score,
                ood=None if score is None else bool(score > self.ood.threshold),
                logits=[float(v) for v in logits[k]],
                spread=None if spread[k] is None else float(spread[k]),
            ))  # fmt: skip
        return out
