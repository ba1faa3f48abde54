"""``finetune(config, run_dir)``: fine-tune a pretrained backbone on a manifest with Lightning.

The run directory ends up holding everything prediction needs (:mod:`medtl.rundir` owns its
files): ``model.pt`` (a plain state dict, loadable with ``weights_only=True``), ``config.yaml``
(resolved, written first), ``split.json`` (the keys of every part), ``preprocess.json``,
``labels.json``, ``calibration.json``, ``threshold.json``, ``metrics.json`` (validation),
``curves.csv``/``curves.png`` and ``model_card.md``. ``checkpoints/last.ckpt`` (written
atomically, with every random state) lets a killed run resume exactly where it stopped; a run
resumes only under the configuration it started with (``epochs`` may grow).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..rundir import (
    claim,
    load_run,
    mark_complete,
    output_folder,
    read_config,
    read_split,
    save_config,
    save_split,
    save_torch,
    write_json,
    write_text,
)
from ..tasks import task_for
from .config import WEIGHT_NEUTRAL_KEYS, TrainConfig
from .inference import predict_outputs
from .module import FineTuneModule
from .regularizers import class_weights

__all__ = ["finetune", "finetune_seeds", "FineTuneModule", "RunResult", "RunData", "run_data", "load_run",
           "run_config"]  # fmt: skip

#: ``run_config(run_dir)``: the configuration a run was trained with (kept for scripts).
run_config = read_config


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
    #: the run was finished already, with these settings: nothing was trained or written
    already_complete: bool = False


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


@dataclass
class RunData:
    """A config's data as training drew it: the manifest, the split, and how it was made."""

    manifest: object
    split: object
    description: str
    duplicates: list[list[int]]

    def __iter__(self):  # ``manifest, split = run_data(cfg)``
        return iter((self.manifest, self.split))

    def record(self) -> dict:
        """What ``split.json`` stores (:func:`medtl.data.splits.split_record`)."""
        from ..data.splits import split_record

        groups = [[self.manifest.records[i].patient for i in g] for g in self.duplicates]
        merged = sum(len(set(g)) > 1 for g in groups)
        return split_record(self.manifest, self.split, self.description, duplicate_groups=len(self.duplicates),
                            duplicate_groups_across_patients=merged)  # fmt: skip


def _check_labels(manifest) -> None:
    """Single-label training needs a label on every row; name the rows without one."""
    if len(manifest.label_columns) > 1:
        return  # multi-label: an unreported finding is masked out of the loss
    missing = [r.row for r in manifest.records if np.isnan(r.labels[0])]
    if missing:
        lines = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise ConfigError(manifest.source, f"{len(missing)} row(s) have no label (line {lines}): single-label "
                          "training needs one on every row; label them or leave them out")  # fmt: skip


def run_data(cfg: TrainConfig, *, progress: bool = False) -> RunData:
    """A config's manifest and split, exactly as training draws them: the official splits of an
    ``npz``; else, with patients that share an identical or near-identical image joined
    (``dedup``), cross-validation fold ``fold`` of ``folds`` or a seeded patient-level split; then
    the ``train_fraction`` subsample.

    Raises:
        ConfigError: no data, a named patient column that is absent, rows without a label,
            too few patients per class.
    """
    from ..data import kfold_patients, read_manifest, split_patients

    duplicates: list[list[int]] = []
    if cfg.npz:
        from ..data.npz import read_npz

        manifest, split = read_npz(cfg.npz)  # the official splits, as published
        description = "the file's official train/val/test splits"
    elif cfg.manifest:
        manifest = read_manifest(cfg.manifest, label_columns=cfg.label_columns, patient_column=cfg.patient_column)
        _check_labels(manifest)
        units = None
        if cfg.dedup and cfg.spatial_dims == 2:  # volumes are not hashed (docs/evaluate.md, Splits)
            duplicates = _duplicates(manifest, progress)
            if duplicates:
                from ..data.splits import join_duplicates

                units = join_duplicates(manifest, duplicates)
        split_seed = _split_seed(cfg)
        if cfg.folds:
            split = kfold_patients(manifest, cfg.folds, seed=split_seed, with_test=True, groups=units)[cfg.fold]
            description = f"fold {cfg.fold} of a {cfg.folds}-fold split"
        else:
            split = split_patients(manifest, val=cfg.val_fraction, test=cfg.test_fraction, seed=split_seed,
                                   groups=units)  # fmt: skip
            description = "a seeded split"
        if manifest.patient_column:
            n = len({r.patient for r in manifest.records})
            description += f" by patient (column `{manifest.patient_column}`, {n} patients)"
        else:
            description += (" by image: the manifest has no patient column (`patient_id` or `patient`), so images "
                            "of one patient may sit in training and test and flatter the test result")  # fmt: skip
        if duplicates:
            description += f"; {len(duplicates)} group(s) of identical or near-identical images kept in one part"
    else:
        raise ConfigError(None, "no data: set `manifest: path/to/labels.csv` or `npz: path/to/file.npz`")
    if cfg.train_fraction < 1:
        split = _subsample_train(manifest, split, cfg.train_fraction, _split_seed(cfg))
        description += f"; {cfg.train_fraction:g} of the training patients kept"
    return RunData(manifest, split, description, duplicates)


