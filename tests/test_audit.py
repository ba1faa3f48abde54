"""The subgroup audit: values against fairlearn, flags, reporting of small groups, bad input, files."""

import csv
import json

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_negative_rate,
    false_positive_rate,
    true_positive_rate,
)
from sklearn.metrics import precision_score, roc_auc_score

from medtl.errors import EvaluationError, MedtlError
from medtl.evaluate import AuditResult, audit, choose_threshold, expected_calibration_error


def _frame(n=3000, seed=0, noisy_site="C", patients=None):
    """Predictions with sex (no effect), age, and site (site `noisy_site` much noisier: a planted gap)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    site = rng.choice(["A", "B", "C"], n)
    noise = np.where(site == noisy_site, 3.0, 1.0)
    z = -1.0 + 2.5 * y + rng.normal(0, 1, n) * noise
    frame = pd.DataFrame(
        {
            "label": y,
            "prob": 1 / (1 + np.exp(-z)),
            "sex": rng.choice(["F", "M"], n),
            "age": rng.integers(20, 95, n),
            "site": site,
        }
    )
    if patients:
        frame["patient"] = rng.integers(0, patients, n)
    return frame


@pytest.fixture(scope="module")
def planted():
    frame = _frame()
    return frame, audit(frame, "label", "prob", ["sex", "age", "site"], threshold=0.5, n_boot=300, seed=1)


def test_gaps_equal_fairlearn_on_the_same_rows(planted):
    frame, res = planted
    y, p = frame["label"], frame["prob"]
    pred = (p >= 0.5).astype(int)
    for attr in ("sex", "site"):
        sf = frame[attr]
        mf = MetricFrame(metrics={"auroc": roc_auc_score}, y_true=y, y_pred=p, sensitive_features=sf)
        assert res.gaps[attr]["auroc"]["value"] == pytest.approx(mf.difference()["auroc"], abs=1e-12)
        assert res.gaps[attr]["auroc"]["ratio"] == pytest.approx(mf.ratio()["auroc"], abs=1e-12)
        rates = MetricFrame(
            metrics={
                "tpr": true_positive_rate,
                "fpr": false_positive_rate,
                "fnr": false_negative_rate,
                "ppv": lambda t, q: precision_score(t, q, zero_division=0),
            },
            y_true=y,
            y_pred=pred,
            sensitive_features=sf,
        )
        for m in ("tpr", "fpr", "fnr", "ppv"):
            assert res.gaps[attr][m]["value"] == pytest.approx(rates.difference()[m], abs=1e-12), (attr, m)
            assert res.gaps[attr][m]["ratio"] == pytest.approx(rates.ratio()[m], abs=1e-12), (attr, m)
            for g, v in rates.by_group[m].items():
                assert res.groups[attr][g][m] == pytest.approx(v, abs=1e-12)
        ece = MetricFrame(metrics=expected_calibration_error, y_true=y, y_pred=p, sensitive_features=sf)
        assert res.gaps[attr]["ece"]["value"] == pytest.approx(ece.difference(), abs=1e-12)
        eo = res.gaps[attr]["equalized_odds"]
        assert eo["value"] == pytest.approx(equalized_odds_difference(y, pred, sensitive_features=sf), abs=1e-12)
        assert eo["ratio"] == pytest.approx(equalized_odds_ratio(y, pred, sensitive_features=sf), abs=1e-12)
    assert res.overall["auroc"] == roc_auc_score(y, p)


def test_planted_gap_is_flagged_and_a_null_attribute_is_not(planted):
    _, res = planted
    flagged = {(f["attribute"], f["metric"]) for f in res.flags}
    assert ("site", "auroc") in flagged
    site = next(f for f in res.flags if f["attribute"] == "site" and f["metric"] == "auroc")
    assert site["groups"][0] == "C" and site["ci"][0] > 0 and site["gap"] > 0.05 and "excludes 0" in site["reason"]
    assert not any(f["attribute"] == "sex" for f in res.flags)
    gap = res.gaps["sex"]["auroc"]
    assert gap["ci"][0] <= 0 <= gap["ci"][1] and gap["flagged"] is False
    for attr in ("sex", "site"):  # every gap CI is around its estimate
        for m, g in res.gaps[attr].items():
            if g["ci"]:
                assert g["ci"][0] <= g["value"] <= g["ci"][1], (attr, m)


def test_group_values_and_cis(planted):
    frame, res = planted
    f = res.groups["sex"]["F"]
    rows = frame["sex"] == "F"
    assert f["n"] == int(rows.sum()) and f["n_pos"] == int(frame.loc[rows, "label"].sum())
    assert f["auroc"] == roc_auc_score(frame.loc[rows, "label"], frame.loc[rows, "prob"])
    for m in ("auroc", "tpr", "fpr", "fnr", "ppv", "ece", "prevalence"):
        lo, hi = f[f"{m}_ci"]
        assert lo <= f[m] <= hi
    assert list(res.groups["age"]) == ["0-39", "40-59", "60-74", "75+"]
    assert res.settings["n_boot"] == 300 and res.settings["seed"] == 1 and res.settings["resampling_unit"] == "row"
    assert res.settings["threshold_rule"] == "given" and res.settings["age_bins"] == [0, 40, 60, 75, 200]


def test_small_and_single_class_groups_are_reported_not_dropped():
    frame = _frame(n=1200, seed=3)
    frame.loc[:9, "site"] = "tiny"  # 10 rows
    frame.loc[10:59, "site"] = "healthy"  # 50 rows, all negative
    frame.loc[10:59, "label"] = 0
    frame.loc[60:64, "sex"] = np.nan  # no value
    res = audit(frame, "label", "prob", ["site", "sex"], threshold=0.5, n_boot=100, min_group=30)
    tiny, healthy = res.groups["site"]["tiny"], res.groups["site"]["healthy"]
    assert tiny["status"] == "too small" and tiny["n"] == 10 and not tiny["compared"] and "min_group=30" in tiny["note"]
    assert tiny["auroc_ci"] is None
    assert healthy["status"] == "single class" and healthy["auroc"] is None and healthy["tpr"] is None
    assert healthy["fpr"] is not None and healthy["fpr_ci"] is not None  # FPR is still computable
    assert res.groups["sex"]["(missing)"]["n"] == 5 and not res.groups["sex"]["(missing)"]["compared"]
    assert res.gaps["site"]["auroc"]["n_groups"] == 3  # A, B, C
    assert "tiny" not in res.gaps["site"]["auroc"]["groups"]
    text = json.dumps(res.to_dict(), allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text
    res = audit(frame, "label", "prob", "site", threshold=0.5, n_boot=50, min_group=5)
    assert res.groups["site"]["tiny"]["status"] in ("ok", "single class")  # min_group is a setting
    assert res.settings["min_group"] == 5


def test_patient_resampling_youden_threshold_intersections_and_settings():
    frame = _frame(n=1500, seed=4, patients=400)
    res = audit(frame, "label", "prob", ["sex", "site"], patient="patient", intersections=True, n_boot=100, seed=7)
    st = res.settings
    assert st["resampling_unit"] == "patient" and st["n_clusters"] == frame["patient"].nunique()
    # Youden's J on the audited rows, halfway between two neighbouring scores (issue 24), never on one
    assert st["threshold_rule"].startswith("youden") and st["threshold"] not in set(frame["prob"])
    assert st["threshold"] == choose_threshold(frame["label"], frame["prob"])
    assert "sex×site" in res.groups and "F×A" in res.groups["sex×site"]
    assert res.groups["sex×site"]["F×A"]["n"] == int(((frame.sex == "F") & (frame.site == "A")).sum())
    assert "sex×site" in res.gaps
    json.dumps(res.to_dict(), allow_nan=False)


def test_rows_with_missing_label_or_score_are_excluded_and_counted():
    frame = _frame(n=600, seed=5)
    frame["prob"] = frame["prob"].astype(object)
    frame.loc[[3, 4], "prob"] = [np.nan, ""]
    frame.loc[[4, 7, 8], "label"] = np.nan
    res = audit(frame, "label", "prob", "sex", threshold=0.5, n_boot=0)
    assert res.settings["excluded"] == {"missing_label": 3, "missing_score": 2, "rows": 4}
    assert res.settings["n_rows"] == 596 and res.overall["n"] == 596
    assert res.overall["auroc_ci"] is None  # n_boot=0: no intervals


def test_bad_input_errors_name_the_column_and_row(tmp_path):
    frame = _frame(n=200, seed=6)
    with pytest.raises(EvaluationError, match="no score column 'probs'; did you mean 'prob'"):
        audit(frame, "label", "probs", "sex")
    with pytest.raises(EvaluationError, match="no group column 'Sex'"):
        audit(frame, "label", "prob", ["Sex"])
    bad = frame.astype({"prob": object})
    bad.loc[17, "prob"] = "high"
    with pytest.raises(EvaluationError, match=r"row 17: score column 'prob' holds 'high', not a number"):
        audit(bad, "label", "prob", "sex")
    path = tmp_path / "pred.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(EvaluationError, match=r"pred.csv: line 19: score column 'prob' holds 'high'") as info:
        audit(path, "label", "prob", "sex")
    assert isinstance(info.value, MedtlError) and info.value.path == str(path)
    multi = frame.copy()
    multi.loc[5, "label"] = 2
    with pytest.raises(EvaluationError, match="not binary.*positive="):
        audit(multi, "label", "prob", "sex")
    res = audit(multi, "label", "prob", "sex", positive=2, threshold=0.5, n_boot=0)  # one-vs-rest
    assert res.overall["n_pos"] == 1
    with pytest.raises(EvaluationError, match="no such predictions file"):
        audit(tmp_path / "missing.csv", "label", "prob", "sex")
    with pytest.raises(EvaluationError, match="one class"):
        audit(frame.assign(label=0), "label", "prob", "sex")


def test_csv_manifest_with_dicom_ages_and_integer_sites(tmp_path):
    path = tmp_path / "joined.csv"
    rng = np.random.default_rng(8)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "score", "sex", "age", "site", "patient"])
        for i in range(240):
            y = int(rng.random() < 0.4)
            age = ["034Y", "55", "90", "071Y", "", "080Y"][i % 6]
            w.writerow([f"img{i}.dcm", y, f"{(y + rng.random()) / 2:.4f}", "FM"[i % 2], age, 1 + i % 3, f"p{i // 2}"])
    res = audit(path, "label", "score", ["sex", "age", "site"], patient="patient", n_boot=50)
    assert list(res.groups["age"]) == ["0-39", "40-59", "60-74", "75+", "(missing)"]
    assert res.groups["age"]["75+"]["n"] == 80 and res.groups["age"]["(missing)"]["n"] == 40
    assert list(res.groups["site"]) == ["1", "2", "3"]
    assert res.settings["source"] == "joined.csv" and res.settings["n_clusters"] == 120
    res = audit(path, "label", "score", "age", age_bins=(0, 50, 120), n_boot=0)
    assert list(res.groups["age"]) == ["0-49", "50+", "(missing)"]


def test_save_writes_json_csvs_plots_and_escaped_html(tmp_path):
    frame = _frame(n=800, seed=9)
    frame.loc[frame.index[:40], "site"] = "<script>alert(1)</script>"
    res = audit(frame, "label", "prob", ["sex", "site"], threshold=0.5, n_boot=50)
    assert isinstance(res, AuditResult)
    paths = res.save(tmp_path / "audit")
    data = json.loads((tmp_path / "audit" / "audit.json").read_text())
    for key in ("overall", "groups", "gaps", "flags", "settings"):
        assert key in data
    g = data["groups"]["sex"]["F"]
    for key in ("n", "auroc", "auroc_ci", "tpr", "fpr", "fnr", "ppv", "ece", "status"):
        assert key in g
    assert len(g["auroc_ci"]) == 2
    for key in ("auroc", "equalized_odds"):
        assert {"value", "ci", "ratio"} <= set(data["gaps"]["sex"][key])
    for key in ("threshold", "threshold_rule", "n_boot", "seed", "min_group", "min_gap", "resampling_unit", "age_bins"):
        assert key in data["settings"]
    with open(paths["groups"]) as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["attribute"], r["group"]) for r in rows} >= {("sex", "F"), ("sex", "M"), ("site", "A")}
    assert {"auroc", "auroc_low", "auroc_high", "status", "note"} <= set(rows[0])
    with open(paths["gaps"]) as fh:
        gaps = list(csv.DictReader(fh))
    assert {"attribute", "metric", "value", "ci_low", "ci_high", "ratio", "flagged"} <= set(gaps[0])
    for name in ("roc.png", "calibration.png", "decision.png", "gaps.png"):
        assert (tmp_path / "audit" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "audit" / "audit_section.html").read_text()
    assert page.startswith("<section") and page.rstrip().endswith("</section>")
    assert "<script" not in page.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('src="data:image/png;base64,') == 4


def test_logit_scores_audit_ranking_and_rates_but_not_calibration(tmp_path):
    frame = _frame(n=600, seed=10)
    frame["logit"] = np.log(frame["prob"] / (1 - frame["prob"]))
    res = audit(frame, "label", "logit", "sex", threshold=0.0, n_boot=50)
    f = res.groups["sex"]["F"]
    assert f["auroc"] is not None and f["tpr"] is not None and f["ece"] is None and f["ece_ci"] is None
    assert "probabilities" in f["notes"]["ece"]
    paths = res.save(tmp_path)
    assert "calibration" not in paths and not (tmp_path / "calibration.png").exists()
    json.dumps(res.to_dict(), allow_nan=False)


def test_groups_count_patients_beside_images():
    """A characteristics table counts people: two images of one patient are one patient."""
    res = audit({"y": [0, 1] * 20, "p": [0.3, 0.7] * 20, "g": ["a", "b"] * 20, "pid": [i // 4 for i in range(40)]},
                "y", "p", "g", patient="pid", n_boot=0)  # fmt: skip
    rows = {r["group"]: r for r in res.group_rows()}
    assert (rows["a"]["n"], rows["a"]["n_patients"]) == (20, 10)
    assert audit({"y": [0, 1] * 20, "p": [0.3, 0.7] * 20, "g": ["a"] * 40}, "y", "p", "g", n_boot=0).group_rows()[0][
        "n_patients"] is None  # fmt: skip
