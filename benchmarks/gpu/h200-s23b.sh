#!/usr/bin/env bash
# Session 23 (issue 20; not run as such: its steps ran as the first half of h200-s23c.sh, run 2).
# Next session: run it again to verify and table the final defaults (causal at D <= 64 keeps
# session 18's staged tile, chosen but not re-timed in session 23). The new defaults: Q's matrices
# from storage (qDirect) with 8 subgroups x 32-key tiles wherever q's 16-row blocks lie within
# its buffer; backward: the dQ pass's Q and dO matrices from storage (blockDirect) with 8
# subgroups x 16-key tiles. Verified first on bench-tc's 11 cases against float64 (f16 forward
# and backward, poisoned outputs), then the issue's table rows for the tensor cores (f16 forward
# and backward at the three shapes, causal and not).
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs
# Run (device tool, carry [".gpu"], timeout_s 420): bash benchmarks/gpu/h200-s23b.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 120 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --verify-variants '[{}]' \
  --verify-backward --out "$out/verify-f16.json" 2>&1 | keep >> "$log"
echo "=== verify f16 rc=${PIPESTATUS[0]}" >> "$log"
timeout 240 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-verify --skip-variants --impls 'tc f16' \
  --repeats 10 --out "$out/table.json" 2>&1 | keep >> "$log"
echo "=== table rc=${PIPESTATUS[0]}" >> "$log"
echo "verified ok: $(grep -c "^ok" "$log")" >> "$log"
grep -E '^table|^===|FAIL|rror|verification failures|^verified' "$log" | cut -c1-250 | tail -40
