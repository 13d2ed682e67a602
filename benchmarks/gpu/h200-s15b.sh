#!/usr/bin/env bash
# Session 15's second H200 run (~3 min): the block step's submit schedule A/B (passes in a
# step's first command buffer: 8, the default, against 4 and 2; run 1's profiles showed the GPU
# idle 0.4-1.0 ms at the first batch boundary, waiting for the next batch's recording and
# submit), and the split-K weight gradients staged (-staged) against the new default (direct),
# each variant verified against ts first, profiled without timestamp quantization; PyTorch's
# block in the same command.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 400):
#   bash benchmarks/gpu/h200-s15b.sh
source "$(dirname "$0")/h200-prelude.sh"
echo "=== bench-nn-block" >> "$log"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 300 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs \
  --dtypes f16,f16-first4,f16-first2,f16-staged,f32,f16,f16-first4,f16-first2 --steps 20 --warmup 3 \
  --warmup-ms 1500 --profile --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 20 --warmup 5 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
grep -E '^\||^verify.*again|^===|torch|failed|Error|profile|after' "$log" | tail -c 9000