def _duplicates(manifest, progress: bool) -> list[list[int]]:
    from ..data.duplicates import find_duplicates
    from ..data.npz import NPZ_SCHEME, load_npz_item
    from ..io import load_image

    def load(i: int):
        rec = manifest.records[i]
        return load_npz_item(rec.path) if rec.path.startswith(NPZ_SCHEME) else load_image(rec.path, series=rec.series)

    return find_duplicates(load, range(len(manifest)), progress=progress).groups


def _loaders(cfg: TrainConfig, run_dir: Path, spec, manifest, split, progress: bool, world_size: int = 1):
    from ..data import augmentation
    from ..data.dataset import prepare

    cache = cfg.cache_dir or str(run_dir / "cache")
    aug = augmentation(tuple(cfg.size), flips=tuple(cfg.flips), seed=cfg.seed) if cfg.augment else None
    train = prepare(manifest, split.train, spec, cache_dir=cache, augment=aug, progress=progress)
    val = prepare(manifest, split.val, spec, cache_dir=cache, progress=progress)
    for name, part in (("training", train), ("validation", val)):
        if not part.indices:
            reason = part.failures[0]["reason"] if part.failures else "it is empty"
            raise ConfigError(manifest.source, f"no {name} image could be read ({reason})")
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

        from ..data.workers import worker_init

        # each worker re-seeds its transforms (no repeated augmentations) and dies with this process
        kw["worker_init_fn"] = worker_init(worker_init_fn)
    # a last batch of one image breaks BatchNorm when a small input leaves 1×1 feature maps
    drop_last = len(labels) // world_size > cfg.batch_size or len(labels) % cfg.batch_size == 1
    train_loader = torch.utils.data.DataLoader(train.dataset, shuffle=sampler is None, sampler=sampler,
                                               drop_last=drop_last, **kw)  # fmt: skip
    val_loader = torch.utils.data.DataLoader(val.dataset, shuffle=False, **kw)
    return train, val, train_loader, val_loader, labels, aug


def _writer() -> bool:
    """True in the process that writes the run (rank 0 under DDP, the only one otherwise)."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


def _absolute(cfg: TrainConfig) -> TrainConfig:
    """The config with its data files as absolute paths, so a run is usable from any folder."""
    import dataclasses

    changes = {}
    for key in ("manifest", "npz", "domain_manifest", "cache_dir"):
        value = getattr(cfg, key)
        if value:
            path = Path(value).expanduser()
            if key != "cache_dir" and not path.is_file():
                raise ConfigError(value, f"no such {key.replace('_', ' ')} file (from `{key}` in the config)")
            changes[key] = str(path.resolve())
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _changed_keys(stored: TrainConfig, cfg: TrainConfig) -> list[str]:
    """Settings that differ from the run's own and would change its weights (``epochs`` may grow)."""
    old, new = stored.to_dict(), cfg.to_dict()
    changed = [f"{k} ({old[k]!r} → {new[k]!r})" for k in new if k not in WEIGHT_NEUTRAL_KEYS and old.get(k) != new[k]]
    if new["epochs"] < old["epochs"]:
        changed.append(f"epochs ({old['epochs']} → {new['epochs']}: a run can be extended, not shortened)")
    return changed


