#!/usr/bin/env bash
# Session 15's fifth H200 run (~5 min): (1) the block step at the final code, each variant
# warmed until 5 steps agree within 10% (bench-nn-block's steady warm-up), f16 three times
# beside f32, verified against ts first, PyTorch's block before and after; (2) LeanAttention
# decode with passes of more keys than a tile (tunings u8, u16, t512u4: more K/V loads in
# flight per lane; run 4 put every layout at <= 48% of the read ceiling at 256K), verified
# against float64 first, unquantized timestamps, PyTorch SDPA decode in the same command.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-s15e.sh
source "$(dirname "$0")/h200-prelude.sh"
torch_block() {
  timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 20 --warmup 5 \
    --out "$out/torch-nn-$1.json" >> "$log" 2>&1
  echo "=== torch rc=$?" >> "$log"
}
torch_block before
echo "=== bench-nn-block" >> "$log"
timeout 220 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs \
  --dtypes f16,f32,f16,f16 --steps 20 --warmup 3 --warmup-ms 1500 \
  --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
torch_block after
echo "=== torch_decode.py" >> "$log"
timeout 60 python3 .gpu/app/torch_decode.py --batch 1 --hkv 8,32 --nk 32768,262144 \
  --out "$out/torch-decode.json" >> "$log" 2>&1
echo "=== torch decode rc=$?" >> "$log"
echo "=== bench-lean (unquantized timestamps)" >> "$log"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 200 bash .gpu/run.sh .gpu/app/bench-lean.mjs \
  --torch "$out/torch-decode.json" --batch 1 --hkv 8,32 --nk 32768,262144 \
  --partitions splitK,streamK --splits 16,32 --workers 264,528 --tunings default,u8,u16,t512u4 \
  --repeats 7 --out "$out/lean.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify.*again|^===|torch|failed|FAIL|Error|ceiling \(|^B |^1 |^  (splitK|streamK)|^B1' "$log" | tail -c 12000
