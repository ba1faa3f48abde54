#!/usr/bin/env python
"""Synthetic DICOM folders for ``benchmarks/bench_predict.py``: clinical-size radiographs and CT series.

Writes, under ``OUT_DIR``:

* ``dx/p<patient>/IM<number>.dcm`` — ``--n2d`` (2000) 2D radiographs, one file each, 1 to 3 per
  patient folder: Digital X-Ray (For Presentation), 512 × 512 uint16 with 12 bits stored,
  ``PixelSpacing`` / ``ImagerPixelSpacing`` 0.7–0.8 mm, MONOCHROME2 and about one in five
  MONOCHROME1 (stored values inverted, VOI window mirrored), AP or PA. The content is a smooth
  chest-like projection (trunk, two lung fields, heart, spine, ribs, clavicles, random placement and
  scale), a smooth random texture, a nodule in about a third of the images, and quantum-like noise.
* ``ct/p<patient>/series01/IM<k>`` — ``--n3d`` (50) CT series, each a folder of 64 single-frame
  slices: 512 × 512 int16 with ``RescaleIntercept`` −1024 (HU), 0.75 mm pixels (384 mm field of
  view), 5 mm apart (``SliceThickness`` 5), axial ``ImageOrientationPatient``, one
  ``ImagePositionPatient`` per slice along +z, shared Study / Series / FrameOfReference UIDs. The
  content is the analytic thorax of ``scripts/make_sample_data.py`` (body, ribs, lungs, heart,
  spine; a lesion in half of the series) sampled on that grid, plus noise.

The DICOM headers are built with ``scripts/make_sample_data.py`` (imported, not copied):
``cxr_dataset`` / ``ct_slice_dataset`` with its fictitious patients and sites, so every file is as
valid as the repository's sample data; only the pixel size, the pixel data and ``ImageComments``
(which says the image is synthetic and names this script) differ. Every identifier is invented
(``FAKE^PATIENT^…``, ``MRN-…``); no real patient data is involved.

Deterministic: each image and series draws from its own seeded stream and UIDs are name-based
hashes, so the same arguments give the same files whatever ``--jobs``. About 0.5 MB per radiograph
and 32 MB per CT series (defaults: ~1 GB + ~1.6 GB); the two kinds are generated in ``--jobs``
processes (default: all CPUs).

    python benchmarks/make_predict_data.py /tmp/predict-data                    # 2000 DX + 50 CT series
    python benchmarks/make_predict_data.py /tmp/pd-small --n2d 64 --n3d 3      # a small set for --quick
    python benchmarks/make_predict_data.py /tmp/predict-data --overwrite       # replace dx/ and ct/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import make_sample_data as sample  # noqa: E402  (scripts/make_sample_data.py: headers, sites, thorax)

SEED = 20240611  # bump for a different (still deterministic) data set
NOTE = "SYNTHETIC BENCHMARK IMAGE made by benchmarks/make_predict_data.py - not a real patient"

DX_SIZE, DX_BITS = 512, 12
CT_COLS = CT_ROWS = 512
CT_SLICES = 64
CT_PIXEL_MM, CT_SLICE_MM = 0.75, 5.0
DX_PATIENT0, CT_PATIENT0 = 10_000, 100_000  # patient numbers: far from the sample data's 1..204
DX_IMAGE0 = 1_000_000  # image numbers (name the files and seed the UIDs): far from the sample data's


def _rng(kind: str, index: int) -> np.random.Generator:
    """The stream of one image or series: depends only on (SEED, kind, index)."""
    return np.random.default_rng([SEED, {"plan": 0, "dx": 1, "ct": 2}[kind], index])


# ----------------------------------------------------------------------------- 2D radiographs
def plan_dx(n: int) -> list[sample.CxrImage]:
    """``n`` images over patients with 1-3 images each (a follow-up study for the second and third)."""
    rng = _rng("plan", 0)
    images: list[sample.CxrImage] = []
    patient = 0
    while len(images) < n:
        site = "AB"[int(rng.integers(2))]
        p = sample.Patient(DX_PATIENT0 + patient, site, "MF"[int(rng.integers(2))], int(rng.integers(18, 90)))
        patient += 1
        for study in range(1, min(int(rng.choice([1, 1, 2, 3])), n - len(images)) + 1):
            images.append(sample.CxrImage(
                patient=p, number=DX_IMAGE0 + len(images), study=min(study, 2), label=int(rng.random() < 0.35),
                modality="DX", view="AP" if rng.random() < 0.25 else "PA", monochrome1=bool(rng.random() < 0.2),
                extension=".dcm",
            ))  # fmt: skip
    return images


def _lerp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation weights: ``W @ coarse`` samples a coarse grid smoothly."""
    x = np.linspace(0, n_in - 1, n_out)
    lo = np.minimum(np.floor(x).astype(int), n_in - 2)
    frac = (x - lo).astype(np.float32)
    w = np.zeros((n_out, n_in), np.float32)
    w[np.arange(n_out), lo] = 1 - frac
    w[np.arange(n_out), lo + 1] = frac
    return w


