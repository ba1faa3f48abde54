"""Step 13: a model that reads a corner tag instead of the patient is marked; a clean one is not."""

import csv
import json
import shutil

import pytest
from shortcut_factory import write_shortcut_set
from test_report_browser import browser  # noqa: F401 - the headless Chromium fixture

from medtl.explain.choice import choose_default
from medtl.train.config import TrainConfig
from medtl.train.finetune import finetune


def _run(root, tag: bool):
    manifest = write_shortcut_set(root / "data", n=64, size=64, tag=tag, seed=3)
    cfg = TrainConfig(manifest=str(manifest), backbone="efficientnet-lite0", pretrained="imagenet", preset="xr",
                      intensity_range=[0, 255], size=[64, 64], epochs=6, batch_size=16, augment=False,
                      val_fraction=0.25, test_fraction=0.25, patience=50, dedup=False, saliency_check=0)  # fmt: skip
    run = root / "run"
    finetune(cfg, run, resume=False)
    # two candidates keep the suite fast: integrated gradients credit the whole body a little, occlusion
    # finds what the prediction depends on; the rule picks between them by faithfulness
    return run, choose_default(run, images=8, candidates=("ig", "occlusion")), manifest


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("tagged"), tag=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("clean"), tag=False)


def test_the_tagged_model_is_marked_and_the_clean_one_is_not(tagged, clean):
    """The tag lies outside the body: the tagged model's evidence for the finding does too."""
    marked, kept = tagged[1]["anatomy"], clean[1]["anatomy"]
    assert marked["shortcut_suspected"] and marked["marked_share"] > 0.5 and marked["median_inside"] < 0.5, marked
    assert not kept["shortcut_suspected"] and kept["marked_share"] < 1 / 3 and kept["median_inside"] > 0.5, kept
    assert tagged[1]["method"] is not None and clean[1]["method"] is not None
    for choice in (tagged[1], clean[1]):  # the chosen method passed the randomization check
        assert choice["candidates"][choice["method"]]["passed_randomization"]


@pytest.fixture(scope="module")
def tagged_report(tagged, tmp_path_factory):
    """The tagged model's predictions of six tagged positives and six negatives, and their report."""
    from medtl.predict import predict_folder
    from medtl.report import build_report

    run, _, manifest = tagged
    tmp_path = tmp_path_factory.mktemp("tagged-report")
    folder = tmp_path / "incoming"
    folder.mkdir()
    for k in range(12):  # six tagged positives, six negatives
        shutil.copy(manifest.parent / "images" / f"img{k:03d}.png", folder)
    out = tmp_path / "pred"
    predict_folder(run, folder, out, saliency="auto", workers=0)
    return out, build_report(run, out, tmp_path / "report"), tmp_path / "report"


def test_a_report_of_the_tagged_model_marks_its_positive_cases(tagged, tagged_report):
    out, report, folder = tagged_report
    choice = tagged[1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["saliency"] == choice["method"]
    assert summary["settings"]["saliency_choice"]["source"] == "the run's saliency check"
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["saliency_target"] for r in rows} == {"label=1"}  # the finding, on every case
    positives = [r for r in rows if r["decision"] == "label=1"]
    assert positives and sum(r["shortcut"] == "1" for r in positives) >= len(positives) / 2
    assert all(r["shortcut"] == "0" for r in rows if r["decision"] != "label=1")
    assert report["counts"]["cases"] == len(rows) and report["counts"]["shortcut"] >= len(positives) / 2


def test_the_tagged_models_report_shows_the_mark_in_a_browser(browser, tagged_report):  # noqa: F811 (fixture)
    """Headless Chromium: the mark is visible on a marked case page, and the run-level figure in the
    model summary says the validation maps lie outside the body."""
    from selenium.webdriver.common.by import By

    _, report, folder = tagged_report
    browser.get((folder / "index.html").as_uri())
    marked = browser.find_element(By.CSS_SELECTOR, "#cases tbody tr[data-shortcut='1']")
    marked.find_element(By.CSS_SELECTOR, "a").click()
    mark = browser.find_element(By.ID, "shortcut-mark")
    assert mark.is_displayed() and "the model may be using a shortcut" in mark.text
    figure = browser.find_element(By.CSS_SELECTOR, "#saliency-check .shortcut-figure.run-level")
    browser.execute_script("arguments[0].scrollIntoView()", figure)
    assert figure.is_displayed() and "median share of evidence inside the anatomy" in figure.text
