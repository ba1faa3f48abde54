#!/usr/bin/env python
"""Stage 2 of the step 10 sweep: read the BreastMNIST test split once for each finished stage-1
run of the chosen cells (no retraining).

    python benchmarks/results/step10_breast64_test.py --runs /tmp/step10 LABEL [LABEL ...]

Each LABEL names a stage-1 cell whose runs live in ``RUNS/LABEL/*-{seed}``; the test AUROC comes
from ``benchmarks/bench_finetune.test_auroc`` (what ``bench_finetune.py --test`` calls), and one
JSON line per run is appended to ``benchmarks/results/step10_breast64.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/


def main() -> int:
    import torch
    from bench_finetune import mean_ci, test_auroc

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("labels", nargs="+")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/step10"), help="the stage-1 work folder")
    ap.add_argument("--npz", default=str(HERE.parents[2] / "shared/data/medmnist/breastmnist.npz"))
    ap.add_argument("--out", type=Path, default=HERE / "step10_breast64.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(1)
    stage1 = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    for label in args.labels:
        values = []
        for seed in range(3):
            run = next((args.runs / label).glob(f"*-{seed}"))
            (rec,) = [r for r in stage1 if r["label"] == label and r["seed"] == seed and "test" not in r]
            start = time.perf_counter()
            value = test_auroc(run, args.npz)
            values.append(value)
            out = {"label": label, "data": args.npz, "stage": 2, "seed": seed, "run": str(run), "val": rec["val"],
                   "test": value, "cpu_min": rec["cpu_min"], "wall_s": rec["wall_s"], "best_epoch": rec["best_epoch"],
                   "test_eval_s": time.perf_counter() - start, "overrides": rec["overrides"]}  # fmt: skip
            with open(args.out, "a") as fh:
                fh.write(json.dumps(out) + "\n")
            print(f"{label} seed {seed}: test AUROC {value:.4f} (val {rec['val']:.4f}, best epoch {rec['best_epoch']})")
        print(f"{label}: test AUROC {mean_ci(values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
