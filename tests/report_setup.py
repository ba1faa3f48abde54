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


#: The run's saliency check (``saliency.json``) written into the saliency report's run.
SALIENCY_CHOICE = {
    "schema": "medtl.saliency-choice/1", "method": "gradcam", "split": "val", "n_images": 40, "seconds": 12.5,
    "why": "it passed the randomization check and deleted evidence fastest of the eligible methods",
    "rule": "eligible: passes randomization and is faithful; then the largest deletion gain",
    "candidates": {
        "gradcam": {"randomization_spearman": 0.12, "passed_randomization": True, "deletion_gain": 0.21,
                    "faithful": True, "pointing_game": 0.7, "energy_pointing": 0.55, "eligible": True,
                    "excluded_because": None, "grid": [8, 8]},
        "ig@blur": {"randomization_spearman": 0.81, "passed_randomization": False, "deletion_gain": 0.05,
                    "faithful": True, "pointing_game": None, "energy_pointing": None, "eligible": False,
                    "excluded_because": "failed the randomization check", "grid": [64, 64]},
    },
    "anatomy": {"rule": "the body: pixels brighter than Otsu's threshold, the largest connected region, holes filled",
                "median_inside": 0.83, "median_ci": [0.78, 0.88], "marked_share": 0.1, "marked_ci": [0.05, 0.2],
                "n": 40},
}  # fmt: skip
#: The predictions' settings the saliency report's predict output gains.
SALIENCY_SETTINGS = {
    "saliency": "gradcam",
    "saliency_choice": {"method": "gradcam", "why": SALIENCY_CHOICE["why"], "source": "the run's saliency check"},
    "anatomy_rule": SALIENCY_CHOICE["anatomy"]["rule"],
}
#: The network-grid cell a saliency report's maps peak at (rows, columns of the network's input).
BLOB = (20, 44)


def _blob(shape: tuple[int, ...], peak: float) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return (peak * np.exp(-((rows - BLOB[0]) ** 2 + (cols - BLOB[1]) ** 2) / (2 * 2.0**2))).astype(np.float32)


def saliency_report(report_inputs, root: Path) -> dict:
    """A copy of the report fixtures as the newer ``medtl predict --saliency`` writes them, and its
    report: every map on the network's grid (its own affine in world mm) peaking at :data:`BLOB`,
    with ``saliency_target``, ``saliency_peak`` (1.0, but 0.1 for the ``pale`` case, whose map is
    0.1 times the others' and stored as (H, W, 1)), anatomy shares (the ``marked`` case: 20 %
    inside, shortcut), predict's new settings, and a run with its saliency check
    (``saliency.json``). Returns ``run``, ``predictions``, ``folder`` (the report), ``record``,
    ``world`` (each case key's blob position in RAS mm), and the ``bright``, ``pale`` and
    ``marked`` keys."""
    import csv
    import json

    from medtl.data.transforms import preprocess_with_affine
    from medtl.explain.explainer import load_item
    from medtl.explain.run import nifti_bytes
    from medtl.report import build_report
    from medtl.rundir import read_spec

    run0, archive, predictions0, _, _ = report_inputs
    run, pred = root / "run", root / "predictions"
    shutil.copytree(run0, run)
    shutil.copytree(predictions0, pred)
    (run / "saliency.json").write_text(json.dumps(SALIENCY_CHOICE))
    summary = json.loads((pred / "summary.json").read_text())
    summary["settings"].update(SALIENCY_SETTINGS)
    (pred / "summary.json").write_text(json.dumps(summary))
    with open(pred / "predictions.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    spec = read_spec(run)
    mapped = [r for r in rows if r.get("saliency_nifti") and r["path"].startswith("cxr/")]
    bright, pale, marked = mapped[0]["key"], mapped[1]["key"], mapped[2]["key"]
    world = {}
    for r in rows:
        shortcut = r["key"] == marked
        extra = {"saliency_target": "label=1", "saliency_peak": "", "anatomy_inside": "0.2" if shortcut else "0.9",
                 "anatomy_area": "0.6", "shortcut": "1" if shortcut else "0"}  # fmt: skip
        if r.get("saliency_nifti"):
            img = load_item(str(archive / r["path"]), None)
            _, affine = preprocess_with_affine(img, spec)
            peak = 0.1 if r["key"] == pale else 1.0
            smap = _blob(tuple(spec.size), peak)
            if r["key"] == pale:
                smap = smap[..., None]  # a 2D map stored as (H, W, 1)
            (pred / r["saliency_nifti"]).write_bytes(nifti_bytes(smap, affine))
            extra["saliency_peak"] = str(peak)
            world[r["key"]] = (affine @ np.array([*BLOB, 0.0, 1.0]))[:3]
        r.update(extra)
    with open(pred / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    folder = root / "report"
    record = build_report(run, pred, folder, input_dir=archive, workers=0)
    return {"run": run, "predictions": pred, "folder": folder, "record": record, "world": world,
            "bright": bright, "pale": pale, "marked": marked}  # fmt: skip


def http_request(url: str, data: dict | None = None, headers: dict | None = None) -> tuple[int, str, dict]:
    """``(status, body, headers)`` of one request to a review server, redirects not followed (a
    test reads the ``Location`` itself); ``data`` is posted as a form."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlencode

    body = urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=20) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)
