#!/usr/bin/env bash
# Session 14's third H200 run: the TransformerBlock step at steady clocks (bench-nn-block now
# warms up at least 1.5 s per variant: run 2 showed the slow first steps ran at 345-600 MHz),
# robust (the default) and with Dawn's disable_robustness (createWebGpuContext({ robustness:
# false })), clocks sampled; PyTorch's block in the same command.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 400):
#   bash benchmarks/gpu/h200-s14c.sh
source "$(dirname "$0")/h200-prelude.sh"
nvidia-smi --query-gpu=timestamp,pstate,clocks.sm,clocks.mem,power.draw,utilization.gpu,temperature.gpu \
  --format=csv -lms 100 > "$out/clocks.csv" 2>&1 &
smi=$!
for r in robust norobust; do
  extra=""; [ "$r" = norobust ] && extra=disable_robustness
  echo "=== bench-nn-block $r" >> "$log"
  EXTRA_DAWN_TOGGLES=$extra timeout 150 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs \
    --dtypes f32,f16,f32,f16 --steps 20 --warmup 3 --warmup-ms 1500 --out "$out/nn-block-$r.json" 2>&1 |
    keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]}" >> "$log"
done
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 20 --warmup 5 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
kill $smi 2>/dev/null
grep -E '^\||^verify.*again|^===|torch' "$log" | tail -c 6000
