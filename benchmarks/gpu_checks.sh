#!/usr/bin/env bash
# Everything only a GPU can show, in one prepared run on a lent GPU machine (about 8 minutes on one
# H100 or H200). Writes raw JSON and logs to benchmarks/results/<date>_<UTC time>_<card>/ (RESULTS: a new
# folder of your own) and prints a summary; under the device tool ($OUT set) it also leaves a tarball in $OUT.
#
#   bash benchmarks/gpu_checks.sh                      # on the GPU machine
#   GPU_CHECKS_DRY_RUN=1 bash benchmarks/gpu_checks.sh # the rehearsal on a CPU: every step at toy size
#   STAGES="tests sample" bash benchmarks/gpu_checks.sh  # some stages only, in the order given
#   DEADLINE=520 bash benchmarks/gpu_checks.sh       # every step fits in 520 s; the summary always comes
#   STAGES=train NETWORKS="BaselineUNet|SmallUNet" MODES="eager graph+compile" bash benchmarks/gpu_checks.sh
#   STAGES=train NETWORKS="BaselineUNet|ddpm-pytorch Unet(64,(1,2,4,8))=eager graph" bash benchmarks/gpu_checks.sh
#   STAGES=sample SAMPLE_CASES="conditional-compiled guided-compiled" bash benchmarks/gpu_checks.sh
#   STAGES=train WINDOW=10 REPEATS=5 DEADLINE=560 bash benchmarks/gpu_checks.sh  # 5 windows of 10 s per case
#
# Stages (run in the order STAGES names them): tests (tests/test_gpu.py), sample (bench sample; the
# cases are SAMPLE_CASES in benchmarks/bench.py), evaluate (bench evaluate), train (bench train: our networks
# and the peers, a fresh process per network), torchrun (1-process torchrun against a plain run of
# the same steps), fit (a whole Trainer.fit with the study's settings).
# The peers (denoising-diffusion-pytorch, diffusers) and torch-fidelity come from wheels in .whl/
# (the device machine reaches no registry), installed into a throwaway folder.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=${GPU_CHECKS_DRY_RUN:-0}
STAGES=${STAGES:-"tests sample evaluate train torchrun fit"}
DEADLINE=${DEADLINE:-100000}  # seconds for all steps together; a step that would pass it is cut short or skipped
STARTED=$(date +%s)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled
PY=${PYTHON:-python3}
if [ "$DRY" != 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/peers .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/peers
fi
CARD=$($PY -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')")
SLUG=$(echo "$CARD" | tr -c 'A-Za-z0-9\n' '_' | sed 's/__*/_/g; s/_$//' | cut -c1-40)
RESULTS=${RESULTS:-benchmarks/results/$(date -u +%Y-%m-%d_%H%M)_$SLUG}
if [ -n "$(ls -A "$RESULTS" 2>/dev/null)" ]; then  # a summary must never mix two runs' files
  echo "gpu_checks: $RESULTS already holds files of an earlier run; give RESULTS a new folder" >&2
  exit 2
fi
mkdir -p "$RESULTS"
: > "$RESULTS/steps.txt"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

# step NAME SECONDS COMMAND...: run one step under a time limit (and the deadline), log it, record its
# exit code and time
step() {
  local name=$1 limit=$2 started rc left
  shift 2
  left=$(( DEADLINE - ($(date +%s) - STARTED) - 15 ))
  if [ "$left" -lt 20 ]; then
    echo "$name skipped: no time left before the deadline" | tee -a "$RESULTS/steps.txt"
    return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  started=$(date +%s)
  timeout "$limit" "$@" > "$RESULTS/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $(( $(date +%s) - started ))s" | tee -a "$RESULTS/steps.txt"
}

$PY - > "$RESULTS/environment.json" <<'EOF'
import json, torch
import sys
sys.path.insert(0, "benchmarks")
from bench import environment
from ddpm_lib.device import default_device
print(json.dumps(environment(default_device()), indent=2))
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit \
  --format=csv > "$RESULTS/nvidia-smi.csv" 2>&1

if [ "$DRY" = 1 ]; then  # toy sizes: the same commands, seconds on a CPU
  SAMPLE=(--num-samples 4 --image-size 16 --repeats 1)
  SAMPLE_CASES=${SAMPLE_CASES:-"ddim dpmpp conditional guided"}
  EVALUATE=(--num-samples 8 --steps 2 --image-size 16)
  TRAIN=(--batch-sizes 4 --window 0.05 --repeats 1 --image-size 16)
  TRAIN_NETWORKS=("SmallUNet")
  FIT=(--steps 4 --image-size 16)
  TORCHRUN_PROFILE=smoke TORCHRUN_STEPS=4
else
  SAMPLE=(--num-samples 2350 --repeats 3)
  EVALUATE=(--num-samples 2350 --steps 50)
  TRAIN=(--window "${WINDOW:-1.0}" --repeats "${REPEATS:-3}" --profile-best)  # WINDOW=10 REPEATS=5: the full protocol
  TRAIN_NETWORKS=("SmallUNet" "BaselineUNet" "ddpm-pytorch Unet(64,(1,2,4,8))"
                  "diffusers UNet2DModel (DDPM CIFAR-10 config)" "SmallUNet conditional (200 species)")
  FIT=(--steps 4000)
  TORCHRUN_PROFILE=demo TORCHRUN_STEPS=1000  # the demo SmallUNet: 1,000 steps of 64 after its compile

fi
if [ -n "${NETWORKS:-}" ]; then IFS='|' read -r -a TRAIN_NETWORKS <<< "$NETWORKS"; fi  # e.g. "BaselineUNet|SmallUNet"
[ -n "${MODES:-}" ] && TRAIN+=(--modes $MODES)  # e.g. "eager graph+compile"
[ -n "${SAMPLE_CASES:-}" ] && SAMPLE+=(--cases $SAMPLE_CASES)  # default: bench sample's own

stage_tests() { step gpu_tests 200 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py; }
stage_sample() { step bench_sample 220 $PY benchmarks/bench.py sample "${SAMPLE[@]}" --out "$RESULTS/bench_sample.json"; }
stage_evaluate() {
  step bench_evaluate 150 $PY benchmarks/bench.py evaluate "${EVALUATE[@]}" --out "$RESULTS/bench_evaluate.json"
}
stage_train() {  # a fresh process per network, so every memory peak is its own
  local entry network slug sizes modes
  for entry in "${TRAIN_NETWORKS[@]}"; do
    network=${entry%%=*} modes=()  # "name=eager graph": this network in these modes only
    [ "$network" != "$entry" ] && modes=(--modes ${entry#*=})
    slug=$(echo "$network" | tr -c 'A-Za-z0-9\n' '_' | cut -c1-24)
    sizes=(--batch-sizes 128)
    case "$network" in SmallUNet) sizes=(--batch-sizes 32 128) ;; "SmallUNet conditional"*) sizes=(--batch-sizes 32) ;; esac
    [ "$DRY" = 1 ] && sizes=()
    step "bench_train_$slug" 240 $PY benchmarks/bench.py train --networks "$network" "${sizes[@]}" "${TRAIN[@]}" \
      "${modes[@]}" --out "$RESULTS/bench_train_$slug.json"
  done
}
stage_torchrun() {  # the same short run, plainly and under a 1-process torchrun
  local how launcher
  export DDPM_ROOT=$SCRATCH/root
  mkdir -p "$DDPM_ROOT"
  $PY -m ddpm_lib prepare --profile "$TORCHRUN_PROFILE" --source synthetic > "$RESULTS/torchrun_prepare.log" 2>&1
  for how in plain torchrun; do
    launcher=($PY -m ddpm_lib)
    [ "$how" = torchrun ] && launcher=($PY -m torch.distributed.run --nproc_per_node=1 -m ddpm_lib)
    step "torchrun_$how" 150 "${launcher[@]}" train --profile "$TORCHRUN_PROFILE" --steps "$TORCHRUN_STEPS" \
      --batch-size 64 --run-name "$how"
    cp "$DDPM_ROOT/runs/$TORCHRUN_PROFILE/$how/metrics.csv" "$RESULTS/torchrun_${how}_metrics.csv" 2>/dev/null
  done
  unset DDPM_ROOT
}
stage_fit() { step bench_fit 150 $PY benchmarks/bench.py fit "${FIT[@]}" --out "$RESULTS/bench_fit.json"; }

for stage in $STAGES; do
  case "$stage" in
    tests|sample|evaluate|train|torchrun|fit) "stage_$stage" ;;
    *) echo "unknown stage $stage: use tests sample evaluate train torchrun fit" | tee -a "$RESULTS/steps.txt" ;;
  esac
done

$PY benchmarks/gpu_summary.py "$RESULTS" | tee "$RESULTS/summary.txt"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ] && [ "$DRY" != 1 ]; then
  tar czf "$OUT/gpu_checks.tgz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
  cp "$RESULTS/summary.txt" "$OUT/summary.txt"
fi
