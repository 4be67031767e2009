#!/usr/bin/env bash
# GPU check of the sampling-speed target (DDIM-50, 2,350 images, SmallUNet, 64x64), one run on a
# lent GPU machine (device tool). Writes JSON and the log to $OUT (default: benchmarks/results/gpu).
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 200 python3 -m ddpm_lib bench sample --out "$OUT/bench_sample.json" 2>&1 | tee "$OUT/bench_sample.log"
