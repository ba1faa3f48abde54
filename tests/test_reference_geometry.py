"""Geometry against independent references: dcm2niix's conversion and nibabel's reading."""

import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import oblique_iop, write_series

from medtl.io import load_image, save_nifti

# values outside the random background (-900..900) so each mark is unique in the volume
UNIQUE_MARKS = {(2, 3, 1): 1500.0, (9, 7, 5): 1600.0, (0, 9, 0): 1700.0, (11, 0, 7): 1800.0}


def _world_of_value(nii, value):
    data = np.asarray(nii.dataobj, dtype=np.float64)
    idx = np.argwhere(np.isclose(data, value))
    assert len(idx) == 1, f"value {value} found {len(idx)} times"
    return (nii.affine @ np.append(idx[0][:3], 1.0))[:3]


@pytest.mark.parametrize("iop", [(1, 0, 0, 0, 1, 0), tuple(oblique_iop(20, 15)), tuple(oblique_iop(-35, 50))])
def test_round_trip_through_nifti_keeps_world_positions(tmp_path, iop):
    s = write_series(str(tmp_path / "s"), iop=iop, marks=UNIQUE_MARKS, step=1.3)
    img = load_image(tmp_path / "s")
    out = save_nifti(img, tmp_path / "s.nii.gz")
    nii = nib.load(out)
    assert nii.header["sform_code"] == 1 and nii.header["qform_code"] == 1
    for (r, c, k), value in UNIQUE_MARKS.items():
        np.testing.assert_allclose(_world_of_value(nii, value), s.world_ras(r, c, k), atol=0.01)


dcm2niix = shutil.which("dcm2niix")


@pytest.mark.skipif(dcm2niix is None, reason="dcm2niix not installed (.ci/run installs it: apt-get install dcm2niix)")
@pytest.mark.parametrize("iop", [(1, 0, 0, 0, 1, 0), tuple(oblique_iop(20, 15))])
def test_matches_dcm2niix(tmp_path, iop):
    s = write_series(str(tmp_path / "dcm"), iop=iop, marks=UNIQUE_MARKS, step=2.0, n=8)
    out = tmp_path / "nii"
    out.mkdir()
    subprocess.run(
        [dcm2niix, "-z", "n", "-f", "ref", "-o", str(out), str(tmp_path / "dcm")], check=True, capture_output=True
    )
    ref = nib.load(out / "ref.nii")
    img = load_image(tmp_path / "dcm")
    for (r, c, k), value in UNIQUE_MARKS.items():
        ours = img.world((c, r, k))
        np.testing.assert_allclose(_world_of_value(ref, value), ours, atol=0.01)
        np.testing.assert_allclose(ours, s.world_ras(r, c, k), atol=0.01)
    # same voxel size and the same volume of data
    np.testing.assert_allclose(sorted(ref.header.get_zooms()[:3]), sorted(img.spacing), atol=1e-4)
    np.testing.assert_allclose(
        np.sort(np.asarray(ref.dataobj, np.float64).ravel()), np.sort(img.array.ravel()), atol=1e-3
    )
