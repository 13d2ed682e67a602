#!/usr/bin/env bash
# Session 25's second device command (one call, under 600 s): bench-gpt's training step at
# GPT-2 small for GptConfig.attention's variants (flash, standard, sigmoid, gla; f16 parameters,
# vocab 50304 so the tied head takes nn's tensor-core matmul), then GPT-2 small
# generation with sigmoid attention (the WGSL decode kernel's pointwise weights, first time on a
# GPU) at 1K and 8K, then the character model trained on webgpu with --attention gla (500 steps).
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh \
#   benchmarks/gpu/dist/bench-gpt.mjs benchmarks/gpu/dist/attnkit-gpt.mjs ../shared/data/tinyshakespeare.txt
# Run (device tool, carry [".gpu"], timeout_s 590): bash benchmarks/gpu/h200-s25c.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,driver_version --format=csv >> "$log" 2>&1
s=$SECONDS
timeout 260 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip generate --dtype f16 --vocab 50304 \
  --attentions flash,standard,sigmoid,gla --steps 4 --warmup 2 --out "$out/gpt-train.json" 2>&1 |
  grep -v 'deprecated builtin' | cut -c1-600 >> "$log"
echo "=== bench-gpt train rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
s=$SECONDS
timeout 170 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --gen-attention sigmoid \
  --contexts 1024,8192 --gen-tokens 32,4 --out "$out/gpt-generate-sigmoid.json" 2>&1 |
  grep -v 'deprecated builtin' | cut -c1-600 >> "$log"
echo "=== bench-gpt generate sigmoid rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
s=$SECONDS
timeout 120 bash .gpu/run.sh .gpu/app/attnkit-gpt.mjs train --data .gpu/app/tinyshakespeare.txt \
  --backend webgpu --config small --attention gla --steps 500 --batch-size 32 --lr 2e-3 \
  --eval-interval 100 --eval-iters 20 --seed 1337 --out "$out/small-gla.safetensors" 2>&1 |
  grep -v 'deprecated builtin' | tr '\r' '\n' | grep -E 'step|train:|rror' | cut -c1-400 > "$out/train-gla.txt"
echo "=== train gla rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
grep -E '^\||^Generation|^GPT|===|verify' "$log" | cut -c1-300
tail -n 3 "$out/train-gla.txt"
