#!/usr/bin/env bash
# Session 18, call 3 (issue 20 item 8): the new defaults (forward: constOffsets, regSoftmax,
# qRegs, batchLoads; backward: constOffsets, batchLoads) verified first on bench-tc's 11 random
# cases against float64 with poisoned outputs (f16 forward, split-f16 forward, backward default
# and with split dK/dV), then the issue's table (forward and backward TFLOP/s at three shapes,
# causal and not: tensor cores f16, split-f16 f32, SIMT f32 / f16) and PyTorch SDPA (flash fp16,
# cuDNN bf16, mem-efficient fp32) in the same command. Robust access (the default).
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh \
#   benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/torch_sdpa.py benchmarks/gpu/h200-tc.sh
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s18c.sh
STAGES="verify table torch" VERIFY='[{}]' BWD_VARIANTS='[{"dkdv":{"split":true}}]' \
  bash "$(dirname "$0")/h200-tc.sh"
grep -E '^(table|FAIL)|^=== |verification failures|rror' "${OUT:-/tmp/out}/log.txt" | cut -c1-250 | tail -70
