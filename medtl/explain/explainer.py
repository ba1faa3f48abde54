"""A trained run, ready to explain: :class:`Explainer`.

It holds what a run directory says about its inputs and outputs (preprocessing, the flips of
test-time augmentation, calibration, threshold, label names, task) and answers the questions
every explanation asks: what is the network input of this image and where is it in the patient,
what are the calibrated probabilities, which outputs should be explained, and what is a method's
map. :func:`medtl.explain.explain` runs it over many inputs; step 9's report reuses it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, MedtlError
from ..train.inference import RunModel
from .methods import Settings, saliency

__all__ = ["Explainer", "display_array", "load_item"]


class Explainer(RunModel):
    """The run at ``run_dir`` (a finished ``medtl train`` output), on the CPU.

    Attributes:
        model, spec, labels, task, calibration, threshold, flips: as the run stored them
            (:class:`~medtl.train.inference.RunModel`).
        baseline: the black input, (1, C, 1, ...), for integrated gradients and deletion.
        settings: :class:`~medtl.explain.methods.Settings` of the methods.

    Raises:
        ConfigError: not a finished run directory.
    """

    def __init__(self, run_dir: str | os.PathLike, settings: Settings | None = None):
        from ..data.transforms import black_input
        from .choice import read_choice

        super().__init__(run_dir, device="cpu")
        self.baseline = torch.from_numpy(black_input(self.spec))[None]
        self.settings = settings or Settings()
        #: the run's saliency check (``saliency.json``), or ``None``
        self.choice = read_choice(self.run_dir)
        #: the constant input of the ``@mean`` baseline, as the saliency check set it
        self.mean_input = None
        if self.choice and self.choice.get("baseline_mean"):
            mean = torch.tensor(self.choice["baseline_mean"], dtype=torch.float32)
            self.mean_input = mean.reshape(1, -1, *([1] * len(self.spec.size)))

    # ------------------------------------------------------------------ inputs
    def display(self, img) -> np.ndarray:
        """The image on its own grid in [0, 1] as the run windows it (see :func:`display_array`)."""
        return display_array(img, self.spec)

    def unnormalised(self, x: torch.Tensor) -> np.ndarray:
        """The first channel of a network input mapped back to [0, 1] (for drawing volumes)."""
        from ..data.transforms import channel_stats

        arr = x[0, 0].detach().numpy().astype(np.float64)
        c = x.shape[1]
        std, mean = channel_stats(self.spec.std, c), channel_stats(self.spec.mean, c)
        if std is not None:
            arr = arr * float(std[0])
        if mean is not None:
            arr = arr + float(mean[0])
        lo, hi = self.spec.value_range
        if self.spec.preset == "none":  # values as loaded: the run knows no range, so the display's rule
            lo, hi = np.percentile(arr, (0.5, 99.5))
            hi = max(hi, lo + 1e-6)
        return np.clip((arr - lo) / (hi - lo), 0, 1)

    def cam_grid(self, method: str = "gradcam") -> tuple[int, ...]:
        """The grid a method's map can point on: for Grad-CAM the feature map its layer reads (the
        last is 1/32 of the input for every registered backbone), else the input itself. A map
        cannot point finer than one of its cells."""
        from .methods import LAYER_METHODS, split_method

        name, level = split_method(method)
        if name not in LAYER_METHODS:
            return tuple(self.spec.size)
        module, to_input = self.model.cam_module(level)
        seen: dict[str, tuple[int, ...]] = {}
        hook = module.register_forward_hook(
            lambda m, args, out: seen.update(shape=tuple((args[0] if to_input else out).shape[2:]))
        )
        try:
            with torch.no_grad():
                self.model.eval()(torch.zeros(1, self.spec.channels, *self.spec.size))
        finally:
            hook.remove()
        return seen["shape"]

    # ------------------------------------------------------------------ outputs
    def logits(self, batch: torch.Tensor | np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Flip-averaged logits (B, K) of network inputs, at most ``settings.batch_size`` at a time."""
        return super().logits(batch, batch_size or self.settings.batch_size)

    def probabilities(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        """Calibrated probabilities (B, K), as ``medtl evaluate`` reports them."""
        return self.calibrated(self.logits(batch))

    def target_name(self, index: int) -> str:
        return str(self.labels[index])

    def parse_target(self, text: str | int) -> int:
        """An output by index (``1``), name (``label=1``) or value after ``=`` (``1`` when no name
        is ``1``); an unknown one raises, listing the outputs."""
        names = [str(n) for n in self.labels]
        s = str(text).strip()
        if s in names:
            return names.index(s)
        tails = [n.split("=", 1)[1] if "=" in n else None for n in names]
        if s in tails:
            return tails.index(s)
        if s.lstrip("-").isdigit() and 0 <= int(s) < len(names):
            return int(s)
        raise ConfigError(None, f"unknown target '{s}'; the run's outputs are {', '.join(names)} (or 0..{len(names) - 1})")

    def predicted_targets(self, probs: np.ndarray) -> tuple[list[int], str]:
        """The outputs to explain for one input's probabilities (K,), and the rule used: the finding
        of a binary run, whatever was decided (a negative case shows what little evidence for it
        there is); the predicted class of a multi-class run; every finding at 0.5 or above of a
        multi-label run (the most probable one when none is)."""
        if self.task == "binary":
            return [1], "the finding, on every case whatever was decided"
        if self.task == "multiclass":
            return [int(np.argmax(probs))], "predicted class"
        positive = [int(j) for j in np.flatnonzero(probs >= 0.5)]
        if positive:
            return positive, "findings with probability >= 0.5"
        return [int(np.argmax(probs))], "no finding reached 0.5: the most probable one"

    def labelled_targets(self, labels: tuple[float, ...]) -> list[int]:
        """The outputs a row's labels say are present (what a lesion mask outlines)."""
        if not labels or all(np.isnan(v) for v in labels):
            return []
        if self.task == "multilabel":
            return [j for j, v in enumerate(labels) if v == 1]
        value = labels[0]
        return [int(value)] if not np.isnan(value) and int(value) != 0 and int(value) < len(self.labels) else []

    # ------------------------------------------------------------------ maps
    def saliency(self, x: torch.Tensor, target: int, method: str, model=None) -> np.ndarray:
        """One map on the network grid, (*size), ``≥ 0``; ``model`` defaults to the run's."""
        return saliency(model if model is not None else self.model, x, target, method, task=self.task,
                        flips=self.flips, baseline=self.baseline, mean=self.mean_input,
                        settings=self.settings).numpy()  # fmt: skip

    def deletion(self, x: torch.Tensor, target: int, smap: np.ndarray, steps: int, seed: int) -> dict[str, Any]:
        """Deletion curve of a map and its random-order reference (:mod:`medtl.explain.faithfulness`)."""
        from .faithfulness import auc, deletion_curve, random_deletion_curve

        def prob(batch: np.ndarray) -> np.ndarray:
            return self.probabilities(batch)[:, target]

        arr, base = x[0].numpy(), self.baseline[0].numpy()
        size = self.settings.batch_size
        curve = deletion_curve(prob, arr, smap, base, steps=steps, batch_size=size)
        ref = random_deletion_curve(prob, arr, base, steps=steps, repeats=1, seed=seed, batch_size=size)
        return {"curve": curve, "random": ref, "auc": auc(curve), "random_auc": auc(ref)}


def display_array(img, spec) -> np.ndarray:
    """``img`` on its own grid in [0, 1] as a run with preprocessing ``spec`` windows it:
    (column, row) grey, or (column, row, 3) for a colour image in a colour run; volumes (i, j, k)
    grey. Needs only the spec, never the network (reports draw thousands of these).

    >>> import numpy as np
    >>> from medtl.io import Image
    >>> from medtl.data.transforms import PreprocessSpec
    >>> img = Image(np.linspace(0, 4095, 12, dtype=np.float32).reshape(3, 4), np.eye(4))
    >>> arr = display_array(img, PreprocessSpec(preset="xr", size=(8, 8)))
    >>> arr.shape, float(arr.min()) >= 0.0, float(arr.max()) <= 1.0
    ((3, 4), True, True)
    """
    from ..data.transforms import intensity

    arr = intensity(img, spec)
    if spec.preset == "none":
        lo, hi = np.percentile(arr, (0.5, 99.5))
        arr = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1)
    if arr.shape[0] == 3 and img.channels == 3:
        return np.moveaxis(arr, 0, -1)
    return arr[0]


def load_item(path: str, series: str | None = None):
    """An image by manifest path (``npz://`` items included); errors keep the file's name."""
    from ..data.npz import NPZ_SCHEME, load_npz_item
    from ..io import load_image

    try:
        return load_npz_item(path) if path.startswith(NPZ_SCHEME) else load_image(path, series=series)
    except MedtlError:
        raise
    except Exception as exc:  # noqa: BLE001 - a reader's failure must still name the file
        raise MedtlError(path, f"could not be read ({type(exc).__name__}: {exc})") from exc
