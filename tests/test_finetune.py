"""medtl.train.finetune end to end on the shipped sample radiographs (tiny, seconds)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medtl.errors import ConfigError, MedtlError
from medtl.train.config import TrainConfig, load_config
from medtl.train.finetune import FineTuneModule, finetune, load_run

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def cxr_manifest(tmp_path_factory):
    """The 2D radiographs of sample_data only."""
    rows = [r for r in csv.DictReader(open(SAMPLE / "labels.csv")) if r["path"].startswith("cxr/")]
    out = tmp_path_factory.mktemp("m") / "cxr.csv"
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "path": str(SAMPLE / r["path"])} for r in rows)
    return out


def _cfg(manifest, **kw):
    base = dict(manifest=str(manifest), size=[32, 32], batch_size=8, val_fraction=0.25, test_fraction=0.25,
                probe_epochs=1, epochs=2, patience=5)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def test_run_directory_is_complete_and_reloads_to_the_same_outputs(cxr_manifest, tmp_path):
    res = finetune(_cfg(cxr_manifest), tmp_path / "run")
    for name in ("model.pt", "config.yaml", "preprocess.json", "labels.json", "threshold.json", "metrics.json",
                 "curves.csv", "curves.png", "model_card.md"):  # fmt: skip
        assert (tmp_path / "run" / name).exists(), name
    assert res.skipped == [] and 0.0 <= res.val_auroc <= 1.0
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))  # TensorBoard logs
    model, spec, labels = load_run(tmp_path / "run")
    x = torch.randn(3, spec.channels, *spec.size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), res.model(x))
    assert labels == ["label=0", "label=1"]


def test_the_run_records_what_a_methods_section_cites(cxr_manifest, tmp_path):
    """Library versions, the pretrained file it started from, the digest of the weights it ended
    with, and the labels in every partition (CLAIM 2024 23, 24, 35; TRIPOD+AI 20, 21)."""
    import hashlib

    from medtl.models.registry import SOURCES

    res = finetune(_cfg(cxr_manifest), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "medtl.json").read_text())
    assert record["parameters"] == sum(p.numel() for p in res.model.parameters()) > 3_000_000
    assert record["versions"]["torch"] == torch.__version__
    source = SOURCES["efficientnet-lite0.imagenet"]
    assert record["pretrained_source"]["filename"] == source.filename
    assert record["pretrained_source"]["licence"] == source.licence == "Apache-2.0"
    digest = hashlib.sha256((tmp_path / "run" / "model.pt").read_bytes()).hexdigest()[:16]
    assert record["weights_sha256_16"] == digest
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    rows = {r["path"]: r["label"] for r in csv.DictReader(open(cxr_manifest))}
    for part, counts in split["counts"].items():
        assert sum(counts["labels"]["label"].values()) == counts["images"], part
    total = {v: sum(c["labels"]["label"].get(v, 0) for c in split["counts"].values()) for v in ("0", "1")}
    assert total == {v: sum(1 for label in rows.values() if label == v) for v in ("0", "1")}


def test_resume_continues_from_the_saved_epoch(cxr_manifest, tmp_path, monkeypatch):
    finetune(_cfg(cxr_manifest, epochs=2), tmp_path / "run")
    calls = []
    original = FineTuneModule.training_step
    monkeypatch.setattr(
        FineTuneModule, "training_step", lambda self, b, i: calls.append(self.current_epoch) or original(self, b, i)
    )
    finetune(_cfg(cxr_manifest, epochs=3), tmp_path / "run")  # same folder: resumes at epoch 2
    assert calls and set(calls) == {2}  # only the new epoch was trained
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "run" / "curves.csv"))]
    assert epochs == [0, 1, 2]
    assert all(r["train_loss"] for r in csv.DictReader(open(tmp_path / "run" / "curves.csv")))


def test_nan_loss_names_the_epoch_and_batch():
    class Broken(torch.nn.Module):
        encoder = torch.nn.Identity()

        def forward(self, x):
            return torch.full((x.shape[0], 2), float("nan"), requires_grad=True)

    module = FineTuneModule(Broken(), TrainConfig(strategy="full"), 2, None)
    with pytest.raises(MedtlError, match="loss became nan at epoch 0, batch 3"):
        module.training_step({"image": torch.zeros(2, 1, 4, 4), "label": torch.zeros(2, 1)}, 3)


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        load_config(None, ["learning_rate=0.1"])
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_config(None, ["epoch=3"])
    (tmp_path / "c.yaml").write_text("strategy: full\nlr: 0.01\n")
    cfg = load_config(tmp_path / "c.yaml", ["lr=0.02"])
    assert (cfg.strategy, cfg.lr) == ("full", 0.02)
    with pytest.raises(ConfigError, match="no data"):
        finetune(TrainConfig(size=[32, 32]), tmp_path / "r")
    # YAML 1.1 reads exponents without a dot as text; numeric keys take them as numbers
    (tmp_path / "e.yaml").write_text("lr: 3e-4\nweight_decay: 1e-5\nepochs: '7'\n")
    cfg = load_config(tmp_path / "e.yaml")
    assert (cfg.lr, cfg.weight_decay, cfg.epochs) == (3e-4, 1e-5, 7)
    with pytest.raises(ConfigError, match="lr must be a number, not 'fast'"):
        load_config(None, ["lr=fast"])
    with pytest.raises(ConfigError, match="intended_use must be text, not 3"):
        load_config(None, ["intended_use=3"])


def test_docs_list_every_config_key():
    import dataclasses

    text = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    for f in dataclasses.fields(TrainConfig):
        assert f"| `{f.name}` |" in text, f"docs/config.md misses {f.name}"


def test_cli_train(cxr_manifest, tmp_path, capsys):
    from medtl.cli import main

    args = ["train", "-o", str(tmp_path / "run"), "--set", f"manifest={cxr_manifest}", "--set", "size=[32,32]",
            "--set", "epochs=1", "--set", "probe_epochs=0", "--set", "batch_size=8"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best validation AUROC" in out
    # the run chose its default saliency map by evidence: at 32 px every Grad-CAM grid is too coarse
    choice = json.loads((tmp_path / "run" / "saliency.json").read_text())
    assert f"Saliency map by default: {choice['method'] or 'none'}" in out
    assert all(not c["eligible"] for n, c in choice["candidates"].items() if n.startswith("gradcam"))
    assert main(["train", "-o", str(tmp_path / "r2"), "--set", "epoch=1"]) == 1
    assert "did you mean 'epochs'" in capsys.readouterr().err


def test_medmnist_npz_with_official_splits(tmp_path):
    from medtl.data.npz import load_npz_item, read_npz

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        y = np.tile([0, 1], n // 2)[:, None].astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        x[y[:, 0] == 1, 10:18, 10:18] = 250  # positives carry a bright square
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
    np.savez(tmp_path / "toy.npz", **arrays)
    manifest, split = read_npz(tmp_path / "toy.npz")
    assert (len(split.train), len(split.val), len(split.test)) == (24, 8, 8)
    img = load_npz_item(manifest.records[split.val[1]].path)
    np.testing.assert_array_equal(img.array, arrays["val_images"][1].T.astype(np.float32))  # (column, row)
    res = finetune(TrainConfig(npz=str(tmp_path / "toy.npz"), size=[32, 32], batch_size=8, epochs=3,
                               probe_epochs=0, strategy="full", lr=0.003), tmp_path / "run")  # fmt: skip
    assert res.val_auroc > 0.9  # the square is easy: the pipeline learns it


def test_train_fraction_keeps_whole_patients_and_both_classes():
    from medtl.data import read_manifest, split_patients
    from medtl.train.finetune import _subsample_train

    m = read_manifest(SAMPLE / "cxr.csv")
    s = split_patients(m, val=0.25, test=0.25, seed=0)
    small = _subsample_train(m, s, 0.1, seed=0)
    assert set(small.train) < set(s.train) and small.val == s.val and small.test == s.test
    kept = {m.records[i].patient for i in small.train}
    assert all(i in small.train for i in s.train if m.records[i].patient in kept)  # whole patients
    assert {m.records[i].labels[0] for i in small.train} == {0.0, 1.0}


def test_adabn_adapts_a_run_to_another_site(cxr_manifest, tmp_path):
    from medtl.cli import main

    finetune(_cfg(cxr_manifest, epochs=1, probe_epochs=0), tmp_path / "run")
    site_b = [r for r in csv.DictReader(open(cxr_manifest)) if r["site"] == "B"]
    target = tmp_path / "site_b.csv"
    target.write_text("path\n" + "".join(f"{r['path']}\n" for r in site_b) + "missing.dcm\n")
    assert main(["adapt", str(tmp_path / "run"), str(target), "-o", str(tmp_path / "adapted")]) == 0
    before = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    after = torch.load(tmp_path / "adapted" / "model.pt", weights_only=True)
    stats = [k for k in before if k.endswith("running_mean")]
    weights = [k for k in before if k.endswith(".weight")]
    assert any(not torch.equal(before[k], after[k]) for k in stats)  # statistics moved to site B
    assert all(torch.equal(before[k], after[k]) for k in weights)  # weights did not
    import json

    info = json.loads((tmp_path / "adapted" / "adaptation.json").read_text())
    assert info["n_target"] == len(site_b) and info["skipped"] == 1 and "no such file" in info["skipped_reasons"][0]
    model, spec, labels = load_run(tmp_path / "adapted")  # still a complete run directory
    assert labels == ["label=0", "label=1"]


def test_domain_confusion_trains_a_domain_head_through_reversal(cxr_manifest, tmp_path):
    site_b = [r for r in csv.DictReader(open(cxr_manifest)) if r["site"] == "B"]
    target = tmp_path / "site_b.csv"
    target.write_text("path\n" + "".join(f"{r['path']}\n" for r in site_b))
    res = finetune(_cfg(cxr_manifest, epochs=1, probe_epochs=0, domain_manifest=str(target)), tmp_path / "run")
    logged = open(next((tmp_path / "run" / "logs").glob("version_*/metrics.csv"))).read()
    assert "domain_loss" in logged
    assert np.isfinite(res.val_auroc)


def test_seeds_report_mean_and_ci(cxr_manifest, tmp_path, capsys):
    import json

    from medtl.cli import main

    args = ["train", "-o", str(tmp_path / "runs"), "--seeds", "2", "--set", f"manifest={cxr_manifest}",
            "--set", "size=[32,32]", "--set", "epochs=1", "--set", "probe_epochs=0", "--set", "batch_size=8"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((tmp_path / "runs" / "seeds.json").read_text())
    values = [r["val_auroc"] for r in summary["runs"]]
    assert [r["seed"] for r in summary["runs"]] == [0, 1]
    assert summary["mean"] == pytest.approx(np.mean(values))
    assert summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
    assert (tmp_path / "runs" / "seed_1" / "model.pt").exists()
    assert "2 seeds" in capsys.readouterr().out


def test_every_regularizer_runs_from_a_config(cxr_manifest, tmp_path):
    cfg = _cfg(cxr_manifest, strategy="lpft", probe_epochs=1, epochs=2, mixup=0.4, cutmix=1.0, label_smoothing=0.1,
               l2sp_alpha=0.01, l2sp_beta=1e-4, class_balance="sampler", dropout=0.3, weight_decay=1e-3,
               layer_decay=0.8, flips=[1])  # fmt: skip
    res = finetune(cfg, tmp_path / "run", resume=False)
    assert np.isfinite(res.val_auroc)
    rows = list(csv.DictReader(open(tmp_path / "run" / "curves.csv")))
    assert len(rows) == 2 and all(np.isfinite(float(r["train_loss"])) for r in rows)


def test_ddp_on_two_cpu_processes_gathers_validation_and_writes_once(cxr_manifest, tmp_path):
    """Two DDP processes (gloo on CPU), launched the way Lightning launches them from the CLI."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "medtl", "train", "-o", str(tmp_path / "run"), "--set", f"manifest={cxr_manifest}",
           "--set", "size=[32,32]", "--set", "epochs=1", "--set", "batch_size=8", "--set", "accelerator=cpu",
           "--set", "devices=2", "--set", "saliency_check=0"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Run written to") == 1
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr  # a second process did join
    for name in ("model.pt", "calibration.json", "threshold.json", "curves.csv"):
        assert (tmp_path / "run" / name).is_file()
    model, _, _ = load_run(tmp_path / "run")
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2)


