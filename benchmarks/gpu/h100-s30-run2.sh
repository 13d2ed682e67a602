#!/usr/bin/env bash
# Session 30's second device command (run on the same warm H100 right after h100-s30.sh; same
# pack, carry [".gpu"]): Sage's f16 engine at (4, 32, 4096, 128); the FA2 f16 forward with Sage's
# subgroup count, 32-key tiles (Sage's 64-key tile does not fit the FA2 kernel's workgroup
# memory), lazy 8 and lazy 0; split-f16 D-64 tiles; the lean decode partitions incl. FA2.
# Raw: benchmarks/gpu/results/s30/run2-h100-sage-tiles-lean/.
source "$(dirname "$0")/h200-prelude.sh"
step() { local n=$1 l=$2; shift 2; echo "--- $n at ${SECONDS}s" >> "$log"; timeout "$l" "$@" 2>&1 | keep >> "$log"; echo "=== $n rc=${PIPESTATUS[0]} at ${SECONDS}s" >> "$log"; }
step sage 110 bash .gpu/run.sh .gpu/app/bench-sage.mjs --skip-verify --skip-i8 --f16-subgroups 4 --causal false --shapes '4,32,4096,128' --repeats 5 --out "$out/sage-4096.json"
step fa2-tiles 90 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-verify --skip-table --repeats 5 --variant-shape 4,32,4096,128 --variants '[{},{"subgroups":4,"keyMatrices":2,"lazy":8},{"subgroups":4,"keyMatrices":2,"lazy":0},{"subgroups":8,"keyMatrices":2,"lazy":0}]' --out "$out/fa2-tiles.json"
step d64 60 bash .gpu/run.sh .gpu/app/bench-tc.mjs --dtype f32 --skip-verify --skip-table --repeats 5 --variant-shape 16,16,1024,64 --variants '[{},{"subgroups":4,"keyMatrices":2},{"subgroups":4,"keyMatrices":1}]' --out "$out/variants-d64.json"
DISABLE_DAWN_TOGGLES=timestamp_quantization step lean 140 bash .gpu/run.sh .gpu/app/bench-lean.mjs --batch 1 --hkv 8,32 --nk 32768,262144 --partitions fa2,splitK,streamK --splits 16 --workers 132 --tunings default,l8 --repeats 7 --out "$out/lean-fa2.json"
grep -vE '^ok ' "$log" | grep -E 'TOPS|TFLOP|^variant|===|rror|row |^B|^1 |^  |ceiling' | cut -c1-300 | tail -c 9000
