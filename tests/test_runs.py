"""Run directories lose nothing and never lie: output rules, locks, atomic writes, resume, splits."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from medtl.errors import ConfigError, EvaluationError, LockedError, OutputError
from medtl.evaluate.run import evaluate_run
from medtl.rundir import RunLock, describe, output_folder, write_json
from medtl.train.config import TrainConfig
from medtl.train.finetune import finetune

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"


def _cfg(manifest, **kw):
    base = dict(manifest=str(manifest), size=[32, 32], batch_size=8, epochs=2, val_fraction=0.25, test_fraction=0.25)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "cxr"
    finetune(_cfg(SAMPLE / "cxr.csv"), out)
    return out


# ----------------------------------------------------------------------------- nothing is destroyed
def test_evaluation_never_writes_into_a_run(run, tmp_path):
    before = (run / "metrics.json").read_bytes()
    with pytest.raises(OutputError, match="is a finished run .medtl train. that this command reads"):
        evaluate_run(run, SAMPLE / "cxr.csv", run, n_boot=0, overwrite=True)
    other = tmp_path / "other-run"
    shutil.copytree(run, other)
    with pytest.raises(OutputError, match="never writes into a run's own files"):
        evaluate_run(run, SAMPLE / "cxr.csv", other, n_boot=0, overwrite=True)
    assert (run / "metrics.json").read_bytes() == before  # validation AUROC and best epoch kept
    evaluate_run(run, SAMPLE / "cxr.csv", tmp_path / "eval", n_boot=0)
    with pytest.raises(OutputError, match="already holds a finished `medtl evaluate` output; pass --overwrite"):
        evaluate_run(run, SAMPLE / "cxr.csv", tmp_path / "eval", n_boot=0)
    first = sorted(p.name for p in (tmp_path / "eval").iterdir())
    (tmp_path / "eval" / "roc.png").unlink()  # an output file gone: nothing of the old output may stay
    evaluate_run(run, SAMPLE / "cxr.csv", tmp_path / "eval", n_boot=0, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == first  # replaced, not mixed
    (tmp_path / "eval" / "stale.txt").write_text("a note of mine")
    with pytest.raises(OutputError, match=r"holds stale.txt \(medtl did not write it\)"):
        evaluate_run(run, SAMPLE / "cxr.csv", tmp_path / "eval", n_boot=0, overwrite=True)
    assert (tmp_path / "eval" / "stale.txt").read_text() == "a note of mine"


def test_a_failed_command_does_not_block_the_corrected_one(run, tmp_path):
    with pytest.raises(ConfigError, match="no such manifest file"):
        evaluate_run(run, SAMPLE / "cxr-typo.csv", tmp_path / "eval", n_boot=0)
    assert describe(tmp_path / "eval")["complete"] is False
    evaluate_run(run, SAMPLE / "cxr.csv", tmp_path / "eval", n_boot=0)  # no --overwrite needed
    assert describe(tmp_path / "eval")["complete"] is True


def test_adapt_refuses_another_run_and_replaces_it_whole_when_told(run, tmp_path):
    from medtl.train.domain import adapt_run

    target = tmp_path / "target.csv"
    rows = list(csv.DictReader(open(SAMPLE / "cxr.csv")))
    target.write_text("path\n" + "".join(f"{SAMPLE / r['path']}\n" for r in rows[:8]))
    other = tmp_path / "other"
    finetune(_cfg(SAMPLE / "cxr.csv", epochs=1), other)
    weights = (other / "model.pt").read_bytes()
    with pytest.raises(OutputError, match="already holds a finished run .medtl train."):
        adapt_run(run, target, other)
    assert (other / "model.pt").read_bytes() == weights
    with pytest.raises(ConfigError, match="is the run being adapted"):
        adapt_run(run, target, run, overwrite=True)
    adapt_run(run, target, other, overwrite=True)
    assert not (other / "checkpoints").exists() and not (other / "logs").exists()  # nothing of the old run
    assert describe(other)["command"] == "adapt" and describe(other)["complete"]


def test_outputs_that_are_files_or_read_only_are_refused_up_front(run, tmp_path, capsys):
    from medtl.cli import main

    afile = tmp_path / "a-file"
    afile.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        finetune(_cfg(SAMPLE / "cxr.csv"), afile)
    read_only = Path("/proc/medtl-output")  # not writable even by root, unlike a chmod-ed folder
    with pytest.raises(OutputError, match="cannot write here"):
        evaluate_run(run, SAMPLE / "cxr.csv", read_only, n_boot=0)
    with pytest.raises(OutputError, match="cannot write here"):
        finetune(_cfg(SAMPLE / "cxr.csv"), read_only)
    # the CLI says it in one line, before any work
    assert main(["scan", str(SAMPLE / "cxr"), "-o", str(tmp_path)]) == 1
    assert "is a folder: give a file name" in capsys.readouterr().err
    assert main(["audit", str(afile), "--label", "y", "--score", "p", "-o", str(afile)]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["adapt", str(run), str(afile), "-o", str(afile)]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    holder = RunLock(tmp_path / "r", "train").acquire()
    try:
        with pytest.raises(LockedError, match=rf"being written by process {os.getpid()} .* \(medtl train, since"):
            with output_folder(tmp_path / "r", "train"):
                pass
        # a second `medtl train` into the same folder, from another process, is refused too
        code = subprocess.run([sys.executable, "-m", "medtl", "train", "-o", str(tmp_path / "r"), "--set",
                               f"manifest={SAMPLE / 'cxr.csv'}"], capture_output=True, text=True)  # fmt: skip
        assert code.returncode == 1 and "is being written by process" in code.stderr
        assert "Traceback" not in code.stderr
    finally:
        holder.release()
    with output_folder(tmp_path / "r", "train"):  # released: the next writer gets it
        pass


def test_a_kill_while_writing_leaves_the_old_file_or_the_new_one(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"version": 1})
    script = textwrap.dedent(f"""
        import os, signal, medtl.rundir as r
        real = os.replace
        def die(*a, **k):  # the new file is fully written; killed before it is renamed into place
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = die
        r.write_json({str(target)!r}, {{"version": 2, "payload": list(range(100000))}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"version": 1}  # never a torn file


def test_kill_9_mid_training_leaves_a_run_that_resumes(tmp_path):
    out = tmp_path / "run"
    code = textwrap.dedent(f"""
        import os, signal, lightning as L
        import medtl.train.finetune as ft
        from medtl.train.config import TrainConfig
        class Kill(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.current_epoch == 1 and trainer.global_step % 3 == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
        real = ft.L.Trainer
        ft.L.Trainer = lambda **kw: real(**{{**kw, "callbacks": kw["callbacks"] + [Kill()]}})
        ft.finetune(TrainConfig(manifest={str(SAMPLE / 'cxr.csv')!r}, size=[32, 32], batch_size=8, epochs=3,
                                val_fraction=0.25, test_fraction=0.25), {str(out)!r})
    """)
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == -signal.SIGKILL
    assert not describe(out)["complete"]
    torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)  # whole: written by rename
    res = finetune(_cfg(SAMPLE / "cxr.csv", epochs=3), out)  # the same command resumes it
    assert res.best_epoch <= 2 and describe(out)["complete"]


