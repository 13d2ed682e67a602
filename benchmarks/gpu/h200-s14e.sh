#!/usr/bin/env bash
# Session 14's fifth H200 run: same-process A/B of pipelined vs serial greedy decoding (GPT-2
# small, 1K and 8K context, two fresh processes, each verified against ts first), and the block
# step's A/B of recorded attention (-async) and early submits (-late) at steady clocks.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 420):
#   bash benchmarks/gpu/h200-s14e.sh
source "$(dirname "$0")/h200-prelude.sh"
for n in 1 2; do
  echo "=== bench-gpt decode A/B at 1K and 8K, process $n" >> "$log"
  timeout 120 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 1024,8192 \
    --gen-tokens 100,2 --decode-ab --out "$out/gpt-gen-$n.json" 2>&1 | keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]}" >> "$log"
done
echo "=== bench-nn-block A/B" >> "$log"
timeout 150 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs --dtypes f16,f16-late,f16-async,f32,f32-late,f32-async,f16 \
  --steps 20 --warmup 3 --warmup-ms 1500 --out "$out/nn-block.json" 2>&1 | keep | grep -v '^verify' >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify|^===|A/B|failed|Error' "$log" | tail -c 6000
