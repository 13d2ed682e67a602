#!/usr/bin/env bash
# Session 20, run 4 (issue 17): what the launch-uniform packing fix (2ebdf37) is worth on the H200.
# bench-gpt-oldpack.mjs is dist/bench-gpt.mjs with packParams put back as before (two object
# spreads into packUniform), made here by benchmarks/gpu/oldpack.py; processes alternate new /
# old, three each, cached decoding (the paged cache) and recompute at 8K, verified against ts.
# Pack: node benchmarks/gpu/build.mjs && python3 benchmarks/gpu/oldpack.py && rm -rf .gpu/app &&
#   bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-gpt.mjs benchmarks/gpu/dist/bench-gpt-oldpack.mjs
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s20d.sh
source "$(dirname "$0")/h200-prelude.sh"
for i in 1 2 3; do
  for b in bench-gpt bench-gpt-oldpack; do
    echo "=== $b, process $i" >> "$log"
    timeout 120 bash .gpu/run.sh .gpu/app/$b.mjs --skip train --contexts 8192 \
      --gen-tokens 100,2 --out "$out/$b-$i.json" 2>&1 | keep >> "$log"
    echo "=== rc=${PIPESTATUS[0]}" >> "$log"
  done
done
grep -E '^\| 8192|^verify|^===|Error|failed' "$log" | tail -c 9000
