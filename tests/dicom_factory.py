"""Write small DICOM files and series at known geometry, for the tests.

Expected world positions are computed here from the DICOM standard's own formula
(PS3.3 C.7.6.2.1.1), independently of medtl's reader.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

FAKE_PHI = {
    "PatientName": "SECRET^PERSON",
    "PatientID": "MRN-SECRET-4711",
    "PatientBirthDate": "19500101",
    "AccessionNumber": "ACC-SECRET-99",
    "InstitutionAddress": "1 Secret Street, Hidden Town",
    "ReferringPhysicianName": "DOCTOR^SECRET",
    "InstitutionName": "Secret General Hospital",
}


def base_dataset(modality: str = "CT", sop_class=CTImageStorage, series_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Manufacturer = "TestVendor"
    ds.PatientSex = "F"
    ds.PatientAge = "061Y"
    ds.StudyDate = "20200102"
    for key, value in FAKE_PHI.items():
        setattr(ds, key, value)
    return ds


def set_pixels(ds: Dataset, stored: np.ndarray, signed: bool = True, bits: int = 16) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = getattr(ds, "PhotometricInterpretation", "MONOCHROME2")
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()


@dataclass
class Series:
    """A written series and the geometry the tests expect of it."""

    folder: str
    files: list[str]
    iop: np.ndarray
    pixel_spacing: tuple[float, float]
    positions: np.ndarray  # LPS IPP of slice k, in true (sorted) order
    hu: np.ndarray  # (n, rows, cols) in true order
    series_uid: str

    def world_ras(self, row: int, col: int, k: int) -> np.ndarray:
        """RAS+ mm of pixel (row, col) of slice k, straight from the DICOM formula."""
        dr, dc = self.pixel_spacing
        lps = self.positions[k] + col * dc * self.iop[:3] + row * dr * self.iop[3:]
        return lps * np.array([-1.0, -1.0, 1.0])


def write_series(
    folder: str,
    *,
    n: int = 8,
    rows: int = 12,
    cols: int = 10,
    iop=(1, 0, 0, 0, 1, 0),
    origin=(-100.0, -80.0, 50.0),
    pixel_spacing=(0.8, 0.6),
    step: float = 2.5,
    tilt_mm: float = 0.0,
    slope: float = 1.0,
    intercept: float = -1024.0,
    marks: dict | None = None,
    shuffle: bool = True,
    reverse_instance: bool = True,
    wrong_thickness: float | None = 9.0,
    skip: tuple[int, ...] = (),
    extension: str = "",
    seed: int = 0,
) -> Series:
    """Write ``n`` slices (minus ``skip``) of one series; ``marks`` maps (row, col, k) → HU.

    File names are shuffled relative to position, InstanceNumber runs backwards and
    SliceThickness lies, so only positions can order and space the slices.
    """
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    # a gantry tilt shifts each slice along the column direction: positions stop following the normal
    positions = np.array([np.asarray(origin) + k * step * normal + k * tilt_mm * iop[3:] for k in range(n)])
    hu = rng.integers(-900, 900, size=(n, rows, cols)).astype(np.float64)
    hu = np.round(hu / slope) * slope  # representable exactly as stored * slope + intercept
    for (r, c, k), value in (marks or {}).items():
        hu[k, r, c] = value
    keep = [k for k in range(n) if k not in skip]
    order = list(keep)
    if shuffle:
        random.Random(seed).shuffle(order)
    series_uid = generate_uid()
    files = []
    for file_index, k in enumerate(order):
        ds = base_dataset(series_uid=series_uid)
        ds.ImageOrientationPatient = [f"{v:.8g}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        ds.PixelSpacing = [f"{v:.6g}" for v in pixel_spacing]
        ds.SliceThickness = f"{wrong_thickness if wrong_thickness is not None else step:g}"
        ds.InstanceNumber = (n - k) if reverse_instance else (k + 1)
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
        set_pixels(ds, np.round((hu[k] - intercept) / slope))
        name = f"f{file_index:04d}{extension}"
        path = os.path.join(folder, name)
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return Series(folder, files, iop, tuple(pixel_spacing), positions, hu, series_uid)


def oblique_iop(deg_a: float = 20.0, deg_b: float = 15.0) -> np.ndarray:
    """Orthonormal direction cosines rotated about two axes."""
    a, b = np.radians(deg_a), np.radians(deg_b)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rot = rx @ rz
    return np.concatenate([rot[:, 0], rot[:, 1]])
