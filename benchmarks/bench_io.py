#!/usr/bin/env python
"""Benchmark medtl.io against a plain-pydicom floor and MONAI.

Two workloads, both on synthetic data written to ``--workdir`` (never into the repo):

1. Loading one CT series (default 200 slices of 512x512 int16, one file per slice,
   Explicit VR Little Endian, file names shuffled relative to slice position) as a
   float32 HU volume with:

   * ``floor``: a plain loop of ``pydicom.dcmread`` + sort along the slice normal +
     ``np.stack`` + rescale -- the least work any loader can do;
   * ``medtl``: ``medtl.io.load_image(folder)``;
   * ``monai``: ``monai.transforms.LoadImage(reader="PydicomReader")(folder)``.

   Each loader is timed as a whole fresh process (interpreter start and imports
   included: that is what a user waits for) and, separately, in-process after its
   imports, so import overhead is visible on its own. All three volumes are compared
   voxel by voxel (up to axis order and flips) before any number is reported.

2. A header scan of ``--scan-files`` small DICOM files spread over series folders,
   plus a few broken files, with ``medtl scan DIR -o manifest.csv --errors errors.csv``
   as a whole process, against a single-process ``pydicom.dcmread(stop_before_pixels=True)``
   loop for reference.

The result is printed as markdown. Example::

    python benchmarks/bench_io.py                          # full size, temp workdir
    python benchmarks/bench_io.py --slices 20 --size 128 --scan-files 200 --repeats 2
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import itertools
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from machine import cpu_model, version  # benchmarks/machine.py

REPO_ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------
# Synthetic DICOM data
# --------------------------------------------------------------------------------------

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
RESCALE_INTERCEPT = -1024
FOV_MM = 358.4  # field of view of the synthetic CT, so PixelSpacing = FOV_MM / size
SLICE_SPACING_MM = 1.25


def _ds_str(value: float) -> str:
    """Format a number as a short DICOM DS string (max 16 characters)."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def new_file_meta(sop_class_uid: str, sop_instance_uid: str):
    """Return a Part-10 file meta header for Explicit VR Little Endian."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    return meta


def new_image_dataset(modality: str, sop_class_uid: str, rows: int, cols: int,
                      patient_id: str, study_uid: str, series_uid: str):
    """Return a Dataset with the patient/study/series/image-pixel modules filled in.

    Per-instance attributes (SOPInstanceUID, InstanceNumber, position, PixelData, file
    meta) are left to the caller, which reuses one Dataset for every slice of a series.
    """
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.Modality = modality
    ds.Manufacturer = "medtl-bench"
    ds.InstitutionName = "Synthetic Hospital"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = patient_id[-8:]
    ds.StudyDescription = f"Synthetic {modality}"
    ds.SeriesDescription = f"Synthetic {modality} series"
    ds.PatientName = f"Bench^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1  # signed int16
    return ds


def add_volume_geometry(ds, frame_uid: str, spacing_mm: float, thickness_mm: float) -> None:
    """Add the Frame of Reference / Image Plane attributes shared by all slices (axial)."""
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [_ds_str(spacing_mm), _ds_str(spacing_mm)]
    ds.SliceThickness = _ds_str(thickness_mm)
    ds.SpacingBetweenSlices = _ds_str(thickness_mm)


def set_instance(ds, sop_instance_uid: str, instance_number: int, pixels: np.ndarray,
                 position: tuple[float, float, float] | None = None) -> None:
    """Fill the per-instance attributes (and file meta) of a reused Dataset."""
    ds.file_meta = new_file_meta(ds.SOPClassUID, sop_instance_uid)
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = [_ds_str(v) for v in position]
        ds.SliceLocation = _ds_str(position[2])
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()


def phantom_slice(z_frac: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """One axial slice of a smooth, deliberately asymmetric torso phantom in HU (+ noise).

    ``z_frac`` in [0, 1] runs from feet to head: the lungs appear in the upper part, the
    liver (right side of the patient only) in the lower part, so flips and transposes
    of the volume are never silently equal to the original.
    """
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0  # -1..1
    x, y = np.meshgrid(c, c, indexing="xy")  # x: columns (patient left), y: rows (posterior)
    hu = np.full((size, size), -1000.0, dtype=np.float32)  # air

    def ellipse(cx, cy, ax, ay):
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0

    width = 0.78 + 0.06 * np.sin(np.pi * z_frac)
    body = ellipse(0.02, 0.05, width, 0.55)
    hu[body] = 40.0 + 25.0 * x[body] - 15.0 * y[body]  # soft tissue with a smooth gradient
    hu[body & ~ellipse(0.02, 0.05, width - 0.05, 0.50)] = -90.0  # subcutaneous fat
    if z_frac > 0.45:  # lungs, growing towards the head
        r = 0.12 + 0.22 * min(1.0, (z_frac - 0.45) / 0.3)
        hu[ellipse(-0.33, -0.02, r, 1.4 * r)] = -850.0
        hu[ellipse(0.36, 0.0, 0.9 * r, 1.3 * r)] = -820.0
    else:  # liver on the patient's right (image left), only in the lower half
        hu[ellipse(-0.3, 0.05, 0.35, 0.3)] = 60.0
    hu[ellipse(0.0, 0.38, 0.09, 0.08)] = 700.0  # vertebral body
    hu[ellipse(0.0, 0.38, 0.05, 0.04)] = 250.0  # marrow
    lesion_r2 = 0.08 ** 2 - (z_frac - 0.3) ** 2
    if lesion_r2 > 0:  # a small sphere off-centre
        hu[ellipse(0.25, 0.2, np.sqrt(lesion_r2), np.sqrt(lesion_r2))] = 120.0
    hu[y > 0.72] = -1000.0  # (keep the table out: air below the body)
    hu += rng.normal(0.0, 12.0, hu.shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071)


def _stamp_path(folder: Path) -> Path:
    """Where the parameters of a written data set are kept: next to the folder, not in
    it, so that loaders and scanners only ever see DICOM files (and the broken ones)."""
    return folder.with_name(folder.name + ".json")


def _read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads(_stamp_path(folder).read_text())
    except (OSError, ValueError):
        return None


def _is_ready(folder: Path, params: dict) -> bool:
    """True if ``folder`` already holds data written with exactly ``params``."""
    stamp = _read_stamp(folder)
    return folder.is_dir() and stamp is not None and \
        {k: stamp.get(k) for k in params} == params


def flush_to_disk() -> None:
    """Write dirty pages out now, so writeback of freshly written data does not overlap
    (and slow down) the timed runs. The data stays in the page cache."""
    if hasattr(os, "sync"):
        os.sync()


def _fresh_dir(folder: Path) -> None:
    _stamp_path(folder).unlink(missing_ok=True)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def write_ct_series(folder: Path, slices: int, size: int, seed: int = 0) -> dict:
    """Write one axial CT series, one uncompressed Explicit VR LE file per slice.

    Slice ``k`` (position ``z = -100 + k * 1.25`` mm, InstanceNumber ``k + 1``) goes to a
    file whose name comes from a random permutation, so neither ``os.listdir`` nor
    sorting by name gives the anatomical order. Returns the parameters (also stored as
    a stamp file, so an existing identical series is reused).
    """
    from pydicom.uid import generate_uid

    params = {"kind": "ct_series", "slices": slices, "size": size, "seed": seed, "version": 1}
    if _is_ready(folder, params):
        return params
    _fresh_dir(folder)
    rng = np.random.default_rng(seed)
    ds = new_image_dataset("CT", CT_IMAGE_STORAGE, size, size, patient_id="BENCH0001",
                           study_uid=generate_uid(), series_uid=generate_uid())
    add_volume_geometry(ds, generate_uid(), FOV_MM / size, SLICE_SPACING_MM)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.RescaleIntercept = str(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    origin = -FOV_MM / 2 + FOV_MM / size / 2
    names = rng.permutation(slices)
    for k in range(slices):
        hu = phantom_slice(k / max(slices - 1, 1), size, rng)
        stored = (hu - RESCALE_INTERCEPT).astype(np.int16)
        set_instance(ds, generate_uid(), k + 1, stored,
                     position=(origin, origin, -100.0 + k * SLICE_SPACING_MM))
        ds.save_as(folder / f"IM{names[k]:05d}.dcm", enforce_file_format=True)
    _stamp_path(folder).write_text(json.dumps(params))
    return params


def write_volume_series_small(folder: Path, n: int, size: int, modality: str, index: int,
                              rng: np.random.Generator) -> None:
    """Write a small axial CT/MR series of ``n`` slices (``size`` x ``size``) into ``folder``."""
    from pydicom.uid import generate_uid

    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    ds = new_image_dataset(modality, sop_class, size, size, patient_id=f"SCAN{index:04d}",
                           study_uid=generate_uid(), series_uid=generate_uid())
    add_volume_geometry(ds, generate_uid(), 2.0, 2.5)
    ds.SeriesNumber = index + 1
    if modality == "CT":
        ds.RescaleIntercept = str(RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
    else:
        ds.MagneticFieldStrength = "1.5"
        ds.RepetitionTime = "500"
        ds.EchoTime = "15"
    for k in range(n):
        pixels = rng.integers(0, 2000, (size, size), dtype=np.int16)
        set_instance(ds, generate_uid(), k + 1, pixels, position=(-64.0, -64.0, k * 2.5))
        ds.save_as(folder / f"{generate_uid()[-12:]}.dcm", enforce_file_format=True)


def write_2d_images(folder: Path, n: int, size: int, index: int, rng: np.random.Generator) -> None:
    """Write ``n`` independent 2D radiographs (DX), each its own study and series."""
    from pydicom.uid import generate_uid

    for k in range(n):
        ds = new_image_dataset("DX", DX_IMAGE_STORAGE, size, size,
                               patient_id=f"XR{index:03d}{k:04d}",
                               study_uid=generate_uid(), series_uid=generate_uid())
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = ["0.5", "0.5"]
        ds.ViewPosition = "PA"
        pixels = rng.integers(0, 4000, (size, size), dtype=np.int16)
        set_instance(ds, generate_uid(), 1, pixels)
        ds.save_as(folder / f"XR{k:05d}.dcm", enforce_file_format=True)


def write_broken_files(folder: Path, good_example: Path) -> list[str]:
    """Write files that a scanner must report as errors; return their names.

    * ``truncated.dcm``: a valid file cut off inside its dataset header;
    * ``notes.dcm``: a text file with a DICOM extension;
    * ``empty.dcm``: zero bytes;
    * ``random.dcm``: random bytes, no preamble.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = good_example.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[:400])  # 128 preamble + DICM + meta + a bit
    (folder / "notes.dcm").write_text("This is not a DICOM file.\nPatient: nobody\n")
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "random.dcm").write_bytes(np.random.default_rng(7).bytes(4096))
    return ["truncated.dcm", "notes.dcm", "empty.dcm", "random.dcm"]


