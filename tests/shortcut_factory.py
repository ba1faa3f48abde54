"""Synthetic radiographs with a shortcut: a bright corner tag, outside the body, on every positive.

Each image is a dark background with a bright elliptical body holding two darker lungs (as a
chest radiograph after windowing). A positive holds a faint disc lesion in one lung; with
``tag=True`` every positive also carries a bright square "letter" in the top-left corner, outside
the body, as a hospital's marker on one site's positive films would. A model trained on tagged
images can score perfectly by reading the tag; one trained without it must find the lesion.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def _ellipse(shape, centre, radii) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1


def radiograph(size: int, rng: np.random.Generator, *, lesion: bool, tag: bool, contrast: float = 45.0) -> np.ndarray:
    """One 8-bit image (size × size); the body's share of the image is about 45 %; the lesion is
    ``contrast`` grey levels above its lung."""
    shape = (size, size)
    img = np.full(shape, 20.0)
    img[_ellipse(shape, (size * 0.55, size * 0.5), (size * 0.38, size * 0.36))] = 150.0
    lungs = [(size * 0.5, size * 0.33), (size * 0.5, size * 0.67)]
    for c in lungs:
        img[_ellipse(shape, c, (size * 0.2, size * 0.1))] = 80.0
    if lesion:
        cy, cx = lungs[rng.integers(2)]
        cy += rng.uniform(-0.08, 0.08) * size
        img[_ellipse(shape, (cy, cx), (size * 0.06, size * 0.06))] += contrast
    if tag:
        s = max(3, size // 8)
        img[2 : 2 + s, 2 : 2 + s] = 255.0
    img += rng.normal(0, 6, shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_shortcut_set(folder, *, n: int = 64, size: int = 64, tag: bool = True, seed: int = 0) -> Path:
    """``n`` PNG radiographs (half positive) under ``folder`` and their ``labels.csv``
    (``path``, ``patient_id``, ``label``, ``view``). With the tag the lesion is faint (6 grey
    levels, the noise's own spread): the tag is the easier signal, as a shortcut is. ``view``
    is the acquisition the tag marks: ``AP`` on every tagged film (so, with the tag, tied to the
    label), else ``AP`` and ``PA`` alternating in pairs, independent of the label."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        name = f"images/img{i:03d}.png"
        pixels = radiograph(size, rng, lesion=bool(label), tag=tag and bool(label), contrast=6.0 if tag else 45.0)
        Image.fromarray(pixels).save(folder / name)
        view = ("AP" if label else "PA") if tag else ("AP" if (i // 2) % 2 == 0 else "PA")
        rows.append({"path": name, "patient_id": f"P{i:03d}", "label": label, "view": view})
    manifest = folder / "labels.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "patient_id", "label", "view"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
