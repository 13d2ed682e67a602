#!/usr/bin/env bash
# Session 16's second GLA call (~1 min warm): where the rewritten SIMT forward passes spend
# their time (bench-gla --diag: each pass with its products, its in-loop fetches or the state
# stores left out; results wrong by design, no verification), at T 8192, with robust access
# (default) and without (disable_robustness) / without workgroup zero-init; SM clocks sampled.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 300):
#   bash benchmarks/gpu/h200-s16b.sh
source "$(dirname "$0")/h200-prelude.sh"
nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu --format=csv -lms 100 > "$out/clocks.csv" 2>&1 &
smi=$!
trap 'kill $smi 2>/dev/null' EXIT
sets="-;scores:compute;scores:fetch;scores:compute,scores:fetch;states:compute;states:fetch;states:hs;states:compute,states:fetch,states:hs;output:compute;output:fetch;output:compute,output:fetch"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 120 bash .gpu/run.sh .gpu/app/bench-gla.mjs \
  --shapes "4,16,8192,128,128" --dtype f16 --warmup-ms 500 --diag "$sets" --out "$out/diag.json" 2>&1 | keep >> "$log"
echo "=== diag rc=${PIPESTATUS[0]}" >> "$log"
EXTRA_DAWN_TOGGLES=disable_robustness DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 60 bash .gpu/run.sh \
  .gpu/app/bench-gla.mjs --shapes "4,16,8192,128,128" --dtype f16 --warmup-ms 500 \
  --diag "-;output:compute;states:compute" --out "$out/diag-norobust.json" 2>&1 | sed 's/^diag/norobust diag/' | keep >> "$log"
echo "=== norobust rc=${PIPESTATUS[0]}" >> "$log"
EXTRA_DAWN_TOGGLES=disable_workgroup_init DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 60 bash .gpu/run.sh \
  .gpu/app/bench-gla.mjs --shapes "4,16,8192,128,128" --dtype f16 --warmup-ms 500 \
  --diag "-" --out "$out/diag-noinit.json" 2>&1 | sed 's/^diag/noinit diag/' | keep >> "$log"
echo "=== noinit rc=${PIPESTATUS[0]}" >> "$log"
grep -E 'diag|^===|Error' "$log" | cut -c1-400
