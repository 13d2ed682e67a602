#!/usr/bin/env bash
# Session 20, run 5 (issue 17): what nn's fused addLayerNorm (8a5dbff) is worth on the H200.
# bench-gpt-unfused.mjs is dist/bench-gpt.mjs with the fused kernel never taken (unfused.py);
# processes alternate fused / unfused, three each, cached decoding (paged cache) and recompute
# at 8K, verified against ts first; then one profiled token of each at 8K.
# Pack: node benchmarks/gpu/build.mjs && python3 benchmarks/gpu/unfused.py && rm -rf .gpu/app &&
#   bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-gpt.mjs benchmarks/gpu/dist/bench-gpt-unfused.mjs
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s20f.sh
source "$(dirname "$0")/h200-prelude.sh"
for i in 1 2 3; do
  for b in bench-gpt bench-gpt-unfused; do
    echo "=== $b, process $i" >> "$log"
    timeout 100 bash .gpu/run.sh .gpu/app/$b.mjs --skip train --contexts 8192 \
      --gen-tokens 100,2 --out "$out/$b-$i.json" 2>&1 | keep >> "$log"
    echo "=== rc=${PIPESTATUS[0]}" >> "$log"
  done
done
for b in bench-gpt bench-gpt-unfused; do
  echo "=== $b, profiled" >> "$log"
  timeout 100 bash .gpu/run.sh .gpu/app/$b.mjs --skip train --contexts 8192 \
    --gen-tokens 30,2 --profile --out "$out/$b-profile.json" 2>&1 | keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]}" >> "$log"
done
grep -E '^\| 8192|^verify|^===|Error|failed' "$log" | tail -c 9000
