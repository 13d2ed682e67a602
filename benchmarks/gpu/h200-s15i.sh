#!/usr/bin/env bash
# Session 15's last H200 call (~1.5 min): the code after the review mends verified on the
# device: the block (f16, f32) against ts and a few timed steps; LeanAttention's default decode
# (512 threads, stream-K 132) verified against float64 and timed at B 1, Hkv 8, 256K.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 200):
#   bash benchmarks/gpu/h200-s15i.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 80 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs --dtypes f16,f32 --steps 10 --warmup 3 \
  --warmup-ms 1000 --steady-ms 2000 --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 60 bash .gpu/run.sh .gpu/app/bench-lean.mjs \
  --batch 1 --hkv 8 --nk 262144 --partitions streamK --repeats 5 --out "$out/lean.json" 2>&1 |
  keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify.*again|^===|failed|FAIL|Error|^ok|^1 |ceiling \(' "$log" | tail -c 5000
