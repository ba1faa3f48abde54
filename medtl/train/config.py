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

__all__ = ["TrainConfig", "load_config"]


@dataclass
class TrainConfig:
    """Every training option. Grouped as in docs/config.md."""

    # data
    manifest: str = ""
    npz: str = ""
    label_columns: list[str] = field(default_factory=lambda: ["label"])
    patient_column: str = "patient_id"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    train_fraction: float = 1.0
    folds: int = 0
    fold: int = 0
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
    # operating point, chosen on validation after training
    threshold_rule: str = "youden"
    target_sensitivity: float = 0.9
    precision: str = "auto"
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    deterministic: bool = True
    workers: int = 0
    cache_dir: str = ""

    def __post_init__(self) -> None:
        if self.preset == "color":  # both spellings work; the run records one
            self.preset = "colour"
        if self.channels != "auto" and (
            isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 1
        ):
            raise ConfigError(None, f"channels must be auto or a positive number (1, 3 ...), not {self.channels!r}")
        rng = self.intensity_range
        if rng is not None and rng != "percentiles" and not (
            isinstance(rng, (list, tuple)) and len(rng) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng) and rng[1] > rng[0]
        ):  # fmt: skip
            raise ConfigError(None, f"intensity_range must be null, percentiles or [low, high], not {rng!r}")
        if isinstance(self.size, int) and not isinstance(self.size, bool):
            self.size = [self.size] * self.spatial_dims  # `size: 28` means 28 along every axis
        if self.class_balance not in ("loss", "sampler", "none"):
            raise ConfigError(None, f"class_balance must be loss, sampler or none, not '{self.class_balance}'")
        if self.threshold_rule not in ("youden", "sensitivity"):
            raise ConfigError(None, f"threshold_rule must be youden or sensitivity, not '{self.threshold_rule}'")
        if self.folds and not (self.folds >= 3 and 0 <= self.fold < self.folds):
            raise ConfigError(
                None, f"folds must be 0 or >= 3 and fold in 0..folds-1, got folds={self.folds}, fold={self.fold}"
            )
        if not 0 < self.train_fraction <= 1:
            raise ConfigError(None, f"train_fraction must be in (0, 1], not {self.train_fraction}")
        if self.spatial_dims not in (2, 3):
            raise ConfigError(None, f"spatial_dims must be 2 or 3, not {self.spatial_dims}")
        if len(self.size) != self.spatial_dims:
            raise ConfigError(
                None, f"size {self.size} has {len(self.size)} numbers for spatial_dims={self.spatial_dims}"
            )
        from ..models.registry import check_input_size

        check_input_size(self.backbone, self.size)  # a typo in the backbone fails here too, with a suggestion

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or none) and apply ``key=value`` overrides (values parsed as YAML).

    Raises:
        ConfigError: unreadable YAML, an unknown key (with the nearest valid name), a bad
            value.
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
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(None, f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        values[key.strip()] = _parse_value(text)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key not in known:
            raise ConfigError(where, f"unknown key '{key}'" + suggest(key, sorted(known), listing=None))
    types = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    for key, value in values.items():
        # YAML 1.1 reads 3e-4 (no dot) as a string; a float key takes it as the number it means
        if isinstance(value, str) and types[key].startswith(("float", "int")):
            try:
                values[key] = (float if types[key].startswith("float") else int)(value)
            except ValueError:
                raise ConfigError(where, f"{key} must be a number, not '{value}'") from None
    if "size" not in values and values.get("spatial_dims") == 3:
        values["size"] = [64, 64, 64]
    if isinstance(values.get("size"), list) and len(values["size"]) == 1:
        values["size"] = values["size"][0]
    try:
        return TrainConfig(**values)
    except TypeError as exc:
        raise ConfigError(where, str(exc)) from exc
