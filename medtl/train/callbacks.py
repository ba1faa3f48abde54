"""Lightning pieces that make a run safe to kill and honest to watch.

* :class:`RandomStates` keeps every random stream in each checkpoint (Python, NumPy, torch, CUDA,
  and the augmentation's own MONAI streams) and restores them on resume, so a run killed after
  epoch k and resumed trains epochs k+1... exactly as an uninterrupted run does.
* :class:`AtomicCheckpointIO` writes checkpoints to a temporary name and renames them: a kill
  while saving leaves the previous ``last.ckpt`` whole.
* :class:`EpochLog` prints one line per epoch when there is no progress bar (a batch job's log),
  with the time so far and an ETA, and lines during an epoch that takes longer than 30 s.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

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
    """One line per epoch on stdout: losses, validation AUROC, the epoch's seconds, the time since
    training (re)started and an ETA of the epochs left (at most: early stopping may end sooner)::

        epoch 2 (3 of at most 20): train_loss 0.6012, val_loss 0.6390, val_auroc 0.7813 (41 s; 0:02:05
        elapsed, ETA 0:11:37 at most)

    With ``batches``, the training and validation batches of an epoch are reported on ``stream``
    (default stderr) by :class:`medtl.progress.LineProgress`, every 30 s only: a short epoch prints
    its one line, a long one shows it is alive. ``clock`` and ``stream`` are injectable for tests.
    """

    def __init__(self, epochs: int, *, batches: bool = False, clock: Callable[[], float] = time.monotonic,
                 stream: TextIO | None = None, out: TextIO | None = None) -> None:  # fmt: skip
        self.epochs, self.batches, self.clock, self.stream, self.out = epochs, batches, clock, stream, out
        self._start = self._began = clock()
        self._done = 0  # epochs finished in this session (a resumed run times only its own)
        self._bar: Any = None

    def _open(self, trainer: L.Trainer, what: str, total: Any) -> None:
        from ..progress import LineProgress

        self._close()
        if self.batches and trainer.is_global_zero:
            total = None if total in (None, float("inf")) else total
            self._bar = LineProgress(total, f"epoch {trainer.current_epoch} {what}", "batch", stream=self.stream,
                                     clock=self.clock, step=None, leave=False)  # fmt: skip

    def _close(self) -> None:
        if self._bar is not None:  # its last line only after lines of its own: the epoch's line ends it
            if self._bar.lines:
                self._bar.close()
            else:
                self._bar.stop()
            self._bar = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self.clock()
        if self._done == 0:
            self._began = self._start
        self._open(trainer, "training", trainer.num_training_batches)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._open(trainer, "validation", sum(trainer.num_val_batches or [0]) or None)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()
        if not trainer.is_global_zero:
            return
        print(self.line(trainer.current_epoch, trainer.callback_metrics), file=self.out or sys.stdout, flush=True)

    def line(self, epoch: int, metrics: dict[str, Any]) -> str:
        """The line of a finished ``epoch`` (0-based) with its ``metrics``.

        >>> now = [0.0]
        >>> log = EpochLog(10, clock=lambda: now[0])
        >>> now[0] = 30.0
        >>> print(log.line(0, {"train_loss": 0.5, "val_auroc": 0.75}))
        epoch 0 (1 of at most 10): train_loss 0.5000, val_auroc 0.7500 (30 s; 0:00:30 elapsed, ETA 0:04:30 at most)
        """
        from ..progress import duration

        now = self.clock()
        self._done += 1
        parts = [f"{k} {float(metrics[k]):.4f}" for k in ("train_loss", "val_loss", "val_auroc") if k in metrics]
        elapsed = now - self._began
        left = self.epochs - (epoch + 1)
        eta = f", ETA {duration(elapsed / self._done * left)} at most" if left > 0 else ""
        return (f"epoch {epoch} ({epoch + 1} of at most {self.epochs}): {', '.join(parts)} "
                f"({now - self._start:.0f} s; {duration(elapsed)} elapsed{eta})")  # fmt: skip
