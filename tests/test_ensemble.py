"""Ensembles as one run (`medtl train --ensemble K`): members on one split, probabilities averaged
(checked against the member runs loaded on their own), and every command taking the run as one
model: evaluate, explain (Grad-CAM averaged over members), predict (with the members' spread)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medtl.cli import main
from medtl.errors import ConfigError
from medtl.models import EnsembleClassifier, create
from medtl.rundir import load_run
from medtl.train.config import TrainConfig, load_config
from medtl.train.finetune import finetune

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def _cfg(**kw) -> TrainConfig:
    base = dict(manifest=str(SAMPLE / "cxr.csv"), size=[32, 32], batch_size=8, epochs=1, val_fraction=0.25,
                test_fraction=0.25, seed=3)  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ensemble") / "run"
    finetune(_cfg(ensemble=2), run, resume=False)
    return run


def _images(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def test_an_ensemble_run_averages_its_members_probabilities(ensemble_run):
    model, spec, labels = load_run(ensemble_run)
    assert isinstance(model, EnsembleClassifier) and len(model.members) == 2
    members = [load_run(ensemble_run / "members" / f"m{k}")[0] for k in range(2)]
    x = _images()
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(1) for m in members]).mean(0)
        assert torch.allclose(model(x).softmax(1), expected, atol=1e-6)
    # one split, drawn with the ensemble's seed; the members' training seeds differ
    split = json.loads((ensemble_run / "split.json").read_text())["keys"]
    for k in range(2):
        member = ensemble_run / "members" / f"m{k}"
        assert json.loads((member / "split.json").read_text())["keys"] == split
        assert load_config(member / "config.yaml").seed == 3 + k
    assert single_split_equals(split)
    metrics = json.loads((ensemble_run / "metrics.json").read_text())
    assert metrics["task"] == "binary" and len(metrics["best_epoch"]) == 2
    assert "**Ensemble**: 2 members" in (ensemble_run / "model_card.md").read_text()


def single_split_equals(split: dict) -> bool:
    """The split a single run with the same seed draws: an ensemble changes no patient's part."""
    from medtl.train.finetune import run_data

    return run_data(_cfg()).record()["keys"] == split


def test_predict_explain_and_evaluate_take_the_ensemble_as_one_model(ensemble_run, tmp_path):
    from medtl.evaluate.run import evaluate_run
    from medtl.explain import Explainer
    from medtl.explain.methods import saliency
    from medtl.predict import predict_folder

    out = tmp_path / "pred"
    predict_folder(ensemble_run, SAMPLE / "cxr" / "p002", out, workers=0)
    rows = list(csv.DictReader(open(out / "predictions.csv", newline="")))
    assert len(rows) == 2 and all(r["member_spread"] != "" for r in rows)
    # the spread, independently: the members' probabilities of the same prepared inputs
    explainer = Explainer(ensemble_run)
    from medtl.io import load_image

    x = explainer.prepare(load_image(SAMPLE / "cxr" / "p002" / "IM000102.dcm"))[0]
    members = [load_run(ensemble_run / "members" / f"m{k}")[0] for k in range(2)]
    with torch.no_grad():
        p = torch.stack([m(x).softmax(1)[0] for m in members])
    assert float(rows[0]["member_spread"]) == pytest.approx(float(p.std(0, unbiased=False).max()), abs=1e-4)
    # Grad-CAM of an ensemble: the mean of its members' maps (each of its own output)
    ens_map = explainer.saliency(x, 1, "gradcam")
    member_maps = [saliency(m, x, 1, "gradcam", task="binary").numpy() for m in members]
    assert np.allclose(ens_map, np.mean(member_maps, axis=0), atol=1e-6)
    assert explainer.saliency(x, 1, "ig").shape == tuple(explainer.spec.size)
    result = evaluate_run(ensemble_run, SAMPLE / "cxr.csv", tmp_path / "eval", split="test", n_boot=0)
    assert result["n"] > 0
    from medtl.report import build_report

    build_report(ensemble_run, out, tmp_path / "report", workers=0)
    page = (tmp_path / "report" / "cases" / f"{rows[0]['key']}.html").read_text()
    assert "An ensemble of 2 such networks" in page and "The ensemble's members" in page


def test_a_rerun_loads_finished_members_instead_of_training_them(ensemble_run, tmp_path):
    stamps = {k: os.stat(ensemble_run / "members" / f"m{k}" / "model.pt").st_mtime_ns for k in range(2)}
    before = torch.load(ensemble_run / "model.pt", weights_only=True)
    finetune(_cfg(ensemble=2), ensemble_run)  # as after a crash once the members had finished
    assert {k: os.stat(ensemble_run / "members" / f"m{k}" / "model.pt").st_mtime_ns for k in range(2)} == stamps
    after = torch.load(ensemble_run / "model.pt", weights_only=True)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_ensemble_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="ensemble must be"):
        _cfg(ensemble=0)
    with pytest.raises(ConfigError, match="split_seed must be"):
        _cfg(split_seed=-1)
    with pytest.raises(ConfigError, match="two or more members"):
        EnsembleClassifier([create("resnet10", num_classes=2)], task="binary")
    with pytest.raises(ConfigError, match="must share backbone"):
        EnsembleClassifier([create("resnet10", num_classes=2), create("resnet18", num_classes=2)], task="binary")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"manifest: {SAMPLE / 'cxr.csv'}\nsize: [32, 32]\nepochs: 0\n")
    # the CLI flag is the config key: a bad value is refused before any training
    assert main(["train", str(cfg_file), "-o", str(tmp_path / "r"), "--ensemble", "2"]) == 1