def _check_gpu(cfg: TrainConfig) -> None:
    if str(cfg.accelerator).lower() in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(None, f"accelerator: {cfg.accelerator} but no GPU is visible to PyTorch here; use "
                          "accelerator: auto (a GPU when there is one) or cpu")  # fmt: skip


def finetune(
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> RunResult:
    """Fine-tune ``cfg.backbone`` on ``cfg.manifest`` and write a self-contained run directory.

    Args:
        cfg: a :class:`TrainConfig` (see :func:`medtl.train.config.load_config`).
        run_dir: output folder. A run already in it continues from ``checkpoints/last.ckpt``,
            only if every setting that shapes the weights is the same (``epochs`` may grow).
        resume: ``False`` replaces the run in ``run_dir`` (``medtl train --restart``); a finished run
            of the same settings is left as it is (nothing retrained, nothing rewritten).
        overwrite: replace another command's output in ``run_dir`` (``--overwrite``): only the
            files it recorded.
        progress: report progress on stderr: bars on a terminal; without one (a batch job's log)
            lines while caching and during long epochs (:mod:`medtl.progress`). Without bars one
            line per epoch is printed on stdout either way.

    Raises:
        ConfigError: bad options, a changed configuration on resume (naming the keys), too few
            patients per class for the split, no readable image.
        OutputError: ``run_dir`` is a file, read-only, holds other output, or is being written by
            another process.
        MedtlError: a NaN loss (naming epoch and batch).
    """
    run_dir = Path(run_dir)
    cfg = _absolute(cfg)
    _check_gpu(cfg)
    writer = _writer()
    progress = progress and writer  # under DDP one process reports
    if resume and (done := _finished(cfg, run_dir)) is not None:
        return done  # the same run, already trained: nothing is rewritten, no digest changes
    inputs = data_inputs(cfg)
    hold = (output_folder(run_dir, "train", inputs=inputs, overwrite=overwrite, resume=resume, restart=not resume)
            if writer else contextlib.nullcontext(run_dir))  # fmt: skip
    with hold:
        if writer:
            _record_library_folders(cfg, run_dir, inputs)
        stored = read_config(run_dir, missing_ok=True) if writer else None
        if stored is not None:
            changed = _changed_keys(stored, cfg)
            if changed:
                raise ConfigError(run_dir, f"holds a run trained with other settings: {'; '.join(changed)}. To train "
                                  "anew there use --restart (replaces it), or give another -o")  # fmt: skip
        elif writer and (run_dir / "checkpoints").exists():
            raise ConfigError(run_dir, "holds an unfinished run from an older medtl without its config.yaml, so "
                              "resuming cannot be checked: use --restart, or give another -o")  # fmt: skip
        train = _train_ensemble if cfg.ensemble > 1 else _train
        result = train(cfg, run_dir, progress, writer, stored)
        if writer:
            mark_complete(run_dir, "train", val_auroc=_finite(result.val_auroc), best_epoch=result.best_epoch,
                          **_provenance(cfg, run_dir, result.model))  # fmt: skip
        return result


def data_inputs(cfg: TrainConfig) -> list:
    """What a training reads: its manifests (or npz) and the folders of their images. Its output
    may not be, hold or sit inside any of them (:func:`medtl.outputs.output_folder`)."""
    from ..data.manifest import image_folders

    return [cfg.manifest, cfg.npz, cfg.domain_manifest, *image_folders(cfg.manifest),
            *image_folders(cfg.domain_manifest)]  # fmt: skip


def _record_library_folders(cfg: TrainConfig, run_dir: Path, inputs: list) -> None:
    """Lightning's log folders are recorded as pending (settled file by file when the run is
    finished); a cache elsewhere must not sit inside an input or another output."""
    from ..outputs import check_destination

    for folder in ("logs", "tensorboard"):
        claim(run_dir / folder, pending=True)
    if cfg.cache_dir:
        check_destination(cfg.cache_dir, inputs=inputs)


def _finished(cfg: TrainConfig, run_dir: Path) -> RunResult | None:
    """The run in ``run_dir`` when it is finished and is this run (the same settings, no more
    epochs asked for): running the same command again changes nothing."""
    from ..rundir import describe

    record = describe(run_dir) if run_dir.is_dir() else None
    if not (record and record.get("command") == "train" and record.get("complete")):
        return None
    stored = read_config(run_dir, missing_ok=True)
    if stored is None or _changed_keys(stored, cfg) or cfg.epochs != stored.epochs:
        return None
    split = read_split(run_dir)
    if split is None or split.get("keys") != run_data(cfg).record()["keys"]:
        return None  # the data changed: the resume path says so
    model, spec, _ = load_run(run_dir)
    auroc = record.get("val_auroc")
    return RunResult(run_dir, float("nan") if auroc is None else float(auroc), record.get("best_epoch"), [], model,
                     spec.extra.get("channels_rule", ""), already_complete=True)  # fmt: skip


def _provenance(cfg: TrainConfig, run_dir: Path, model: nn.Module) -> dict:
    """What a methods section cites: the library versions, the machine, the pretrained file the run
    started from (name, file, digest, licence), the model's size and the digest of its weights."""
    from ..models.registry import resolve_source
    from ..rundir import environment_versions, weights_digest

    source = resolve_source(cfg.backbone, cfg.pretrained) if cfg.pretrained else None
    start = None if source is None else {
        "name": source.name, "filename": source.filename, "sha256": source.sha256 or source.sha256_prefix,
        "licence": source.licence, "url": source.url, "package": source.package}  # fmt: skip
    try:
        digest = weights_digest(run_dir)
    except ConfigError:  # an ensemble's weights are its members' (each records its own)
        digest = None
    return {"versions": environment_versions(), "hardware": _hardware(), "pretrained_source": start,
            "parameters": int(sum(p.numel() for p in model.parameters())), "weights_sha256_16": digest}  # fmt: skip


def _hardware() -> dict:
    """The machine a run trained on (what a paper's methods name; it can change the last digits)."""
    import platform

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpus": gpus, "cuda": torch.version.cuda if gpus else None}  # fmt: skip


def _split_seed(cfg: TrainConfig) -> int:
    """The seed of the train/val/test split (and of a label-fraction subsample): ``split_seed``,
    or ``seed`` when it is not set."""
    return cfg.seed if cfg.split_seed is None else cfg.split_seed


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _seed(cfg: TrainConfig) -> None:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    from monai.utils import set_determinism

    # MONAI's Compose re-seeds its random transforms from MONAI's own seed, which Lightning does not set
    set_determinism(seed=cfg.seed, use_deterministic_algorithms=None)
    if not cfg.deterministic:  # set_determinism also pins cuDNN; give speed back when asked to
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True


def _spec(cfg: TrainConfig, data: RunData, progress: bool):
    from ..data.channels import decide_channels
    from ..data.transforms import PreprocessSpec
    from ..models.registry import resolve_source

    source = resolve_source(cfg.backbone, cfg.pretrained)  # its input convention drives preprocessing
    convention = source.convention if source is not None else None
    windows = tuple(tuple(w) if isinstance(w, list) else w for w in cfg.windows)
    # decided once, from the training images, before anything is cached
    channels = decide_channels(data.manifest, data.split.train, cfg.channels, preset=cfg.preset, windows=windows,
                               progress=progress)  # fmt: skip
    rng = cfg.intensity_range
    spec_kwargs = dict(preset=cfg.preset, windows=windows, size=tuple(cfg.size),
                       spacing=tuple(cfg.spacing) if cfg.spacing else None, input_channels=channels.channels,
                       intensity_range=tuple(rng) if isinstance(rng, list) else rng,
                       extra={"channels_rule": channels.rule}, window_after_resampling=True)  # fmt: skip
    spec = PreprocessSpec.from_convention(convention, **spec_kwargs) if convention else PreprocessSpec(**spec_kwargs)
    return spec, channels


def _recorded_data(cfg: TrainConfig, run_dir: Path, progress: bool, writer: bool, stored) -> RunData:
    """The run's data and split; the writer saves the config and the split first (so an interrupted
    run can be checked before it resumes), refusing a resumed run whose split changed."""
    data = run_data(cfg, progress=progress)
    if writer:
        record = data.record()
        previous = read_split(run_dir) if stored is not None else None
        if previous is not None and previous.get("keys") != record["keys"]:
            raise ConfigError(run_dir, "the data changed since this run started (its split differs from the "
                              "stored one): use --restart, or give another -o")  # fmt: skip
        save_config(run_dir, cfg)
        save_split(run_dir, record)
    return data


def _train(cfg: TrainConfig, run_dir: Path, progress: bool, writer: bool, stored: TrainConfig | None) -> RunResult:
    from ..models import create
    from ..progress import is_terminal
    from .callbacks import AtomicCheckpointIO, EpochLog, RandomStates

    _seed(cfg)
    data = _recorded_data(cfg, run_dir, progress, writer, stored)
    spec, channels = _spec(cfg, data, progress)
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor="val_auroc", mode="max", filename="best")
    # saved at the end of every training epoch, after validation: a resumed run starts the next epoch
    latest = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_on_train_epoch_end=True,
                             enable_version_counter=False)  # fmt: skip
    trainer_kw = dict(
        max_epochs=cfg.epochs,
        # a resumed run logs to the next version_N; TensorBoard files go to run_dir/tensorboard
        logger=[CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard")],
        gradient_clip_val=cfg.grad_clip or None,
        precision=("16-mixed" if torch.cuda.is_available() else "32-true") if cfg.precision == "auto"
        else cfg.precision,
        deterministic="warn" if cfg.deterministic else False,
        enable_progress_bar=progress and is_terminal(),  # a log file gets EpochLog's lines
        enable_model_summary=False,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        log_every_n_steps=1,
        # no sanity-check pass: it would draw from the random streams before a resumed epoch
        num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()],
    )  # fmt: skip
    states = RandomStates()  # told the augmentation's own random streams once the loaders exist
    callbacks = [ckpt, latest, EarlyStopping("val_auroc", mode="max", patience=cfg.patience, check_finite=False),
                 states]  # fmt: skip
    if cfg.ema:
        from lightning.pytorch.callbacks import WeightAveraging
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        # Lightning's averaging: validated with the averaged weights (so the best checkpoint is the
        # best average), both the average and the raw weights in every checkpoint (resumable);
        # BatchNorm statistics are averaged too
        callbacks.append(WeightAveraging(multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True))
    if not trainer_kw["enable_progress_bar"] and writer:
        callbacks.append(EpochLog(cfg.epochs, batches=progress))
    trainer = L.Trainer(**trainer_kw, callbacks=callbacks)
    train, val, train_loader, val_loader, labels, aug = _loaders(cfg, run_dir, spec, data.manifest, data.split,
                                                                 progress, trainer.world_size)  # fmt: skip
    states.track(aug)
    manifest = data.manifest
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
    # every process resumes from the same file: --restart emptied the folder, a changed config was refused
    _fit(trainer, module, train_loader, val_loader, str(last) if last.exists() else None)
    best = ckpt.best_model_path or str(last)
    saved = torch.load(best, map_location="cpu", weights_only=True)
    model.load_state_dict({k[len("model.") :]: v for k, v in saved["state_dict"].items() if k.startswith("model.")})
    model.cpu()  # the run directory and the returned model are device-independent
    best_auroc = float(ckpt.best_model_score) if ckpt.best_model_score is not None else float("nan")
    best_epoch = int(saved["epoch"])
    skipped = train.failures + val.failures
    if writer:  # under DDP one process writes the run directory
        _write_run(run_dir, cfg, spec, model, data, val, best_auroc, best_epoch, skipped, task, progress=progress)
    return RunResult(run_dir, best_auroc, best_epoch, skipped, model.eval(), channels.rule)