# ----------------------------------------------------------------------------- resume
def test_resume_refuses_changed_settings_and_names_them(run):
    with pytest.raises(ConfigError, match=r"size \(\[32, 32\] → \[64, 64\]\); lr \(0.001 → 0.0003\).*--restart"):
        finetune(_cfg(SAMPLE / "cxr.csv", lr=3e-4, size=[64, 64]), run)
    with pytest.raises(ConfigError, match="epochs .2 → 1: a run can be extended, not shortened"):
        finetune(_cfg(SAMPLE / "cxr.csv", epochs=1), run)


def test_resume_refuses_a_manifest_that_changed_under_the_run(tmp_path):
    rows = (SAMPLE / "cxr.csv").read_text().splitlines()
    (tmp_path / "cxr").symlink_to(SAMPLE / "cxr")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    finetune(_cfg(tmp_path / "m.csv", epochs=1), tmp_path / "run")
    (tmp_path / "m.csv").write_text("\n".join(rows[:-4]) + "\n")  # four images deleted
    with pytest.raises(ConfigError, match="the data changed since this run started"):
        finetune(_cfg(tmp_path / "m.csv", epochs=2), tmp_path / "run")


@pytest.mark.parametrize("ema", [0.0, 0.9])  # with EMA, checkpoints carry the average and the raw weights
def test_a_run_killed_and_resumed_equals_an_uninterrupted_one(tmp_path, ema):
    code = textwrap.dedent(f"""
        import os, signal, lightning as L
        import medtl.train.finetune as ft
        from medtl.train.config import TrainConfig
        class Kill(L.Callback):  # kill -9 as epoch 2 begins: last.ckpt holds epoch 1
            def on_train_epoch_start(self, trainer, *args):
                if trainer.current_epoch == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
        real = ft.L.Trainer
        ft.L.Trainer = lambda **kw: real(**{{**kw, "callbacks": kw["callbacks"] + [Kill()]}})
        ft.finetune(TrainConfig(manifest={str(SAMPLE / 'cxr.csv')!r}, size=[32, 32], batch_size=8, epochs=4,
                                val_fraction=0.25, test_fraction=0.25, ema={ema}), {str(tmp_path / 'killed')!r})
    """)
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == -signal.SIGKILL
    resumed = finetune(_cfg(SAMPLE / "cxr.csv", epochs=4, ema=ema), tmp_path / "killed").model.state_dict()
    whole = finetune(_cfg(SAMPLE / "cxr.csv", epochs=4, ema=ema), tmp_path / "whole").model.state_dict()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert (tmp_path / "killed" / "curves.csv").read_text() == (tmp_path / "whole" / "curves.csv").read_text()


