#!/usr/bin/env bash
# Session 28, third run: run 4 (results/s28/run4-h100-range-guard) showed the range guard firing
# for two verification cases whose inputs were in range ("D 16, Dv 48", "varlen THD": o equal to
# SIMT's): the split pass checked whole pooled buffers, whose stale tails held NaN words from
# poisoned outputs. It now checks only the tensors' elements. The 11 cases and --range-check again.
# Pack: as h200-s28b.sh. Run (device tool, carry [".gpu"], timeout_s 200): bash benchmarks/gpu/h200-s28c.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 150 bash .gpu/run.sh .gpu/app/bench-tc.mjs --dtype f32 --skip-table --skip-variants --range-check \
  --out "$out/verify-range-f32.json" 2>&1 | keep >> "$log"
echo "=== verify-range-f32 rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^ok|^FAIL|===|rror|verification' "$log" | cut -c1-300 | tail -40
