#!/usr/bin/env bash
# Session 26, issue 20 item 5: split-f16's precision and speed on the device.
# 1. bench-tc-split: the f32 -> f16 conversions, and the forward on inputs whose Q K or V are
#    already halves, for the presplit kernel, the in-kernel split and the emulation run on this
#    device: which operand's lo goes missing.
# 2. verification on f32 inputs (poisoned outputs, 11 cases vs float64): presplit, in-kernel.
# 3. split-f16's tile variants at (4, 16, 4096, 128) against SIMT f32 (their error: vs SIMT).
# 4. the table rows: split-f16 (the host's default route) and SIMT f32, causal and not,
#    sampled error vs float64.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc-split.mjs benchmarks/gpu/dist/bench-tc.mjs
# Run (device tool, carry [".gpu"], timeout_s 380): bash benchmarks/gpu/h200-s26.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 90 bash .gpu/run.sh .gpu/app/bench-tc-split.mjs --out "$out/split-probe.json" 2>&1 | keep >> "$log"
echo "=== probe rc=${PIPESTATUS[0]}" >> "$log"
timeout 90 bash .gpu/run.sh .gpu/app/bench-tc.mjs --dtype f32 --skip-table --skip-variants \
  --verify-variants '[{"presplit":true},{"presplit":false}]' --out "$out/verify-f32.json" 2>&1 | keep >> "$log"
echo "=== verify f32 rc=${PIPESTATUS[0]}" >> "$log"
# QUICK=1: the probe and the verification only (what decides the precision question).
if [ -n "${QUICK:-}" ]; then
  grep -E 'RESULT|^ok|^FAIL|===|rror|verification' "$log" | cut -c1-300 | tail -120
  exit 0
fi
timeout 90 bash .gpu/run.sh .gpu/app/bench-tc.mjs --dtype f32 --skip-verify --skip-table --repeats 5 \
  --variants '[{"presplit":true,"subgroups":8,"keyMatrices":1},{"presplit":true,"subgroups":4,"keyMatrices":2,"kvLayout":"single"}]' \
  --out "$out/variants-f32.json" 2>&1 | keep >> "$log"
echo "=== variants f32 rc=${PIPESTATUS[0]}" >> "$log"
timeout 80 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-verify --skip-variants \
  --impls 'split-f16 f32,simt f32' --tc-f32 '{"presplit":true}' --shapes '[[4,16,4096,128]]' --skip-backward --repeats 5 --out "$out/split.json" 2>&1 |
  keep >> "$log"
echo "=== split table rc=${PIPESTATUS[0]}" >> "$log"
grep -E 'RESULT|^ok|^FAIL|^variant|^table|===|rror|verification' "$log" | cut -c1-300 | tail -120
