"""``calibrate_ood``: out-of-distribution statistics for a run trained before they existed.

The statistics are fitted exactly as training fits them now (:mod:`medtl.predict.ood`): the
run's training images give the means and covariance, its validation images the threshold. Both
parts are found in the data by the split the run stored (``split.json``), or taken from an
``.npz``'s own splits.

>>> import inspect
>>> list(inspect.signature(calibrate_ood).parameters)[:2]
['run_dir', 'data']
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["calibrate_ood"]


def _features(run_dir: Path, data, part: str, progress: bool):
    import torch

    from ..data.dataset import prepare
    from ..evaluate.run import select_rows
    from ..rundir import load_run, read_config
    from ..train.inference import predict_outputs

    cfg = read_config(run_dir)
    _, manifest, indices, notes = select_rows(run_dir, data, part)
    model, spec, _ = load_run(run_dir)
    cache = tempfile.mkdtemp(prefix="medtl-ood-")
    try:
        prepared = prepare(manifest, indices, spec, cache_dir=cache, progress=progress)
        if not prepared.indices:
            raise ConfigError(data, f"none of the run's {part} images could be read")
        loader = torch.utils.data.DataLoader(prepared.dataset, batch_size=cfg.batch_size)
        _, feats, ys = predict_outputs(model, loader, flips=cfg.flips if cfg.tta else (), device="cpu")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return feats, ys, notes


def calibrate_ood(
    run_dir: str | os.PathLike,
    data: str | os.PathLike,
    *,
    quantile: float = 0.99,
    normalise: bool | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit and store ``run_dir/ood.npz`` from the run's training and validation images in ``data``
    (the manifest CSV or ``.npz`` it was trained on). Returns the statistics' description.

    Raises:
        ConfigError: not a finished run; the data holds none of its training or validation
            images; the run already has statistics (unless ``overwrite``).
        LockedError: another process is writing the run.
    """
    import json

    from ..rundir import RunLock, read_config
    from ..tasks import task_for
    from .ood import NORMALISE, OOD_FILE, fit_ood, save_ood

    run_dir = Path(run_dir)
    if not (run_dir / "model.pt").is_file():
        raise ConfigError(run_dir, "not a run directory (no model.pt): train one with `medtl train`")
    if (run_dir / OOD_FILE).is_file() and not overwrite:
        raise ConfigError(run_dir / OOD_FILE, "the run already has out-of-distribution statistics; pass "
                          "--overwrite to fit them again")  # fmt: skip
    if not 0.5 <= quantile < 1:
        raise ConfigError(None, f"the quantile must be in [0.5, 1), not {quantile}")
    cfg = read_config(run_dir)
    with RunLock(run_dir, "calibrate-ood"):
        fit, ys, notes = _features(run_dir, data, "train", progress)
        held, _, more = _features(run_dir, data, "val", progress)
        task = task_for(cfg.label_columns, len(json.loads((run_dir / "labels.json").read_text())))
        classes = None if task == "multilabel" or ys is None else ys[:, 0]
        stats = fit_ood(fit, classes, held, quantile=quantile, normalise=NORMALISE if normalise is None else normalise)
        save_ood(run_dir, stats)
    return dict(stats.describe(), notes=notes + more)
