#!/usr/bin/env python
"""(Re)create ``sample_data/``: small, synthetic, clearly fake DICOM and NIfTI test data.

Run from anywhere::

    python scripts/make_sample_data.py            # writes <repo>/sample_data/
    python scripts/make_sample_data.py --out DIR  # writes DIR instead

What it writes (see the generated ``sample_data/README.md`` for the details):

* ``cxr/<patient>/IM######[.dcm]`` -- 48 chest-radiograph-like 2D DICOM images (DX/CR,
  128x128, 12-bit, some MONOCHROME1) from 40 patients; half show a round nodule.
* ``ct/<patient>/series01/IM####`` -- 10 CT-like thorax series (64x64 slices, int16 + rescale
  to HU), two of them oblique, three written with file names out of spatial order.
* ``nifti/<patient>_ct.nii.gz`` -- 4 more CT-like volumes (extra patients) as NIfTI.
* ``masks/*.nii.gz`` -- a uint8 lesion mask for every positive, on the image's own voxel grid.
* ``labels.csv`` and ``README.md``.

Every pixel is drawn from simple analytic shapes plus seeded noise; no real patient data is
involved and every identifier is invented.  The output is a pure function of this file: all
randomness comes from ``numpy.random.RandomState`` streams seeded from fixed strings (the legacy
generator, whose streams numpy keeps frozen across releases), UIDs are hashes of fixed strings,
dates are constants and gzip headers carry no timestamp, so two runs give byte-identical files
(on the same platform and library versions).

Geometry convention (the one medtl loads images in): an array is indexed ``[i, j, k]`` with
i = DICOM column index, j = DICOM row index, k = slice index sorted along the slice normal
``cross(row_cosines, column_cosines)``; the affine maps (i, j, k) to RAS+ millimetres, i.e. the
DICOM LPS position with x and y negated.  Masks and NIfTI volumes are written in that order with
that affine, so ``mask[i, j, k]`` lies on ``image[i, j, k]``.

Only numpy, pydicom and nibabel are used (no medtl imports) so the data can be rebuilt even when
the package under test is broken.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

#: Bump to get a different (but still deterministic) data set; it seeds every stream and UID.
SEED = "medtl-sample-data-v1"

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "sample_data"

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage

STUDY_DATE = "20240115"  # every first study; fixed so reruns are byte-identical
FOLLOW_UP_DATE = "20240312"  # second study of the CXR patients that have two images
STUDY_TIME = "093000"

CXR_SIZE = 128  # rows == columns
CXR_BITS = 12  # BitsStored; values 0..4095 in a uint16 container
CT_SHAPE = (64, 64, 16)  # (columns, rows, slices); 16 slices (80 mm) keep the set under 5 MB
CT_PIXEL_MM = 6.0  # 64 px * 6 mm = 384 mm field of view: a plausible (coarse) thorax FOV
CT_SLICE_MM = 5.0
HU_OFFSET = 1024  # stored = HU + 1024, undone by RescaleIntercept -1024

SYNTHETIC_NOTE = "SYNTHETIC TEST IMAGE made by scripts/make_sample_data.py - not a real patient"


@dataclass(frozen=True)
class Site:
    """One fictitious hospital with its own scanner 'look'."""

    code: str
    manufacturer: str
    dx_model: str
    ct_model: str
    institution: str
    address: str
    station: str
    serial: str
    cxr_pixel_mm: float  # detector pitch at this site
    cxr_noise: float  # std of additive noise, in display units (0..1)
    cxr_contrast: float  # gain about mid-grey: < 1 = flatter images
    cxr_offset: float  # brightness shift, display units
    ct_noise_hu: float
    ct_offset_hu: float  # small calibration offset, so the two sites differ slightly in HU
    ct_kernel: str


SITES = {
    "A": Site(
        code="A",
        manufacturer="ACME Medical",
        dx_model="ACME RadiantDR 3000",
        ct_model="ACME Tomo 64",
        institution="Springfield General (FICTITIOUS)",
        address="742 Evergreen Terrace, Springfield, FAKE STATE 00000",
        station="ACME-STN-01",
        serial="FAKE-SN-A-0001",
        cxr_pixel_mm=2.8,
        cxr_noise=0.012,
        cxr_contrast=1.0,
        cxr_offset=0.0,
        ct_noise_hu=8.0,
        ct_offset_hu=0.0,
        ct_kernel="ACME_STD",
    ),
    "B": Site(
        code="B",
        manufacturer="Globex Imaging",
        dx_model="Globex XR-9",
        ct_model="Globex Hyperion CT",
        institution="Shelbyville Memorial (FICTITIOUS)",
        address="1 Nowhere Road, Shelbyville, FAKE STATE 99999",
        station="GLOBEX-RAD-2",
        serial="FAKE-SN-B-0002",
        cxr_pixel_mm=3.0,
        cxr_noise=0.03,
        cxr_contrast=0.78,
        cxr_offset=0.05,
        ct_noise_hu=20.0,
        ct_offset_hu=12.0,
        ct_kernel="GX_B40",
    ),
}


@dataclass(frozen=True)
class Patient:
    """A fictitious person. ``number`` drives every identifier so they are easy to trace."""

    number: int
    site: str
    sex: str
    age: int

    @property
    def folder(self) -> str:  # neutral folder name: identifiers live only in the headers
        return f"p{self.number:03d}"

    @property
    def patient_id(self) -> str:
        return f"MRN-{self.number:06d}"

    @property
    def name(self) -> str:
        return f"FAKE^PATIENT^{self.number:04d}"

    @property
    def birth_date(self) -> str:
        # Born on 1 July so that the age on every 2024 study date (January, March) is `age`.
        return f"{2023 - self.age}0701"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def rng_for(*parts: object) -> np.random.RandomState:
    """A random stream that depends only on ``parts``, so adding an image leaves others alone."""
    digest = hashlib.sha256("|".join([SEED, *map(str, parts)]).encode()).digest()
    return np.random.RandomState(np.frombuffer(digest[:16], dtype=np.uint32))


def uid(*parts: object) -> str:
    """A deterministic '2.25.<int>' UID: a name-based (SHA-1, version 5) UUID of fixed strings.

    (``pydicom.uid.generate_uid(prefix=None, ...)`` would ignore its entropy sources and return
    a random UUID, so the UUID is built here.)
    """
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '|'.join([SEED, *map(str, parts)])).int}"


def ds_str(x: float, decimals: int = 6) -> str:
    """Format a number as a DICOM DS string (<= 16 characters, no '-0')."""
    text = f"{round(float(x), decimals):.{decimals}f}".rstrip("0").rstrip(".")
    text = "0" if text in ("-0", "") else text
    assert len(text) <= 16, text
    return text


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding (numpy only, no scipy)."""
    radius = max(1, int(round(3 * sigma)))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = img.astype(np.float64)
    for axis in range(img.ndim):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(img.ndim)], mode="edge")
        out = sum(w * np.take(padded, np.arange(o, o + img.shape[axis]), axis=axis) for o, w in enumerate(kernel))
    return out


