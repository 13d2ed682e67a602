#!/usr/bin/env bash
# Session 16's fifth GLA call (~2 min warm): 16-byte stores of A, the states and o (o in its own dtype, no cast pass)
# (run 4: the base cost of each pass was mostly its 4-byte stores), verified (bench-gla, float64,
# poisoned outputs), timed at T 2048 / 8192 (f16, unquantized), and --diag at T 8192 again.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 400):
#   bash benchmarks/gpu/h200-s16e.sh
source "$(dirname "$0")/h200-prelude.sh"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 150 bash .gpu/run.sh .gpu/app/bench-gla.mjs \
  --shapes "4,16,2048,128,128;4,16,8192,128,128" --dtype f16 --repeats 10 --warmup-ms 2000 --tc off \
  --out "$out/gla.json" 2>&1 | keep >> "$log"
echo "=== bench-gla rc=${PIPESTATUS[0]}" >> "$log"
sets="-;scores:compute;scores:fetch;states:compute;states:fetch;states:hs;output:compute;output:fetch;states:sr64;states:sr16"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 100 bash .gpu/run.sh .gpu/app/bench-gla.mjs \
  --shapes "4,16,8192,128,128" --dtype f16 --warmup-ms 500 --diag "$sets" --out "$out/diag.json" 2>&1 | keep >> "$log"
echo "=== diag rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify|diag|^===|Error|"forward_passes_ms"' "$log" | sed 's/"backward_passes_ms.*//' | cut -c1-500
