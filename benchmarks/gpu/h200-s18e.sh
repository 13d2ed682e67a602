#!/usr/bin/env bash
# Session 18, call 5 (issue 20): the forward's loads moved away from their stores — prefetchK
# (the next tile's K words loaded a tile ahead) and splitV (V's loads before the softmax, the
# stores after) — verified on bench-tc's 11 cases against float64 (poisoned outputs), then
# timed at (4, 16, 4096, 128) non-causal against the default, alternating in one process.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs
# Run (device tool, carry [".gpu"], timeout_s 400): bash benchmarks/gpu/h200-s18e.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 300 bash .gpu/run.sh .gpu/app/bench-tc.mjs \
  --verify-variants '[{"prefetchK":true},{"splitV":true},{"prefetchK":true,"splitV":true}]' \
  --variants '[{},{"prefetchK":true},{"splitV":true},{"prefetchK":true,"splitV":true},{},{"prefetchK":true},{"splitV":true},{"prefetchK":true,"splitV":true},{"prefetchK":true,"splitV":true,"qRegs":false}]' \
  --skip-table --repeats 10 --out "$out/fwd.json" 2>&1 | keep >> "$log"
echo "=== bench-tc rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^variant|^===|FAIL|rror|verification failures' "$log" | cut -c1-300 | tail -30
