#!/usr/bin/env bash
# Session 18, call 7 (issue 20 item 8): the final defaults (backward now with regLoops) verified
# on bench-tc's 11 cases (f16 forward, split-f16 forward, backward), then the table's
# tensor-core rows (f16 forward + backward, split-f16 forward) at the issue's three shapes,
# causal and not. The SIMT and PyTorch rows of the same table are run 3's (h200-s18c.sh).
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs
# Run (device tool, carry [".gpu"], timeout_s 400): bash benchmarks/gpu/h200-s18g.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 100 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --verify-variants '[{}]' \
  --verify-backward --out "$out/verify-f16.json" 2>&1 | keep >> "$log"
echo "=== verify f16 rc=${PIPESTATUS[0]}" >> "$log"
timeout 60 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --dtype f32 \
  --verify-variants '[{}]' --out "$out/verify-f32.json" 2>&1 | keep >> "$log"
echo "=== verify f32 rc=${PIPESTATUS[0]}" >> "$log"
timeout 150 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-verify --skip-variants --impls 'tc f16,split-f16 f32' \
  --repeats 10 --out "$out/table.json" 2>&1 | keep >> "$log"
echo "=== table rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^table|^===|FAIL|rror|verification failures' "$log" | cut -c1-250 | tail -40
