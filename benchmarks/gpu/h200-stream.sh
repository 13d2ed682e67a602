#!/usr/bin/env bash
# Issue 15 part 3 on the H200, one device command: FastAttention's CPU-GPU cooperative long
# context (streamingAttention: K/V in host memory streamed under a GPU budget of 1/4 of K+V)
# beside the resident kernel at N = 262144, H 32, D 128, f16, B 1: causal prefill, then decode
# (Nq 1). bench-stream verifies against float64 first (small shape), then reports per mode the
# resident and streaming times, the overhead (target <= 1.15x for prefill), compute alone, copy
# alone, host-to-device GB/s and the hidden fraction of the copy time (see bench-stream.ts).
# At this shape one f16 tensor is 2 GiB, over maxStorageBufferBindingSize (2 GiB - 4): the
# resident kernel runs in two head groups of 16 (summed); q and o stay on the host for the
# streaming call (o read back inside its time).
# Output under $OUT: log.txt, stream-small.json/.md, stream-prefill.json/.md,
# stream-decode.json/.md, clocks.csv.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu && bash ../shared/gpu/pack.sh \
#         benchmarks/gpu/dist/bench-stream.mjs
# Run:  bash benchmarks/gpu/h200-stream.sh   (carry [".gpu"]). Env: STREAM_SHAPE (default
# 1,32,262144,128), STREAM_SMALL_SHAPE (1,8,16384,128), STREAM_BUDGET_FRAC (0.25), SMALL_TIMEOUT /
# PREFILL_TIMEOUT / DECODE_TIMEOUT
# (seconds: 90 / 330 / 120, together under the 600 s of one device command).
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
shape=${STREAM_SHAPE:-1,32,262144,128}
frac=${STREAM_BUDGET_FRAC:-0.25}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,driver_version,memory.used --format=csv >> "$log" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu,memory.used,pcie.link.gen.current,pcie.link.width.current --format=csv -lms 500 > "$out/clocks.csv" 2>&1 &
smi=$!
trap 'kill $smi 2>/dev/null' EXIT
run() {
  local name=$1 limit=$2
  shift 2
  echo "=== $name" >> "$log"
  local s=$SECONDS
  timeout "$limit" bash .gpu/run.sh .gpu/app/bench-stream.mjs "$@" --out "$out/stream-$name.json" 2>&1 |
    grep -v 'deprecated builtin' | cut -c1-800 >> "$log"
  echo "=== $name rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
}
# Verification (float64, poisoned outputs) and the whole path at a small N first.
run small "${SMALL_TIMEOUT:-90}" --shape "${STREAM_SMALL_SHAPE:-1,8,16384,128}" --budget-frac "$frac" --decode-repeats 3
run prefill "${PREFILL_TIMEOUT:-330}" --shape "$shape" --budget-frac "$frac" --modes prefill --skip-verify --repeats 1
run decode "${DECODE_TIMEOUT:-120}" --shape "$shape" --budget-frac "$frac" --modes decode --skip-verify --decode-repeats 5
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv >> "$log" 2>&1
cat "$out"/stream-*.md >> "$log" 2>/dev/null
