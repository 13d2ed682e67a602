#!/usr/bin/env bash
# The H200 runs session 11 left (one device command, ~4 min with a cold start): issue 15 part 1's
# default-limits FastAttention vs the tuned FA2 (bench-limits), issue 17's decoding after the
# host-side cuts (bench-gpt: decode verification vs ts first, then KV cache vs recompute at 1K /
# 8K with the per-label profile), and issue 16's block step with PyTorch in the same command.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-next.sh
# Output under $OUT: log.txt, limits.json, gpt-gen.json, nn-block.json, torch-nn.json.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
keep() { grep -v -E 'deprecated builtin|subgroupMatrix|^ *\^|warning|Compilation log|generated while|^\s*$' | cut -c1-400; }
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,driver_version --format=csv >> "$log" 2>&1
echo "=== bench-limits" >> "$log"
timeout 150 bash .gpu/run.sh .gpu/app/bench-limits.mjs --n 1024,4096,16384 --d 64,128 \
  --out "$out/limits.json" 2>&1 | keep >> "$log"
echo "=== bench-limits rc=${PIPESTATUS[0]}" >> "$log"
echo "=== bench-gpt generation" >> "$log"
timeout 150 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 1024,8192 \
  --gen-tokens 100,2 --profile --out "$out/gpt-gen.json" 2>&1 | keep >> "$log"
echo "=== bench-gpt rc=${PIPESTATUS[0]}" >> "$log"
echo "=== bench-nn-block" >> "$log"
timeout 100 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs --dtypes f32,f16 --steps 10 --warmup 3 \
  --profile --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== bench-nn-block rc=${PIPESTATUS[0]}" >> "$log"
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 10 --warmup 3 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
