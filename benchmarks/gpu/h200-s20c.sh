#!/usr/bin/env bash
# Session 20, run 3 (issue 17): after the launch-uniform packing fix (2ebdf37), the paged device
# cache vs DeviceKvCache at 8K (two processes) and 1K (one), both warmed up, ABBA x 2
# (bench-gpt --cache-ab), decoding verified against ts first in each process.
# Pack as h200-s20.sh. Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s20c.sh
source "$(dirname "$0")/h200-prelude.sh"
for ctxs in 8192 8192 1024; do
  echo "=== bench-gpt generation A/B at $ctxs" >> "$log"
  timeout 200 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts $ctxs \
    --gen-tokens 100,2 --cache-ab --out "$out/gpt-gen-$ctxs-$SECONDS.json" 2>&1 | keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]}" >> "$log"
done
grep -E '^\||^verify|^===|A/B|Error|failed' "$log" | tail -c 9000
