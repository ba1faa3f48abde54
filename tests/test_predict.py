"""`medtl predict`: one row per good image, one error per bad one, OOD flags, resume after kill -9,
shards, redaction; `Predictor`; the OOD statistics (seconds each, on the sample data)."""

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from medtl.cli import main
from medtl.errors import ConfigError, OutputError
from medtl.evaluate.run import predict_manifest
from medtl.predict import Predictor, calibrate_ood, fit_ood, merge_outputs, predict_folder, read_ood
from medtl.predict.folder import JOURNAL, parse_shard
from medtl.train.config import TrainConfig
from medtl.train.finetune import finetune

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
N_CXR = 48


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "cxr"
    cfg = TrainConfig(manifest=str(SAMPLE / "cxr.csv"), size=[64, 64], batch_size=8, epochs=3, val_fraction=0.5,
                      test_fraction=0.2, patience=5, seed=0)  # fmt: skip
    finetune(cfg, run, resume=False)
    return run


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Every sample radiograph, plus what real archives hold: a non-image, a corrupt and a truncated
    file, a CT series (3D: the 2D run cannot take it), a DICOMDIR, and a colour photograph."""
    from pydicom.data import get_testdata_file

    root = tmp_path_factory.mktemp("archive") / "in"
    shutil.copytree(SAMPLE / "cxr", root / "cxr")
    shutil.copytree(SAMPLE / "ct" / "p101", root / "ct" / "p101")
    (root / "README.txt").write_text("scanned archive\n")
    (root / "cxr" / "broken.dcm").write_bytes(b"DICM but not really" * 10)
    whole = (SAMPLE / "cxr" / "p002" / "IM000102.dcm").read_bytes()
    (root / "cxr" / "truncated.dcm").write_bytes(whole[: len(whole) // 3])
    shutil.copy(get_testdata_file("DICOMDIR"), root / "DICOMDIR")
    rng = np.random.default_rng(0)
    PILImage.fromarray((rng.random((150, 200, 3)) * 255).astype(np.uint8)).save(root / "holiday.jpg")
    return root


@pytest.fixture(scope="module")
def predicted(run2d, mixed, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "out"
    summary = predict_folder(run2d, mixed, out, batch_size=8, workers=2)
    return out, summary


# ----------------------------------------------------------------------------- the folder job
def test_every_good_image_predicted_every_bad_one_explained(predicted):
    out, summary = predicted
    rows, errors = _rows(out / "predictions.csv"), _rows(out / "errors.csv")
    paths = [r["path"] for r in rows]
    assert sum(p.startswith("cxr/p") for p in paths) == N_CXR and "holiday.jpg" in paths
    assert len(paths) == len(set(paths)) == N_CXR + 1
    reasons = {e["path"]: (e["stage"], e["reason"]) for e in errors}
    assert set(reasons) == {"cxr/broken.dcm", "cxr/truncated.dcm", "ct/p101/series01"}
    assert "truncated" in reasons["cxr/truncated.dcm"][1]
    assert reasons["ct/p101/series01"] == ("load", "the run takes 2D images; this one is 3D (shape 64x64x16)")
    assert summary["counts"] == {"predicted": N_CXR + 1, "failed": 3, "flagged": sum(r["ood"] == "1" for r in rows),
                                 "saliency_failed": 0}  # fmt: skip
    assert next(r for r in rows if r["path"] == "holiday.jpg")["ood"] == "1"  # a photograph is flagged
    assert summary["inputs"]["skipped_non_images"] >= 2  # README.txt and the DICOMDIR
    # rows in work-list order, with indices that place errors among them
    idx = [int(r["index"]) for r in rows] + [int(e["index"]) for e in errors]
    assert sorted(idx) == list(range(len(idx)))
    assert [int(r["index"]) for r in rows] == sorted(int(r["index"]) for r in rows)
    for r in rows:
        p = [float(r["p_label=0"]), float(r["p_label=1"])]
        assert abs(sum(p) - 1) < 2e-6  # an unfamiliar input keeps its probabilities: they are data
        assert r["ood"] in ("0", "1") and float(r["ood_score"]) >= 0
        # ... but gets no decision, and says why it is unfamiliar
        assert r["decision"] == "not assessed" if r["ood"] == "1" else r["decision"] in ("label=0", "label=1")
        assert bool(r["ood_reason"]) is (r["ood"] == "1")
    assert (out / "medtl.json").is_file() and json.loads((out / "medtl.json").read_text())["complete"]


def test_photograph_is_flagged_out_of_distribution(predicted, run2d):
    out, _ = predicted
    rows = {r["path"]: r for r in _rows(out / "predictions.csv")}
    assert rows["holiday.jpg"]["ood"] == "1"
    flagged = [p for p, r in rows.items() if p.startswith("cxr/") and r["ood"] == "1"]
    assert len(flagged) <= 0.1 * N_CXR  # the threshold is the 99% quantile of validation images
    stats = read_ood(run2d)
    assert float(rows["holiday.jpg"]["ood_score"]) > stats.threshold
    # the rule says so first: the run saw no colour image
    assert rows["holiday.jpg"]["ood_reason"].startswith("colour image; the run was trained on grey images; far from")


# ----------------------------------------------------------------------------- unfamiliar inputs (issue 26)
@pytest.fixture(scope="module")
def unfamiliar(run2d, tmp_path_factory):
    """``(run, folder)``: a copy of the radiograph run whose distance threshold is out of reach (so
    only a rule can flag an input), and inputs it never saw beside one it did: a real colour
    photograph, a grey photograph stored as RGB, a CT slice (DICOM), a sample radiograph."""
    from pydicom.data import get_testdata_file
    from skimage import data as skdata

    from medtl.predict.ood import save_ood

    root = tmp_path_factory.mktemp("unfamiliar")
    run = root / "run"
    shutil.copytree(run2d, run, ignore=shutil.ignore_patterns("cache", "checkpoints", "logs", "tensorboard"))
    stats = read_ood(run)
    stats.threshold = 1e9
    save_ood(run, stats)
    src = root / "in"
    src.mkdir()
    PILImage.fromarray(skdata.astronaut()).save(src / "astronaut.png")
    PILImage.fromarray(np.stack([skdata.camera()] * 3, axis=-1)).save(src / "camera-rgb.png")
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "ct_slice.dcm")
    shutil.copy(SAMPLE / "cxr" / "p002" / "IM000102.dcm", src / "radiograph.dcm")
    return run, src


def _seen_modalities(run: Path) -> str:
    return ", ".join(sorted(json.loads((run / "familiar.json").read_text())["modalities"]))


def test_the_run_records_what_its_training_images_were(run2d):
    record = json.loads((run2d / "familiar.json").read_text())
    n_train = json.loads((run2d / "split.json").read_text())["counts"]["train"]["images"]
    assert record["dims"] == 2 and record["images"] == record["probed"] == n_train
    assert record["colour"] == {"gray": n_train}  # DICOM radiographs: grey from their headers
    assert "DX" in record["modalities"] and set(record["modalities"]) <= {"CR", "DX"}
    assert sum(record["modalities"].values()) == n_train


def test_a_colour_photograph_and_a_ct_slice_are_not_assessed_whatever_their_score(unfamiliar, tmp_path):
    run, src = unfamiliar
    summary = predict_folder(run, src, tmp_path / "o", workers=0)
    rows = {r["path"]: r for r in _rows(tmp_path / "o" / "predictions.csv")}
    assert rows["astronaut.png"]["ood_reason"] == "colour image; the run was trained on grey images"
    assert rows["ct_slice.dcm"]["ood_reason"] == f"modality CT not seen in training ({_seen_modalities(run)})"
    for name in ("astronaut.png", "ct_slice.dcm"):
        r = rows[name]
        assert (r["ood"], r["decision"]) == ("1", "not assessed")
        assert float(r["ood_score"]) < 1e9  # the distance alone would not have flagged it
        assert abs(float(r["p_label=0"]) + float(r["p_label=1"]) - 1) < 2e-6  # the output stays, as data
    # grey stored as RGB is grey, and a radiograph of the collection is familiar: both are assessed
    for name in ("camera-rgb.png", "radiograph.dcm"):
        assert (rows[name]["ood"], rows[name]["ood_reason"]) == ("0", "")
        assert rows[name]["decision"] in ("label=0", "label=1")
    assert summary["counts"]["flagged"] == 2 and summary["settings"]["assess_unfamiliar"] is False
    assert summary["notes"] == []

    pred = Predictor(run, device="cpu")
    p = pred.predict(src / "astronaut.png")
    assert (p.ood, p.assessed, p.ood_reason) == (True, False, "colour image; the run was trained on grey images")
    assert p.decision and abs(p.probabilities["label=1"] - float(rows["astronaut.png"]["p_label=1"])) < 1e-5
    assert Predictor(run, device="cpu", assess_unfamiliar=True).predict(src / "ct_slice.dcm").assessed is True


def test_assess_unfamiliar_gives_decisions_and_is_recorded(unfamiliar, tmp_path, capsys):
    run, src = unfamiliar
    out = tmp_path / "o"
    assert main(["predict", str(run), str(src), "-o", str(out), "--workers", "0", "--assess-unfamiliar", "-q"]) == 0
    rows = {r["path"]: r for r in _rows(out / "predictions.csv")}
    r = rows["astronaut.png"]
    assert r["ood"] == "1" and r["ood_reason"].startswith("colour image") and r["decision"] in ("label=0", "label=1")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["assess_unfamiliar"] is True and summary["job"]["assess_unfamiliar"] is True
    assert "flagged 2 out-of-distribution (assessed anyway)" in capsys.readouterr().out
    with pytest.raises(OutputError, match="another --assess-unfamiliar"):  # the decisions differ: not one job
        predict_folder(run, src, out, workers=0, resume=True)


def test_an_older_run_without_a_record_flags_nothing_by_rule_and_says_so(unfamiliar, tmp_path):
    run, src = unfamiliar
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / "familiar.json").unlink()
    summary = predict_folder(old, src, tmp_path / "o", workers=0)
    rows = _rows(tmp_path / "o" / "predictions.csv")
    assert len(rows) == 4 and all((r["ood"], r["ood_reason"]) == ("0", "") for r in rows)
    assert all(r["decision"] in ("label=0", "label=1") for r in rows)
    assert len(summary["notes"]) == 1 and "does not record what its training images were" in summary["notes"][0]
    assert summary["run"]["familiar"] is None


def test_the_rules_judge_real_chroma_modality_and_dimensions(tmp_path):
    from pydicom.data import get_testdata_file
    from skimage import data as skdata

    from medtl.data.familiar import input_facts, unfamiliar_reasons
    from medtl.io import load_image

    PILImage.fromarray(skdata.coffee()).save(tmp_path / "coffee.png")
    PILImage.fromarray(np.stack([skdata.camera()] * 3, axis=-1)).save(tmp_path / "camera.png")
    coffee, camera = input_facts(load_image(tmp_path / "coffee.png")), input_facts(load_image(tmp_path / "camera.png"))
    ct = input_facts(load_image(get_testdata_file("CT_small.dcm")))
    assert (coffee["colour"], camera["colour"], ct["colour"], ct["modality"]) == ("rgb", "gray-rgb", "gray", "CT")
    grey_run = {"dims": 2, "colour": {"gray": 250, "gray-rgb": 49, "rgb": 1}, "modalities": {"DX": 280, "none": 20}}
    assert unfamiliar_reasons(grey_run, coffee) == [
        "colour image; the run was trained on grey images (only 1 of 300 probed in colour)"]
    assert unfamiliar_reasons(grey_run, camera) == []
    assert unfamiliar_reasons(grey_run, ct) == ["modality CT not seen in training (DX)"]
    assert unfamiliar_reasons(grey_run, dict(ct, modality="DX", dims=3)) == [
        "3D volume; the run was trained on 2D images"]
    colour_run = {"dims": 2, "colour": {"rgb": 80}, "modalities": {"none": 80}}  # photographs: no modality rule
    assert unfamiliar_reasons(colour_run, ct) == ["grey image; the run was trained on colour images"]
    assert unfamiliar_reasons(colour_run, coffee) == [] and unfamiliar_reasons(None, coffee) == []


def test_the_flag_s_false_alarm_rate_is_measured_on_held_out_images_and_shown(run2d):
    from medtl.evaluate.metrics import proportion_ci
    from medtl.evaluate.run import select_rows
    from medtl.predict.ood import _pct
    from medtl.report.model import model_summary

    stats = read_ood(run2d)
    _, manifest, test, _ = select_rows(run2d, SAMPLE / "cxr.csv", "test")
    assert stats.tested_on == "test" and stats.n_tested == len(test) > 0
    pred = Predictor(run2d, device="cpu")
    flagged = sum(pred.predict(manifest.records[i].path).ood_score > stats.threshold for i in test)
    assert stats.tested_flagged == flagged  # the test images, scored after the fit and the threshold
    k, n = flagged, len(test)
    low, high = proportion_ci(k, n)
    assert read_ood(run2d).describe()["tested_ci95"] == [low, high]
    measured = (f"flags {k} of {n} held-out in-distribution images (test split) as unfamiliar ({_pct(k / n)} %, "
                f"95 % CI {_pct(low)}–{_pct(high)} %)")  # fmt: skip
    model = model_summary(run2d)
    assert measured in model["ood"] and not re.search(r"(about|at most) 1 ?%", model["ood"])  # no promise
    # a few validation images set the threshold: the text says what that costs
    assert f"a threshold set on only {stats.n_threshold} validation images flags about" in model["ood"]
    assert model["ood_rules"].startswith("flagged by rule whatever the score: a colour image (the run saw 0 of")
    assert measured in json.loads((run2d / "metrics.json").read_text())["ood"]
    assert measured in (run2d / "model_card.md").read_text()


def test_probabilities_equal_evaluate_on_the_same_images(predicted, run2d):
    """Two independent pipelines (evaluate's cached dataset, predict's worker loading) agree."""
    out, _ = predicted
    rows = {r["path"]: r for r in _rows(out / "predictions.csv")}
    reference, _, info = predict_manifest(run2d, SAMPLE / "cxr.csv")
    assert len(reference) == N_CXR
    for ref in reference:
        row = rows[ref["path"]]
        assert abs(float(row["p_label=1"]) - ref["score"]) < 1e-5
        assert row["decision"] == (f"label={ref['prediction']}" if row["ood"] == "0" else "not assessed")


def test_predictor_one_image_equals_the_folder_row(predicted, run2d, mixed):
    out, _ = predicted
    rows = {r["path"]: r for r in _rows(out / "predictions.csv")}
    pred = Predictor(run2d, device="cpu")
    p = pred.predict(mixed / "cxr" / "p002" / "IM000102.dcm")
    row = rows["cxr/p002/IM000102.dcm"]
    assert abs(p.probabilities["label=1"] - float(row["p_label=1"])) < 1e-5
    assert p.decision == [row["decision"]]
    assert abs(p.ood_score - float(row["ood_score"])) < 1e-3 and p.ood is (row["ood"] == "1")
    from medtl.io import load_image

    with pytest.raises(ConfigError, match="the run takes 2D images; this one is 3D"):
        pred.predict(load_image(mixed / "ct" / "p101" / "series01"))


def test_resume_after_kill_minus_9_equals_an_uninterrupted_run(run2d, tmp_path):
    src = tmp_path / "in"
    for p in sorted((SAMPLE / "cxr").iterdir())[:8]:
        shutil.copytree(p, src / p.name)
    (src / "bad.dcm").write_bytes(b"not an image at all" * 5)
    reference = tmp_path / "reference"
    args = ["predict", str(run2d), str(src), "--batch-size", "2", "--workers", "0", "--saliency", "ig"]
    assert main(args + ["-o", str(reference)]) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "medtl", *args, "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        journal = out / JOURNAL
        if journal.is_file() and len(journal.read_text().splitlines()) >= 3:  # two chunks written
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, "the job finished before it could be killed"
    done = len(_rows(out / "predictions.csv"))
    assert 0 < done < len(_rows(reference / "predictions.csv"))
    with pytest.raises(OutputError, match="--resume to finish it"):  # finished rows are never wiped unasked
        predict_folder(run2d, src, out)
    # a torn line, as a kill in the middle of a write leaves it
    with open(out / "predictions.csv", "ab") as fh:
        fh.write(b"99,deadbeef,cxr/p0")
    assert main(args + ["-o", str(out), "--resume"]) == 0
    for name in ("predictions.csv", "errors.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    maps = sorted(p.name for p in (reference / "maps").iterdir())
    assert maps and maps == sorted(p.name for p in (out / "maps").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timing"]["resumed_chunks"] >= 2


def test_resume_refuses_another_job(run2d, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(SAMPLE / "cxr" / "p001", src / "p001")
    out = tmp_path / "out"
    predict_folder(run2d, src, out, batch_size=2, workers=0)
    (out / "medtl.json").write_text(json.dumps({"command": "predict", "complete": False}))
    with pytest.raises(OutputError, match="unfinished job that differs from this one .another --batch-size."):
        predict_folder(run2d, src, out, batch_size=4, workers=0, resume=True)
    shutil.copytree(SAMPLE / "cxr" / "p002", src / "p002")
    with pytest.raises(OutputError, match="files were added, removed or renamed"):
        predict_folder(run2d, src, out, batch_size=2, workers=0, resume=True)


def test_an_output_folder_inside_the_input_tree_is_refused(run2d, tmp_path):
    """`medtl predict RUN archive -o archive/predictions`: the maps it would write are images that a
    later scan of the archive would take for inputs, so the output goes beside the archive."""
    src = tmp_path / "archive"
    shutil.copytree(SAMPLE / "cxr" / "p002", src / "p002")
    with pytest.raises(OutputError, match="sits inside the input .*give an output outside it"):
        predict_folder(run2d, src, src / "predictions", workers=0, saliency="gradcam")
    assert sorted(p.name for p in src.iterdir()) == ["p002"]


def test_two_shards_merged_equal_one_run(predicted, run2d, mixed, tmp_path, monkeypatch):
    out, _ = predicted
    a = tmp_path / "a"
    # the same --workers as the single run: on the CPU they decide the network's threads, and a
    # float sum in another order may change a printed digit
    predict_folder(run2d, mixed, a, batch_size=8, workers=2, shard="0/2")
    # the second shard as torchrun's rank 1 of 2 would run it: shard and folder from the environment
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    predict_folder(run2d, mixed, tmp_path / "b", batch_size=8, workers=2)
    b = tmp_path / "b" / "rank-1-of-2"
    sizes = [len(_rows(d / "predictions.csv")) for d in (a, b)]
    assert all(sizes) and sum(sizes) == N_CXR + 1
    with pytest.raises(OutputError, match="missing 1"):
        merge_outputs([a], tmp_path / "merged")
    monkeypatch.delenv("WORLD_SIZE")
    assert main(["predict", "merge", str(a), str(b), "-o", str(tmp_path / "merged")]) == 0
    for name in ("predictions.csv", "errors.csv"):
        assert (tmp_path / "merged" / name).read_bytes() == (out / name).read_bytes(), name
    assert json.loads((tmp_path / "merged" / "summary.json").read_text())["counts"]["predicted"] == N_CXR + 1


def test_redacted_outputs_hold_no_identifier_or_path(run2d, mixed, tmp_path):
    out = tmp_path / "redacted"
    assert main(["predict", str(run2d), str(mixed), "-o", str(out), "--redact-paths", "--workers", "0"]) == 0
    text = "\n".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert str(mixed) not in text and str(tmp_path) not in text and str(Path.home()) not in text
    for leak in ("FAKE^", "MRN-", "ACC-FAKE", "IM0001", "holiday", "broken.dcm", "p101"):
        assert leak not in text, leak
    rows = _rows(out / "predictions.csv")
    assert len(rows) == N_CXR + 1 and all(r["path"] == "" and len(r["key"]) == 16 for r in rows)


def test_folders_that_overwrite_could_empty_are_refused(predicted, run2d, mixed, tmp_path):
    out, _ = predicted
    with pytest.raises(OutputError, match="is an input of this command"):
        predict_folder(run2d, mixed, mixed, workers=0, overwrite=True)
    with pytest.raises(OutputError, match="holds the input"):
        predict_folder(run2d, mixed, mixed.parent, workers=0, overwrite=True)
    with pytest.raises(OutputError, match="holds the input"):
        merge_outputs([out], out.parent, overwrite=True)
    with pytest.raises(OutputError, match="sits inside the input"):
        merge_outputs([out], out / "merged", overwrite=True)
    assert (out / "predictions.csv").is_file()


def test_a_journal_line_cut_by_the_kill_is_not_trusted(run2d, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(SAMPLE / "cxr" / "p002", src / "p002")
    shutil.copytree(SAMPLE / "cxr" / "p003", src / "p003")
    reference = tmp_path / "reference"
    predict_folder(run2d, src, reference, batch_size=1, workers=0)
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    lines = (out / JOURNAL).read_text().splitlines()
    chunk, pred, err = lines[2].split()
    # the kill cut the last line inside a number: "1 53" where "1 530" was meant
    (out / JOURNAL).write_text("\n".join(lines[:2]) + f"\n{chunk} {pred} {err[:-1]}")
    (out / "medtl.json").write_text(json.dumps({"command": "predict", "complete": False}))
    predict_folder(run2d, src, out, batch_size=1, workers=0, resume=True)
    for name in ("predictions.csv", "errors.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_bad_arguments_name_the_problem(run2d, tmp_path):
    with pytest.raises(ConfigError, match="--shard must be I/N"):
        parse_shard("2/2")
    with pytest.raises(ConfigError, match="unknown saliency method .gradcams.; did you mean .gradcam."):
        predict_folder(run2d, SAMPLE / "cxr", tmp_path / "o", saliency="gradcams")
    with pytest.raises(Exception, match="no such file or folder"):
        predict_folder(run2d, tmp_path / "nowhere", tmp_path / "o")
    with pytest.raises(ConfigError, match="not a run directory"):
        predict_folder(tmp_path, SAMPLE / "cxr", tmp_path / "o")
    with pytest.raises(ConfigError, match="--workers must be 0 or more, not -1"):
        predict_folder(run2d, SAMPLE / "cxr", tmp_path / "o", workers=-1)
    with pytest.raises(ConfigError, match="device 'gpu' is not usable here"):
        Predictor(run2d, device="gpu")


# ----------------------------------------------------------------------------- 3D
def test_ct_run_predicts_series_and_refuses_photographs(tmp_path):
    run = tmp_path / "ct"
    cfg = TrainConfig(manifest=str(SAMPLE / "ct.csv"), backbone="resnet10", pretrained=None, preset="ct",
                      windows=["lung", "soft_tissue"], spatial_dims=3, size=[16, 32, 32], spacing=None, batch_size=4,
                      epochs=1, val_fraction=0.3, test_fraction=0.2, patience=5, seed=0, augment=False)  # fmt: skip
    finetune(cfg, run, resume=False)
    src = tmp_path / "in"
    shutil.copytree(SAMPLE / "ct", src / "ct")
    shutil.copytree(SAMPLE / "nifti", src / "nifti")
    PILImage.fromarray(np.zeros((40, 40, 3), np.uint8)).save(src / "photo.png")
    summary = predict_folder(run, src, tmp_path / "out", batch_size=4, workers=0)
    rows, errors = _rows(tmp_path / "out" / "predictions.csv"), _rows(tmp_path / "out" / "errors.csv")
    assert len(rows) == 14 and summary["counts"]["predicted"] == 14
    assert {r["kind"] for r in rows} == {"3d"}
    assert [e["path"] for e in errors] == ["photo.png"] and "run takes 3D" in errors[0]["reason"]


# ----------------------------------------------------------------------------- OOD statistics
def test_mahalanobis_equals_scipy_and_flags_about_one_percent():
    from scipy.spatial.distance import mahalanobis

    rng = np.random.default_rng(0)
    cov = np.diag([4.0, 1.0, 0.25])
    train = rng.multivariate_normal([0, 0, 0], cov, size=4000)
    classes = (rng.random(4000) < 0.5).astype(int)
    train[classes == 1] += [10, 0, 0]
    stats = fit_ood(train, classes, rng.multivariate_normal([0, 0, 0], cov, size=2000), normalise=False)
    x = np.array([[1.0, 2.0, 0.5]])
    expected = min(mahalanobis(x[0], m, stats.precision) for m in stats.means)
    assert stats.scores(x)[0] == pytest.approx(expected, rel=1e-6)
    assert np.allclose(stats.means, [[0, 0, 0], [10, 0, 0]], atol=0.2)
    fresh = rng.multivariate_normal([0, 0, 0], cov, size=20000)
    assert 0.005 < stats.flags(stats.scores(fresh)).mean() < 0.02
    assert stats.flags(stats.scores(np.array([[0, 4.5, 0], [10, 0, 3.0]]))).tolist() == [True, True]
    with pytest.raises(ConfigError, match="at least 2 training images"):
        fit_ood(train[:1], None, train)


def test_normalised_statistics_score_directions_and_survive_the_file(tmp_path):
    from medtl.predict.ood import conformal_threshold, save_ood

    rng = np.random.default_rng(1)
    train = np.abs(rng.normal(size=(500, 16))) + np.linspace(0, 2, 16)  # ReLU-like, one main direction
    held = np.abs(rng.normal(size=(300, 16))) + np.linspace(0, 2, 16)
    stats = fit_ood(train, None, held, normalise=True)
    assert stats.scores(train[:3] * 50) == pytest.approx(stats.scores(train[:3]), rel=1e-6)  # length is ignored
    assert stats.scores(np.linspace(2, 0, 16)[None])[0] > stats.threshold  # another direction
    assert stats.threshold == conformal_threshold(stats.scores(held), 0.99)
    ranked = np.sort(stats.scores(held))  # halfway between the last score not flagged and the next
    k = int(np.ceil(301 * 0.99))
    assert stats.threshold == (ranked[k - 1] + ranked[k]) / 2 and not np.isin(stats.threshold, ranked)
    save_ood(tmp_path, stats)
    back = read_ood(tmp_path)
    assert back.normalise and back.threshold == stats.threshold and back.n_fit == 500
    assert back.scores(held[:5]) == pytest.approx(stats.scores(held[:5]), rel=1e-5)  # float32 on disk


def test_calibrate_ood_rebuilds_what_training_stored(run2d, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(run2d, old, ignore=shutil.ignore_patterns("cache", "checkpoints", "logs", "tensorboard"))
    stored = read_ood(old)
    (old / "ood.npz").unlink()
    (old / "familiar.json").unlink()
    summary = predict_folder(old, SAMPLE / "cxr" / "p001", tmp_path / "o", workers=0)
    assert "calibrate-ood" in summary["notes"][0] and "familiar.json" in summary["notes"][1]
    assert _rows(tmp_path / "o" / "predictions.csv")[0]["ood"] == ""
    assert main(["calibrate-ood", str(old), str(SAMPLE / "cxr.csv")]) == 0
    rebuilt = read_ood(old)
    assert rebuilt.n_fit == stored.n_fit and rebuilt.n_threshold == stored.n_threshold
    assert rebuilt.threshold == pytest.approx(stored.threshold, rel=1e-4)
    # the false alarms measured on the same test images, and the record of the training images
    assert (rebuilt.n_tested, rebuilt.tested_flagged) == (stored.n_tested, stored.tested_flagged)
    assert json.loads((old / "familiar.json").read_text()) == json.loads((run2d / "familiar.json").read_text())
    with pytest.raises(ConfigError, match="already has out-of-distribution statistics"):
        calibrate_ood(old, SAMPLE / "cxr.csv")


def test_predict_folder_gives_back_the_thread_count_it_found(run2d, tmp_path):
    """The job takes the cores for its network and hands them back: a script (or the next training
    in the same process) must run with the threads it had, or its floats change."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predict_folder(run2d, SAMPLE / "cxr", tmp_path / "out", batch_size=8, workers=0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