def test_same_seed_same_weights(cxr_manifest, tmp_path):
    """Seeds reach every random draw: split, shuffling, dropout and MONAI's own augmentation state."""
    cfg = _cfg(cxr_manifest, strategy="full", epochs=1, flips=[1])
    a = finetune(cfg, tmp_path / "a", resume=False).model.state_dict()
    b = finetune(cfg, tmp_path / "b", resume=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ema_runs_keep_the_averaged_weights(cxr_manifest, tmp_path):
    """``ema``: the run's model.pt is the moving average the best checkpoint validated, not the raw
    weights training reached (both are in the checkpoint)."""
    result = finetune(_cfg(cxr_manifest, epochs=2, ema=0.9), tmp_path / "ema")
    best = torch.load(tmp_path / "ema" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    averaged = {k[len("model.") :]: v for k, v in best["state_dict"].items() if k.startswith("model.")}
    raw = {k[len("model.") :]: v for k, v in best["current_model_state"].items() if k.startswith("model.")}
    saved = torch.load(tmp_path / "ema" / "model.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(saved[k], averaged[k]) for k in saved)
    assert any(not torch.equal(saved[k], raw[k]) for k in saved if saved[k].is_floating_point())
    assert all(torch.equal(result.model.state_dict()[k], saved[k]) for k in saved)
    with pytest.raises(ConfigError, match="ema must be"):
        TrainConfig(ema=1.0)
