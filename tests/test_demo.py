"""`medtl demo`: the whole path on the sample data, one line per step, and what each step left."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medtl.demo import BROKEN_FILE, FOREIGN_FILE, STEPS, run_demo
from medtl.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_one_line_per_step_then_where_the_report_is(demo_run):
    lines, result, out = demo_run
    assert len(lines) == len(STEPS) + 1
    for number, (name, line) in enumerate(zip(STEPS, lines[:-1], strict=True), start=1):
        assert line.startswith(f"{number}/{len(STEPS)} {name}"), line
    assert str(out / "report" / "index.html") in lines[-1] and "medtl review" in lines[-1]
    assert result["index"] == str(out / "report" / "index.html")


def test_scan_counts_every_image_of_the_sample_data(demo_run):
    _, result, out = demo_run
    # independent count: labels.csv lists every image, series and volume; each positive has a mask file
    expected = len(_rows(SAMPLE / "labels.csv")) + len(list((SAMPLE / "masks").glob("*.nii.gz")))
    assert result["scan"]["images"] == expected == len(_rows(out / "manifest.csv"))
    assert result["scan"]["errors"] == 0


def test_evaluation_and_explanation_numbers_are_the_written_ones(demo_run):
    lines, result, out = demo_run
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert result["evaluate"]["auroc"] == pytest.approx(metrics["overall"]["auroc"])
    split = json.loads((out / "run" / "split.json").read_text())
    assert result["evaluate"]["n"] == split["counts"]["test"]["images"]
    assert f"test AUROC {metrics['overall']['auroc']:.2f}" in lines[2]
    record = json.loads((out / "explanation" / "explain.json").read_text())
    for method, numbers in result["explain"].items():
        assert numbers["sanity_passed"] == record["sanity"][method]["passed"]
        assert numbers["pointing_game"] == pytest.approx(record["localization"][method]["pointing_game"]["value"])


def test_the_broken_file_fails_with_its_reason_and_the_photograph_is_flagged(demo_run):
    _, result, out = demo_run
    errors = _rows(out / "predictions" / "errors.csv")
    assert [(e["path"], e["stage"]) for e in errors] == [(BROKEN_FILE, "scan")]
    assert "truncated" in errors[0]["reason"]
    predictions = {r["path"]: r for r in _rows(out / "predictions" / "predictions.csv")}
    radiographs = [r["path"] for r in _rows(SAMPLE / "cxr.csv")]
    assert sorted(predictions) == sorted(radiographs + [FOREIGN_FILE])
    assert predictions[FOREIGN_FILE]["ood"] == "1"
    assert result["predict"] == {"predicted": len(radiographs) + 1, "failed": 1,
                                 "flagged": sum(r["ood"] == "1" for r in predictions.values()), "saliency_failed": 0}  # fmt: skip


def test_the_report_has_a_page_per_prediction_and_lists_the_failure(demo_run):
    _, result, out = demo_run
    report = json.loads((out / "report" / "report.json").read_text())
    assert len(report["cases"]) == result["report"]["cases"] == result["predict"]["predicted"]
    assert result["report"]["errors"] == 1 and result["report"]["ood"] == result["predict"]["flagged"]
    pages = sorted((out / "report" / "cases").glob("*.html"))
    assert len(pages) == result["predict"]["predicted"]
    index = (out / "report" / "index.html").read_text()
    assert "truncated" in index
    assert "MRN-" not in index and "FAKE^" not in index  # no identifiers unless asked for


def test_without_the_sample_data_it_says_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="sample data's manifest is missing"):
        run_demo(tmp_path / "out", data=tmp_path / "nowhere")


def test_a_folder_that_is_not_an_earlier_demo_is_refused(tmp_path, capsys):
    """The demo replaces what an earlier demo wrote, and nothing else: with --overwrite neither."""
    from medtl.cli import main

    (tmp_path / "project" / "run").mkdir(parents=True)
    (tmp_path / "project" / "run" / "model.pt").write_bytes(b"weeks of work")
    for extra in ([], ["--overwrite"]):
        assert main(["demo", "-o", str(tmp_path / "project"), *extra]) == 1
        err = capsys.readouterr().err
        assert "holds files medtl did not write (run)" in err and err.count("\n") == 1
    assert (tmp_path / "project" / "run" / "model.pt").read_bytes() == b"weeks of work"


def test_the_demo_folder_is_all_medtl_s_and_runs_again_without_overwrite(demo_run, tmp_path):
    import shutil

    from medtl.files import write_json
    from medtl.outputs import MARKER, describe, mark_complete, output_folder

    _, _, out = demo_run
    assert describe(out)["command"] == "demo" and describe(out)["complete"]
    # every file of every step is recorded: a second demo, without --overwrite, takes the folder and
    # removes them all (a copy: the demo's output serves other tests)
    again = tmp_path / "again"
    shutil.copytree(out, again, symlinks=True)
    with output_folder(again, "demo") as held:
        left = sorted(p.relative_to(held).as_posix() for p in held.rglob("*") if p.is_file())
    assert left == [".medtl-files", ".medtl.lock", MARKER]  # only the new demo's own bookkeeping
    # a second demo in the same folder replaces the first's files without --overwrite (a cheap stand-in)
    folder = tmp_path / "demo"
    for n in (1, 2):
        with output_folder(folder, "demo") as held:
            assert not (held / "run").exists()
            with output_folder(held / "run", "evaluate") as step:  # a step's output nests in the demo's
                write_json(step / "metrics.json", {"n": n})
                mark_complete(step, "evaluate")
            mark_complete(held, "demo")
    assert (folder / "run" / "metrics.json").read_text() == '{\n  "n": 2\n}\n'
