#!/usr/bin/env bash
# Issue 20, run 14: which staging strides and tiles the H200's subgroup-matrix loads get right.
# Run 13 (h200-tc.sh): the tensor-core forward and backward were right at D = 128 and D = 16
# and wrong at D = 64 (rows of 72 halves), and the forward was wrong at D = 128 with 16-key
# tiles, in every variant and deterministically, while the emulated kernels are right on all of
# them. This verifies the forward on three cases (D 64, D 128 causal, D 16 / Dv 48) under
# padding, tile and layout variants, and the backward under padding variants. Log in $OUT.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
tc() { # name timeout args...
  local name=$1 t=$2; shift 2
  echo "=== $name: bench-tc $*" >> "$log"
  timeout "$t" bash .gpu/run.sh .gpu/app/bench-tc.mjs "$@" --out "$out/$name.json" 2>&1 |
    grep -v 'deprecated builtin' | grep -E '^(ok|FAIL|variant|verification)|rror' | cut -c1-300 >> "$log"
  echo "=== $name rc=${PIPESTATUS[0]}" >> "$log"
}
tc fwd 200 --skip-table --skip-variants --cases 0,2,7 --verify-variants \
  '[{},{"pad":16},{"pad":24},{"pad":40},{"pad":72},{"pad":0},{"smallFirst":true},{"subgroups":2},{"subgroups":1},{"keyMatrices":1},{"keyMatrices":1,"pad":16},{"keyMatrices":4,"subgroups":2},{"swizzle":false},{"kvLayout":"split"}]'
tc fwd32 60 --skip-table --skip-variants --cases 0,2 --dtype f32 --verify-variants \
  '[{},{"pad":16},{"pad":72},{"smallFirst":true}]'
tc bwd 150 --skip-table --skip-variants --skip-verify --cases 0,2,7 --backward-variants \
  '[{},{"dq":{"pad":16},"dkdv":{"pad":16}},{"dq":{"pad":72},"dkdv":{"pad":72}},{"dq":{"keyMatrices":2},"dkdv":{"split":true}}]'
