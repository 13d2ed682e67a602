#!/usr/bin/env bash
# Session 15's H200 run (~6 min after a cold start): the TransformerBlock step after the
# reduction and copy rewrite (bias / norm-weight gradients and split-K sums by the rows kernel,
# stored in the gradient's dtype: no cast passes; permutes a 16-byte word a thread), A/B against
# split-K weight gradients on the direct tensor-core kernel (-wdirect), every variant verified
# against ts before timing, profiled without Dawn's timestamp quantization (65.536 us steps
# otherwise); PyTorch's block in the same command; GPT-2 small's training step (FA2 vs
# standard) and 8K decoding.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-s15.sh
source "$(dirname "$0")/h200-prelude.sh"
nvidia-smi --query-gpu=timestamp,pstate,clocks.sm,clocks.mem,power.draw,utilization.gpu,temperature.gpu \
  --format=csv -lms 200 > "$out/clocks.csv" 2>&1 &
smi=$!
echo "=== bench-nn-block" >> "$log"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 200 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs \
  --dtypes f16,f16-wdirect,f32,f16,f16-wdirect --steps 20 --warmup 3 --warmup-ms 1500 --profile \
  --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 20 --warmup 5 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
echo "=== bench-gpt training + generation at 8K" >> "$log"
timeout 170 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --contexts 8192 --gen-tokens 60,2 \
  --out "$out/gpt.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
kill $smi 2>/dev/null
grep -E '^\||^verify|^===|torch|faster|failed|Error|profile|^ +[0-9.]+ ms' "$log" | tail -c 11000
