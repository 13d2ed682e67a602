#!/usr/bin/env bash
# Session 18, call 2 (issue 20): with constant matrix offsets (the host's default since call 1),
# 1. the tensor-core forward's softmax from registers (regSoftmax) and Q in registers (qRegs),
#    shuffle, and tiles of 16 / 64 keys: verified (bench-tc's 11 cases vs float64, poisoned),
#    split-f16 verified with constOffsets, then timed at (4, 16, 4096, 128) non-causal
#    alternating in one process;
# 2. the tensor-core backward with constOffsets (dQ, dK/dV, split dK/dV; + batchLoads):
#    verified on the same cases (dq, dk, dv vs float64), then timed beside the SIMT backward.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s18b.sh
source "$(dirname "$0")/h200-prelude.sh"
echo "=== forward: verify + time (robust)" >> "$log"
timeout 230 bash .gpu/run.sh .gpu/app/bench-tc.mjs \
  --verify-variants '[{"regSoftmax":true},{"regSoftmax":true,"qRegs":true,"shuffle":true}]' \
  --variants '[{},{"regSoftmax":true},{"qRegs":true},{"regSoftmax":true,"qRegs":true},{"regSoftmax":true,"qRegs":true,"shuffle":true},{},{"regSoftmax":true},{"regSoftmax":true,"subgroups":4,"keyMatrices":1},{"regSoftmax":true,"subgroups":2,"keyMatrices":4,"kvLayout":"single"},{"regSoftmax":true,"debug":"noRoundTrip"}]' \
  --skip-table --repeats 10 --out "$out/fwd.json" 2>&1 | keep >> "$log"
echo "=== forward rc=${PIPESTATUS[0]}" >> "$log"
echo "=== split-f16 verify" >> "$log"
timeout 60 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --dtype f32 \
  --verify-variants '[{}]' --out "$out/f32.json" 2>&1 | keep >> "$log"
echo "=== split-f16 rc=${PIPESTATUS[0]}" >> "$log"
B='[{"dq":{"constOffsets":true},"dkdv":{"constOffsets":true}},{"dq":{"constOffsets":true,"batchLoads":true},"dkdv":{"constOffsets":true,"batchLoads":true}},{"dq":{"constOffsets":true},"dkdv":{"constOffsets":true,"split":true}},{"dq":{"constOffsets":true},"dkdv":{"constOffsets":true}},{"dq":{"constOffsets":true,"batchLoads":true},"dkdv":{"constOffsets":true,"batchLoads":true}}]'
echo "=== backward: verify + time (robust)" >> "$log"
timeout 260 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --skip-verify \
  --backward-variants "${BWD:-$B}" --time-backward --repeats 10 --out "$out/bwd.json" 2>&1 | keep >> "$log"
echo "=== backward rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^variant|^backward|^===|FAIL|rror|verification failures' "$log" | cut -c1-300 | tail -60
