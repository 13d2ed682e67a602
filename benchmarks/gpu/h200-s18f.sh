#!/usr/bin/env bash
# Session 18, call 6 (issue 20): the tensor-core backward's scalar pass unrolled with its loads
# first (TcBackwardConfig.regLoops), both passes: verified on bench-tc's 11 cases (dq, dk, dv vs
# float64, poisoned), then timed at (4, 16, 4096, 128) non-causal against the default,
# alternating in one process.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs
# Run (device tool, carry [".gpu"], timeout_s 400): bash benchmarks/gpu/h200-s18f.sh
source "$(dirname "$0")/h200-prelude.sh"
R='{"dq":{"regLoops":true},"dkdv":{"regLoops":true}}'
timeout 300 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --skip-verify \
  --backward-variants "[$R,{},$R,{\"dq\":{\"regLoops\":true},\"dkdv\":{\"regLoops\":true,\"split\":true}}]" \
  --time-backward --repeats 10 --out "$out/bwd.json" 2>&1 | keep >> "$log"
echo "=== bench-tc rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^backward|^===|FAIL|rror|verification failures' "$log" | cut -c1-300 | tail -30
