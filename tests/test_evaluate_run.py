"""`medtl evaluate` / `medtl audit` and the calibration a training run writes (tiny, seconds)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medtl.cli import main
from medtl.errors import EvaluationError
from medtl.evaluate.calibration import load_calibration
from medtl.evaluate.run import evaluate_run, predict_manifest
from medtl.train.config import TrainConfig
from medtl.train.finetune import finetune, load_run

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "cxr"
    # half the patients validate: temperature scaling needs at least 20 validation images
    cfg = TrainConfig(manifest=str(SAMPLE / "cxr.csv"), size=[32, 32], batch_size=8, epochs=2, val_fraction=0.5,
                      test_fraction=0.25, patience=5, seed=0)  # fmt: skip
    finetune(cfg, run, resume=False)
    return run


def test_run_directory_holds_calibration_and_threshold(run_dir):
    cal = json.loads((run_dir / "calibration.json").read_text())
    assert cal["fitted_on"] == "val" and cal["task"] == "binary" and cal["n"] >= 20
    # the map with the lowest cross-validated validation NLL was chosen among all three
    assert set(cal["cv_nll"]) == {"none", "temperature", "platt"}
    assert cal["cv_nll"][cal["method"]] == min(cal["cv_nll"].values())
    assert cal["temperature"] > 0 and cal["temperature"] == load_calibration(run_dir)
    # refitted on all validation images, a family that holds the identity cannot raise its NLL
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9
    thr = json.loads((run_dir / "threshold.json").read_text())
    assert thr["rule"] == "youden" and 0 <= thr["threshold"] <= 1
    card = (run_dir / "model_card.md").read_text()
    assert f"threshold {thr['threshold']:.3f} (youden)" in card
    assert f"validation ECE {cal['ece_before']:.3f} → {cal['ece_after']:.3f}" in card
    assert "1 channel(s), preset xr (channels: auto → 1" in card  # the sample radiographs are grey


def test_evaluate_run_scores_equal_model_with_temperature(run_dir, tmp_path):
    res = evaluate_run(run_dir, SAMPLE / "cxr.csv", tmp_path, groups=["sex", "site"], n_boot=50, min_group=5)
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert res["n"] == len(rows) == 48 and res["task"] == "binary"
    # identifiers never leave: the patient column holds pseudonyms, not MRN-...
    assert not any("MRN" in r["patient"] for r in rows)
    # an independent recomputation of one score: model -> logits / T -> softmax
    from medtl.data import read_manifest
    from medtl.data.dataset import prepare

    model, spec, _ = load_run(run_dir)
    manifest = read_manifest(SAMPLE / "cxr.csv")
    image = prepare(manifest, [0], spec, cache_dir=tmp_path / "c").dataset[0]["image"][None]
    cal = json.loads((run_dir / "calibration.json").read_text())
    with torch.no_grad():
        z = model(image)[0].double()
    margin = float(z[1] - z[0])
    expected = {  # P(positive) of each map, written out from its definition
        "none": 1 / (1 + np.exp(-margin)),
        "temperature": 1 / (1 + np.exp(-margin / cal["temperature"])),
        "platt": 1 / (1 + np.exp(-(cal["scale"][0] * margin + cal["bias"][0]))) if "scale" in cal else None,
    }[cal["method"]]
    first = next(r for r in rows if r["path"] == manifest.records[0].ref)  # relative to the manifest's folder
    assert float(first["score"]) == pytest.approx(expected, abs=1e-5)
    assert int(first["prediction"]) == int(float(first["score"]) >= res["threshold"])
    # metrics at the run's validation threshold, with CIs; the audit files beside them
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["settings"]["threshold_rule"] == "given" and audit["settings"]["resampling_unit"] == "patient"
    assert set(audit["groups"]) == {"sex", "site"}
    for name in ("metrics.json", "groups.csv", "gaps.csv", "roc.png", "audit_section.html"):
        assert (tmp_path / name).is_file(), name
    overall = json.loads((tmp_path / "metrics.json").read_text())["overall"]
    lo, hi = overall["auroc_ci"]
    assert lo <= overall["auroc"] <= hi


def test_evaluate_errors_name_the_problem(run_dir, tmp_path):
    with pytest.raises(EvaluationError, match="no group column 'sexx'.*did you mean 'sex'"):
        evaluate_run(run_dir, SAMPLE / "cxr.csv", tmp_path, groups=["sexx"], n_boot=0)
    with pytest.raises(EvaluationError, match="not a run directory"):
        evaluate_run(tmp_path, SAMPLE / "cxr.csv", tmp_path / "o", n_boot=0)


def _predictions(path: Path, n: int = 400, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    site = rng.choice(["A", "B"], n)
    noise = np.where(site == "B", 3.0, 0.7)  # site B's scores are much noisier: a real gap
    score = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(0, 1, n) * noise)))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["pid", "truth", "prob", "sex", "site"])
        for i in range(n):
            w.writerow([f"p{i // 2}", y[i], f"{score[i]:.6f}", rng.choice(["F", "M"]), site[i]])


def test_cli_audit_flags_a_planted_gap(tmp_path, capsys):
    csv_path = tmp_path / "preds.csv"
    _predictions(csv_path)
    code = main(["audit", str(csv_path), "--label", "truth", "--score", "prob", "--groups", "sex,site",
                 "--threshold", "0.5", "--patient", "pid", "--n-boot", "200", "-o", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "FLAG site auroc" in out and "FLAG sex" not in out
    data = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert {f["attribute"] for f in data["flags"]} == {"site"}


def test_cli_audit_bad_input(tmp_path, capsys):
    csv_path = tmp_path / "preds.csv"
    _predictions(csv_path, n=60)
    code = main(["audit", str(csv_path), "--label", "truth", "--score", "probability", "--groups", "sex",
                 "-o", str(tmp_path / "out")])  # fmt: skip
    assert code == 1
    assert "did you mean 'prob'" in capsys.readouterr().err


def test_cross_validation_tests_every_patient_once(tmp_path, capsys):
    code = main(["train", "-o", str(tmp_path / "cv"), "--folds", "3", "--set", f"manifest={SAMPLE / 'cxr.csv'}",
                 "--set", "size=[32,32]", "--set", "epochs=1", "--set", "batch_size=8"])  # fmt: skip
    assert code == 0
    assert "pooled out-of-fold AUROC" in capsys.readouterr().out
    summary = json.loads((tmp_path / "cv" / "folds.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1, 2]
    rows = list(csv.DictReader(open(tmp_path / "cv" / "predictions.csv")))
    assert len(rows) == 48 and len({r["path"] for r in rows}) == 48  # each image tested exactly once
    folds_of = {}
    for r in rows:
        folds_of.setdefault(r["patient"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds_of.values())  # a patient's images share one held-out fold
    # evaluating one fold's run on its own held-out split reproduces its rows
    res = evaluate_run(tmp_path / "cv" / "fold_1", SAMPLE / "cxr.csv", tmp_path / "e", split="test", n_boot=0)
    assert res["n"] == sum(r["fold"] == "1" for r in rows)
    # the stored split finds the same held-out images in any manifest that lists them (labels.csv holds
    # cxr.csv's rows with the same relative paths, and the CT series besides)
    other = evaluate_run(tmp_path / "cv" / "fold_1", SAMPLE / "labels.csv", tmp_path / "e2", split="test", n_boot=0)
    assert other["n"] == res["n"] and other["notes"] == []


def test_multilabel_run_with_unknown_findings_trains_calibrates_and_evaluates(tmp_path):
    rows = list(csv.DictReader(open(SAMPLE / "cxr.csv")))
    path = tmp_path / "ml.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "patient_id", "effusion", "nodule", "sex"])
        w.writeheader()
        for i, r in enumerate(rows):
            nodule = "" if i % 5 == 0 else str((i // 2) % 2)  # every 5th image: finding not reported
            effusion = "" if i % 7 == 3 else r["label"]
            w.writerow({"path": str(SAMPLE / r["path"]), "patient_id": r["patient_id"], "effusion": effusion,
                        "nodule": nodule, "sex": r["sex"]})  # fmt: skip
    cfg = TrainConfig(manifest=str(path), label_columns=["effusion", "nodule"], size=[32, 32], batch_size=8,
                      epochs=2, val_fraction=0.5, test_fraction=0.25)  # fmt: skip
    result = finetune(cfg, tmp_path / "run", resume=False)
    assert np.isfinite(result.val_auroc)  # unknown labels neither crash the loss nor poison AUROC
    assert json.loads((tmp_path / "run" / "calibration.json").read_text())["task"] == "multilabel"
    # the number that chose the checkpoint is the macro AUROC evaluate reports on validation
    val = evaluate_run(tmp_path / "run", path, tmp_path / "val", split="val", n_boot=0)
    assert val["overall"]["macro_auroc"] == pytest.approx(result.val_auroc, abs=1e-6)
    res = evaluate_run(tmp_path / "run", path, tmp_path / "eval", split="test", n_boot=50)
    assert res["task"] == "multilabel" and set(res["per_label"]) == {"effusion", "nodule"}
    assert (tmp_path / "eval" / "nodule" / "audit.json").is_file()
    preds = list(csv.DictReader(open(tmp_path / "eval" / "predictions.csv")))
    assert {"score_0", "score_1", "effusion", "nodule"} <= set(preds[0])


def test_findings_manifest_trains_and_evaluates_from_the_cli_with_the_shipped_config(tmp_path, capsys):
    rows = list(csv.DictReader(open(SAMPLE / "cxr.csv")))
    path = tmp_path / "findings.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "patient_id", "label", "sex"])
        w.writeheader()
        for i, r in enumerate(rows):  # the ChestX-ray14 layout: finding names joined by |
            found = ["Effusion"] * (r["label"] == "1") + ["Nodule"] * (i % 3 == 0)
            w.writerow({"path": str(SAMPLE / r["path"]), "patient_id": r["patient_id"],
                        "label": "|".join(found) or "No Finding", "sex": r["sex"]})  # fmt: skip
    shipped = Path(__file__).resolve().parents[1] / "configs" / "cxr-2d.yaml"
    run = tmp_path / "run"
    assert main(["train", str(shipped), "-o", str(run), "--set", f"manifest={path}", "--set", "size=32",
                 "--set", "epochs=2", "--set", "saliency_check=0"]) == 0  # fmt: skip
    assert json.loads((run / "labels.json").read_text()) == ["Effusion", "Nodule"]
    assert main(["evaluate", str(run), str(path), "--split", "test", "--n-boot", "20", "-o", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "Effusion: n=" in out and "Nodule: n=" in out
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["task"] == "multilabel" and set(metrics["per_label"]) == {"Effusion", "Nodule"}
    # another CSV with only some of the findings is read in the run's output order
    subset = tmp_path / "subset.csv"
    subset.write_text(f"path,label\n{SAMPLE / rows[0]['path']},Nodule\n{SAMPLE / rows[1]['path']},No Finding\n")
    rows_out, _, info = predict_manifest(run, subset)
    assert info["label_columns"] == ["Effusion", "Nodule"] and rows_out[0]["Nodule"] == 1.0
    assert 0 <= rows_out[0]["score_0"] <= 1 and 0 <= rows_out[0]["score_1"] <= 1


def test_3d_ct_config_trains_and_evaluates_from_the_cli(tmp_path, capsys):
    run, out = tmp_path / "ct", tmp_path / "ct-eval"
    code = main(["train", str(Path(__file__).resolve().parents[1] / "configs" / "ct-3d.yaml"), "-o", str(run),
                 "--set", f"manifest={SAMPLE / 'ct.csv'}", "--set", "size=[32,32,32]", "--set", "epochs=2",
                 "--set", "strategy=lpft", "--set", "probe_epochs=1", "--set", "l2sp_alpha=0.01",
                 "--set", "saliency_check=0"])  # fmt: skip
    assert code == 0
    model, spec, _ = load_run(run)
    assert spec.channels == 3 and spec.size == (32, 32, 32)  # three HU windows as channels, a 3D input
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["temperature"] == 1.0 and cal["fitted_on"].startswith("not fitted")  # 2-3 validation volumes
    code = main(["evaluate", str(run), str(SAMPLE / "ct.csv"), "--split", "test", "--n-boot", "20", "-o", str(out)])
    assert code == 0 and "AUROC" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert rows and all(0 <= float(r["score"]) <= 1 for r in rows)


def test_cli_audit_threshold_chosen_on_validation_predictions(tmp_path, capsys):
    from medtl.evaluate.metrics import choose_threshold

    test_csv, val_csv = tmp_path / "test.csv", tmp_path / "val.csv"
    _predictions(test_csv, n=300, seed=1)
    _predictions(val_csv, n=200, seed=2)
    code = main(["audit", str(test_csv), "--label", "truth", "--score", "prob", "--groups", "site", "--n-boot", "50",
                 "--threshold-from", str(val_csv), "--threshold-rule", "sensitivity", "--target-sensitivity", "0.95",
                 "-o", str(tmp_path / "out")])  # fmt: skip
    assert code == 0 and "flatters" not in capsys.readouterr().out
    settings = json.loads((tmp_path / "out" / "audit.json").read_text())["settings"]
    val = list(csv.DictReader(open(val_csv)))
    expected = choose_threshold([float(r["truth"]) for r in val], [float(r["prob"]) for r in val],
                                rule="sensitivity", target=0.95)  # fmt: skip
    assert settings["threshold"] == pytest.approx(expected)
    assert settings["threshold_rule"] == "sensitivity >= 0.95 on val.csv (200 validation rows)"
    code = main(["audit", str(test_csv), "--label", "truth", "--score", "prob", "--groups", "site",
                 "--threshold", "0.5", "--threshold-from", str(val_csv), "-o", str(tmp_path / "o2")])  # fmt: skip
    assert code == 1 and "not both" in capsys.readouterr().err


def test_multiclass_npz_trains_and_evaluates_one_class_against_the_rest(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 36), ("val", 24), ("test", 24)):
        y = np.tile([0, 1, 2], n // 3)[:, None].astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        x[y[:, 0] == 1, 2:10, 2:10] = 250  # class 1: a square top left
        x[y[:, 0] == 2, 18:26, 18:26] = 250  # class 2: bottom right
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
    np.savez(tmp_path / "three.npz", **arrays)
    cfg = TrainConfig(npz=str(tmp_path / "three.npz"), size=[32, 32], batch_size=12, epochs=4, lr=0.003)
    res = finetune(cfg, tmp_path / "run", resume=False)
    assert res.val_auroc > 0.8  # macro one-vs-rest over three classes
    out = evaluate_run(tmp_path / "run", tmp_path / "three.npz", tmp_path / "eval", n_boot=30, min_group=5)
    assert out["task"] == "multiclass" and out["n"] == 24
    assert out["overall"]["macro_auroc"] > 0.8 and 0 <= out["overall"]["accuracy"] <= 1
    assert sorted(out["per_label"]) == ["label=0", "label=1", "label=2"]
    preds = list(csv.DictReader(open(tmp_path / "eval" / "predictions.csv")))
    sums = [sum(float(r[f"score_{k}"]) for k in range(3)) for r in preds]
    assert np.allclose(sums, 1.0, atol=1e-6)  # calibrated softmax still sums to one
    assert (tmp_path / "eval" / "label_1" / "audit.json").is_file()
    # the same run and .npz explained: one map per image, for its predicted class
    from medtl.explain import explain

    ex = explain(tmp_path / "run", [tmp_path / "three.npz"], tmp_path / "explain", split="test", deletion_samples=0)
    assert ex["n_explained"] == 24 and len(ex["maps"]) == 24 and ex["task"] == "multiclass"
    for rec, inp in zip(ex["maps"], ex["inputs"], strict=True):
        assert rec["input"] == inp["input"] and rec["input"].startswith("test/")
        assert rec["target"] == max(inp["probabilities"], key=inp["probabilities"].get)
