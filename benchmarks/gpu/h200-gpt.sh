#!/usr/bin/env bash
# Issue 17 items 4-5 on the H200, one device command: bench-gpt (@attnkit/gpt on nn's webgpu
# backend, GPT-2 small's shape: 12 layers, 12 heads, 768 wide, context 1024, vocab 50257):
# the training step (forward + backward + AdamW) with FlashAttention-2 vs standard attention
# (N x N scores through nn's matmul / softmax, same backend) and the WebGPU pool's peak bytes
# of each; generation tokens/s with the KV cache vs recomputing the prefix at context 1K and 8K.
# A small-shape check (flash vs standard vs ts) runs first. Output under $OUT: log.txt, gpt.json.
# Pack:
#   node benchmarks/gpu/build.mjs && rm -rf .gpu && bash ../shared/gpu/pack.sh \
#     benchmarks/gpu/dist/bench-gpt.mjs
# Run: bash benchmarks/gpu/h200-gpt.sh   (carry [".gpu"], timeout_s 600). Env: GPT_SHAPE
# (L,H,C,T; default 12,12,768,1024), GPT_BATCH (default 8), GPT_CONTEXTS (default 1024,8192),
# GPT_ARGS (extra bench-gpt flags, e.g. "--skip generate"), GPT_TIMEOUT (seconds, default 500).
# Here (llvmpipe): GPT_SHAPE=2,2,32,64 GPT_BATCH=2 GPT_CONTEXTS=64,128 \
#   GPT_ARGS="--vocab 65 --gen-tokens 8,3" bash benchmarks/gpu/h200-gpt.sh (with node for .gpu/run.sh:
#   node benchmarks/gpu/dist/bench-gpt.mjs takes the same flags).
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
timeout 20 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,memory.used,driver_version --format=csv >> "$log" 2>&1
echo "=== bench-gpt" >> "$log"
s=$SECONDS
# shellcheck disable=SC2086
timeout "${GPT_TIMEOUT:-500}" bash .gpu/run.sh .gpu/app/bench-gpt.mjs --shape "${GPT_SHAPE:-12,12,768,1024}" \
  --batch "${GPT_BATCH:-8}" --contexts "${GPT_CONTEXTS:-1024,8192}" --steps 5 --warmup 2 \
  --out "$out/gpt.json" ${GPT_ARGS:-} 2>&1 | grep -v 'deprecated builtin' | cut -c1-600 >> "$log"
echo "=== bench-gpt rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
timeout 20 nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv >> "$log" 2>&1
