#!/usr/bin/env bash
# Session 15's third H200 run (~5 min): the defaults chosen from runs 1-2 (first command buffer
# of 2 passes, split-K weight gradients on the direct tensor-core kernel) timed three times in
# one process beside f32 and the old first batch of 8 (-first8), each variant verified against
# ts first; PyTorch's block before and after; GPT-2 small training (FA2 vs standard) and 8K
# decoding, pipelined with the first batch of 2 and of 8 alternating (--first-ab).
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-s15c.sh
source "$(dirname "$0")/h200-prelude.sh"
torch_block() {
  timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 20 --warmup 5 \
    --out "$out/torch-nn-$1.json" >> "$log" 2>&1
  echo "=== torch rc=$?" >> "$log"
}
torch_block before
echo "=== bench-nn-block" >> "$log"
timeout 240 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs \
  --dtypes f16,f32,f16,f16-first8,f16 --steps 20 --warmup 3 --warmup-ms 1500 \
  --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
torch_block after
echo "=== bench-gpt training + generation at 8K" >> "$log"
timeout 200 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --contexts 8192 --gen-tokens 60,2 --first-ab \
  --out "$out/gpt.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify.*again|^===|torch|faster|failed|Error|A/B' "$log" | tail -c 9000
