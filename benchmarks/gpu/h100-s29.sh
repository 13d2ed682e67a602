#!/usr/bin/env bash
# Session 29, first device command (for the lent H100 or the H200; session 29 got no device: the
# H200 was refused, then no machine was lent at all, so it has not run yet).
# Issue 20's item 8 table in one device command with the final code (split-f16 as the f32 default
# since session 28; its guard at 32768), verification first:
# 1. bench-tc's 13 random cases at f32's 1e-5 (new: 'peaked scores', 'small V': do the tensor cores
#    keep subnormal halves?) and --range-check (the guard's 32768 threshold on a GPU);
# 2. the table at the issue's three shapes, causal and not: tc f16, split-f16 f32, SIMT f32 and f16,
#    forward and backward (split-f16 has no backward: f32 backward is SIMT);
# 3. split-f16 tile variants at (16, 16, 1024, 64);
# 4. PyTorch SDPA (flash fp16, cuDNN bf16, mem-efficient fp32) forward and backward, same command.
# Pack: as h200-s29.sh (bench-tc, torch_sdpa.py). Run (carry [".gpu"], timeout_s 590):
#   bash benchmarks/gpu/h100-s29.sh
source "$(dirname "$0")/h200-prelude.sh"
tc() { local name=$1 limit=$2; shift 2
  timeout "$limit" bash .gpu/run.sh .gpu/app/bench-tc.mjs "$@" --out "$out/$name.json" 2>&1 | keep >> "$log"
  echo "=== $name rc=${PIPESTATUS[0]}" >> "$log"; }
tc verify-range-f32 110 --dtype f32 --skip-table --skip-variants --range-check
tc table 230 --skip-verify --skip-variants --impls 'tc f16,split-f16 f32,simt f32,simt f16' --repeats 5
tc variants-d64 50 --dtype f32 --skip-verify --skip-table --repeats 5 --variant-shape 16,16,1024,64 \
  --variants '[{},{"subgroups":4,"keyMatrices":2},{"subgroups":4,"keyMatrices":1}]'
timeout 150 python3 .gpu/app/torch_sdpa.py --repeats 5 --out "$out/torch.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
grep -E '^ok|^FAIL|^table|^variant|===|rror|verification|TFLOP' "$log" | cut -c1-260 | tail -90