def ras_from_lps(affine_lps: np.ndarray) -> np.ndarray:
    """RAS+ = LPS with x and y negated."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps


def save_nifti(path: Path, data: np.ndarray, affine_ras: np.ndarray, *, inter: float = 0.0, descrip: str) -> None:
    """Write a NIfTI-1 file (qform = sform = scanner, units mm) with a timestamp-free gzip."""
    img = nib.Nifti1Image(data, affine_ras)
    hdr = img.header
    hdr.set_data_dtype(data.dtype)
    hdr.set_qform(affine_ras, code=1)
    hdr.set_sform(affine_ras, code=1)
    hdr.set_xyzt_units(xyz="mm")
    if inter:
        hdr.set_slope_inter(1.0, inter)  # raw values are kept; readers apply raw * 1 + inter
    hdr["descrip"] = descrip[:79].encode()
    # nibabel's own .gz writer may store an mtime; gzip.compress(mtime=0) never does.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=9, mtime=0))


def file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # Fixed here (instead of pydicom's defaults) so the bytes do not depend on pydicom's version.
    meta.ImplementationClassUID = uid("implementation")
    meta.ImplementationVersionName = "MEDTL_SAMPLE_1"
    return meta


def add_patient_and_site(ds: Dataset, patient: Patient, site: Site, study_date: str, accession: str) -> None:
    """Identifying and site attributes: all invented, all things a de-identifier must drop."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = STUDY_TIME
    ds.AccessionNumber = accession
    ds.Manufacturer = site.manufacturer
    ds.InstitutionName = site.institution
    ds.InstitutionAddress = site.address
    ds.ReferringPhysicianName = "FAKE^REFERRER"
    ds.StationName = site.station
    ds.OperatorsName = "FAKE^OPERATOR"
    ds.ManufacturerModelName = site.ct_model if ds.Modality == "CT" else site.dx_model
    ds.DeviceSerialNumber = site.serial
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{patient.age:03d}Y"
    ds.ImageComments = SYNTHETIC_NOTE


def write_dicom(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)  # 128-byte preamble + 'DICM' + group 2


# --------------------------------------------------------------------------------------------
# 2D chest radiographs
# --------------------------------------------------------------------------------------------


@dataclass
class CxrImage:
    patient: Patient
    number: int  # global image number -> file name IM######
    study: int  # 1 = first study, 2 = follow-up
    label: int
    modality: str  # DX or CR
    view: str  # PA or AP
    monochrome1: bool
    extension: str  # "" or ".dcm"

    @property
    def relpath(self) -> str:
        return f"cxr/{self.patient.folder}/IM{self.number:06d}{self.extension}"


def plan_cxr() -> list[CxrImage]:
    """40 patients (20 per site), 8 of them with a follow-up study: 48 images, 24 positive.

    Labels are per patient and balanced within each site (12/24 positive images per site) so
    that site is not a shortcut for the label.  MONOCHROME1 goes to 12 images: 10 from site B
    (its reader exports inverted images) and 2 from site A, both classes each time.
    """
    rng = rng_for("cxr-plan")
    patients: list[Patient] = []
    images: list[CxrImage] = []
    ages = rng.randint(24, 89, size=40)
    ages[17] = 93  # one patient over 89, for "90+" age grouping
    for site_index, site in enumerate("AB"):
        numbers = list(range(1 + 20 * site_index, 21 + 20 * site_index))
        order = rng.permutation(20)
        # order[:4] have two studies (2 positive, 2 negative); of the other 16, 8 are positive.
        twice = {numbers[i] for i in order[:4]}
        positive = {numbers[i] for i in order[:2]} | {numbers[i] for i in order[4:12]}
        site_images = []
        for n in numbers:
            p = Patient(n, site, "MF"[rng.randint(2)], int(ages[n - 1]))
            patients.append(p)
            ext = ".dcm" if rng.rand() < 0.5 else ""  # one export style per patient
            for study in (1, 2) if n in twice else (1,):
                site_images.append(CxrImage(p, 0, study, int(n in positive), "DX", "PA", False, ext))
        # Per-site assignments of photometric, modality and view, each balanced over the classes.
        by_class = {c: [im for im in site_images if im.label == c] for c in (0, 1)}
        n_mono1 = 5 if site == "B" else 1
        n_cr = 2 if site == "B" else 1
        for group in by_class.values():
            picks = rng.permutation(len(group))
            for k in picks[:n_mono1]:
                group[k].monochrome1 = True
            for k in picks[n_mono1 : n_mono1 + n_cr]:
                group[k].modality = "CR"
            for k in rng.permutation(len(group))[:3]:
                group[k].view = "AP"
        images.extend(site_images)
    for number, im in enumerate(images, start=101):
        im.number = number
    return images


