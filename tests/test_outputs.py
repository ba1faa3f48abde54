"""No command destroys a user's files (docs/runs.md, "Output folders: the rule"): what ``--overwrite``
may remove, where an output may go, and what a single-file output may replace."""

from __future__ import annotations

import json
import shutil

import pytest
from output_helpers import SAMPLE, cli, predict_args, tree

from medtl.errors import OutputError
from medtl.files import read_ledger, write_json
from medtl.outputs import describe, mark_complete, output_folder


# ----------------------------------------------------------------------------- the rule itself
def test_a_folder_of_files_medtl_did_not_write_is_refused_with_overwrite_too(tmp_path):
    mine = tmp_path / "myproject"
    mine.mkdir()
    (mine / "notes.txt").write_text("three months of notes")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match=r"holds files medtl did not write \(notes.txt\)"):
            with output_folder(mine, "evaluate", overwrite=overwrite):
                pass
    assert tree(mine) == {"notes.txt": b"three months of notes"}


def test_overwrite_removes_exactly_the_files_the_output_recorded(tmp_path):
    out = tmp_path / "eval"
    with output_folder(out, "evaluate") as folder:
        write_json(folder / "metrics.json", {"auroc": 0.9})
        write_json(folder / "plots" / "roc.json", {})
        mark_complete(folder, "evaluate")
    assert read_ledger(out)[0] == {"metrics.json", "plots/roc.json"}
    (out / ".metrics.json.medtl-k3j4h5g6.tmp").write_text("torn by a kill")  # an atomic write's leftover is medtl's
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
    assert sorted(tree(old)) == ["medtl.json", "metrics.json", "notes.txt"]


# ----------------------------------------------------------------------------- every command
def test_explain_into_its_own_input_folder_is_refused_and_the_images_stay(report_inputs, tmp_path, capsys):
    run = report_inputs[0]
    data = tmp_path / "data"
    shutil.copytree(SAMPLE / "cxr" / "p001", data)
    (data / "notes.txt").write_text("reading notes")
    before = tree(data)
    for extra in ([], ["--overwrite"]):
        code, err = cli(capsys, "explain", run, data, "-o", data, *extra)
        assert code == 1 and "is an input of this command" in err and err.count("\n") == 1
    code, err = cli(capsys, "explain", run, data, "-o", data / "maps")
    assert code == 1 and "sits inside the input" in err
    assert tree(data) == before


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
        before = tree(target)
        for extra in ([], ["--overwrite"]):
            code, err = cli(capsys, *predict_args(run, archive, target, *extra))
            assert code == 1 and needle in err, err
            code, err = cli(capsys, "explain", run, archive, "-o", target, *extra)
            assert code == 1 and needle in err, err
        assert tree(target) == before


def test_overwrite_of_predictions_holding_a_report_with_verdicts_is_refused(report_inputs, report_folder, tmp_path,
                                                                          capsys):  # fmt: skip
    run, archive, predictions = report_inputs[:3]
    pred = tmp_path / "pred"
    shutil.copytree(predictions, pred)
    shutil.copytree(report_folder, pred / "report")  # where an older medtl let a report go
    (pred / "report" / "verdicts.sqlite").write_bytes(b"SQLite format 3\x00 two weeks of reading")
    before = tree(pred)
    code, err = cli(capsys, *predict_args(run, archive, pred, "--overwrite"))
    assert code == 1 and "holds report/ (a finished `medtl report` output that this one did not write)" in err
    assert tree(pred) == before
    code, err = cli(capsys, "report", run, predictions, "-o", predictions / "report")
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
    before = {**{f"r/{k}": v for k, v in tree(report).items()}, "labels": labelled.read_bytes()}
    for target, needle in ((report / "verdicts.sqlite", "sits inside the input"),
                           (report / "export.csv", "sits inside the input"),
                           (run / "verdicts.csv", "sits inside a finished run"),
                           (labelled, "exists: pass --overwrite")):  # fmt: skip
        code, err = cli(capsys, "review", "export", report, "-o", target)
        assert code == 1 and needle in err, err
    code, err = cli(capsys, "review", "export", report, "-o", labelled, "--overwrite")
    assert code == 1 and "is a CSV with other columns (path, label ...)" in err
    code, err = cli(capsys, "scan", SAMPLE / "cxr" / "p001", "-o", labelled, "--overwrite")
    assert code == 1 and "is a CSV with other columns" in err
    assert {**{f"r/{k}": v for k, v in tree(report).items()}, "labels": labelled.read_bytes()} == before
    # an earlier file of its own kind is replaced when asked
    export = tmp_path / "verdicts.csv"
    assert cli(capsys, "review", "export", report, "-o", export)[0] == 0
    assert cli(capsys, "review", "export", report, "-o", export)[0] == 1
    assert cli(capsys, "review", "export", report, "-o", export, "--overwrite")[0] == 0


