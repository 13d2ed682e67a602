#!/usr/bin/env bash
# Session 24 (not run in session 24: no device was lent). The next session's first device command.
# 1. Issue 20 item 5: what the f16 x f16 -> f32 subgroup-matrix MMA computes, bit by bit
#    (bench-tc-numerics: single products, accumulation onto C, crafted bit cases, K = 4096
#    chains, and split-f16's own sums with the accumulator flushed every 16 .. 4096 keys). It
#    decides whether a split-f16 kernel can meet the f32 tolerance at all, and at which flush
#    interval. Seconds of device time.
# 2. Session 23's final tensor-core defaults verified (bench-tc's 11 cases against float64, f16
#    forward and backward, poisoned outputs) and the issue's table re-timed, including causal at
#    D = 64 with session 18's staged tile (chosen, not re-timed, in session 23). h200-s23b.sh's steps.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc-numerics.mjs benchmarks/gpu/dist/bench-tc.mjs
# Run (device tool, carry [".gpu"], timeout_s 480): bash benchmarks/gpu/h200-s24.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 90 bash .gpu/run.sh .gpu/app/bench-tc-numerics.mjs --out "$out/numerics.json" 2>&1 | keep >> "$log"
echo "=== numerics rc=${PIPESTATUS[0]}" >> "$log"
timeout 120 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --verify-variants '[{}]' \
  --verify-backward --out "$out/verify-f16.json" 2>&1 | keep >> "$log"
echo "=== verify f16 rc=${PIPESTATUS[0]}" >> "$log"
timeout 240 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-verify --skip-variants --impls 'tc f16' \
  --repeats 10 --out "$out/table.json" 2>&1 | keep >> "$log"
echo "=== table rc=${PIPESTATUS[0]}" >> "$log"
echo "verified ok: $(grep -c "^ok" "$log")" >> "$log"
grep -E 'RESULT|harness|^table|^===|FAIL|rror|verification failures|^verified' "$log" | cut -c1-330 | tail -60
