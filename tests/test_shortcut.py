"""Step 13: a model that reads a corner tag instead of the patient is marked; a clean one is not."""

import csv
import json
import shutil

import pytest
from shortcut_factory import write_shortcut_set
from test_report_browser import _shot, browser  # noqa: F401 - the headless Chromium fixture

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


def _audit(run, manifest, out):
    from medtl.evaluate.run import evaluate_run

    evaluate_run(run, manifest, out, groups=["view"], split="test", n_boot=300, min_group=2)
    return out


@pytest.fixture(scope="module")
def tagged_audit(tagged, tmp_path_factory):
    return _audit(tagged[0], tagged[2], tmp_path_factory.mktemp("tagged-audit") / "audit")


@pytest.fixture(scope="module")
def clean_audit(clean, tmp_path_factory):
    return _audit(clean[0], clean[2], tmp_path_factory.mktemp("clean-audit") / "audit")


@pytest.fixture(scope="module")
def tagged_report(tagged, tagged_audit, tmp_path_factory):
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
    return out, build_report(run, out, tmp_path / "report", evaluation=tagged_audit), tmp_path / "report"


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


# -------------------------------------------------------------------------------------------------
# Step 14: the confounder check, the header a chance-level model gets
# -------------------------------------------------------------------------------------------------


def test_the_audit_flags_the_view_the_tagged_model_learned_and_not_the_clean_ones(tagged_audit, clean_audit):
    """The tag marks AP films: in the tagged set the view alone tells the finding, as well as the
    model does. In the clean set the view is independent of the finding: nothing is flagged."""
    tagged = json.loads((tagged_audit / "audit.json").read_text())
    flags = [f for f in tagged["confounder_flags"] if f["attribute"] == "view"]
    assert [f["check"] for f in flags] == ["attribute_predicts_label"], tagged["confounders"]["view"]
    alone = tagged["confounders"]["view"]["attribute_predicts_label"]
    assert alone["auroc"] == 1.0 and alone["ci"][0] > 0.5
    assert "view alone predicts the finding (AUROC 1.00" in flags[0]["reason"]
    # the levels hold one class each: the within-level AUROC is said to be unmeasurable, not omitted
    assert all(not b["measured"] for b in tagged["confounders"]["view"]["within_level"].values())
    with open(tagged_audit / "confounders.csv", newline="") as fh:
        assert any(r["flagged"] == "True" and r["figure"] == "attribute predicts finding" for r in csv.DictReader(fh))
    clean = json.loads((clean_audit / "audit.json").read_text())
    assert clean["confounder_flags"] == [], clean["confounders"]["view"]
    metrics = json.loads((clean_audit / "metrics.json").read_text())
    assert metrics["held_out"] == {"checked": True, "n": metrics["n"], "train": 0, "val": 0, "test": metrics["n"]}


def test_the_tagged_models_report_leads_with_the_confounder_in_a_browser(browser, tagged_report):  # noqa: F811
    from selenium.webdriver.common.by import By

    _, report, folder = tagged_report
    browser.get((folder / "index.html").as_uri())
    header = browser.find_element(By.ID, "trust")
    assert header.location["y"] < browser.find_element(By.TAG_NAME, "h1").location["y"]  # before anything else
    lines = header.find_elements(By.CSS_SELECTOR, ".trust-line")
    assert "discrimination" in lines[0].get_attribute("class") and lines[0].text.startswith("Held-out AUROC")
    confounder = header.find_element(By.CSS_SELECTOR, ".trust-line.confounder")
    assert confounder.is_displayed() and "view alone predicts the finding" in confounder.text
    assert header.get_attribute("data-level") == "amber"
    # the test's config states no intended use: the top of the page says so
    assert "No intended use was stated for this model" in header.find_element(By.CSS_SELECTOR, ".intended-use").text
    _shot(browser, "report-header-confounder.png", top=300)
    flag = browser.find_element(By.CSS_SELECTOR, "#confounders .confounder-flag")
    browser.execute_script("arguments[0].scrollIntoView()", flag)
    assert flag.is_displayed() and "view alone predicts the finding" in flag.text
    # every case page opens with the same header
    browser.find_element(By.CSS_SELECTOR, "#cases tbody tr a").click()
    assert "view alone predicts the finding" in browser.find_element(By.ID, "trust").text


@pytest.fixture(scope="module")
def clean_reports(clean, clean_audit, tmp_path_factory):
    """The clean model's report with its audit, and with an evaluation on labels it cannot know
    (the test images relabelled independently of their finding): a model at chance on that task."""
    from medtl.evaluate.run import evaluate_run
    from medtl.predict import predict_folder
    from medtl.report import build_report

    run, _, manifest = clean
    root = tmp_path_factory.mktemp("clean-reports")
    folder = root / "incoming"
    folder.mkdir()
    for k in range(8):
        shutil.copy(manifest.parent / "images" / f"img{k:03d}.png", folder)
    predict_folder(run, folder, root / "pred", workers=0)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):  # flip the label of every other pair: independent of the image
        row["label"] = str(int(row["label"]) ^ ((i // 2) % 2))
    relabelled = manifest.parent / "relabelled.csv"
    with open(relabelled, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    chance = evaluate_run(run, relabelled, root / "chance-eval", groups=["view"], split="test", n_boot=300, min_group=2)
    build_report(run, root / "pred", root / "report", evaluation=clean_audit)
    build_report(run, root / "pred", root / "chance-report", evaluation=root / "chance-eval")
    build_report(run, root / "pred", root / "bare-report")
    return root, chance


def test_reports_of_the_clean_model_say_what_its_evaluation_supports(browser, clean_reports):  # noqa: F811
    """No confounder line for the clean model; red "not evidence" when its held-out AUROC's CI
    includes chance; the run's own test figure when no evaluation is given."""
    from selenium.webdriver.common.by import By

    root, chance = clean_reports
    assert chance["overall"]["auroc_ci"][0] <= 0.5 <= chance["overall"]["auroc_ci"][1]
    browser.get((root / "report" / "index.html").as_uri())
    header = browser.find_element(By.ID, "trust")
    assert not header.find_elements(By.CSS_SELECTOR, ".confounder") and "not evidence" not in header.text
    browser.get((root / "chance-report" / "index.html").as_uri())
    header = browser.find_element(By.ID, "trust")
    assert header.get_attribute("data-level") == "red"
    first = header.find_element(By.CSS_SELECTOR, ".trust-line")
    assert first.text.startswith("The decisions in this report are not evidence") and "includes 0.5 (chance)" in first.text
    colour = first.value_of_css_property("color")
    assert colour.startswith("rgba(139, 0, 18"), colour  # red text, not the page's ordinary ink
    _shot(browser, "report-header-chance.png", top=300)
    # without --evaluation the header leads with the run's own test split, measured when it was trained
    browser.get((root / "bare-report" / "index.html").as_uri())
    first = browser.find_element(By.CSS_SELECTOR, "#trust .trust-line")
    assert first.text.startswith("Held-out AUROC") and "the run's own test split" in first.text