def test_scan_writes_its_manifest_outside_the_scanned_folder_and_replaces_only_its_own(tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE / "cxr" / "p001", data)
    code, err = cli(capsys, "scan", data, "-o", data / "manifest.csv")
    assert code == 1 and "sits inside the input" in err and not (data / "manifest.csv").exists()
    manifest = tmp_path / "manifest.csv"
    assert cli(capsys, "scan", data, "-o", manifest)[0] == 0
    code, err = cli(capsys, "scan", data, "-o", manifest)
    assert code == 1 and "exists: pass --overwrite" in err
    assert cli(capsys, "scan", data, "-o", manifest, "--overwrite")[0] == 0


def test_every_file_of_every_output_is_recorded_as_medtl_s(report_inputs, report_folder):
    """What ``--overwrite`` may remove is what the ledger lists: a file written around it (by a
    library, a copy, a direct write) would be called the user's and block every later overwrite."""
    from medtl.outputs import _not_ours

    run, _, predictions, evaluation, explanation = report_inputs
    for folder in (run, predictions, evaluation, explanation, report_folder):
        assert _not_ours(folder) is None, folder
    recorded = read_ledger(run)[0]
    assert {"model.pt", "calibration.json", "threshold.json", "ood.npz", "checkpoints/last.ckpt"} <= recorded
    for library in ("logs/", "tensorboard/", "cache/"):  # Lightning's and MONAI's files, one by one
        assert any(f.startswith(library) for f in recorded), library


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


# ----------------------------------------------------------------------------- found by a hostile probe
def test_replacing_an_output_keeps_the_verdicts_and_user_files_of_the_outputs_nested_in_it(tmp_path):
    def demo(notes: bool = False) -> None:
        with output_folder(tmp_path / "demo", "demo") as held:
            with output_folder(held / "report", "report", overwrite=True) as report:
                write_json(report / "report.json", {})
                mark_complete(report, "report")
            mark_complete(held, "demo")

    demo()
    (tmp_path / "demo" / "report" / "verdicts.sqlite").write_bytes(b"SQLite format 3\x00 two weeks of reading")
    assert "report/medtl.json" not in read_ledger(tmp_path / "demo")[0]  # a nested marker is the nested output's
    demo()  # a second demo: the report is rebuilt, its verdicts stay
    assert (tmp_path / "demo" / "report" / "verdicts.sqlite").read_bytes().endswith(b"two weeks of reading")
    (tmp_path / "demo" / "report" / "my-notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds report/my-notes.txt \(medtl did not write it\)"):
        demo()
    assert (tmp_path / "demo" / "report" / "my-notes.txt").read_text() == "mine"


def test_a_ledger_cannot_name_verdicts_and_a_user_file_named_like_a_temporary_one_is_a_user_s(tmp_path):
    out = tmp_path / "report"
    with output_folder(out, "report") as folder:
        write_json(folder / "report.json", {})
        mark_complete(folder, "report")
    (out / "verdicts.sqlite").write_bytes(b"SQLite format 3\x00 verdicts")
    with open(out / ".medtl-files", "a") as fh:
        fh.write("verdicts.sqlite\n")
    with output_folder(out, "report", overwrite=True):
        pass
    assert (out / "verdicts.sqlite").read_bytes().endswith(b"verdicts")
    (out / ".report.json.backup01.tmp").write_text("my backup")  # not how medtl names its temporary files
    with pytest.raises(OutputError, match=r"holds .report.json.backup01.tmp \(medtl did not write it\)"):
        with output_folder(out, "report", overwrite=True):
            pass


