"""Write small DICOM files and series at known geometry, for the tests.

Expected world positions are computed here from the DICOM standard's own formula
(PS3.3 C.7.6.2.1.1), independently of medtl's reader. Also written here: non-image objects
(DICOMDIR, report, key object selection, presentation state), 4D series (fMRI-like, diffusion),
an enhanced multi-frame MR time series, and Siemens mosaics with a CSA header in SV10 format.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import struct
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"

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
    offsets=None,
) -> Series:
    """Write ``n`` slices (minus ``skip``) of one series; ``marks`` maps (row, col, k) → HU.

    File names are shuffled relative to position, InstanceNumber runs backwards and
    SliceThickness lies, so only positions can order and space the slices. ``offsets`` (mm
    along the normal, one per slice) replaces the even ``step``.
    """
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    along = np.arange(n) * step if offsets is None else np.asarray(offsets, dtype=float)
    n = len(along)
    # a gantry tilt shifts each slice along the column direction: positions stop following the normal
    positions = np.array([np.asarray(origin) + along[k] * normal + k * tilt_mm * iop[3:] for k in range(n)])
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


def world_ras(positions, iop, pixel_spacing, row: int, col: int, k: int) -> np.ndarray:
    """RAS+ mm of pixel (row, col) of the slice at ``positions[k]`` (the DICOM formula, LPS → RAS)."""
    iop = np.asarray(iop, dtype=float)
    dr, dc = pixel_spacing
    lps = np.asarray(positions[k], dtype=float) + col * dc * iop[:3] + row * dr * iop[3:]
    return lps * np.array([-1.0, -1.0, 1.0])


# ----------------------------------------------------------------------------- non-image objects
def _non_image(sop_class: str, modality: str, series_uid: str | None = None) -> Dataset:
    ds = base_dataset(modality, sop_class=sop_class, series_uid=series_uid)
    ds.SeriesNumber, ds.InstanceNumber, ds.StudyID, ds.StudyTime = 99, 1, "1", "120000"
    ds.ContentDate, ds.ContentTime = "20200102", "120500"
    return ds


def write_non_image_objects(folder: str, series_uid: str | None = None) -> dict[str, str]:
    """A DICOMDIR, a Basic Text SR, a Key Object Selection and a Grayscale Softcopy Presentation State.

    The key object selection shares ``series_uid`` (some archives do that); the others have their
    own series, as usual. Returns ``{kind: path}``.
    """
    from pydicom.fileset import FileSet

    os.makedirs(folder, exist_ok=True)
    out = {}
    sr = _non_image("1.2.840.10008.5.1.4.1.1.88.11", "SR")
    sr.ValueType, sr.CompletionFlag, sr.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "18748-4", "LN", "Diagnostic imaging report"
    sr.ConceptNameCodeSequence = Sequence([title])
    item = Dataset()
    item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", "No acute findings."
    sr.ContentSequence = Sequence([item])
    ko = _non_image("1.2.840.10008.5.1.4.1.1.88.59", "KO", series_uid=series_uid)
    ko.ValueType = "CONTAINER"
    pr = _non_image("1.2.840.10008.5.1.4.1.1.11.1", "PR")
    pr.ContentLabel, pr.PresentationCreationDate = "ANNOTATION", "20200102"
    for kind, ds in (("sr", sr), ("ko", ko), ("pr", pr)):
        out[kind] = os.path.join(folder, f"{kind.upper()}0001")
        ds.save_as(out[kind], enforce_file_format=True)
    # a real DICOMDIR written by pydicom's File-set writer, indexing the report, then placed in the folder
    staging = os.path.join(folder, "..", f".fileset-{os.path.basename(folder)}")
    fs = FileSet()
    fs.add(sr)
    fs.write(staging)
    out["dicomdir"] = os.path.join(folder, "DICOMDIR")
    os.replace(os.path.join(staging, "DICOMDIR"), out["dicomdir"])
    shutil.rmtree(staging)
    return out


# ----------------------------------------------------------------------------- 4D series
@dataclass
class Series4D:
    """A written 4D series: volume v, slice k (true order) is ``hu[v, k]`` at ``positions[k]``."""

    folder: str
    files: list[str]
    iop: np.ndarray
    pixel_spacing: tuple[float, float]
    positions: np.ndarray
    hu: np.ndarray  # (volumes, slices, rows, cols), volumes in acquisition order
    series_uid: str
    tr_ms: float
    b_values: list[float] = field(default_factory=list)
    gradients: list = field(default_factory=list)  # LPS unit vectors or None
    file_of: dict = field(default_factory=dict)  # (volume, slice) → path

    def world_ras(self, row: int, col: int, k: int) -> np.ndarray:
        """RAS+ mm of pixel (row, col) of slice k."""
        return world_ras(self.positions, self.iop, self.pixel_spacing, row, col, k)


def _mr_slice(series_uid: str, iop, position, pixel_spacing, stored: np.ndarray, manufacturer: str) -> Dataset:
    ds = base_dataset("MR", sop_class=MR_IMAGE, series_uid=series_uid)
    ds.Manufacturer = manufacturer
    ds.ImageOrientationPatient = [f"{v:.8g}" for v in iop]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.PixelSpacing = [f"{v:.6g}" for v in pixel_spacing]
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.SeriesNumber = 7
    set_pixels(ds, stored, signed=False)
    return ds


def write_4d_series(
    folder: str,
    *,
    kind: str = "time",
    n_volumes: int = 4,
    n: int = 5,
    rows: int = 8,
    cols: int = 6,
    iop=(1, 0, 0, 0, 1, 0),
    origin=(-40.0, -30.0, 10.0),
    pixel_spacing=(2.0, 2.5),
    step: float = 3.0,
    b_values=None,
    gradients=None,
    manufacturer: str = "TestVendor",
    ge_private: bool = False,
    temporal_position: bool = True,
    echoes: int = 1,
    seed: int = 0,
) -> Series4D:
    """Write a classic 4D MR series, one file per slice per volume, file names shuffled.

    ``kind="time"``: fMRI-like, volumes told apart by AcquisitionNumber (and TemporalPositionIdentifier
    unless ``temporal_position`` is False).
    ``kind="diffusion"``: DiffusionBValue and DiffusionGradientOrientation (LPS unit vectors), the
    same AcquisitionNumber everywhere. ``kind="echo"``: volume v is echo v % ``echoes`` (EchoTime
    10, 20 ... ms, EchoNumbers) of time point v // ``echoes`` (AcquisitionNumber).
    With ``ge_private`` the b-value is only in GE's private (0043,1039) "GEMS_PARM_01" tag, with
    GE's 1e9 bias on b > 0. InstanceNumber follows acquisition order. Each volume's voxel (1, 2) of slice k holds 3000 + 100 v + k, unique in the series.
    """
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    iop, positions, hu = _marked_volumes(rng, iop, origin, step, n, n_volumes, rows, cols)
    series_uid = generate_uid()
    if kind == "diffusion":
        b_values = list(b_values if b_values is not None else [0.0] + [1000.0] * (n_volumes - 1))
        gradients = list(gradients) if gradients is not None else [None] + [
            tuple(g / np.linalg.norm(g)) for g in rng.normal(size=(n_volumes - 1, 3))
        ]
    jobs = [(v, k) for v in range(n_volumes) for k in range(n)]
    names = [f"IM{i:04d}" for i in range(len(jobs))]
    random.Random(seed).shuffle(names)
    files, file_of = [], {}
    for i, (v, k) in enumerate(jobs):
        ds = _mr_slice(series_uid, iop, positions[k], pixel_spacing, hu[v, k], manufacturer)
        ds.InstanceNumber = i + 1
        ds.RepetitionTime, ds.EchoTime = "2000", "30"
        if kind == "time":
            ds.AcquisitionNumber = v + 1
            if temporal_position:
                ds.TemporalPositionIdentifier = v + 1
        elif kind == "echo":
            ds.AcquisitionNumber, ds.EchoNumbers = v // echoes + 1, v % echoes + 1
            ds.EchoTime = 10 * (v % echoes + 1)
        else:
            ds.AcquisitionNumber = 1
            _set_diffusion(ds, b_values[v], gradients[v], ge_private)
        path = os.path.join(folder, names[i])
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        file_of[v, k] = path
    return Series4D(folder, files, iop, tuple(pixel_spacing), positions, hu, series_uid, 2000.0,
                    b_values or [], gradients or [], file_of)  # fmt: skip


def _marked_volumes(rng, iop, origin, step: float, n: int, n_volumes: int, rows: int, cols: int):
    """(iop, LPS positions of the n slices, values (volumes, n, rows, cols)); voxel (1, 2) of slice k
    of volume v holds 3000 + 100 v + k, unique in the series."""
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    positions = np.array([np.asarray(origin) + k * step * normal for k in range(n)])
    hu = rng.integers(0, 2000, size=(n_volumes, n, rows, cols)).astype(np.float64)
    for v in range(n_volumes):
        for k in range(n):
            hu[v, k, 1, 2] = 3000 + 100 * v + k
    return iop, positions, hu


def _set_diffusion(ds: Dataset, b: float, gradient, ge_private: bool) -> None:
    if ge_private:
        ds.add_new((0x0043, 0x0010), "LO", "GEMS_PARM_01")
        ds.add_new((0x0043, 0x1039), "IS", [int(b) + (1_000_000_000 if b > 0 else 0), 8, 0, 0])
        return
    ds.DiffusionBValue = float(b)
    if gradient is not None:
        ds.DiffusionGradientOrientation = [float(g) for g in gradient]


def write_enhanced_mr_timeseries(
    path: str, *, n_time: int = 3, n: int = 4, rows: int = 6, cols: int = 5, iop=(0, 1, 0, 0, 0, -1),
    origin=(20.0, -50.0, 60.0), pixel_spacing=(1.5, 1.2), step: float = 4.0, tr_ms: float = 1500.0, seed: int = 0,
    shuffle: bool = True, manufacturer: str = "TestVendor",
) -> Series4D:
    """One Enhanced MR Image Storage file: ``n_time`` temporal positions × ``n`` slices, frames shuffled
    (or time-major, then by position, with ``shuffle=False``). (dcm2niix 1.0.2022 sorts the frames of
    an enhanced object by DimensionIndexValues only when the manufacturer is Philips.)

    Per frame: PlanePositionSequence and FrameContentSequence (TemporalPositionIndex, StackID,
    InStackPositionNumber, DimensionIndexValues), with DimensionIndexSequence naming the three.
    Frame of (t, k) holds ``hu[t, k]``; its voxel (1, 2) is 3000 + 100 t + k.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    rng = np.random.default_rng(seed)
    iop, positions, hu = _marked_volumes(rng, iop, origin, step, n, n_time, rows, cols)
    ds = base_dataset("MR", sop_class=ENHANCED_MR_IMAGE)
    ds.Manufacturer = manufacturer
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.4"
    ds.ContentQualification, ds.ResonantNucleus = "PRODUCT", "1H"
    ds.InstanceNumber, ds.NumberOfTemporalPositions = 1, n_time
    dims = []
    pointers = [0x00209056, 0x00209057, 0x00209128]  # StackID, InStackPositionNumber, TemporalPositionIndex
    for pointer, group_ptr in ((p, 0x00209111) for p in pointers):  # all in FrameContentSequence
        d = Dataset()
        d.DimensionIndexPointer, d.FunctionalGroupPointer = pointer, group_ptr
        dims.append(d)
    ds.DimensionIndexSequence = Sequence(dims)
    shared, pm, po, timing = Dataset(), Dataset(), Dataset(), Dataset()
    pm.PixelSpacing, pm.SliceThickness, pm.SpacingBetweenSlices = [f"{v:g}" for v in pixel_spacing], "3", f"{step:g}"
    po.ImageOrientationPatient = [f"{v:.8g}" for v in iop]
    timing.RepetitionTime = tr_ms
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    jobs = [(t, k) for t in range(n_time) for k in range(n)]
    if shuffle:
        random.Random(seed).shuffle(jobs)
    per, frames = [], []
    for t, k in jobs:
        fg, pp, fc = Dataset(), Dataset(), Dataset()
        pp.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        fc.TemporalPositionIndex, fc.StackID, fc.InStackPositionNumber = t + 1, "1", k + 1
        fc.DimensionIndexValues = [1, k + 1, t + 1]
        fg.PlanePositionSequence = Sequence([pp])
        fg.FrameContentSequence = Sequence([fc])
        per.append(fg)
        frames.append(hu[t, k])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.NumberOfFrames = len(jobs)
    set_pixels(ds, np.concatenate(frames), signed=False)
    ds.Rows = rows
    ds.save_as(path, enforce_file_format=True)
    return Series4D(os.path.dirname(path), [path], iop, tuple(pixel_spacing), positions, hu, ds.SeriesInstanceUID,
                    tr_ms)  # fmt: skip


