"""``finetune(config, run_dir)``: fine-tune a pretrained backbone on a manifest with Lightning.

The run directory ends up holding everything prediction needs: ``model.pt`` (a plain state
dict, loadable with ``weights_only=True``), ``config.yaml`` (resolved), ``preprocess.json``,
``labels.json``, ``threshold.json``, ``metrics.json`` (validation), ``curves.csv``/``curves.png``
and ``model_card.md``. ``checkpoints/last.ckpt`` lets a killed run resume.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, MedtlError
from ..tasks import probabilities, task_for
from .config import TrainConfig
from .domain import DomainClassifier
from .inference import predict_logits, tta_logits
from .regularizers import L2SP, class_weights
from .strategies import StrategyConfig, configure_strategy, train_mode

__all__ = ["finetune", "finetune_seeds", "FineTuneModule", "RunResult", "load_run", "run_config"]


class FineTuneModule(L.LightningModule):
    """Lightning wrapper: strategy phases, L2-SP, mixup, label smoothing, class weights,
    warm-up + cosine schedule, AUROC on validation."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        num_classes: int,
        weights: torch.Tensor | None,
        domain_loader=None,
        task: str | None = None,
    ):
        super().__init__()
        self.model, self.cfg, self.num_classes = model, cfg, num_classes
        # the probability rule validation AUROC (and so checkpoint choice) is computed with
        self.task = task or task_for(cfg.label_columns, num_classes)
        self.strategy = StrategyConfig(
            cfg.strategy, cfg.lr, cfg.layer_decay, cfg.probe_epochs, cfg.ft_scale, cfg.unfreeze_every
        )
        self.l2sp = L2SP(model, cfg.l2sp_alpha, cfg.l2sp_beta) if (cfg.l2sp_alpha or cfg.l2sp_beta) else None
        self.register_buffer("class_weight", weights if weights is not None else torch.ones(num_classes))
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []
        # domain confusion: unlabelled target images, a domain head behind gradient reversal
        self.domain_loader = domain_loader
        self.domain = DomainClassifier(model.num_features) if domain_loader is not None else None
        self._target_iter = None

    def _target_batch(self) -> torch.Tensor:
        try:
            batch = next(self._target_iter)
        except (StopIteration, TypeError):  # exhausted, or not started: cycle the target set
            self._target_iter = iter(self.domain_loader)
            batch = next(self._target_iter)
        return batch["image"].to(self.device)

    def forward(self, x):
        return self.model(x)

    # -- phases -------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        configure_strategy(self.model, self.strategy, self.current_epoch)  # which groups train now
        train_mode(self.model)  # frozen BatchNorm keeps its statistics

    def _phase_scale(self, epoch: int) -> float:
        s = self.strategy
        return s.ft_scale if s.name == "lpft" and epoch >= s.probe_epochs else 1.0

    def configure_optimizers(self):
        groups = configure_strategy(self.model, StrategyConfig("full", self.cfg.lr, self.cfg.layer_decay))
        decay = 0.0 if self.l2sp is not None else self.cfg.weight_decay  # L2-SP replaces decay to zero
        if self.domain is not None:
            groups.append({"params": list(self.domain.parameters()), "lr": self.cfg.lr, "name": "domain"})
        optimizer = torch.optim.AdamW(groups, weight_decay=decay)
        total, warm = max(self.cfg.epochs, 1), max(self.cfg.warmup_epochs, 0)

        def factor(epoch: int) -> float:
            ramp = (epoch + 1) / warm if epoch < warm else 1.0
            return ramp * 0.5 * (1 + math.cos(math.pi * epoch / total)) * self._phase_scale(epoch)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # -- steps --------------------------------------------------------------------------------
    def _loss(self, logits, target):
        if self.num_classes == 1 or target.dim() == 2 and target.shape[1] > 1:  # multi-label
            known = ~torch.isnan(target)  # a finding not reported for an image teaches nothing
            if not known.any():
                return logits.sum() * 0.0
            return nn.functional.binary_cross_entropy_with_logits(logits[known], target[known].to(logits.dtype))
        return nn.functional.cross_entropy(
            logits, target, weight=self.class_weight, label_smoothing=self.cfg.label_smoothing
        )

    def training_step(self, batch, batch_idx):
        x, y = batch["image"], self._target(batch["label"])
        if (self.cfg.mixup > 0 or self.cfg.cutmix > 0) and y.dim() == 1:
            perm = torch.randperm(x.shape[0], device=x.device)
            if self.cfg.cutmix > 0 and (self.cfg.mixup <= 0 or np.random.rand() < 0.5):
                x, lam = cutmix(x, perm, float(np.random.beta(self.cfg.cutmix, self.cfg.cutmix)))
            else:
                lam = float(np.random.beta(self.cfg.mixup, self.cfg.mixup))
                x = lam * x + (1 - lam) * x[perm]
            logits = self.model(x)
            loss = lam * self._loss(logits, y) + (1 - lam) * self._loss(logits, y[perm])
        else:
            loss = self._loss(self.model(x), y)
        if self.domain is not None:
            target = self._target_batch()
            feats = torch.cat([self.model.forward_features(x), self.model.forward_features(target)])
            domains = torch.cat([torch.zeros(len(x)), torch.ones(len(target))]).long().to(self.device)
            domain_loss = nn.functional.cross_entropy(self.domain(feats), domains)
            self.log("domain_loss", domain_loss, on_epoch=True, on_step=False, batch_size=x.shape[0])
            loss = loss + self.cfg.domain_weight * domain_loss
        if self.l2sp is not None:
            loss = loss + self.l2sp(self.model)
        if not torch.isfinite(loss):
            raise MedtlError(None, f"loss became {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}: "
                             "lower the learning rate or check the inputs")  # fmt: skip
        self.log("train_loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=x.shape[0])
        return loss

    def _target(self, label: torch.Tensor) -> torch.Tensor:
        return label[:, 0].long() if label.shape[1] == 1 else label

    def validation_step(self, batch, batch_idx):
        x, y = batch["image"], self._target(batch["label"])
        logits = tta_logits(self.model, x, self.cfg.flips if self.cfg.tta else ())
        self.log("val_loss", self._loss(logits, y), on_epoch=True, batch_size=x.shape[0])
        self._val.append((probabilities(logits.float(), self.task).detach().cpu(), batch["label"].cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        probs = torch.cat([p for p, _ in self._val])
        labels = torch.cat([y for _, y in self._val])
        self._val.clear()
        if self.trainer.world_size > 1:  # DDP: each process saw a shard; AUROC needs them all
            probs = self.all_gather(probs.to(self.device)).flatten(0, 1).cpu()
            labels = self.all_gather(labels.to(self.device)).flatten(0, 1).cpu()
        self.log("val_auroc", auroc(labels.numpy(), probs.float().numpy()), prog_bar=True)


def auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    """AUROC: binary, the positive class; multi-class, macro one-vs-rest; multi-label, the mean
    over findings that have both classes among the known (non-NaN) labels. NaN if none has.

    >>> auroc(np.array([[0, 1], [1, 1], [1, 0], [0, 0]]), np.array([[.1, .9], [.8, .7], [.9, .2], [.2, .1]]))
    1.0
    """
    from sklearn.metrics import roc_auc_score

    if labels.shape[1] > 1:  # multi-label: one sigmoid output per finding
        per = []
        for j in range(labels.shape[1]):
            known = ~np.isnan(labels[:, j])
            if len(np.unique(labels[known, j])) == 2:
                per.append(roc_auc_score(labels[known, j], probs[known, j]))
        return float(np.mean(per)) if per else float("nan")
    y = labels[:, 0]
    if len(np.unique(y)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))))


