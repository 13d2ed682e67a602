#!/usr/bin/env bash
# Session 32, issue 11 item 7 in one device command: PyTorch SDPA forward (flash fp16, cuDNN bf16,
# mem-efficient fp32) at (4, 32, 4096, 128) and (4, 32, 8192, 128), then bench-sage at both shapes,
# causal and not, in one process: verification first (small random shapes against the TS spec
# and float64; the int8 kernel left out: it is opt-in and slow), then Sage's default GPU kernel
# (the f16 tensor-core engine, 4 subgroups; its O checked row by row against the portable
# kernel's at each shape), the GPU pre-pass timed on its own, the portable dot4I8Packed kernel,
# and our FA2 forwards on the same values: tensor-core f16, SIMT f16 and SIMT f32.
# Pack: bash benchmarks/gpu/pack-s32.sh. Run (carry [".gpu"], timeout_s 590): bash benchmarks/gpu/h200-s32-sage.sh
source "$(dirname "$0")/h200-prelude.sh"
step torch 90 python3 .gpu/app/torch_sdpa.py --shapes "4,32,4096,128;4,32,8192,128" --forward-only \
  --repeats 5 --out "$out/torch-sage.json"
step sage 470 bash .gpu/run.sh .gpu/app/bench-sage.mjs --skip-i8 --f16-subgroups 4 \
  --shapes '4,32,4096,128;4,32,8192,128' --repeats 5 --out "$out/sage.json"
grep -E '^ok|^FAIL|^table|^\[|^rows|^---|===|rror|verification|failures|TFLOP|TOPS' "$log" | cut -c1-300 | tail -c 11000
