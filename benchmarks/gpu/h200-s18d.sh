#!/usr/bin/env bash
# Session 18, call 4: (1) split-f16 (f32 inputs) on the new forward defaults (regSoftmax's
# register names no longer collide with split's cross accumulators) verified on bench-tc's 11
# cases; (2) the new f16 defaults timed without robustness (forward and backward at (4, 16,
# 4096, 128)); (3) issue 11: the int8 tensor-core Sage kernel with constant matrix offsets
# (SageTcConfig.constOffsets) verified against the TS spec and float64 and timed beside the
# flat layout, the portable kernel and our FA2 (bench-sage's table), robust access.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh \
#   benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/dist/bench-sage.mjs
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s18d.sh
source "$(dirname "$0")/h200-prelude.sh"
echo "=== split-f16 verify" >> "$log"
timeout 80 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --dtype f32 \
  --verify-variants '[{}]' --out "$out/f32.json" 2>&1 | keep >> "$log"
echo "=== split-f16 rc=${PIPESTATUS[0]}" >> "$log"
echo "=== f16 defaults without robustness" >> "$log"
EXTRA_DAWN_TOGGLES=disable_robustness timeout 120 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-verify \
  --variants '[{}]' --time-backward --repeats 10 --out "$out/norobust.json" 2>&1 | keep >> "$log"
echo "=== norobust rc=${PIPESTATUS[0]}" >> "$log"
echo "=== bench-sage" >> "$log"
timeout 280 bash .gpu/run.sh .gpu/app/bench-sage.mjs --out "$out/sage.json" --subgroups 4 \
  --tc-variants '[{},{"constOffsets":true}]' 2>&1 | keep >> "$log"
echo "=== bench-sage rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^variant|^backward|^===|FAIL|rror|failures|TOPS|^table|^row' "$log" | cut -c1-300 | tail -70
