#!/usr/bin/env bash
# Issue 11 on the H200, one device command: the int8 subgroup-matrix probe (how i8 matrices are
# addressed, exactness, int8 GEMM TOPS), then bench-sage (verification of the int8 tensor-core
# and portable Sage kernels vs the TS spec and float64 with poisoned outputs, then the table at
# (4, 32, 4096/8192, 128) causal and not, beside our FA2 f16 kernels), then PyTorch SDPA forward
# on the same shapes. Output under $OUT: log.txt, sage.json, torch-sage.json.
# Pack: node benchmarks/gpu/build.mjs &&
#   bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-sage.mjs benchmarks/gpu/torch_sdpa.py benchmarks/gpu/probe-i8-gemm.mjs
# Env: SAGE_ARGS (extra bench-sage flags), SKIP_PROBE=1, SKIP_TORCH=1.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,driver_version --format=csv >> "$log" 2>&1
if [ -z "${SKIP_PROBE:-}" ]; then
  echo "=== probe-i8-gemm i8" >> "$log"
  timeout 90 bash .gpu/run.sh .gpu/app/probe-i8-gemm.mjs 4096 4x4,2x2,2x4 i8 2>&1 | grep -v deprecated | grep -E 'CHECK|RESULT|configs|error|stop' | cut -c1-400 >> "$log"
  echo "=== probe-i8-gemm u8" >> "$log"
  timeout 60 bash .gpu/run.sh .gpu/app/probe-i8-gemm.mjs 4096 4x4,2x2 u8 2>&1 | grep -v deprecated | grep -E 'CHECK|RESULT|error|stop' | cut -c1-400 >> "$log"
fi
echo "=== bench-sage" >> "$log"
s=$SECONDS
# shellcheck disable=SC2086
timeout 300 bash .gpu/run.sh .gpu/app/bench-sage.mjs --out "$out/sage.json" ${SAGE_ARGS:-} 2>&1 |
  grep -v 'deprecated builtin' | grep -E '^(adapter|ok|FAIL|row|table|verification|failures|\[)|rror|TOPS' | cut -c1-600 >> "$log"
echo "=== bench-sage rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
if [ -z "${SKIP_TORCH:-}" ]; then
  echo "=== torch" >> "$log"
  timeout 120 python3 .gpu/app/torch_sdpa.py --shapes "4,32,4096,128;4,32,8192,128" --forward-only --out "$out/torch-sage.json" >> "$log" 2>&1
  echo "=== torch rc=$?" >> "$log"
fi
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv >> "$log" 2>&1
