#!/usr/bin/env bash
# Everything only a GPU can show, in one prepared run on a lent GPU. The default run fits 10 minutes of
# device time with the machine's start-up: tests first, then the cases in order of importance, each in
# a fresh process, until DEADLINE (420 s of script) is near; the summary lists every case not run and
# why. Writes raw JSON and logs to benchmarks/results/<date>_<UTC time>_<card>/ (a new folder each run)
# and prints the summary (gpu_summary.py: each target as measured / target, naming the card); under
# the device tool ($OUT set) it also leaves a tarball and the summary in $OUT.
#
#   bash benchmarks/gpu_checks.sh                              # the default run
#   GPU_CHECKS_DRY_RUN=1 bash benchmarks/gpu_checks.sh         # the rehearsal on a CPU: every step at toy size
#   STAGES="peers profile" bash benchmarks/gpu_checks.sh       # a second call: what the first one left
#   ONLY='BaselineUNet|guided' bash benchmarks/gpu_checks.sh   # only the cases whose name matches
#   WINDOW=2 REPEATS=5 DEADLINE=420 bash benchmarks/gpu_checks.sh  # the defaults
#
# Stages, in this order of importance (STAGES runs them in the order it names them). Seconds are
# estimates from the H100 run of 2026-11-26 (its setup_s: compile 12-26 s for a SmallUNet, 75-83 s for
# the 26-36M networks), 5 windows of 2 s per case and ~8 s to start a process:
#   tests         tests/test_gpu.py                                                              ~90 s
#   sampling      2,350 images as evaluate draws them, compiled and replayed from CUDA graphs:
#                 DDIM-50 (target <= 1.5 s), DPM-Solver++-20 (<= 0.7 s), the conditional network
#                 unguided and guided w=3 (<= 2.1x; unconditional no slower than conditional)   ~40 s each
#   smallunet     SmallUNet batch 32, graph+compile (>= 6,000 images/s)                         ~50 s
#   peers         batch 128, graph+compile: BaselineUNet, denoising-diffusion-pytorch (compiled through
#                 bench_peers.py's workaround), diffusers at the BaselineUNet's shape (~100 s each);
#                 then eager, graph and compile of each, for like-for-like ratios (~20-90 s each)
#   profile       the training step's top kernels with operator, shapes, strides and source lines
#                 (compile mode: the same kernels, no graph hiding who launched them)        ~100 s each
#   modes         our other training cases: SmallUNet 32 eager/graph/compile, 128 all, conditional 32
#   sample-modes  sampling plain and compiled without graphs, one batch of 2,350, DDPM-1000
#   evaluate      bench evaluate: sampling + Inception + KID/FID (stand-in weights, labelled)
#   torchrun      1-process torchrun against the plain command (WORLD_SIZE=1 takes the plain path,
#                 so it measures the launcher only)
#   fit           a whole Trainer.fit of 4,000 steps with the study's settings
#   ddp2          a 2-process NCCL run (torchrun, synchronised BatchNorm, a checkpoint, a resume) where
#                 the machine has two GPUs or more; one GPU: the row says "skipped: one GPU"
# The default run reaches about through `smallunet`; the next call, `STAGES="peers profile"`.
# Torch logs every recompile (TORCH_LOGS=recompiles) into the case's log; sampling rows count them.
# The peers and torch-fidelity come from wheels in .whl/ (benchmarks/peers.txt says how to fill it;
# the device machine reaches no registry), installed into a throwaway folder.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=${GPU_CHECKS_DRY_RUN:-0}
ALL_STAGES="tests sampling smallunet peers profile modes sample-modes evaluate torchrun fit ddp2"
STAGES=${STAGES:-$ALL_STAGES}
DEADLINE=${DEADLINE:-$([ "$DRY" = 1 ] && echo 100000 || echo 420)}  # seconds of script for all steps; a step that
# would not fit is skipped (the rehearsal: no deadline unless given)
ONLY=${ONLY:-}
STARTED=$(date +%s)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled
export TORCH_LOGS=${TORCH_LOGS:-recompiles}
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
: > "$RESULTS/plan.txt"
echo "deadline ${DEADLINE}s; stages: $STAGES; only: ${ONLY:-every case}; windows: ${REPEATS:-5} x ${WINDOW:-2} s$(
  [ "$DRY" = 1 ] && echo ' (rehearsal: toy sizes)')" > "$RESULTS/protocol.txt"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
PLANNING=0 STAGE=

slug() { echo "$1" | tr -c 'A-Za-z0-9+\n-' '_' | sed 's/__*/_/g; s/_$//' | cut -c1-70; }

