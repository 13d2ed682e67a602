#!/usr/bin/env bash
# Tensor-core forward (issue 20): verification of the staging layouts and tuning options on
# three-to-ten random cases, then tile/option variants timed at (4, 16, 4096, 128) f16 beside
# SIMT f16, all in one device command; logs under $OUT. The shuffle variants run last in their
# own processes (subgroup arithmetic beside subgroup matrices is reported to crash NVIDIA's
# pipeline creation). Pack: node benchmarks/gpu/build.mjs &&
# bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
T='"subgroups":4,"keyMatrices":2,"lazy":8'
TUNED="$T,\"fused\":true,\"pad\":8,\"swizzle\":true,\"qRegs\":true"
run() { # name timeout args...
  local name=$1 t=$2; shift 2
  timeout "$t" bash .gpu/run.sh .gpu/app/bench-tc.mjs "$@" --out "$out/$name.json" 2>&1 |
    grep -v 'deprecated builtin' | cut -c1-400 > "$out/$name-log.txt"
  echo "$name rc=${PIPESTATUS[0]}" >> "$out/steps-log.txt"
}
run verify 150 --skip-table --skip-variants \
  --verify-variants "[{\"kvLayout\":\"parity\"},{\"kvLayout\":\"split\"},{$T,\"pad\":8,\"swizzle\":true},{$TUNED},{$TUNED,\"narrow\":true},{\"subgroups\":2,\"keyMatrices\":4,\"lazy\":8,\"pad\":8,\"swizzle\":true,\"qRegs\":true}]"
run variants 200 --skip-table --cases 0 --repeats 7 \
  --variants "[{$T},{$T,\"pad\":8},{$T,\"pad\":8,\"swizzle\":true},{$T,\"fused\":true,\"pad\":8,\"swizzle\":true},{$TUNED},{$TUNED,\"narrow\":true},{\"subgroups\":2,\"keyMatrices\":4,\"lazy\":8,\"pad\":8,\"swizzle\":true,\"qRegs\":true},{\"subgroups\":4,\"keyMatrices\":1,\"lazy\":8,\"fused\":true,\"pad\":8,\"swizzle\":true,\"qRegs\":true},{\"subgroups\":2,\"keyMatrices\":2,\"lazy\":8,\"fused\":true,\"pad\":8,\"swizzle\":true,\"qRegs\":true},{$TUNED,\"lazy\":0}]"
run shuffle 90 --skip-table --cases 0,2,5 --repeats 7 \
  --verify-variants "[{$TUNED,\"shuffle\":true}]"
run shuffle-time 90 --skip-table --cases 0 --repeats 7 --variants "[{$TUNED,\"shuffle\":true}]"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv > "$out/gpu-log.txt" 2>&1