def write_scan_tree(root: Path, n_files: int, n_folders: int = 50, size: int = 64,
                    seed: int = 1) -> dict:
    """Write the header-scan workload and return its description.

    ``n_files`` good files are spread evenly over ``n_folders`` folders. Every fifth
    folder holds independent 2D radiographs (one row each in a manifest); the others
    hold one 3D CT or MR series each (one row per folder). Broken files go into
    ``junk/``, except the truncated one which sits inside the first series folder.
    """
    n_folders = max(1, min(n_folders, n_files))
    params = {"kind": "scan_tree", "files": n_files, "folders": n_folders, "size": size,
              "seed": seed, "version": 1}
    if _is_ready(root, params):
        return _read_stamp(root)
    _fresh_dir(root)
    rng = np.random.default_rng(seed)
    per_folder = [n_files // n_folders + (i < n_files % n_folders) for i in range(n_folders)]
    series_3d = images_2d = 0
    for i, n in enumerate(per_folder):
        if i % 5 == 4:
            folder = root / f"xray_{i:03d}"
            folder.mkdir()
            write_2d_images(folder, n, size, i, rng)
            images_2d += n
        else:
            folder = root / f"series_{i:03d}"
            folder.mkdir()
            write_volume_series_small(folder, n, size, "CT" if i % 2 == 0 else "MR", i, rng)
            series_3d += 1
    example = next((root / "series_000").glob("*.dcm"))
    broken = write_broken_files(root / "junk", example)
    # move the truncated file next to real slices: scanners must cope with it there
    (root / "junk" / "truncated.dcm").rename(root / "series_000" / "truncated.dcm")
    params.update(good_files=n_files, broken_files=len(broken), series_3d=series_3d,
                  images_2d=images_2d, expected_rows=series_3d + images_2d)
    _stamp_path(root).write_text(json.dumps(params))
    return params


# --------------------------------------------------------------------------------------
# Loaders, each run as Python source in a fresh interpreter
# --------------------------------------------------------------------------------------


@dataclass
class Loader:
    """A volume loader: ``setup`` (imports/defs), ``call`` (returns the native object,
    using the variable ``folder``) and ``to_array`` (turns ``img`` into an ndarray)."""

    name: str
    label: str
    setup: str
    call: str
    to_array: str = "np.asarray(img)"

    def whole_process_code(self) -> str:
        return f"import sys\n{self.setup}\nfolder = sys.argv[1]\nimg = {self.call}\n"

    def in_process_code(self) -> str:
        """Code that times the imports, one warm-up load and N loads, saves the array."""
        return textwrap.dedent("""\
            import json, sys, time
            _t0 = time.perf_counter()
            {setup}
            import numpy as np
            _t_import = time.perf_counter() - _t0
            folder, out, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
            _t = time.perf_counter(); img = {call}; _t_first = time.perf_counter() - _t
            times = []
            for _ in range(repeats):
                _t = time.perf_counter()
                img = {call}
                times.append(time.perf_counter() - _t)
            arr = {to_array}
            np.save(out, np.ascontiguousarray(arr))
            print(json.dumps({{"import_s": _t_import, "first_load_s": _t_first, "times": times,
                               "shape": list(arr.shape), "dtype": str(arr.dtype),
                               "type": type(img).__module__ + "." + type(img).__name__}}))
            """).format(setup=self.setup, call=self.call, to_array=self.to_array)


FLOOR_SETUP = '''\
import os
import numpy as np
import pydicom

def load_floor(folder):
    """dcmread every file, sort along the slice normal, stack, rescale to float32 HU."""
    dss = [pydicom.dcmread(os.path.join(folder, f)) for f in os.listdir(folder)
           if f.endswith(".dcm")]
    iop = np.asarray(dss[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)))
    vol = np.stack([ds.pixel_array for ds in dss])
    # one slope/intercept for the series (true for this data set)
    return vol.astype(np.float32) * np.float32(dss[0].RescaleSlope) + np.float32(dss[0].RescaleIntercept)
'''

LOADERS = [
    Loader("floor", "floor: pydicom loop + sort + stack", FLOOR_SETUP, "load_floor(folder)"),
    Loader("medtl", "`medtl.io.load_image(folder)`", "from medtl.io import load_image",
           "load_image(folder)", "img.array"),
    Loader("monai", '`LoadImage(reader="PydicomReader")(folder)`',
           "from monai.transforms import LoadImage",
           'LoadImage(reader="PydicomReader", image_only=True)(folder)', "np.asarray(img)"),
]

PYDICOM_SCAN_CODE = '''\
import json, os, sys
import pydicom
ok = bad = 0
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        try:
            pydicom.dcmread(os.path.join(root, f), stop_before_pixels=True)
            ok += 1
        except Exception:
            bad += 1
print(json.dumps({"ok": ok, "bad": bad}))
'''


# --------------------------------------------------------------------------------------
# Running and timing
# --------------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """A benchmarked command failed."""


def subprocess_env() -> dict:
    """Environment for child processes: the checkout first on PYTHONPATH, so the
    medtl under test is the one in this repository even if another is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_timed(cmd: list[str], cwd: Path | None = None, ok_codes=(0,)) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``cmd`` to completion; return (wall seconds, completed process)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode not in ok_codes:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise BenchError(f"`{shlex.join(cmd)[:200]}` exited {proc.returncode}:\n  " + "\n  ".join(tail))
    return dt, proc


@dataclass
class Timing:
    times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def time_round_robin(commands: dict[str, list[str]], repeats: int, **kw) -> dict[str, Timing]:
    """One untimed warm-up run of every command (page cache, .pyc files), then
    ``repeats`` timed runs, interleaved so slow drift of the machine hits all equally."""
    results = {name: Timing() for name in commands}
    for name, cmd in commands.items():
        try:
            run_timed(cmd, **kw)
        except BenchError as e:
            results[name].error = str(e)
    for _ in range(repeats):
        for name, cmd in commands.items():
            if results[name].error:
                continue
            try:
                results[name].times.append(run_timed(cmd, **kw)[0])
            except BenchError as e:
                results[name].error = str(e)
    return results


def check_medtl_importable() -> str | None:
    """Return None if ``medtl.io`` with load_image and scan imports in a child process,
    else the reason."""
    code = "import medtl.io as m; m.load_image; m.scan"
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(),
                          capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    return (proc.stderr.strip().splitlines() or ["unknown error"])[-1]


def medtl_cli() -> list[str]:
    """The command that runs the medtl CLI: the venv's console script if there is one,
    otherwise ``python -c 'from medtl.cli import main'`` (same code, no install needed)."""
    exe = Path(sys.executable).parent / "medtl"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("medtl")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from medtl.cli import main; sys.exit(main())"]


# --------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------


def match_up_to_axes(ref: np.ndarray, arr: np.ndarray, atol: float = 1e-3) -> tuple[str, float] | None:
    """Find an axis permutation + flips mapping ``ref`` onto ``arr``.

    Returns (description, max |difference|) for the first match (identity first), or
    None. A strided subsample is compared first so that non-matches are cheap.
    """
    arr = np.squeeze(arr)
    if arr.ndim != ref.ndim:
        return None
    for perm in itertools.permutations(range(ref.ndim)):
        moved = ref.transpose(perm)
        if moved.shape != arr.shape:
            continue
        for flips in itertools.product((False, True), repeat=ref.ndim):
            axes = tuple(i for i, f in enumerate(flips) if f)
            cand = np.flip(moved, axes) if axes else moved
            sub = (slice(None, None, 7),) * ref.ndim
            if not np.allclose(cand[sub], arr[sub], atol=atol, rtol=0):
                continue
            diff = max(float(np.max(np.abs(cand[i:i + 16].astype(np.float64) - arr[i:i + 16])))
                       for i in range(0, arr.shape[0], 16))  # in chunks: volumes can be big
            if diff <= atol:
                desc = "identical" if perm == tuple(range(ref.ndim)) and not axes else \
                    f"equal after transpose{perm}" + (f" + flip axes {axes}" if axes else "")
                return desc, diff
    return None


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    """CPU model, cores, Python and library versions, date."""
    cpu = cpu_model()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()

    git = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain"],
                           capture_output=True, text=True).stdout.strip()
    rev = git.stdout.strip() if git.returncode == 0 else "no commits"
    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": "python " + shlex.join(sys.argv),
        "machine": f"{cpu}, {os.cpu_count()} logical cores ({usable} usable), "
                   f"{platform.system()} {platform.release()}",
        "load average at start": ", ".join(f"{x:.2f}" for x in os.getloadavg())
                                  + " (1/5/15 min; other work on the machine skews timings)",
        "python": platform.python_version(),
        "versions": ", ".join(f"{d} {version(d)}" for d in ("numpy", "pydicom", "monai", "torch")),
        "medtl checkout": rev + (" + uncommitted changes" if dirty else ""),
    }


def fmt_s(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def fmt_ratio(x: float | None, ref: float | None) -> str:
    return "–" if x is None or not ref else f"{x / ref:.2f}×"


# --------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------


def bench_load(args, series_dir: Path, out_dir: Path, loaders: list[Loader]) -> tuple[list[str], bool]:
    """Run the series-loading benchmark; return markdown lines and overall success."""
    py = sys.executable
    lines: list[str] = []
    ok = True
    # whole-process timings (plus a bare interpreter for context)
    commands = {"python": [py, "-c", "pass"]}
    commands.update({ld.name: [py, "-c", ld.whole_process_code(), str(series_dir)] for ld in loaders})
    print(f"[load] timing {len(commands)} whole-process commands x {args.repeats} ...", file=sys.stderr)
    whole = time_round_robin(commands, args.repeats)
    # in-process timings; each child also saves its volume for the voxel check
    inproc: dict[str, dict] = {}
    for ld in loaders:
        print(f"[load] in-process {ld.name} ...", file=sys.stderr)
        npy = out_dir / f"vol_{ld.name}.npy"
        try:
            _, proc = run_timed([py, "-c", ld.in_process_code(), str(series_dir), str(npy),
                                 str(args.repeats)])
            inproc[ld.name] = json.loads(proc.stdout.strip().splitlines()[-1])
            inproc[ld.name]["npy"] = npy
        except BenchError as e:
            inproc[ld.name] = {"error": str(e)}

    floor_whole = whole["floor"].best if not whole["floor"].error else None
    floor_in = min(inproc["floor"]["times"]) if "times" in inproc.get("floor", {}) else None
    nbytes = args.slices * args.size * args.size * 2
    lines += [
        f"### Load one CT series: {args.slices} slices × {args.size}×{args.size} int16 "
        f"({nbytes / 1e6:.0f} MB of pixels, {args.slices} files) → float32 HU",
        "",
        f"Best and median of {args.repeats} runs after one warm-up (page cache warm). "
        "*Whole process* = `python -c` from start to exit, as a user waits for it; "
        "*import* and *in-process load* are measured inside one process "
        "(load = median/best of repeated loads after one warm-up load).",
        "",
        "| loader | whole process best (s) | median (s) | vs floor | import (s) "
        "| in-process load best (s) | median (s) | vs floor | output |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    t = whole["python"]
    if not t.error:
        lines.append(f"| bare interpreter (`python -c pass`) | {fmt_s(t.best)} | {fmt_s(t.median)} "
                     "| | | | | | |")
    errors = []
    for ld in loaders:
        w, ip = whole[ld.name], inproc[ld.name]
        if w.error or "error" in ip:
            ok = False
            errors.append(f"- **{ld.name} failed**: " + (w.error or ip["error"]).replace("\n", " "))
            lines.append(f"| {ld.label} | FAILED | | | | | | | |")
            continue
        best_in, med_in = min(ip["times"]), statistics.median(ip["times"])
        lines.append(
            f"| {ld.label} | {fmt_s(w.best)} | {fmt_s(w.median)} | {fmt_ratio(w.best, floor_whole)} "
            f"| {fmt_s(ip['import_s'])} | {fmt_s(best_in)} | {fmt_s(med_in)} "
            f"| {fmt_ratio(best_in, floor_in)} | {tuple(ip['shape'])} {ip['dtype']} |")
    lines.append("")
    lines += errors

    # voxel check
    lines.append("**Voxel check** (each volume against the floor, up to axis order and flips, "
                 "tolerance 1e-3 HU):")
    ref_info = inproc.get("floor", {})
    if "npy" not in ref_info:
        lines.append("- not possible: the floor loader failed.")
        ok = False
    else:
        ref = np.load(ref_info["npy"], mmap_mode="r")
        lines.append(f"- floor: shape {ref.shape}, HU range [{float(ref.min()):.0f}, "
                     f"{float(ref.max()):.0f}], mean {float(ref.mean(dtype=np.float64)):.1f}")
        for ld in loaders:
            if ld.name == "floor" or "npy" not in inproc[ld.name]:
                continue
            arr = np.load(inproc[ld.name]["npy"], mmap_mode="r")
            found = match_up_to_axes(ref, arr)
            if found:
                lines.append(f"- {ld.name}: same voxel values as the floor — {found[0]} "
                             f"(max |diff| {found[1]:.2g}); dtype {arr.dtype}")
            else:
                ok = False
                lines.append(f"- **{ld.name}: DIFFERENT voxel values from the floor** "
                             f"(shape {arr.shape}, dtype {arr.dtype}) — its timings are not comparable.")
    for ld in loaders:
        npy = inproc[ld.name].get("npy")
        if npy is not None:
            Path(npy).unlink(missing_ok=True)
    lines.append("")
    return lines, ok


def _csv_rows(path: Path) -> int | None:
    """Number of data rows (excluding the header) in a CSV file, or None if absent."""
    if not path.exists():
        return None
    with path.open(newline="") as fh:
        return max(0, sum(1 for _ in csv.reader(fh)) - 1)


def _medtl_scan_row(label: str, cmd: list[str], timing: Timing, manifest: Path, errors_csv: Path,
                    tree: dict, ref_best: float | None) -> tuple[str, list[str], bool]:
    """Table row and notes for one timed ``medtl scan`` command; checks what it wrote."""
    total = tree["good_files"] + tree["broken_files"]
    if timing.error or not timing.times:
        return (f"| {label} | FAILED | | | | | |",
                [f"- **{label} failed**: {(timing.error or '').replace(chr(10), ' ')}"], False)
    # one more (untimed) run, to look at its exit code and what it wrote
    _, proc = run_timed(cmd, ok_codes=tuple(range(256)))
    rows, errs = _csv_rows(manifest), _csv_rows(errors_csv)
    speed = ref_best / timing.best if ref_best else None
    row = (f"| {label} | {fmt_s(timing.best)} | {fmt_s(timing.median)} | {total / timing.best:,.0f} "
           f"| {'–' if speed is None else f'{speed:.2f}×'} "
           f"| {'no manifest' if rows is None else rows} | {'no errors.csv' if errs is None else errs} |")
    notes, good = [], True
    if proc.returncode != 0:
        notes.append(f"- {label} exited with code {proc.returncode}.")
    if rows is None:
        good = False
        notes.append(f"- **{label} wrote no manifest** — its timing is not meaningful.")
    elif rows != tree["expected_rows"] or errs != tree["broken_files"]:
        notes.append(f"- {label}: counts differ from the expected {tree['expected_rows']} rows / "
                     f"{tree['broken_files']} errors (check the manifest semantics).")
    return row, notes, good


def bench_scan(args, scan_dir: Path, out_dir: Path, tree: dict, with_medtl: bool) -> tuple[list[str], bool]:
    """Run the header-scan benchmark; return markdown lines and overall success.

    Rows: the single-process pydicom loop (reference), ``medtl scan`` with its default
    workers and, as an extra to separate per-file cost from pool overhead, ``--workers 1``.
    """
    total = tree["good_files"] + tree["broken_files"]
    pydicom_cmd = [sys.executable, "-c", PYDICOM_SCAN_CODE, str(scan_dir)]
    medtl_cmds: dict[str, tuple[list[str], Path, Path]] = {}
    if with_medtl:
        variants = [("medtl scan DIR -o manifest.csv --errors errors.csv", "", [])]
        if "--workers" in subprocess.run(medtl_cli() + ["scan", "--help"], env=subprocess_env(),
                                         capture_output=True, text=True).stdout:
            variants.append(("medtl scan DIR -o manifest.csv --errors errors.csv --workers 1", "_w1",
                             ["--workers", "1"]))
        for label, suffix, extra in variants:
            manifest, errors_csv = out_dir / f"manifest{suffix}.csv", out_dir / f"errors{suffix}.csv"
            cmd = medtl_cli() + ["scan", str(scan_dir), "-o", str(manifest), "--errors", str(errors_csv)]
            medtl_cmds[f"`{label}`"] = (cmd + extra, manifest, errors_csv)
    print(f"[scan] timing {1 + len(medtl_cmds)} whole-process commands x {args.repeats} ...",
          file=sys.stderr)
    timings = time_round_robin({"pydicom": pydicom_cmd}, args.repeats)
    # any exit code is accepted for medtl (a CLI may exit non-zero when it found broken
    # files); what it wrote is checked instead.
    timings.update(time_round_robin({k: v[0] for k, v in medtl_cmds.items()}, args.repeats,
                                    ok_codes=tuple(range(256))))
    lines = [
        f"### Header scan: {total} files ({tree['good_files']} DICOM {args.scan_size}×{args.scan_size} in "
        f"{tree['folders']} folders: {tree['series_3d']} CT/MR series + {tree['images_2d']} single 2D "
        f"radiographs; plus {tree['broken_files']} broken files)",
        "",
        f"Whole process, best and median of {args.repeats} runs after one warm-up. "
        f"Expected per the API: {tree['expected_rows']} rows (one per 3D series or 2D image) "
        f"and {tree['broken_files']} errors.",
        "",
        "| scanner | best (s) | median (s) | files/s (best) | speed vs pydicom loop | rows | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ok, notes, ref_best = True, [], None
    t = timings["pydicom"]
    if t.error:
        ok = False
        lines.append("| pydicom loop | FAILED | | | | | |")
        notes.append(f"- **pydicom loop failed**: {t.error.replace(chr(10), ' ')}")
    else:
        _, proc = run_timed(pydicom_cmd)
        counts = json.loads(proc.stdout.strip().splitlines()[-1])
        ref_best = t.best
        lines.append(f"| single-process `pydicom.dcmread(f, stop_before_pixels=True)` loop "
                     f"| {fmt_s(t.best)} | {fmt_s(t.median)} | {total / t.best:,.0f} | 1.00× "
                     f"| ({counts['ok']} files read) | {counts['bad']} |")
        if counts["bad"] < tree["broken_files"]:
            notes.append(f"- The pydicom loop only counts exceptions: {tree['broken_files'] - counts['bad']} "
                         "broken file(s) (the one truncated inside its header) parse without one.")
    for i, (label, (cmd, manifest, errors_csv)) in enumerate(medtl_cmds.items()):
        row, more, good = _medtl_scan_row(label, cmd, timings[label], manifest, errors_csv, tree, ref_best)
        lines.append(row)
        notes += more
        ok &= good or i > 0  # the --workers 1 row is an extra: it does not fail the run
    if medtl_cmds:
        first = next(iter(medtl_cmds.values()))[0]
        notes.append(f"- medtl CLI invoked as `{shlex.join(first[:3])[:150]} …`; "
                     f"{os.cpu_count()} logical CPUs on this machine.")
    lines.append("")
    lines += notes
    lines.append("")
    return lines, ok


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark medtl.io (series loading and header scanning) against plain "
                    "pydicom and MONAI on synthetic DICOM data; prints a markdown report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workdir", type=Path, default=None,
                   help="where test data goes (default: a fresh temp dir, removed afterwards). "
                        "Data written with the same parameters is reused. Must be outside the repo.")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    p.add_argument("--slices", type=int, default=200, help="slices in the CT series")
    p.add_argument("--size", type=int, default=512, help="rows = columns of the CT slices")
    p.add_argument("--scan-files", type=int, default=5000, help="good DICOM files in the scan workload")
    p.add_argument("--scan-folders", type=int, default=50, help="folders they are spread across")
    p.add_argument("--scan-size", type=int, default=64, help="rows = columns of the scan files")
    p.add_argument("--skip-medtl", action="store_true",
                   help="leave medtl out (to check the harness before medtl.io exists)")
    p.add_argument("--skip-load", action="store_true", help="skip the series-loading benchmark")
    p.add_argument("--skip-scan", action="store_true", help="skip the header-scan benchmark")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.slices < 2 or args.size < 8 or args.scan_files < 1:
        p.error("need --repeats >= 1, --slices >= 2, --size >= 8, --scan-files >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    with_medtl = not args.skip_medtl
    if with_medtl:
        reason = check_medtl_importable()
        if reason:
            print(f"error: cannot import medtl.io with load_image and scan from {REPO_ROOT} "
                  f"({reason}).\nInstall medtl (pip install -e .) or run from a checkout that has "
                  "medtl/io/; use --skip-medtl to benchmark only the other loaders.", file=sys.stderr)
            return 2

    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="medtl-bench-")
        workdir = Path(tmp)
    else:
        workdir = args.workdir.resolve()
        if workdir == REPO_ROOT or REPO_ROOT in workdir.parents:
            print(f"error: --workdir {workdir} is inside the repository; pick a path outside it.",
                  file=sys.stderr)
            return 2
        workdir.mkdir(parents=True, exist_ok=True)

    try:
        info = machine_info()
        out_dir = workdir / "out"
        out_dir.mkdir(exist_ok=True)
        sections, ok = [], True
        loaders = [ld for ld in LOADERS if with_medtl or ld.name != "medtl"]
        if not args.skip_load:
            series_dir = workdir / f"ct_{args.slices}x{args.size}"
            print(f"[data] writing CT series to {series_dir} ...", file=sys.stderr)
            t0 = time.perf_counter()
            write_ct_series(series_dir, args.slices, args.size)
            flush_to_disk()
            print(f"[data] ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            lines, good = bench_load(args, series_dir, out_dir, loaders)
            sections += lines
            ok &= good
        if not args.skip_scan:
            scan_dir = workdir / f"scan_{args.scan_files}x{args.scan_size}"
            print(f"[data] writing scan tree to {scan_dir} ...", file=sys.stderr)
            t0 = time.perf_counter()
            tree = write_scan_tree(scan_dir, args.scan_files, args.scan_folders, args.scan_size)
            flush_to_disk()
            print(f"[data] ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            lines, good = bench_scan(args, scan_dir, out_dir, tree, with_medtl)
            sections += lines
            ok &= good

        print("## medtl I/O benchmark\n")
        for key, value in info.items():
            print(f"- **{key}**: `{value}`" if key == "command" else f"- **{key}**: {value}")
        if not with_medtl:
            print("- **medtl left out** (--skip-medtl)")
        print()
        print("\n".join(sections))
        if not ok:
            print("Some measurements failed or did not verify; see above.", file=sys.stderr)
        return 0 if ok else 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(workdir / "out", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
