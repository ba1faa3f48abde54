"""What the report tests share (session fixtures in conftest.py): a small trained radiograph run,
an archive as a hospital folder holds it (radiographs, a broken file, a photograph, a DICOM whose
text holds markup and identifiers), its predictions with Grad-CAM maps, an evaluation with a bias
audit, a sanity-checked explanation, and the report built from them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image as PILImage

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
#: Text planted in a DICOM header: it must show as text, and only where identifiers are asked for.
MARKUP_MANUFACTURER = "<script>window.__medtl_xss = 1</script>Acme"
MARKUP_SERIES = '<img src="x" onerror="window.__medtl_xss = 2">Chest PA'
PATIENT_NAME, PATIENT_ID, ACCESSION = "Doe^Jane", "MRN-4242", "ACC-777"


def train_run(root: Path) -> Path:
    from medtl.train.config import TrainConfig
    from medtl.train.finetune import finetune

    run = root / "cxr"
    cfg = TrainConfig(manifest=str(SAMPLE / "cxr.csv"), size=[64, 64], batch_size=8, epochs=2, val_fraction=0.5,
                      test_fraction=0.2, patience=5, seed=0,
                      intended_use="A test model: flags the sample data's label=1 pattern for a reader.")  # fmt: skip
    finetune(cfg, run, resume=False)
    return run


def make_archive(root: Path) -> Path:
    archive = root / "archive"
    for patient in ("p001", "p002", "p003", "p004", "p005", "p006"):
        shutil.copytree(SAMPLE / "cxr" / patient, archive / "cxr" / patient)
    (archive / "cxr" / "broken.dcm").write_bytes(b"DICM but not really" * 10)
    rng = np.random.default_rng(0)
    PILImage.fromarray((rng.random((150, 200, 3)) * 255).astype(np.uint8)).save(archive / "holiday.jpg")
    ds = pydicom.dcmread(SAMPLE / "cxr" / "p002" / "IM000102.dcm")
    ds.Manufacturer = MARKUP_MANUFACTURER
    ds.SeriesDescription = MARKUP_SERIES
    ds.PatientName, ds.PatientID, ds.AccessionNumber = PATIENT_NAME, PATIENT_ID, ACCESSION
    ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["medtl-report-test"])
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["medtl-report-test-sop"])
    (archive / "markup").mkdir()
    ds.save_as(archive / "markup" / "IM1.dcm")
    return archive


def evaluate_and_explain(run: Path, root: Path) -> tuple[Path, Path]:
    from medtl.evaluate.run import evaluate_run
    from medtl.explain import explain

    evaluation, explanation = root / "eval", root / "explain"
    evaluate_run(run, SAMPLE / "cxr.csv", evaluation, groups=["sex"], split="test", n_boot=50, min_group=2)
    explain(run, [str(SAMPLE / "cxr.csv")], explanation, split="test", methods="gradcam", sanity=True,
            sanity_samples=2, deletion_steps=4, deletion_samples=4, n_boot=20)  # fmt: skip
    return evaluation, explanation


def ct_report(root: Path) -> Path:
    """A report of a tiny 3D CT run over the sample CT series, with Grad-CAM maps (train → predict
    → report, as a user runs them)."""
    from medtl.predict import predict_folder
    from medtl.report import build_report
    from medtl.train.config import TrainConfig
    from medtl.train.finetune import finetune

    run = root / "ct"
    cfg = TrainConfig(manifest=str(SAMPLE / "ct.csv"), spatial_dims=3, preset="ct", windows=["lung"],
                      backbone="resnet10", pretrained=None, size=[16, 32, 32], spacing=[5.0, 12.0, 12.0],
                      batch_size=4, epochs=1, val_fraction=0.25, test_fraction=0.25, seed=0)  # fmt: skip
    finetune(cfg, run, resume=False)
    predict_folder(run, SAMPLE / "ct", root / "ct-predictions", batch_size=4, workers=0, saliency="gradcam")
    build_report(run, root / "ct-predictions", root / "ct-report", workers=0)
    return root / "ct-report"


def quick_demo(folder: Path) -> tuple[list[str], dict, Path]:
    """`medtl demo` into ``folder/out`` with the shipped demo config cut to 3 epochs at 64 px."""
    import yaml

    from medtl.demo import _CLONE, run_demo

    cfg = yaml.safe_load((_CLONE / "configs" / "cxr-2d.yaml").read_text())
    cfg.update(epochs=3, size=[64, 64])
    config = folder / "demo.yaml"
    config.write_text(yaml.safe_dump(cfg))
    lines: list[str] = []
    out = folder / "out"
    result = run_demo(out, config=config, echo=lines.append)
    return lines, result, out
