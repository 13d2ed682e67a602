#!/usr/bin/env bash
# Session 14's H200 run (one device command, ~6 min after a cold start): nn's staged
# tensor-core matmul verified against the f32 result and timed beside the direct one
# (bench-matmul); the TransformerBlock step with attention recorded into the queue's encoder
# and early submits, A/B against the async attention (-async), the direct tensor-core matmul
# (-direct) and late submits (-late), each variant verified against ts twice (the second time
# attention is recorded) before timing; PyTorch's block in the same command; GPT-2 small's
# training step (FA2 vs standard) and 1K / 8K decoding.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-s14.sh
source "$(dirname "$0")/h200-prelude.sh"
# A warm-up so the first rows are not timed while the SM clock ramps from idle.
timeout 60 bash .gpu/run.sh .gpu/app/bench-matmul.mjs --reps 2 > /dev/null 2>&1
echo "=== bench-matmul" >> "$log"
timeout 120 bash .gpu/run.sh .gpu/app/bench-matmul.mjs --reps 10 --out "$out/matmul.json" 2>&1 |
  keep >> "$log"
echo "=== bench-nn-block" >> "$log"
timeout 200 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs \
  --dtypes f32,f32-async,f16,f16-async,f16-direct,f16-late,f32,f16 --steps 10 --warmup 3 \
  --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 10 --warmup 3 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
echo "=== bench-gpt training + generation at 1K and 8K" >> "$log"
timeout 150 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --contexts 1024,8192 --gen-tokens 100,2 \
  --out "$out/gpt.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify|^===|torch|faster|failed|Error' "$log" | tail -c 11000
