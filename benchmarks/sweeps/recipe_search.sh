#!/usr/bin/env bash
# Recipe search on VALIDATION AUROC only (no --test): BreastMNIST 64 px, Lite0, 3 seeds per recipe,
# plus AdrenalMNIST3D at 64³. Written for the 16-core GPU machine (docs/benchmarks.md names it): the
# recipes run side by side, each one process with 2 CPU threads, its seeds one after another.
# Usage: bash benchmarks/sweeps/recipe_search.sh DATA_DIR OUT_DIR
set -u
data=${1:-../shared/data/medmnist}; out=${2:-out/sweeps}; mkdir -p "$out"
b="python benchmarks/bench_finetune.py --npz $data/breastmnist.npz --size 64 --seeds 3 --epochs 40 --threads 2 --json $out/search.jsonl --set deterministic=false"
i=0
while read -r label start strategy sets; do
  i=$((i + 1))
  $b --label "$label" --starts "$start" --strategies "$strategy" $sets > "$out/s$i.md" 2> "$out/s$i.err" &
done <<'RECIPES'
full-1e-3 imagenet full --set lr=1e-3
full-3e-4 imagenet full --set lr=3e-4
full-1e-3-mix imagenet full --set lr=1e-3 --set mixup=0.2 --set label_smoothing=0.1
lpft-3e-3 imagenet lpft --set lr=3e-3
lpft-l2sp-3e-3 imagenet lpft+l2sp --set lr=3e-3
scratch-3e-3 scratch full --set lr=3e-3
scratch-1e-3 scratch full --set lr=1e-3
RECIPES
python benchmarks/bench_finetune.py --npz "$data/adrenalmnist3d_64.npz" --dims 3 --size 64 --seeds 1 --epochs 10 --batch 32 \
  --label adrenal3d --starts scratch,imagenet --strategies full --set lr=1e-3 --set preset=none --set deterministic=false \
  --jobs 2 --threads 3 --json "$out/search3d.jsonl" > "$out/s9.md" 2> "$out/s9.err" &
wait
cat "$out"/s*.md > "$out/tables.md"
