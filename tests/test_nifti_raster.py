"""NIfTI (nibabel as the reference), PNG/JPEG/TIFF and NumPy files."""

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from medtl.errors import ImageReadError
from medtl.io import Image, load_image, save_nifti, sniff


def test_nifti_values_and_affine_equal_nibabel():
    path = os.path.join(data_path, "anatomical.nii")
    ref = nib.load(path)
    img = load_image(path)
    np.testing.assert_allclose(img.array, ref.get_fdata(), rtol=1e-6)
    np.testing.assert_allclose(img.affine, ref.affine)
    np.testing.assert_allclose(img.spacing, ref.header.get_zooms()[:3], rtol=1e-6)


def test_nifti_scaling_applied(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nii = nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]))
    nii.header.set_slope_inter(0.5, -10.0)
    nib.save(nii, tmp_path / "s.nii.gz")
    img = load_image(tmp_path / "s.nii.gz")
    np.testing.assert_allclose(img.array, data * 0.5 - 10.0)
    assert img.spacing == (2.0, 3.0, 4.0)


def test_4d_nifti_is_explicit():
    path = os.path.join(data_path, "example4d.nii.gz")
    ref = nib.load(path).get_fdata()
    with pytest.raises(ImageReadError, match="4D NIfTI with .* volumes"):
        load_image(path)
    one = load_image(path, volume=1)
    np.testing.assert_allclose(one.array, ref[..., 1], rtol=1e-6)
    every = load_image(path, volume="all")
    assert every.channels == ref.shape[3] and every.spatial_shape == ref.shape[:3]
    with pytest.raises(ImageReadError, match="out of range"):
        load_image(path, volume=99)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti_is_an_error(tmp_path, suffix):
    good = tmp_path / f"good{suffix}"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 20)).astype(np.float32), np.eye(4)), good)
    data = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        load_image(bad)
    assert str(bad) in str(info.value)


def test_nifti_recognised_without_extension(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    os.rename(tmp_path / "a.nii.gz", tmp_path / "volume_noext")
    assert sniff(tmp_path / "volume_noext") == "nifti"
    assert load_image(tmp_path / "volume_noext").spatial_shape == (3, 3, 3)


def test_save_nifti_2d_and_rgb(tmp_path):
    img = Image(np.arange(12, dtype=np.float32).reshape(4, 3), np.diag([0.5, 0.25, 1.0, 1.0]))
    back = nib.load(save_nifti(img, tmp_path / "a.nii"))
    assert back.shape == (4, 3, 1)
    np.testing.assert_array_equal(back.get_fdata()[..., 0], img.array)
    rgb = Image(np.zeros((3, 4, 5), np.float32), np.eye(4), {"channel_axis": 0})
    assert nib.load(save_nifti(rgb, tmp_path / "b.nii.gz")).shape == (4, 5, 1, 3)


def test_png_8_and_16_bit(tmp_path):
    from PIL import Image as PILImage

    rows8 = np.random.default_rng(1).integers(0, 255, (7, 9), dtype=np.uint8)
    PILImage.fromarray(rows8).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(img.array, rows8.T)  # (column, row) axis order, like MONAI
    assert "spacing_unknown" in img.meta["flags"]
    rows16 = np.random.default_rng(2).integers(0, 65535, (7, 9)).astype(np.uint16)
    PILImage.fromarray(rows16).save(tmp_path / "b.png")
    np.testing.assert_array_equal(load_image(tmp_path / "b.png").array, rows16.T.astype(np.float32))


def test_gray_png_saved_as_rgb_is_one_channel(tmp_path):
    from PIL import Image as PILImage

    g = np.random.default_rng(3).integers(0, 255, (5, 6), dtype=np.uint8)
    PILImage.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "g.jpg", quality=100, subsampling=0)
    PILImage.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.channels == 1 and img.meta["gray_from_rgb"]
    colour = np.random.default_rng(4).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    PILImage.fromarray(colour).save(tmp_path / "c.png")
    c = load_image(tmp_path / "c.png")
    assert c.channels == 3
    np.testing.assert_array_equal(c.array[1], colour[..., 1].T)
    assert load_image(tmp_path / "g.jpg").spatial_shape == (6, 5)


def test_tiff_16_bit(tmp_path):
    import tifffile

    rows = np.random.default_rng(5).integers(0, 60000, (8, 11)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", rows)
    np.testing.assert_array_equal(load_image(tmp_path / "t.tif").array, rows.T)


def test_numpy_files(tmp_path):
    vol = np.random.default_rng(6).random((4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "v.npy", vol)
    np.testing.assert_array_equal(load_image(tmp_path / "v.npy").array, vol)
    aff = np.diag([0.5, 0.5, 2.0, 1.0])
    np.savez(tmp_path / "v.npz", image=vol, affine=aff)
    img = load_image(tmp_path / "v.npz")
    np.testing.assert_array_equal(img.affine, aff)
    np.savez(tmp_path / "two.npz", a=vol, b=vol)
    with pytest.raises(ImageReadError, match="pick one with key="):
        load_image(tmp_path / "two.npz")
    np.testing.assert_array_equal(load_image(tmp_path / "two.npz", key="b").array, vol)


def test_corrupt_png_is_an_error(tmp_path):
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((50, 50), np.uint8) + 7).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(data[:40])
    with pytest.raises(ImageReadError, match="bad.png"):
        load_image(tmp_path / "bad.png")


def test_gzip_garbage_is_not_an_image(tmp_path):
    with gzip.open(tmp_path / "x.gz", "wb") as fh:
        fh.write(b"hello world" * 100)
    assert sniff(tmp_path / "x.gz") is None
