#!/usr/bin/env bash
# Session 20, run 4 (issue 17): (1) a same-machine A/B of the launch-uniform
# packing (new / old bundles, alternating processes, cached decoding at 8K); (2) GPT-2 small
# training steps, FA2 vs standard, f16 and f32 with the vocabulary padded to 50304 (a multiple
# of 128, as nanoGPT pads it: the tied LM head then takes nn's f16 tensor-core matmul, which
# 50257 missed).
# Pack: node benchmarks/gpu/build.mjs && python3 benchmarks/gpu/oldpack.py && rm -rf .gpu/app &&
#   bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-gpt.mjs benchmarks/gpu/dist/bench-gpt-oldpack.mjs
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s20e.sh
source "$(dirname "$0")/h200-prelude.sh"
for i in 1 2 3; do
  for b in bench-gpt bench-gpt-oldpack; do
    echo "=== $b, process $i" >> "$log"
    timeout 100 bash .gpu/run.sh .gpu/app/$b.mjs --skip train --contexts 8192 \
      --gen-tokens 100,2 --out "$out/$b-$i.json" 2>&1 | keep >> "$log"
    echo "=== rc=${PIPESTATUS[0]}" >> "$log"
  done
done
for dt in f16 f32; do
  echo "=== bench-gpt training, $dt, vocab 50304" >> "$log"
  timeout 150 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip generate --dtype $dt --vocab 50304 \
    --out "$out/gpt-train-$dt-50304.json" 2>&1 | keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]}" >> "$log"
done
grep -E '^\| |^verify|^===|Error|failed' "$log" | tail -c 9000
