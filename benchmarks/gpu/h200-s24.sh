#!/usr/bin/env bash
# Prepared in session 23 (not run; no device time was left): the tensor-core table's D = 64 rows
# again with the host's final defaults (causal at D <= 64 keeps session 18's staged 4 x 32 tile,
# which session 23 chose from session 18's 0.85 ms against 1.05 ms with the 128-row tile but
# could not re-time), verified first, then the whole issue-20 table once more (tc f16 rows).
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs
# Run (device tool, carry [".gpu"], timeout_s 400): bash benchmarks/gpu/h200-s24.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 120 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --verify-variants '[{}]' \
  --verify-backward --out "$out/verify-f16.json" 2>&1 | keep >> "$log"
echo "=== verify f16 rc=${PIPESTATUS[0]}" >> "$log"
timeout 220 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-verify --skip-variants --impls 'tc f16' \
  --repeats 10 --out "$out/table.json" 2>&1 | keep >> "$log"
echo "=== table rc=${PIPESTATUS[0]}" >> "$log"
echo "verified ok: $(grep -c "^ok" "$log")" >> "$log"
grep -E '^table|^===|FAIL|rror|verification failures|^verified' "$log" | cut -c1-250 | tail -40