def chest_radiograph(rng: np.random.RandomState, im: CxrImage) -> tuple[np.ndarray, np.ndarray | None]:
    """Render one image in display units (0 = black, 1 = white) and its lesion mask.

    Arrays are indexed [row, column]; column grows toward the patient's left (conventional
    display, patient's right on the viewer's left) and row grows toward the feet.
    """
    site = SITES[im.patient.site]
    n = CXR_SIZE
    r, c = np.mgrid[0:n, 0:n].astype(np.float64)
    cy, cx = n / 2 + rng.uniform(-4, 4), n / 2 + rng.uniform(-4, 4)
    u, v = (c - cx) / (n / 2), (r - cy) / (n / 2)  # normalised coordinates, about -1..1

    # Body: wide trunk, narrowing to the neck above the shoulders.
    half_width = 0.86 - 0.3 * np.clip(-(v + 0.6) / 0.4, 0, 1)
    body = sigmoid((half_width - np.abs(u)) / 0.02)

    # Lungs: two rounded fields; the left one (image right) a bit smaller because of the heart.
    scale = rng.uniform(0.93, 1.07)
    heart_w = 0.30 * (1.15 if im.view == "AP" else 1.0)  # AP projection magnifies the heart
    lungs = np.zeros_like(u)
    for uc, au, av in ((-0.38, 0.27, 0.52), (0.37, 0.25, 0.48)):
        rho = (np.abs((u - uc * scale) / (au * scale)) ** 2.4 + np.abs((v + 0.05) / (av * scale)) ** 2) ** 0.5
        lungs = np.maximum(lungs, sigmoid((1 - rho) / 0.06))
    heart = sigmoid((1 - np.hypot((u - 0.1) / heart_w, (v - 0.28) / 0.22)) / 0.05)

    # A cylinder-like trunk is thickest in the middle, so it projects brighter there.
    thickness = np.sqrt(np.clip(1 - (u / half_width) ** 2, 0, 1))
    image = 0.04 + body * (0.42 + 0.16 * thickness)
    image -= 0.36 * lungs * (1 - 0.85 * heart)
    image += 0.07 * sigmoid((0.07 - np.abs(u)) / 0.01) * body  # spine through the mediastinum
    # Ribs: faint posterior arcs, rising from the spine then curving down laterally.
    x = np.abs(u) - 0.08
    for k in range(9):
        arc = -0.58 + 0.11 * k - 0.25 * x + 0.9 * x**2
        image += 0.045 * np.exp(-0.5 * ((v - arc) / 0.014) ** 2) * (x > 0) * body
    # Clavicles.
    image += 0.05 * np.exp(-0.5 * ((v + 0.58 - 0.12 * np.abs(u)) / 0.02) ** 2) * (np.abs(u) < 0.6) * body

    mask = None
    if im.label:
        image, mask = add_nodule(rng, image, lungs, heart, r, c)

    image = gaussian_blur(image, 0.8)
    image *= rng.uniform(0.95, 1.05)  # exposure varies between images
    image = 0.5 + site.cxr_contrast * (image - 0.5) + site.cxr_offset
    image += rng.normal(0.0, site.cxr_noise, image.shape)
    return np.clip(image, 0.0, 1.0), mask


def add_nodule(rng, image, lungs, heart, r, c) -> tuple[np.ndarray, np.ndarray]:
    """A bright round opacity well inside one lung field; returns (image, mask)."""
    inner = (lungs > 0.9) & (heart < 0.1)
    for _ in range(10_000):
        radius = rng.uniform(5.0, 10.0)
        rn, cn = rng.uniform(10, CXR_SIZE - 10, size=2)
        dist = np.hypot(r - rn, c - cn)
        if inner[dist <= radius + 2].all():  # whole nodule (plus margin) inside the lung
            break
    else:  # pragma: no cover - the lungs are large, this never happens with the fixed seed
        raise RuntimeError("could not place a nodule")
    # Projection of a solid sphere: thickness grows as sqrt(1 - (d/R)^2) towards the centre.
    thickness = np.sqrt(np.clip(1 - (dist / radius) ** 2, 0, 1))
    return image + rng.uniform(0.2, 0.28) * thickness, dist <= radius


