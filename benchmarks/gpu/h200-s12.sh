#!/usr/bin/env bash
# Session 12's H200 run (one device command, ~4 min with a cold start): issue 16's block step
# after split-K weight gradients and the queue's early submits (with PyTorch in the same
# command), and issue 17's GPT-2 small step (f32, FA2 vs standard; then f16 storage on tensor
# cores) with generation at 1K / 8K after the same changes.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-s12.sh
# and issue 15 part 1's default-limits kernels at D 64 beside alternative forward tiles.
# Output under $OUT: log.txt, nn-block.json, torch-nn.json, gpt-f32.json, gpt-f16.json,
# limits.json.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
keep() { grep -v -E 'deprecated builtin|subgroupMatrix|^ *\^|warning|Compilation log|generated while|^\s*$' | cut -c1-400; }
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,driver_version --format=csv >> "$log" 2>&1
echo "=== bench-nn-block" >> "$log"
s=$SECONDS
timeout 150 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs --dtypes f32,f16 --steps 10 --warmup 3 \
  --profile --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== bench-nn-block rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 10 --warmup 3 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
echo "=== bench-gpt f32" >> "$log"
s=$SECONDS
timeout 150 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --contexts 1024,8192 --gen-tokens 100,2 \
  --profile --out "$out/gpt-f32.json" 2>&1 | keep >> "$log"
echo "=== bench-gpt f32 rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
echo "=== bench-gpt f16" >> "$log"
s=$SECONDS
timeout 120 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip generate --dtype f16 \
  --out "$out/gpt-f16.json" 2>&1 | keep >> "$log"
echo "=== bench-gpt f16 rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
echo "=== bench-limits D 64 with alternative forward tiles" >> "$log"
timeout 120 bash .gpu/run.sh .gpu/app/bench-limits.mjs --n 1024,4096,16384 --d 64 \
  --out "$out/limits.json" 2>&1 | keep >> "$log"
echo "=== bench-limits rc=${PIPESTATUS[0]}" >> "$log"
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv >> "$log" 2>&1