# ----------------------------------------------------------------------------- Siemens mosaics
def csa_header(tags: dict[str, tuple[str, list]]) -> bytes:
    """A Siemens CSA header in "SV10" format: ``{name: (vr, [values])}``, values written as text items.

    Layout (little-endian): "SV10", 4 unused bytes, uint32 number of tags, uint32 77; per tag a
    64-byte name, int32 VM, 4-byte VR, int32 SyngoDT, int32 number of items, int32 77; per item
    four int32 (length, length, 77, length) then the text and a NUL, padded to 4 bytes.
    """
    out = bytearray(b"SV10" + b"\x04\x03\x02\x01" + struct.pack("<II", len(tags), 77))
    for name, (vr, values) in tags.items():
        out += name.encode("ascii").ljust(64, b"\x00")
        out += struct.pack("<i", len(values)) + vr.encode("ascii").ljust(4, b"\x00")
        out += struct.pack("<iii", 0, len(values), 77)
        for value in values:
            text = (value if isinstance(value, str) else f"{value:.8f}" if vr in ("FD", "DS") else str(value))
            item = text.encode("ascii") + b"\x00"
            out += struct.pack("<iiii", len(item), len(item), 77, len(item))
            out += item + b"\x00" * (-len(item) % 4)
    return bytes(out)


