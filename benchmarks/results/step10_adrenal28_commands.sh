#!/bin/bash
# Step 10 (2026-11-28): AdrenalMNIST3D at 28³ on the 2-core CPU sandbox (AMD EPYC, torch 2.13.0+cpu), one torch
# thread per training, two or three trainings at a time (CPU minutes from /usr/bin/time -v: user + sys).
# Records: benchmarks/results/step10_adrenal28.jsonl. NPZ = ../shared/data/medmnist/adrenalmnist3d.npz.
NPZ=/work/shared/data/medmnist/adrenalmnist3d.npz
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# stage 1 (validation decides); the config then held backbone resnet18, as the --set lines below override
medtl train configs/medmnist-3d.yaml -o /tmp/s10/adr-resnet18 --set npz=$NPZ --set backbone=resnet18 --ensemble 3
medtl train configs/medmnist-3d.yaml -o /tmp/s10/adr-resnet10 --set npz=$NPZ --set backbone=resnet10 --ensemble 3
medtl train configs/medmnist-3d.yaml -o /tmp/s10/adr-lite0in --set npz=$NPZ --set backbone=efficientnet-lite0 --set pretrained=imagenet
medtl train configs/medmnist-3d.yaml -o /tmp/s10/adr-resnet10-flips --set npz=$NPZ --set backbone=resnet10 --set "flips=[0,1,2]" --ensemble 3
# stage 2: the test split, once per finished configuration (and per member, for the members' column)
for r in adr-resnet10 adr-resnet18 adr-lite0in adr-resnet10-flips; do
  medtl evaluate /tmp/s10/$r $NPZ --split test -o /tmp/s10/$r-test
  for m in 0 1 2; do [ -d /tmp/s10/$r/members/m$m ] && medtl evaluate /tmp/s10/$r/members/m$m $NPZ --split test -o /tmp/s10/$r-m$m-test; done
done
