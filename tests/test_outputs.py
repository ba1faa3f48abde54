"""No command destroys a user's files, or calls a stale or failed job done (docs/runs.md, "Output
folders"): what ``--overwrite`` may remove, where an output may go, when a job is finished, and that
a report never shows an image other than the one that was predicted."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

import medtl.files as files
from medtl.cli import main
from medtl.errors import ConfigError, NoInputError, OutputError
from medtl.files import read_ledger, write_json
from medtl.outputs import describe, mark_complete, output_folder

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def _cli(capsys, *args) -> tuple[int, str]:
    code = main([os.fspath(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (the lock file aside: it is rewritten by every try)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".medtl.lock"}  # fmt: skip


def _predict(run, archive, out, *extra) -> list[str]:
    return ["predict", run, archive, "-o", out, "--batch-size", "4", "--workers", "0", *extra]


# ----------------------------------------------------------------------------- the rule itself
def test_a_folder_of_files_medtl_did_not_write_is_refused_with_overwrite_too(tmp_path):
    mine = tmp_path / "myproject"
    mine.mkdir()
    (mine / "notes.txt").write_text("three months of notes")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match=r"holds files medtl did not write \(notes.txt\)"):
            with output_folder(mine, "evaluate", overwrite=overwrite):
                pass
    assert _tree(mine) == {"notes.txt": b"three months of notes"}


def test_overwrite_removes_exactly_the_files_the_output_recorded(tmp_path):
    out = tmp_path / "eval"
    with output_folder(out, "evaluate") as folder:
        write_json(folder / "metrics.json", {"auroc": 0.9})
        write_json(folder / "plots" / "roc.json", {})
        mark_complete(folder, "evaluate")
    assert read_ledger(out)[0] == {"medtl.json", "metrics.json", "plots/roc.json"}
    (out / ".metrics.json.k3j4h5g6.tmp").write_text("torn by a kill")  # an atomic write's leftover is medtl's
    with output_folder(out, "evaluate", overwrite=True) as folder:
        assert sorted(p.name for p in folder.iterdir()) == [".medtl-files", ".medtl.lock", "medtl.json"]
        write_json(folder / "metrics.json", {"auroc": 0.8})
        mark_complete(folder, "evaluate")
    (out / "plots").mkdir()
    (out / "plots" / "my-figure.svg").write_text("<svg/>")  # a user's file, put in later
    with pytest.raises(OutputError, match=r"holds plots/my-figure.svg \(medtl did not write it\).*--overwrite neither"):
        with output_folder(out, "audit", overwrite=True):
            pass
    assert (out / "plots" / "my-figure.svg").read_text() == "<svg/>"
    assert json.loads((out / "metrics.json").read_text()) == {"auroc": 0.8}  # refused before anything went


def test_an_output_of_an_older_medtl_without_a_ledger_is_never_emptied(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "medtl.json").write_text(json.dumps({"command": "evaluate", "complete": True}))
    (old / "metrics.json").write_text("{}")
    (old / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not record its files"):
        with output_folder(old, "evaluate", overwrite=True):
            pass
    assert sorted(_tree(old)) == ["medtl.json", "metrics.json", "notes.txt"]


# ----------------------------------------------------------------------------- every command
def test_explain_into_its_own_input_folder_is_refused_and_the_images_stay(report_inputs, tmp_path, capsys):
    run = report_inputs[0]
    data = tmp_path / "data"
    shutil.copytree(SAMPLE / "cxr" / "p001", data)
    (data / "notes.txt").write_text("reading notes")
    before = _tree(data)
    for extra in ([], ["--overwrite"]):
        code, err = _cli(capsys, "explain", run, data, "-o", data, *extra)
        assert code == 1 and "is an input of this command" in err and err.count("\n") == 1
    code, err = _cli(capsys, "explain", run, data, "-o", data / "maps")
    assert code == 1 and "sits inside the input" in err
    assert _tree(data) == before


def test_no_command_writes_into_a_run_a_folder_of_runs_or_user_files(report_inputs, tmp_path, capsys):
    run, archive = report_inputs[:2]
    project = tmp_path / "myproject"
    project.mkdir()
    (project / "analysis.R").write_text("fit <- glm(...)")
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        shutil.copytree(run, runs / name)
    checks = {project: "holds files medtl did not write (analysis.R)", runs: "holds medtl output of its own: a/",
              runs / "a" / "checkpoints": "sits inside a finished run (medtl train)",
              runs / "a": "never writes into a run's own files"}  # fmt: skip
    for target, needle in checks.items():
        before = _tree(target)
        for extra in ([], ["--overwrite"]):
            code, err = _cli(capsys, *_predict(run, archive, target, *extra))
            assert code == 1 and needle in err, err
            code, err = _cli(capsys, "explain", run, archive, "-o", target, *extra)
            assert code == 1 and needle in err, err
        assert _tree(target) == before


def test_overwrite_of_predictions_holding_a_report_with_verdicts_is_refused(report_inputs, report_folder, tmp_path,
                                                                          capsys):  # fmt: skip
    run, archive, predictions = report_inputs[:3]
    pred = tmp_path / "pred"
    shutil.copytree(predictions, pred)
    shutil.copytree(report_folder, pred / "report")  # where an older medtl let a report go
    (pred / "report" / "verdicts.sqlite").write_bytes(b"SQLite format 3\x00 two weeks of reading")
    before = _tree(pred)
    code, err = _cli(capsys, *_predict(run, archive, pred, "--overwrite"))
    assert code == 1 and "holds report/ (a finished `medtl report` output that this one did not write)" in err
    assert _tree(pred) == before
    code, err = _cli(capsys, "report", run, predictions, "-o", predictions / "report")
    assert code == 1 and "sits inside the input" in err and not (predictions / "report").exists()


def test_a_single_file_output_never_replaces_what_medtl_reads(report_inputs, report_folder, tmp_path, capsys):
    run = report_inputs[0]
    from medtl.report.verdicts import VerdictStore

    report = tmp_path / "report"
    shutil.copytree(report_folder, report)
    with VerdictStore(report / "verdicts.sqlite") as store:
        store.record("case-key", "dr_lee", "agree", comment="as I read it")
    labelled = tmp_path / "labels.csv"
    labelled.write_text("path,label\ncxr/p001/IM000101,1\n")
    before = {**{f"r/{k}": v for k, v in _tree(report).items()}, "labels": labelled.read_bytes()}
    for target, needle in ((report / "verdicts.sqlite", "sits inside the input"),
                           (report / "export.csv", "sits inside the input"),
                           (run / "verdicts.csv", "sits inside a finished run"),
                           (labelled, "exists: pass --overwrite")):  # fmt: skip
        code, err = _cli(capsys, "review", "export", report, "-o", target)
        assert code == 1 and needle in err, err
    code, err = _cli(capsys, "review", "export", report, "-o", labelled, "--overwrite")
    assert code == 1 and "is a CSV with other columns (path, label ...)" in err
    code, err = _cli(capsys, "scan", SAMPLE / "cxr" / "p001", "-o", labelled, "--overwrite")
    assert code == 1 and "is a CSV with other columns" in err
    assert {**{f"r/{k}": v for k, v in _tree(report).items()}, "labels": labelled.read_bytes()} == before
    # an earlier file of its own kind is replaced when asked
    export = tmp_path / "verdicts.csv"
    assert _cli(capsys, "review", "export", report, "-o", export)[0] == 0
    assert _cli(capsys, "review", "export", report, "-o", export)[0] == 1
    assert _cli(capsys, "review", "export", report, "-o", export, "--overwrite")[0] == 0


def test_scan_writes_its_manifest_outside_the_scanned_folder_and_replaces_only_its_own(tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE / "cxr" / "p001", data)
    code, err = _cli(capsys, "scan", data, "-o", data / "manifest.csv")
    assert code == 1 and "sits inside the input" in err and not (data / "manifest.csv").exists()
    manifest = tmp_path / "manifest.csv"
    assert _cli(capsys, "scan", data, "-o", manifest)[0] == 0
    code, err = _cli(capsys, "scan", data, "-o", manifest)
    assert code == 1 and "exists: pass --overwrite" in err
    assert _cli(capsys, "scan", data, "-o", manifest, "--overwrite")[0] == 0


# ----------------------------------------------------------------------------- finished means this job
def test_resume_of_a_finished_job_must_be_the_whole_same_job(report_inputs, tmp_path, capsys):
    run = report_inputs[0]
    archive = tmp_path / "archive"
    shutil.copytree(report_inputs[1], archive)
    out = tmp_path / "pred"
    assert _cli(capsys, *_predict(run, archive, out))[0] == 0
    finished = _tree(out)
    capsys.readouterr()
    assert main([os.fspath(a) for a in _predict(run, archive, out, "--resume")]) == 0
    assert "already complete: nothing to do" in capsys.readouterr().out
    other = tmp_path / "other-archive"
    shutil.copytree(archive, other)
    changes = {("--batch-size", "8"): "another --batch-size", ("--saliency", "gradcam"): "another --saliency",
               ("--redact-paths",): "another --redact-paths", ("--shard", "0/2"): "another --shard"}  # fmt: skip
    for extra, needle in changes.items():
        args = _predict(run, archive, out, "--resume")
        args = args[:5] + ["--batch-size", extra[1]] + args[7:] if extra[0] == "--batch-size" else args + list(extra)
        code, err = _cli(capsys, *args)
        assert code == 1 and needle in err and "finished job" in err, (extra, err)
    code, err = _cli(capsys, *_predict(run, other, out, "--resume"))
    assert code == 1 and "another input folder" in err
    dicom = next(archive.rglob("IM*"))
    dicom.write_bytes(dicom.read_bytes() + b"\0")  # edited in place: same names, same count
    code, err = _cli(capsys, *_predict(run, archive, out, "--resume"))
    assert code == 1 and "inputs that have changed since" in err
    assert _tree(out) == finished and describe(out)["complete"]


def _fail_writes_after(monkeypatch, n: int) -> None:
    """Every write after the ``n``-th fails as a full disk does."""
    real, calls = files._write_all, {"n": 0}

    def write(fh, data):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(files, "_write_all", write)


@pytest.mark.parametrize("saliency", [None, "gradcam"])
def test_a_full_disk_stops_predict_unfinished_and_resume_finishes_it(report_inputs, tmp_path, capsys, monkeypatch,
                                                                     saliency):  # fmt: skip
    run, archive = report_inputs[:2]
    extra = ["--saliency", saliency] if saliency else []
    reference = tmp_path / "reference"
    assert _cli(capsys, *_predict(run, archive, reference, *extra))[0] == 0
    out = tmp_path / "pred"
    with monkeypatch.context() as m:
        _fail_writes_after(m, 12)
        code, err = _cli(capsys, *_predict(run, archive, out, *extra))
    assert code == 1 and "No space left on device" in err and "add --resume to the same command" in err
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" not in err
    assert not describe(out)["complete"] and not (out / "summary.json").exists()
    assert _cli(capsys, *_predict(run, archive, out, "--resume", *extra))[0] == 0
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
        _fail_writes_after(m, 3)
        code, err = _cli(capsys, *args, "-o", out)
    assert code == 1 and "No space left on device" in err and "run the same command again" in err
    assert not describe(out)["complete"]
    assert _cli(capsys, *args, "-o", out)[0] == 0 and describe(out)["complete"]  # the retry needs no --overwrite


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", os.fspath(where)],
                          capture_output=True).returncode == 0  # fmt: skip


def test_a_real_full_disk_during_predict_with_maps(report_inputs, tmp_path, capsys):
    run, archive = report_inputs[:2]
    reference = tmp_path / "reference"
    assert _cli(capsys, *_predict(run, archive, reference, "--saliency", "gradcam"))[0] == 0
    need = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, str(need // 2)):
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN); the patched-write test covers the rest")
    try:
        code, err = _cli(capsys, *_predict(run, archive, disk / "pred", "--saliency", "gradcam"))
        assert code == 1 and "No space left on device" in err and "--resume" in err
        assert not describe(disk / "pred")["complete"]
        subprocess.run(["mount", "-o", f"remount,size={need * 4}", os.fspath(disk)], check=True)  # space freed
        assert _cli(capsys, *_predict(run, archive, disk / "pred", "--saliency", "gradcam", "--resume"))[0] == 0
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
    for args in (_predict(run, data, tmp_path / "pred"), ["explain", run, data, "-o", tmp_path / "explain"],
                 ["scan", data, "-o", tmp_path / "manifest.csv"]):  # fmt: skip
        code, err = _cli(capsys, *args)
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
    rows = {r["path"]: r for r in __import__("csv").DictReader(open(pred / "predictions.csv"))}
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
    code, err = _cli(capsys, "explain", run, archive, "-o", run / "explain")
    assert code == 1 and "sits inside" in err and not (run / "explain").exists()
    code, err = _cli(capsys, "explain", run, archive, "--split", "test", "-o", tmp_path / "e")
    assert code == 1 and "--split test chooses rows of a manifest" in err and not (tmp_path / "e").exists()


def test_one_image_has_one_key_in_predict_explain_and_the_report(report_inputs, tmp_path):
    from medtl.explain import explain
    from medtl.predict import predict_folder

    run, archive = report_inputs[:2]
    predict_folder(run, archive, tmp_path / "pred", workers=0, redact_paths=True)
    result = explain(run, [archive], tmp_path / "explain", redact_paths=True, deletion_samples=0)
    predicted = {r["key"] for r in __import__("csv").DictReader(open(tmp_path / "pred" / "predictions.csv"))}
    explained = {r["input"] for r in result["inputs"]}
    assert explained == predicted and len(predicted) >= 7
    assert not any("/" in key for key in explained)  # keys, not paths


def test_every_file_of_every_output_is_recorded_as_medtl_s(report_inputs, report_folder):
    """What ``--overwrite`` may remove is what the ledger lists: a file written around it (by a
    library, a copy, a direct write) would be called the user's and block every later overwrite."""
    from medtl.outputs import _not_ours

    run, _, predictions, evaluation, explanation = report_inputs
    for folder in (run, predictions, evaluation, explanation, report_folder):
        assert _not_ours(folder) is None, folder
    assert {"model.pt", "calibration.json", "threshold.json", "ood.npz"} <= read_ledger(run)[0]
    assert {"logs", "tensorboard", "cache"} <= read_ledger(run)[1]


def test_an_edited_ledger_cannot_make_overwrite_remove_anything_outside_its_folder(tmp_path):
    out = tmp_path / "eval"
    with output_folder(out, "evaluate") as folder:
        write_json(folder / "metrics.json", {})
        mark_complete(folder, "evaluate")
    precious = tmp_path / "precious.txt"
    precious.write_text("not medtl's")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.csv").write_text("a user's table")
    (out / "link").symlink_to(elsewhere, target_is_directory=True)  # a link out of the folder
    with pytest.raises(OutputError, match=r"holds link \(medtl did not write it\)"):
        with output_folder(out, "evaluate", overwrite=True):
            pass
    with open(out / ".medtl-files", "a") as fh:  # a hostile edit: the link, paths through it and out of the folder
        fh.write(f"../precious.txt\n{precious}\nlink\nlink/data.csv\nlink/\n./metrics.json\n")
    with output_folder(out, "evaluate", overwrite=True):
        pass
    assert precious.read_text() == "not medtl's" and (elsewhere / "data.csv").read_text() == "a user's table"
    assert not (out / "metrics.json").exists() and not (out / "link").exists()  # the link itself, not its target
