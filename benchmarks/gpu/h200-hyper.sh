#!/usr/bin/env bash
# Issue 14 item 4 on the H200, one device command: bench-hyper (hyperAttention on WebGPU: LSH
# sort, gathers and LSE combine in WGSL, the exact pieces on our WGSL FA2) beside our exact FA2
# on WebGPU in the same process, f32, B 1, H 4, D 64 / 128, causal and not, random and planted
# heavy keys, N 4K..131K (blockSize / sampleSize swept at 32K). bench-hyper verifies first
# (webgpu vs ts on the same seed, forward and backward, and the exact limit vs float64, outputs
# poisoned). Three runs so a slow length cannot take the others with it:
#   1. verify + N 4096, 16384, 32768        -> hyper-small.json
#   2. N 65536                              -> hyper-64k.json
#   3. N 131072                             -> hyper-131k.json
# Output under $OUT: log.txt and the three JSON files (wall ms, speedup vs FA2, relative
# Frobenius error vs FA2's f32 output). Expected ~4-6 min with a cold start (FA2 non-causal at
# 131K, D 128 is ~1.5 s a call at the measured 25 TFLOP/s SIMT f32; 5 calls per row).
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app &&
#   bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-hyper.mjs
# Run (device tool, carry [".gpu"]): bash benchmarks/gpu/h200-hyper.sh
# Env: HYPER_ARGS (extra bench-hyper flags for every run, e.g. "--reps 5" or "--heads 8").
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used,memory.total,temperature.gpu,driver_version --format=csv >> "$log" 2>&1

run() { # name timeout flags...
  local name=$1 limit=$2
  shift 2
  echo "=== bench-hyper $name" >> "$log"
  local s=$SECONDS
  # shellcheck disable=SC2086
  timeout "$limit" bash .gpu/run.sh .gpu/app/bench-hyper.mjs "$@" --out "$out/hyper-$name.json" \
    ${HYPER_ARGS:-} 2>&1 | grep -v 'deprecated builtin' | cut -c1-600 >> "$log"
  echo "=== bench-hyper $name rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
}

run small 170 --lengths 4096,16384,32768 --sweep-n 32768
run 64k 120 --lengths 65536 --skip-verify
run 131k 250 --lengths 131072 --skip-verify
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv >> "$log" 2>&1
