#!/usr/bin/env bash
# Issue 17 items 4-5 on the H200, one device command: bench-gpt (@attnkit/gpt on nn's webgpu
# backend, GPT-2 small's shape: 12 layers, 12 heads, 768 wide, context 1024, vocab 50257):
# the training step (forward + backward + AdamW) with FlashAttention-2 vs standard attention
# (N x N scores through nn's matmul / softmax, same backend) and the WebGPU pool's peak bytes
# of each; generation tokens/s with the KV cache vs recomputing the prefix at context 1K and 8K.
# A small-shape check (flash vs standard vs ts) runs first. Then item 4's webgpu half: the
# attnkit-gpt CLI trains the ~1M-parameter character model (--config small) on Tiny Shakespeare
# with the CPU run's flags (val loss, tokens/s, loss curve) and samples from it.
# Output under $OUT: log.txt, gpt.json, small-webgpu.{safetensors,svg}, train-webgpu.txt,
# sample-webgpu.txt.
# Pack:
#   node benchmarks/gpu/build.mjs && rm -rf .gpu && bash ../shared/gpu/pack.sh \
#     benchmarks/gpu/dist/bench-gpt.mjs benchmarks/gpu/dist/attnkit-gpt.mjs \
#     ../shared/data/tinyshakespeare.txt
# Run: bash benchmarks/gpu/h200-gpt.sh   (carry [".gpu"], timeout_s 600). Env: GPT_SHAPE
# (L,H,C,T; default 12,12,768,1024), GPT_BATCH (default 8), GPT_CONTEXTS (default 1024,8192),
# GPT_ARGS (extra bench-gpt flags, e.g. "--skip generate"), GPT_TIMEOUT (seconds, default 320),
# TRAIN_STEPS (default 2400), TRAIN_TIMEOUT (default 180), SKIP_TRAIN=1; the timeouts together
# stay under the device call's 600 s.
# Here (llvmpipe), the bench alone: node benchmarks/gpu/dist/bench-gpt.mjs --shape 2,2,32,64 \
#   --vocab 65 --batch 2 --contexts 64,128 --gen-tokens 8,3
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,memory.used,driver_version --format=csv >> "$log" 2>&1
echo "=== bench-gpt" >> "$log"
s=$SECONDS
# shellcheck disable=SC2086
timeout "${GPT_TIMEOUT:-320}" bash .gpu/run.sh .gpu/app/bench-gpt.mjs --shape "${GPT_SHAPE:-12,12,768,1024}" \
  --batch "${GPT_BATCH:-8}" --contexts "${GPT_CONTEXTS:-1024,8192}" --steps 5 --warmup 2 \
  --out "$out/gpt.json" ${GPT_ARGS:-} 2>&1 | grep -v 'deprecated builtin' | cut -c1-600 >> "$log"
echo "=== bench-gpt rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  echo "=== attnkit-gpt train --backend webgpu --config small" >> "$log"
  s=$SECONDS
  # A checkpoint and the loss curve are written at every evaluation: a run cut by the timeout
  # still leaves its last one.
  timeout "${TRAIN_TIMEOUT:-180}" bash .gpu/run.sh .gpu/app/attnkit-gpt.mjs train \
    --data .gpu/app/tinyshakespeare.txt --backend webgpu --config small --steps "${TRAIN_STEPS:-2400}" \
    --batch-size 32 --lr 2e-3 --eval-interval 200 --eval-iters 20 \
    --out "$out/small-webgpu.safetensors" 2>&1 | grep -v 'deprecated builtin' | cut -c1-600 |
    tee "$out/train-webgpu.txt" >> "$log"
  echo "=== train rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
  timeout 40 bash .gpu/run.sh .gpu/app/attnkit-gpt.mjs sample --backend webgpu \
    --ckpt "$out/small-webgpu.safetensors" --prompt "ROMEO:" --tokens 300 --seed 1 \
    > "$out/sample-webgpu.txt" 2>> "$log"
  echo "=== sample rc=$?" >> "$log"
fi
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv >> "$log" 2>&1
