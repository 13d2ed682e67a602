#!/usr/bin/env bash
# Session 14's last H200 run (~2 min): the final code (review mends) verified and timed once
# more: the block step f32 / f16 against ts then timed, PyTorch's block, GPT decoding at 8K
# (verified against ts first).
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 170):
#   bash benchmarks/gpu/h200-s14f.sh
source "$(dirname "$0")/h200-prelude.sh"
echo "=== bench-nn-block" >> "$log"
timeout 70 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs --dtypes f32,f16 --steps 10 --warmup 3 \
  --warmup-ms 1000 --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
timeout 30 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 10 --warmup 3 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
echo "=== bench-gpt generation at 8K" >> "$log"
timeout 60 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 8192 \
  --gen-tokens 60,2 --out "$out/gpt-gen.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify|^===|torch|failed|Error' "$log" | tail -c 5000
