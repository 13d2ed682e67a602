#!/usr/bin/env bash
# One device command for this session's two measurements (.gpu/ packed with bench-tc.mjs and
# bench-hstu.mjs): the tensor-core forward's verification and tile variants (issue 20, WIP),
# then HSTU with and without the bucketed rab beside causal FA2 (issue 10). Logs under $OUT.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
timeout 150 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --repeats 5 \
  --variants '[{"subgroups":4,"keyMatrices":2,"lazy":8},{"subgroups":2,"keyMatrices":4,"lazy":8},{"subgroups":4,"keyMatrices":1,"lazy":8},{"subgroups":2,"keyMatrices":2,"lazy":8}]' \
  --out "$out/tc.json" 2>&1 | grep -v 'deprecated builtin' | grep -E '^(adapter|ok|FAIL|variant|verification)|rror' | cut -c1-400 > "$out/tc.log"
timeout 200 bash .gpu/run.sh .gpu/app/bench-hstu.mjs --rab --dtypes f32 --out "$out/hstu-rab.json" 2>&1 |
  grep -v 'deprecated builtin' > "$out/hstu-rab.log"
