#!/usr/bin/env bash
# Issue 13 on the H200, one device command: bench-gla (chunkGla's WGSL passes verified against
# the float64 recurrence with poisoned outputs, then forward and forward + backward GPU time at
# B 4, H 16, K = V = 128, T 2048 / 8192, f16, beside our tensor-core causal FA2 forward), fla's
# Triton chunk_gla (benchmarks/gla/fla_peer.py: checked against a float64 recurrence first), and
# PyTorch SDPA causal (FA2) at the same (B, H, T, D). Output under $OUT: log.txt, gla.json,
# fla.json, torch-gla.json, clocks.csv (SM clock and utilization every 200 ms).
# Pack (fla: a run-only copy of fla-org/flash-linear-attention, never committed; see fla_peer.py):
#   node benchmarks/gpu/build.mjs && rm -rf .gpu && bash ../shared/gpu/pack.sh \
#     benchmarks/gpu/dist/bench-gla.mjs benchmarks/gpu/torch_sdpa.py benchmarks/gla/fla_peer.py \
#     /root/flapeer/src /root/flapeer/fallback
# Run: bash benchmarks/gpu/h200-gla.sh   (carry [".gpu"]). Env: GLA_ARGS (extra bench-gla flags),
# GLA_TIMEOUT (seconds for bench-gla, default 110; ~200 with --tc both), FLA_TIMEOUT (seconds, default 240),
# GLA_SHAPES / FLA_SHAPES / FLA_PASSES (defaults: both shapes; fla's forward for every shape,
# then forward+backward; fla.json is rewritten after every row, so a timeout keeps what
# finished), SKIP_TORCH=1. Needs ~420 s of device time with a cold start.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,driver_version --format=csv >> "$log" 2>&1
# SM clocks every 200 ms while everything runs (bench-gla's forward timings disagreed with its
# per-pass sums in runs 3 and 6; clocks not boosting is the first suspect).
nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu --format=csv -lms 200 > "$out/clocks.csv" 2>&1 &
smi=$!
trap 'kill $smi 2>/dev/null' EXIT
echo "=== bench-gla" >> "$log"
s=$SECONDS
# shellcheck disable=SC2086
timeout ${GLA_TIMEOUT:-110} bash .gpu/run.sh .gpu/app/bench-gla.mjs --shapes "${GLA_SHAPES:-4,16,2048,128,128;4,16,8192,128,128}" \
  --dtype f16 --repeats 10 --out "$out/gla.json" ${GLA_ARGS:-} 2>&1 |
  grep -v 'deprecated builtin' | cut -c1-600 >> "$log"
echo "=== bench-gla rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
echo "=== fla" >> "$log"
s=$SECONDS
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' >> "$log" 2>&1
# Triton autotunes every fla kernel at each new shape: 100 s did not cover two shapes (run 1).
timeout ${FLA_TIMEOUT:-240} python3 .gpu/app/fla_peer.py --fla .gpu/app/src --fallback .gpu/app/fallback \
  --shapes "${FLA_SHAPES:-4,16,2048,128;4,16,8192,128}" --passes "${FLA_PASSES:-forward,forward+backward}" \
  --out "$out/fla.json" >> "$log" 2>&1
echo "=== fla rc=$? $((SECONDS - s)) s" >> "$log"
[ "${SKIP_TORCH:-0}" = 1 ] && exit 0
echo "=== torch" >> "$log"
s=$SECONDS
timeout 45 python3 .gpu/app/torch_sdpa.py --shapes "4,16,2048,128;4,16,8192,128" --out "$out/torch-gla.json" >> "$log" 2>&1
echo "=== torch rc=$? $((SECONDS - s)) s" >> "$log"
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv >> "$log" 2>&1