# ----------------------------------------------------------------------------- splits
def test_a_named_patient_column_must_exist_and_none_means_a_per_image_split(tmp_path):
    with pytest.raises(ConfigError, match="no patient column 'pid'.*could sit in two splits"):
        finetune(_cfg(SAMPLE / "cxr.csv", patient_column="pid"), tmp_path / "r1")
    plain = tmp_path / "plain.csv"
    rows = list(csv.DictReader(open(SAMPLE / "cxr.csv")))
    plain.write_text("path,label\n" + "".join(f"{SAMPLE / r['path']},{r['label']}\n" for r in rows))
    finetune(_cfg(plain, epochs=1), tmp_path / "r2")
    card = (tmp_path / "r2" / "model_card.md").read_text()
    assert "by image: the manifest has no patient column" in card and "flatter the test result" in card


def test_evaluation_uses_the_stored_split_from_anywhere_after_rows_are_deleted(run, tmp_path, monkeypatch):
    split = json.loads((run / "split.json").read_text())
    assert "cxr/" not in json.dumps(split["keys"])  # keys, not paths
    test_keys = set(split["keys"]["test"])
    # an edited copy of the manifest beside the same images: two test rows and two others deleted
    from medtl.data import read_manifest
    from medtl.data.splits import record_key

    manifest = read_manifest(SAMPLE / "cxr.csv")
    in_test = [record_key(manifest, i) in test_keys for i in range(len(manifest))]
    drop = [i for i, t in enumerate(in_test) if t][:2] + [i for i, t in enumerate(in_test) if not t][:2]
    (tmp_path / "cxr").symlink_to(SAMPLE / "cxr")
    lines = (SAMPLE / "cxr.csv").read_text().splitlines()
    kept = [line for i, line in enumerate(lines[1:]) if i not in drop]
    (tmp_path / "edited.csv").write_text("\n".join([lines[0], *kept]) + "\n")
    monkeypatch.chdir(tmp_path / "cxr")  # and from another working directory
    full = evaluate_run(run, SAMPLE / "cxr.csv", tmp_path / "full", split="test", n_boot=0)
    part = evaluate_run(run, tmp_path / "edited.csv", tmp_path / "part", split="test", n_boot=0)
    assert full["n"] == len(test_keys) and full["notes"] == []
    tested = {r["path"] for r in csv.DictReader(open(tmp_path / "full" / "predictions.csv"))}
    again = {r["path"] for r in csv.DictReader(open(tmp_path / "part" / "predictions.csv"))}
    assert again <= tested  # the stored test images, never a training image of the rebuilt split
    assert len(tested - again) == 2 and part["notes"] == [
        f"2 of the run's {len(test_keys)} test images are no longer in the manifest; the other {part['n']} were scored"
    ]
    other = tmp_path / "other.csv"
    other.write_text("path,label\nx.png,0\n")
    with pytest.raises(EvaluationError, match="holds none of the run's 12 test images"):
        evaluate_run(run, other, tmp_path / "none", split="test", n_boot=0)


