"""A job is done only when it is done, and the job that was asked for (docs/runs.md, "A job is
finished only when it is done"): resume, full disks, inputs without images, and a report that never
shows an image other than the one that was predicted."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from output_helpers import SAMPLE, cli, fail_writes_after, predict_args, tree

from medtl.cli import main
from medtl.errors import ConfigError, NoInputError
from medtl.outputs import describe


# ----------------------------------------------------------------------------- finished means this job
def test_resume_of_a_finished_job_must_be_the_whole_same_job(report_inputs, tmp_path, capsys):
    run = report_inputs[0]
    archive = tmp_path / "archive"
    shutil.copytree(report_inputs[1], archive)
    out = tmp_path / "pred"
    assert cli(capsys, *predict_args(run, archive, out))[0] == 0
    finished = tree(out)
    capsys.readouterr()
    assert main([os.fspath(a) for a in predict_args(run, archive, out, "--resume")]) == 0
    assert "already complete: nothing to do" in capsys.readouterr().out
    other = tmp_path / "other-archive"
    shutil.copytree(archive, other)
    changes = {("--batch-size", "8"): "another --batch-size", ("--saliency", "gradcam"): "another --saliency",
               ("--redact-paths",): "another --redact-paths", ("--shard", "0/2"): "another --shard"}  # fmt: skip
    for extra, needle in changes.items():
        args = predict_args(run, archive, out, "--resume")
        args = args[:5] + ["--batch-size", extra[1]] + args[7:] if extra[0] == "--batch-size" else args + list(extra)
        code, err = cli(capsys, *args)
        assert code == 1 and needle in err and "finished job" in err, (extra, err)
    code, err = cli(capsys, *predict_args(run, other, out, "--resume"))
    assert code == 1 and "another input folder" in err
    dicom = next(archive.rglob("IM*"))
    dicom.write_bytes(dicom.read_bytes() + b"\0")  # edited in place: same names, same count
    code, err = cli(capsys, *predict_args(run, archive, out, "--resume"))
    assert code == 1 and "inputs that have changed since" in err
    assert tree(out) == finished and describe(out)["complete"]


@pytest.mark.parametrize("saliency", [None, "gradcam"])
def test_a_full_disk_stops_predict_unfinished_and_resume_finishes_it(report_inputs, tmp_path, capsys, monkeypatch,
                                                                     saliency):  # fmt: skip
    run, archive = report_inputs[:2]
    extra = ["--saliency", saliency] if saliency else []
    reference = tmp_path / "reference"
    assert cli(capsys, *predict_args(run, archive, reference, *extra))[0] == 0
    out = tmp_path / "pred"
    with monkeypatch.context() as m:
        fail_writes_after(m, 12)
        code, err = cli(capsys, *predict_args(run, archive, out, *extra))
    assert code == 1 and "No space left on device" in err and "add --resume to the same command" in err
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" not in err
    assert not describe(out)["complete"] and not (out / "summary.json").exists()
    assert cli(capsys, *predict_args(run, archive, out, "--resume", *extra))[0] == 0
    assert (out / "predictions.csv").read_bytes() == (reference / "predictions.csv").read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["saliency_failed"] == 0 and describe(out)["complete"]


@pytest.mark.parametrize("command", ["explain", "report", "evaluate"])
def test_a_full_disk_leaves_every_other_output_unfinished_too(report_inputs, tmp_path, capsys, monkeypatch, command):
    run, archive, predictions = report_inputs[:3]
    args = {"explain": ["explain", run, archive], "report": ["report", run, predictions],
            "evaluate": ["evaluate", run, SAMPLE / "cxr.csv", "--n-boot", "20"]}[command]  # fmt: skip
    out = tmp_path / command
    with monkeypatch.context() as m:
        fail_writes_after(m, 3)
        code, err = cli(capsys, *args, "-o", out)
    assert code == 1 and "No space left on device" in err and "run the same command again" in err
    assert not describe(out)["complete"]
    assert cli(capsys, *args, "-o", out)[0] == 0 and describe(out)["complete"]  # the retry needs no --overwrite


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", os.fspath(where)],
                          capture_output=True).returncode == 0  # fmt: skip


def test_a_real_full_disk_during_predict_with_maps(report_inputs, tmp_path, capsys):
    run, archive = report_inputs[:2]
    reference = tmp_path / "reference"
    assert cli(capsys, *predict_args(run, archive, reference, "--saliency", "gradcam"))[0] == 0
    need = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, str(need // 2)):
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN); the patched-write test covers the rest")
    try:
        code, err = cli(capsys, *predict_args(run, archive, disk / "pred", "--saliency", "gradcam"))
        assert code == 1 and "No space left on device" in err and "--resume" in err
        assert not describe(disk / "pred")["complete"]
        subprocess.run(["mount", "-o", f"remount,size={need * 4}", os.fspath(disk)], check=True)  # space freed
        assert cli(capsys, *predict_args(run, archive, disk / "pred", "--saliency", "gradcam", "--resume"))[0] == 0
        assert (disk / "pred" / "predictions.csv").read_bytes() == (reference / "predictions.csv").read_bytes()
    finally:
        subprocess.run(["umount", os.fspath(disk)], capture_output=True)


@pytest.mark.parametrize("content", ["empty", "no images", "only broken files"])
def test_an_input_without_a_usable_image_is_an_error_in_every_command(report_inputs, tmp_path, capsys, content):
    run = report_inputs[0]
    data = tmp_path / "in"
    data.mkdir()
    if content == "no images":
        (data / "notes.txt").write_text("not an image")
        (data / "labels.csv").write_text("path,label\n")
    elif content == "only broken files":
        (data / "IM1.dcm").write_bytes(b"DICM but not really" * 10)
    why = {"empty": "holds no files", "no images": "2 skipped as not images (labels.csv, notes.txt)",
           "only broken files": "1 unreadable (e.g. IM1.dcm"}[content]  # fmt: skip
    for args in (predict_args(run, data, tmp_path / "pred"), ["explain", run, data, "-o", tmp_path / "explain"],
                 ["scan", data, "-o", tmp_path / "manifest.csv"]):  # fmt: skip
        code, err = cli(capsys, *args)
        assert code == 1 and why in err and err.count("\n") == 1, (args[0], err)
    for name in ("pred", "explain", "manifest.csv"):
        assert not (tmp_path / name).exists()  # nothing that looks like a result


def test_an_input_nothing_of_which_can_be_predicted_leaves_the_output_unfinished(tmp_path, capsys):
    from report_setup import train_run

    from medtl.predict import predict_folder

    run = train_run(tmp_path)  # a 2D run
    data = tmp_path / "ct"
    shutil.copytree(SAMPLE / "ct" / "p101", data)  # a 3D series only: it reads, but the run cannot take it
    with pytest.raises(NoInputError, match="none of its 1 input"):
        predict_folder(run, data, tmp_path / "pred", workers=0)
    assert not describe(tmp_path / "pred")["complete"]


# ----------------------------------------------------------------------------- the image that was predicted
def test_the_report_never_shows_an_image_changed_since_prediction(report_inputs, tmp_path):
    from medtl.predict import predict_folder
    from medtl.report import build_report

    run = report_inputs[0]
    archive = tmp_path / "archive"
    shutil.copytree(report_inputs[1], archive)
    pred = tmp_path / "pred"
    predict_folder(run, archive, pred, batch_size=4, workers=0)
    target = archive / "cxr" / "p001" / "IM000101"
    ds = pydicom.dcmread(target)
    ds.PixelData = np.zeros_like(ds.pixel_array).tobytes()  # zeroed after prediction
    ds.save_as(target)
    record = build_report(run, pred, tmp_path / "report", workers=0)
    assert record["counts"]["changed"] == 1 and any("changed since they were predicted" in n for n in record["notes"])
    rows = {r["path"]: r for r in csv.DictReader(open(pred / "predictions.csv"))}
    page = (tmp_path / "report" / "cases" / f"{rows['cxr/p001/IM000101']['key']}.html").read_text()
    assert "has changed since it was predicted" in page and "case-image" not in page
    other = (tmp_path / "report" / "cases" / f"{rows['cxr/p002/IM000102.dcm']['key']}.html").read_text()
    assert "case-image" in other and "changed since" not in other
    assert "image changed since prediction" in (tmp_path / "report" / "index.html").read_text()
    with pytest.raises(ConfigError, match="no such file or folder .--input."):
        build_report(run, pred, tmp_path / "report2", input_dir=tmp_path / "archvie", workers=0)
    with pytest.raises(ConfigError, match="holds none of the .* predicted images"):
        build_report(run, pred, tmp_path / "report3", input_dir=SAMPLE / "ct", workers=0)


# ----------------------------------------------------------------------------- explain's own mistakes
def test_explain_refuses_a_run_folder_and_a_split_of_a_folder(report_inputs, tmp_path, capsys):
    run, archive = report_inputs[:2]
    code, err = cli(capsys, "explain", run, archive, "-o", run / "explain")
    assert code == 1 and "sits inside" in err and not (run / "explain").exists()
    code, err = cli(capsys, "explain", run, archive, "--split", "test", "-o", tmp_path / "e")
    assert code == 1 and "--split test chooses rows of a manifest" in err and not (tmp_path / "e").exists()


def test_one_image_has_one_key_in_predict_explain_and_the_report(report_inputs, tmp_path):
    from medtl.explain import explain
    from medtl.predict import predict_folder

    run, archive = report_inputs[:2]
    predict_folder(run, archive, tmp_path / "pred", workers=0, redact_paths=True)
    result = explain(run, [archive], tmp_path / "explain", redact_paths=True, deletion_samples=0)
    predicted = {r["key"] for r in csv.DictReader(open(tmp_path / "pred" / "predictions.csv"))}
    explained = {r["input"] for r in result["inputs"]}
    assert explained == predicted and len(predicted) >= 7
    assert not any("/" in key for key in explained)  # keys, not paths


def test_resume_is_refused_when_the_run_s_decisions_or_the_job_s_files_changed(report_inputs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(report_inputs[0], run)
    archive = report_inputs[1]
    out = tmp_path / "pred"
    assert cli(capsys, *predict_args(run, archive, out))[0] == 0
    threshold = json.loads((run / "threshold.json").read_text())
    (run / "threshold.json").write_text(json.dumps(dict(threshold, threshold=0.01)))  # as calibrate-ood --overwrite
    code, err = cli(capsys, *predict_args(run, archive, out, "--resume"))
    assert code == 1 and "the run's calibration, threshold or out-of-distribution statistics have changed" in err
    shutil.copy(report_inputs[0] / "threshold.json", run / "threshold.json")
    (out / "predictions.csv").unlink()
    code, err = cli(capsys, *predict_args(run, archive, out, "--resume"))
    assert code == 1 and "is marked complete, but predictions.csv is missing" in err
    code, err = cli(capsys, *predict_args(run, archive, out, "--resume", "--overwrite"))
    assert code == 1 and "give one of them" in err


def test_a_merge_stopped_by_a_full_disk_is_made_again_by_the_same_command(report_inputs, tmp_path, capsys,
                                                                          monkeypatch):  # fmt: skip
    run, archive = report_inputs[:2]
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, shard in enumerate(shards):
        assert cli(capsys, *predict_args(run, archive, shard, "--shard", f"{i}/2", "--saliency", "gradcam"))[0] == 0
    merged = tmp_path / "merged"
    with monkeypatch.context() as m:
        fail_writes_after(m, 2)
        code, err = cli(capsys, "predict", "merge", *shards, "-o", merged)
    assert code == 1 and err.startswith("medtl predict merge: error:") and "run the same command again" in err
    assert str(merged) in err and not describe(merged)["complete"]
    assert cli(capsys, "predict", "merge", *shards, "-o", merged)[0] == 0
    assert describe(merged)["command"] == "predict" and describe(merged)["complete"]


def test_a_report_of_predictions_without_pixel_digests_says_it_cannot_check_them(report_inputs, tmp_path):
    from medtl.report import build_report

    run, _, predictions = report_inputs[:3]
    old = tmp_path / "old-predictions"
    shutil.copytree(predictions, old)
    with open(old / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for c in rows[0] if c != "pixel_digest"]
    with open(old / "predictions.csv", "w", newline="") as fh:  # as a medtl before digests wrote it
        writer = csv.DictWriter(fh, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    record = build_report(run, old, tmp_path / "report", workers=0)
    assert any("a change since the prediction cannot be detected" in n for n in record["notes"])


def test_a_full_disk_while_saving_weights_is_a_write_error_naming_the_file(tmp_path, monkeypatch):
    import torch

    from medtl.errors import WriteError
    from medtl.files import save_torch

    fail_writes_after(monkeypatch, 0)
    with pytest.raises(WriteError, match=r"model.pt: could not be written \(No space left on device\)"):
        save_torch({"w": torch.zeros(3)}, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()


def test_resume_never_marks_a_job_complete_with_a_map_missing(report_inputs, tmp_path, capsys):
    run, archive = report_inputs[:2]
    out = tmp_path / "pred"
    assert cli(capsys, *predict_args(run, archive, out, "--saliency", "gradcam"))[0] == 0
    marker = json.loads((out / "medtl.json").read_text())
    (out / "medtl.json").write_text(json.dumps(dict(marker, complete=False)))  # as a job stopped before its end
    gone = sorted((out / "maps").glob("*.png"))[0]
    gone.unlink()  # a map of a chunk done in the first session
    code, err = cli(capsys, *predict_args(run, archive, out, "--saliency", "gradcam", "--resume"))
    assert code == 1 and f"holds a job whose maps/{gone.name} is missing" in err
    assert not describe(out)["complete"]
