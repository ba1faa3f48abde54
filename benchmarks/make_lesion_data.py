#!/usr/bin/env python
"""A synthetic lesion set with known lesion positions, for scoring saliency maps (step 7).

Writes ``N`` images (half positive) to ``OUT_DIR``, each as NIfTI with a proper affine, and:

* ``labels.csv`` — a manifest for ``medtl train``: ``path,patient_id,label,mask`` (one patient per
  image; ``mask`` only for positives, empty for negatives);
* ``lesions.csv`` — the truth behind each positive: centre (voxel index and RAS+ mm) and radius;
* ``masks/*.nii.gz`` — uint8, 1 = lesion, same shape and affine as the image.

Every image has a smooth random background texture, a brightness gradient, Gaussian noise and
1–3 **decoys**: dimmer squares, bars, rings and small discs (half the lesion's contrast or less)
that are *not* lesions, so "anything bright" is not the answer. A positive also has the lesion:
a bright disc (2D, radius 4–8 px) or sphere (3D, radius 2–4 voxels) with a slightly soft edge,
at the first of up to 200 random places that is clear of every decoy (the last one tried if none
is). The mask holds the pixels whose centre lies inside the disc / sphere.

* ``--dims 2`` (default): ``S × S`` images (64), 0.5 mm pixels, origin (−20, 30) mm;
* ``--dims 3``: ``S³`` volumes (default 32), 2 mm voxels, origin (−40, −25, 60) mm, so world
  positions differ from voxel indices (``lesions.csv`` gives both).

Values are arbitrary units around 100–300 (train with the ``xr`` or ``mr`` preset, not ``ct``).
The output is the same for the same arguments (seeded).

    python benchmarks/make_lesion_data.py /tmp/lesions                  # 200 images, 64 px
    python benchmarks/make_lesion_data.py /tmp/lesions3d --dims 3 --n 60 # 60 volumes, 32³
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

import numpy as np

LESION_RADIUS = {2: (4.0, 8.0), 3: (2.0, 4.0)}  # voxels
SPACING = {2: 0.5, 3: 2.0}  # mm
ORIGIN = {2: (-20.0, 30.0, 0.0), 3: (-40.0, -25.0, 60.0)}  # mm
LESION_CONTRAST = (0.8, 1.2)  # above the local background, in units of the texture's spread
DECOY_CONTRAST = (0.25, 0.5)
NOISE = 0.25


def affine_for(dims: int) -> np.ndarray:
    """Voxel index (i, j[, k]) → RAS+ mm: isotropic spacing, a non-zero origin."""
    a = np.eye(4)
    a[:dims, :dims] *= SPACING[dims]
    a[:3, 3] = ORIGIN[dims]
    return a


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    return np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")


def _ball(grid, centre, radius: float) -> np.ndarray:
    """Signed distance from the surface of a disc / sphere (negative inside)."""
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))) - radius


def _soft(distance: np.ndarray, edge: float = 0.7) -> np.ndarray:
    """A smooth 0–1 profile: 1 well inside, 0 outside, over about ``edge`` voxels."""
    return 1.0 / (1.0 + np.exp(distance / (edge / 3)))


def _decoy(rng: np.random.Generator, grid, shape, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(profile 0–1, footprint) of one decoy: a square/cube, a bar, a ring/shell or a small disc."""
    n = shape[0]
    kind = rng.choice(["box", "bar", "ring", "dot"])
    centre = rng.uniform(0.15 * n, 0.85 * n, size=dims)
    if kind == "box":
        half = rng.uniform(0.05, 0.1) * n
        d = np.max([np.abs(g - c) for g, c in zip(grid, centre, strict=True)], axis=0) - half
    elif kind == "bar":
        halves = np.full(dims, rng.uniform(0.02, 0.04) * n)
        halves[rng.integers(dims)] = rng.uniform(0.15, 0.3) * n
        d = np.max([np.abs(g - c) - h for g, c, h in zip(grid, centre, halves, strict=True)], axis=0)
    elif kind == "ring":
        radius = rng.uniform(0.08, 0.14) * n
        d = np.abs(_ball(grid, centre, radius)) - max(0.8, 0.02 * n)
    else:
        d = _ball(grid, centre, rng.uniform(0.03, 0.05) * n)
    return _soft(d), d < 1.5


