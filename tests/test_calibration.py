"""Calibration: temperature scaling recovers a known over-confidence; the run's choice of map (none, temperature,
Platt/vector) fixes a shifted base rate; records round-trip through the run dir."""

import json

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from medtl.errors import EvaluationError
from medtl.evaluate import apply_temperature, fit_temperature, load_calibration, save_calibration
from medtl.evaluate.calibration import (
    apply_calibration,
    calibration_nll,
    calibration_stats,
    fit_calibration,
    read_calibration,
    write_calibration,
)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid_case(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true))).astype(int)
    return true, y


def _softmax_case(k, n=6000, seed=1):
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 1.2, (n, k))
    p = _softmax(true)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return true, y


def test_sigmoid_overconfident_logits_recover_t_of_3():
    true, y = _sigmoid_case()
    logits = 3 * true  # over-confident by a factor 3
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.1)
    s = calibration_stats(logits, y, t)
    assert s["kind"] == "sigmoid" and s["n"] == len(y)
    assert s["nll_after"] < s["nll_before"] and s["ece_after"] < s["ece_before"] / 2
    p = apply_temperature(logits, t)
    assert s["nll_after"] == pytest.approx(log_loss(y, p), rel=1e-9)
    assert roc_auc_score(y, p) == pytest.approx(roc_auc_score(y, logits))  # ranking unchanged


@pytest.mark.parametrize("k", [2, 4])  # binary with 2 logits, and multi-class
def test_softmax_overconfident_logits_recover_t_of_3(k):
    true, y = _softmax_case(k)
    logits = 3 * true
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.1)
    s = calibration_stats(logits, y, t)
    assert s["kind"] == "softmax" and s["nll_after"] < s["nll_before"] and s["ece_after"] < s["ece_before"]
    p = apply_temperature(logits, t)
    assert np.allclose(p.sum(axis=1), 1) and (p.argmax(1) == logits.argmax(1)).all()
    assert s["nll_after"] == pytest.approx(log_loss(y, p, labels=list(range(k))), rel=1e-9)


def test_multilabel_sigmoid_per_output_with_unknown_labels():
    rng = np.random.default_rng(2)
    true = rng.normal(0, 1.5, (3000, 3))
    y = (rng.random((3000, 3)) < 1 / (1 + np.exp(-true))).astype(float)
    y[::7, 1] = np.nan  # unknown labels are left out of the likelihood
    t = fit_temperature(3 * true, y)
    assert t == pytest.approx(3.0, rel=0.1)
    s = calibration_stats(3 * true, y, t)
    assert s["kind"] == "multilabel" and s["nll_after"] < s["nll_before"] and s["ece_after"] < s["ece_before"]


def test_underconfident_logits_get_t_below_one_and_nll_is_minimal_at_t():
    true, y = _sigmoid_case(seed=3)
    t = fit_temperature(true / 2, y)
    assert t == pytest.approx(0.5, rel=0.1)
    nll = calibration_nll(true / 2, y, t)
    assert nll <= calibration_nll(true / 2, y, t * 1.05) and nll <= calibration_nll(true / 2, y, t / 1.05)


def test_save_load_round_trip(tmp_path):
    true, y = _sigmoid_case(n=500, seed=4)
    t = fit_temperature(3 * true, y)
    path = save_calibration(tmp_path / "run", t, 3 * true, y)
    record = json.loads(path.read_text())
    assert path.name == "calibration.json"
    assert record["method"] == "temperature" and record["fitted_on"] == "val" and record["n"] == 500
    assert record["temperature"] == t and record["nll_after"] < record["nll_before"]
    assert record["ece_after"] < record["ece_before"]
    assert load_calibration(tmp_path / "run") == t
    assert load_calibration(tmp_path / "elsewhere") == 1.0  # no file: no scaling
    save_calibration(tmp_path / "bare", 2.5)
    bare = json.loads((tmp_path / "bare" / "calibration.json").read_text())
    assert bare["temperature"] == 2.5 and bare["n"] is None and bare["nll_before"] is None


def test_bad_calibration_input_and_files(tmp_path):
    with pytest.raises(EvaluationError, match="NaN"):
        fit_temperature([0.1, np.nan], [0, 1])
    with pytest.raises(EvaluationError, match="0/1"):
        fit_temperature([0.1, 0.2], [0, 2])
    with pytest.raises(EvaluationError, match="class labels"):
        fit_temperature([[0.1, 0.2]], [2])
    with pytest.raises(EvaluationError, match="positive"):
        save_calibration(tmp_path, -1.0)
    with pytest.raises(EvaluationError, match="positive"):
        apply_temperature([0.0], 0.0)
    (tmp_path / "calibration.json").write_text("{not json")
    with pytest.raises(EvaluationError, match="cannot read calibration") as info:
        load_calibration(tmp_path)
    assert info.value.path.endswith("calibration.json")
    (tmp_path / "calibration.json").write_text(json.dumps({"method": "temperature", "temperature": 0}))
    with pytest.raises(EvaluationError, match="positive number"):
        load_calibration(tmp_path)


