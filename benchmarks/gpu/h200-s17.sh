#!/usr/bin/env bash
# Session 17, GLA run 1 (~4 min warm): the SIMT passes' prefetch kept as raw words and loaded
# unconditionally (converted and masked when staged; the state walk's chunk rows computed, not
# read from the table), verified (both variants: the tensor-core one shares the scores pass) and
# timed at T 2048 / 8192, then the same-process-free A/B at T 8192: the previous kernels
# (session 16's final, bench-gla-old.mjs built at e3657ad) and the new ones alternating, then
# --diag of the new passes (each pass's in-loop fetch left out: what is left exposed).
# Pack: bash benchmarks/gpu/pack-queue.sh && cp /tmp/old/bench-gla-old.mjs .gpu/app/
#   (bench-gla.mjs built at e3657ad). Run (device tool, carry [".gpu"], timeout_s 420):
#   bash benchmarks/gpu/h200-s17.sh
source "$(dirname "$0")/h200-prelude.sh"
export DISABLE_DAWN_TOGGLES=timestamp_quantization
timeout 150 bash .gpu/run.sh .gpu/app/bench-gla.mjs --shapes "4,16,2048,128,128;4,16,8192,128,128" \
  --dtype f16 --repeats 10 --warmup-ms 2000 --tc both --no-fa2 --out "$out/gla.json" 2>&1 | keep >> "$log"
echo "=== bench-gla rc=${PIPESTATUS[0]}" >> "$log"
for i in 1 2; do
  for v in old new; do
    b=.gpu/app/bench-gla.mjs; [ "$v" = old ] && b=.gpu/app/bench-gla-old.mjs
    echo "=== A/B $v $i" >> "$log"
    timeout 60 bash .gpu/run.sh "$b" --shapes "4,16,8192,128,128" --dtype f16 --repeats 10 \
      --warmup-ms 1500 --tc off --no-fa2 --skip-verify --out "$out/ab-$v-$i.json" 2>&1 | keep >> "$log"
  done
done
timeout 80 bash .gpu/run.sh .gpu/app/bench-gla.mjs --shapes "4,16,8192,128,128" --dtype f16 \
  --warmup-ms 1500 --diag "-;states:fetch;output:fetch;scores:fetch" --out "$out/diag.json" 2>&1 | keep >> "$log"
echo "=== diag rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify|^===|failed|FAIL|Error|diag' "$log" | cut -c1-300