def test_a_ledger_line_cut_by_a_full_disk_never_joins_the_next(tmp_path):
    from medtl.files import claim, hold, release

    out = tmp_path / "out"
    with output_folder(out, "predict") as folder:
        write_json(folder / "a.json", {})
    with open(out / ".medtl-files", "a") as fh:
        fh.write("maps/0001-cut-by-the-dis")  # no newline: the write that would have ended it failed
    assert "maps/0001-cut-by-the-dis" not in read_ledger(out)[0]
    hold(out)
    try:
        claim(out / "maps" / "0002.png")
    finally:
        release(out)
    assert "maps/0002.png" in read_ledger(out)[0]


def test_user_files_in_a_finished_run_s_log_folders_are_never_removed(report_inputs, tmp_path):
    from medtl.rundir import read_config
    from medtl.train.finetune import finetune

    run = tmp_path / "run"
    shutil.copytree(report_inputs[0], run)
    logs = next(p for p in (run / "logs").iterdir() if p.is_dir())
    (logs / "my-plot.R").write_text("plot(metrics)")
    with pytest.raises(OutputError, match=r"holds logs/.*/my-plot.R \(medtl did not write it\)"):
        finetune(read_config(run), run, resume=False)  # --restart
    assert (logs / "my-plot.R").read_text() == "plot(metrics)"


def test_training_again_with_the_same_settings_changes_nothing_and_restart_replaces_only_a_run(
    report_inputs, tmp_path, capsys
):  # fmt: skip
    from medtl.rundir import read_config
    from medtl.train.finetune import finetune

    run = tmp_path / "run"
    shutil.copytree(report_inputs[0], run)
    before = tree(run)
    result = finetune(read_config(run), run)  # the same command as the one that trained it
    assert result.already_complete and result.val_auroc == describe(run)["val_auroc"]
    assert tree(run) == before  # no byte rewritten: outputs made from the run still match its digest
    evaluation = tmp_path / "eval"
    shutil.copytree(report_inputs[3], evaluation)
    with pytest.raises(OutputError, match="already holds a finished `medtl evaluate` output"):
        finetune(read_config(run), evaluation, resume=False)
    assert describe(evaluation)["command"] == "evaluate"


def test_convert_writes_whole_files_and_replaces_a_link_never_its_target(tmp_path, capsys, monkeypatch):
    import numpy as np
    from output_helpers import fail_writes_after

    from medtl.io import Image, save_nifti

    precious = tmp_path / "precious.nii"
    save_nifti(Image(np.ones((4, 4, 2), np.float32), np.eye(4)), precious)  # a user's own volume
    mine = precious.read_bytes()
    link = tmp_path / "out.nii"
    link.symlink_to(precious)
    series = SAMPLE / "ct" / "p101" / "series01"
    assert cli(capsys, "convert", series, link, "--overwrite")[0] == 0
    assert precious.read_bytes() == mine and not link.is_symlink()
    good = link.read_bytes()
    with monkeypatch.context() as m:
        fail_writes_after(m, 0)
        code, err = cli(capsys, "convert", series, link, "--overwrite")
    assert code == 1 and f"{link}: could not be written (No space left on device)" in err
    assert link.read_bytes() == good  # the earlier file whole, never half a volume


def test_scan_refuses_one_file_for_the_manifest_and_the_errors(tmp_path, capsys):
    code, err = cli(capsys, "scan", SAMPLE / "cxr" / "p001", "-o", tmp_path / "same.csv", "--errors",
                    tmp_path / "." / "same.csv")  # fmt: skip
    assert code == 1 and "is also the manifest's file" in err and not (tmp_path / "same.csv").exists()


def test_outputs_never_go_where_a_later_scan_of_the_inputs_would_read_them(report_inputs, tmp_path, capsys):
    run, archive, predictions = report_inputs[:3]
    data = tmp_path / "data"
    shutil.copytree(SAMPLE / "cxr", data / "cxr")
    shutil.copy(SAMPLE / "cxr.csv", data / "cxr.csv")
    for command in (["evaluate", run, data / "cxr.csv", "--n-boot", "10"], ["explain", run, data / "cxr.csv"]):
        code, err = cli(capsys, *command, "-o", data / "cxr" / "results")
        assert code == 1 and "sits inside the input" in err, err
    code, err = cli(capsys, "report", run, predictions, "-o", archive / "report")  # the folder predict read
    assert code == 1 and "sits inside the input" in err and not (archive / "report").exists()
    images = tmp_path / "images"
    shutil.copytree(SAMPLE / "cxr" / "p002", images)
    out = tmp_path / "pred"
    assert cli(capsys, *predict_args(run, images, out))[0] == 0
    (images / "results").symlink_to(out, target_is_directory=True)  # the scan follows it into the output
    code, err = cli(capsys, *predict_args(run, images, out, "--overwrite"))
    assert code == 1 and "is read as an input too" in err


