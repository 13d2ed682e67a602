#!/usr/bin/env bash
# Session 14's fourth H200 run: GPT-2 small decoding at 1K and 8K with greedy tokens pipelined
# on the GPU (argmax there, the next forward recorded before the previous token is read back),
# in two fresh processes (each verified against ts first); bench-matmul with every row warmed
# up for 400 ms first (the rows after the second ran 3-5x slow: clocks, run 2 suggests).
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 420):
#   bash benchmarks/gpu/h200-s14d.sh
source "$(dirname "$0")/h200-prelude.sh"
for n in 1 2; do
  echo "=== bench-gpt generation at 1K and 8K, process $n" >> "$log"
  timeout 120 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 1024,8192 \
    --gen-tokens 100,2 --out "$out/gpt-gen-$n.json" 2>&1 | keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]}" >> "$log"
done
echo "=== bench-matmul (warmed rows)" >> "$log"
timeout 150 bash .gpu/run.sh .gpu/app/bench-matmul.mjs --reps 10 --warm-ms 400 \
  --out "$out/matmul.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify|^===|faster|failed|Error' "$log" | tail -c 9000
