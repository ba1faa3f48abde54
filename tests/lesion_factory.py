"""A synthetic detection task whose lesion positions are known: NIfTI images, masks and a manifest.

Positives hold one bright disc (2D) or sphere (3D) at a random position; negatives hold none.
Every image has smooth noise and dim decoy blobs, so "bright anywhere" is not the whole story.
The affine is deliberately awkward (flipped axes, anisotropic voxels, an offset origin): a map
that lands on the lesion in world millimetres has been through every geometry step correctly.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np

#: flipped first two axes (as DICOM's LPS would give), anisotropic voxels, an origin far from 0
AFFINE = np.array([[-1.5, 0, 0, 90.0], [0, -1.0, 0, 60.0], [0, 0, 2.0, -40.0], [0, 0, 0, 1]])


def _blob(shape, centre, radius) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
    return dist2 <= radius**2


def write_lesion_set(folder, *, n: int = 48, size: int = 32, dims: int = 2, radius: int = 3, seed: int = 0) -> Path:
    """Write ``n`` images (half positive) under ``folder`` and return its ``labels.csv``.

    Columns: ``path``, ``patient_id``, ``label``, ``mask`` (empty for negatives), and the lesion
    centre in world mm (``x_mm``, ``y_mm``, ``z_mm``) for positives.
    """
    from scipy.ndimage import gaussian_filter

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size,) * dims
    affine = AFFINE if dims == 3 else AFFINE.copy()
    rows = []
    for i in range(n):
        label = i % 2
        img = gaussian_filter(rng.normal(0.0, 1.0, shape), 1.0) * 20 + 100
        for _ in range(2):  # decoys: dim and wide, never the lesion's brightness
            c = rng.integers(radius, size - radius, dims)
            img[_blob(shape, c, radius + 2)] += 25
        row = {"path": f"images/case{i:03d}.nii.gz", "patient_id": f"P{i // 2:03d}", "label": label, "mask": ""}
        if label:
            centre = rng.integers(radius + 1, size - radius - 1, dims)
            lesion = _blob(shape, centre, radius)
            img[lesion] += 120
            mask_name = f"masks/case{i:03d}.nii.gz"
            nib.save(nib.Nifti1Image(lesion.astype(np.uint8), affine), folder / mask_name)
            row["mask"] = mask_name
            index = np.append(np.append(centre, [0] * (3 - dims)), 1.0)
            row.update(zip(("x_mm", "y_mm", "z_mm"), (round(float(v), 3) for v in (affine @ index)[:3]), strict=True))
        nib.save(nib.Nifti1Image(img.astype(np.float32), affine), folder / row["path"])
        rows.append(row)
    out = folder / "labels.csv"
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "patient_id", "label", "mask", "x_mm", "y_mm", "z_mm"])
        writer.writeheader()
        writer.writerows(rows)
    return out
