#!/usr/bin/env bash
# Session 13's H200 run (one device command, ~5 min after a cold start): nn's matmul kernels
# alone (the SIMT kernel now prefetches the next K step into registers and alternates two
# staging buffers), robust and with Dawn's disable_robustness; the TransformerBlock step f32 /
# f16 with a GPU timeline (--profile), robust and not; PyTorch's block in the same command;
# GPT-2 small's training step and 8K decoding (bench-gpt) on the new kernels.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-s13.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
keep() { grep -v -E 'deprecated builtin|subgroupMatrix|^ *\^|warning|Compilation log|generated while|^\s*$|native engine unavailable|garbage-collected|^window|^verify' | cut -c1-400; }
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv >> "$log" 2>&1
# A warm-up so the first rows are not timed while the SM clock ramps from idle.
timeout 60 bash .gpu/run.sh .gpu/app/bench-matmul.mjs --reps 2 > /dev/null 2>&1
for r in robust norobust; do
  extra=""; [ "$r" = norobust ] && extra=disable_robustness
  echo "=== bench-matmul $r" >> "$log"
  EXTRA_DAWN_TOGGLES=$extra timeout 120 bash .gpu/run.sh .gpu/app/bench-matmul.mjs --reps 10 \
    --out "$out/matmul-$r.json" 2>&1 | keep >> "$log"
  echo "=== bench-nn-block $r" >> "$log"
  EXTRA_DAWN_TOGGLES=$extra timeout 120 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs \
    --dtypes f32,f16,f32,f16 --steps 10 --warmup 3 --profile --out "$out/nn-block-$r.json" 2>&1 |
    keep >> "$log"
done
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 10 --warmup 3 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
echo "=== bench-gpt training + generation at 8K" >> "$log"
timeout 150 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --contexts 8192 --gen-tokens 100,2 \
  --out "$out/gpt-train.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||timeline|profile:|^  +[0-9.]+ ms|^===|torch' "$log" | tail -c 11000