def make_one(rng: np.random.Generator, size: int, dims: int, positive: bool):
    """(image float32, mask uint8 or None, (centre voxel, radius voxels) or None)."""
    from scipy.ndimage import gaussian_filter

    shape = (size,) * dims
    grid = _grid(shape)
    texture = gaussian_filter(rng.normal(size=shape), sigma=size / 10)
    texture /= texture.std() + 1e-12
    tilt = rng.normal(size=dims) * 0.5
    img = 0.5 * texture + sum(t * (g / size - 0.5) for t, g in zip(tilt, grid, strict=True))
    taken = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 4)):
        profile, footprint = _decoy(rng, grid, shape, dims)
        img += rng.uniform(*DECOY_CONTRAST) * profile
        taken |= footprint
    mask = lesion = None
    if positive:
        lo, hi = LESION_RADIUS[dims]
        for _ in range(200):  # a place clear of every decoy (with a margin of 2 voxels)
            radius = float(rng.uniform(lo, hi))
            centre = rng.uniform(radius + 2, size - radius - 3, size=dims)
            d = _ball(grid, centre, radius)
            if not (taken & (d < 2)).any():
                break
        img += rng.uniform(*LESION_CONTRAST) * _soft(d)
        mask = (d <= 0).astype(np.uint8)
        lesion = (centre, radius)
    img += NOISE * rng.normal(size=shape)
    return (200.0 + 50.0 * img).astype(np.float32), mask, lesion


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    nii = nib.Nifti1Image(array, affine)
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    nii.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(nii.to_bytes(), mtime=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--n", type=int, default=200, help="images or volumes (half positive); default 200")
    parser.add_argument("--size", type=int, default=None, help="pixels per axis (default 64 in 2D, 32 in 3D)")
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = args.size or (64 if args.dims == 2 else 32)
    if size < 24:
        parser.error("--size must be at least 24")
    rng = np.random.default_rng(args.seed)
    affine = affine_for(args.dims)
    labels = rng.permutation(np.arange(args.n) % 2)
    rows, truth = [], []
    for i, label in enumerate(labels):
        img, mask, lesion = make_one(rng, size, args.dims, bool(label))
        name = f"images/les{i:04d}.nii.gz"
        _save(args.out / name, img, affine)
        row = {"path": name, "patient_id": f"LES-{i:04d}", "label": int(label), "mask": ""}
        if mask is not None:
            row["mask"] = f"masks/les{i:04d}.nii.gz"
            _save(args.out / row["mask"], mask, affine)
            centre, radius = lesion
            mm = (affine @ np.r_[centre, np.zeros(3 - args.dims), 1.0])[:3]
            record = {"path": name}
            record.update({f"centre_{a}": round(float(c), 2) for a, c in zip("ijk"[: args.dims], centre, strict=True)})
            record.update({f"centre_{a}_mm": round(float(v), 2) for a, v in zip("xyz", mm, strict=True)})
            record.update(radius_vox=round(radius, 2), radius_mm=round(radius * SPACING[args.dims], 2),
                          mask_voxels=int(mask.sum()))  # fmt: skip
            truth.append(record)
        rows.append(row)
    for file, table in (("labels.csv", rows), ("lesions.csv", truth)):
        with open(args.out / file, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    area = np.mean([t["mask_voxels"] for t in truth]) / size**args.dims if truth else 0.0
    print(f"Wrote {args.n} {args.dims}D images of {size}^{args.dims} ({len(truth)} with a lesion) and labels.csv, "
          f"lesions.csv to {args.out}; mean lesion share of a positive {area:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
