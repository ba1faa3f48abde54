"""Step 14: a report states only known facts, and leads with how well the model separates the classes."""

import csv
import re
from pathlib import Path

import pytest
import yaml

from medtl.errors import ConfigError
from medtl.train.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _meta(page: str) -> dict[str, str]:
    return dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page))


def test_a_raster_page_says_its_spacing_is_unknown_and_a_dicom_page_gives_it_in_mm(report_inputs, report_folder):
    _, _, predictions, _, _ = report_inputs
    rows = _rows(predictions / "predictions.csv")
    photo = next(r for r in rows if r["path"] == "holiday.jpg")
    meta = _meta((report_folder / "cases" / f"{photo['key']}.html").read_text())
    assert meta["Pixel spacing"] == "unknown (the file does not record it)"
    dicom = next(r for r in rows if r["path"].endswith(".dcm"))
    meta = _meta((report_folder / "cases" / f"{dicom['key']}.html").read_text())
    assert re.fullmatch(r"[\d.]+ × [\d.]+ mm", meta["Pixel spacing"]), meta


def test_the_modality_column_holds_a_modality_or_nothing(report_inputs, report_folder):
    _, _, predictions, _, _ = report_inputs
    index = (report_folder / "index.html").read_text()
    header = re.search(r"<thead>.*?</thead>", index, re.S).group(0)
    column = re.findall(r"<th[^>]*>(.*?)</th>", header).index("modality")
    for row in _rows(predictions / "predictions.csv"):
        tr = re.search(rf'<tr data-key="{row["key"]}".*?</tr>', index, re.S).group(0)
        cell = re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)[column].strip()
        assert cell == row["modality"], (row["path"], cell)
        assert cell.lower() not in ("2d", "3d")
    assert {r["modality"] for r in _rows(predictions / "predictions.csv") if r["path"].endswith(".dcm")} <= {"DX", "CR"}


def test_the_report_header_leads_with_the_held_out_auroc(report_inputs, report_folder):
    import json

    _, _, _, evaluation, _ = report_inputs
    overall = json.loads((evaluation / "metrics.json").read_text())["overall"]
    index = (report_folder / "index.html").read_text()
    header = re.search(r'<section class="trust[^"]*" id="trust".*?</section>', index, re.S).group(0)
    assert index.index('id="trust"') < index.index("<h1>")
    first = re.findall(r'<p class="trust-line ([^"]*)">(.*?)</p>', header, re.S)
    lo, hi = overall["auroc_ci"]
    said = f"Held-out AUROC {overall['auroc']:.2f} (95 % CI {lo:.2f}–{hi:.2f}) on {overall['n']} images"
    texts = [t for _, t in first]
    assert any(t.startswith(said) for t in texts[:2]), texts
    calibration = next(t for c, t in first if "calibration" in c)
    assert "held-out scores from" in calibration and "% are positive" in calibration
    fitted = json.loads((report_inputs[0] / "calibration.json").read_text())["fitted_on"]
    if fitted != "val":  # the header says why the scores are raw, as the calibration record does
        assert calibration.startswith(f"Uncalibrated ({fitted})"), calibration
    assert "calibrated" not in re.sub(r"After calibration|Uncalibrated", "", calibration)  # no verdict, a range
    assert ' class="ok"' not in re.search(r'<section class="model".*?</section>', index, re.S).group(0)


def test_the_shipped_real_data_config_states_no_intended_use_and_the_demo_states_its_own(demo_run):
    shipped = yaml.safe_load((REPO / "configs" / "cxr-2d.yaml").read_text())
    assert "intended_use" not in shipped
    assert load_config(REPO / "configs" / "cxr-2d.yaml").intended_use == ""
    _, _, out = demo_run
    card = (out / "run" / "model_card.md").read_text()
    assert "A demonstration on synthetic radiographs" in card


@pytest.mark.parametrize("value", ["Screening: adults only", "[draft", "{a: b}"])
def test_set_text_that_yaml_reads_otherwise_gets_a_hint_to_quote_it(value):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"intended_use={value}"])
    assert f"quote text: --set 'intended_use=\"{value}\"'" in str(err.value)
    assert load_config(None, [f'intended_use="{value}"']).intended_use == value
    with pytest.raises(ConfigError, match="must be a number|not valid|must be") as err:  # not a text key: no hint
        load_config(None, [f"lr={value}"])
    assert "quote text" not in str(err.value)


def test_a_run_without_a_held_out_figure_gets_the_red_header(report_inputs, tmp_path):
    """A run trained without a test split, reported without an evaluation: nothing held out says
    the model works, so the header says its decisions are not evidence."""
    import json
    import shutil

    from medtl.report.model import model_summary

    run = report_inputs[0]
    copy = tmp_path / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("cache", "checkpoints", "logs", "tensorboard"))
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["test"]["auroc"] is not None  # what training measured on its test split
    metrics.pop("test")
    (copy / "metrics.json").write_text(json.dumps(metrics))
    trust = model_summary(copy)["trust"]
    assert trust["level"] == "red"
    assert trust["lines"][0]["text"].startswith("The decisions in this report are not evidence: this model has no "
                                                "held-out evaluation")  # fmt: skip
    kept = model_summary(run)["trust"]
    assert kept["lines"][0]["text"].startswith("Held-out AUROC") and "the run's own test split" in kept["lines"][0]["text"]


def test_the_model_card_leads_with_the_held_out_auroc(report_inputs):
    import json

    from medtl.train.config import TrainConfig
    from medtl.train.report import discrimination_section

    run = report_inputs[0]
    test = json.loads((run / "metrics.json").read_text())["test"]
    card = (run / "model_card.md").read_text()
    sections = re.findall(r"^## (.*)$", card, re.M)
    assert sections[0] == "Discrimination on held-out data"
    lo, hi = test["auroc_ci"]
    assert f"**test AUROC {test['auroc']:.3f} (95 % CI {lo:.3f}–{hi:.3f})** on {test['n']} images" in card
    chance = discrimination_section(dict(test, auroc=0.59, auroc_ci=[0.43, 0.76]), TrainConfig())
    assert "**not shown to separate the classes**: the interval includes 0.5" in chance
    assert discrimination_section(None, TrainConfig(test_fraction=0.0)).startswith("**Unknown.**")


def test_an_evaluation_on_the_training_images_is_not_called_held_out(report_inputs, tmp_path):
    """`medtl evaluate RUN train.csv --split all` scores the images the model learned: the report
    says its figure is not evidence, naming how many images trained and tuned the model."""
    import json

    from report_setup import SAMPLE

    from medtl.evaluate.run import evaluate_run
    from medtl.report.model import model_summary

    run = report_inputs[0]
    result = evaluate_run(run, SAMPLE / "cxr.csv", tmp_path / "all", groups=["sex"], split="all", n_boot=20,
                          min_group=2)  # fmt: skip
    counts = json.loads((run / "split.json").read_text())["counts"]
    seen = result["held_out"]
    assert seen["checked"] and (seen["train"], seen["val"]) == (counts["train"]["images"], counts["val"]["images"])
    first = model_summary(run, evaluation=tmp_path / "all")["trust"]["lines"][0]["text"]
    assert first.startswith("The decisions in this report are not evidence: the evaluation is not held out")
    assert f"{seen['train']} of its {seen['n']} images trained the model" in first
