#!/usr/bin/env bash
# Session 24 (written then, not run: no device was lent). The next session's first device command.
# 1. Issue 20 item 5: what the f16 x f16 -> f32 subgroup-matrix MMA computes, bit by bit
#    (bench-tc-numerics: single products, accumulation onto C, crafted bit cases, K = 4096
#    chains, Sage's integer codes, and split-f16's own sums with the accumulator flushed every
#    16 .. 4096 keys). It decides whether a split-f16 kernel can meet the f32 tolerance, at which
#    flush interval, and whether the f16 matrices give Sage's integers exactly. Seconds.
#    $out/numerics.txt, numerics.json.
# 2. Issue 11: Sage on the f16 tensor-core engine (sage/tensor-cores-f16.ts), verified against the
#    TS spec and float64 on bench-sage's 5 cases (poisoned outputs), then timed at (4, 32, 4096 /
#    8192, 128) causal and not beside the portable kernel, our FA2 f16 kernels and PyTorch SDPA
#    (h200-sage.sh without the int8 probe and the int8 kernel, whose numbers are session 18's).
#    $out/log.txt, sage.json, torch-sage.json.
# Then, as the second command: bash benchmarks/gpu/h200-s23b.sh (session 23's final tensor-core
# defaults verified and re-timed).
# Pack (all three): node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh \
#   benchmarks/gpu/dist/bench-tc-numerics.mjs benchmarks/gpu/dist/bench-sage.mjs \
#   benchmarks/gpu/torch_sdpa.py benchmarks/gpu/dist/bench-tc.mjs
# Run (device tool, carry [".gpu"], timeout_s 560): bash benchmarks/gpu/h200-s24.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
s=$SECONDS
timeout 90 bash .gpu/run.sh .gpu/app/bench-tc-numerics.mjs --out "$out/numerics.json" 2>&1 |
  grep -v -E 'deprecated builtin|subgroupMatrix|^ *\^|warning|^\s*$' | cut -c1-400 > "$out/numerics.txt"
echo "=== numerics rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$out/numerics.txt"
SKIP_PROBE=1 SAGE_ARGS="--skip-i8 --f16-subgroups 4,2" bash "$(dirname "$0")/h200-sage.sh"
grep -E 'RESULT|harness|===' "$out/numerics.txt" | cut -c1-330
grep -E '^(FAIL|verification|failures|\[)|===|rc=' "$out/log.txt" | cut -c1-330 | tail -30
