#!/usr/bin/env bash
# Session 13's second H200 run (one device command, ~5 min after a cold start): nn's matmul
# kernels timed by span (bench-matmul), the TransformerBlock step with and without the early
# submit (variant suffix -late) robust, then f32 / f16 with disable_robustness, PyTorch's block,
# GPT-2 small decoding in a fresh process (the uniform / bind-group cache) and its training step.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-s13b.sh
# (Run record: the -late variant, nn's submitEarly option, was removed after run 4 measured no gain.)
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
keep() { grep -v -E 'deprecated builtin|subgroupMatrix|^ *\^|warning|Compilation log|generated while|^\s*$|native engine unavailable|garbage-collected|^window|^verify' | cut -c1-400; }
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv >> "$log" 2>&1
timeout 60 bash .gpu/run.sh .gpu/app/bench-matmul.mjs --reps 2 > /dev/null 2>&1
echo "=== bench-matmul" >> "$log"
timeout 120 bash .gpu/run.sh .gpu/app/bench-matmul.mjs --reps 10 --out "$out/matmul.json" 2>&1 |
  keep >> "$log"
echo "=== bench-nn-block robust, early submit vs -late" >> "$log"
timeout 150 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs \
  --dtypes f32,f32-late,f16,f16-late,f32,f32-late,f16,f16-late --steps 10 --warmup 3 --profile \
  --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== bench-nn-block disable_robustness" >> "$log"
EXTRA_DAWN_TOGGLES=disable_robustness timeout 100 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs \
  --dtypes f32,f16,f32,f16 --steps 10 --warmup 3 --out "$out/nn-block-norobust.json" 2>&1 |
  keep >> "$log"
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 10 --warmup 3 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
echo "=== bench-gpt generation (fresh process)" >> "$log"
timeout 120 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 1024,8192 \
  --gen-tokens 100,2 --profile --out "$out/gpt-gen.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
echo "=== bench-gpt training + generation at 8K" >> "$log"
timeout 150 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --contexts 8192 --gen-tokens 100,2 \
  --out "$out/gpt-train.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||timeline|^  +[0-9.]+ ms  after|^===|torch|decode token|flash vs' "$log" | tail -c 11000
