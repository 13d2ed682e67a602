#!/usr/bin/env bash
# Session 13's last H200 run (one short device command, ~80 s after a cold start): the
# TransformerBlock step on the final code (memoised reductions) beside PyTorch's block.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 230):
#   bash benchmarks/gpu/h200-s13d.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
keep() { grep -v -E 'deprecated builtin|subgroupMatrix|^ *\^|warning|Compilation log|generated while|^\s*$|native engine unavailable|garbage-collected|^window|^verify' | cut -c1-400; }
echo "=== bench-nn-block" >> "$log"
timeout 90 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs --dtypes f32,f16,f32,f16 --steps 10 \
  --warmup 3 --out "$out/nn-block.json" 2>&1 | keep >> "$log"
timeout 45 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 10 --warmup 3 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
grep -E '^\||^===' "$log"
