"""Lightning pieces that make a run safe to kill and honest to watch.

* :class:`RandomStates` keeps every random stream in each checkpoint (Python, NumPy, torch, CUDA,
  and the augmentation's own MONAI streams) and restores them on resume, so a run killed after
  epoch k and resumed trains epochs k+1... exactly as an uninterrupted run does.
* :class:`AtomicCheckpointIO` writes checkpoints to a temporary name and renames them: a kill
  while saving leaves the previous ``last.ckpt`` whole.
* :class:`EpochLog` prints one line per epoch when there is no progress bar (a batch job's log).
"""

from __future__ import annotations

import random
import sys
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["RandomStates", "AtomicCheckpointIO", "EpochLog"]


def _random_streams(root: Any) -> list[np.random.RandomState]:
    """Every ``numpy.random.RandomState`` a MONAI transform tree draws from, in a fixed order."""
    found: list[np.random.RandomState] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop(0)
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.random.RandomState):
            found.append(obj)
            continue
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
            continue
        if type(obj).__module__.startswith(("monai.", "medtl.")) and hasattr(obj, "__dict__"):
            stack.extend(value for _, value in sorted(vars(obj).items()))
    return found


def _plain_numpy_state(state: tuple) -> list:
    # plain lists: checkpoints load with weights_only=True, which refuses NumPy arrays
    name, keys, pos, has_gauss, gauss = state
    return [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]


def _numpy_state(plain: list) -> tuple:
    name, keys, pos, has_gauss, gauss = plain
    return (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss)


class RandomStates(L.Callback):
    """Save and restore every random state with the checkpoints (see the module docstring)."""

    def __init__(self) -> None:
        self._transforms: Any = None

    def track(self, transforms: Any) -> None:
        """Also keep the streams of this transform tree (the training augmentation)."""
        self._transforms = transforms

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        state = {
            "python": [version, list(internal), gauss],
            "numpy": _plain_numpy_state(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "transforms": [_plain_numpy_state(r.get_state()) for r in _random_streams(self._transforms)],
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        np.random.set_state(_numpy_state(state["numpy"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        streams = _random_streams(self._transforms)
        for stream, saved in zip(streams, state.get("transforms", []), strict=False):
            stream.set_state(_numpy_state(saved))


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the checkpoint, then rename it over the old one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        from ..rundir import save_torch

        save_torch(checkpoint, path)


class EpochLog(L.Callback):
    """One line per epoch on stdout: losses, validation AUROC and the time it took."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [f"{k} {float(metrics[k]):.4f}" for k in ("train_loss", "val_loss", "val_auroc") if k in metrics]
        seconds = time.perf_counter() - self._start
        e = trainer.current_epoch
        print(f"epoch {e} ({e + 1} of at most {self.epochs}): {', '.join(parts)} ({seconds:.0f} s)", flush=True)
        sys.stdout.flush()
