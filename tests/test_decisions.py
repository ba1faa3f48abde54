"""The same image gets the same answer (issue 24): the decision threshold and the out-of-distribution
threshold a run fits lie halfway between two neighbouring validation scores, never on one, so an
image's decision and flag do not hang on the last bits that change with the batch size, the worker
count or the device. The rules keep their meaning: the validation rows on each side are those of
the former thresholds (which were a validation score), and runs fitted before keep what they stored.

The unit tests take seconds; the end-to-end test trains a tiny run (report_setup.train_run, about
15 s on 2 cores) and predicts its own validation images, one of which sat exactly on the former
threshold, at three batch sizes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from medtl.errors import ConfigError, EvaluationError
from medtl.evaluate.metrics import choose_threshold, threshold_between
from medtl.predict.ood import conformal_threshold


# ----------------------------------------------------------------------------- the former rules
def _old_choose(y: np.ndarray, s: np.ndarray, rule: str, target: float = 0.9) -> float:
    """The rule before issue 24: the lowest validation score decided positive, itself."""
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]
    if rule == "youden":
        return float(thr[int(np.argmax(tpr - fpr))])
    return float(thr[int(np.argmax(tpr >= target - 1e-12))])


def _old_conformal(s: np.ndarray, quantile: float) -> float:
    """The rule before issue 24: the ceil((n + 1) q)-th smallest score, itself."""
    s = np.sort(s)
    return float(s[min(int(np.ceil((len(s) + 1) * quantile)), len(s)) - 1])


def _validation(seed: int, n: int = 120, decimals: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    """Binormal labels and probabilities, rounded so that many scores tie (across classes too)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y)))
    return y, (np.round(p, decimals) if decimals is not None else p)


def _neighbours(values: np.ndarray, t: float) -> tuple[float, float]:
    below, above = values[values < t], values[values > t]
    return float(below.max()), float(above.min())


# ----------------------------------------------------------------------------- choose_threshold
@pytest.mark.parametrize("rule,target", [("youden", 0.9), ("sensitivity", 0.9), ("sensitivity", 0.75)])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [2, None])
def test_choose_threshold_sits_halfway_between_scores_with_the_same_split(rule, target, seed, decimals):
    y, p = _validation(seed, decimals=decimals)
    old = _old_choose(y, p, rule, target)
    t = choose_threshold(y, p, rule=rule, target=target)
    assert not np.isin(t, p)  # no validation image sits on it
    assert np.array_equal(p >= t, p >= old)  # same rows positive: same sensitivity and specificity
    lo, hi = _neighbours(p, t)
    assert hi == old and t == (lo + hi) / 2  # halfway between the last negative and the first positive


def test_a_score_a_few_bits_off_gets_the_same_decision():
    """What batch size and device change: the last bits of a probability. At the former threshold
    the validation image on it flipped to negative one float below; at the new one nothing flips."""
    for seed in range(4):
        y, p = _validation(seed, decimals=None)
        for rule in ("youden", "sensitivity"):
            t = choose_threshold(y, p, rule=rule)
            for jitter in (np.nextafter(p, 0), np.nextafter(p, 1), p * (1 - 1e-7), p * (1 + 1e-7)):
                assert np.array_equal(jitter >= t, p >= t), (seed, rule)


def test_choose_threshold_ties_stay_on_one_side():
    y = np.array([0, 0, 1, 0, 1, 1, 1])
    p = np.array([0.25, 0.5, 0.5, 0.5, 0.5, 0.75, 0.75])
    t = choose_threshold(y, p, rule="sensitivity", target=1.0)  # must take the tied 0.5s in
    assert t == 0.375 and (p >= t).sum() == 6
    assert choose_threshold(y, p) == 0.625  # Youden: 0.75s positive, every tied 0.5 negative