def cutmix(x: torch.Tensor, perm: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Paste a box of ``x[perm]`` into ``x`` covering about ``1 - lam`` of the image (2D or 3D);
    returns the mixed batch and the exact share of the original image left.

    >>> x = torch.zeros(2, 1, 8, 8); x[1] = 1
    >>> mixed, lam = cutmix(x, torch.tensor([1, 0]), 0.75)
    >>> round(float(mixed[0].mean()), 4) == round(1 - lam, 4)
    True
    """
    # not monai.transforms.CutMix: it needs a fixed batch size and sizes its box as if every image
    # were 2D; here the loss mixes by the area actually pasted, in 2D and 3D
    spatial = x.shape[2:]
    side = (1 - lam) ** (1 / len(spatial))  # the box's share of each axis
    box = []
    for n in spatial:
        length = int(round(n * side))
        start = int(np.random.randint(0, n - length + 1))
        box.append(slice(start, start + length))
    out = x.clone()
    out[(slice(None), slice(None), *box)] = x[perm][(slice(None), slice(None), *box)]
    kept = 1 - float(np.prod([b.stop - b.start for b in box])) / float(np.prod(spatial))
    return out, kept


@dataclass
class RunResult:
    """What :func:`finetune` produced: the run folder, the best model and its validation AUROC,
    and how the input channels were decided."""

    run_dir: Path
    val_auroc: float
    best_epoch: int
    skipped: list[dict]
    model: nn.Module
    channels_rule: str = ""


def _subsample_train(manifest, split, fraction: float, seed: int):
    """Keep ``fraction`` of the training patients, stratified, at least two per class
    (label-efficiency studies); validation and test stay whole."""
    from ..data.splits import Split

    rng = np.random.default_rng(seed)
    by_class: dict[float, dict[str, None]] = {}  # ordered sets: reproducible choice per seed
    for i in split.train:
        r = manifest.records[i]
        by_class.setdefault(r.labels[0], {})[r.patient] = None
    keep: set[str] = set()
    for patients in by_class.values():
        n = max(2, round(fraction * len(patients)))
        keep |= set(rng.choice(list(patients), size=min(n, len(patients)), replace=False).tolist())
    train = tuple(i for i in split.train if manifest.records[i].patient in keep)
    return Split(train, split.val, split.test)


def run_data(cfg: TrainConfig):
    """``(manifest, split)`` of a config, exactly as training drew them: the official splits of an
    ``npz``, cross-validation fold ``fold`` of ``folds``, or a seeded patient-level split; then the
    ``train_fraction`` subsample. Evaluation calls this to find a run's own held-out patients."""
    from ..data import kfold_patients, read_manifest, split_patients

    if cfg.npz:
        from ..data.npz import read_npz

        manifest, split = read_npz(cfg.npz)  # the official splits, as published
    elif cfg.manifest:
        manifest = read_manifest(cfg.manifest, label_columns=cfg.label_columns, patient_column=cfg.patient_column)
        if cfg.folds:
            split = kfold_patients(manifest, cfg.folds, seed=cfg.seed, with_test=True)[cfg.fold]
        else:
            split = split_patients(manifest, val=cfg.val_fraction, test=cfg.test_fraction, seed=cfg.seed)
    else:
        raise ConfigError(None, "no data: set `manifest: path/to/labels.csv` or `npz: path/to/file.npz`")
    if cfg.train_fraction < 1:
        split = _subsample_train(manifest, split, cfg.train_fraction, cfg.seed)
    return manifest, split


def _loaders(cfg: TrainConfig, run_dir: Path, spec, manifest, split, progress: bool, world_size: int = 1):
    from ..data import augmentation
    from ..data.dataset import prepare

    cache = cfg.cache_dir or str(run_dir / "cache")
    aug = augmentation(tuple(cfg.size), flips=tuple(cfg.flips), seed=cfg.seed) if cfg.augment else None
    train = prepare(manifest, split.train, spec, cache_dir=cache, augment=aug, progress=progress)
    val = prepare(manifest, split.val, spec, cache_dir=cache, progress=progress)
    multilabel = len(manifest.label_columns) > 1
    # class of each training image (single-label); multi-label rows only count here
    labels = [-1 if multilabel else int(manifest.records[i].labels[0]) for i in train.indices]
    sampler = None
    if cfg.class_balance == "sampler" and multilabel:
        raise ConfigError(cfg.manifest, "class_balance: sampler needs one label column; use loss or none")
    if cfg.class_balance == "sampler":
        w = class_weights(labels)[torch.tensor(labels)]
        sampler = torch.utils.data.WeightedRandomSampler(w.double(), num_samples=len(labels), replacement=True)
    kw: dict = {"batch_size": cfg.batch_size, "num_workers": cfg.workers}
    if cfg.workers:
        from monai.data.utils import worker_init_fn

        kw["worker_init_fn"] = worker_init_fn  # each worker re-seeds its transforms: no repeated augmentations
    train_loader = torch.utils.data.DataLoader(train.dataset, shuffle=sampler is None, sampler=sampler, drop_last=len(labels) // world_size > cfg.batch_size, **kw)  # fmt: skip
    val_loader = torch.utils.data.DataLoader(val.dataset, shuffle=False, **kw)
    return train, val, train_loader, val_loader, labels


def finetune(cfg: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = True, progress: bool = False) -> RunResult:
    """Fine-tune ``cfg.backbone`` on ``cfg.manifest`` and write a self-contained run directory.

    Args:
        cfg: a :class:`TrainConfig` (see :func:`medtl.train.config.load_config`).
        run_dir: output folder; an interrupted run in it resumes from ``checkpoints/last.ckpt``.
        resume: set False to start over even if a checkpoint exists.
        progress: show progress bars.

    Raises:
        ConfigError: bad options, too few patients per class for the split.
        MedtlError: a NaN loss (naming epoch and batch).
    """
    import yaml

    from ..data.channels import decide_channels
    from ..data.transforms import PreprocessSpec
    from ..models import create
    from ..models.registry import resolve_source

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    from monai.utils import set_determinism

    # MONAI's Compose re-seeds its random transforms from MONAI's own seed, which Lightning does not set
    set_determinism(seed=cfg.seed, use_deterministic_algorithms=None)
    if not cfg.deterministic:  # set_determinism also pins cuDNN; give speed back when asked to
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    source = resolve_source(cfg.backbone, cfg.pretrained)  # its input convention drives preprocessing
    convention = source.convention if source is not None else None
    manifest, split = run_data(cfg)
    windows = tuple(tuple(w) if isinstance(w, list) else w for w in cfg.windows)
    # decided once, from the training images, before anything is cached
    channels = decide_channels(manifest, split.train, cfg.channels, preset=cfg.preset, windows=windows,
                               progress=progress)  # fmt: skip
    rng = cfg.intensity_range
    spec_kwargs = dict(preset=cfg.preset, windows=windows, size=tuple(cfg.size),
                       spacing=tuple(cfg.spacing) if cfg.spacing else None, input_channels=channels.channels,
                       intensity_range=tuple(rng) if isinstance(rng, list) else rng,
                       extra={"channels_rule": channels.rule})  # fmt: skip
    spec = PreprocessSpec.from_convention(convention, **spec_kwargs) if convention else PreprocessSpec(**spec_kwargs)
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor="val_auroc", mode="max", filename="best")
    # saved at the end of every training epoch, after validation: a resumed run starts the next epoch
    latest = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_on_train_epoch_end=True,
                             enable_version_counter=False)  # fmt: skip
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        callbacks=[ckpt, latest, EarlyStopping("val_auroc", mode="max", patience=cfg.patience, check_finite=False)],
        # a resumed run logs to the next version_N; TensorBoard files go to run_dir/tensorboard
        logger=[CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard")],
        gradient_clip_val=cfg.grad_clip or None,
        precision=("16-mixed" if torch.cuda.is_available() else "32-true")
        if cfg.precision == "auto"
        else cfg.precision,
        deterministic="warn" if cfg.deterministic else False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        log_every_n_steps=1,
    )
    train, val, train_loader, val_loader, labels = _loaders(
        cfg, run_dir, spec, manifest, split, progress, trainer.world_size
    )
    multilabel = len(manifest.label_columns) > 1
    num_classes = len(manifest.label_columns) if multilabel else int(max(r.labels[0] for r in manifest.records)) + 1
    task = task_for(manifest.label_columns, num_classes)
    model = create(cfg.backbone, cfg.pretrained, in_channels=spec.channels, num_classes=num_classes,
                   spatial_dims=cfg.spatial_dims, dropout=cfg.dropout)  # fmt: skip
    weights = class_weights(labels) if cfg.class_balance == "loss" and not multilabel else None
    if weights is not None and len(weights) < num_classes:
        raise ConfigError(cfg.manifest, f"the training split lacks some of the {num_classes} classes")
    domain_loader = None
    if cfg.domain_manifest:
        from ..data.dataset import prepare_unlabelled

        tdata = prepare_unlabelled(cfg.domain_manifest, spec, cache_dir=cfg.cache_dir or str(run_dir / "cache"))
        domain_loader = torch.utils.data.DataLoader(
            tdata.dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=False
        )
    module = FineTuneModule(model, cfg, num_classes, weights, domain_loader, task=task)

    last = run_dir / "checkpoints" / "last.ckpt"
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume and last.exists() else None)
    best = ckpt.best_model_path or str(last)
    saved = torch.load(best, map_location="cpu", weights_only=True)
    model.load_state_dict({k[len("model.") :]: v for k, v in saved["state_dict"].items() if k.startswith("model.")})
    model.cpu()  # the run directory and the returned model are device-independent
    best_auroc = float(ckpt.best_model_score) if ckpt.best_model_score is not None else float("nan")
    best_epoch = int(saved["epoch"])
    if not trainer.is_global_zero:  # under DDP one process writes the run directory
        return RunResult(run_dir, best_auroc, best_epoch, train.failures + val.failures, model.eval(), channels.rule)
    _write_run(run_dir, cfg, spec, model, manifest, val, best_auroc, best_epoch, train.failures + val.failures, task)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return RunResult(run_dir, best_auroc, best_epoch, train.failures + val.failures, model.eval(), channels.rule)