def test_the_same_image_under_two_patients_stays_in_one_part(tmp_path):
    from PIL import Image as PILImage

    from medtl.train.finetune import run_data

    rows = list(csv.DictReader(open(SAMPLE / "cxr.csv")))
    out = tmp_path / "dups.csv"
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient_id"])
        for r in rows:
            w.writerow([SAMPLE / r["path"], r["label"], r["patient_id"]])
        # three re-exports of one radiograph under new patient IDs: a PNG, a JPEG, a larger PNG
        from medtl.io import load_image

        img = load_image(SAMPLE / rows[3]["path"]).array.T
        img8 = (255 * (img - img.min()) / (img.max() - img.min())).astype(np.uint8)
        PILImage.fromarray(img8).save(tmp_path / "copy.png")
        PILImage.fromarray(img8).save(tmp_path / "copy.jpg", quality=80)
        PILImage.fromarray(img8).resize((256, 256)).save(tmp_path / "big.png")
        for i, name in enumerate(("copy.png", "copy.jpg", "big.png")):
            w.writerow([tmp_path / name, rows[3]["label"], f"MRN-COPY-{i}"])
    data = run_data(_cfg(out))
    copies = [len(data.manifest) - 3 + k for k in range(3)] + [3]
    assert sorted(data.duplicates[0]) == sorted(copies) and len(data.duplicates) == 1  # no false merges
    parts = [name for name in ("train", "val", "test") if any(i in getattr(data.split, name) for i in copies)]
    assert len(parts) == 1
    assert "1 group(s) of identical or near-identical images kept in one part" in data.description


def test_evaluating_data_of_another_task_says_which_check_failed(run, tmp_path):
    multi = tmp_path / "multi.csv"
    rows = list(csv.DictReader(open(SAMPLE / "cxr.csv")))
    multi.write_text("path,label\n" + "".join(f"{SAMPLE / r['path']},{i % 4}\n" for i, r in enumerate(rows)))
    with pytest.raises(EvaluationError, match="holds 2, 3, but the run predicts 2 classes"):
        evaluate_run(run, multi, tmp_path / "e1", n_boot=0)
    ct = tmp_path / "ct.csv"
    ct.write_text("path,label\n" + "".join(f"{SAMPLE / r['path']},0\n" for r in csv.DictReader(open(SAMPLE / "ct.csv"))))
    with pytest.raises(EvaluationError, match="the run takes 2D images, but its images are 3D"):
        evaluate_run(run, ct, tmp_path / "e2", n_boot=0)