def test_choose_threshold_edges():
    # every row positive, probabilities: halfway to 0 below the lowest
    assert choose_threshold([1, 0, 1], [0.25, 0.5, 0.75], rule="sensitivity", target=1.0) == 0.125
    # every row positive, scores that are not probabilities (logits): half the gap below the lowest
    assert choose_threshold([1, 0, 1], [-2.0, 1.0, 3.0], rule="sensitivity", target=1.0) == -3.5
    # all scores equal: all positive (the former rule too), below them
    assert choose_threshold([0, 1, 1], [0.5, 0.5, 0.5]) == 0.25
    assert choose_threshold([0, 1], [0.0, 0.0]) == -0.5  # on the bound already: half of max(|s|, 1) below
    # two scores one float apart: nothing lies between, the split of the former rule is kept
    hi = float(np.nextafter(0.5, 1))
    assert choose_threshold([0, 1], [0.5, hi]) == hi
    with pytest.raises(EvaluationError, match="NaN"):
        choose_threshold([0, 1, 1], [0.2, float("nan"), 0.8])
    with pytest.raises(EvaluationError, match="both classes"):
        choose_threshold([1, 1], [0.2, 0.8])


def test_threshold_between_ends():
    assert threshold_between([0.25, 0.5], 2.0, bounds=(0.0, 1.0)) == 0.75  # all below: halfway to 1
    assert threshold_between([0.25, 1.0], 2.0, bounds=(0.0, 1.0)) == 1.375  # on the bound: mirror the gap
    assert threshold_between([1.0, 2.0, 4.0], 9.0) == 5.0 and threshold_between([1.0, 2.0, 4.0], -1.0) == 0.5
    assert threshold_between([3.0, 3.0], 4.0) == 4.5 and threshold_between([-8.0], 0.0) == -4.0
    with pytest.raises(EvaluationError, match="finite"):
        threshold_between([], 0.5)
    with pytest.raises(EvaluationError, match="finite"):
        threshold_between([0.1, float("inf")], 0.5)


