#!/usr/bin/env bash
# Issue 16 item 7 on the H200, one device command: bench-nn-block (one @attnkit/nn
# TransformerBlock training step, forward + backward + AdamW, on webgpu in f32 and f16 storage,
# checked against the ts backend at a small shape first) and torch_nn_block.py (PyTorch eager
# fp32 and bf16 autocast of the same pre-norm block + AdamW) at B 8, T 1024, C 768, H 12.
# Output under $OUT: log.txt, nn-block.json, torch-nn.json.
# Pack:
#   node benchmarks/gpu/build.mjs && rm -rf .gpu && bash ../shared/gpu/pack.sh \
#     benchmarks/gpu/dist/bench-nn-block.mjs benchmarks/gpu/torch_nn_block.py
# Run: bash benchmarks/gpu/h200-nn.sh   (carry [".gpu"]). Env: NN_SHAPE (default 8,1024,768,12),
# NN_ARGS (extra bench-nn-block flags, e.g. "--dtypes f16"), NN_TIMEOUT (seconds, default 240),
# TORCH_TIMEOUT (default 90), SKIP_TORCH=1.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
shape=${NN_SHAPE:-8,1024,768,12}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,driver_version --format=csv >> "$log" 2>&1
echo "=== bench-nn-block" >> "$log"
s=$SECONDS
# shellcheck disable=SC2086
timeout "${NN_TIMEOUT:-240}" bash .gpu/run.sh .gpu/app/bench-nn-block.mjs --shape "$shape" \
  --steps 10 --warmup 3 --profile --out "$out/nn-block.json" ${NN_ARGS:-} 2>&1 |
  grep -v 'deprecated builtin' | cut -c1-600 >> "$log"
echo "=== bench-nn-block rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
[ "${SKIP_TORCH:-0}" = 1 ] && exit 0
echo "=== torch" >> "$log"
s=$SECONDS
timeout "${TORCH_TIMEOUT:-90}" python3 .gpu/app/torch_nn_block.py --shape "$shape" --steps 10 \
  --warmup 3 --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$? $((SECONDS - s)) s" >> "$log"
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv >> "$log" 2>&1
