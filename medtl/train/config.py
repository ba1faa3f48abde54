"""Training configuration: one dataclass, every key with its default (docs/config.md lists them).

A YAML file and ``--set key=value`` overrides fill it; an unknown key is an error that names
the nearest valid one.

>>> cfg = load_config(None, ["epochs=3", "strategy=full"])
>>> cfg.epochs, cfg.strategy, cfg.backbone
(3, 'full', 'efficientnet-lite0')
>>> load_config(None, ["lr=3e-4"]).lr  # YAML would read this as text
0.0003
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, suggest

__all__ = ["TrainConfig", "load_config", "WEIGHT_NEUTRAL_KEYS"]

#: Keys that do not shape the weights a run learns: a run may resume with them changed (``epochs``
#: only upward). Every other key must match the run's for ``medtl train`` to continue it.
WEIGHT_NEUTRAL_KEYS = frozenset(
    {"epochs", "patience", "workers", "cache_dir", "accelerator", "devices", "num_nodes", "threshold_rule",
     "target_sensitivity", "intended_use", "saliency_check"}
)  # fmt: skip


@dataclass
class TrainConfig:
    """Every training option. Grouped as in docs/config.md."""

    # data
    manifest: str = ""
    npz: str = ""
    label_columns: list[str] = field(default_factory=lambda: ["label"])
    patient_column: str = "auto"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    train_fraction: float = 1.0
    folds: int = 0
    fold: int = 0
    dedup: bool = True
    # model
    backbone: str = "efficientnet-lite0"
    pretrained: str | None = "imagenet"
    spatial_dims: int = 2
    dropout: float = 0.2
    # preprocessing
    preset: str = "xr"
    windows: list = field(default_factory=list)
    channels: Any = "auto"
    intensity_range: Any = None
    size: list[int] = field(default_factory=lambda: [224, 224])
    spacing: list[float] | None = None
    augment: bool = True
    flips: list[int] = field(default_factory=list)
    tta: bool = True
    # strategy
    strategy: str = "full"
    lr: float = 1e-3
    layer_decay: float = 1.0
    probe_epochs: int = 5
    ft_scale: float = 0.1
    unfreeze_every: int = 2
    # regularisation
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    l2sp_alpha: float = 0.0
    l2sp_beta: float = 0.0
    class_balance: str = "loss"
    # domain adaptation
    domain_manifest: str = ""
    domain_weight: float = 0.1
    # schedule
    epochs: int = 40
    batch_size: int = 32
    warmup_epochs: int = 1
    patience: int = 13
    grad_clip: float = 1.0
    # exponential moving average of the weights (decay per step; 0: off): validation, the best
    # checkpoint and model.pt use the averaged weights
    ema: float = 0.0
    # operating point, chosen on validation after training
    threshold_rule: str = "youden"
    target_sensitivity: float = 0.9
    precision: str = "auto"
    seed: int = 0
    # the train/val/test split's seed (null: seed); an ensemble's members share it
    split_seed: int | None = None
    # members of an ensemble (K seeds on one split, probabilities averaged; 1: one network)
    ensemble: int = 1
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    deterministic: bool = True
    workers: int = 0
    cache_dir: str = ""
    # what the model is for, in the words of whoever trained it: the model card and clinician
    # reports show it (empty: they say it was not stated)
    intended_use: str = ""
    # validation images `medtl train` scores the saliency methods on, to choose the map a clinician
    # sees by default (RUN/saliency.json; 0: no check, `medtl saliency-check RUN` runs it later)
    saliency_check: int = 16

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _bad(key: str, reason: str) -> ConfigError:
    err = ConfigError(None, f"{key} {reason}")
    err.key = key  # load_config names where the value came from (the YAML file or a --set)
    return err


def _number(cfg: TrainConfig, key: str, kind: type, low=None, high=None, *, low_open=False, high_open=False) -> None:
    """Coerce ``cfg.key`` to ``kind`` (YAML 1.1 reads 3e-4 as text) and check its range."""
    import math

    value = getattr(cfg, key)
    if isinstance(value, str):
        try:
            value = kind(float(value)) if kind is float else int(value)
        except ValueError:
            raise _bad(key, f"must be a number, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(key, f"must be a number, not {value!r}")
    if kind is int:
        if value != int(value):
            raise _bad(key, f"must be a whole number, not {value!r}")
        value = int(value)
    value = kind(value)
    if not math.isfinite(value):
        raise _bad(key, f"must be a finite number, not {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise _bad(key, f"must be {'>' if low_open else '>='} {low}, not {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        raise _bad(key, f"must be {'<' if high_open else '<='} {high}, not {value!r}")
    setattr(cfg, key, value)


def _choice(cfg: TrainConfig, key: str, options) -> None:
    value = getattr(cfg, key)
    if value not in options:
        raise _bad(key, f"must be one of {', '.join(map(str, options))}, not {value!r}" + suggest(str(value), options))


def _validate(cfg: TrainConfig) -> None:
    """Every key of a :class:`TrainConfig` checked once, here, for the CLI and the Python API alike."""
    from .strategies import STRATEGIES

    for key, kind, low, high, low_open, high_open in (
        ("epochs", int, 1, None, False, False), ("batch_size", int, 1, None, False, False),
        ("lr", float, 0, None, True, False), ("dropout", float, 0, 1, False, True),
        ("weight_decay", float, 0, None, False, False), ("label_smoothing", float, 0, 1, False, True),
        ("mixup", float, 0, None, False, False), ("cutmix", float, 0, None, False, False),
        ("l2sp_alpha", float, 0, None, False, False), ("l2sp_beta", float, 0, None, False, False),
        ("layer_decay", float, 0, 1, True, False), ("probe_epochs", int, 0, None, False, False),
        ("ft_scale", float, 0, None, True, False), ("unfreeze_every", int, 1, None, False, False),
        ("domain_weight", float, 0, None, False, False), ("warmup_epochs", int, 0, None, False, False),
        ("patience", int, 0, None, False, False), ("grad_clip", float, 0, None, False, False),
        ("target_sensitivity", float, 0, 1, True, True), ("seed", int, 0, None, False, False),
        ("num_nodes", int, 1, None, False, False), ("workers", int, 0, None, False, False),
        ("val_fraction", float, 0, 1, True, True), ("test_fraction", float, 0, 1, False, True),
        ("train_fraction", float, 0, 1, True, False), ("folds", int, 0, None, False, False),
        ("fold", int, 0, None, False, False), ("spatial_dims", int, 2, 3, False, False),
        ("ema", float, 0, 1, False, True), ("ensemble", int, 1, None, False, False),
        ("saliency_check", int, 0, None, False, False),
    ):  # fmt: skip
        _number(cfg, key, kind, low, high, low_open=low_open, high_open=high_open)
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise _bad("val_fraction", f"+ test_fraction must leave images to train on, not {cfg.val_fraction} + "
                   f"{cfg.test_fraction}")  # fmt: skip
    if cfg.split_seed is not None:
        _number(cfg, "split_seed", int, 0, None)
    if not isinstance(cfg.intended_use, str):
        raise _bad("intended_use", f"must be text, not {cfg.intended_use!r}")
    if cfg.manifest and cfg.npz:
        raise _bad("npz", "and manifest are both set: give one source of data")
    for key in ("augment", "tta", "deterministic", "dedup"):
        if not isinstance(getattr(cfg, key), bool):
            raise _bad(key, f"must be true or false, not {getattr(cfg, key)!r}")
    if cfg.preset == "color":  # both spellings work; the run records one
        cfg.preset = "colour"
    from ..data.transforms import PRESETS, valid_intensity_range

    _choice(cfg, "preset", PRESETS)
    _choice(cfg, "strategy", STRATEGIES)
    _choice(cfg, "class_balance", ("loss", "sampler", "none"))
    _choice(cfg, "threshold_rule", ("youden", "sensitivity"))
    if cfg.channels != "auto" and (isinstance(cfg.channels, bool) or not isinstance(cfg.channels, int)
                                   or cfg.channels < 1):  # fmt: skip
        raise _bad("channels", f"must be auto or a positive number (1, 3 ...), not {cfg.channels!r}")
    if not valid_intensity_range(cfg.intensity_range):
        raise _bad("intensity_range", f"must be null, percentiles or [low, high] with high > low, not "
                   f"{cfg.intensity_range!r}")  # fmt: skip
    if isinstance(cfg.label_columns, str):
        cfg.label_columns = [cfg.label_columns]
    if not cfg.label_columns or not all(isinstance(c, str) and c for c in cfg.label_columns):
        raise _bad("label_columns", f"must name one or more columns, not {cfg.label_columns!r}")
    if isinstance(cfg.size, int) and not isinstance(cfg.size, bool):
        cfg.size = [cfg.size] * cfg.spatial_dims  # `size: 28` means 28 along every axis
    if not isinstance(cfg.size, (list, tuple)) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in cfg.size
    ):
        raise _bad("size", f"must be positive whole numbers, one per axis, not {cfg.size!r}")
    if len(cfg.size) != cfg.spatial_dims:
        raise _bad("size", f"{list(cfg.size)} has {len(cfg.size)} numbers for spatial_dims={cfg.spatial_dims}")
    cfg.size = list(cfg.size)
    if cfg.spacing is not None and (
        not isinstance(cfg.spacing, (list, tuple)) or len(cfg.spacing) != cfg.spatial_dims
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in cfg.spacing)
    ):  # fmt: skip
        raise _bad("spacing", f"must be null or {cfg.spatial_dims} positive sizes in mm, not {cfg.spacing!r}")
    if not isinstance(cfg.flips, (list, tuple)) or not all(
        isinstance(a, int) and not isinstance(a, bool) and 0 <= a < cfg.spatial_dims for a in cfg.flips
    ):
        raise _bad("flips", f"must list axes 0..{cfg.spatial_dims - 1} of the {cfg.spatial_dims}D input "
                   f"(0 = first spatial axis), not {cfg.flips!r}")  # fmt: skip
    if cfg.folds and not (cfg.folds >= 3 and cfg.fold < cfg.folds):
        raise _bad("folds", f"must be 0 or >= 3 with fold in 0..folds-1, not folds={cfg.folds}, fold={cfg.fold}")
    from ..models.registry import check_input_size, get_backbone, resolve_source

    # an unknown backbone is named before its weights are looked for
    for key, check in (("backbone", lambda: get_backbone(cfg.backbone)),
                       ("pretrained", lambda: resolve_source(cfg.backbone, cfg.pretrained)),
                       ("size", lambda: check_input_size(cfg.backbone, cfg.size))):  # fmt: skip
        try:
            check()
        except ConfigError as exc:
            exc.key = key
            raise


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


#: The keys whose value is free text: a ``--set`` value with ``: `` or a leading ``[`` needs quotes.
_TEXT_KEYS = {f.name for f in dataclasses.fields(TrainConfig) if f.type in ("str", str)}


def _quote_hint(key: str, text: str) -> str:
    """The one-line fix for text that YAML reads as something else."""
    if key not in _TEXT_KEYS:
        return ""
    inner = text.strip().replace('"', '\\"')
    return f"; quote text: --set '{key}=\"{inner}\"'"


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or none) and apply ``key=value`` overrides (values parsed as YAML).

    Raises:
        ConfigError: unreadable YAML, an unknown key (with the nearest valid name), a bad
            value; the message says where the value came from (the file, or the ``--set``).
    """
    import yaml

    values: dict = {}
    where = os.fspath(path) if path is not None else None
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                values = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(where, f"cannot read config: {exc}") from exc
        if not isinstance(values, dict):
            raise ConfigError(where, "a config file must be a mapping of keys to values")
    source = {key: where for key in values}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(None, f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            values[key] = _parse_value(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item}", "the value is not valid YAML" + _quote_hint(key, text)) from None
        if key in _TEXT_KEYS and isinstance(values[key], (dict, list)):
            raise ConfigError(f"--set {item}", f"'{key}' takes text, but YAML read this value as a "
                              f"{'mapping' if isinstance(values[key], dict) else 'list'}" + _quote_hint(key, text))  # fmt: skip
        source[key] = f"--set {item}"
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key not in known:
            raise ConfigError(source[key], f"unknown key '{key}'" + suggest(key, sorted(known), listing=None))
    if "size" not in values and values.get("spatial_dims") == 3:
        values["size"] = [64, 64, 64]
    if isinstance(values.get("size"), list) and len(values["size"]) == 1:
        values["size"] = values["size"][0]
    try:
        return TrainConfig(**values)
    except ConfigError as exc:
        key = getattr(exc, "key", None)
        raise ConfigError(source.get(key, where) if key else where, exc.reason) from None