def _train_ensemble(cfg: TrainConfig, run_dir: Path, progress: bool, writer: bool, stored) -> RunResult:
    """``ensemble`` members trained as runs of their own under ``run_dir/members/m<k>`` (seeds
    ``seed``, ``seed+1`` ...; one split, drawn with ``split_seed``), then written as one run whose
    network averages their probabilities (:class:`medtl.models.EnsembleClassifier`); calibration,
    threshold and out-of-distribution statistics are fitted on the ensemble's own validation
    outputs. A killed ensemble resumes: finished members are loaded, an unfinished one continues."""
    import dataclasses

    from ..data.dataset import prepare
    from ..models import EnsembleClassifier
    from ..rundir import describe, load_run
    from ..tasks import probabilities
    from .module import auroc

    split_seed = _split_seed(cfg)
    data = _recorded_data(cfg, run_dir, progress, writer, stored)
    members, epochs, skipped = [], [], []
    for k in range(cfg.ensemble):
        member_dir = run_dir / "members" / f"m{k}"
        member_cfg = dataclasses.replace(cfg, ensemble=1, seed=cfg.seed + k, split_seed=split_seed)
        if not (describe(member_dir) or {}).get("complete"):
            if writer:
                print(f"ensemble member {k + 1} of {cfg.ensemble} (seed {member_cfg.seed})", flush=True)
            finetune(member_cfg, member_dir, resume=True, progress=progress)
        model, spec, labels = load_run(member_dir)
        members.append(model)
        epochs.append((describe(member_dir) or {}).get("best_epoch"))
    task = _recorded_task(member_dir)
    ensemble = EnsembleClassifier(members, task).eval()
    val = prepare(data.manifest, data.split.val, spec, cache_dir=cfg.cache_dir or str(run_dir / "cache"))
    loader = torch.utils.data.DataLoader(val.dataset, batch_size=cfg.batch_size)
    logits, _, ys = predict_outputs(ensemble, loader, flips=cfg.flips if cfg.tta else (), device="cpu")
    probs = probabilities(logits, task)
    val_auroc = auroc(ys, probs) if ys is not None and len(ys) else float("nan")
    if writer:
        _write_run(run_dir, cfg, spec, ensemble, data, val, val_auroc, epochs, skipped + val.failures, task,
                   progress=progress)
    return RunResult(run_dir, val_auroc, epochs, skipped, ensemble, spec.extra.get("channels_rule", ""))