# step NAME NEED LIMIT COMMAND...: run one step in its own process under a time limit, log it, record
# its exit code and time; skipped when fewer than NEED seconds are left before the deadline
step() {
  local name=$1 need=$2 limit=$3 started rc left
  shift 3
  if [ "$PLANNING" = 1 ]; then echo "$STAGE $name" >> "$RESULTS/plan.txt"; return; fi
  if [ -n "$ONLY" ] && ! echo "$name" | grep -qE "$ONLY"; then return; fi
  left=$(( DEADLINE - ($(date +%s) - STARTED) - 15 ))
  [ "$DRY" = 1 ] && [ "$need" -gt 20 ] && need=20  # toy steps need seconds
  if [ "$left" -lt "$need" ]; then
    echo "$name skipped: no time left before the deadline (${left}s left, needs ~${need}s)" | tee -a "$RESULTS/steps.txt"
    return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  started=$(date +%s)
  timeout "$limit" "$@" > "$RESULTS/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $(( $(date +%s) - started ))s" | tee -a "$RESULTS/steps.txt"
}

if [ "$DRY" = 1 ]; then  # toy sizes: the same commands, seconds on a CPU
  SAMPLE=(--num-samples 4 --image-size 16 --window 0 --repeats 1)
  EVALUATE=(--num-samples 8 --steps 2 --image-size 16)
  TRAIN=(--window 0.05 --repeats 1 --image-size 16)
  PROFILE=(--steps 1 --image-size 16)
  FIT=(--steps 4 --image-size 16)
  TORCHRUN_PROFILE=smoke TORCHRUN_STEPS=4
else
  SAMPLE=(--num-samples 2350 --window "${WINDOW:-2}" --repeats "${REPEATS:-5}")
  EVALUATE=(--num-samples 2350 --steps 50)
  TRAIN=(--window "${WINDOW:-2}" --repeats "${REPEATS:-5}" --image-size 64)
  PROFILE=(--steps 5 --image-size 64)
  FIT=(--steps 4000)
  TORCHRUN_PROFILE=demo TORCHRUN_STEPS=1000  # the demo SmallUNet: 1,000 steps of 64 after its compile
fi
DDPM_PYTORCH="ddpm-pytorch Unet(64,(1,2,4,8))"
DIFFUSERS="diffusers UNet2DModel (BaselineUNet shape)"

# train_case NETWORK BATCH MODE NEED LIMIT: one (network, batch, mode) in its own process
train_case() {
  local name batch=$2
  name=$(slug "train_$1_b$2_$3")
  [ "$DRY" = 1 ] && batch=4
  step "$name" "$4" "$5" $PY benchmarks/bench.py train --networks "$1" --batch-sizes "$batch" --modes "$3" \
    "${TRAIN[@]}" --out "$RESULTS/$name.json"
}
# sample_case CASE NEED LIMIT: one case of bench.py's SAMPLE_CASES in its own process
sample_case() {
  step "sample_$1" "$2" "$3" $PY benchmarks/bench.py sample --cases "$1" "${SAMPLE[@]}" --out "$RESULTS/sample_$1.json"
}
profile_case() {  # NETWORK BATCH NEED LIMIT
  local name batch=$2
  name=$(slug "profile_$1_b$2")
  [ "$DRY" = 1 ] && batch=4
  step "$name" "$3" "$4" $PY benchmarks/bench.py profile --networks "$1" --batch-sizes "$batch" "${PROFILE[@]}" \
    --out "$RESULTS/$name.json"
}

