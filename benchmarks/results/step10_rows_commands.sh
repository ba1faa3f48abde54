#!/bin/bash
# 2026-11-28, the 2-core CPU sandbox; ran while two 3D trainings (1 thread each) shared the cores, so
# wall times are inflated and only the CPU minutes (the process's own) are reported. D is ../shared/data/medmnist.
# Step 10, remaining 2D rows with the new config (Lite1) beside the old default (Lite0); 1 torch thread per run.
cd /work/main
D=/work/shared/data/medmnist
J=benchmarks/results/step10_rows.jsonl
B=".venv/bin/python benchmarks/bench_finetune.py --starts imagenet --strategies full --jobs 1 --threads 1 --test --json $J"
for bb in efficientnet-lite0 efficientnet-lite1; do
  $B --manifest sample_data/cxr.csv --size 64 --epochs 10 --seeds 3 --fractions 1 --batch 16 --backbone $bb --label sample-$bb --workdir /tmp/s10q/w-sample-$bb
done
for bb in efficientnet-lite0 efficientnet-lite1; do
  $B --npz $D/breastmnist.npz --size 64 --epochs 40 --batch 64 --seeds 3 --fractions 0.1 --backbone $bb --label breast10-$bb --workdir /tmp/s10q/w-breast10-$bb
done
for bb in efficientnet-lite0 efficientnet-lite1; do
  $B --npz $D/pneumoniamnist_balanced_subset_NONOFFICIAL.npz --size 64 --epochs 20 --batch 64 --seeds 3 --fractions 0.1 --backbone $bb --label pneu10-$bb --workdir /tmp/s10q/w-pneu10-$bb
done
$B --npz $D/pneumoniamnist_balanced_subset_NONOFFICIAL.npz --size 64 --epochs 20 --batch 64 --seeds 1 --fractions 1 --backbone efficientnet-lite1 --label pneu100-efficientnet-lite1 --workdir /tmp/s10q/w-pneu100-lite1
echo ALL DONE
