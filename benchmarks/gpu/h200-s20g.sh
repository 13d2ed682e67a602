#!/usr/bin/env bash
# Session 20, run 6 (issue 17): the final code (paged device cache, packed uniform, fused
# addLayerNorm, the review's checks) on another machine: cached decoding vs recompute at 8K in
# three processes and 1K in one, each verified against ts first.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-gpt.mjs
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s20g.sh
source "$(dirname "$0")/h200-prelude.sh"
for c in 8192 8192 8192 1024; do
  echo "=== bench-gpt, context $c" >> "$log"
  timeout 100 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts $c \
    --gen-tokens 100,2 --out "$out/gpt-$c-$SECONDS.json" 2>&1 | keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]}" >> "$log"
done
grep -E '^\| [0-9]|^verify|^===|Error|failed' "$log" | tail -c 9000
