"""Labelled data: manifests (CSV of path, labels, patient, groups) and patient-level splits.

>>> from medtl.data import read_manifest, split_patients
>>> callable(read_manifest) and callable(split_patients)
True
"""

from .manifest import Manifest, Record, read_manifest
from .splits import Split, kfold_patients, split_patients
from .transforms import PreprocessSpec, augmentation, preprocess

__all__ = [
    "Manifest",
    "Record",
    "read_manifest",
    "Split",
    "split_patients",
    "kfold_patients",
    "PreprocessSpec",
    "preprocess",
    "augmentation",
]
