"""Step 14: the audit's confounder check, against scikit-learn and on data built to be confounded."""

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medtl.evaluate import audit
from medtl.evaluate.confounders import confounder_check


def _portable_films(n: int = 400, seed: int = 0):
    """Sicker patients get AP films; the model reads the view, not the lungs."""
    rng = np.random.default_rng(seed)
    view = rng.choice(["AP", "PA"], n)
    y = (rng.random(n) < np.where(view == "AP", 0.8, 0.2)).astype(int)
    score = (view == "AP") + rng.normal(0, 0.3, n)
    return y, score, view


def test_a_model_that_reads_the_view_is_flagged_with_its_numbers():
    y, score, view = _portable_films()
    out = confounder_check(y, score, {"view": view}, n_boot=300)["view"]
    a, within = out["score_predicts_attribute"], out["within_level"]
    # every AUROC equals scikit-learn's on the same rows
    assert a["best"] == "AP" and a["auroc"] == pytest.approx(roc_auc_score(view == "AP", score))
    for level in ("AP", "PA"):
        rows = view == level
        assert within[level]["auroc"] == pytest.approx(roc_auc_score(y[rows], score[rows]))
        assert within[level]["n"] == rows.sum() and within[level]["n_pos"] == y[rows].sum()
    assert out["model"]["auroc"] == pytest.approx(roc_auc_score(y, score))
    checks = sorted((f["check"], f.get("level")) for f in out["flags"])
    assert checks == [
        ("score_predicts_attribute", "AP"),
        ("within_level_collapse", "AP"),
        ("within_level_collapse", "PA"),
    ]
    reason = next(f["reason"] for f in out["flags"] if f["check"] == "score_predicts_attribute")
    assert f"{a['auroc']:.2f}" in reason and f"{out['model']['auroc']:.2f}" in reason


def test_a_model_that_reads_the_finding_is_not_flagged():
    rng = np.random.default_rng(1)
    view = rng.choice(["AP", "PA"], 400)
    y = (rng.random(400) < np.where(view == "AP", 0.6, 0.4)).astype(int)  # a mild real association
    score = y + rng.normal(0, 0.7, 400)  # the model sees the finding in both views
    out = confounder_check(y, score, {"view": view, "site": rng.choice(list("ABCDE"), 400)}, n_boot=300)
    assert [f for e in out.values() for f in e["flags"]] == []
    assert all(out["view"]["within_level"][lv]["ci"][0] > 0.5 for lv in ("AP", "PA"))


def test_a_view_tied_to_the_label_predicts_it_alone_and_the_levels_cannot_be_compared():
    y = np.array([0, 1] * 20)
    view = np.where(y == 1, "AP", "PA")
    out = confounder_check(y, y + np.linspace(0, 0.5, 40), {"view": view}, n_boot=200)["view"]
    assert out["attribute_predicts_label"]["auroc"] == 1.0
    assert [f["check"] for f in out["flags"]] == ["attribute_predicts_label"]
    assert not any(b["measured"] for b in out["within_level"].values())
    assert any("0 negatives" in m for m in out["not_measured"]) and any("0 positives" in m for m in out["not_measured"])


@pytest.mark.parametrize("levels", [2, 5, 40])
def test_an_unrelated_attribute_alone_does_not_predict_the_label(levels):
    """Cross-fitted prevalences: forty small sites cannot 'predict' by memorising their own rows
    (in-sample prevalences give such an attribute an AUROC near 0.68 here)."""
    y, score, _ = _portable_films()
    fired = 0
    for seed in range(20):
        site = np.random.default_rng(100 + seed).choice(levels, 400).astype(str)
        alone = confounder_check(y, score, {"site": site}, n_boot=200)["site"]["attribute_predicts_label"]
        assert alone["auroc"] < 0.6
        fired += alone["ci"][0] > 0.5
    assert fired <= 2  # about 2.5 % expected of a one-sided 95 % bound


def test_rows_without_a_value_are_left_out_and_no_bootstrap_flags_nothing():
    y, score, view = _portable_films(200)
    view = view.astype(object)
    view[:20] = "(missing)"
    out = confounder_check(y, score, {"view": view}, n_boot=0)["view"]
    assert out["score_predicts_attribute"]["n"] == 180 and out["flags"] == []
    assert any("20 row(s) with no view" in m for m in out["not_measured"])
    assert any("n_boot=0" in m for m in out["not_measured"])
    single = confounder_check(y, score, {"site": np.array(["A"] * 200)}, n_boot=50)["site"]
    assert single["flags"] == [] and "1 level(s)" in single["not_measured"][0]


def test_patients_move_together_in_the_resamples():
    """Ten images of each of 40 patients are 40 units of evidence, not 400: the CI is wider than a
    row bootstrap's."""
    rng = np.random.default_rng(2)
    patient = np.repeat(np.arange(40), 10)
    view = rng.choice(["AP", "PA"], 40)[patient]
    y = rng.integers(0, 2, 40)[patient]
    # a patient's ten images score alike: the patient, not the image, is the unit of evidence
    score = 0.5 * (view == "AP") + rng.normal(0, 0.5, 40)[patient] + rng.normal(0, 0.05, 400)
    rows = confounder_check(y, score, {"view": view}, n_boot=300)["view"]["score_predicts_attribute"]["ci"]
    by_patient = confounder_check(y, score, {"view": view}, cluster=patient, n_boot=300)["view"]
    ci = by_patient["score_predicts_attribute"]["ci"]
    assert ci[1] - ci[0] > 1.5 * (rows[1] - rows[0])


def test_the_audit_writes_the_check_to_json_csv_and_html(tmp_path):
    y, score, view = _portable_films(300)
    res = audit({"y": y, "p": 1 / (1 + np.exp(-score)), "view": view}, "y", "p", ["view"], n_boot=200)
    paths = res.save(tmp_path, plots=False)
    saved = json.loads(paths["json"].read_text())
    assert saved["schema"] == "medtl.audit/2"
    assert {f["check"] for f in saved["confounder_flags"]} == {"score_predicts_attribute", "within_level_collapse"}
    with open(paths["confounders"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    figures = {(r["figure"], r["level"]) for r in rows}
    assert ("score predicts attribute", "AP") in figures and ("attribute predicts finding", "") in figures
    assert {r["flagged"] for r in rows if r["figure"] == "model within level"} == {"True"}
    page = paths["html"].read_text()
    assert "Confounder check" in page and 'class="flag confounder-flag"' in page
