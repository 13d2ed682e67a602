#!/usr/bin/env bash
# Session 28, issue 20 item 5, second run: split-f16 with its range guard (a value split-f16
# cannot take makes the SIMT kernel, queued after the tensor-core one, overwrite o and lse) and
# the automatic route for f32 (tensorCores unset: split-f16 at D = Dv = 128, >= 4096 rows).
# 1. the 11 verification cases vs float64 at f32's 1e-5, outputs poisoned (the default route);
# 2. --range-check: in range the tensor cores' bits; 1e5 in k, -7e4 in v, NaN in q: SIMT's bits;
# 3. the table at (4, 16, 4096, 128) and (2, 16, 8192, 128), causal and not: split-f16, auto, SIMT;
# 4. PyTorch SDPA forward on the same shapes (mem-efficient fp32, flash fp16, cuDNN bf16).
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app &&
#   bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/torch_sdpa.py
# Run (device tool, carry [".gpu"], timeout_s 420): bash benchmarks/gpu/h200-s28b.sh
source "$(dirname "$0")/h200-prelude.sh"
tc() { local name=$1 limit=$2; shift 2
  timeout "$limit" bash .gpu/run.sh .gpu/app/bench-tc.mjs --dtype f32 "$@" --out "$out/$name.json" 2>&1 | keep >> "$log"
  echo "=== $name rc=${PIPESTATUS[0]}" >> "$log"; }
tc verify-range-f32 120 --skip-table --skip-variants --range-check
tc table-f32 150 --skip-verify --skip-variants --impls 'split-f16 f32,auto f32,simt f32' --skip-backward --repeats 5 \
  --shapes '[[4,16,4096,128],[2,16,8192,128]]'
timeout 100 python3 .gpu/app/torch_sdpa.py --shapes "4,16,4096,128;2,16,8192,128" --forward-only --out "$out/torch.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
grep -E '^ok|^FAIL|^table|===|rror|verification|TFLOP' "$log" | cut -c1-300 | tail -80
