"""medtl scan over a messy tree: every good image once, every broken file named."""

import csv
import gzip
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import FAKE_PHI, base_dataset, oblique_iop, set_pixels, write_series
from pydicom.data import get_testdata_file

from medtl.cli import main
from medtl.io import scan

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "tree"
    good, bad = set(), set()
    write_series(str(root / "p1" / "ct"), n=8, seed=1)
    good.add(str(root / "p1" / "ct"))
    write_series(str(root / "p2" / "obl" / "s1"), n=6, iop=oblique_iop(), seed=2, extension=".dcm")
    good.add(str(root / "p2" / "obl" / "s1"))
    xr = root / "p3" / "xr"
    xr.mkdir(parents=True)
    for i in range(2):  # two radiographs of one series: separate 2D images
        ds = base_dataset("DX", sop_class="1.2.840.10008.5.1.4.1.1.1.1", series_uid="1.2.3.4.5")
        ds.PhotometricInterpretation = "MONOCHROME1"
        set_pixels(ds, np.full((16, 20), 100 * i), signed=False, bits=12)
        ds.ImagerPixelSpacing = ["0.2", "0.2"]
        ds.save_as(xr / f"IM{i}", enforce_file_format=True)
        good.add(str(xr / f"IM{i}"))
    shutil.copy(get_testdata_file("MR_small_RLE.dcm"), root / "p3" / "mr_rle")
    good.add(str(root / "p3" / "mr_rle"))
    shutil.copy(get_testdata_file("rtdose.dcm"), root / "p3" / "dose")  # multi-frame
    good.add(str(root / "p3" / "dose"))
    other = root / "other"
    other.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), np.eye(4)), other / "vol.nii.gz")
    good.add(str(other / "vol.nii.gz"))
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((8, 9), np.uint8)).save(other / "photo.png")
    good.add(str(other / "photo.png"))
    np.save(other / "arr.npy", np.zeros((3, 4), np.float32))
    good.add(str(other / "arr.npy"))
    # obvious non-images: skipped silently
    (root / "README.txt").write_text("study export\n")
    (root / "p1" / "NOTES").write_text("scanned on tuesday\n")
    # broken files: each must be an error row with its path
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    (root / "p1" / "truncated").write_bytes(data[: len(data) - 5000])
    (root / "p1" / "fake.dcm").write_text("I am not a DICOM file")
    shutil.copy(get_testdata_file("rtplan.dcm"), root / "p3" / "plan")  # a non-image object: skipped
    stripped = base_dataset("CT")  # an image SOP class without its pixels: broken
    stripped.Rows, stripped.Columns = 4, 4
    stripped.save_as(root / "p3" / "stripped", enforce_file_format=True)
    whole = nib.Nifti1Image(np.random.default_rng(0).random((30, 30, 30)).astype(np.float32), np.eye(4)).to_bytes()
    (other / "cut.nii").write_bytes(whole[: len(whole) // 2])
    (other / "cut.nii.gz").write_bytes(gzip.compress(whole)[:3000])
    (other / "empty").write_bytes(b"")
    (other / "junk.bin").write_bytes(bytes(range(7, 207)) * 2)  # unknown suffix: skipped, not an error
    (other / "IMG0042").write_bytes(bytes(range(7, 207)) * 2)  # no suffix, binary: reported
    bad |= {str(root / "p1" / "truncated"), str(root / "p1" / "fake.dcm"), str(root / "p3" / "stripped"),
            str(other / "cut.nii"), str(other / "cut.nii.gz"), str(other / "empty"), str(other / "IMG0042")}  # fmt: skip
    return root, good, bad


def test_scan_lists_every_good_image_once_and_names_every_broken_file(messy):
    root, good, bad = messy
    res = scan(root, workers=1)
    paths = [r["path"] for r in res.rows]
    assert sorted(paths) == sorted(good)  # once each: the 8 slices are one row
    assert {e["path"] for e in res.errors} == bad
    assert all(e["reason"] for e in res.errors)
    assert res.skipped == 4  # README.txt, NOTES, junk.bin and the RT plan
    by_path = {r["path"]: r for r in res.rows}
    ct = by_path[str(root / "p1" / "ct")]
    assert (ct["kind"], ct["shape"], ct["spacing"], ct["n_files"]) == ("3d", "10x12x8", "0.6x0.8x2.5", 8)
    assert by_path[str(root / "p3" / "xr" / "IM0")]["kind"] == "2d"
    assert by_path[str(root / "p3" / "dose")]["kind"] == "3d"
    reasons = {os.path.basename(e["path"]): e["reason"] for e in res.errors}
    assert "truncated" in reasons["truncated"]
    assert "no pixel data (CT Image Storage)" in reasons["stripped"]
    assert "not a recognised image" in reasons["fake.dcm"]


def test_parallel_scan_equals_serial(messy, monkeypatch):
    root, _, _ = messy
    monkeypatch.setattr(sys.modules["medtl.io.scan"], "_SMALL_SCAN", 0)  # force the process pool
    a, b = scan(root, workers=1), scan(root, workers=2)
    assert a.rows == b.rows and a.errors == b.errors


def test_manifest_rows_load(messy):
    from medtl.io import load_image

    root, _, _ = messy
    res = scan(root, workers=1)
    assert {row["kind"] for row in res.rows} >= {"2d", "3d"}
    for row in res.rows:  # every row, 2D and 3D: the shape the manifest promises is the one that loads
        img = load_image(row["path"], series=row["series"] or None)
        assert row["shape"] == "x".join(str(s) for s in img.spatial_shape), row["path"]
        assert row["kind"] == f"{len(img.spatial_shape)}d", row["path"]


def test_cli_scan_writes_csvs_without_identifiers(messy, tmp_path, capsys):
    root, good, bad = messy
    manifest, errors = tmp_path / "m.csv", tmp_path / "e.csv"
    assert main(["scan", str(root), "-o", str(manifest), "--errors", str(errors), "-q"]) == 0
    out = capsys.readouterr().out
    assert f"{len(good)} images/series, {len(bad)} errors" in out
    rows = list(csv.DictReader(open(manifest)))
    assert {r["path"] for r in rows} == good
    assert {r["path"] for r in csv.DictReader(open(errors))} == bad
    text = manifest.read_text() + errors.read_text()
    for value in FAKE_PHI.values():
        assert value not in text
    assert "1.2.3.4.5" not in text  # raw series UIDs are pseudonymised too


def test_cli_basics(tmp_path, capsys):
    assert main(["info", get_testdata_file("CT_small.dcm")]) == 0
    assert "CT" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing.dcm")]) == 1
    assert "missing.dcm: no such file" in capsys.readouterr().err
    out = tmp_path / "ct.nii.gz"
    assert main(["convert", get_testdata_file("CT_small.dcm"), str(out)]) == 0
    assert nib.load(out).shape == (128, 128, 1)


def test_console_script_starts_without_torch():
    code = "import sys, medtl.io, medtl.cli; assert 'torch' not in sys.modules and 'monai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    version = subprocess.run(
        [sys.executable, "-m", "medtl.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("medtl ")


def test_linked_folders_are_followed_once_and_cycles_end(tmp_path):
    """An archive arranged by date that links to studies stored elsewhere: the linked series is
    scanned; a link back up the tree and a second link to the same study add nothing."""
    store, tree = tmp_path / "store", tmp_path / "by-date"
    write_series(str(store / "s1"), n=5, seed=3)
    (tree / "2026-11-28").mkdir(parents=True)
    os.symlink(store / "s1", tree / "2026-11-28" / "study")
    os.symlink(store / "s1", tree / "2026-11-28" / "same-study-again")
    os.symlink(tree, tree / "2026-11-28" / "loop")  # a cycle
    result = scan(tree, workers=1)
    assert [r["kind"] for r in result.rows] == ["3d"] and result.errors == []
    assert result.n_files == 5  # each file once
