#!/usr/bin/env bash
# The GPU figures of stacked training (README, "Stacked training"), as one prepared run on the lent GPU
# machine (one H200 or H100, 16 cores, Python 3.12, no network; ../shared/device/README.md):
#
#   bash bench/gpu_study.sh prepare      # here: the wheels and the study's commands into .device-wheels/
#   # then, with the device tool:  run  command="bash bench/gpu_study.sh device"  carry=[".device-wheels"]
#
# `device` prints, and writes to $OUT/gpu_study.log (what the device tool brings back):
#   1. the GPU, torch and CUDA;
#   2. optimizer steps per second per model at K = 1, 5 and 25 on CUDA (bench/stacked_steps.py), and
#      whether model 0 keeps its bits in a stack there;
#   3. `make run` (the whole study, cold cache, report included, accelerator auto) stacked and then
#      unstacked (stack_size=1), back to back (bench/bench_stacking.py): wall times, their ratio, the
#      peak memory, and how much the two modes' metrics.json differ on CUDA;
#   4. the stacked study again with one worker process (hydra.launcher.n_jobs=1: one group at a time,
#      "one group per GPU") instead of one per core, which may suit one GPU better (it serialises the
#      kernels of 16 processes anyway).
# Each part has a time limit (90 + 330 + 100 s; with the set-up, within the device tool's 600 s a call),
# so that a slow part leaves the others their figures. BENCH_ARGS and
# STEPS_ARGS add arguments (a quick check of the plumbing on a CPU: PY=.venv/bin/python SKIP_SETUP=1
# BENCH_ARGS="--seeds 0 pretrain.epochs=1 method.epochs_per_stage=1" OUT=/tmp/o bash bench/gpu_study.sh device).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.device-wheels
PY=${PY:-python3}

prepare() {
    set -e
    rm -rf "$WHEELS" && cp -r ../shared/device/wheels "$WHEELS"
    # what the project imports beyond the GPU machine's image and the shared wheels (pure Python)
    .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" lazy_loader markdown tabulate
    make -n run SEEDS=@SEEDS@ STUDY_DIR=@STUDY@ > "$WHEELS/study.txt"  # that machine may lack make
    grep -qx "/$WHEELS/" .git/info/exclude 2>/dev/null || echo "/$WHEELS/" >> .git/info/exclude
    ls "$WHEELS"
    echo "ready: run command=\"bash bench/gpu_study.sh device\" carry=[\"$WHEELS\"] (timeout_s 600)"
}

device() {
    local out=${OUT:-/tmp}/gpu_study.log
    exec > >(tee "$out") 2>&1
    if [ -z "${SKIP_SETUP:-}" ]; then
        bash "$WHEELS/setup.sh" || { echo "setup failed"; exit 1; }
        export PYTHONPATH=/tmp/site:$PWD
    fi
    export PYTHONUNBUFFERED=1
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "== steps per second per model (bench/stacked_steps.py)"
    local device
    device=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
    timeout 90 $PY bench/stacked_steps.py --device "$device" ${STEPS_ARGS:-} || echo "stacked_steps: exit $?"
    echo "== make run, stacked then unstacked (bench/bench_stacking.py)"
    timeout 330 $PY bench/bench_stacking.py --commands "$WHEELS/study.txt" ${BENCH_ARGS:-} || echo "bench_stacking: exit $?"
    echo "== make run stacked, one worker process (hydra.launcher.n_jobs=1)"
    timeout 100 $PY bench/bench_stacking.py --commands "$WHEELS/study.txt" --stacked-only ${BENCH_ARGS:-} \
        hydra.launcher.n_jobs=1 || echo "bench_stacking (one worker): exit $?"
}

case "${1:-}" in
    prepare) prepare ;;
    device) device ;;
    *) echo "usage: bash bench/gpu_study.sh prepare|device" >&2; exit 2 ;;
esac