# ----------------------------------------------------------------------------- one line, never a traceback
@pytest.mark.parametrize(
    "setting, message",
    [
        ("epochs=0", "--set epochs=0: epochs must be >= 1"),
        ("epochs=1.5", "epochs must be a whole number"),
        ("epochs=ten", "epochs must be a number, not 'ten'"),
        ("batch_size=0", "batch_size must be >= 1"),
        ("lr=-1", "lr must be > 0"),
        ("lr=.nan", "lr must be a finite number"),
        ("dropout=1.5", "dropout must be < 1"),
        ("flips=[2]", "flips must list axes 0..1"),
        ("size=[-4,4]", "size must be positive whole numbers"),
        ("npz=x.npz", "npz and manifest are both set"),
        ("backbone=resnet19", "--set backbone=resnet19: unknown backbone 'resnet19'; did you mean 'resnet18'"),
        ("accelerator=gpu", "no GPU is visible"),
    ],
)
def test_each_bad_value_is_one_line_naming_its_source(setting, message, tmp_path, capsys, monkeypatch):
    from medtl.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on the CPU machines the suite targets
    code = main(["train", str(REPO / "configs" / "cxr-2d.yaml"), "-o", str(tmp_path / "r"), "--set", setting])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_nan_label_is_named_with_its_line(tmp_path):
    rows = list(csv.DictReader(open(SAMPLE / "cxr.csv")))
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\n" + "".join(f"{SAMPLE / r['path']},{'' if i == 2 else r['label']}\n"
                                            for i, r in enumerate(rows)))  # fmt: skip
    with pytest.raises(ConfigError, match=r"1 row\(s\) have no label \(line 4\)"):
        finetune(_cfg(bad), tmp_path / "r")


def test_ctrl_c_during_training_says_how_to_resume_and_the_run_resumes(tmp_path):
    import time

    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "medtl", "train", "-o", str(out), "--set", f"manifest={SAMPLE / 'cxr.csv'}",
           "--set", "size=32", "--set", "epochs=200", "--set", "patience=200"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until training runs: one line per epoch without a terminal
        if line.startswith("epoch 1 "):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "medtl train: interrupted; run the same command again to resume" in err and "Traceback" not in err
    assert describe(out)["complete"] is False and (out / "checkpoints" / "last.ckpt").is_file()


def test_a_damaged_cache_file_is_computed_again(tmp_path):
    from medtl.data import PreprocessSpec, read_manifest
    from medtl.data.dataset import prepare

    m = read_manifest(SAMPLE / "cxr.csv")
    spec = PreprocessSpec(size=(16, 16))
    first = prepare(m, [0, 1], spec, cache_dir=tmp_path)
    expected = first.dataset[0]["image"]
    for f in tmp_path.rglob("*.pt"):
        f.write_bytes(b"")  # a full disk, a copy cut short
    again = prepare(m, [0, 1], spec, cache_dir=tmp_path)
    assert again.failures == [] and torch.equal(again.dataset[0]["image"], expected)


