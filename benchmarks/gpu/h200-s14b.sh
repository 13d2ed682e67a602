#!/usr/bin/env bash
# Session 14's second H200 run: why some block steps take 2-4x the steady time (run 1: phases
# of 30-50 ms steps between 11-12 ms ones, in every f16 variant). nvidia-smi samples clocks,
# power and utilisation every 100 ms while bench-nn-block runs 30 steps a variant (each step's
# wall-clock start and pool creations in the JSON, to line up); a GPU timeline of one f16 step
# (--profile); PyTorch's block; then GPT-2 small generation alone at 1K and 8K.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-s14b.sh
source "$(dirname "$0")/h200-prelude.sh"
nvidia-smi --query-gpu=timestamp,pstate,clocks.sm,clocks.mem,power.draw,utilization.gpu,temperature.gpu \
  --format=csv -lms 100 > "$out/clocks.csv" 2>&1 &
smi=$!
echo "=== bench-nn-block (clock samples in clocks.csv)" >> "$log"
timeout 240 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs --dtypes f16,f16-async,f32,f16,f16-direct \
  --steps 30 --warmup 3 --profile --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 10 --warmup 3 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
kill $smi 2>/dev/null
echo "=== bench-gpt generation at 1K and 8K" >> "$log"
timeout 150 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 1024,8192 \
  --gen-tokens 100,2 --out "$out/gpt-gen.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify.*again|^===|torch|faster|failed|Error|timeline|profile:' "$log" | tail -c 9000