# ----------------------------------------------------------------------------- conformal_threshold
@pytest.mark.parametrize("n", [5, 10, 98, 99, 150, 301, 1000])
@pytest.mark.parametrize("quantile", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("decimals", [1, None])
def test_conformal_threshold_flags_the_same_held_out_images_from_between_them(n, quantile, decimals):
    rng = np.random.default_rng(n)
    s = rng.gamma(4.0, 10.0, size=n)
    s = np.round(s, decimals) if decimals is not None else s
    old = _old_conformal(s, quantile)
    t = conformal_threshold(s, quantile)
    assert not np.isin(t, s)
    assert np.array_equal(s > t, s > old)  # the same false-flag rate on the held-out images
    if old < s.max():
        assert t == (old + s[s > old].min()) / 2
    else:  # too few images for the quantile: above the maximum by half the gap below it
        top = np.unique(s)
        assert t == top[-1] + (top[-1] - top[-2]) / 2
    for jitter in (np.nextafter(s, 0), np.nextafter(s, np.inf), s * (1 - 1e-6), s * (1 + 1e-6)):
        assert np.array_equal(jitter > t, s > t)


def test_conformal_threshold_edges():
    assert conformal_threshold(np.full(10, 7.0), 0.99) == 10.5  # all equal: half of max(|s|, 1) above
    assert conformal_threshold(np.array([2.0, 2.0, 5.0, 5.0]), 0.25) == 3.5  # ties stay together
    hi = float(np.nextafter(5.0, 6))
    assert conformal_threshold(np.array([1.0, 5.0, hi]), 0.5) == 5.0  # nothing between: the former value
    for bad in ([], [1.0, float("nan")], [1.0, float("inf")]):
        with pytest.raises(ConfigError, match="finite"):
            conformal_threshold(np.array(bad), 0.99)
    with pytest.raises(ConfigError, match="quantile"):
        conformal_threshold(np.arange(5.0), 0.0)


def test_fit_ood_false_alarm_is_that_of_the_former_threshold():
    from medtl.predict import fit_ood

    rng = np.random.default_rng(3)
    val = rng.normal(size=(300, 6))  # k = 298 of 300: an inner order statistic
    stats = fit_ood(rng.normal(size=(300, 6)), None, val, normalise=False)
    scores = stats.scores(val)
    old = _old_conformal(scores, 0.99)
    assert not np.isin(stats.threshold, scores) and old < stats.threshold < scores[scores > old].min()
    assert stats.false_alarm == float(np.mean(scores > old)) > 0


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The report tests' tiny radiograph run (2 epochs at 64 px) and a folder of its own
    validation images: the former threshold was the probability of one of them, the former OOD
    threshold the score of another."""
    from report_setup import SAMPLE, train_run

    from medtl.evaluate.run import select_rows

    root = tmp_path_factory.mktemp("decisions")
    run = train_run(root)
    _, manifest, indices, _ = select_rows(run, SAMPLE / "cxr.csv", "val")
    val = root / "val"
    for i in indices:
        rec = manifest.records[i]
        dest = val / rec.ref
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if Path(rec.path).is_dir() else shutil.copy)(rec.path, dest)
    return run, val


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


def test_batch_size_and_workers_do_not_change_decisions_or_flags(tiny_run, tmp_path):
    from medtl.predict import predict_folder

    run, val = tiny_run
    runs = {}
    for bs, workers in ((1, 0), (7, 2), (64, 0)):
        predict_folder(run, val, tmp_path / f"bs{bs}", batch_size=bs, workers=workers)
        runs[bs] = _rows(tmp_path / f"bs{bs}" / "predictions.csv")
    ref = runs[1]
    assert len(ref) >= 10
    for bs, rows in runs.items():
        assert rows.keys() == ref.keys()
        for path, row in rows.items():
            assert (row["decision"], row["ood"]) == (ref[path]["decision"], ref[path]["ood"]), (bs, path)
            assert abs(float(row["p_label=1"]) - float(ref[path]["p_label=1"])) <= 1e-5, (bs, path)


def test_no_validation_image_sits_on_a_threshold(tiny_run):
    """Exact floats (not the CSV's 6 decimals): every validation image is far from both thresholds
    compared with what batch size changes (~1e-7 here). Under the former rule one image's
    probability equalled the decision threshold, and the highest score the OOD threshold up to
    the float32 storage of the statistics."""
    import torch

    from medtl.io import load_image
    from medtl.predict import Predictor

    run, val = tiny_run
    pred = Predictor(run, device="cpu")
    files = sorted(p for p in val.rglob("*") if p.is_file())
    x = torch.cat([torch.as_tensor(pred.prepare(load_image(f))[0]) for f in files])
    for bs in (1, 64):
        out = pred.predict_inputs(x, batch_size=bs)
        probs = np.array([p.probabilities["label=1"] for p in out])
        scores = np.array([p.ood_score for p in out])
        assert np.abs(probs - pred.threshold).min() > 1e-5, bs
        assert np.abs(scores - pred.ood.threshold).min() > 1e-5 * pred.ood.threshold, bs


def test_thresholds_stored_by_an_older_run_are_read_as_written(tiny_run, tmp_path):
    """A run fitted under the former rule keeps its numbers: loading never recomputes them."""
    from medtl.predict import Predictor, read_ood
    from medtl.predict.ood import save_ood

    run, _ = tiny_run
    old = tmp_path / "old-run"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("cache", "checkpoints", "logs", "tensorboard"))
    record = json.loads((old / "threshold.json").read_text())
    record["threshold"] = 0.7624178681222333  # a former threshold: some image's probability, to the bit
    (old / "threshold.json").write_text(json.dumps(record))
    stats = read_ood(old)
    stats.threshold = 70.26726999684864
    save_ood(old, stats)
    pred = Predictor(old, device="cpu")
    assert pred.threshold == 0.7624178681222333 and pred.ood.threshold == 70.26726999684864
    assert read_ood(old).threshold == 70.26726999684864
    assert json.loads((old / "threshold.json").read_text())["threshold"] == 0.7624178681222333