def test_training_without_a_terminal_prints_one_line_per_epoch(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "medtl", "train", "-o", str(tmp_path / "r"), "--set",
                           f"manifest={SAMPLE / 'cxr.csv'}", "--set", "size=32", "--set", "epochs=2", "--set",
                           "saliency_check=0"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and "val_auroc" in lines[0]


# ----------------------------------------------------------------------------- identifiers in paths
def test_shareable_outputs_name_no_path_and_redaction_keeps_a_private_key_file(run, tmp_path):
    res = evaluate_run(run, SAMPLE / "cxr.csv", tmp_path / "e", n_boot=0, redact_paths=True)
    shared = ["metrics.json", "audit.json", "groups.csv", "audit_section.html", "predictions.csv"]
    for name in shared:
        text = (tmp_path / "e" / name).read_text()
        assert str(SAMPLE) not in text and "p001" not in text, name
    for name in ("model_card.md", "metrics.json"):
        assert str(SAMPLE) not in (run / name).read_text(), name
    keys = list(csv.DictReader(open(tmp_path / "e" / "path_keys.csv")))
    assert len(keys) == res["n"] and keys[0]["path"].startswith(str(SAMPLE))
    plain = evaluate_run(run, SAMPLE / "cxr.csv", tmp_path / "p", n_boot=0)
    first = next(csv.DictReader(open(tmp_path / "p" / "predictions.csv")))
    assert plain["n"] == res["n"] and first["path"].startswith("cxr/")  # relative to the manifest's folder


def test_ages_above_89_are_90_everywhere(tmp_path):
    from medtl.data import read_manifest

    m = tmp_path / "m.csv"
    m.write_text("path,label,age\na.png,0,95\nb.png,1,093Y\nc.png,0,45\n")
    assert [r.groups["age"] for r in read_manifest(m).records] == ["90", "90", "45"]


def test_audit_resamples_the_patient_column_medtl_wrote_and_judges_groups_by_patients(run, tmp_path, capsys):
    from medtl.cli import main
    from medtl.evaluate.audit import audit

    evaluate_run(run, SAMPLE / "cxr.csv", tmp_path / "e", n_boot=0)
    preds = tmp_path / "e" / "predictions.csv"
    assert main(["audit", str(preds), "--label", "label", "--score", "score", "--groups", "sex", "--n-boot", "20",
                 "-o", str(tmp_path / "a")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "resampled by patient (column patient, 40 patients)" in out
    # 12 rows of 3 patients are 3 patients, not 12: too small for min_group=4, whatever the rows
    rows = [{"y": i % 2, "p": 0.2 + 0.6 * (i % 2), "g": "a", "patient": f"p{i % 3}"} for i in range(12)]
    rows += [{"y": i % 2, "p": 0.3 + 0.4 * (i % 2), "g": "b", "patient": f"q{i}"} for i in range(12)]
    res = audit({k: [r[k] for r in rows] for k in rows[0]}, "y", "p", "g", n_boot=0, min_group=4, min_class=5)
    assert res.groups["g"]["a"]["status"] == "too small" and res.settings["resampling_unit"] == "patient"
    few = audit({k: [r[k] for r in rows] for k in rows[0]}, "y", "p", "g", n_boot=0, min_group=1, min_class=7)
    assert few.groups["g"]["b"]["status"] == "too few positives"  # 6 positives < 7


def test_cli_evaluate_reports_operating_point_groups_and_notes(run, tmp_path, capsys):
    from medtl.cli import main

    assert main(["evaluate", str(run), str(SAMPLE / "cxr.csv"), "--split", "test", "--groups", "sex", "--n-boot",
                 "20", "-o", str(tmp_path / "e")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "resampled by patient" in out and "sensitivity" in out and "specificity" in out
    assert "not compared by sex: F (too small), M (too small)" in out  # 12 test images, min_group 30


def test_convert_refuses_an_extension_it_cannot_write_before_reading(tmp_path, capsys):
    from medtl.cli import main

    assert main(["convert", str(SAMPLE / "ct"), str(tmp_path / "ct.nrrd")]) == 1
    err = capsys.readouterr().err
    assert "NIfTI files end in .nii or .nii.gz" in err and "Traceback" not in err


def test_files_written_atomically_get_the_permissions_the_umask_gives(tmp_path):
    """mkstemp's owner-only mode must not leak into outputs: colleagues the umask shares a folder
    with can open the report, and `umask 077` still keeps everything private."""
    import stat

    from medtl.io import scan
    from medtl.rundir import write_text

    old = os.umask(0o027)
    try:
        write_text(tmp_path / "shared.json", "{}")
        scan(Path(__file__).parent.parent / "sample_data" / "nifti", workers=1).to_csv(tmp_path / "m.csv")
        os.umask(0o077)
        write_text(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "m.csv").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
