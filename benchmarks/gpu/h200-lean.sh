#!/usr/bin/env bash
# Issue 12 item 7 on the H200, one device command: LeanAttention decode (fa2, splitK, streamK) on
# WebGPU beside the device's WGSL bandwidth probes (read-only reduction = the ceiling; copy beside)
# and PyTorch SDPA decode (fp16, Nq 1, enable_gqa), B {1, 8} x Hkv {32, 8} x Nk {8K..256K},
# Hq 32, D 128. bench-lean verifies every partition vs float64 (outputs poisoned) before timing.
# K or V over the 2 GiB - 4 binding limit is skipped by bench-lean (B1/Hkv32/256K, B8/Hkv32/32K+,
# B8/Hkv8/128K+); PyTorch runs every shape. Expected ~2-3 min in all.
# Output under $OUT (at most 8 files come back): log.txt, torch-decode.json, lean.json.
# Pack: node benchmarks/gpu/build.mjs &&
#   bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-lean.mjs benchmarks/gpu/torch_decode.py
# Run (device tool, carry [".gpu"]): bash benchmarks/gpu/h200-lean.sh
# Env: LEAN_ARGS (extra bench-lean flags, e.g. "--nk 8192,262144"), TORCH_ARGS likewise.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used,memory.total,temperature.gpu,driver_version --format=csv >> "$log" 2>&1

echo "=== torch_decode.py" >> "$log"
s=$SECONDS
# shellcheck disable=SC2086
timeout 70 python3 .gpu/app/torch_decode.py --out "$out/torch-decode.json" ${TORCH_ARGS:-} >> "$log" 2>&1
echo "=== torch rc=$? $((SECONDS - s)) s" >> "$log"

echo "=== bench-lean.mjs" >> "$log"
s=$SECONDS
torch_flag=()
[ -s "$out/torch-decode.json" ] && torch_flag=(--torch "$out/torch-decode.json")
# shellcheck disable=SC2086
timeout 125 bash .gpu/run.sh .gpu/app/bench-lean.mjs ${torch_flag[@]+"${torch_flag[@]}"} --out "$out/lean.json" ${LEAN_ARGS:-} 2>&1 |
  grep -v 'deprecated builtin' | cut -c1-400 >> "$log"
echo "=== bench-lean rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv >> "$log" 2>&1
