#!/usr/bin/env bash
# Session 17, last call (~2 min warm): the tensor-core FA2 forward's `batchLoads` staging (every
# 16-byte load of a tile issued before the conversions and stores) verified (bench-tc's random
# cases against float64, outputs poisoned) and timed against the loop alternating, at
# (4, 16, 4096, 128) non-causal, robust access (the default). The run of record (2026-12-04)
# named the loop `{}` (the default then); batchLoads is the default since, so the loop is now
# named explicitly.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs
# Run (device tool, carry [".gpu"], timeout_s 280): bash benchmarks/gpu/h200-s17e.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 200 bash .gpu/run.sh .gpu/app/bench-tc.mjs --verify-variants '[{"batchLoads":true}]' \
  --variants '[{"batchLoads":false},{"batchLoads":true},{"batchLoads":false},{"batchLoads":true}]' \
  --skip-table --repeats 10 \
  --out "$out/tc.json" 2>&1 | keep >> "$log"
echo "=== bench-tc rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^variant|^===|fail|FAIL|Error|verify' "$log" | cut -c1-300 | tail -40
