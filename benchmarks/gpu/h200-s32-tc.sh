#!/usr/bin/env bash
# Session 32, issue 20 item 8 on the H200 (session 30 ran the table on an H100, the only kind that
# came): verification first (f16: the random cases, forward and backward, and every softmax golden; f32 through
# split-f16: the random cases with --range-check and the goldens), then the table (3 shapes,
# causal and not, tc f16, split-f16 f32, SIMT f32, SIMT f16, forward and backward) and PyTorch
# SDPA (flash fp16, cuDNN bf16, mem-efficient fp32) in the same command.
# Pack: bash benchmarks/gpu/pack-s32.sh. Run (carry [".gpu"], timeout_s 590): bash benchmarks/gpu/h200-s32-tc.sh
source "$(dirname "$0")/h200-prelude.sh"
step verify-f16 120 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --verify-backward \
  --goldens .gpu/app/goldens --out "$out/verify-f16.json"
step verify-f32 100 bash .gpu/run.sh .gpu/app/bench-tc.mjs --dtype f32 --skip-table --skip-variants \
  --range-check --goldens .gpu/app/goldens --out "$out/verify-f32.json"
step table 230 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-verify --skip-variants \
  --impls 'tc f16,split-f16 f32,simt f32,simt f16' --repeats 5 --out "$out/table.json"
step torch 120 python3 .gpu/app/torch_sdpa.py --repeats 5 --out "$out/torch.json"
grep -E '^ok|^FAIL|^table|^---|===|rror|verification|TFLOP|not ok' "$log" | cut -c1-240 | tail -c 11000
