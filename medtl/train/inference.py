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

__all__ = ["tta_logits", "tta_outputs", "predict_logits", "predict_outputs", "prepare_input", "RunModel"]


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


def tta_outputs(model: nn.Module, x: torch.Tensor, flips: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, features)`` averaged over the input and its flips: the same forward passes and
    the same logits as :func:`tta_logits`, plus the pooled embeddings (B, F) the head reads
    (what out-of-distribution scores are computed on). ``model`` must have ``forward_features``
    and ``forward_head`` (a :class:`medtl.models.Classifier`).

    >>> from medtl.models import create
    >>> net = create("resnet10", num_classes=2).eval()
    >>> logits, feats = tta_outputs(net, torch.zeros(2, 1, 32, 32), flips=(1,))
    >>> logits.shape, feats.shape
    (torch.Size([2, 2]), torch.Size([2, 512]))
    """
    feats = model.forward_features(x)
    logits = model.forward_head(feats)
    for axis in flips:
        f = model.forward_features(x.flip(axis + 2))
        feats = feats + f
        logits = logits + model.forward_head(f)
    n = 1 + len(flips)
    return logits / n, feats / n


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


@torch.no_grad()
def predict_outputs(
    model: nn.Module, loader, *, flips: Sequence[int] = (), device: str | torch.device | None = None,
    progress: bool = False, desc: str = "inference",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:  # fmt: skip
    """Like :func:`predict_logits`, with the embeddings: ``(logits (N, K), features (N, F),
    labels or None)`` (:func:`tta_outputs`); for out-of-distribution statistics. ``progress``
    reports the batches as ``desc`` (:func:`medtl.progress.track`).

    >>> from medtl.models import create
    >>> data = [{"image": torch.zeros(2, 1, 32, 32), "label": torch.tensor([[0.0], [1.0]])}]
    >>> logits, feats, labels = predict_outputs(create("resnet10"), data)
    >>> logits.shape, feats.shape, labels[:, 0].tolist()
    ((2, 2), (2, 512), [0.0, 1.0])
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs, feats, labels = [], [], []
    from ..progress import track

    try:
        for batch in track(loader, desc, "batch", enabled=progress, leave=False):
            lo, fe = tta_outputs(model, batch["image"].to(device), flips)
            outs.append(lo.float().cpu().numpy())
            feats.append(fe.float().cpu().numpy())
            if "label" in batch:
                labels.append(np.asarray(batch["label"], dtype=np.float64))
    finally:
        model.train(was_training)
    if not outs:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), None
    return np.concatenate(outs), np.concatenate(feats), (np.concatenate(labels) if labels else None)


def prepare_input(img, spec) -> tuple[torch.Tensor, np.ndarray]:
    """``(x, affine)``: the network input (1, C, *size) of an :class:`~medtl.io.Image` under a run's
    :class:`~medtl.data.transforms.PreprocessSpec`, and the affine from its voxel indices to RAS+
    mm. Module-level, so that DataLoader workers need only the spec, never the network.

    Raises:
        ConfigError: the image does not fit the run (dimensions, channels), saying why.

    >>> from medtl.data.transforms import PreprocessSpec
    >>> from medtl.io import Image
    >>> img = Image(np.zeros((40, 30), np.float32), np.eye(4), {})
    >>> prepare_input(img, PreprocessSpec(size=(16, 16)))[0].shape
    torch.Size([1, 1, 16, 16])
    >>> prepare_input(img, PreprocessSpec(size=(8, 8, 8)))
    Traceback (most recent call last):
    ...
    medtl.errors.ConfigError: the run takes 3D images; this one is 2D (shape 40x30)
    """
    from ..data.transforms import preprocess_with_affine
    from ..errors import ConfigError

    dims = len(spec.size)
    if img.ndim != dims:
        raise ConfigError(None, f"the run takes {dims}D images; this one is {img.ndim}D "
                          f"(shape {'x'.join(map(str, img.spatial_shape))})")  # fmt: skip
    arr, affine = preprocess_with_affine(img, spec)
    if arr.shape[0] != spec.channels:
        raise ConfigError(None, f"the image gives {arr.shape[0]} channels; the run takes {spec.channels}")
    return torch.from_numpy(arr)[None], affine


