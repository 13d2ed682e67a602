#!/usr/bin/env bash
# For the next session with an H200 (issue 20 item 5 on the issue's device; session 28 verified
# and timed the final split-f16 code on the lent H100 only, the H200 being refused):
# Since the device runs of session 28 (review, llvmpipe-tested only): the guard's threshold is
# 32768 (lo = (x - hi) 2^11 overflows f16 from there). bench-tc's cases 11 and 12 probe
# split-f16's edges: very peaked scores (P's subnormal his) and a V of std 1e-5 (q/k/v's): they
# show whether the tensor cores keep or flush subnormal halves.
# 1. h200-s28b.sh's steps: the 13 cases at 1e-5, the range guard, the table at (4, 16, 4096, 128)
#    and (2, 16, 8192, 128) with the automatic route, PyTorch SDPA forward beside it;
# 2. split-f16 tile variants at (16, 16, 1024, 64), where the 8 x 1 default ran 0.89x SIMT f32
#    (H100): 8 x 1, 4 x 2, 4 x 1;
# 3. Sage's f16 engine at (4, 32, 8192, 128) causal on the H200 (session 28 had it on the H100).
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app &&
#   bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/dist/bench-sage.mjs benchmarks/gpu/torch_sdpa.py
#   (then rm -f .gpu/node_modules/webgpu/dist/linux-x64/dawn.node: the .xz travels)
# Run (device tool, carry [".gpu"], timeout_s 590): bash benchmarks/gpu/h200-s29.sh
source "$(dirname "$0")/h200-prelude.sh"
tc() { local name=$1 limit=$2; shift 2
  timeout "$limit" bash .gpu/run.sh .gpu/app/bench-tc.mjs --dtype f32 "$@" --out "$out/$name.json" 2>&1 | keep >> "$log"
  echo "=== $name rc=${PIPESTATUS[0]}" >> "$log"; }
tc verify-range-f32 120 --skip-table --skip-variants --range-check
tc table-f32 150 --skip-verify --skip-variants --impls 'split-f16 f32,auto f32,simt f32' --skip-backward --repeats 5 \
  --shapes '[[4,16,4096,128],[2,16,8192,128]]'
tc variants-d64 60 --skip-verify --skip-table --repeats 5 --variant-shape 16,16,1024,64 \
  --variants '[{},{"subgroups":4,"keyMatrices":2},{"subgroups":4,"keyMatrices":1}]'
timeout 100 python3 .gpu/app/torch_sdpa.py --shapes "4,16,4096,128;2,16,8192,128" --forward-only --out "$out/torch.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
grep -E '^ok|^FAIL|^table|^variant|===|rror|verification|TFLOP' "$log" | cut -c1-300 | tail -80
timeout 150 bash .gpu/run.sh .gpu/app/bench-sage.mjs --skip-verify --skip-i8 --f16-subgroups 4 --causal true \
  --shapes '4,32,8192,128' --repeats 5 --out "$out/sage-8192-causal.json" 2>&1 |
  grep -v 'deprecated builtin' | grep -E '^(ok|FAIL|row|table|verification|failures|\[)|rror|TOPS' | cut -c1-600 >> "$log"
echo "=== bench-sage causal rc=${PIPESTATUS[0]}" >> "$log"
tail -5 "$log" | cut -c1-600
