#!/usr/bin/env bash
# The label-efficiency sweep with the default recipe (ImageNet Lite0, full fine-tuning, lr 1e-3,
# 40 epochs, flip TTA), reporting TEST AUROC: BreastMNIST at 1/10/100 % of the training labels ×
# {scratch, linear probe, full, LP-FT, LP-FT + L2-SP} × 3 seeds, and PneumoniaMNIST (the balanced,
# non-official subset) for scratch vs ImageNet. Written for the 16-core GPU machine.
# Usage: bash benchmarks/sweeps/label_efficiency.sh DATA_DIR OUT_DIR
set -u
data=${1:-../shared/data/medmnist}; out=${2:-out/sweeps}; mkdir -p "$out"
common="--size 64 --test --threads 1 --set lr=1e-3 --set deterministic=false --json $out/sweep.jsonl"
b="python benchmarks/bench_finetune.py --npz $data/breastmnist.npz --epochs 40 --seeds 3 $common"
all="--starts scratch,imagenet --strategies full,linear_probe,lpft,lpft+l2sp"
$b --label breast --fractions 1 $all --jobs 7 > "$out/t1.md" 2> "$out/t1.err" &
$b --label breast --fractions 0.1 $all --jobs 3 > "$out/t2.md" 2> "$out/t2.err" &
$b --label breast --fractions 0.01 $all --jobs 2 > "$out/t3.md" 2> "$out/t3.err" &
p="python benchmarks/bench_finetune.py --npz $data/pneumoniamnist_balanced_subset_NONOFFICIAL.npz --epochs 20 $common"
$p --label pneumonia --fractions 0.1 --seeds 3 --starts scratch,imagenet --strategies full --jobs 2 > "$out/t4.md" 2> "$out/t4.err" &
$p --label pneumonia --fractions 1 --seeds 1 --starts scratch,imagenet --strategies full --jobs 2 > "$out/t5.md" 2> "$out/t5.err" &
wait
cat "$out"/t*.md > "$out/tables.md"