def smooth_field(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """A smooth random (n, n) field, about N(0, 1) at ``cells`` × ``cells`` control points."""
    w = _lerp_matrix(n, cells)
    return w @ rng.standard_normal((cells, cells), dtype=np.float32) @ w.T


def _sig(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)  # the logistic function, without overflow warnings


def radiograph(rng: np.random.Generator, im: sample.CxrImage) -> np.ndarray:
    """A chest-like projection in display units (0 black .. 1 white), (512, 512) float32."""
    n = DX_SIZE
    r, c = np.mgrid[0:n, 0:n].astype(np.float32)
    scale = rng.uniform(0.85, 1.1)
    cy, cx = n / 2 + rng.uniform(-20, 20), n / 2 + rng.uniform(-20, 20)
    u, v = (c - cx) / (n / 2 * scale), (r - cy) / (n / 2 * scale)
    half_width = 0.86 - 0.3 * np.clip(-(v + 0.6) / 0.4, 0, 1)
    body = _sig((half_width - np.abs(u)) / 0.02)
    lungs = np.zeros_like(u)
    for uc, au, av in ((-0.38, 0.27, 0.52), (0.37, 0.25, 0.48)):
        au, av = au * rng.uniform(0.92, 1.08), av * rng.uniform(0.92, 1.08)
        rho = np.sqrt(np.abs((u - uc) / au) ** 2.4 + ((v + 0.05) / av) ** 2)
        lungs = np.maximum(lungs, _sig((1 - rho) / 0.06))
    heart_w = 0.30 * (1.15 if im.view == "AP" else 1.0) * rng.uniform(0.9, 1.1)
    heart = _sig((1 - np.hypot((u - 0.1) / heart_w, (v - 0.28) / 0.22)) / 0.05)
    thickness = np.sqrt(np.clip(1 - (u / half_width) ** 2, 0, 1))
    image = 0.04 + body * (0.42 + 0.16 * thickness)
    image -= 0.36 * lungs * (1 - 0.85 * heart)
    image += 0.07 * _sig((0.07 - np.abs(u)) / 0.01) * body  # spine
    x = np.abs(u) - 0.08
    rib_tilt = rng.uniform(-0.3, -0.2)
    for k in range(9):  # posterior ribs
        arc = -0.58 + 0.11 * k + rib_tilt * x + 0.9 * x**2
        image += 0.045 * np.exp(-0.5 * ((v - arc) / 0.014) ** 2) * (x > 0) * body
    image += 0.05 * np.exp(-0.5 * ((v + 0.58 - 0.12 * np.abs(u)) / 0.02) ** 2) * (np.abs(u) < 0.6) * body
    image += 0.03 * smooth_field(rng, n, 12) * body  # soft-tissue texture
    image += 0.012 * smooth_field(rng, n, 48) * lungs  # vessel-like lung markings
    if im.label:  # a nodule somewhere in a lung field
        side = rng.choice([-0.37, 0.37])
        nu, nv = side + rng.uniform(-0.1, 0.1), rng.uniform(-0.3, 0.2)
        radius = rng.uniform(0.03, 0.07)
        image += rng.uniform(0.12, 0.2) * np.sqrt(np.clip(1 - ((u - nu) ** 2 + (v - nv) ** 2) / radius**2, 0, 1))
    image *= rng.uniform(0.92, 1.08)  # exposure
    image += rng.normal(0, 0.012, image.shape).astype(np.float32) * np.sqrt(np.clip(image, 0.05, 1))
    return np.clip(image, 0.0, 1.0)


def write_dx(out: Path, k: int, im: sample.CxrImage) -> tuple[str, int]:
    rng = _rng("dx", k)
    display = radiograph(rng, im)
    ds = sample.cxr_dataset(im, display)  # 12-bit uint16, MONOCHROME1 inverted, window, UIDs, fake patient
    spacing = [sample.ds_str(rng.choice([0.7, 0.75, 0.8]))] * 2
    ds.PixelSpacing = ds.ImagerPixelSpacing = spacing
    ds.ImageComments = NOTE
    ds.StudyDescription, ds.SeriesDescription = "XR CHEST (SYNTHETIC)", f"CHEST {im.view} (SYNTHETIC)"
    path = out / "dx" / im.patient.folder / f"IM{im.number:07d}{im.extension}"
    sample.write_dicom(ds, path)
    return str(path), path.stat().st_size


# ----------------------------------------------------------------------------- CT series
def write_ct(out: Path, s: int) -> tuple[str, int]:
    rng = _rng("ct", s)
    site = "AB"[s % 2]
    p = sample.Patient(CT_PATIENT0 + s, site, "FM"[int(rng.integers(2))], int(rng.integers(35, 86)))
    case = sample.CtCase(p, label=s % 2)
    thorax = sample.make_thorax(rng)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    fov = np.array([(CT_COLS - 1) * CT_PIXEL_MM, (CT_ROWS - 1) * CT_PIXEL_MM, (CT_SLICES - 1) * CT_SLICE_MM])
    centre = thorax.centre + np.array([rng.uniform(-10, 10), rng.uniform(-10, 10), rng.uniform(-30, 30)])
    origin = tuple(np.round(centre - fov / 2, 4))
    geom = sample.Geometry(origin, tuple(row), tuple(col), CT_PIXEL_MM, CT_PIXEL_MM, CT_SLICE_MM,
                           (CT_COLS, CT_ROWS, CT_SLICES))  # fmt: skip
    if case.label:  # a sphere near the middle of one lung
        side = rng.choice([-1.0, 1.0])
        thorax.lesion_centre = thorax.centre + np.array([side * thorax.LUNG_X, thorax.LUNG_Y, 0.0]) + rng.uniform(
            [-15, -15, -60], [15, 15, 60])  # fmt: skip
        thorax.lesion_radius = float(rng.uniform(5.0, 15.0))
    # LPS of every pixel of slice 0, indexed [row, column] like the stored array
    jj, ii = np.mgrid[0:CT_ROWS, 0:CT_COLS].astype(np.float64)
    plane = np.asarray(origin) + ii[..., None] * CT_PIXEL_MM * row + jj[..., None] * CT_PIXEL_MM * col
    noise_hu = sample.SITES[site].ct_noise_hu
    folder = out / "ct" / p.folder / "series01"
    size = 0
    for k in range(CT_SLICES):
        hu = thorax.hu(plane + k * CT_SLICE_MM * geom.normal) + sample.SITES[site].ct_offset_hu
        hu += rng.normal(0.0, noise_hu, hu.shape)
        stored = (np.clip(np.round(hu), -1024, 3071) + sample.HU_OFFSET).astype(np.int16)
        ds = sample.ct_slice_dataset(case, geom, k, k + 1, stored)
        ds.SpacingBetweenSlices = sample.ds_str(CT_SLICE_MM)
        ds.ImageComments = NOTE
        ds.StudyDescription, ds.SeriesDescription = "CT CHEST (SYNTHETIC)", "CHEST 5mm AXIAL (SYNTHETIC)"
        path = folder / f"IM{k + 1:04d}"
        sample.write_dicom(ds, path)
        size += path.stat().st_size
    return str(folder), size


# ----------------------------------------------------------------------------- main
def _dx_job(args):
    return write_dx(*args)


def _ct_job(args):
    return write_ct(*args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder (dx/ and ct/ are written in it)")
    parser.add_argument("--n2d", type=int, default=2000, help="2D radiographs (default 2000)")
    parser.add_argument("--n3d", type=int, default=50, help="CT series of 64 slices (default 50)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: all CPUs)")
    parser.add_argument("--overwrite", action="store_true", help="replace dx/ and ct/ if OUT already has them")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out == REPO or REPO in out.parents:
        parser.error(f"{out} is inside the repository; write generated data elsewhere (e.g. /tmp)")
    for sub in ("dx", "ct"):
        if (out / sub).exists():
            if not args.overwrite:
                parser.error(f"{out / sub} exists; pass --overwrite to replace it")
            shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"generator": "benchmarks/make_predict_data.py", "seed": SEED, "note": NOTE, "n2d": args.n2d,
                "n3d": args.n3d, "dx": {"size": [DX_SIZE, DX_SIZE], "bits_stored": DX_BITS},
                "ct": {"size": [CT_ROWS, CT_COLS], "slices": CT_SLICES, "pixel_mm": CT_PIXEL_MM,
                       "slice_mm": CT_SLICE_MM}}  # fmt: skip
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        t0 = time.perf_counter()
        plan = plan_dx(args.n2d)
        dx = list(pool.map(_dx_job, [(out, k, im) for k, im in enumerate(plan)], chunksize=8))
        t_dx = time.perf_counter() - t0
        n_mono1 = sum(im.monochrome1 for im in plan)
        n_patients = len({im.patient.number for im in plan})
        mb = sum(s for _, s in dx) / 2**20
        print(f"dx: {len(dx)} radiographs ({n_mono1} MONOCHROME1) of {n_patients} patients, {mb:.0f} MiB, "
              f"{t_dx:.1f} s → {out / 'dx'}")  # fmt: skip
        t0 = time.perf_counter()
        ct = list(pool.map(_ct_job, [(out, s) for s in range(args.n3d)]))
        t_ct = time.perf_counter() - t0
        mb_ct = sum(s for _, s in ct) / 2**20
        print(f"ct: {len(ct)} series × {CT_SLICES} slices of {CT_ROWS}×{CT_COLS}, {mb_ct:.0f} MiB, "
              f"{t_ct:.1f} s → {out / 'ct'}")  # fmt: skip
    manifest.update(dx_mib=round(mb, 1), ct_mib=round(mb_ct, 1), dx_patients=n_patients, dx_monochrome1=n_mono1)
    (out / "predict-data.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"total {mb + mb_ct:.0f} MiB in {t_dx + t_ct:.1f} s ({max(1, args.jobs)} processes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