class RunModel:
    """A finished run directory loaded once for inference: the network and everything the run
    says about its inputs and outputs. :class:`medtl.predict.Predictor` and
    :class:`medtl.explain.Explainer` build on it, so preprocessing, test-time flips, calibration
    and the threshold are applied the same way by every command.

    Attributes:
        run_dir, cfg: the folder and its resolved :class:`~medtl.train.config.TrainConfig`.
        model, spec, labels: network (eval mode, on ``device``), preprocessing, output names.
        task: ``binary``, ``multiclass`` or ``multilabel``; decides the probability rule.
        calibration, threshold: as fitted on validation (``calibration.json``, ``threshold.json``;
            0.5 for a run without one).
        flips: network spatial axes averaged at test time (empty when the run has no TTA).
        device: where the network runs.

    Raises:
        ConfigError: not a finished run directory.
    """

    def __init__(self, run_dir, *, device: str | torch.device | None = "cpu"):
        import json
        from pathlib import Path

        from ..errors import ConfigError
        from ..evaluate.calibration import read_calibration
        from ..rundir import load_run, read_config
        from ..tasks import task_for

        self.run_dir = Path(run_dir)
        if not (self.run_dir / "model.pt").is_file():
            raise ConfigError(self.run_dir, "not a run directory (no model.pt): train one with `medtl train`")
        self.cfg = read_config(self.run_dir)
        self.model, self.spec, self.labels = load_run(self.run_dir)
        self.task = task_for(self.cfg.label_columns, len(self.labels))
        self.calibration = read_calibration(self.run_dir)
        threshold_file = self.run_dir / "threshold.json"
        self.threshold = float(json.loads(threshold_file.read_text())["threshold"]) if threshold_file.is_file() else 0.5
        self.flips = tuple(self.cfg.flips) if self.cfg.tta else ()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
            self.model.to(self.device).eval()
        except (RuntimeError, AssertionError) as exc:  # "cuda" without a GPU, "gpu", "cuda:7" on a 2-GPU node
            raise ConfigError(None, f"device '{device}' is not usable here ({str(exc).splitlines()[0]}); use cpu, "
                              "cuda or cuda:N") from None  # fmt: skip

    @property
    def spatial_dims(self) -> int:
        return len(self.spec.size)

    def prepare(self, img) -> tuple[torch.Tensor, np.ndarray]:
        """``(x, affine)``: the network input (1, C, *size) of an :class:`~medtl.io.Image` (on the
        CPU) and the affine from its voxel indices to RAS+ mm (:func:`prepare_input`)."""
        return prepare_input(img, self.spec)

    @torch.no_grad()
    def outputs(self, batch: torch.Tensor | np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Flip-averaged ``(logits (B, K), features (B, F))`` of network inputs, ``batch_size`` at a
        time on :attr:`device`."""
        t = torch.as_tensor(np.asarray(batch, np.float32)) if isinstance(batch, np.ndarray) else batch
        self.model.eval()
        logits, feats = [], []
        for i in range(0, len(t), batch_size):
            lo, fe = tta_outputs(self.model, t[i : i + batch_size].to(self.device), self.flips)
            logits.append(lo.float().cpu().numpy())
            feats.append(fe.float().cpu().numpy())
        if not logits:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, self.model.num_features), np.float32)
        return np.concatenate(logits), np.concatenate(feats)

    def logits(self, batch: torch.Tensor | np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Flip-averaged logits (B, K) of network inputs, ``batch_size`` at a time."""
        return self.outputs(batch, batch_size)[0]

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (B, K) of logits, as ``medtl evaluate`` reports them."""
        from ..evaluate.calibration import apply_calibration

        return apply_calibration(logits, self.calibration, self.task)

    def decide(self, probs: np.ndarray) -> list[int]:
        """The outputs decided present for one input's calibrated probabilities (K,): binary, the
        positive class at the run's threshold (else the negative); multi-class, the most probable;
        multi-label, every finding at 0.5 or above (possibly none)."""
        if self.task == "binary":
            return [int(probs[1] >= self.threshold)]
        if self.task == "multiclass":
            return [int(np.argmax(probs))]
        return [int(j) for j in np.flatnonzero(probs >= 0.5)]
