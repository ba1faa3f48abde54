"""Non-image DICOM objects (DICOMDIR, reports, key objects, presentation states) among image files."""

import numpy as np
import pytest
from dicom_factory import base_dataset, write_non_image_objects, write_series
from pydicom.data import get_testdata_file

from medtl.errors import ImageReadError, NonImageObjectError, NotAnImageError
from medtl.io import load_image, scan

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def ct_with_objects(tmp_path):
    s = write_series(str(tmp_path / "ct"), n=6, marks={(2, 3, 1): 1500.0})
    objects = write_non_image_objects(str(tmp_path / "ct"), series_uid=s.series_uid)
    return s, objects


def test_series_folder_loads_and_skips_non_image_objects(ct_with_objects):
    s, objects = ct_with_objects
    img = load_image(s.folder)
    assert img.spatial_shape == (10, 12, 6)
    assert img.meta["skipped_non_image"] == 4  # DICOMDIR, SR, KO (same series UID as the CT), PR
    assert img.array[3, 2, 1] == pytest.approx(1500.0)
    np.testing.assert_allclose(img.world((3, 2, 1)), s.world_ras(2, 3, 1), atol=0.01)
    listed = load_image(s.files + list(objects.values()))  # a list of files behaves the same
    np.testing.assert_array_equal(listed.array, img.array)


@pytest.mark.parametrize(
    "kind, sop_name", [("dicomdir", "Media Storage Directory"), ("sr", "Basic Text SR"),
                       ("ko", "Key Object Selection"), ("pr", "Grayscale Softcopy Presentation State")],
)  # fmt: skip
def test_each_object_alone_is_a_typed_error_naming_file_and_class(ct_with_objects, kind, sop_name):
    _, objects = ct_with_objects
    with pytest.raises(NonImageObjectError, match=sop_name) as info:
        load_image(objects[kind])
    assert isinstance(info.value, NotAnImageError)
    assert info.value.path == objects[kind]
    assert "non-image DICOM object" in info.value.reason


def test_rt_plan_is_a_non_image_object():
    with pytest.raises(NonImageObjectError, match="no pixel data.*RT Plan Storage"):
        load_image(get_testdata_file("rtplan.dcm"))


def test_image_sop_class_without_pixels_is_still_broken(tmp_path):
    ds = base_dataset("CT")
    ds.Rows, ds.Columns = 4, 4
    ds.save_as(tmp_path / "stripped", enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"no pixel data \(CT Image Storage\)") as info:
        load_image(tmp_path / "stripped")
    assert not isinstance(info.value, NonImageObjectError)


def test_folder_of_only_non_image_objects_raises_clearly(tmp_path):
    write_non_image_objects(str(tmp_path / "reports"))
    with pytest.raises(NonImageObjectError, match="holds no image, only 4 non-image DICOM object") as info:
        load_image(tmp_path / "reports")
    assert info.value.path == str(tmp_path / "reports")


def test_scan_skips_non_image_objects_without_error_rows(ct_with_objects, tmp_path):
    s, _ = ct_with_objects
    res = scan(tmp_path, workers=1)
    assert res.errors == []
    assert res.skipped == 4
    assert [(r["path"], r["kind"], r["n_files"]) for r in res.rows] == [(s.folder, "3d", 6)]
    assert "4 non-image files skipped" in res.summary()


def test_private_non_image_class_is_skipped_too(tmp_path):
    """Vendors' private objects (here Siemens' CSA non-image storage) hold no pixels either."""
    s = write_series(str(tmp_path / "mr"), n=3)
    ds = base_dataset("MR", sop_class="1.3.12.2.1107.5.9.1", series_uid=s.series_uid)
    ds.save_as(tmp_path / "mr" / "csa_non_image", enforce_file_format=True)
    with pytest.raises(NonImageObjectError, match="unknown or private SOP class, SOP class 1.3.12.2.1107.5.9.1"):
        load_image(tmp_path / "mr" / "csa_non_image")
    assert load_image(tmp_path / "mr").meta["skipped_non_image"] == 1


def test_an_image_cut_off_inside_its_header_is_an_error_not_a_skipped_object(tmp_path):
    """Cut inside the SOPClassUID value, a CT file holds a stub class; the file meta still says CT."""
    s = write_series(str(tmp_path / "ct"), n=3)
    data = open(s.files[0], "rb").read()
    cut = data.index(b"1.2.840.10008.5.1.4.1.1.2", data.index(b"DICM") + 200) + 20  # inside the dataset's UID
    (tmp_path / "ct" / "cut").write_bytes(data[:cut])
    res = scan(tmp_path / "ct", workers=1)
    assert [e["path"] for e in res.errors] == [str(tmp_path / "ct" / "cut")] and res.skipped == 0
    assert "no pixel data (CT Image Storage): an image object without its pixels" in res.errors[0]["reason"]
