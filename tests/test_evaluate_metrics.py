"""Metrics and bootstrap CIs, checked against scikit-learn on the same rows."""

import json
import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from medtl.errors import EvaluationError
from medtl.evaluate import (
    binary_metrics,
    bootstrap_ci,
    choose_threshold,
    classification_metrics,
    expected_calibration_error,
    group_replicates,
    multiclass_metrics,
    multilabel_metrics,
    reliability_diagram,
    weighted_auroc,
    weighted_average_precision,
)
from medtl.evaluate.bootstrap import cluster_codes, resample_weights


def _binormal(n, d=1.0, prevalence=0.4, seed=0, decimals=None):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    z = rng.normal(0, 1, n) + d * y
    p = 1 / (1 + np.exp(-z))
    return y, (p if decimals is None else p.round(decimals))


def _no_nan(obj):
    json.dumps(obj, allow_nan=False)


@pytest.mark.parametrize("decimals", [None, 2])  # 2 decimals: many tied scores
def test_binary_metrics_equal_sklearn(decimals):
    y, p = _binormal(500, seed=1, decimals=decimals)
    m = binary_metrics(y, p, threshold=0.55)
    pred = (p >= 0.55).astype(int)
    assert m["auroc"] == roc_auc_score(y, p)
    assert m["auprc"] == average_precision_score(y, p)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-15)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-15)
    assert m["tpr"] == pytest.approx(recall_score(y, pred), abs=1e-15)
    assert m["tnr"] == pytest.approx(recall_score(y, pred, pos_label=0), abs=1e-15)
    assert m["ppv"] == pytest.approx(precision_score(y, pred), abs=1e-15)
    assert m["npv"] == pytest.approx(precision_score(y, pred, pos_label=0), abs=1e-15)
    assert m["fnr"] == pytest.approx(1 - m["tpr"]) and m["fpr"] == pytest.approx(1 - m["tnr"])
    assert m["brier"] == brier_score_loss(y, p)
    assert m["n"] == 500 and m["n_pos"] == int(y.sum()) and m["notes"] == {}
    _no_nan(m)