def _recorded_task(run_dir: Path) -> str:
    """The task a finished run recorded in ``metrics.json``."""
    from ..rundir import read_json

    return read_json(run_dir / "metrics.json", "metrics")["task"]


def _fit(trainer, module, train_loader, val_loader, ckpt_path: str | None) -> None:
    """``trainer.fit``, except that Ctrl-C stays a ``KeyboardInterrupt``: Lightning turns it into
    ``sys.exit(1)`` after its own shutdown (and leaves SIGINT ignored), so a caller could not tell
    an interruption from a failure, nor say how to resume."""
    import signal

    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    except SystemExit:
        if not trainer.interrupted:
            raise
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt from None


def _write_run(run_dir, cfg, spec, model, data: RunData, val, best_auroc, best_epoch, skipped, task, *,
               progress: bool = False) -> None:
    import json

    from .report import model_card, write_curves

    model.eval()
    save_torch(model.state_dict(), run_dir / "model.pt")
    write_text(run_dir / "preprocess.json", json.dumps(spec.to_dict(), indent=2, default=list))
    cols = data.manifest.label_columns
    labels = list(cols) if len(cols) > 1 else [f"{cols[0]}={k}" for k in range(model.num_classes)]
    write_json(run_dir / "labels.json", labels)
    loader = torch.utils.data.DataLoader(val.dataset, batch_size=cfg.batch_size)
    logits, val_features, ys = predict_outputs(model, loader, flips=cfg.flips if cfg.tta else (), device="cpu",
                                               progress=progress, desc="calibration (validation)")  # fmt: skip
    probs, calibration = _calibrate(run_dir, logits, ys, task)
    test = _test_outputs(run_dir, cfg, spec, model, data, progress)
    ood_note = _fit_ood(run_dir, cfg, spec, model, data, val_features, task, test, progress)
    ood_note += "; " + _record_inputs(run_dir, data, spec, progress)
    threshold = 0.5
    if task == "binary" and len(np.unique(ys[:, 0])) == 2:
        from ..evaluate.metrics import choose_threshold

        # on the calibrated validation scores, as predict applies calibration then threshold
        threshold = choose_threshold(ys[:, 0], probs[:, 1], rule=cfg.threshold_rule, target=cfg.target_sensitivity)
    rule = cfg.threshold_rule if cfg.threshold_rule == "youden" else f"sensitivity >= {cfg.target_sensitivity}"
    write_json(run_dir / "threshold.json", {"threshold": threshold, "rule": rule, "split": "val"})
    # paths of skipped images stay out of shareable files: the count and the reasons only
    reasons = sorted({s["reason"] for s in skipped})
    result = {"val_auroc": _finite(best_auroc), "best_epoch": best_epoch, "n_val": int(len(ys)), "task": task,
              "skipped": len(skipped), "skipped_reasons": reasons[:20], "ood": ood_note,
              "test": _test_metrics(test, calibration, labels, task)}  # fmt: skip
    write_json(run_dir / "metrics.json", result)
    write_curves(run_dir)
    card = model_card(cfg, spec, {**result, "val_auroc": best_auroc, "skipped": skipped, "threshold": threshold,
                                  "rule": rule}, calibration, {"description": data.description})  # fmt: skip
    write_text(run_dir / "model_card.md", card)


