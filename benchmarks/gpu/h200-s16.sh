#!/usr/bin/env bash
# Session 16's GLA call (~3 min warm): chunkGla's rewritten SIMT scores / state / o passes
# verified on the H200 (bench-gla: float64 recurrence, poisoned outputs, K 32 / 48 and
# K = V = 128), then forward and forward + backward timed at B 4, H 16, K = V = 128,
# T 2048 / 8192, f16, per-pass GPU times unquantized (timestamp_quantization off), beside our
# tensor-core causal FA2 forward; PyTorch SDPA causal at the same shapes.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 400):
#   bash benchmarks/gpu/h200-s16.sh     (GLA_ARGS: extra bench-gla flags)
source "$(dirname "$0")/h200-prelude.sh"
# shellcheck disable=SC2086
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 240 bash .gpu/run.sh .gpu/app/bench-gla.mjs \
  --shapes "4,16,2048,128,128;4,16,8192,128,128" --dtype f16 --repeats 10 --warmup-ms 1000 \
  --out "$out/gla.json" ${GLA_ARGS:-} 2>&1 | keep >> "$log"
echo "=== bench-gla rc=${PIPESTATUS[0]}" >> "$log"
timeout 60 python3 .gpu/app/torch_sdpa.py --shapes "4,16,2048,128;4,16,8192,128" \
  --out "$out/torch-gla.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
grep -E '^\||^verify|^===|failed|FAIL|Error|^row|flash' "$log" | cut -c1-700 | tail -c 9000