def _write_run(run_dir, cfg, spec, model, manifest, val, best_auroc, best_epoch, skipped, task) -> None:
    model.eval()
    torch.save(model.state_dict(), run_dir / "model.pt")
    (run_dir / "preprocess.json").write_text(json.dumps(spec.to_dict(), indent=2, default=list))
    cols = manifest.label_columns
    labels = list(cols) if len(cols) > 1 else [f"{cols[0]}={k}" for k in range(model.num_classes)]
    (run_dir / "labels.json").write_text(json.dumps(labels, indent=2))
    loader = torch.utils.data.DataLoader(val.dataset, batch_size=cfg.batch_size)
    logits, ys = predict_logits(model, loader, flips=cfg.flips if cfg.tta else (), device="cpu")
    probs, calibration = _calibrate(run_dir, logits, ys, task)
    threshold = 0.5
    if task == "binary" and len(np.unique(ys[:, 0])) == 2:
        from ..evaluate.metrics import choose_threshold

        # on the calibrated validation scores, as predict applies calibration then threshold
        threshold = choose_threshold(ys[:, 0], probs[:, 1], rule=cfg.threshold_rule, target=cfg.target_sensitivity)
    rule = cfg.threshold_rule if cfg.threshold_rule == "youden" else f"sensitivity >= {cfg.target_sensitivity}"
    (run_dir / "threshold.json").write_text(json.dumps({"threshold": threshold, "rule": rule, "split": "val"}))
    metrics = {"val_auroc": best_auroc, "best_epoch": best_epoch, "n_val": int(len(ys)), "task": task,
               "skipped": skipped}  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _curves(run_dir)
    card = _model_card(cfg, spec, best_auroc, best_epoch, len(ys), skipped, threshold, rule, calibration)
    (run_dir / "model_card.md").write_text(card)


