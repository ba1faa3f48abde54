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
from typing import Any

from ..errors import ConfigError

__all__ = ["calibrate_ood"]


def _features(run, data, part: str, progress: bool):
    """Embeddings (N, F), labels and notes of the run's ``part`` images found in ``data``."""
    import torch

    from ..data.dataset import prepare
    from ..evaluate.run import select_rows
    from ..train.inference import predict_outputs

    _, manifest, indices, notes = select_rows(run.run_dir, data, part)
    cache = tempfile.mkdtemp(prefix="medtl-ood-")
    try:
        prepared = prepare(manifest, indices, run.spec, cache_dir=cache, progress=progress)
        if not prepared.indices:
            why = prepared.failures[0] if prepared.failures else {"path": "", "reason": "none listed"}
            raise ConfigError(data, f"none of the run's {len(indices)} {part} images could be read (e.g. "
                              f"{os.path.basename(why.get('path', ''))}: {why.get('reason')})")  # fmt: skip
        loader = torch.utils.data.DataLoader(prepared.dataset, batch_size=run.cfg.batch_size)
        _, feats, ys = predict_outputs(run.model, loader, flips=run.flips, device="cpu")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return feats, ys, notes


def _measure(run, data, stats, progress: bool) -> list[str]:
    """Measure the flag's false-alarm rate on the run's test images (held out from the fit and
    the threshold, as training measures it); notes, or why it could not be measured."""
    from ..errors import MedtlError, is_fatal

    try:
        feats, _, notes = _features(run, data, "test", progress)
    except MedtlError as exc:
        if is_fatal(exc):
            raise
        return [f"the false-alarm rate was not measured on held-out images: {exc.reason}"]
    stats.measure_false_alarm(feats, on="test")
    return notes


def _record_inputs(run, data, progress: bool) -> list[str]:
    """Write the run's ``familiar.json`` (:mod:`medtl.data.familiar`) from its training images in
    ``data``, for a run trained before medtl recorded it; notes."""
    from ..data.familiar import probe_training, write_familiar
    from ..evaluate.run import select_rows

    _, manifest, indices, _ = select_rows(run.run_dir, data, "train")
    write_familiar(run.run_dir, probe_training(manifest, indices, len(run.spec.size), progress=progress))
    return ["recorded what the training images were (familiar.json): colour, DICOM modalities, 2D/3D"]


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
    (the manifest CSV or ``.npz`` it was trained on), with the false-alarm rate measured on its
    test images, and ``familiar.json`` where the run lacks it. Returns the statistics'
    description, with ``false_alarm_text`` and ``notes``.

    Raises:
        ConfigError: not a finished run; the data holds none of its training or validation
            images; the run already has statistics (unless ``overwrite``).
        LockedError: another process is writing the run.
    """
    from ..data.familiar import FAMILIAR_FILE
    from ..files import adding_to
    from ..rundir import RunLock
    from ..train.inference import RunModel
    from .ood import NORMALISE, OOD_FILE, false_alarm_text, fit_ood, save_ood

    run = RunModel(run_dir)  # not a run: says so
    if (run.run_dir / OOD_FILE).is_file() and not overwrite:
        raise ConfigError(run.run_dir / OOD_FILE, "the run already has out-of-distribution statistics; pass "
                          "--overwrite to fit them again")  # fmt: skip
    if not 0.5 <= quantile < 1:
        raise ConfigError(None, f"the quantile must be in [0.5, 1), not {quantile}")
    with RunLock(run.run_dir, "calibrate-ood"):
        fit, ys, notes = _features(run, data, "train", progress)
        held, _, more = _features(run, data, "val", progress)
        classes = None if run.task == "multilabel" or ys is None else ys[:, 0]
        stats = fit_ood(fit, classes, held, quantile=quantile, normalise=NORMALISE if normalise is None else normalise)
        measured = _measure(run, data, stats, progress)
        with adding_to(run.run_dir):
            save_ood(run.run_dir, stats)
            if not (run.run_dir / FAMILIAR_FILE).is_file():
                measured += _record_inputs(run, data, progress)
    return dict(stats.describe(), notes=notes + more + measured, false_alarm_text=false_alarm_text(stats))
