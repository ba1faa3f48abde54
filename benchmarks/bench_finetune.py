#!/usr/bin/env python
"""Label-efficiency sweep: training size × start (scratch / ImageNet) × strategy, over seeds.

For each cell it trains with ``medtl.train.finetune`` (validation AUROC picks the checkpoint),
then — only then — reads the test split once and reports test AUROC as mean and 95% CI over
seeds (t distribution), plus CPU minutes per run. Works on a MedMNIST-style ``.npz`` (official
splits) or a manifest CSV (patient-level split by seed).

    python benchmarks/bench_finetune.py --npz ../shared/data/medmnist/breastmnist.npz --size 64
    python benchmarks/bench_finetune.py --manifest sample_data/cxr.csv --size 64 --epochs 10
    python benchmarks/bench_finetune.py ... --fractions 0.01,0.1,1 --starts scratch,imagenet \\
        --strategies linear_probe,full,lpft,lpft+l2sp --seeds 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STRATEGY_KEYS = {
    "linear_probe": {"strategy": "linear_probe", "lr": 1e-2},
    "full": {"strategy": "full", "lr": 1e-3},
    "lpft": {"strategy": "lpft", "lr": 1e-3},
    "lpft+l2sp": {"strategy": "lpft", "lr": 1e-3, "l2sp_alpha": 0.01, "l2sp_beta": 0.0},
}


def test_auroc(run_dir: Path, data_args: dict, seed: int) -> float:
    """Test AUROC of a finished run (the only place the test split is read)."""
    import torch

    from medtl.data import read_manifest, split_patients
    from medtl.data.dataset import prepare
    from medtl.data.npz import read_npz
    from medtl.train.finetune import auroc, load_run, probabilities

    model, spec, _ = load_run(run_dir)
    if data_args.get("npz"):
        manifest, split = read_npz(data_args["npz"])
    else:
        manifest = read_manifest(data_args["manifest"])
        split = split_patients(manifest, val=0.2, test=0.2, seed=seed)
    data = prepare(manifest, split.test, spec, cache_dir=run_dir / "cache")
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=64)
    probs, labels = [], []
    with torch.no_grad():
        for batch in loader:
            probs.append(probabilities(model(batch["image"])).numpy())
            labels.append(batch["label"].numpy())
    return auroc(np.concatenate(labels), np.concatenate(probs))


def mean_ci(values: list[float]) -> str:
    from scipy import stats

    v = np.asarray([x for x in values if np.isfinite(x)])
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():.3f} [{v.mean() - half:.3f}, {v.mean() + half:.3f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--npz")
    src.add_argument("--manifest")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--fractions", default="1")
    ap.add_argument("--starts", default="scratch,imagenet")
    ap.add_argument("--strategies", default="full,lpft")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    from medtl.train.config import TrainConfig
    from medtl.train.finetune import finetune

    if args.npz and not os.path.exists(args.npz):
        print(f"{args.npz}: not found; nothing to benchmark (see ../shared/data/README.md)")
        return 0
    data_args = {"npz": args.npz} if args.npz else {"manifest": args.manifest}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="medtl-sweep-"))
    print(f"# medtl fine-tuning sweep — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; command: `{' '.join(sys.argv)}`\n"
    )
    print("| train fraction | start | strategy | test AUROC mean [95% CI] | val AUROC mean | CPU min/run |")
    print("|---|---|---|---|---|---|")
    for fraction in [float(f) for f in args.fractions.split(",")]:
        for start in args.starts.split(","):
            for strategy in args.strategies.split(","):
                if start == "scratch" and strategy != "full":
                    continue  # probing a random backbone measures nothing
                tests, vals, cpu = [], [], []
                for seed in range(args.seeds):
                    cfg = TrainConfig(
                        **data_args, backbone=args.backbone, pretrained=None if start == "scratch" else "imagenet",
                        size=[args.size, args.size], epochs=args.epochs, batch_size=args.batch, seed=seed,
                        train_fraction=fraction, probe_epochs=max(1, args.epochs // 6), patience=max(5, args.epochs // 3),
                        flips=[1] if args.npz else [], cache_dir=str(work / "cache"), **STRATEGY_KEYS[strategy],
                    )  # fmt: skip
                    run = work / f"{fraction}-{start}-{strategy}-{seed}"
                    t0 = time.process_time()
                    res = finetune(cfg, run, resume=False)
                    cpu.append((time.process_time() - t0) / 60)
                    vals.append(res.val_auroc)
                    tests.append(test_auroc(run, data_args, seed))
                print(f"| {fraction:g} | {start} | {strategy} | {mean_ci(tests)} | {np.nanmean(vals):.3f} | {np.mean(cpu):.1f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