def _fit_ood(run_dir: Path, cfg: TrainConfig, spec, model, data: RunData, val_features: np.ndarray, task: str,
             test: dict, progress: bool = False) -> str:
    """Fit the out-of-distribution statistics (:mod:`medtl.predict.ood`) on the training images'
    embeddings, unaugmented, with the threshold on validation; write ``ood.npz``. A run too small
    to fit them is still a run: the returned note says why there are none."""
    from ..data.dataset import prepare
    from ..errors import ConfigError
    from ..predict.ood import false_alarm_text, fit_ood, save_ood

    train = prepare(data.manifest, data.split.train, spec, cache_dir=cfg.cache_dir or str(run_dir / "cache"))
    loader = torch.utils.data.DataLoader(train.dataset, batch_size=cfg.batch_size)
    _, features, ys = predict_outputs(model, loader, flips=cfg.flips if cfg.tta else (), device="cpu",
                                      progress=progress, desc="out-of-distribution statistics (training)")  # fmt: skip
    classes = None if task == "multilabel" or ys is None else ys[:, 0]
    try:
        stats = fit_ood(features, classes, val_features)
    except ConfigError as exc:
        return f"no out-of-distribution statistics: {exc.reason}"
    # the test split, held out from both the fit and the threshold, measures the flag's false alarms
    # on new in-distribution images (the validation images' own rate is in-sample)
    why_not = test.get("why", "")
    if not why_not:
        stats.measure_false_alarm(test["features"], on="test")
    save_ood(run_dir, stats)
    return (f"Mahalanobis on {stats.n_fit} training embeddings, threshold {stats.threshold:.4g} at the "
            f"{stats.quantile:.0%} quantile of {stats.n_threshold} validation images; "
            f"{false_alarm_text(stats, why_not)}")


