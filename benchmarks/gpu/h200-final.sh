#!/usr/bin/env bash
# Session 12's last H200 run (one device command, ~3 min after a cold start): GPT decoding at
# 1K / 8K in a fresh process (verified against ts first, per-label profile), GPT-2 small's
# training step (FA2 vs standard) with decoding after it in the same process, and the
# TransformerBlock step f32 / f16 with PyTorch in the same command.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-final.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
keep() { grep -v -E 'deprecated builtin|subgroupMatrix|^ *\^|warning|Compilation log|generated while|^\s*$|native engine unavailable|garbage-collected|^window' | cut -c1-400; }
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv >> "$log" 2>&1
echo "=== bench-gpt generation (fresh process)" >> "$log"
timeout 120 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 1024,8192 \
  --gen-tokens 100,2 --profile --out "$out/gpt-gen.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
echo "=== bench-gpt training + generation at 8K" >> "$log"
timeout 120 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --contexts 8192 --gen-tokens 100,2 \
  --out "$out/gpt-train.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
echo "=== bench-nn-block" >> "$log"
timeout 120 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs --dtypes f32,f16,f32,f16 --steps 10 \
  --warmup 3 --out "$out/nn-block.json" 2>&1 | keep | grep -v '^verify' >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 10 --warmup 3 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
