#!/usr/bin/env python
"""Stage 2: read the BreastMNIST test split once for each finished stage-1 run of the chosen cells.

    .venv/bin/python /tmp/step10/test_finished_runs.py LABEL [LABEL ...]

Each LABEL names a stage-1 cell whose runs live in /tmp/step10/LABEL/*-{seed}; uses
benchmarks/bench_finetune.test_auroc (the same function `bench_finetune.py --test` calls) and appends
one JSON line per run to benchmarks/results/step10_breast64.jsonl.
"""
import json, sys, time
from pathlib import Path

sys.path.insert(0, "benchmarks")
import torch
torch.set_num_threads(1)
from bench_finetune import test_auroc, mean_ci

NPZ = "/work/shared/data/medmnist/breastmnist.npz"
OUT = "/work/main/benchmarks/results/step10_breast64.jsonl"
stage1 = [json.loads(l) for l in open(OUT)]
for label in sys.argv[1:]:
    vals = []
    for seed in range(3):
        run = next(Path("/tmp/step10", label).glob(f"*-{seed}"))
        (rec,) = [r for r in stage1 if r["label"] == label and r["seed"] == seed and "test" not in r]
        t0 = time.perf_counter()
        t = test_auroc(run, NPZ)
        vals.append(t)
        out = {"label": label, "data": NPZ, "stage": 2, "seed": seed, "run": str(run), "val": rec["val"],
               "test": t, "cpu_min": rec["cpu_min"], "wall_s": rec["wall_s"], "best_epoch": rec["best_epoch"],
               "test_eval_s": time.perf_counter() - t0, "overrides": rec["overrides"]}
        with open(OUT, "a") as fh:
            fh.write(json.dumps(out) + "\n")
        print(f"{label} seed {seed}: test AUROC {t:.4f} (val {rec['val']:.4f}, best epoch {rec['best_epoch']})")
    print(f"{label}: test AUROC {mean_ci(vals)}")
