#!/usr/bin/env bash
# One device command for this session's two measurements (.gpu/ packed with bench-tc.mjs and
# bench-hstu.mjs): the tensor-core forward's verification and tile variants (issue 20, WIP),
# (first: which K/V staging layout verifies, on three shapes), then HSTU with and without the
# bucketed rab beside causal FA2 (issue 10). Logs under $OUT. Pack: node benchmarks/gpu/build.mjs &&
# bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/dist/bench-hstu.mjs
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
timeout 60 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --cases 0,2,7 \
  --verify-variants '[{"kvLayout":"parity"},{"kvLayout":"split"},{"kvLayout":"single"}]' \
  --out "$out/tc-layouts.json" 2>&1 | grep -E '^(ok|FAIL)' | cut -c1-300 > "$out/tc-layouts.log"
timeout 150 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --repeats 5 \
  --variants '[{"subgroups":4,"keyMatrices":2,"lazy":8},{"subgroups":2,"keyMatrices":4,"lazy":8},{"subgroups":4,"keyMatrices":1,"lazy":8},{"subgroups":2,"keyMatrices":2,"lazy":8}]' \
  --out "$out/tc.json" 2>&1 | grep -v 'deprecated builtin' | grep -E '^(adapter|ok|FAIL|variant|verification)|rror' | cut -c1-400 > "$out/tc.log"
timeout 200 bash .gpu/run.sh .gpu/app/bench-hstu.mjs --rab --dtypes f32 --out "$out/hstu-rab.json" 2>&1 |
  grep -v 'deprecated builtin' > "$out/hstu-rab.log"