def _calibrate(run_dir: Path, logits: np.ndarray, ys: np.ndarray, task: str) -> tuple[np.ndarray, dict]:
    """Choose and fit the calibration on the validation logits, write ``calibration.json``, and
    return the calibrated validation probabilities (the threshold is chosen on those, as predict
    applies both) and the written record.

    The array-level functions live in :mod:`medtl.evaluate.calibration`; a run calibrates itself
    so that every run directory is complete without a separate step.
    """
    from ..evaluate.calibration import apply_calibration, fit_calibration, read_calibration, write_calibration

    target = ys if task == "multilabel" else ys[:, 0]
    record = fit_calibration(logits, target, task)
    fitted = record["fitted_on"] == "val"
    write_calibration(run_dir, record, logits if fitted else None, target if fitted else None, task=task)
    return apply_calibration(logits, record, task), read_calibration(run_dir)


def _curves(run_dir: Path) -> None:
    import csv

    sources = sorted((run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not sources:
        return
    by_epoch: dict[int, dict] = {}
    for src in sources:  # in run order: a resumed run's rows override what it repeated
        with open(src, newline="") as fh:
            for record in csv.DictReader(fh):
                e = int(float(record.get("epoch") or 0))
                by_epoch.setdefault(e, {"epoch": e}).update({k: v for k, v in record.items() if v and k != "step"})
    cols = ["epoch", "train_loss", "val_loss", "val_auroc"]
    with open(run_dir / "curves.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(by_epoch[e] for e in sorted(by_epoch))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = sorted(by_epoch)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (("train_loss", a), ("val_loss", a), ("val_auroc", b)):
        xs = [e for e in epochs if key in by_epoch[e]]
        ax.plot(xs, [float(by_epoch[e][key]) for e in xs], marker="o", label=key)
    a.set(xlabel="epoch", ylabel="loss"), b.set(xlabel="epoch", ylabel="validation AUROC")
    a.legend(), b.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=100)
    plt.close(fig)


def _calibration_line(cal: dict) -> str:
    method = cal.get("method", "temperature")
    if cal.get("fitted_on") != "val":
        return (f"**none** — {cal.get('fitted_on', 'not fitted')}: validation is too small to calibrate, so "
                "probabilities are the network's raw outputs; treat them as scores, not risks")  # fmt: skip
    what = {"none": "none (the raw outputs had the lowest cross-validated NLL)",
            "temperature": f"temperature scaling (T = {cal.get('temperature', 1.0):.3f})",
            "platt": "Platt scaling (a slope and an intercept per output)",
            "vector": "vector scaling (a slope and an intercept per class)"}[method]  # fmt: skip
    ece = ""
    if cal.get("ece_before") is not None:
        ece = f"; validation ECE {cal['ece_before']:.3f} → {cal['ece_after']:.3f} on {cal['n']} images"
    return f"{what}, chosen by {cal.get('chosen_by', 'validation')}{ece} (`calibration.json`)"


def _model_card(
    cfg: TrainConfig,
    spec,
    auroc_: float,
    epoch: int,
    n_val: int,
    skipped: list,
    threshold: float,
    rule: str,
    calibration: dict,
) -> str:
    split = f"fold {cfg.fold} of {cfg.folds}-fold" if cfg.folds else ("official" if cfg.npz else "patient-level")
    channels = spec.extra.get("channels_rule", f"{spec.channels} channel(s)")
    return f"""# Model card (draft)

- **Backbone**: {cfg.backbone}, pretrained: {cfg.pretrained or "none"}, {cfg.spatial_dims}D, input {list(cfg.size)}
- **Input**: {spec.channels} channel(s), preset {spec.preset} ({channels})
- **Task**: {", ".join(cfg.label_columns)} from `{cfg.npz or cfg.manifest}`
- **Training**: strategy {cfg.strategy}, lr {cfg.lr}, {cfg.epochs} epochs max (best epoch {epoch}), seed {cfg.seed}
- **Validation AUROC**: {auroc_:.3f} on {n_val} images ({split} split). Not a test result.
- **Calibration**: {_calibration_line(calibration)}
- **Operating point**: threshold {threshold:.3f} ({rule}) on calibrated validation probabilities
- **Skipped records**: {len(skipped)}

## Known limits
- Validated only on data like the training manifest; check subgroups (`medtl audit`) before use.
- Probabilities are calibrated on the validation split only; check calibration on your own data
  with `medtl evaluate` before reading them as risks.
- Research use only; not a medical device.
"""


def run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The resolved :class:`TrainConfig` a run was trained with (its ``config.yaml``)."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(run_dir, "not a run directory (no config.yaml): train one with `medtl train`")
    return TrainConfig(**yaml.safe_load(path.read_text()))


def load_run(run_dir: str | os.PathLike):
    """(model in eval mode, PreprocessSpec, labels) from a run directory — nothing else needed."""
    from ..data.transforms import PreprocessSpec
    from ..models import create

    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    spec_d = json.loads((run_dir / "preprocess.json").read_text())
    spec = PreprocessSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec_d.items()})
    labels = json.loads((run_dir / "labels.json").read_text())
    model = create(cfg.backbone, None, in_channels=spec.channels, num_classes=len(labels),
                   spatial_dims=cfg.spatial_dims, dropout=cfg.dropout)  # fmt: skip
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True))
    return model.eval(), spec, labels


