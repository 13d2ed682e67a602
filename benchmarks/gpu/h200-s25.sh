#!/usr/bin/env bash
# Session 25 (written then, not run: no device was lent). Issue 17 item 1's attention variants
# on the H200, one device command after h200-s24.sh / h200-s23b.sh:
# 1. bench-gpt's training step at GPT-2 small's shape (12 x 768, context 1024, batch 8, f16
#    parameters, vocab 50304 so the tied head takes nn's tensor-core matmul) for each of
#    GptConfig.attention's variants: flash, standard, sigmoid (FlashSigmoid) and gla (gated linear
#    attention layers); the small-shape flash / standard / ts check runs first. $out/log.txt,
#    gpt.json.
# 2. attnkit-gpt trains the ~1M-parameter character model on webgpu with --attention sigmoid and
#    gla, the CPU comparison's flags (500 steps; apps/gpt/README.md "The attention variants"):
#    val loss and tokens/s beside the CPU's. $out/train-{sigmoid,gla}.txt.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu && bash ../shared/gpu/pack.sh \
#   benchmarks/gpu/dist/bench-gpt.mjs benchmarks/gpu/dist/attnkit-gpt.mjs \
#   ../shared/data/tinyshakespeare.txt
# Run (device tool, carry [".gpu"], timeout_s 590): bash benchmarks/gpu/h200-s25.sh
# Here (llvmpipe), the bench alone: EGL_PLATFORM=surfaceless node benchmarks/gpu/dist/bench-gpt.mjs \
#   --shape 2,2,32,64 --vocab 65 --batch 2 --contexts 64 --skip generate \
#   --attentions flash,standard,sigmoid,gla --steps 2 --warmup 1
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,driver_version --format=csv >> "$log" 2>&1
s=$SECONDS
timeout 330 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip generate --dtype f16 --vocab 50304 \
  --attentions flash,standard,sigmoid,gla --out "$out/gpt.json" 2>&1 |
  grep -v 'deprecated builtin' | cut -c1-600 >> "$log"
echo "=== bench-gpt rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
for a in sigmoid gla; do
  s=$SECONDS
  timeout 100 bash .gpu/run.sh .gpu/app/attnkit-gpt.mjs train --data .gpu/app/tinyshakespeare.txt \
    --backend webgpu --config small --attention "$a" --steps 500 --batch-size 32 --lr 2e-3 \
    --eval-interval 100 --eval-iters 20 --seed 1337 --out "$out/small-$a.safetensors" 2>&1 |
    grep -v 'deprecated builtin' | tr '\r' '\n' | grep -E 'step|train:|Error' | cut -c1-400 > "$out/train-$a.txt"
  echo "=== train $a rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
done
grep -E '^\|' "$log" | head -12
tail -n 3 "$out"/train-*.txt