def test_calibration_error_and_reliability_match_calibration_curve():
    y, p = _binormal(2000, seed=2)
    rel = reliability_diagram(y, p, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    filled = [i for i, c in enumerate(rel["count"]) if c > 0]
    assert np.allclose([rel["observed"][i] for i in filled], prob_true)
    assert np.allclose([rel["mean_prob"][i] for i in filled], prob_pred)
    assert sum(rel["count"]) == 2000
    expected = sum(c / 2000 * abs(rel["mean_prob"][i] - rel["observed"][i]) for i, c in enumerate(rel["count"]) if c)
    assert expected_calibration_error(y, p) == pytest.approx(expected, abs=1e-12)
    assert expected_calibration_error(y, p, n_bins=5) != expected_calibration_error(y, p, n_bins=20)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0


def test_undefined_metrics_are_none_with_a_reason():
    m = binary_metrics([1, 1, 1], [0.2, 0.3, 0.9])
    assert m["auroc"] is None and "only positive" in m["notes"]["auroc"]
    assert m["tnr"] is None and m["fpr"] is None and m["balanced_accuracy"] is None
    assert m["tpr"] == pytest.approx(1 / 3) and m["auprc"] == 1.0
    m = binary_metrics([0, 0], [0.2, 0.3])
    assert m["auroc"] is None and m["auprc"] is None and m["tpr"] is None
    m = binary_metrics([0, 1, 1], [0.1, 0.2, 0.3], threshold=0.9)
    assert m["ppv"] is None and "no predicted positives" in m["notes"]["ppv"] and m["tpr"] == 0.0
    m = binary_metrics([0, 1], [-2.0, 3.0])  # logits, not probabilities
    assert m["auroc"] == 1.0 and m["brier"] is None and m["ece"] is None and "probabilities" in m["notes"]["ece"]
    m = binary_metrics([], [])
    assert m["n"] == 0 and m["auroc"] is None
    for out in (m, binary_metrics([1, 1, 1], [0.2, 0.3, 0.9])):
        _no_nan(out)


def test_bad_inputs_raise_evaluation_error():
    with pytest.raises(EvaluationError, match="must be 0/1"):
        binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(EvaluationError, match="NaN"):
        binary_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(EvaluationError, match="NaN"):
        binary_metrics([0, float("nan")], [0.1, 0.2])
    with pytest.raises(EvaluationError, match="shape"):
        binary_metrics([0, 1, 1], [0.1, 0.2])


def test_choose_threshold_rules():
    y, p = _binormal(400, seed=3)
    fpr, tpr, thr = roc_curve(y, p)
    best = thr[1:][np.argmax((tpr - fpr)[1:])]
    t = choose_threshold(y, p)
    # the same rows positive as at the best ROC point, the threshold halfway to the next score down
    assert t == (best + p[p < best].max()) / 2 and not np.isin(t, p)
    m = binary_metrics(y, p, t)
    assert m["tpr"] - m["fpr"] == pytest.approx(np.max(tpr - fpr))
    t90 = choose_threshold(y, p, rule="sensitivity", target=0.9)
    assert binary_metrics(y, p, t90)["tpr"] >= 0.9 and not np.isin(t90, p)
    above = np.unique(p[p > t90])
    assert binary_metrics(y, p, above[1])["tpr"] < 0.9  # one score further up misses the target
    with pytest.raises(EvaluationError, match="both classes"):
        choose_threshold([1, 1], [0.2, 0.4])
    with pytest.raises(EvaluationError, match="unknown threshold rule"):
        choose_threshold(y, p, rule="f1")


def test_multiclass_metrics_equal_sklearn():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(0, 1, (300, 3)) + 1.5 * np.eye(3)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = multiclass_metrics(y, prob)
    assert m["macro_auroc"] == pytest.approx(roc_auc_score(y, prob, multi_class="ovr", average="macro"), abs=1e-12)
    assert m["accuracy"] == accuracy_score(y, prob.argmax(1))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, prob.argmax(1)))
    recalls = recall_score(y, prob.argmax(1), average=None)
    assert [c["tpr"] for c in m["per_class"]] == pytest.approx(list(recalls))
    assert m["ece"] is not None
    _no_nan(m)
    m = multiclass_metrics([0, 0, 1], [[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    assert m["per_class"][2]["auroc"] is None and "class(es) [2]" in m["notes"]["macro_auroc"]
    with pytest.raises(EvaluationError, match="class indices"):
        multiclass_metrics([0, 3], [[0.5, 0.5], [0.5, 0.5]])


def test_multilabel_metrics_per_label():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, (200, 3)).astype(float)
    s = np.clip(y * 0.4 + rng.random((200, 3)) * 0.6, 0, 1)
    y[0, 1] = np.nan  # unknown label: left out of label 1 only
    m = multilabel_metrics(y, s, threshold=[0.5, 0.4, 0.6])
    assert m["per_label"][0]["n"] == 200 and m["per_label"][1]["n"] == 199
    for j, t in enumerate([0.5, 0.4, 0.6]):
        known = ~np.isnan(y[:, j])
        assert m["per_label"][j]["auroc"] == roc_auc_score(y[known, j], s[known, j])
        assert m["per_label"][j]["tpr"] == pytest.approx(recall_score(y[known, j], s[known, j] >= t))
    assert m["macro_auroc"] == pytest.approx(np.mean([x["auroc"] for x in m["per_label"]]))
    assert classification_metrics(y[1:], s[1:])["task"] == "multilabel"


@pytest.mark.parametrize("decimals", [None, 1])
def test_weighted_auroc_and_ap_equal_sklearn_with_sample_weight(decimals):
    rng = np.random.default_rng(6)
    y, p = _binormal(300, seed=6, decimals=decimals)
    w = rng.integers(0, 4, (300, 8)).astype(float)
    w[:, 7] = rng.random(300) * 3  # non-integer weights too
    auroc = weighted_auroc(y, p, w)
    ap = weighted_average_precision(y, p, w)
    for j in range(w.shape[1]):
        assert abs(auroc[j] - roc_auc_score(y, p, sample_weight=w[:, j])) < 1e-10
        assert abs(ap[j] - average_precision_score(y, p, sample_weight=w[:, j])) < 1e-10
    assert abs(weighted_auroc(y, p, w[:, 0]) - roc_auc_score(y, p, sample_weight=w[:, 0])) < 1e-10
    assert math.isnan(weighted_auroc([0, 1], [0.2, 0.4], [1.0, 0.0]))  # one class left: undefined


def test_replicates_equal_sklearn_on_the_expanded_resample():
    """Resample b with weights w is the data set with row i repeated w_i times."""
    y, p = _binormal(150, seed=7, decimals=2)
    patients = np.arange(150) // 3
    codes, k = cluster_codes(patients, 150)
    reps = group_replicates(y, p, {"all": (np.zeros(150, int), 1)}, threshold=0.5, cluster=patients, n_boot=5, seed=3)
    w = next(resample_weights(codes, k, n_boot=5, seed=3))[1]
    for b in range(5):
        idx = np.repeat(np.arange(150), w[:, b].astype(int))
        m = binary_metrics(y[idx], p[idx], 0.5)
        for key in ("auroc", "auprc", "tpr", "fpr", "ppv", "npv", "accuracy", "brier", "ece", "prevalence"):
            assert reps["all"][key][0, b] == pytest.approx(m[key], abs=1e-10), key


def test_replicates_do_not_depend_on_chunking():
    y, p = _binormal(200, seed=8)
    parts = {"all": (np.zeros(200, int), 1), "g": (np.arange(200) % 3, 3)}
    a = group_replicates(y, p, parts, n_boot=23, seed=5)
    b = group_replicates(y, p, parts, n_boot=23, seed=5, chunk=4)
    c = group_replicates(y, p, parts, n_boot=10, seed=5)
    for name in parts:
        for key in a[name]:
            assert np.array_equal(a[name][key], b[name][key], equal_nan=True)
            assert np.array_equal(a[name][key][:, :10], c[name][key], equal_nan=True)


def test_bootstrap_ci_contains_the_estimate_shrinks_with_n_and_records_settings():
    widths = {}
    for n in (200, 5000):
        y, p = _binormal(n, seed=9)
        out = bootstrap_ci(y, p, threshold=0.5, n_boot=300, seed=11)
        assert out["n_boot"] == 300 and out["seed"] == 11 and out["unit"] == "row" and out["method"] == "percentile"
        for key in ("auroc", "auprc", "tpr", "tnr", "ppv", "brier", "accuracy"):
            lo, hi = out["ci"][key]
            assert lo <= out["estimate"][key] <= hi, key
        widths[n] = {k: v[1] - v[0] for k, v in out["ci"].items() if v}
        _no_nan(out)
    for key, w in widths[5000].items():
        assert w < widths[200][key] / 2.5, key  # ~ 1/sqrt(n): 5x narrower expected
    again = bootstrap_ci(*_binormal(200, seed=9), threshold=0.5, n_boot=300, seed=11)
    first = bootstrap_ci(*_binormal(200, seed=9), threshold=0.5, n_boot=300, seed=11)
    assert again["ci"] == first["ci"]


def test_percentile_interval_covers_the_true_auroc_about_95_percent():
    d, n, reps, n_boot = 1.0, 300, 200, 300
    true_auc = norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(12)
    covered = 0
    codes = np.arange(n)
    for r in range(reps):
        y = np.r_[np.zeros(n // 2, int), np.ones(n // 2, int)]
        s = rng.normal(0, 1, n) + d * y
        w = next(resample_weights(codes, n, n_boot=n_boot, seed=r))[1]
        lo, hi = np.percentile(weighted_auroc(y, s, w), [2.5, 97.5])
        covered += lo <= true_auc <= hi
    assert 0.90 <= covered / reps <= 0.99


def test_patient_resampling_widens_the_interval_of_clustered_rows():
    y_pat, p_pat = _binormal(150, seed=13)
    y, p = np.repeat(y_pat, 8), np.repeat(p_pat, 8)  # 8 identical rows per patient
    patients = np.repeat(np.arange(150), 8)
    by_row = bootstrap_ci(y, p, n_boot=300, seed=0)
    by_patient = bootstrap_ci(y, p, cluster=patients, n_boot=300, seed=0)
    assert by_patient["unit"] == "patient" and by_patient["n_clusters"] == 150
    for key in ("auroc", "tpr", "ppv"):
        w_row = by_row["ci"][key][1] - by_row["ci"][key][0]
        w_pat = by_patient["ci"][key][1] - by_patient["ci"][key][0]
        assert w_pat > 2 * w_row, key  # ~ sqrt(8) wider


def test_cluster_codes_and_undefined_resamples():
    codes, k = cluster_codes(np.array(["a", "b", "a", "", None], dtype=object), 5)
    assert codes.tolist() == [0, 1, 0, 2, 3] and k == 4  # missing ids: a cluster each
    # 3 positives in 40 rows: some resamples draw none, their AUROC is undefined and counted
    y = np.zeros(40, int)
    y[:3] = 1
    out = bootstrap_ci(y, np.linspace(0, 1, 40), n_boot=400, seed=1)
    assert out["estimate"]["auroc"] is not None
    assert "undefined in" in out["notes"]["auroc"]
    _no_nan(out)


def test_calibration_slope_and_intercept_equal_a_direct_likelihood_fit():
    """Against scipy's general-purpose optimiser on the logistic log-likelihood."""
    from scipy.optimize import minimize

    from medtl.evaluate.metrics import calibration_fit

    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, 400)
    y = (rng.uniform(size=400) < p).astype(float)
    x = np.log(p / (1 - p))
    both = minimize(lambda b: np.sum(np.logaddexp(0, b[0] + b[1] * x) - y * (b[0] + b[1] * x)), [0.0, 1.0]).x
    large = minimize(lambda a: np.sum(np.logaddexp(0, a[0] + x) - y * (a[0] + x)), [0.0]).x
    fit = calibration_fit(y, p)
    assert fit["slope"] == pytest.approx(both[1], abs=1e-4)
    assert fit["intercept"] == pytest.approx(large[0], abs=1e-4)
    assert calibration_fit([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])["slope"] is None  # separated: no finite slope


def test_the_audit_reports_calibration_slope_with_a_patient_ci():
    """Probabilities twice as extreme as the truth on the logit scale have slope 1/2; right ones 1."""
    import pandas as pd

    from medtl.evaluate import audit

    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 3000)
    y = (rng.uniform(size=3000) < p).astype(int)
    frame = pd.DataFrame({"y": y, "right": p, "extreme": 1 / (1 + (p / (1 - p)) ** -2), "pid": np.arange(3000) // 2})
    right = audit(frame, "y", "right", [], patient="pid", n_boot=200).overall
    extreme = audit(frame, "y", "extreme", [], patient="pid", n_boot=200).overall
    assert right["calibration_slope_ci"][0] < 1 < right["calibration_slope_ci"][1]
    assert right["calibration_intercept_ci"][0] < 0 < right["calibration_intercept_ci"][1]
    assert extreme["calibration_slope_ci"][0] < 0.5 < extreme["calibration_slope_ci"][1]


def test_net_benefit_counts_true_and_false_positives_at_each_threshold():
    """By hand: at t = 0.25 the odds are 1/3; 10 rows, 3 true and 2 false positives acted on."""
    from medtl.evaluate.metrics import net_benefit

    y = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.3, 0.6, 0.4, 0.1, 0.2, 0.1, 0.05, 0.2]
    nb = net_benefit(y, p, [0.25, 0.5])
    assert nb["model"] == pytest.approx([3 / 10 - 2 / 10 / 3, 2 / 10 - 1 / 10])
    assert nb["treat_all"] == pytest.approx([0.4 - 0.6 / 3, 0.4 - 0.6])
    with pytest.raises(EvaluationError):
        net_benefit(y, p, [1.0])
