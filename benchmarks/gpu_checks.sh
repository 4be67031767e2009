#!/usr/bin/env bash
# All GPU checks of the foundation and training-engine issues, in one run on a lent GPU machine
# (device tool). Writes logs and JSON to $OUT (default: benchmarks/results/gpu).
#   bash benchmarks/gpu_checks.sh
# Optional wheels in .whl/ (denoising-diffusion-pytorch, ema-pytorch, pytorch-fid) add the
# outside reference network to the training benchmark.
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 WANDB_MODE=disabled
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PWD:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/gpu_tests.log"
timeout 400 python3 benchmarks/bench_gpu_train.py --out "$OUT/bench_train.json" 2>&1 | tee "$OUT/bench_train.log"
