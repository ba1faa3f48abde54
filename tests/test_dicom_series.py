"""DICOM series → volume: order, spacing and world positions from positions alone."""

import os
import shutil

import numpy as np
import pytest
from dicom_factory import oblique_iop, write_series

from medtl.errors import SeriesError
from medtl.io import load_image

MARKS = {(2, 3, 1): 1234.0, (9, 7, 5): -777.0, (0, 0, 0): 555.0, (11, 9, 7): 42.0}


def _assert_marks(img, series, marks=MARKS):
    for (r, c, k), hu in marks.items():
        # medtl axes are (column, row, slice)
        assert img.array[c, r, k] == pytest.approx(hu, abs=1e-3)
        np.testing.assert_allclose(img.world((c, r, k)), series.world_ras(r, c, k), atol=0.01)


def test_axial_shuffled_series_without_extensions(tmp_path):
    s = write_series(str(tmp_path / "ax"), marks=MARKS)
    assert all("." not in os.path.basename(f) for f in s.files)
    img = load_image(tmp_path / "ax")
    assert img.spatial_shape == (10, 12, 8)
    assert img.spacing == pytest.approx((0.6, 0.8, 2.5))  # from positions, not SliceThickness=9
    _assert_marks(img, s)
    np.testing.assert_allclose(img.array.transpose(2, 1, 0), s.hu, atol=1e-3)  # every voxel in HU
    assert not img.meta.get("flags")


def test_oblique_series_world_positions(tmp_path):
    s = write_series(str(tmp_path / "obl"), iop=oblique_iop(20, 15), step=1.7, marks=MARKS, seed=3)
    img = load_image(tmp_path / "obl")
    _assert_marks(img, s)
    assert img.spacing == pytest.approx((0.6, 0.8, 1.7), abs=1e-4)


def test_reversed_normal_direction(tmp_path):
    """Slices stacked against the normal still come out in position order."""
    s = write_series(str(tmp_path / "rev"), step=-3.0, marks=MARKS, seed=1)
    img = load_image(tmp_path / "rev")
    # sorted ascending along the normal: k=0 of the volume is the last written position
    k_of = {k: s.positions.shape[0] - 1 - k for k in range(s.positions.shape[0])}
    for (r, c, k), hu in MARKS.items():
        assert img.array[c, r, k_of[k]] == pytest.approx(hu)
        np.testing.assert_allclose(img.world((c, r, k_of[k])), s.world_ras(r, c, k), atol=0.01)


def test_list_of_files_equals_folder(tmp_path):
    s = write_series(str(tmp_path / "ax"), marks=MARKS)
    a = load_image(tmp_path / "ax")
    b = load_image(list(reversed(s.files)))
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)


def test_rescale_slope_and_intercept(tmp_path):
    s = write_series(str(tmp_path / "sl"), slope=0.5, intercept=-1000.0, marks={(1, 1, 1): 250.5})
    img = load_image(tmp_path / "sl")
    assert img.array[1, 1, 1] == pytest.approx(250.5)
    np.testing.assert_allclose(img.array.transpose(2, 1, 0), s.hu, atol=1e-3)


def test_missing_slice_is_flagged(tmp_path):
    write_series(str(tmp_path / "gap"), n=10, skip=(4,))
    img = load_image(tmp_path / "gap")
    assert "missing_slices" in img.meta["flags"]
    assert "uneven_spacing" in img.meta["flags"]
    assert img.meta["missing_slices"] == 1


def test_gantry_tilt_is_detected_and_positions_stay_exact(tmp_path):
    s = write_series(str(tmp_path / "tilt"), tilt_mm=0.5, marks=MARKS)
    img = load_image(tmp_path / "tilt")
    assert "gantry_tilt" in img.meta["flags"]
    assert img.meta["gantry_tilt_deg"] == pytest.approx(np.degrees(np.arctan2(0.5, 2.5)), abs=0.01)
    _assert_marks(img, s)  # the sheared affine keeps every slice where the scanner put it


def test_duplicate_positions_raise(tmp_path):
    s = write_series(str(tmp_path / "dup"), n=4)
    shutil.copy(s.files[0], tmp_path / "dup" / "copy")
    # a copy has the same SOPInstanceUID; a second echo would differ, position is what matters
    with pytest.raises(SeriesError, match="share a position"):
        load_image(tmp_path / "dup")


def test_two_series_in_one_folder_need_a_choice(tmp_path):
    a = write_series(str(tmp_path / "mix"), n=4, seed=1)
    write_series(str(tmp_path / "mix" / "other"), n=5, seed=2)
    with pytest.raises(SeriesError, match="holds 2 series") as info:
        load_image(tmp_path / "mix")
    assert str(tmp_path / "mix") in str(info.value)
    img = load_image(tmp_path / "mix", series=a.series_uid)
    assert img.spatial_shape[2] == 4
    from medtl.io.phi import pseudonym

    img2 = load_image(tmp_path / "mix", series=pseudonym(a.series_uid, "series"))
    np.testing.assert_array_equal(img.array, img2.array)


def test_mixed_orientation_raises(tmp_path):
    write_series(str(tmp_path / "mo"), n=4)
    s2 = write_series(str(tmp_path / "tmp"), n=1, iop=oblique_iop(30, 0), shuffle=False)
    import pydicom

    ds = pydicom.dcmread(s2.files[0])
    ds.SeriesInstanceUID = pydicom.dcmread(
        os.path.join(tmp_path / "mo", os.listdir(tmp_path / "mo")[0])
    ).SeriesInstanceUID
    ds.save_as(tmp_path / "mo" / "localizer")
    with pytest.raises(SeriesError, match="orientations"):
        load_image(tmp_path / "mo")


def test_empty_folder_raises(tmp_path):
    from medtl.errors import ImageReadError

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    with pytest.raises(ImageReadError, match="no DICOM files"):
        load_image(tmp_path / "empty")