def finetune_seeds(cfg: TrainConfig, run_dir: str | os.PathLike, seeds: int, **kwargs) -> dict:
    """Train ``seeds`` runs (``seed``, ``seed+1`` ...) into ``run_dir/seed_<k>`` and summarise.

    Returns (and writes to ``run_dir/seeds.json``) each seed's validation AUROC, their mean and
    a 95% confidence interval (t distribution over seeds).
    """
    import dataclasses

    from scipy import stats

    run_dir = Path(run_dir)
    results = []
    for k in range(seeds):
        seed = cfg.seed + k
        res = finetune(dataclasses.replace(cfg, seed=seed), run_dir / f"seed_{seed}", **kwargs)
        results.append({"seed": seed, "val_auroc": res.val_auroc, "best_epoch": res.best_epoch})
    values = np.array([r["val_auroc"] for r in results], dtype=float)
    values = values[np.isfinite(values)]
    summary: dict = {"runs": results, "n": int(len(values))}
    if len(values):
        summary["mean"] = float(values.mean())
    if len(values) > 1:
        half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
        summary["ci95"] = [summary["mean"] - half, summary["mean"] + half]
        summary["sd"] = float(values.std(ddof=1))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "seeds.json").write_text(json.dumps(summary, indent=2))
    return summary
