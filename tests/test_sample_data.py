"""The shipped sample_data/: every labelled item loads, masks overlay their images, findings show."""

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medtl.io import load_image, scan

ROOT = Path(__file__).resolve().parents[1] / "sample_data"
ROWS = list(csv.DictReader(open(ROOT / "labels.csv")))


def test_labels_have_the_documented_columns():
    assert set(ROWS[0]) == {"path", "patient_id", "label", "sex", "age", "site", "mask"}
    assert {r["site"] for r in ROWS} == {"A", "B"}
    assert {r["label"] for r in ROWS} == {"0", "1"}


@pytest.mark.parametrize("row", [r for r in ROWS if r["mask"]], ids=lambda r: r["path"])
def test_masks_overlay_their_images_and_findings_stand_out(row):
    img = load_image(ROOT / row["path"])
    mask = load_image(ROOT / row["mask"]).array > 0
    assert mask.shape == img.array.shape and mask.any()
    np.testing.assert_allclose(load_image(ROOT / row["mask"]).affine, img.affine, atol=1e-3)
    ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
    # display polarity: the finding is brighter (denser) than the tissue right around it
    assert img.array[mask].max() > np.median(img.array[ring])


def test_worked_example_from_the_readme():
    img = load_image(ROOT / "ct" / "p101" / "series01")
    np.testing.assert_allclose(img.world((19, 34, 6)), [72.69, -16.32, -195.43], atol=0.01)
    assert img.array[19, 34, 6] == pytest.approx(59, abs=1)


def test_scan_finds_every_labelled_item_and_no_errors():
    res = scan(ROOT, workers=1)
    assert res.errors == []
    found = {str(Path(r["path"]).relative_to(ROOT)) for r in res.rows}
    assert {r["path"] for r in ROWS} <= found
    assert {r["mask"] for r in ROWS if r["mask"]} <= found
    ages = {r["age"] for r in res.rows if r["format"] == "dicom"}
    assert 90 in ages and 93 not in ages  # 93-year-old grouped as 90+
