#!/usr/bin/env bash
# Issue 20 on the H200, one device command: verification first (tensor-core forward f16 and
# variants, split-f16 on f32 inputs, tensor-core backward; every case vs float64 with poisoned
# outputs), then option variants timed at (4, 16, 4096, 128), then the table (forward and
# backward TFLOP/s at three shapes, causal and not: tensor-core f16, split-f16 f32, SIMT f32 and
# f16, sampled accuracy vs float64) and PyTorch SDPA on the same shapes. Output: log.txt and a
# few JSON files under $OUT (the device returns at most 8 files).
# Pack: node benchmarks/gpu/build.mjs &&
#   bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/torch_sdpa.py
# Stages to run: $STAGES (default "verify variants table torch"; also "goldens").
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
STAGES=${STAGES:-verify variants table torch}
VARIANTS=${VARIANTS:-'[{},{"smallFirst":false},{"shuffle":true},{"subgroups":4,"keyMatrices":1},{"debug":"noRoundTrip"}]'}
BWD_VARIANTS=${BWD_VARIANTS:-'[{"dq":{"lead":0},"dkdv":{"lead":0}},{"dkdv":{"split":true}}]'}
VERIFY=${VERIFY:-'[{},{"smallFirst":false},{"subgroups":4,"keyMatrices":1},{"shuffle":true}]'}
tc() { # name timeout args...
  local name=$1 t=$2; shift 2
  echo "=== $name: bench-tc $*" >> "$log"
  local s=$SECONDS
  timeout "$t" bash .gpu/run.sh .gpu/app/bench-tc.mjs "$@" --out "$out/$name.json" 2>&1 |
    grep -v 'deprecated builtin' | grep -E '^(adapter|ok|FAIL|skip|variant|table|verification)|rror' | cut -c1-400 >> "$log"
  echo "=== $name rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
}
for stage in $STAGES; do
  case $stage in
    verify)
      tc verify-f16 120 --skip-table --skip-variants --verify-variants "$VERIFY"
      tc verify-f32 60 --skip-table --skip-variants --dtype f32 --verify-variants '[{}]'
      tc verify-bwd 150 --skip-table --skip-variants --skip-verify --verify-backward \
        --backward-variants "$BWD_VARIANTS" ;;
    goldens) # pack with benchmarks/gpu/dist/goldens (a copy of ../shared/goldens/softmax*.safetensors)
      tc goldens 150 --skip-table --skip-variants --skip-verify --goldens .gpu/app/goldens ;;
    variants)
      tc variants 150 --skip-table --skip-verify --repeats 7 --variants "$VARIANTS" ;;
    table)
      tc table 300 --skip-variants --skip-verify --repeats 10 ;;
    torch)
      echo "=== torch" >> "$log"
      timeout 200 python3 .gpu/app/torch_sdpa.py --out "$out/torch.json" >> "$log" 2>&1
      echo "=== torch rc=$?" >> "$log" ;;
  esac
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,driver_version --format=csv >> "$log" 2>&1
