"""Uneven slice spacing named for what it is: a missing slice, a change of spacing, or irregular."""

import numpy as np
import pytest
from dicom_factory import write_series

from medtl.io import load_image, scan
from medtl.io.geometry import spacing_pattern

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TWO_RECONSTRUCTIONS = np.concatenate([np.arange(40) * 1.25, 48.75 + 2.5 + np.arange(40) * 2.5])


def test_spacing_change_is_not_missing_slices(tmp_path):
    write_series(str(tmp_path / "ct"), offsets=TWO_RECONSTRUCTIONS, rows=4, cols=3)
    img = load_image(tmp_path / "ct")
    assert img.spatial_shape == (3, 4, 80)
    assert img.meta["flags"] == ["uneven_spacing", "spacing_change"]
    assert "missing_slices" not in img.meta
    assert img.meta["spacing_segments"] == [
        {"first_slice": 0, "last_slice": 39, "spacing_mm": 1.25},
        {"first_slice": 39, "last_slice": 79, "spacing_mm": 2.5},
    ]
    row = scan(tmp_path, workers=1).rows[0]
    assert row["flags"] == "uneven_spacing;spacing_change"  # the scan says the same


def test_missing_slice_keeps_its_flag_and_count(tmp_path):
    write_series(str(tmp_path / "gap"), n=12, skip=(5,), rows=4, cols=3)
    img = load_image(tmp_path / "gap")
    assert img.meta["flags"] == ["uneven_spacing", "missing_slices"]
    assert img.meta["missing_slices"] == 1 and "spacing_segments" not in img.meta
    assert scan(tmp_path, workers=1).rows[0]["flags"] == "uneven_spacing;missing_slices"


def test_missing_slice_inside_a_spacing_change(tmp_path):
    offsets = np.delete(TWO_RECONSTRUCTIONS, 60)  # one 2.5 mm slice lost
    write_series(str(tmp_path / "both"), offsets=offsets, rows=4, cols=3)
    img = load_image(tmp_path / "both")
    assert img.meta["flags"] == ["uneven_spacing", "missing_slices", "spacing_change"]
    assert img.meta["missing_slices"] == 1
    assert [s["spacing_mm"] for s in img.meta["spacing_segments"]] == [1.25, 2.5]


@pytest.mark.parametrize(
    "gaps, flags",
    [
        ([2.0] * 5, []),
        ([2.0, 2.0, 6.0, 2.0, 2.0], ["uneven_spacing", "missing_slices"]),  # two slices missing
        ([2.0, 2.0, 3.1, 2.0, 2.0], ["uneven_spacing"]),  # not a multiple: irregular
        ([1.0, 1.0, 2.0, 2.0, 1.0, 1.0], ["uneven_spacing"]),  # two odd steps: too short to be a spacing
        ([1.0] * 4 + [1.7] + [2.0] * 4, ["uneven_spacing", "spacing_change"]),  # one odd step between spacings
        ([1.0] * 4 + [1.7, 1.9] + [2.0] * 4, ["uneven_spacing"]),
    ],
)
def test_spacing_patterns(gaps, flags):
    assert spacing_pattern(gaps)[0] == flags