def cxr_dataset(im: CxrImage, display: np.ndarray) -> Dataset:
    """Wrap a display-polarity image in a DX (For Presentation) or CR header."""
    p, site = im.patient, SITES[im.patient.site]
    max_value = 2**CXR_BITS - 1
    values = np.round(display * max_value).astype(np.uint16)
    # Window from the displayed value range; the VOI window applies to *stored* values, so for
    # MONOCHROME1 (stored = max - displayed) its centre is mirrored too.
    lo, hi = np.percentile(values, [1, 99])
    center, width = (lo + hi) / 2, max(hi - lo, 1)
    if im.monochrome1:
        values = (max_value - values).astype(np.uint16)  # high stored value = dark on screen
        center = max_value - center

    sop_class = DX_FOR_PRESENTATION if im.modality == "DX" else CR_IMAGE_STORAGE
    sop_instance = uid("cxr", im.number, "sop")
    ds = Dataset()
    ds.file_meta = file_meta(sop_class, sop_instance)
    ds.Modality = im.modality
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    date = STUDY_DATE if im.study == 1 else FOLLOW_UP_DATE
    add_patient_and_site(ds, p, site, date, f"ACC-FAKE-{im.number:06d}")
    if im.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.StudyDescription = "XR CHEST"
    ds.SeriesDescription = f"CHEST {im.view}"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = im.view
    ds.KVP = "120" if im.view == "PA" else "90"
    spacing = [ds_str(site.cxr_pixel_mm)] * 2
    ds.ImagerPixelSpacing = spacing
    ds.PixelSpacing = spacing  # no magnification correction: same as the detector pitch
    ds.StudyInstanceUID = uid("cxr", p.number, im.study, "study")
    ds.SeriesInstanceUID = uid("cxr", im.number, "series")
    ds.StudyID = str(im.study)
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    # Radiographs carry no ImageOrientationPatient; PatientOrientation is the anatomical hint.
    ds.PatientOrientation = ["L", "F"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if im.monochrome1 else "MONOCHROME2"
    ds.PresentationLUTShape = "INVERSE" if im.monochrome1 else "IDENTITY"
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated = 16
    ds.BitsStored = CXR_BITS
    ds.HighBit = CXR_BITS - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = ds_str(center, 1)
    ds.WindowWidth = ds_str(width, 1)
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PixelData = values.tobytes()
    return ds


def cxr_affine_ras(site: Site) -> np.ndarray:
    """Nominal 2D affine: column index -> LPS +x, row index -> LPS +y, origin 0 (no IOP)."""
    sy = sx = site.cxr_pixel_mm  # PixelSpacing = [row spacing, column spacing]
    return ras_from_lps(np.diag([sx, sy, 1.0, 1.0]))


def make_cxr(out: Path) -> list[dict]:
    rows = []
    for im in plan_cxr():
        display, mask = chest_radiograph(rng_for("cxr", im.number), im)
        write_dicom(cxr_dataset(im, display), out / im.relpath)
        mask_rel = ""
        if mask is not None:
            mask_rel = mask_relpath(im.relpath)
            # [row, col] -> [i, j] = [col, row]: transpose. Saved 2D, like medtl's 2D images.
            save_nifti(
                out / mask_rel,
                mask.T.astype(np.uint8),
                cxr_affine_ras(SITES[im.patient.site]),
                descrip=f"lesion mask for {im.relpath} (synthetic)",
            )
        rows.append(label_row(im.relpath, im.patient, im.label, mask_rel))
    return rows


# --------------------------------------------------------------------------------------------
# 3D CT-like volumes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """A regular voxel grid in LPS: position(i, j, k) = origin + i*sx*row + j*sy*col + k*dz*normal.

    ``row`` is the DICOM row direction cosine (direction of increasing column index i),
    ``col`` the column direction cosine (increasing row index j); k counts along the normal.
    The numbers are rounded the way they are written to DICOM, so what is sampled here is
    exactly what a reader of the headers reconstructs.
    """

    origin: tuple[float, float, float]
    row: tuple[float, float, float]
    col: tuple[float, float, float]
    sx: float  # spacing between columns = PixelSpacing[1]
    sy: float  # spacing between rows = PixelSpacing[0]
    dz: float
    shape: tuple[int, int, int]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row, self.col)

    def slice_position(self, k: int) -> np.ndarray:
        return np.round(np.asarray(self.origin) + k * self.dz * self.normal, 4)

    def affine_lps(self) -> np.ndarray:
        aff = np.eye(4)
        aff[:3, 0] = np.asarray(self.row) * self.sx
        aff[:3, 1] = np.asarray(self.col) * self.sy
        aff[:3, 2] = self.normal * self.dz
        aff[:3, 3] = self.origin
        return aff

    def affine_ras(self) -> np.ndarray:
        return ras_from_lps(self.affine_lps())

    def world(self, offsets: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
        """LPS mm of every voxel (shifted by fractional ``offsets`` in index units): (ni, nj, nk, 3)."""
        ijk = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in self.shape], indexing="ij"), -1)
        return (ijk + np.asarray(offsets)) @ self.affine_lps()[:3, :3].T + np.asarray(self.origin)


def rotation(axis: str, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    cos, sin = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
    if axis == "y":
        return np.array([[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]])
    return np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])


def make_geometry(rng, *, tilt: tuple[str, float] | None = None, canonical_ras: bool = False) -> Geometry:
    """A grid centred on a plausible table position, optionally tilted or RAS-ordered."""
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])  # standard axial, HFS
    if canonical_ras:  # i -> patient right->left reversed: indices grow toward R, A, S
        row, col = -row, -col
    if tilt is not None:
        rot = rotation(*tilt)
        row, col = rot @ row, rot @ col
    row, col = np.round(row, 6), np.round(col, 6)
    normal = np.cross(row, col)
    ni, nj, nk = CT_SHAPE
    centre = np.array([rng.uniform(-5, 5), rng.uniform(-5, 15), rng.uniform(-190, -150)])
    origin = (
        centre - ((ni - 1) * CT_PIXEL_MM * row + (nj - 1) * CT_PIXEL_MM * col + (nk - 1) * CT_SLICE_MM * normal) / 2
    )
    return Geometry(tuple(np.round(origin, 4)), tuple(row), tuple(col), CT_PIXEL_MM, CT_PIXEL_MM, CT_SLICE_MM, CT_SHAPE)


@dataclass
class Thorax:
    """Analytic thorax in LPS mm (x: to patient's left, y: posterior, z: superior)."""

    centre: np.ndarray  # body centre (x, y); lungs' mid-height z
    body_axes: tuple[float, float]
    lung_scale: float
    lesion_centre: np.ndarray | None = None
    lesion_radius: float = 0.0

    LUNG_X, LUNG_Y, LUNG_AXES = 72.0, 5.0, (46.0, 62.0, 170.0)

    def lung_rho(self, p: np.ndarray) -> np.ndarray:
        """Ellipsoidal radius to the nearer lung (< 1 inside a lung)."""
        x, y, z = np.moveaxis(p - self.centre, -1, 0)
        ax, ay, az = self.LUNG_AXES
        ax, ay = ax * self.lung_scale, ay * self.lung_scale
        side = np.where(x >= 0, 1.0, -1.0)
        return np.sqrt(((x - side * self.LUNG_X) / ax) ** 2 + ((y - self.LUNG_Y) / ay) ** 2 + (z / az) ** 2)

    def heart_rho(self, p: np.ndarray) -> np.ndarray:
        x, y, z = np.moveaxis(p - self.centre, -1, 0)
        return np.sqrt(((x - 22) / 55) ** 2 + ((y + 35) / 48) ** 2 + ((z + 40) / 70) ** 2)

    def hu(self, p: np.ndarray) -> np.ndarray:
        """Noise-free HU at LPS points ``p`` (..., 3)."""
        x, y, z = np.moveaxis(p - self.centre, -1, 0)
        ax, ay = self.body_axes
        body_rho = np.hypot(x / ax, y / ay)
        hu = np.full(x.shape, -1000.0)  # air
        hu[body_rho < 1] = -100.0  # subcutaneous fat
        hu[body_rho < 1 - 12 / ax] = 40.0  # muscle / soft tissue
        # Ribs: a ring just outside the lungs, cut into bands sloping down toward the front.
        theta = np.arctan2(x, y)  # 0 = posterior
        phase = np.mod((z - 30 * np.cos(theta)) / 25.0, 1.0)
        ribs = (body_rho > 0.87) & (body_rho < 0.91) & (phase < 0.35) & (np.cos(theta) > -0.6)
        hu[ribs] = 600.0
        lung = (self.lung_rho(p) < 1) & (self.heart_rho(p) >= 1)
        hu[lung] = -830.0 + 60.0 * np.clip(y / 80.0, -1, 1)[lung]  # dependent (posterior) lung denser
        hu[np.hypot(x, y - 75) < 18] = 700.0  # vertebral body
        hu[np.hypot(x, y - 102) < 9] = 500.0  # posterior elements
        if self.lesion_centre is not None:
            hu[np.linalg.norm(p - self.lesion_centre, axis=-1) <= self.lesion_radius] = 60.0
        return hu


def make_thorax(rng) -> Thorax:
    return Thorax(
        centre=np.array([rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-190, -150) + rng.uniform(-10, 10)]),
        body_axes=(rng.uniform(150, 172), rng.uniform(105, 120)),
        lung_scale=rng.uniform(0.92, 1.06),
    )


def place_lesion(rng, thorax: Thorax, geom: Geometry) -> tuple[int, int, int]:
    """Centre a sphere of 2-4 in-plane voxels on a voxel centre, wholly inside one lung."""
    ni, nj, nk = geom.shape
    world = geom.world()
    for _ in range(10_000):
        radius = float(rng.randint(2, 5)) * geom.sx
        margin_k = int(np.ceil(radius / geom.dz)) + 1
        ijk = (rng.randint(5, ni - 5), rng.randint(5, nj - 5), rng.randint(margin_k, nk - margin_k))
        centre = world[ijk]
        # Check the sphere's surface (+3 mm) on a dense set of directions against the lung.
        dirs = rng.normal(size=(400, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        surface = centre + (radius + 3.0) * dirs
        if (thorax.lung_rho(surface) < 1).all() and (thorax.heart_rho(surface) >= 1).all():
            thorax.lesion_centre, thorax.lesion_radius = centre, radius
            return ijk
    raise RuntimeError("could not place a lesion")  # pragma: no cover


def render_ct(rng, thorax: Thorax, geom: Geometry, site: Site) -> tuple[np.ndarray, np.ndarray]:
    """HU volume [i, j, k] (with partial-volume averaging and site noise) and lesion mask."""
    # 3x3x3 sub-samples per voxel give soft, partial-volume edges like a real reconstruction.
    subs = [np.array(o) for o in np.stack(np.meshgrid(*[[-1 / 3, 0, 1 / 3]] * 3, indexing="ij"), -1).reshape(-1, 3)]
    hu = np.mean([thorax.hu(geom.world(o)) for o in subs], axis=0)
    noise = gaussian_blur(rng.normal(0.0, 1.0, hu.shape), 0.6)  # mildly correlated like CT noise
    hu = hu + site.ct_offset_hu + site.ct_noise_hu * noise / noise.std()
    mask = np.zeros(geom.shape, np.uint8)
    if thorax.lesion_centre is not None:  # mask = voxel centres inside the sphere
        mask[np.linalg.norm(geom.world() - thorax.lesion_centre, axis=-1) <= thorax.lesion_radius] = 1
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), mask


@dataclass
class CtCase:
    patient: Patient
    label: int
    tilt: tuple[str, float] | None = None
    order: str = "ascending"  # file-name order vs position: ascending, descending or shuffled
    canonical_ras: bool = False  # NIfTI only: store with indices growing toward R, A, S
    float32: bool = False  # NIfTI only: float32 HU (else int16 raw = HU + 1024, scl_inter -1024)
    lesion_ijk: tuple[int, int, int] | None = field(default=None)


def plan_ct() -> list[CtCase]:
    """10 DICOM patients (101-110) and 4 NIfTI patients (201-204); 5+2 positives, 3+2 oblique/shuffled."""
    rng = rng_for("ct-plan")

    # Sex is fixed by hand so that it is balanced over the labels (no accidental shortcut).
    sites = ["A"] * 5 + ["B"] * 5
    labels = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]  # 3/5 positive at A, 2/5 at B
    sexes = ["F", "F", "M", "M", "F", "M", "M", "F", "M", "F"]
    cases = [CtCase(Patient(101 + k, sites[k], sexes[k], int(rng.randint(35, 86))), labels[k]) for k in range(10)]
    cases[2].tilt = ("x", 15.0)  # gantry-like tilt about the left-right axis (positive)
    cases[7].tilt = ("y", -15.0)  # rotation about the antero-posterior axis (negative)
    cases[3].order = "descending"  # IM0001 is the most superior slice
    cases[4].order = "shuffled"
    cases[7].order = "shuffled"  # oblique and shuffled together
    nifti = [
        CtCase(Patient(201 + k, "AB"[k % 2], "FMMF"[k], int(rng.randint(35, 86))), label)
        for k, label in enumerate([1, 1, 0, 0])
    ]
    nifti[1].canonical_ras = True
    nifti[2].tilt = ("z", 10.0)
    nifti[3].float32 = True
    return cases + nifti


def ct_slice_dataset(case: CtCase, geom: Geometry, k: int, instance: int, stored: np.ndarray) -> Dataset:
    """One axial (or oblique) slice; ``stored`` is indexed [row, column]."""
    p, site = case.patient, SITES[case.patient.site]
    sop_instance = uid("ct", p.number, "sop", instance)
    ds = Dataset()
    ds.file_meta = file_meta(CT_IMAGE_STORAGE, sop_instance)
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_instance
    add_patient_and_site(ds, p, site, STUDY_DATE, f"ACC-FAKE-{p.number:06d}")
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = "CHEST 5mm OBLIQUE" if case.tilt else "CHEST 5mm AXIAL"
    ds.BodyPartExamined = "CHEST"
    ds.KVP = "120"
    ds.SliceThickness = ds_str(geom.dz)
    ds.ConvolutionKernel = site.ct_kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = uid("ct", p.number, "study")
    ds.SeriesInstanceUID = uid("ct", p.number, "series")
    ds.FrameOfReferenceUID = uid("ct", p.number, "frame")
    ds.PositionReferenceIndicator = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance
    position = geom.slice_position(k)
    ds.ImagePositionPatient = [ds_str(v, 4) for v in position]
    ds.ImageOrientationPatient = [ds_str(v) for v in (*geom.row, *geom.col)]
    ds.SliceLocation = ds_str(float(position @ geom.normal), 4)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [ds_str(geom.sy), ds_str(geom.sx)]  # [between rows, between columns]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1  # signed int16
    ds.WindowCenter = ["-600", "40"]  # lung and mediastinal windows
    ds.WindowWidth = ["1500", "400"]
    ds.RescaleIntercept = str(-HU_OFFSET)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds


def instance_numbers(rng, order: str, nk: int) -> np.ndarray:
    """Instance number (= file name number) of the slice at sorted position k."""
    if order == "ascending":
        return np.arange(1, nk + 1)
    if order == "descending":
        return np.arange(nk, 0, -1)
    return rng.permutation(nk) + 1


def make_ct(out: Path) -> tuple[list[dict], list[dict]]:
    rows, facts = [], []
    for case in plan_ct():
        p, site = case.patient, SITES[case.patient.site]
        rng = rng_for("ct", p.number)
        geom = make_geometry(rng, tilt=case.tilt, canonical_ras=case.canonical_ras)
        thorax = make_thorax(rng)
        if case.label:
            case.lesion_ijk = place_lesion(rng, thorax, geom)
        hu, mask = render_ct(rng, thorax, geom, site)
        is_nifti = p.number >= 200
        if is_nifti:
            relpath = f"nifti/{p.folder}_ct.nii.gz"
            if case.float32:
                save_nifti(out / relpath, hu.astype(np.float32), geom.affine_ras(), descrip=SYNTHETIC_NOTE)
            else:  # the usual DICOM-converter output: raw stored values plus the rescale
                save_nifti(
                    out / relpath,
                    (hu.astype(np.int32) + HU_OFFSET).astype(np.int16),
                    geom.affine_ras(),
                    inter=-HU_OFFSET,
                    descrip=SYNTHETIC_NOTE,
                )
        else:
            relpath = f"ct/{p.folder}/series01"
            numbers = instance_numbers(rng, case.order, geom.shape[2])
            stored = (hu.astype(np.int32) + HU_OFFSET).astype(np.int16)
            for k, number in enumerate(numbers):
                ds = ct_slice_dataset(case, geom, k, int(number), stored[:, :, k].T)  # [i, j] -> [row, col]
                write_dicom(ds, out / relpath / f"IM{number:04d}")
        mask_rel = ""
        if case.label:
            mask_rel = mask_relpath(relpath)
            save_nifti(out / mask_rel, mask, geom.affine_ras(), descrip=f"lesion mask for {relpath} (synthetic)")
        rows.append(label_row(relpath, p, case.label, mask_rel))
        facts.append(
            dict(case=case, geom=geom, thorax=thorax, relpath=relpath, mask=mask_rel, mask_voxels=int(mask.sum()))
        )
    return rows, facts


# --------------------------------------------------------------------------------------------
# labels.csv and README.md
# --------------------------------------------------------------------------------------------


def mask_relpath(image_relpath: str) -> str:
    """masks/<image path with '/' -> '_' and the extension dropped>.nii.gz (unique, traceable)."""
    stem = image_relpath.removesuffix(".nii.gz").removesuffix(".dcm")
    return f"masks/{stem.replace('/', '_')}.nii.gz"


def label_row(path: str, p: Patient, label: int, mask: str) -> dict:
    return dict(path=path, patient_id=p.patient_id, label=label, sex=p.sex, age=p.age, site=p.site, mask=mask)


def write_labels(out: Path, rows: list[dict]) -> None:
    """labels.csv (everything) plus one manifest per dimensionality, ready for `medtl train`:
    cxr.csv (2D radiographs) and ct.csv (3D volumes, DICOM series and NIfTI)."""
    parts = {"labels.csv": rows, "cxr.csv": [r for r in rows if r["path"].startswith("cxr/")],
             "ct.csv": [r for r in rows if not r["path"].startswith("cxr/")]}  # fmt: skip
    for name, part in parts.items():
        with open(out / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(sorted(part, key=lambda r: r["path"]))


def balance_table(rows: list[dict]) -> str:
    lines = ["| part | site | images/volumes | positive | negative | patients |", "|---|---|---|---|---|---|"]
    for part in ("cxr", "ct", "nifti"):
        for site in "AB":
            sel = [r for r in rows if r["path"].startswith(part + "/") and r["site"] == site]
            pos = sum(r["label"] for r in sel)
            lines.append(
                f"| {part} | {site} | {len(sel)} | {pos} | {len(sel) - pos} | {len({r['patient_id'] for r in sel})} |"
            )
    return "\n".join(lines)


def ct_table(facts: list[dict]) -> str:
    lines = [
        "| path | label | site | orientation (row / column cosines) | file order | lesion centre (i, j, k) | "
        "lesion centre RAS mm | radius mm | mask voxels |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in facts:
        case, geom = f["case"], f["geom"]
        cosines = " / ".join(",".join(ds_str(v) for v in vec) for vec in (geom.row, geom.col))
        orient = (
            f"oblique: {case.tilt[1]:+g} deg about {case.tilt[0]}; {cosines}"
            if case.tilt
            else ("axial, RAS-ordered; " if case.canonical_ras else "axial; ") + cosines
        )
        order = (
            case.order
            if not f["relpath"].startswith("nifti/")
            else ("float32 HU" if case.float32 else "int16 + scl_inter -1024")
        )
        if case.lesion_ijk is not None:
            ras = geom.affine_ras() @ np.append(case.lesion_ijk, 1.0)
            centre = ", ".join(f"{v:.2f}" for v in ras[:3])
            lesion = f"{case.lesion_ijk} | ({centre}) | {f['thorax'].lesion_radius:g} | {f['mask_voxels']}"
        else:
            lesion = "- | - | - | -"
        lines.append(f"| `{f['relpath']}` | {case.label} | {case.patient.site} | {orient} | {order} | {lesion} |")
    return "\n".join(lines)


README = """# medtl sample data (synthetic)

**Everything here is synthetic.** The images are drawn from simple analytic shapes plus seeded
noise by `scripts/make_sample_data.py`; no real patient data was used. Every identifier in the
headers (PatientName `FAKE^PATIENT^0007`, PatientID `MRN-000007`, birth dates, accession numbers
`ACC-FAKE-...`, institution names and addresses marked FICTITIOUS, station names, device serial
numbers `FAKE-SN-...`, referring physician / operator `FAKE^...`) is invented -- they are there so
that de-identification can be tested. Each DICOM file also says so in ImageComments.

Regenerate (deletes and rewrites this folder; byte-identical on the same platform and library
versions -- fixed seeds, hashed UIDs, fixed dates, gzip without timestamps):

    python scripts/make_sample_data.py

## Contents

| folder | what |
|---|---|
| `cxr/<patient>/IM######[.dcm]` | {n_cxr} chest-radiograph-like 2D DICOM images, {n_cxr_pat} patients ({n_twice} with a follow-up study). 128x128, uint16 with BitsStored 12. Modality DX (SOP class Digital X-Ray Image Storage - For Presentation) or CR ({n_cr} images). ViewPosition PA/AP, BodyPartExamined CHEST, PixelSpacing = ImagerPixelSpacing (2.8 mm at site A, 3.0 mm at site B), WindowCenter/Width. Some files have a `.dcm` extension, some none. {n_mono1} images are **MONOCHROME1** (stored inverted: high stored value = dark; PresentationLUTShape INVERSE); a correct loader inverts them. |
| `ct/<patient>/series01/IM####` | {n_ct} CT-like thorax series, one file per slice, no extension. 64x64 px at 6 mm (384 mm FOV), {nk} slices at 5 mm (SliceThickness 5). int16 stored (PixelRepresentation 1), RescaleSlope 1, RescaleIntercept -1024, RescaleType HU. Per-slice ImagePositionPatient, ImageOrientationPatient, SliceLocation, InstanceNumber; shared Study/Series/FrameOfReference UIDs. |
| `nifti/<patient>_ct.nii.gz` | {n_nifti} more CT-like volumes (different patients) as NIfTI-1, HU, qform = sform code 1, units mm. |
| `masks/*.nii.gz` | uint8 lesion mask (1 = lesion) for every positive, same shape and affine as its image. Name = image path with `/` replaced by `_`, extension dropped (`{example_image}` -> `{example_mask}`). |
| `labels.csv` | one row per image / series / volume, sorted by `path`. |
| `cxr.csv`, `ct.csv` | the same rows split into the 2D radiographs and the 3D volumes: manifests for `medtl train`. |

HU content of the CT-like volumes: air -1000, subcutaneous fat -100, soft tissue 40, lungs about
-830 (denser posteriorly), vertebra 700, ribs 600; a positive has a +60 HU sphere (radius 2-4
in-plane voxels = 12-24 mm) wholly inside a lung; the mask holds the voxels whose centre is in
the sphere. Voxels are averaged over 3x3x3 sub-samples (partial volume), so the lesion's centre
voxel is about +60 HU (+72 at site B) but the mask's mean is only about -100..0 HU.

Radiographs: body, two dark lung fields, mediastinum/heart, spine, faint rib arcs and clavicles; a
positive has a bright round nodule (radius 5-10 px, sphere-projection profile) wholly inside a
lung field.

### labels.csv

`path` (relative to this folder: the file for 2D images and NIfTI, the series folder for DICOM
CT), `patient_id` (= PatientID in the header), `label` (1 = finding present), `sex` (M/F), `age`
(years, = PatientAge), `site` (A/B), `mask` (relative path, empty for negatives). Follow-up
images share their patient's `patient_id` and label: split by patient, not by image. One patient
(`{old_id}`) is 93 (PatientAge `093Y`) for "90+" grouping.

### Sites

| site | Manufacturer | InstitutionName | look |
|---|---|---|---|
| A | ACME Medical | Springfield General (FICTITIOUS) | low noise, normal contrast; 2 MONOCHROME1 radiographs |
| B | Globex Imaging | Shelbyville Memorial (FICTITIOUS) | more noise, lower contrast, brighter offset (radiographs; CT +12 HU, 2.5x noise); 10 MONOCHROME1 radiographs |

Class balance:

{balance}

## Geometry conventions

medtl indexes arrays `[i, j, k]` with i = DICOM column index, j = DICOM row index, k = slice index
sorted along the slice normal `n = cross(row_cosines, column_cosines)` (ImageOrientationPatient =
row cosines, i.e. the direction of increasing column index, then column cosines). The affine maps
(i, j, k) to **RAS+** mm, which is DICOM's LPS with x and y negated:

    LPS(i, j, k) = IPP(first slice along n) + i * PixelSpacing[1] * row + j * PixelSpacing[0] * col + k * dz * n
    affine_RAS   = diag(-1, -1, 1, 1) @ [[row*PixelSpacing[1], col*PixelSpacing[0], n*dz, IPP]]

so the DICOM `pixel_array` of a slice (indexed [row, column]) is the transpose of `volume[:, :, k]`.
Every mask and NIfTI volume is stored in exactly that order with that affine, so `mask[i, j, k]`
lies on voxel `[i, j, k]` of the image as medtl loads it (compare affines with a tolerance of about
1e-3 mm: NIfTI stores them as float32).

2D radiographs have no ImageOrientationPatient (their PatientOrientation is `L\\F`). For them the
convention is nominal: column index -> LPS +x, row index -> LPS +y, origin 0, so the affine is
`diag(-PixelSpacing[1], -PixelSpacing[0], 1, 1)`; their masks are **2D** NIfTI arrays of shape
(128, 128) = (columns, rows) with that affine, i.e. `mask = pixel_mask.T`.

### CT series and NIfTI volumes (what loader tests can rely on)

Slices of `ct/.../series01` are `IM0001`... with InstanceNumber equal to the file number.
"ascending" = IM0001 is the first slice along the normal (most inferior for axial series);
"descending" = IM0001 is the last; "shuffled" = random order. A correct loader sorts by
`dot(ImagePositionPatient, n)`, never by file name or InstanceNumber. The oblique series are real
rotated grids (orthonormal cosines, IPP stepping 5 mm along n). `p202_ct.nii.gz` is stored with
indices growing toward R, A, S (positive diagonal affine), the others like the DICOM series
(toward L, P, S); `p203_ct.nii.gz` is rotated 10 deg in-plane.

{ct_table}
"""


def write_readme(out: Path, rows: list[dict], ct_facts: list[dict], cxr_plan: list[CxrImage]) -> None:
    cxr_rows = [r for r in rows if r["path"].startswith("cxr/")]
    old = [r for r in rows if r["age"] >= 90]
    text = README.format(
        n_cxr=len(cxr_rows),
        example_image=next(r["path"] for r in cxr_rows if r["mask"]),
        example_mask=next(r["mask"] for r in cxr_rows if r["mask"]),
        n_cxr_pat=len({r["patient_id"] for r in cxr_rows}),
        n_twice=sum(im.study == 2 for im in cxr_plan),
        n_cr=sum(im.modality == "CR" for im in cxr_plan),
        n_mono1=sum(im.monochrome1 for im in cxr_plan),
        n_ct=sum(r["path"].startswith("ct/") for r in rows),
        nk=CT_SHAPE[2],
        n_nifti=sum(r["path"].startswith("nifti/") for r in rows),
        old_id=", ".join(r["patient_id"] for r in old),
        balance=balance_table(rows),
        ct_table=ct_table(ct_facts),
    )
    (out / "README.md").write_text(text)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (replaced)")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists():  # start clean so files from an older layout cannot linger
        shutil.rmtree(out)
    (out / "masks").mkdir(parents=True)
    rows = make_cxr(out)
    ct_rows, ct_facts = make_ct(out)
    rows += ct_rows
    write_labels(out, rows)
    write_readme(out, rows, ct_facts, plan_cxr())
    print(f"wrote {len(rows)} labelled items to {out}")


if __name__ == "__main__":
    main()