def _test_outputs(run_dir: Path, cfg: TrainConfig, spec, model, data: RunData, progress: bool) -> dict:
    """The trained model on the test split, which took part in nothing before: logits, features,
    labels and patients; ``{"why": ...}`` where there is none to score."""
    from ..data.dataset import prepare

    if not len(data.split.test):
        return {"why": "the run has no test split"}
    test = prepare(data.manifest, data.split.test, spec, cache_dir=cfg.cache_dir or str(run_dir / "cache"))
    if not test.indices:
        return {"why": "none of the test images could be read"}
    loader = torch.utils.data.DataLoader(test.dataset, batch_size=cfg.batch_size)
    logits, features, ys = predict_outputs(model, loader, flips=cfg.flips if cfg.tta else (), device="cpu",
                                           progress=progress, desc="held-out test split")  # fmt: skip
    patients = [data.manifest.records[i].patient for i in test.indices]
    return {"logits": logits, "features": features, "ys": ys, "patients": patients}


def _test_metrics(test: dict, calibration: dict, labels: list[str], task: str) -> dict | None:
    """The run's held-out discrimination (:func:`medtl.train.report.held_out_summary`) on its
    calibrated test probabilities, for ``metrics.json``, the model card and reports; ``None``
    without a test split."""
    from ..evaluate.calibration import apply_calibration
    from .report import held_out_summary

    if "why" in test or test["ys"] is None:
        return None
    probs = apply_calibration(test["logits"], calibration, task)
    return held_out_summary(probs, test["ys"], test["patients"], labels, task)


