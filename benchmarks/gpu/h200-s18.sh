#!/usr/bin/env bash
# Session 18, call 1 (issue 20): constant matrix offsets. Tint's robustness wraps every
# subgroupMatrixLoad / Store whose offset is not a compile-time constant in `if (in bounds)`
# (the matrix through a function variable); with the scratch declared as arrays of per-subgroup
# arrays and the K/V halves as an array of halves, every offset is a literal and the check is
# done at compile time (TcForwardConfig.constOffsets).
# 1. bench-tc-micro: 8 workgroup loads + 8 MMAs, dynamic vs constant offsets, left and right
#    matrices, robust (the default) and disable_robustness.
# 2. bench-tc: the tensor-core forward with constOffsets (and + qRegs) verified on bench-tc's
#    11 random cases against float64 with poisoned outputs, then timed at (4, 16, 4096, 128)
#    non-causal against the flat layout, alternating in one process; then without robustness.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh \
#   benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/dist/bench-tc-micro.mjs
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s18.sh
source "$(dirname "$0")/h200-prelude.sh"
micro='wgL-8:8,wgL-8:8-const,wgR-8:8,wgR-8:8-const'
for set in - disable_robustness; do
  extra=$([ "$set" = - ] && echo "" || echo "$set")
  echo "=== micro [${extra:-default}]" >> "$log"
  EXTRA_DAWN_TOGGLES=$extra timeout 120 bash .gpu/run.sh .gpu/app/bench-tc-micro.mjs --variants "$micro" \
    --out "$out/micro-${extra:-default}.json" 2>&1 | grep -E 'RESULT|adapter|rror' | cut -c1-400 >> "$log"
  echo "=== micro rc=${PIPESTATUS[0]}" >> "$log"
done
echo "=== verify + time (robust)" >> "$log"
timeout 260 bash .gpu/run.sh .gpu/app/bench-tc.mjs \
  --verify-variants '[{"constOffsets":true},{"constOffsets":true,"qRegs":true}]' \
  --variants '[{"constOffsets":false},{"constOffsets":true},{"constOffsets":false},{"constOffsets":true},{"constOffsets":true,"qRegs":true},{"constOffsets":true,"shuffle":true},{"constOffsets":true,"debug":"noRoundTrip"}]' \
  --skip-table --repeats 10 --out "$out/tc-robust.json" 2>&1 | keep >> "$log"
echo "=== bench-tc rc=${PIPESTATUS[0]}" >> "$log"
echo "=== time (disable_robustness)" >> "$log"
EXTRA_DAWN_TOGGLES=disable_robustness timeout 150 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-verify \
  --variants '[{"constOffsets":false},{"constOffsets":true},{"constOffsets":true,"debug":"noRoundTrip"}]' \
  --skip-table --repeats 10 --out "$out/tc-norobust.json" 2>&1 | keep >> "$log"
echo "=== bench-tc rc=${PIPESTATUS[0]}" >> "$log"
grep -E 'RESULT|^variant|^===|fail|FAIL|Error|verif' "$log" | cut -c1-300 | tail -60
