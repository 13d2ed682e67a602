#!/usr/bin/env bash
# Session 16's last GLA call (~3 min warm): the final kernels (two register sets in the state
# pass) with both variants (SIMT default, --tc) verified (bench-gla: float64, poisoned
# outputs), then the table at B 4, H 16, K = V = 128, T 256 .. 8192 (f16, unquantized) beside
# our causal FA2 (the crossover), --diag of the state pass's register sets at T 8192, and
# PyTorch SDPA causal at the same shapes.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 500):
#   bash benchmarks/gpu/h200-s16f.sh
source "$(dirname "$0")/h200-prelude.sh"
shapes="4,16,256,128,128;4,16,512,128,128;4,16,1024,128,128;4,16,2048,128,128;4,16,8192,128,128"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 260 bash .gpu/run.sh .gpu/app/bench-gla.mjs \
  --shapes "$shapes" --dtype f16 --repeats 10 --warmup-ms 2000 --tc both --out "$out/gla.json" 2>&1 |
  keep >> "$log"
echo "=== bench-gla rc=${PIPESTATUS[0]}" >> "$log"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 60 bash .gpu/run.sh .gpu/app/bench-gla.mjs \
  --shapes "4,16,8192,128,128" --dtype f16 --warmup-ms 500 --diag "-;states:oneset;-;states:oneset" \
  --out "$out/diag.json" 2>&1 | keep >> "$log"
echo "=== diag rc=${PIPESTATUS[0]}" >> "$log"
timeout 60 python3 .gpu/app/torch_sdpa.py --shapes "4,16,256,128;4,16,512,128;4,16,1024,128;4,16,2048,128;4,16,8192,128" \
  --out "$out/torch-gla.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
grep -E '^\||^verify|^===|failed|FAIL|Error|diag|forward .*causal=True' "$log" | cut -c1-300