def _record_inputs(run_dir: Path, data: RunData, spec, progress: bool) -> str:
    """Write ``familiar.json`` (what the training images were: colour, modality, 2D/3D; the rules
    of :mod:`medtl.data.familiar`) and return the rules as a sentence for the model card."""
    from ..data.familiar import familiar_text, probe_training, write_familiar

    record = probe_training(data.manifest, data.split.train, len(spec.size), progress=progress)
    write_familiar(run_dir, record)
    return familiar_text(record)


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


def finetune_seeds(cfg: TrainConfig, run_dir: str | os.PathLike, seeds: int, **kwargs) -> dict:
    """Train ``seeds`` runs (``seed``, ``seed+1`` ...) into ``run_dir/seed_<k>`` and summarise.

    Returns (and writes to ``run_dir/seeds.json``) each seed's validation AUROC, their mean and
    a 95% confidence interval (t distribution over seeds).
    """
    resume, overwrite = kwargs.get("resume", True), kwargs.get("overwrite", False)
    run_dir = Path(run_dir)
    if resume and (done := _seeds_finished(cfg, run_dir, seeds)) is not None:
        return done  # every seed is this run, finished: nothing is rewritten
    with output_folder(run_dir, "seeds", inputs=data_inputs(cfg), overwrite=overwrite, resume=resume,
                       restart=not resume) as out:  # fmt: skip
        summary = _seed_runs(cfg, out, seeds, **kwargs)
        mark_complete(out, "seeds")
    return summary


def _seeds_finished(cfg: TrainConfig, run_dir: Path, seeds: int) -> dict | None:
    """``seeds.json`` of a finished ``--seeds`` output whose every run is this one, finished."""
    import dataclasses

    from ..rundir import describe, read_json

    record = describe(run_dir) if run_dir.is_dir() else None
    summary = read_json(run_dir / "seeds.json", "seeds summary") if record and record.get("complete") else None
    if not summary or record.get("command") != "seeds" or len(summary.get("runs", [])) != seeds:
        return None
    for k in range(seeds):
        seed = cfg.seed + k
        if _finished(_absolute(dataclasses.replace(cfg, seed=seed)), run_dir / f"seed_{seed}") is None:
            return None
    return summary


def _seed_runs(cfg: TrainConfig, run_dir: Path, seeds: int, **kwargs) -> dict:
    import dataclasses

    from scipy import stats

    results = []
    for k in range(seeds):
        seed = cfg.seed + k
        res = finetune(dataclasses.replace(cfg, seed=seed), run_dir / f"seed_{seed}", **kwargs)
        results.append({"seed": seed, "val_auroc": _finite(res.val_auroc), "best_epoch": res.best_epoch})
    values = np.array([r["val_auroc"] for r in results if r["val_auroc"] is not None], dtype=float)
    summary: dict = {"runs": results, "n": int(len(values))}
    if len(values):
        summary["mean"] = float(values.mean())
    if len(values) > 1:
        half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
        summary["ci95"] = [summary["mean"] - half, summary["mean"] + half]
        summary["sd"] = float(values.std(ddof=1))
    write_json(run_dir / "seeds.json", summary)
    return summary
