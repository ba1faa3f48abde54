"""Run directories: the files a run is made of, and loading a finished run.

A run directory is everything needed to predict later (../shared/DESIGN.md, "Runs"): weights,
resolved config, preprocessing spec, label names, calibration, threshold, metrics, model card and
the split it was trained on. This module reads and writes those files; where an output may go and
what ``--overwrite`` may remove is :mod:`medtl.outputs`, and how a file is written (atomically,
recorded in its folder's ledger, one writer at a time) is :mod:`medtl.files`. Their names are
re-exported here for the commands that import them from one place.

This module imports neither torch nor Lightning at import time.

>>> import tempfile, os
>>> with output_folder(os.path.join(tempfile.mkdtemp(), "eval"), "evaluate") as out:
...     _ = write_json(out / "metrics.json", {"auroc": 0.9})
...     mark_complete(out, "evaluate")
>>> describe(out)["command"], describe(out)["complete"]
('evaluate', True)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .files import (  # noqa: F401 - re-exported
    LEDGER,
    LOCK,
    RunLock,
    atomic_path,
    claim,
    save_torch,
    share_like_open,
    write_bytes,
    write_csv,
    write_json,
    write_text,
)
from .outputs import (  # noqa: F401 - re-exported
    KEPT_FILES,
    MARKER,
    RUN_COMMANDS,
    check_output_file,
    describe,
    is_run,
    mark_complete,
    output_folder,
)

__all__ = [
    "MARKER",
    "LOCK",
    "LEDGER",
    "describe",
    "is_run",
    "output_folder",
    "mark_complete",
    "check_output_file",
    "RunLock",
    "claim",
    "write_text",
    "write_bytes",
    "write_csv",
    "write_json",
    "save_torch",
    "atomic_path",
    "read_spec",
    "read_json",
    "weights_digest",
    "decision_digest",
    "KEPT_FILES",
]


# ----------------------------------------------------------------------------- the files of a run
CONFIG_FILE, SPLIT_FILE, SPEC_FILE, LABELS_FILE, WEIGHTS_FILE = (
    "config.yaml", "split.json", "preprocess.json", "labels.json", "model.pt",
)  # fmt: skip


def _not_a_run(run_dir: Path, missing: str) -> ConfigError:
    return ConfigError(run_dir, f"not a run directory (no {missing}): train one with `medtl train`")


def save_config(run_dir: str | os.PathLike, cfg) -> Path:
    """Write the resolved :class:`~medtl.train.config.TrainConfig` as ``config.yaml`` (atomically)."""
    import yaml

    return write_text(Path(run_dir) / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def read_config(run_dir: str | os.PathLike, *, missing_ok: bool = False):
    """The :class:`~medtl.train.config.TrainConfig` a run was trained with (``None`` when absent
    and ``missing_ok``).

    Raises:
        ConfigError: no ``config.yaml`` (unless ``missing_ok``), or one medtl cannot read.
    """
    import yaml

    from .train.config import TrainConfig

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        if missing_ok:
            return None
        raise _not_a_run(Path(run_dir), CONFIG_FILE)
    try:
        values = yaml.safe_load(path.read_text())
        return TrainConfig(**values)
    except (OSError, yaml.YAMLError, TypeError) as exc:
        raise ConfigError(path, f"unreadable run configuration ({exc})") from None


def save_split(run_dir: str | os.PathLike, split: dict[str, Any]) -> Path:
    """Write ``split.json``: which images (by key) and patients trained, validated and tested."""
    return write_json(Path(run_dir) / SPLIT_FILE, split)


def read_json(path: str | os.PathLike, what: str = "record") -> Any:
    """A JSON file medtl wrote, or ``None`` when it is absent.

    Raises:
        ConfigError: the file exists but cannot be read or parsed (``what`` names it).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(path, f"unreadable {what} ({exc})") from None


