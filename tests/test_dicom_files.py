"""Single DICOM files: pydicom's shipped test files and files written here."""

import numpy as np
import pydicom
import pytest
from dicom_factory import base_dataset, set_pixels
from pydicom.data import get_testdata_file

from medtl.errors import ImageReadError, NotAnImageError, UnsupportedImageError
from medtl.io import load_image, window

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def lps_to_ras(v):
    return np.asarray(v, dtype=float) * np.array([-1.0, -1.0, 1.0])


def test_ct_small_hu_and_world_positions():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    img = load_image(path)
    expected_hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(img.array, expected_hu.T)  # (row, col) → (col, row)
    iop = np.array(ds.ImageOrientationPatient, float)
    dr, dc = map(float, ds.PixelSpacing)
    for r, c in [(0, 0), (10, 100), (127, 5)]:
        lps = np.array(ds.ImagePositionPatient, float) + c * dc * iop[:3] + r * dr * iop[3:]
        np.testing.assert_allclose(img.world((c, r)), lps_to_ras(lps), atol=0.01)
    assert img.meta["modality"] == "CT" and img.meta["geometry"] == "patient"


@pytest.mark.parametrize(
    "variant",
    [
        "MR_small_RLE.dcm",  # RLE lossless
        "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless (OpenJPEG)
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless (CharLS)
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_expb.dcm",
    ],
)
def test_lossless_transfer_syntaxes_decode_identically(variant):
    ref = load_image(get_testdata_file("MR_small.dcm"))
    img = load_image(get_testdata_file(variant))
    np.testing.assert_array_equal(img.array, ref.array)
    np.testing.assert_allclose(img.affine, ref.affine)


@pytest.mark.parametrize("variant", ["SC_rgb_jpeg_gdcm.dcm", "SC_rgb_gdcm_KY.dcm"])  # JPEG lossless (GDCM), JPEG 2000
def test_colour_lossless_codecs(variant):
    ref = load_image(get_testdata_file("SC_rgb_rle.dcm"))
    img = load_image(get_testdata_file(variant))
    assert img.channels == 3 and img.array.shape == (3, 100, 100)
    np.testing.assert_array_equal(img.array, ref.array)


