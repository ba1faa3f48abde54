"""Batch diagnosis: a trained run applied to new images, one at a time or a folder tree at a time.

* :class:`Predictor`: load a run once; ``.predict(path_or_image)`` gives calibrated
  probabilities, the decision at the run's threshold and an out-of-distribution score.
* :func:`predict_folder`: every image and series under a folder, into ``predictions.csv``,
  ``errors.csv`` and ``summary.json``; never stops on a bad file, resumes after a kill, splits
  into shards (:func:`merge_outputs` joins them).
* :mod:`medtl.predict.ood`: the out-of-distribution statistics a run stores;
  :func:`calibrate_ood` adds them to a run trained before they existed.
"""

from .calibrate import calibrate_ood
from .folder import predict_folder
from .merge import merge_outputs
from .ood import OODStats, fit_ood, read_ood
from .predictor import Prediction, Predictor

__all__ = [
    "Predictor",
    "Prediction",
    "predict_folder",
    "merge_outputs",
    "calibrate_ood",
    "OODStats",
    "fit_ood",
    "read_ood",
]
