"""Cached datasets over manifests: preprocessing once, bad rows reported, augmentation after the cache."""

import shutil
from pathlib import Path

import torch

from medtl.data import PreprocessSpec, augmentation, read_manifest
from medtl.data.dataset import prepare

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "labels.csv"


def test_unreadable_rows_are_reported_and_skipped(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(SAMPLE.parent / "cxr" / "p001", root / "cxr" / "p001")
    (root / "broken.dcm").write_text("not an image")
    (root / "labels.csv").write_text("path,label,patient_id\ncxr/p001/IM000101,0,a\nbroken.dcm,1,b\nmissing.dcm,1,c\n")
    m = read_manifest(root / "labels.csv")
    data = prepare(m, range(3), PreprocessSpec(size=(32, 32)), cache_dir=tmp_path / "cache")
    assert data.indices == [0]
    assert {f["path"].split("/")[-1] for f in data.failures} == {"broken.dcm", "missing.dcm"}
    assert all(f["reason"] for f in data.failures)
    item = data.dataset[0]
    assert item["image"].shape == (1, 32, 32) and item["label"].tolist() == [0.0]


def test_cache_is_reused_and_augmentation_runs_after_it(tmp_path, monkeypatch):
    m = read_manifest(SAMPLE)
    rows = [i for i, r in enumerate(m.records) if "/cxr/" in r.path][:3]
    spec = PreprocessSpec(size=(32, 32))
    prepare(m, rows, spec, cache_dir=tmp_path / "cache")
    calls = []
    import medtl.io

    real = medtl.io.load_image
    monkeypatch.setattr(medtl.io, "load_image", lambda *a, **k: calls.append(a) or real(*a, **k))
    data = prepare(m, rows, spec, cache_dir=tmp_path / "cache", augment=augmentation(2, seed=0))
    assert calls == []  # every image came from the cache: no DICOM was decoded again
    a, b = data.dataset[0]["image"], data.dataset[0]["image"]
    assert a.shape == (1, 32, 32) and not torch.equal(torch.as_tensor(a), torch.as_tensor(b))  # random each time
