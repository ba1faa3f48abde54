"""Siemens mosaics: tiles cut into slices at the right positions (single file, and a run of files as 4D)."""

import os

import numpy as np
import pydicom
import pytest
from dicom_factory import DCM2NIIX, NO_DCM2NIIX, dcm2niix_convert, find_value, oblique_iop, write_mosaic_run

from medtl.errors import SeriesError, UnsupportedImageError
from medtl.io import load_image, scan
from medtl.io.mosaic import csa_image_header

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

GEOMETRIES = {
    "axial_ascending": {"iop": (1, 0, 0, 0, 1, 0), "normal_sign": 1.0},
    "oblique_descending": {"iop": tuple(oblique_iop(10, 25)), "normal_sign": -1.0},
}


def _check_marks(vol: np.ndarray, img, s, v: int) -> None:
    """Voxel (row 1, column 2) of tile k of file v lies where the DICOM formula puts true slice k."""
    for k in range(s.hu.shape[1]):
        i, j, kk = find_value(vol, 3000 + 100 * v + k)
        assert (i, j) == (2, 1)
        np.testing.assert_allclose(img.world((i, j, kk)), s.world_ras(1, 2, k), atol=0.01)


def test_csa_header_written_here_reads_back(tmp_path):
    s = write_mosaic_run(str(tmp_path / "m"), n_tiles=5, normal_sign=-1.0)
    csa = csa_image_header(pydicom.dcmread(s.files[0]))
    assert csa["NumberOfImagesInMosaic"] == [5]
    np.testing.assert_allclose(csa["SliceNormalVector"], [0, 0, -1])


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_single_mosaic_is_a_volume_at_the_true_slice_positions(tmp_path, geometry):
    s = write_mosaic_run(str(tmp_path / "m"), n_tiles=5, **GEOMETRIES[geometry])
    img = load_image(s.files[0])
    assert img.array.shape == (4, 6, 5)  # 5 tiles of 6 rows x 4 columns from a 3x3 grid
    assert img.meta["mosaic"] is True and img.meta["n_mosaic_tiles"] == 5
    assert img.spacing == pytest.approx((2.5, 3.0, 3.5))
    assert not img.meta.get("flags")
    _check_marks(img.array, img, s, 0)
    for k in range(5):  # every voxel of every tile
        kk = k if GEOMETRIES[geometry]["normal_sign"] > 0 else 4 - k
        np.testing.assert_allclose(img.array[:, :, kk].T, s.hu[0, k])
    assert load_image(s.folder).array.shape == (4, 6, 5)  # the folder of one mosaic: the same


def test_mosaic_run_is_4d(tmp_path):
    s = write_mosaic_run(str(tmp_path / "run"), n_files=3, n_tiles=5, **GEOMETRIES["oblique_descending"])
    with pytest.raises(SeriesError, match="3 volumes of 5 slice.*'time'.*AcquisitionNumber"):
        load_image(s.folder)
    img = load_image(s.folder, volume="all")
    assert img.array.shape == (3, 4, 6, 5) and img.meta["channel_axis"] == 0
    assert (img.meta["mosaic"], img.meta["n_mosaic_tiles"], img.meta["n_files"]) == (True, 5, 3)
    assert img.meta["repetition_time_s"] == 2.5
    for v in range(3):
        _check_marks(img.array[v], img, s, v)
    one = load_image(s.folder, volume=2)
    np.testing.assert_array_equal(one.array, img.array[2])
    np.testing.assert_allclose(one.affine, load_image(s.files[2]).affine)


def test_mosaic_without_csa_header_is_refused(tmp_path):
    s = write_mosaic_run(str(tmp_path / "m"), csa=False)
    with pytest.raises(UnsupportedImageError, match="MOSAIC image without a Siemens CSA image header") as info:
        load_image(s.files[0])
    assert info.value.path == s.files[0]


def test_scan_describes_mosaics(tmp_path):
    write_mosaic_run(str(tmp_path / "one"), n_tiles=5)
    write_mosaic_run(str(tmp_path / "run"), n_files=3, n_tiles=5, seed=1)
    res = scan(tmp_path, workers=1)
    assert res.errors == []
    rows = {os.path.basename(os.path.dirname(r["path"])) if r["n_files"] == 1 else os.path.basename(r["path"]): r
            for r in res.rows}  # fmt: skip
    assert (rows["one"]["kind"], rows["one"]["shape"], rows["one"]["spacing"]) == ("3d", "4x6x5", "2.5x3x3.5")
    assert (rows["run"]["kind"], rows["run"]["shape"], rows["run"]["volumes"]) == ("4d", "4x6x5x3", 3)


@pytest.mark.skipif(DCM2NIIX is None, reason=NO_DCM2NIIX)
@pytest.mark.parametrize("n_files", [1, 3])
def test_mosaic_matches_dcm2niix(tmp_path, n_files):
    s = write_mosaic_run(str(tmp_path / "src"), n_files=n_files, n_tiles=5, **GEOMETRIES["oblique_descending"])
    ref, _ = dcm2niix_convert(s.folder, str(tmp_path / "out"))
    data = np.asarray(ref.dataobj, dtype=np.float64)
    data = data if data.ndim == 4 else data[..., None]
    ours = load_image(s.folder, volume="all")
    vols = ours.array if n_files > 1 else ours.array[None]
    assert data.shape[3] == n_files == len(vols)
    for v in range(n_files):
        for k in range(5):
            i, j, kk, t = find_value(data, 3000 + 100 * v + k)
            assert t == v
            np.testing.assert_allclose(ref.affine[:3] @ [i, j, kk, 1], s.world_ras(1, 2, k), atol=0.01)
        _check_marks(vols[v], ours, s, v)
        np.testing.assert_allclose(np.sort(data[..., v].ravel()), np.sort(vols[v].ravel()))