def test_review_export_of_a_report_without_verdicts_leaves_the_report_as_it_is(report_folder, tmp_path, capsys):
    report = tmp_path / "report"
    shutil.copytree(report_folder, report)
    (report / "verdicts.sqlite").unlink(missing_ok=True)
    before = tree(report)
    assert cli(capsys, "review", "export", report, "-o", tmp_path / "v.csv")[0] == 0
    assert tree(report) == before and (tmp_path / "v.csv").read_text().startswith("study,reviewer,verdict")


def test_a_replaced_output_that_stopped_half_way_keeps_its_reviewed_nested_report(tmp_path):
    def demo(crash: bool = False) -> None:
        with output_folder(tmp_path / "demo", "demo") as held:
            if crash:  # stopped after the old output went, before the report was made again
                raise KeyboardInterrupt
            with output_folder(held / "report", "report", overwrite=True) as report:
                write_json(report / "report.json", {})
                mark_complete(report, "report")
            mark_complete(held, "demo")

    demo()
    (tmp_path / "demo" / "report" / "verdicts.sqlite").write_bytes(b"SQLite format 3\x00 verdicts")
    with pytest.raises(KeyboardInterrupt):
        demo(crash=True)
    demo()  # the same command again finishes it: the report and its verdicts are still the demo's own
    assert (tmp_path / "demo" / "report" / "verdicts.sqlite").read_bytes().endswith(b"verdicts")
    assert describe(tmp_path / "demo")["complete"]


def test_a_run_given_more_epochs_never_takes_a_user_s_log_files_as_its_own(report_inputs, tmp_path):
    import dataclasses

    from medtl.rundir import read_config
    from medtl.train.finetune import finetune

    run = tmp_path / "run"
    shutil.copytree(report_inputs[0], run)
    logs = next(p for p in (run / "logs").iterdir() if p.is_dir())
    (logs / "my_notes.txt").write_text("mine")
    cfg = read_config(run)
    finetune(dataclasses.replace(cfg, epochs=cfg.epochs + 1), run)  # extended by one epoch
    assert describe(run)["complete"] and not any("my_notes" in f for f in read_ledger(run)[0])
    with pytest.raises(OutputError, match=r"holds logs/.*/my_notes.txt \(medtl did not write it\)"):
        finetune(cfg, run, resume=False)
    assert (logs / "my_notes.txt").read_text() == "mine"


def test_the_same_train_on_changed_data_is_refused_not_called_finished(tmp_path):
    from medtl.errors import ConfigError
    from medtl.train.config import TrainConfig
    from medtl.train.finetune import finetune

    manifest = tmp_path / "cxr.csv"
    rows = (SAMPLE / "cxr.csv").read_text().splitlines()
    manifest.write_text("\n".join(rows).replace("cxr/", f"{SAMPLE}/cxr/") + "\n")
    cfg = TrainConfig(manifest=str(manifest), size=[32, 32], batch_size=8, epochs=1, val_fraction=0.25,
                      test_fraction=0.25, seed=0)  # fmt: skip
    run = tmp_path / "run"
    finetune(cfg, run)
    assert finetune(cfg, run).already_complete
    manifest.write_text("\n".join(r for r in rows if "p001/" not in r and "p002/" not in r).replace(
        "cxr/", f"{SAMPLE}/cxr/") + "\n")  # fmt: skip
    with pytest.raises(ConfigError, match="the data changed since this run started"):
        finetune(cfg, run)


def test_scan_refuses_a_manifest_in_a_folder_it_reads_through_a_link(tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(SAMPLE / "cxr" / "p002", images)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(SAMPLE / "cxr" / "p003", elsewhere)
    (images / "link").symlink_to(elsewhere, target_is_directory=True)
    code, err = cli(capsys, "scan", images, "-o", elsewhere / "manifest.csv")
    assert code == 1 and "is in a folder the scan reads" in err and not (elsewhere / "manifest.csv").exists()