# ----------------------------------------------------------------------------- the choice of map


def _prior_shifted(n=1500, prevalence=0.8, seed=5):
    """What a class-weighted loss gives: logits scored as if the classes were balanced."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    margin = rng.normal(0, 1, n) + 2.0 * y - 1.0  # calibrated for prevalence 0.5 ...
    return np.stack([np.zeros(n), margin], 1), y  # ... but 80 % are positive


def test_a_shifted_base_rate_needs_an_intercept_and_gets_one():
    from medtl.evaluate.metrics import expected_calibration_error

    logits, y = _prior_shifted()
    record = fit_calibration(logits, y, "binary")
    assert record["method"] == "platt" and record["fitted_on"] == "val"
    assert record["cv_nll"]["platt"] < record["cv_nll"]["temperature"] < record["cv_nll"]["none"]
    assert record["bias"][0] == pytest.approx(np.log(0.8 / 0.2), abs=0.35)  # the prior log-odds it undoes
    platt = apply_calibration(logits, record, "binary")[:, 1]
    temp = apply_temperature(logits, fit_temperature(logits, y), kind="softmax")[:, 1]
    ece_platt, ece_temp = expected_calibration_error(y, platt), expected_calibration_error(y, temp)
    assert ece_platt < 0.03 < ece_temp  # a temperature cannot move a base rate
    assert roc_auc_score(y, platt) == pytest.approx(roc_auc_score(y, logits[:, 1]))  # ranking kept


def test_plain_overconfidence_is_calibrated_and_few_images_are_left_alone():
    true, y = _sigmoid_case(n=2000, seed=6)
    logits = np.stack([np.zeros_like(true), 3 * true], 1)
    record = fit_calibration(logits, y, "binary")
    assert record["method"] in ("temperature", "platt")
    p = apply_calibration(logits, record, "binary")[:, 1]
    assert log_loss(y, p) < log_loss(y, _softmax(logits)[:, 1])
    small = fit_calibration(logits[:12], y[:12], "binary")
    assert small["method"] == "none" and small["fitted_on"] == "not fitted: 12 validation images (fewer than 20)"
    np.testing.assert_allclose(apply_calibration(logits[:5], small, "binary"), _softmax(logits[:5]))
    one_class = fit_calibration(logits[:40], np.ones(40), "binary")
    assert one_class["fitted_on"] == "not fitted: one class in validation"


def test_multilabel_gets_a_sigmoid_map_per_finding_and_keeps_each_ranking():
    rng = np.random.default_rng(7)
    n = 1500
    y = np.stack([rng.random(n) < 0.2, rng.random(n) < 0.7], 1).astype(float)
    z = rng.normal(0, 1, (n, 2)) + 2 * y - 1  # each finding scored as if its prevalence were 0.5
    y[::9, 0] = np.nan
    record = fit_calibration(z, y, "multilabel")
    assert record["method"] == "platt" and len(record["scale"]) == 2
    assert record["bias"][0] < 0 < record["bias"][1]  # a rare finding goes down, a common one up
    p = apply_calibration(z, record, "multilabel")
    for j in range(2):
        known = ~np.isnan(y[:, j])
        assert roc_auc_score(y[known, j], p[known, j]) == pytest.approx(roc_auc_score(y[known, j], z[known, j]))
        assert abs(p[known, j].mean() - y[known, j].mean()) < 0.03


def test_multiclass_vector_scaling_fixes_per_class_shifts():
    true, y = _softmax_case(3, n=3000, seed=8)
    shifted = true + np.array([1.5, 0.0, -1.5])  # class 0 scored too often, class 2 too rarely
    record = fit_calibration(shifted, y, "multiclass")
    assert record["method"] == "vector" and record["bias"][0] == 0.0
    after = log_loss(y, apply_calibration(shifted, record, "multiclass"), labels=[0, 1, 2])
    assert after < log_loss(y, _softmax(shifted), labels=[0, 1, 2]) - 0.05


def test_written_record_round_trips_and_bad_records_are_refused(tmp_path):
    logits, y = _prior_shifted(n=300)
    record = fit_calibration(logits, y, "binary")
    path = write_calibration(tmp_path, record, logits, y, task="binary")
    back = read_calibration(tmp_path)
    assert back["method"] == "platt" and back["task"] == "binary" and back["n"] == 300
    assert back["ece_after"] < back["ece_before"] and back["nll_after"] < back["nll_before"]
    np.testing.assert_allclose(apply_calibration(logits, back, "binary"), apply_calibration(logits, record, "binary"))
    path.write_text(json.dumps({"method": "platt", "scale": [1.0]}))
    with pytest.raises(EvaluationError, match="equal-length finite 'scale' and 'bias'"):
        read_calibration(tmp_path)
    path.write_text(json.dumps({"method": "isotonic"}))
    with pytest.raises(EvaluationError, match="method must be one of none, temperature, platt, vector"):
        read_calibration(tmp_path)
