#!/usr/bin/env python
"""Label-efficiency sweep: training size × start (scratch / ImageNet) × strategy, over seeds.

Each cell trains with ``medtl.train.finetune`` (validation AUROC picks the checkpoint). With
``--test`` it then, and only then, reads the test split once and reports test AUROC as mean and
95% CI over seeds (t distribution); without it only validation is read, which is how settings are
chosen. Also reported: CPU minutes and wall seconds per run. Works on a MedMNIST-style ``.npz``
(official splits) or a manifest CSV (patient-level split by seed).

    python benchmarks/bench_finetune.py --npz ../shared/data/medmnist/breastmnist.npz --size 64 --test
    python benchmarks/bench_finetune.py --manifest sample_data/cxr.csv --size 64 --epochs 10 --test
    python benchmarks/bench_finetune.py ... --fractions 0.01,0.1,1 --starts scratch,imagenet \\
        --strategies linear_probe,full,lpft,lpft+l2sp --seeds 3 --jobs 8 --set lr=3e-4 --set mixup=0.2

``--jobs N`` trains N runs at once in separate processes (useful on a GPU, which one 64 px run
leaves mostly idle); each run keeps its own preprocessing cache. ``--json FILE`` appends every
run's record as a JSON line, so tables can be rebuilt and cells added later.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Strategy presets, as rates relative to --set lr (default 1e-3). The probe's head learns at 10× because
# only 1e2–1e3 weights move; LP-FT at 3× (its fine-tuning phase then runs at 0.3×), the rate the
# validation search in docs/benchmarks.md chose for it.
STRATEGY_KEYS = {
    "linear_probe": {"strategy": "linear_probe", "lr_scale": 10.0},
    "full": {"strategy": "full"},
    "lpft": {"strategy": "lpft", "lr_scale": 3.0},
    "lpft+l2sp": {"strategy": "lpft", "lr_scale": 3.0, "l2sp_alpha": 0.01, "l2sp_beta": 0.0},
}


def test_auroc(run_dir: Path, data_path: str) -> float:
    """Test AUROC of a finished run on its own test split (the only place the test split is read)."""
    from medtl.evaluate.run import predict_manifest
    from medtl.train.module import auroc

    rows, _, info = predict_manifest(run_dir, data_path, split="test")
    labels = np.array([[np.nan if r[c] is None else r[c] for c in info["label_columns"]] for r in rows], float)
    if info["task"] == "binary":
        probs = np.array([[1 - r["score"], r["score"]] for r in rows])
    else:
        probs = np.array([[r[f"score_{k}"] for k in range(len(info["labels"]))] for r in rows])
    return auroc(labels, probs)


def mean_ci(values: list[float]) -> str:
    from scipy import stats

    v = np.asarray([x for x in values if np.isfinite(x)])
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():.3f} [{v.mean() - half:.3f}, {v.mean() + half:.3f}]"


def run_one(job: dict) -> dict:
    """Train one (fraction, start, strategy, seed) cell; in a worker process when --jobs > 1."""
    import torch

    from medtl.train.config import TrainConfig
    from medtl.train.finetune import finetune

    torch.set_num_threads(job["threads"])
    keys = dict(job["overrides"])
    keys.update({k: v for k, v in STRATEGY_KEYS[job["strategy"]].items() if k != "lr_scale"})
    keys["lr"] = keys.get("lr", 1e-3) * STRATEGY_KEYS[job["strategy"]].get("lr_scale", 1.0)
    cfg = TrainConfig(**job["data"], **keys, pretrained=None if job["start"] == "scratch" else "imagenet",
                      seed=job["seed"], train_fraction=job["fraction"])  # fmt: skip
    run = Path(job["run"])
    t0, w0 = time.process_time(), time.perf_counter()
    res = finetune(cfg, run, resume=False)
    rec = {k: job[k] for k in ("fraction", "start", "strategy", "seed")}
    rec.update(cpu_min=(time.process_time() - t0) / 60, wall_s=time.perf_counter() - w0, val=res.val_auroc,
               best_epoch=res.best_epoch, overrides=job["overrides"])  # fmt: skip
    if job["test"]:
        rec["test"] = test_auroc(run, job["data"].get("npz") or job["data"]["manifest"])
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--npz")
    src.add_argument("--manifest")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--dims", type=int, default=2, help="2 or 3 (3D volumes, size³)")
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--fractions", default="1")
    ap.add_argument("--starts", default="scratch,imagenet")
    ap.add_argument("--strategies", default="full,lpft")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    ap.add_argument("--test", action="store_true", help="read the test split once per run and report it")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (default: cores / jobs)")
    ap.add_argument("--label", default="", help="a name for this recipe in the table")
    ap.add_argument("--json", default=None, help="append one JSON line per run here")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    from medtl.train.config import load_config

    if args.npz and not os.path.exists(args.npz):
        print(f"{args.npz}: not found; nothing to benchmark (see ../shared/data/README.md)")
        return 0
    data = {"npz": args.npz} if args.npz else {"manifest": args.manifest}
    size = [args.size] * args.dims
    base = {"backbone": args.backbone, "size": size, "spatial_dims": args.dims, "epochs": args.epochs,
            "batch_size": args.batch, "probe_epochs": max(1, args.epochs // 6), "patience": max(5, args.epochs // 3),
            "flips": [1] if args.npz and args.dims == 2 else []}  # fmt: skip
    overrides = load_config(None, args.set).to_dict()
    base.update({k.split("=", 1)[0]: overrides[k.split("=", 1)[0]] for k in args.set})
    work = Path(args.workdir or tempfile.mkdtemp(prefix="medtl-sweep-"))
    jobs = []
    for fraction in [float(f) for f in args.fractions.split(",")]:
        for start in args.starts.split(","):
            for strategy in args.strategies.split(","):
                if start == "scratch" and strategy != "full":
                    continue  # probing a random backbone measures nothing
                for seed in range(args.seeds):
                    name = f"{args.label or 'run'}-{fraction}-{start}-{strategy}-{seed}"
                    jobs.append({"fraction": fraction, "start": start, "strategy": strategy, "seed": seed,
                                 "data": data, "overrides": base, "run": str(work / name), "test": args.test,
                                 "threads": args.threads or max(1, (os.cpu_count() or 1) // args.jobs)})  # fmt: skip
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else (platform.processor() or "CPU")
    print(f"# medtl fine-tuning sweep, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {device}, {os.cpu_count()} cores, {args.jobs} runs at a time")
    print(f"- command: `{' '.join(sys.argv)}`\n")
    records = []

    def keep(rec: dict) -> None:  # written as each run ends: a sweep cut short keeps what finished
        records.append(rec)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps({"label": args.label, "data": args.npz or args.manifest, **rec}) + "\n")

    if args.jobs > 1:
        with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for future in cf.as_completed([pool.submit(run_one, j) for j in jobs]):
                keep(future.result())
    else:
        for j in jobs:
            keep(run_one(j))
    records.sort(key=lambda r: (r["fraction"], r["start"], r["strategy"], r["seed"]))
    test_col = " test AUROC mean [95% CI] |" if args.test else ""
    print(
        f"| recipe | train fraction | start | strategy |{test_col} val AUROC mean [95% CI] | CPU min/run | wall s/run |"
    )
    print("|---|---|---|---|" + ("---|" if args.test else "") + "---|---|---|")
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        cells.setdefault((r["fraction"], r["start"], r["strategy"]), []).append(r)
    for (fraction, start, strategy), rs in cells.items():
        test = f" {mean_ci([r['test'] for r in rs])} |" if args.test else ""
        print(f"| {args.label} | {fraction:g} | {start} | {strategy} |{test} {mean_ci([r['val'] for r in rs])} | "
              f"{np.mean([r['cpu_min'] for r in rs]):.1f} | {np.mean([r['wall_s'] for r in rs]):.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
