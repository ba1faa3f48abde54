"""Colour images: one rule for grey-or-colour, the run's channel count, conversions, and a task
whose only signal is colour."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from medtl.data.channels import decide_channels
from medtl.data.manifest import read_manifest
from medtl.data.transforms import PreprocessSpec, preprocess
from medtl.errors import ConfigError
from medtl.io import load_image, probe_colour
from medtl.io.colour import GRAY_TOLERANCE, colour_mode
from medtl.models.registry import IMAGENET_MEAN, IMAGENET_STD


def _grey(seed=0, shape=(40, 48)):
    return np.random.default_rng(seed).integers(20, 230, shape).astype(np.uint8)


@pytest.fixture()
def files(tmp_path):
    """One file of every colour layout a radiograph or photo collection holds."""
    g = _grey()
    paths = {}
    PILImage.fromarray(g).save(paths.setdefault("gray_png", tmp_path / "gray.png"))
    rgb = np.stack([g, g, g], -1)
    PILImage.fromarray(rgb).save(paths.setdefault("rgb_equal_png", tmp_path / "rgb_equal.png"))
    near = rgb.astype(np.int16)
    near[..., 0] += 3  # a tinted export: R three levels above G and B
    near[..., 2] -= 2
    PILImage.fromarray(np.clip(near, 0, 255).astype(np.uint8)).save(paths.setdefault("near_png", tmp_path / "near.png"))
    PILImage.fromarray(rgb).save(paths.setdefault("gray_jpeg", tmp_path / "gray.jpg"), quality=75)
    rgba = np.concatenate([rgb, np.full(g.shape + (1,), 255, np.uint8)], -1)
    PILImage.fromarray(rgba, "RGBA").save(paths.setdefault("rgba_png", tmp_path / "rgba.png"))
    PILImage.fromarray(g).convert("P").save(paths.setdefault("palette_png", tmp_path / "palette.png"))
    photo = np.stack([g, np.roll(g, 7, axis=0), 255 - g], -1)  # real colour: channels disagree everywhere
    PILImage.fromarray(photo).save(paths.setdefault("colour_png", tmp_path / "colour.png"))
    PILImage.fromarray(photo).save(paths.setdefault("colour_jpeg", tmp_path / "colour.jpg"), quality=90)
    return paths, g, photo


EXPECTED = {
    "gray_png": "gray", "rgb_equal_png": "gray-rgb", "near_png": "gray-rgb", "gray_jpeg": "gray-rgb",
    "rgba_png": "gray-rgb", "palette_png": "gray-rgb", "colour_png": "rgb", "colour_jpeg": "rgb",
}  # fmt: skip


def test_every_layout_gets_one_colour_mode_from_the_loader_and_the_probe(files):
    paths, g, _ = files
    for name, expected in EXPECTED.items():
        img = load_image(paths[name])
        assert img.meta["colour"] == expected, name
        assert img.channels == (3 if expected == "rgb" else 1), name
        assert probe_colour(paths[name]) == expected, name  # the run's rule sees what the loader gives
    # grey stored with equal channels stays exact; a tinted one becomes its BT.601 luma
    np.testing.assert_array_equal(load_image(paths["rgb_equal_png"]).array, g.T.astype(np.float32))
    near = np.asarray(PILImage.open(paths["near_png"]), dtype=np.float64)
    luma = 0.299 * near[..., 0] + 0.587 * near[..., 1] + 0.114 * near[..., 2]
    np.testing.assert_allclose(load_image(paths["near_png"]).array, luma.T, atol=1e-3)


def test_the_grey_rule_tolerates_a_few_levels_and_a_small_coloured_mark():
    g = _grey(1, (100, 100)).astype(np.float32)
    rgb = np.stack([g, g, g])
    rgb[0, :10, :5] = 255  # a red burned-in marker on 0.5 % of the pixels
    rgb[1, :10, :5] = 0
    assert colour_mode(rgb, 255.0)[0] == "gray"
    tinted = np.stack([g + 12, g, g])  # 12 levels everywhere: beyond the tolerance, a real tint
    assert 12 / 255 > GRAY_TOLERANCE and colour_mode(tinted, 255.0)[0] == "rgb"


def test_channel_rule_is_the_majority_of_training_images(files, tmp_path):
    paths, _, _ = files

    def manifest(names):
        path = tmp_path / f"m{len(names)}{names[0]}.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label"])
            w.writerows([[str(paths[n]), i % 2] for i, n in enumerate(names)])
        return read_manifest(path)

    # a radiograph collection: grey PNGs, JPEGs whose grey decodes as RGB, one colour image
    mixed = manifest(["gray_png", "gray_jpeg", "near_png", "palette_png", "colour_png"])
    decision = decide_channels(mixed, range(5))
    assert decision.channels == 1 and decision.counts == {"gray": 1, "gray-rgb": 3, "rgb": 1}
    assert "1 colour and 4 grey" in decision.rule
    photos = manifest(["colour_png", "colour_jpeg", "gray_png"])
    assert decide_channels(photos, range(3)).channels == 3
    assert decide_channels(photos, range(3), 1).channels == 1  # the config's number wins
    assert decide_channels(photos, range(3), preset="ct", windows=("lung", "bone")).channels == 2
    with pytest.raises(ConfigError, match="one channel per window"):
        decide_channels(photos, range(3), 3, preset="ct", windows=("lung",))
    with pytest.raises(ConfigError, match="auto or a positive number"):
        decide_channels(photos, range(3), 0)


def test_grey_into_a_colour_run_is_tiled_and_colour_into_a_grey_run_is_luma(files):
    paths, g, photo = files
    spec = PreprocessSpec(preset="colour", size=(40, 48), input_channels=3)
    tiled = preprocess(load_image(paths["gray_png"]), spec)
    assert tiled.shape == (3, 40, 48)
    np.testing.assert_array_equal(tiled[0], tiled[1]), np.testing.assert_array_equal(tiled[0], tiled[2])
    np.testing.assert_allclose(tiled[0], g / 255.0, atol=1e-6)  # 8-bit full scale, no percentiles
    grey_run = preprocess(load_image(paths["colour_png"]), PreprocessSpec(preset="none", size=(40, 48), input_channels=1))
    expected = np.asarray(PILImage.fromarray(photo).convert("L"), dtype=np.float32)  # Pillow's own ITU-R 601 luma
    assert grey_run.shape == (1, 40, 48)
    np.testing.assert_allclose(grey_run[0], expected, atol=0.51)  # Pillow rounds to integers


def test_colour_preset_keeps_imagenet_statistics_per_channel():
    from medtl.io import Image

    red = np.zeros((3, 4, 4), np.float32)
    red[0] = 255.0
    spec = PreprocessSpec(preset="colour", size=(4, 4), input_channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out = preprocess(Image(red, np.eye(4), {"channel_axis": 0, "full_scale": 255.0}), spec)
    expected = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1],
                -IMAGENET_MEAN[2] / IMAGENET_STD[2]]  # fmt: skip
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-5)
    per_channel = preprocess(
        Image(red + np.arange(16, dtype=np.float32).reshape(4, 4), np.eye(4), {"channel_axis": 0}),
        PreprocessSpec(preset="colour", size=(4, 4), input_channels=3, intensity_range="percentiles",
                       percentiles=(0, 100)),
    )  # fmt: skip
    assert per_channel.min() == 0.0 and per_channel.max() == 1.0 and per_channel[0].max() == 1.0
    with pytest.raises(ConfigError, match="image has 4 channels and the run takes 3"):
        preprocess(Image(np.zeros((4, 4, 4), np.float32), np.eye(4), {"channel_axis": 0}), spec)


def test_three_channel_model_keeps_the_pretrained_rgb_kernels():
    import torch

    from medtl.models import create
    from medtl.models.loading import pretrained_state
    from medtl.models.registry import get_source

    model = create("efficientnet-lite0", "imagenet", in_channels=3, num_classes=2)
    raw = pretrained_state(get_source("efficientnet-lite0.imagenet"), model.encoder.state_dict())
    torch.testing.assert_close(model.encoder._conv_stem.weight, raw["_conv_stem.weight"], rtol=0, atol=0)


def _disc_npz(path, n_per_split=(96, 48, 48), seed=0):
    """A red or a green disc on grey, of equal BT.601 luma (≈130): only colour tells them apart."""
    rng = np.random.default_rng(seed)
    red, green = np.array([200, 100, 100]), np.array([100, 151, 100])
    yy, xx = np.mgrid[:28, :28]
    arrays = {}
    for split, n in zip(("train", "val", "test"), n_per_split, strict=True):
        y = np.arange(n) % 2
        x = np.full((n, 28, 28, 3), 128.0)
        for i in range(n):
            cy, cx, r = rng.integers(9, 19), rng.integers(9, 19), rng.integers(4, 8)
            x[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = green if y[i] else red
        x += rng.normal(0, 6, x.shape)
        arrays[f"{split}_images"] = np.clip(x, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = y[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return arrays


def test_a_task_whose_only_signal_is_colour_is_learnt(tmp_path):
    import json

    from medtl.cli import main
    from medtl.io.colour import luma

    arrays = _disc_npz(tmp_path / "discs.npz")
    # no grey pipeline can do this: the two discs have the same luma
    imgs, labels = arrays["test_images"].astype(np.float32), arrays["test_labels"][:, 0]
    grey = np.stack([luma(np.moveaxis(im, -1, 0)) for im in imgs])
    assert abs(grey[labels == 1].mean() - grey[labels == 0].mean()) < 0.5
    run, out = tmp_path / "run", tmp_path / "eval"
    shipped = Path(__file__).resolve().parents[1] / "configs" / "medmnist-npz.yaml"
    assert main(["train", str(shipped), "-o", str(run), "--set", f"npz={tmp_path / 'discs.npz'}",
                 "--set", "size=28", "--set", "epochs=8", "--set", "batch_size=32",
                 "--set", "saliency_check=0"]) == 0  # fmt: skip
    spec = json.loads((run / "preprocess.json").read_text())
    assert spec["input_channels"] == 3 and "96 colour and 0 grey" in spec["extra"]["channels_rule"]
    assert main(["evaluate", str(run), str(tmp_path / "discs.npz"), "--n-boot", "0", "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["auroc"] > 0.95


def _rgb_dicom(path, rgb):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UltrasoundImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.Modality = generate_uid(), "US"
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_scan_info_and_dicom_report_the_same_colour_modes(files, tmp_path, capsys):
    from medtl.cli import main
    from medtl.io import scan

    paths, g, photo = files
    grey_us = np.stack([g, g, g], -1).astype(np.int16)
    grey_us[..., 1] += 2  # B-mode ultrasound stored as RGB, channels a level or two apart
    _rgb_dicom(tmp_path / "us_grey.dcm", np.clip(grey_us, 0, 255))
    _rgb_dicom(tmp_path / "us_doppler.dcm", photo)
    img = load_image(tmp_path / "us_grey.dcm")
    assert img.meta["colour"] == "gray-rgb" and img.channels == 1 and img.spatial_shape == (48, 40)
    assert load_image(tmp_path / "us_doppler.dcm").meta["colour"] == "rgb"
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in scan(tmp_path, workers=1).rows}
    for name, expected in EXPECTED.items():
        assert rows[paths[name].name]["colour"] == expected, name
    assert rows["us_grey.dcm"]["colour"] == "gray-rgb" and rows["us_grey.dcm"]["shape"] == "48x40"
    assert rows["us_doppler.dcm"]["colour"] == "rgb" and rows["us_doppler.dcm"]["shape"] == "3x48x40"
    assert main(["info", str(paths["gray_jpeg"])]) == 0 and "colour: gray-rgb" in capsys.readouterr().out


def test_a_manifest_mixing_every_layout_trains_without_a_crash(files, tmp_path):
    from medtl.train.config import TrainConfig
    from medtl.train.finetune import finetune

    paths, _, _ = files
    names = list(EXPECTED) * 3  # 24 images: 9 colour, 15 grey in five layouts
    manifest = tmp_path / "mixed.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient_id"])
        w.writerows([[str(paths[n]), i % 2, f"p{i}"] for i, n in enumerate(names)])
    cfg = TrainConfig(manifest=str(manifest), size=[16, 16], epochs=1, batch_size=8, val_fraction=0.25,
                      test_fraction=0.25, dedup=False)  # fmt: skip  (the same eight files, three times)
    result = finetune(cfg, tmp_path / "run")
    assert result.skipped == [] and "channels: auto → 1" in result.channels_rule  # grey is the majority
    assert result.model.in_channels == 1
