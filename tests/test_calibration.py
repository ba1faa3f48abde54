"""Temperature scaling: recovers a known over-confidence, lowers NLL and ECE, round-trips through the run dir."""

import json

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from medtl.errors import EvaluationError
from medtl.evaluate import apply_temperature, fit_temperature, load_calibration, save_calibration
from medtl.evaluate.calibration import calibration_nll, calibration_stats


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
