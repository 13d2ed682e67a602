#!/usr/bin/env bash
# Session 20, run 2 (issue 17): the paged device cache vs DeviceKvCache at 8K, both warmed up,
# then ABBA x 2 in each of two processes (bench-gpt --cache-ab), decoding verified against ts first.
# Pack as h200-s20.sh. Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s20b.sh
source "$(dirname "$0")/h200-prelude.sh"
for run in 1 2; do
  echo "=== bench-gpt generation A/B at 8K, process $run" >> "$log"
  timeout 200 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 8192 \
    --gen-tokens 100,2 --cache-ab --out "$out/gpt-gen-8k-$run.json" 2>&1 | keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]}" >> "$log"
done
grep -E '^\||^verify|^===|A/B|Error|failed' "$log" | tail -c 9000