stage_tests() { step gpu_tests 60 150 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py; }
stage_sampling() {
  local case
  for case in ddim-graph dpmpp-graph conditional-graph guided-graph; do sample_case "$case" 35 120; done
}
stage_smallunet() { train_case SmallUNet 32 graph+compile 45 120; }
stage_peers() {
  local network mode
  for network in BaselineUNet "$DDPM_PYTORCH" "$DIFFUSERS"; do train_case "$network" 128 graph+compile 95 200; done
  for mode in eager graph compile; do
    for network in BaselineUNet "$DDPM_PYTORCH" "$DIFFUSERS"; do
      if [ "$mode" = compile ]; then train_case "$network" 128 "$mode" 60 200; else train_case "$network" 128 "$mode" 25 90; fi
    done
  done
}
stage_profile() { profile_case BaselineUNet 128 70 200; profile_case SmallUNet 32 40 120; }
stage_modes() {
  local mode
  for mode in eager graph compile; do train_case SmallUNet 32 "$mode" 25 120; done
  for mode in graph+compile eager graph compile; do train_case SmallUNet 128 "$mode" 25 120; done
  train_case "SmallUNet conditional (200 species)" 32 graph+compile 45 120
  train_case "SmallUNet conditional (200 species)" 32 eager 20 90
}
stage_sample-modes() {
  local case
  for case in ddim-compiled dpmpp-compiled conditional-compiled guided-compiled ddim dpmpp conditional guided \
              ddim-compiled-one-batch; do
    sample_case "$case" 35 150
  done
  sample_case ddpm-compiled 100 200
}
stage_evaluate() {
  step bench_evaluate 45 150 $PY benchmarks/bench.py evaluate "${EVALUATE[@]}" --out "$RESULTS/bench_evaluate.json"
}
stage_torchrun() {  # the same short run, plainly and under a 1-process torchrun
  local how launcher
  if [ "$PLANNING" = 1 ]; then step torchrun_plain 0 0; step torchrun_torchrun 0 0; return; fi
  export DDPM_ROOT=$SCRATCH/root
  mkdir -p "$DDPM_ROOT"
  $PY -m ddpm_lib prepare --profile "$TORCHRUN_PROFILE" --source synthetic > "$RESULTS/torchrun_prepare.log" 2>&1
  for how in plain torchrun; do
    launcher=($PY -m ddpm_lib)
    [ "$how" = torchrun ] && launcher=($PY -m torch.distributed.run --nproc_per_node=1 -m ddpm_lib)
    step "torchrun_$how" 40 150 "${launcher[@]}" train --profile "$TORCHRUN_PROFILE" --steps "$TORCHRUN_STEPS" \
      --batch-size 64 --run-name "$how"
    cp "$DDPM_ROOT/runs/$TORCHRUN_PROFILE/$how/metrics.csv" "$RESULTS/torchrun_${how}_metrics.csv" 2>/dev/null
  done
  unset DDPM_ROOT
}
stage_fit() { step bench_fit 70 150 $PY benchmarks/bench.py fit "${FIT[@]}" --out "$RESULTS/bench_fit.json"; }
stage_ddp2() {  # NCCL across two GPUs (gloo on the CPU in the rehearsal): every collective, then a resume
  local gpus every=100 first=200 second=300
  if [ "$PLANNING" = 1 ]; then step ddp2_train 0 0; step ddp2_resume 0 0; return; fi
  gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
  if [ "$DRY" != 1 ] && [ "${gpus:-0}" -lt 2 ]; then
    for name in ddp2_train ddp2_resume; do
      echo "$name skipped: ${gpus:-0} GPU(s); a 2-process NCCL run needs two" | tee -a "$RESULTS/steps.txt"
    done
    return
  fi
  [ "$DRY" = 1 ] && every=2 first=$TORCHRUN_STEPS second=$((TORCHRUN_STEPS + 2))
  export DDPM_ROOT=$SCRATCH/ddp2
  mkdir -p "$DDPM_ROOT"
  $PY -m ddpm_lib prepare --profile "$TORCHRUN_PROFILE" --source synthetic > "$RESULTS/ddp2_prepare.log" 2>&1
  local launch=($PY -m torch.distributed.run --nproc_per_node=2 -m ddpm_lib train --profile "$TORCHRUN_PROFILE"
                --batch-size 64 --run-name ddp2 --set "train.checkpoint_every=$every")
  step ddp2_train 60 150 "${launch[@]}" --steps "$first"
  step ddp2_resume 60 150 "${launch[@]}" --steps "$second" --extend  # demo decays its rate: a declared restart
  cp "$DDPM_ROOT/runs/$TORCHRUN_PROFILE/ddp2/metrics.csv" "$RESULTS/ddp2_metrics.csv" 2>/dev/null
  unset DDPM_ROOT
}

PLANNING=1  # every case of every stage, for the summary's list of what was not run
for STAGE in $ALL_STAGES; do "stage_$STAGE"; done
PLANNING=0

$PY - > "$RESULTS/environment.json" <<'EOF'
import json, sys
sys.path.insert(0, "benchmarks")
from bench_measure import environment
from ddpm_lib.device import default_device
print(json.dumps(environment(default_device()), indent=2))
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit \
  --format=csv > "$RESULTS/nvidia-smi.csv" 2>&1

for STAGE in $STAGES; do
  case " $ALL_STAGES " in
    *" $STAGE "*) "stage_$STAGE" ;;
    *) echo "unknown stage $STAGE: use $ALL_STAGES" | tee -a "$RESULTS/steps.txt" ;;
  esac
done

$PY benchmarks/gpu_summary.py "$RESULTS" | tee "$RESULTS/summary.txt"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ] && [ "$DRY" != 1 ]; then
  tar czf "$OUT/gpu_checks.tgz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
  cp "$RESULTS/summary.txt" "$OUT/summary.txt"
fi