def test_jpeg_baseline_lossy_is_close():
    ref = load_image(get_testdata_file("SC_rgb_rle.dcm"))
    img = load_image(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert np.abs(img.array - ref.array).max() <= 8  # lossy, within JPEG quantisation


def test_jpeg2000_ct_decodes_to_hu():
    path = get_testdata_file("693_J2KI.dcm")
    ds = pydicom.dcmread(path)
    img = load_image(path)
    expected = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(img.array, expected.T)


def test_monochrome1_is_inverted_to_display_polarity():
    path = get_testdata_file("6154")  # 16×16 MONOCHROME1 CR from dicomdirtests
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    img = load_image(path)
    slope, inter = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    hi = (2 ** int(ds.BitsStored) - 1) * slope + inter
    lo = inter
    expected = (lo + hi) - (ds.pixel_array * slope + inter)
    np.testing.assert_allclose(img.array, expected.T, rtol=1e-6)
    # the lowest stored value (most attenuating under MONOCHROME1) is now the brightest
    r, c = np.unravel_index(np.argmin(ds.pixel_array), ds.pixel_array.shape)
    assert img.array[c, r] == img.array.max()
    assert img.meta["inverted"] is True
    # the window centre moved with the values, so windowing still shows the same picture
    assert img.meta["window_center"] == pytest.approx(lo + hi - float(ds.WindowCenter))


def test_monochrome1_written_bone_is_bright(tmp_path):
    """A radiograph stored MONOCHROME1: bone stored low must load bright."""
    ds = base_dataset("DX", sop_class="1.2.840.10008.5.1.4.1.1.1.1")
    ds.PhotometricInterpretation = "MONOCHROME1"
    stored = np.full((20, 30), 3000)
    stored[5:8, 10:20] = 200  # bone: strong attenuation, low stored value in MONOCHROME1
    set_pixels(ds, stored, signed=False, bits=12)
    ds.ImagerPixelSpacing = ["0.15", "0.2"]
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    ds.save_as(tmp_path / "cr", enforce_file_format=True)
    img = load_image(tmp_path / "cr")
    assert img.array[15, 6] > img.array[0, 0]
    assert img.array[15, 6] == pytest.approx(4095 - 200)
    assert img.spacing == pytest.approx((0.2, 0.15))  # (column, row) from ImagerPixelSpacing
    assert img.meta["geometry"] == "detector"
    disp = load_image(tmp_path / "cr", apply_voi=True)
    assert disp.array[15, 6] > 0.9 and disp.array[0, 0] < 0.3
    # DICOM order: VOI LUT on the stored (modality) values, then MONOCHROME1 inverts the output
    np.testing.assert_allclose(disp.array, 1.0 - window(stored.T, 2048, 4096), atol=1e-6)


def test_window_function_matches_dicom_formula():
    x = np.array([-1000.0, 39.5, 40.0, 1000.0])
    y = window(x, center=40, width=400)
    expected = np.clip((x - 39.5) / 399 + 0.5, 0, 1)
    np.testing.assert_allclose(y, expected, atol=1e-6)
    with pytest.raises(ValueError, match="unknown VOI"):
        window(x, 0, 10, function="CUBIC")


def test_rtdose_multiframe_positions_from_grid_offsets():
    path = get_testdata_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    img = load_image(path)
    assert img.spatial_shape == (int(ds.Columns), int(ds.Rows), int(ds.NumberOfFrames))
    iop = np.array(ds.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    offsets = np.array(ds.GridFrameOffsetVector, float)
    dr, dc = map(float, ds.PixelSpacing)
    for r, c, f in [(0, 0, 0), (3, 7, 5), (9, 9, 14)]:
        lps = np.array(ds.ImagePositionPatient, float) + c * dc * iop[:3] + r * dr * iop[3:] + offsets[f] * normal
        k = int(np.argsort(np.argsort(offsets))[f])  # rank of frame f along the normal
        np.testing.assert_allclose(img.world((c, r, k)), lps_to_ras(lps), atol=0.01)
        assert img.array[c, r, k] == pytest.approx(ds.pixel_array[f, r, c] * float(ds.DoseGridScaling), rel=1e-5)


def _enhanced_ct(tmp_path, frame_order):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    n, rows, cols = len(frame_order), 6, 5
    ds = base_dataset("CT", sop_class="1.2.840.10008.5.1.4.1.1.2.1")  # Enhanced CT Image Storage
    iop = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # sagittal
    shared = Dataset()
    pm, po, pvt = Dataset(), Dataset(), Dataset()
    pm.PixelSpacing, pm.SliceThickness = ["0.7", "0.9"], "1.0"
    po.ImageOrientationPatient = iop
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = "1", "-1024", "HU"
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelValueTransformationSequence = Sequence([pvt])
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = "40", "400"
    shared.FrameVOILUTSequence = Sequence([voi])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    origin = np.array([30.0, -20.0, 100.0])
    normal = np.cross(iop[:3], iop[3:])
    stored = np.zeros((n, rows, cols))
    for f, k in enumerate(frame_order):  # frame f holds the slice at depth k
        fg, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [f"{v:.4f}" for v in origin + k * 1.5 * normal]
        fg.PlanePositionSequence = Sequence([pp])
        per.append(fg)
        stored[f] = 1024 + 100 * k + np.arange(rows * cols).reshape(rows, cols)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.NumberOfFrames = n
    set_pixels(ds, stored.reshape(n * rows, cols), signed=False)
    ds.Rows = rows
    ds.save_as(tmp_path / "enh.dcm", enforce_file_format=True)
    return tmp_path / "enh.dcm", origin, normal, iop


def test_enhanced_multiframe_ct_sorted_by_position(tmp_path):
    order = [3, 0, 4, 1, 2]
    path, origin, normal, iop = _enhanced_ct(tmp_path, order)
    img = load_image(path)
    assert img.spatial_shape == (5, 6, 5)
    assert img.spacing == pytest.approx((0.9, 0.7, 1.5))
    assert (img.meta["window_center"], img.meta["window_width"]) == (40.0, 400.0)  # from the functional groups
    for k in range(5):
        for r, c in [(0, 0), (5, 4), (2, 3)]:
            assert img.array[c, r, k] == pytest.approx(100 * k + r * 5 + c)  # HU after the shared rescale
            lps = origin + k * 1.5 * normal + c * 0.9 * np.array(iop[:3]) + r * 0.7 * np.array(iop[3:])
            np.testing.assert_allclose(img.world((c, r, k)), lps_to_ras(lps), atol=0.01)


def test_truncated_file_names_the_file():
    path = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(ImageReadError, match="truncated") as info:
        load_image(path)
    assert info.value.path == path


def test_no_pixel_data():
    with pytest.raises(ImageReadError, match="no pixel data.*RT Plan"):
        load_image(get_testdata_file("rtplan.dcm"))


def test_unsupported_codec_names_the_transfer_syntax():
    path = get_testdata_file("JPGExtended.dcm")
    with pytest.raises(UnsupportedImageError, match="JPEG Extended") as info:
        load_image(path)
    assert path in str(info.value)


def test_not_dicom_and_missing(tmp_path):
    (tmp_path / "fake.dcm").write_text("this is not an image")
    with pytest.raises(NotAnImageError, match="not a recognised image format"):
        load_image(tmp_path / "fake.dcm")
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "nope.dcm")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(NotAnImageError, match="empty"):
        load_image(tmp_path / "empty")


def test_dicom_without_preamble_recognised_by_content(tmp_path):
    """Old archives hold bare implicit-VR datasets: no preamble, no 'DICM', no file meta."""
    from io import BytesIO

    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    src = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(src)
    del ds.file_meta
    buf = DicomFileLike(BytesIO())
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, ds)
    (tmp_path / "bare").write_bytes(buf.parent.getvalue())
    assert open(tmp_path / "bare", "rb").read(2) == b"\x08\x00"  # starts with group 0008
    img = load_image(tmp_path / "bare")
    np.testing.assert_allclose(img.array, load_image(src).array)


def test_malformed_header_value_is_a_read_error_naming_the_file():
    """pydicom's badVR.dcm has NumberOfFrames '1A': a batch must get an ImageReadError naming the
    file, never a bare ValueError (every reader, every malformed value goes through load_image)."""
    path = get_testdata_file("badVR.dcm")
    with pytest.raises(ImageReadError, match=r"badVR\.dcm: malformed file: ValueError: .*.1A."):
        load_image(path)


def test_deflated_transfer_syntax_is_not_mistaken_for_truncation():
    """Deflated Explicit VR Little Endian stores the dataset zlib-compressed, so the file is smaller
    than its pixel data: the size check must not call it truncated (scan and load alike)."""
    from medtl.io import scan

    path = get_testdata_file("image_dfl.dcm")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
    np.testing.assert_array_equal(load_image(path).array.T, ds.pixel_array.astype(np.float32))
    found = scan(path, workers=1)
    assert found.errors == [] and found.rows[0]["shape"] == "512x512"
