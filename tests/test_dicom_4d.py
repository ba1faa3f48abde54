"""4D DICOM: fMRI-like and diffusion series (classic files) and an enhanced multi-frame time series."""

import os

import numpy as np
import pytest
from dicom_factory import (
    DCM2NIIX,
    NO_DCM2NIIX,
    dcm2niix_convert,
    find_value,
    oblique_iop,
    write_4d_series,
    write_enhanced_mr_timeseries,
)  # fmt: skip

from medtl.cli import main
from medtl.errors import SeriesError
from medtl.io import load_image, scan

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _check_volume(vol, s, v, atol=0.01):
    """Every voxel of ``vol`` (i, j, k) is slice k of volume v, at the DICOM formula's positions."""
    np.testing.assert_allclose(vol.transpose(2, 1, 0), s.hu[v], atol=1e-3)


def _check_world(img, s):
    for k in range(len(s.positions)):
        for r, c in [(1, 2), (0, 0), (s.hu.shape[2] - 1, s.hu.shape[3] - 1)]:
            np.testing.assert_allclose(img.world((c, r, k)), s.world_ras(r, c, k), atol=0.01)


@pytest.fixture
def fmri(tmp_path):
    return write_4d_series(str(tmp_path / "fmri"), n_volumes=4, n=5, iop=tuple(oblique_iop(15, 30)), seed=1)


def test_4d_without_volume_names_volumes_slices_axis_and_option(fmri):
    with pytest.raises(SeriesError) as info:
        load_image(fmri.folder)
    reason = info.value.reason
    for part in ("4 volumes", "5 slice(s)", "'time'", "TemporalPositionIdentifier", "volume=<index>", "volume='all'"):
        assert part in reason
    assert info.value.path == fmri.folder


def test_fmri_all_volumes_in_acquisition_order_with_exact_geometry(fmri):
    img = load_image(fmri.folder, volume="all")
    assert img.array.shape == (4, 6, 8, 5)
    assert img.meta["channel_axis"] == 0 and img.spatial_shape == (6, 8, 5)
    assert (img.meta["n_volumes"], img.meta["slices_per_volume"], img.meta["volume_axis"]) == (4, 5, "time")
    assert img.meta["repetition_time_s"] == 2.0 and img.meta["n_files"] == 20
    for v in range(4):
        _check_volume(img.array[v], fmri, v)
    _check_world(img, fmri)


def test_one_volume_is_what_its_files_alone_give(fmri):
    for v in (0, 2):
        one = load_image(fmri.folder, volume=v)
        alone = load_image([fmri.file_of[v, k] for k in range(5)])
        assert one.meta["volume"] == v and one.meta["n_volumes"] == 4
        np.testing.assert_array_equal(one.array, alone.array)
        np.testing.assert_allclose(one.affine, alone.affine, atol=1e-9)
    every = load_image(fmri.folder, volume="all")
    np.testing.assert_array_equal(every.array[3], load_image(fmri.folder, volume=3).array)
    with pytest.raises(SeriesError, match="volume 4 out of range: the series holds 4 volumes"):
        load_image(fmri.folder, volume=4)


def test_acquisition_number_alone_tells_volumes_apart(tmp_path):
    s = write_4d_series(str(tmp_path / "siemens_like"), n_volumes=3, temporal_position=False, seed=4)
    img = load_image(s.folder, volume="all")
    assert img.meta["volume_key"] == "AcquisitionNumber" and img.meta["volume_axis"] == "time"
    for v in range(3):
        _check_volume(img.array[v], s, v)