def read_split(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's ``split.json``, or ``None`` for a run written before splits were stored."""
    return read_json(Path(run_dir) / SPLIT_FILE, "split record")


def environment_versions() -> dict[str, str]:
    """Python and the versions of the libraries that shape a result: what a run, a prediction job
    and a paper's methods section record."""
    import platform

    out = {"python": platform.python_version()}
    for name in ("medtl", "torch", "lightning", "monai", "numpy", "scikit-learn", "pydicom", "nibabel", "captum"):
        module = {"scikit-learn": "sklearn"}.get(name, name)
        try:
            out[name] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a version is informative only
            out[name] = "unknown"
    return out


def weights_digest(run_dir: str | os.PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of a run's ``model.pt``: which weights an output came
    from (predict, evaluate and explain record it; report checks it).

    Raises:
        ConfigError: the run holds no ``model.pt`` (its training has not finished).
    """
    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise ConfigError(run_dir, f"holds no {WEIGHTS_FILE}: its training has not finished")
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


#: The files that decide what a run answers besides its weights: a prediction made before any of
#: them changed (``medtl calibrate-ood --overwrite``) is not the run's answer now.
DECISION_FILES = ("preprocess.json", "labels.json", "calibration.json", "threshold.json", "ood.npz")
#: Decision files added later, digested only where a run has them, so the digest of an older run
#: (and the predict jobs recorded with it) stays what it was. ``familiar.json``: the rules that
#: flag an input unlike the training images (:mod:`medtl.data.familiar`).
LATER_DECISION_FILES = ("familiar.json",)


def decision_digest(run_dir: str | os.PathLike) -> str:
    """The first 16 hex digits of a SHA-256 over the run's weights and :data:`DECISION_FILES`
    (a file that is absent counts as absent): equal digests, equal answers.

    Raises:
        ConfigError: the run holds no ``model.pt``.
    """
    run_dir = Path(run_dir)
    h = hashlib.sha256(weights_digest(run_dir).encode())
    for name in DECISION_FILES:
        path = run_dir / name
        h.update(f"\n{name}\n".encode())
        h.update(path.read_bytes() if path.is_file() else b"<absent>")
    for name in LATER_DECISION_FILES:
        path = run_dir / name
        if path.is_file():
            h.update(f"\n{name}\n".encode() + path.read_bytes())
    return h.hexdigest()[:16]


def read_spec(run_dir: str | os.PathLike):
    """The run's :class:`~medtl.data.transforms.PreprocessSpec` (how it maps an image to network
    input), without loading the network.

    Raises:
        ConfigError: the run holds no ``preprocess.json`` (its training has not finished).
    """
    from .data.transforms import PreprocessSpec

    path = Path(run_dir) / SPEC_FILE
    if not path.is_file():
        raise ConfigError(run_dir, f"holds no {SPEC_FILE}: its training has not finished (resume it with the same "
                          "`medtl train` command)")  # fmt: skip
    spec_d = json.loads(path.read_text())
    return PreprocessSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec_d.items()})


def load_run(run_dir: str | os.PathLike):
    """``(model in eval mode, PreprocessSpec, labels)`` from a run directory, from any working
    directory, with nothing else needed.

    Raises:
        ConfigError: not a run directory, or one whose training has not finished.
    """
    import torch

    from .models import create

    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    for name in (WEIGHTS_FILE, SPEC_FILE, LABELS_FILE):
        if not (run_dir / name).is_file():
            raise ConfigError(run_dir, f"holds no {name}: its training has not finished (resume it with the same "
                              "`medtl train` command)")  # fmt: skip
    spec = read_spec(run_dir)
    labels = json.loads((run_dir / LABELS_FILE).read_text())

    def network():
        return create(cfg.backbone, None, in_channels=spec.channels, num_classes=len(labels),
                      spatial_dims=cfg.spatial_dims, dropout=cfg.dropout)  # fmt: skip

    if getattr(cfg, "ensemble", 1) > 1:  # K members averaged in probability, saved as one state dict
        from .models import EnsembleClassifier

        task = (read_json(run_dir / "metrics.json", "metrics record") or {}).get("task", "binary")
        model = EnsembleClassifier([network() for _ in range(cfg.ensemble)], task)
    else:
        model = network()
    model.load_state_dict(torch.load(run_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval(), spec, labels
