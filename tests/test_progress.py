"""Signs of life without a terminal (medtl.progress): lines at 5 % steps and every 30 s with counts
and an ETA, a last line, and `medtl train` / `medtl explain` writing them into a log file."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from medtl.progress import FIRST, LineProgress, progress_bar, track

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_line_at_every_5_percent_with_counts_elapsed_and_eta_then_a_last_line():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(2000, "explain", "map", stream=out, clock=clock)
    for _ in range(2000):
        clock.now += 1.0  # 1 s a map: 5 % is 100 s
        bar.update()
    assert "(100%)" not in _lines(out)[-1]  # the end has a line of its own, printed by close
    bar.close()
    bar.close()  # once
    lines = _lines(out)
    # 5 % (100 s) comes later than 30 s: the 30 s lines come between the 5 % lines
    assert lines[0] == "explain: 30/2000 maps (1%), 0:00:30 elapsed, ETA 0:32:50"
    assert "explain: 100/2000 maps (5%), 0:01:40 elapsed, ETA 0:31:40" in lines
    assert "explain: 1000/2000 maps (50%), 0:16:40 elapsed, ETA 0:16:40" in lines
    assert lines[-1] == "explain: 2000/2000 maps (100%) done in 0:33:20"
    assert all(re.search(r", ETA \d+:\d\d:\d\d$", line) for line in lines[:-1])


def test_fast_steps_give_a_line_per_5_percent_and_never_more_than_one_a_second():
    clock, out = Clock(), io.StringIO()
    with LineProgress(100, "cache", "image", stream=out, clock=clock) as bar:
        for _ in range(100):
            clock.now += 2.0  # 5 % every 10 s
            bar.update()
    lines = _lines(out)
    assert [line.split(",")[0] for line in lines[:3]] == ["cache: 5/100 images (5%)", "cache: 10/100 images (10%)",
                                                          "cache: 15/100 images (15%)"]  # fmt: skip
    assert len(lines) == 19 + 1 and lines[-1] == "cache: 100/100 images (100%) done in 0:03:20"
    clock, out = Clock(), io.StringIO()
    with LineProgress(10_000, "scan", "file", stream=out, clock=clock) as bar:
        for _ in range(10_000):
            clock.now += 0.002  # 20 s in all: 5 % every second would be fine, 200 updates a second are not
            bar.update()
    times = [int(re.search(r"0:00:(\d\d) elapsed", line).group(1)) for line in _lines(out)[:-1]]
    assert times and times[0] >= FIRST and all(b - a >= 1 for a, b in zip(times, times[1:], strict=False))
    assert len(times) <= 20 - FIRST


def test_slow_steps_and_unknown_totals_give_a_line_every_30_s():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(1000, "sanity check", "step", stream=out, clock=clock)
    for _ in range(12):
        clock.now += 10.0  # 5 % would take 500 s
        bar.update()
    assert _lines(out) == ["sanity check: 3/1000 steps (0%), 0:00:30 elapsed, ETA 2:46:10",
                           "sanity check: 6/1000 steps (0%), 0:01:00 elapsed, ETA 2:45:40",
                           "sanity check: 9/1000 steps (0%), 0:01:30 elapsed, ETA 2:45:10",
                           "sanity check: 12/1000 steps (1%), 0:02:00 elapsed, ETA 2:44:40"]  # fmt: skip
    clock, out = Clock(), io.StringIO()
    with LineProgress(None, "download", "B", stream=out, clock=clock) as bar:
        for _ in range(7):
            clock.now += 10.0
            bar.update(3 << 20)
    assert _lines(out) == ["download: 9.0 MB, 0:00:30 elapsed", "download: 18.0 MB, 0:01:00 elapsed",
                           "download: 21.0 MB done in 0:01:10"]  # fmt: skip


def test_a_resumed_job_counts_what_was_done_and_times_only_this_session():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(1000, "predict", "image", initial=500, stream=out, clock=clock)
    for _ in range(25):
        clock.now += 1.0
        bar.update(2)
    assert _lines(out) == ["predict: 550/1000 images (55%), 0:00:25 elapsed, ETA 0:03:45"]


def test_short_phases_print_only_their_last_line_and_side_steps_nothing():
    clock, out = Clock(), io.StringIO()
    for leave in (True, False):
        with LineProgress(50, "colour", "image", leave=leave, stream=out, clock=clock) as bar:
            for _ in range(50):
                clock.now += 0.05
                bar.update()
    assert _lines(out) == ["colour: 50/50 images (100%) done in 0:00:02"]
    with LineProgress(2, "colour", "image", leave=False, stream=out, clock=clock) as bar:
        clock.now += FIRST  # a side step that took long is reported
        bar.update(2)
    assert _lines(out)[-1] == "colour: 2/2 images (100%) done in 0:00:05"


def test_an_error_leaves_no_last_line_after_its_message():
    out = io.StringIO()
    with pytest.raises(ValueError):
        for k in track(range(10), "cache", "image", stream=out):
            if k == 3:
                raise ValueError("a bad image")
    with pytest.raises(ValueError), progress_bar(10, "predict", "image", stream=out) as bar:
        bar.update(3)
        raise ValueError("disk full")
    assert out.getvalue() == ""


def test_a_terminal_gets_tqdms_bar_and_quiet_gets_nothing():
    from tqdm.auto import tqdm

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = progress_bar(10, "explain", "map", stream=screen)
    assert isinstance(bar, tqdm)
    bar.update(10)
    bar.close()
    assert "explain" in screen.getvalue() and "\r" in screen.getvalue()
    out = io.StringIO()
    with progress_bar(10, "explain", "map", enabled=False, stream=out) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_a_long_epoch_reports_its_batches_every_30_s_and_each_epoch_a_line_with_an_eta():
    from medtl.train.callbacks import EpochLog

    clock, err, out = Clock(), io.StringIO(), io.StringIO()
    log = EpochLog(3, batches=True, clock=clock, stream=err, out=out)
    for epoch in range(2):
        trainer = SimpleNamespace(current_epoch=epoch, is_global_zero=True, sanity_checking=False,
                                  num_training_batches=10, num_val_batches=[4],
                                  callback_metrics={"train_loss": 0.5, "val_auroc": 0.75})  # fmt: skip
        log.on_train_epoch_start(trainer, None)
        for _ in range(10):
            clock.now += 10.0 if epoch == 0 else 0.1  # a long epoch, then a short one
            log.on_train_batch_end(trainer)
        log.on_validation_epoch_start(trainer, None)
        for _ in range(4):
            clock.now += 10.0 if epoch == 0 else 0.1
            log.on_validation_batch_end(trainer)
        log.on_validation_epoch_end(trainer, None)
        log.on_train_epoch_end(trainer, None)
    assert _lines(err) == ["epoch 0 training: 3/10 batches (30%), 0:00:30 elapsed, ETA 0:01:10",
                           "epoch 0 training: 6/10 batches (60%), 0:01:00 elapsed, ETA 0:00:40",
                           "epoch 0 training: 9/10 batches (90%), 0:01:30 elapsed, ETA 0:00:10",
                           "epoch 0 training: 10/10 batches (100%) done in 0:01:40",
                           "epoch 0 validation: 3/4 batches (75%), 0:00:30 elapsed, ETA 0:00:10",
                           "epoch 0 validation: 4/4 batches (100%) done in 0:00:40"]  # fmt: skip
    assert _lines(out) == [
        "epoch 0 (1 of at most 3): train_loss 0.5000, val_auroc 0.7500 (140 s; 0:02:20 elapsed, ETA 0:04:40 at most)",
        "epoch 1 (2 of at most 3): train_loss 0.5000, val_auroc 0.7500 (1 s; 0:02:21 elapsed, ETA 0:01:11 at most)",
    ]


# ----------------------------------------------------------------------------- the commands, into a log file
def _medtl(log: Path, *args: str) -> str:
    with open(log, "w") as f:  # no terminal: what a batch job's log gets
        proc = subprocess.run([sys.executable, "-m", "medtl", *args], stdout=f, stderr=subprocess.STDOUT)
    text = log.read_text()
    assert proc.returncode == 0, text
    return text


def test_train_and_explain_print_progress_lines_into_a_file(tmp_path):
    run = tmp_path / "run"
    text = _medtl(tmp_path / "train.log", "train", "-o", str(run), "--set", f"manifest={SAMPLE / 'cxr.csv'}",
                  "--set", "size=32", "--set", "epochs=2", "--set", "saliency_check=1")  # fmt: skip
    assert "\r" not in text
    assert re.search(r"^cache: (\d+)/\1 images \(100%\) done in 0:00:\d\d$", text, re.M), text
    epochs = re.findall(r"^epoch \d .*val_auroc .*elapsed.*$", text, re.M)
    assert len(epochs) == 2 and "ETA" in epochs[0], text
    assert re.search(r"^saliency check: (\d+)/\1 maps \(100%\) done in", text, re.M), text
    lines = text.splitlines()  # the result lines stand in order among the progress lines
    assert lines.index(epochs[-1]) < next(i for i, line in enumerate(lines) if line.startswith("Run written"))
    text = _medtl(tmp_path / "explain.log", "explain", str(run), str(SAMPLE / "cxr" / "p001"), "--method", "gradcam",
                  "--sanity", "--sanity-samples", "1", "--n-boot", "10", "-o", str(tmp_path / "explain"))  # fmt: skip
    assert re.search(r"^sanity check: (\d+)/\1 steps \(100%\) done in", text, re.M), text
    assert re.search(r"^explain: (\d+)/\1 maps \(100%\) done in", text, re.M), text


def test_the_long_commands_report_progress_unless_quiet():
    from medtl.cli import _progress, build_parser

    parser = build_parser()
    for args in (["train", "c.yaml", "-o", "r"], ["explain", "r", "in", "-o", "e"], ["predict", "r", "in", "-o", "p"],
                 ["evaluate", "r", "m.csv", "-o", "e"], ["report", "r", "p", "-o", "o"], ["saliency-check", "r"],
                 ["scan", "dir"], ["adapt", "r", "t.csv", "-o", "a"], ["calibrate-ood", "r", "m.csv"]):  # fmt: skip
        assert _progress(parser.parse_args(args)) and not _progress(parser.parse_args([*args, "--quiet"])), args