def test_diffusion_b_values_and_gradients_in_ras(tmp_path):
    grads = [None, (1.0, 0.0, 0.0), (0.0, 0.6, 0.8), (0.0, 0.0, -1.0), (0.48, 0.6, 0.64)]
    s = write_4d_series(str(tmp_path / "dwi"), kind="diffusion", n_volumes=5, b_values=[0, 1000, 1000, 2000, 1000],
                        gradients=grads, iop=tuple(oblique_iop(20, 15)), seed=2)  # fmt: skip
    img = load_image(s.folder, volume="all")
    assert img.meta["volume_axis"] == "diffusion" and img.meta["volume_key"] == "diffusion"
    assert img.meta["b_values"] == [0, 1000, 1000, 2000, 1000]  # acquisition order
    assert img.meta["gradient_frame"] == "RAS+ patient"
    assert img.meta["gradients"][0] is None
    for got, lps in zip(img.meta["gradients"][1:], grads[1:], strict=True):
        np.testing.assert_allclose(got, np.array(lps) * [-1, -1, 1], atol=1e-6)
    for v in range(5):
        _check_volume(img.array[v], s, v)
    _check_world(img, s)


def test_ge_private_b_value_with_bias_and_repeated_b0(tmp_path):
    s = write_4d_series(str(tmp_path / "ge"), kind="diffusion", n_volumes=5, b_values=[0, 1000, 0, 1000, 1000],
                        ge_private=True, manufacturer="GE MEDICAL SYSTEMS", seed=3)  # fmt: skip
    img = load_image(s.folder, volume="all")
    assert img.meta["b_values"] == [0, 1000, 0, 1000, 1000]  # 1e9 bias removed
    assert (img.meta["volume_axis"], img.meta["volume_key"]) == ("diffusion", "InstanceNumber")
    for v in range(5):
        _check_volume(img.array[v], s, v)
    # the same private tag from another vendor means something else: not read as a b-value
    other = write_4d_series(str(tmp_path / "other"), kind="diffusion", n_volumes=3, b_values=[0, 1000, 0],
                            ge_private=True, manufacturer="OtherVendor", seed=3)  # fmt: skip
    meta = load_image(other.folder, volume="all").meta
    assert meta["volume_axis"] == "volume" and "b_values" not in meta


def test_echoes_and_echoes_of_repeated_volumes(tmp_path):
    s = write_4d_series(str(tmp_path / "me"), kind="echo", n_volumes=3, echoes=3, seed=6)
    img = load_image(s.folder, volume="all")
    assert (img.meta["volume_axis"], img.meta["volume_key"], img.meta["echo_times_ms"]) == (
        "echo", "EchoTime", [10.0, 20.0, 30.0])  # fmt: skip
    for v in range(3):
        _check_volume(img.array[v], s, v)
    mixed = write_4d_series(str(tmp_path / "me_fmri"), kind="echo", n_volumes=6, echoes=2, seed=7)
    with pytest.raises(SeriesError, match="vary along more than one axis: EchoTime takes 2 values"):
        load_image(mixed.folder, volume="all")


def test_unequal_repeats_are_refused_clearly(fmri):
    os.remove(fmri.file_of[2, 3])
    with pytest.raises(SeriesError) as info:
        load_image(fmri.folder, volume="all")
    reason = info.value.reason
    assert "repeat unequally" in reason and "4 position(s) × 4, 1 position(s) × 3" in reason
    assert "by TemporalPositionIdentifier: 1 → 5 slices, 2 → 5 slices, 3 → 4 slices, 4 → 5 slices" in reason


def test_enhanced_multiframe_time_series(tmp_path):
    s = write_enhanced_mr_timeseries(str(tmp_path / "enh.dcm"), n_time=3, n=4)
    with pytest.raises(SeriesError, match="3 volumes of 4 slice.*'time'.*volume="):
        load_image(s.files[0])
    img = load_image(s.files[0], volume="all")
    assert img.array.shape == (3, 5, 6, 4)
    assert (img.meta["volume_key"], img.meta["repetition_time_s"]) == ("TemporalPositionIndex", 1.5)
    for t in range(3):
        _check_volume(img.array[t], s, t)
    _check_world(img, s)
    one = load_image(s.files[0], volume=1)
    np.testing.assert_array_equal(one.array, img.array[1])
    np.testing.assert_allclose(one.affine, img.affine)


