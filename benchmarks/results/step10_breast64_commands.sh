#!/bin/bash
# Step 10 (2026-11-28): BreastMNIST 64 px, levers of the default recipe, 2-core CPU box (AMD EPYC,
# family 26 model 2, 2 vCPUs, torch 2.13.0+cpu), one training process at a time, 1 torch thread per
# run (another engineer's pytest + headless Chromium shared the 2 cores; with 2 torch threads an
# epoch went from 4 s to 70-86 s whenever they ran, so the first 2-thread attempt was abandoned).
# Records: benchmarks/results/step10_breast64.jsonl (stage-1 lines: no "test"; stage-2 lines:
# "stage": 2 with "test"). bench_finetune.py with --epochs 40 --batch 64 and its defaults
# (patience 40//3 = 13, flips [1], preset xr, TTA, lr 1e-3, full FT) is configs/medmnist-npz.yaml.
# Cells after the first ran from a frozen copy of the tree (/tmp/step10/snap = medtl/ benchmarks/
# configs/ copied at 13:51 UTC) because medtl/ was being edited during the sweep.
NPZ=/work/shared/data/medmnist/breastmnist.npz     # = ../shared/data/medmnist/breastmnist.npz
OUTJ=/work/main/benchmarks/results/step10_breast64.jsonl
cell() {  # label backbone [--set ...]
  label=$1; bb=$2; shift 2
  .venv/bin/python benchmarks/bench_finetune.py --npz $NPZ --size 64 --epochs 40 --batch 64 \
    --backbone $bb --starts imagenet --strategies full --seeds 3 --jobs 1 --threads 1 \
    --label $label --json $OUTJ --workdir /tmp/step10/$label "$@"
}
# Stage 1: validation only, in this order
cell lite0-ema0.99  efficientnet-lite0 --set ema=0.99     # 13:47-14:00, live tree
cell lite0-default  efficientnet-lite0                    # 14:00-14:11, snapshot
cell lite1          efficientnet-lite1                    # 14:11-14:24, snapshot
cell lite2          efficientnet-lite2                    # 14:24-14:35, snapshot
# cell lite0-ema0.995 efficientnet-lite0 --set ema=0.995  # CUT for time (see the report)
# Stage 2: the test split read once per finished stage-1 run of the chosen cells (same runs, no
# retraining; bench_finetune.test_auroc, the function --test calls):
.venv/bin/python benchmarks/results/step10_breast64_test.py --runs /tmp/step10 lite0-default lite0-ema0.99
# then the better of lite1 / lite2 by mean validation AUROC:
.venv/bin/python benchmarks/results/step10_breast64_test.py lite1   # lite1 0.951 > lite2 0.921 on validation
