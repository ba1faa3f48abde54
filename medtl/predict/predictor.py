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

from ..data.familiar import input_facts, read_familiar, unfamiliar_reasons
from ..train.inference import RunModel
from .ood import read_ood

__all__ = ["Predictor", "Prediction"]


@dataclass
class Prediction:
    """What a run says about one image.

    Attributes:
        probabilities: calibrated probability per output name (the run's ``labels.json``).
        decision: the outputs the model decides present (binary: the class at the run's
            threshold; multi-class: the most probable; multi-label: every finding at 0.5 or
            above). Not to be acted on where ``assessed`` is false.
        ood_score: Mahalanobis distance of the image's embedding to the training data (``None``
            when the run holds no statistics: see ``medtl calibrate-ood``).
        ood: the image is unlike the training data: a rule of the run's ``familiar.json`` says so
            (a colour image for a grey run, an unseen DICOM modality ...) or its score is above
            the run's threshold; ``None`` when neither could be checked.
        ood_reason: why, in words ("colour image; the run was trained on grey images", "far from
            the training images (score 41.2 > 30.5)"), rules first; ``""`` when familiar.
        assessed: false for an unfamiliar image (unless the predictor was made with
            ``assess_unfamiliar``): the model's output does not apply to it, and outputs show
            "not assessed" instead of its decision.
        spread: an ensemble's disagreement on the image: the largest standard deviation, over
            outputs, of its members' (uncalibrated) probabilities; ``None`` for one network.
    """

    probabilities: dict[str, float]
    decision: list[str]
    ood_score: float | None = None
    ood: bool | None = None
    logits: list[float] = field(default_factory=list)
    spread: float | None = None
    ood_reason: str = ""
    assessed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"probabilities": self.probabilities, "decision": self.decision, "ood_score": self.ood_score,
                "ood": self.ood, "ood_reason": self.ood_reason, "assessed": self.assessed,
                "spread": self.spread}  # fmt: skip


class Predictor(RunModel):
    """A finished run loaded once: preprocessing, test-time flips, calibration, threshold and
    out-of-distribution statistics, applied exactly as ``medtl evaluate`` and ``medtl predict`` do.

    Args:
        run_dir: a ``medtl train`` (or ``medtl adapt``) output folder.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; default: a GPU when there is one.
        assess_unfamiliar: give an unfamiliar image a decision anyway (``assessed`` stays true;
            ``ood`` and ``ood_reason`` still say it is unfamiliar).

    Raises:
        ConfigError: not a finished run directory.

    Example:
        >>> pred = Predictor("out/run-cxr")                       # doctest: +SKIP
        >>> p = pred.predict("sample_data/cxr/p002/IM000102.dcm")  # doctest: +SKIP
        >>> p.probabilities, p.decision, p.ood, p.assessed         # doctest: +SKIP
        ({'label=0': 0.12, 'label=1': 0.88}, ['label=1'], False, True)
        >>> pred.predict("holiday.jpg").ood_reason                 # doctest: +SKIP
        'colour image; the run was trained on grey images'
    """

    def __init__(self, run_dir: str | os.PathLike, *, device: str | torch.device | None = None,
                 assess_unfamiliar: bool = False):  # fmt: skip
        super().__init__(run_dir, device=device)
        self.ood = read_ood(self.run_dir)
        self.familiar = read_familiar(self.run_dir)  # None: trained before medtl recorded it, no rule applies
        self.assess_unfamiliar = bool(assess_unfamiliar)

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
        return self.predict_inputs(x, facts=[input_facts(img)])[0]

    def predict_inputs(self, x: torch.Tensor | np.ndarray, batch_size: int = 16,
                       facts: list[dict] | None = None) -> list[Prediction]:  # fmt: skip
        """Predictions for prepared network inputs (B, C, *size) (what :meth:`prepare` returns);
        ``facts``: each input's :func:`~medtl.data.familiar.input_facts`, for the rules (without
        them only the distance can flag an input)."""
        logits, feats = self.outputs(x, batch_size)
        return self.predictions(logits, feats, facts)

    def unfamiliar(self, score: float | None, facts: dict | None) -> tuple[bool | None, str]:
        """``(ood, reason)`` of one input: the run's rules on ``facts`` first, then its distance
        ``score`` against the threshold; ``ood`` is ``None`` when neither could be checked.

        >>> pred = Predictor("out/run-cxr")                                   # doctest: +SKIP
        >>> pred.unfamiliar(41.2, {"colour": "rgb", "modality": "", "dims": 2})  # doctest: +SKIP
        (True, 'colour image; the run was trained on grey images; far from the training images (score 41.2 > 30.5)')
        """
        reasons = unfamiliar_reasons(self.familiar, facts)
        if score is not None and score > self.ood.threshold:
            digits = 1  # enough digits that the two numbers differ in print
            while digits < 6 and f"{score:.{digits}f}" == f"{self.ood.threshold:.{digits}f}":
                digits += 1
            reasons.append(f"far from the training images (score {score:.{digits}f} > "
                           f"{self.ood.threshold:.{digits}f})")  # fmt: skip
        if reasons:
            return True, "; ".join(reasons)
        return (None if score is None else False), ""

    def predictions(
        self, logits: np.ndarray, features: np.ndarray, facts: list[dict] | None = None
    ) -> list[Prediction]:
        """Predictions from logits (B, K) and embeddings (B, F) of :meth:`outputs`, with each
        input's ``facts`` for the rules (:meth:`unfamiliar`)."""
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
            ood, reason = self.unfamiliar(score, facts[k] if facts else None)
            out.append(Prediction(
                probabilities={n: float(v) for n, v in zip(names, p, strict=True)},
                decision=[names[j] for j in self.decide(p)],
                ood_score=score,
                ood=ood,
                logits=[float(v) for v in logits[k]],
                spread=None if spread[k] is None else float(spread[k]),
                ood_reason=reason,
                assessed=not ood or self.assess_unfamiliar,
            ))  # fmt: skip
        return out