def write_mosaic_run(
    folder: str, *, n_files: int = 1, n_tiles: int = 5, tile_rows: int = 6, tile_cols: int = 4,
    iop=(1, 0, 0, 0, 1, 0), first_position=(-30.0, -20.0, -10.0), pixel_spacing=(3.0, 2.5), step: float = 3.5,
    normal_sign: float = 1.0, csa: bool = True, seed: int = 0,
) -> Series4D:
    """Siemens EPI mosaics: ``n_files`` volumes (AcquisitionNumber 1..n) of ``n_tiles`` slices each.

    True slice k lies at ``first_position + k * step * normal_sign * (row × column direction)``;
    the ImagePositionPatient written is the mosaic grid's corner, as Siemens writes it:
    first - row_dir * col_spacing * (Columns - tile_cols) / 2 - col_dir * row_spacing * (Rows - tile_rows) / 2.
    Voxel (1, 2) of tile k of file v holds 3000 + 100 v + k.
    """
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:]) * normal_sign
    positions = np.array([np.asarray(first_position) + k * step * normal for k in range(n_tiles)])
    hu = rng.integers(0, 2000, size=(n_files, n_tiles, tile_rows, tile_cols)).astype(np.float64)
    for v in range(n_files):
        for k in range(n_tiles):
            hu[v, k, 1, 2] = 3000 + 100 * v + k
    grid = math.ceil(math.sqrt(n_tiles))
    rows, cols = grid * tile_rows, grid * tile_cols
    dr, dc = pixel_spacing
    corner = positions[0] - iop[:3] * dc * (cols - tile_cols) / 2 - iop[3:] * dr * (rows - tile_rows) / 2
    series_uid, files = generate_uid(), []
    for v in range(n_files):
        mosaic = np.zeros((rows, cols))
        for k in range(n_tiles):
            r0, c0 = (k // grid) * tile_rows, (k % grid) * tile_cols
            mosaic[r0 : r0 + tile_rows, c0 : c0 + tile_cols] = hu[v, k]
        ds = _mr_slice(series_uid, iop, corner, pixel_spacing, mosaic, "SIEMENS")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.InstanceNumber, ds.AcquisitionNumber = v + 1, v + 1
        ds.SliceThickness, ds.SpacingBetweenSlices = "3", f"{step:g}"
        ds.RepetitionTime, ds.EchoTime = "2500", "30"
        ds.AcquisitionMatrix = [tile_cols, 0, 0, tile_rows]
        if csa:
            ds.add_new((0x0029, 0x0010), "LO", "SIEMENS CSA HEADER")
            header = csa_header({
                "NumberOfImagesInMosaic": ("US", [n_tiles]),
                "SliceNormalVector": ("FD", [float(x) for x in normal]),
                "AcquisitionMatrixText": ("SH", [f"{tile_rows}p*{tile_cols}"]),
            })  # fmt: skip
            ds.add_new((0x0029, 0x1010), "OB", header)
        path = os.path.join(folder, f"MOSAIC{v:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return Series4D(folder, files, iop, tuple(pixel_spacing), positions, hu, series_uid, 2500.0)


# ----------------------------------------------------------------------------- dcm2niix, the independent reference
DCM2NIIX = shutil.which("dcm2niix")
NO_DCM2NIIX = "dcm2niix not installed (.ci/run installs it: apt-get install dcm2niix)"


def dcm2niix_convert(source: str, out_dir: str) -> tuple:
    """Convert ``source`` (folder or file's folder) with dcm2niix; (nibabel image, b-values or None)."""
    import subprocess

    import nibabel as nib

    os.makedirs(out_dir, exist_ok=True)
    subprocess.run([DCM2NIIX, "-z", "n", "-f", "ref", "-o", out_dir, source], check=True, capture_output=True)
    bval = os.path.join(out_dir, "ref.bval")
    bvals = [float(b) for b in open(bval).read().split()] if os.path.exists(bval) else None
    return nib.load(os.path.join(out_dir, "ref.nii")), bvals


def find_value(data: np.ndarray, value: float) -> tuple:
    """The one index of ``data`` holding ``value``."""
    idx = np.argwhere(np.isclose(data, value))
    assert len(idx) == 1, f"value {value} found {len(idx)} times"
    return tuple(int(i) for i in idx[0])
