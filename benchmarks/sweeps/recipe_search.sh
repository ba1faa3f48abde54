#!/usr/bin/env bash
# Recipe search on VALIDATION AUROC only (no --test): BreastMNIST 64 px, Lite0, 3 seeds per recipe,
# plus AdrenalMNIST3D at 64³. Run on the GPU machine (docs/benchmarks.md names it); each group runs
# its jobs in parallel processes. Usage: bash benchmarks/sweeps/recipe_search.sh DATA_DIR OUT_DIR
set -u
data=${1:-../shared/data/medmnist}; out=${2:-out/sweeps}; mkdir -p "$out"
b="python benchmarks/bench_finetune.py --npz $data/breastmnist.npz --size 64 --seeds 3 --json $out/search.jsonl"
{
$b --label full-3e-4-e30 --starts imagenet --strategies full --epochs 30 --set lr=3e-4 --jobs 3 > $out/s1.md 2>$out/s1.err &
$b --label full-1e-3-e30 --starts imagenet --strategies full --epochs 30 --set lr=1e-3 --jobs 3 > $out/s2.md 2>$out/s2.err &
$b --label full-3e-3-e30 --starts imagenet --strategies full --epochs 30 --set lr=3e-3 --jobs 3 > $out/s3.md 2>$out/s3.err &
$b --label full-1e-3-e60 --starts imagenet --strategies full --epochs 60 --set lr=1e-3 --jobs 3 > $out/s4.md 2>$out/s4.err &
$b --label full-1e-3-e60-mix --starts imagenet --strategies full --epochs 60 --set lr=1e-3 --set mixup=0.2 --set label_smoothing=0.1 --jobs 3 > $out/s5.md 2>$out/s5.err &
$b --label lpft-3e-3-e60 --starts imagenet --strategies lpft,lpft+l2sp --epochs 60 --set lr=3e-3 --jobs 3 > $out/s6.md 2>$out/s6.err &
$b --label scratch-1e-3-e60 --starts scratch --strategies full --epochs 60 --set lr=1e-3 --jobs 3 > $out/s7.md 2>$out/s7.err &
$b --label scratch-3e-3-e60 --starts scratch --strategies full --epochs 60 --set lr=3e-3 --jobs 3 > $out/s8.md 2>$out/s8.err &
python benchmarks/bench_finetune.py --npz $data/adrenalmnist3d_64.npz --dims 3 --size 64 --seeds 2 --epochs 20 --batch 32 \
  --label adrenal3d --starts scratch,imagenet --strategies full --set lr=1e-3 --set preset=none --jobs 4 \
  --json $out/search3d.jsonl > $out/s9.md 2>$out/s9.err &
wait
}
cat $out/s*.md > $out/tables.md; cat $out/tables.md
