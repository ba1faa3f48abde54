#!/usr/bin/env python
"""Real colour histology in the layouts medtl trains on, from an image scikit-image ships offline.

MedMNIST's colour sets (PathMNIST, DermaMNIST, BloodMNIST ...) are too large to reach machines
without network access; this writes stand-ins from ``skimage.data.immunohistochemistry()`` (a real
512×512 IHC section: haematoxylin-stained nuclei, brown DAB where the antibody bound; public
domain, from the Human Protein Atlas via scikit-image):

* ``OUT/ihc.npz`` — MedMNIST's layout: ``{train,val,test}_images`` (N, 28, 28, 3) uint8 and
  ``{train,val,test}_labels`` (N, 1), label 1 = DAB-positive patch. The section is cut into eight
  64-row bands, dealt out as train, val, test, train, train, val, test, train (the section's top is
  DAB-rich, its bottom not: interleaving keeps the splits alike); training patches overlap by half,
  validation and test patches do not, and no pixel is in two splits.
* ``OUT/patches/*.png`` and ``OUT/findings.csv`` — a multi-label manifest in ChestX-ray14's
  layout: one ``label`` column naming the findings of each non-overlapping 28-pixel patch, joined
  by ``|`` (``DAB``, ``Nuclei``; ``No Finding``), and a ``patient_id`` per 4×4 block of patches so
  that patient-level splits keep neighbours together.

The labels come from colour deconvolution of the same pixels (``skimage.color.rgb2hed``): DAB
optical density above 0.10 on more than 15 % of a patch (about half of them), haematoxylin density above its section
median on more than 60 % of it. They are learnable by design: this data checks that a colour
pipeline keeps colour (DAB and haematoxylin are both dark in grey), it is not a clinical benchmark.

    python benchmarks/make_colour_data.py --out /tmp/medtl-colour
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

PATCH = 28
DAB_OD, DAB_SHARE = 0.10, 0.15
BAND = 64
DEAL = ("train", "val", "test", "train", "train", "val", "test", "train")
NUCLEI_SHARE = 0.60


def _labels(hed: np.ndarray, h_median: float) -> tuple[int, int]:
    dab = float((hed[..., 2] > DAB_OD).mean()) > DAB_SHARE
    nuclei = float((hed[..., 0] > h_median).mean()) > NUCLEI_SHARE
    return int(dab), int(nuclei)


def _patches(image, hed, rows: range, stride: int):
    for r in range(rows.start, rows.stop - PATCH + 1, stride):
        for c in range(0, image.shape[1] - PATCH + 1, stride):
            yield r, c, image[r : r + PATCH, c : c + PATCH], hed[r : r + PATCH, c : c + PATCH]


def main() -> None:
    from PIL import Image as PILImage
    from skimage.color import rgb2hed
    from skimage.data import immunohistochemistry

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/medtl-colour"))
    args = parser.parse_args()
    out: Path = args.out
    (out / "patches").mkdir(parents=True, exist_ok=True)
    image = immunohistochemistry()
    hed = rgb2hed(image)
    h_median = float(np.median(hed[..., 0]))

    arrays = {}
    for split in ("train", "val", "test"):
        stride = PATCH // 2 if split == "train" else PATCH
        pairs = [
            (p, _labels(h, h_median)[0])
            for band, name in enumerate(DEAL)
            if name == split
            for _, _, p, h in _patches(image, hed, range(band * BAND, (band + 1) * BAND), stride)
        ]
        arrays[f"{split}_images"] = np.stack([p for p, _ in pairs]).astype(np.uint8)
        arrays[f"{split}_labels"] = np.array([[y] for _, y in pairs], dtype=np.uint8)
    np.savez_compressed(out / "ihc.npz", **arrays)

    with open(out / "findings.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "patient_id", "label"])
        for r, c, patch, h in _patches(image, hed, range(0, 512), PATCH):
            name = f"patches/ihc_r{r:03d}_c{c:03d}.png"
            PILImage.fromarray(patch).save(out / name)
            dab, nuclei = _labels(h, h_median)
            found = ["DAB"] * dab + ["Nuclei"] * nuclei
            writer.writerow([name, f"block-{r // (4 * PATCH)}-{c // (4 * PATCH)}", "|".join(found) or "No Finding"])

    for split in ("train", "val", "test"):
        y = arrays[f"{split}_labels"][:, 0]
        print(f"{split}: {len(y)} patches, {int(y.sum())} DAB-positive")
    print(f"Wrote {out / 'ihc.npz'} and {out / 'findings.csv'} ({len(list((out / 'patches').glob('*.png')))} PNGs)")


if __name__ == "__main__":
    main()