def test_scan_lists_4d_series_with_volume_count(fmri, tmp_path):
    write_enhanced_mr_timeseries(str(tmp_path / "enh.dcm"), n_time=3, n=4)
    res = scan(tmp_path, workers=1)
    assert res.errors == []
    rows = {os.path.basename(r["path"]): r for r in res.rows}
    assert (rows["fmri"]["kind"], rows["fmri"]["shape"], rows["fmri"]["volumes"], rows["fmri"]["n_files"]) == (
        "4d", "6x8x5x4", 4, 20)  # fmt: skip
    assert rows["fmri"]["spacing"] == "2.5x2x3"
    assert (rows["enh.dcm"]["kind"], rows["enh.dcm"]["shape"], rows["enh.dcm"]["volumes"]) == ("4d", "5x6x4x3", 3)
    img = load_image(rows["fmri"]["path"], series=rows["fmri"]["series"], volume="all")
    assert img.array.shape[0] == rows["fmri"]["volumes"]


def test_cli_volume_option(fmri, tmp_path, capsys):
    out = tmp_path / "fmri.nii.gz"
    assert main(["convert", fmri.folder, str(out), "--volume", "all"]) == 0
    import nibabel as nib

    assert nib.load(out).shape == (6, 8, 5, 4)
    assert main(["info", fmri.folder, "--volume", "1"]) == 0
    assert "volume: 1" in capsys.readouterr().out
    assert main(["info", fmri.folder]) == 1
    assert "volume=<index>" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["info", fmri.folder, "--volume", "first"])
    assert "expected a volume index" in capsys.readouterr().err


def _fsl_bvec(gradient_ras, affine):
    """A RAS+ direction in dcm2niix's bvec frame: image axes, x negated when the affine keeps handedness."""
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    vec = rot.T @ np.asarray(gradient_ras)
    return vec * ([-1, 1, 1] if np.linalg.det(rot) > 0 else [1, 1, 1])


@pytest.mark.skipif(DCM2NIIX is None, reason=NO_DCM2NIIX)
@pytest.mark.parametrize("kind", ["time", "diffusion", "enhanced"])
def test_4d_matches_dcm2niix(tmp_path, kind):
    if kind == "enhanced":
        s = write_enhanced_mr_timeseries(str(tmp_path / "src" / "enh.dcm"), n_time=3, n=4,
                                         manufacturer="Philips Medical Systems")  # fmt: skip
        ours = load_image(s.files[0], volume="all")
    else:
        s = write_4d_series(str(tmp_path / "src"), kind=kind, n_volumes=4, iop=tuple(oblique_iop(20, 15)),
                            manufacturer="Hitachi", seed=5)  # fmt: skip
        ours = load_image(s.folder, volume="all")
    ref, bvals = dcm2niix_convert(str(tmp_path / "src"), str(tmp_path / "out"))
    data = np.asarray(ref.dataobj, dtype=np.float64)
    assert data.shape[3] == ours.meta["n_volumes"] == s.hu.shape[0]
    for v in range(s.hu.shape[0]):
        for k in range(s.hu.shape[1]):
            i, j, kk, t = find_value(data, 3000 + 100 * v + k)
            assert t == v  # the same volume order
            np.testing.assert_allclose(ref.affine[:3] @ [i, j, kk, 1], s.world_ras(1, 2, k), atol=0.01)
            np.testing.assert_allclose(ours.world((2, 1, k)), s.world_ras(1, 2, k), atol=0.01)
        np.testing.assert_allclose(np.sort(data[..., v].ravel()), np.sort(ours.array[v].ravel()), atol=1e-3)
    if kind == "diffusion":
        assert bvals == ours.meta["b_values"]
        bvecs = np.loadtxt(tmp_path / "out" / "ref.bvec")
        for v, g in enumerate(ours.meta["gradients"]):
            if g is not None:
                np.testing.assert_allclose(_fsl_bvec(g, ref.affine), bvecs[:, v], atol=1e-3)
