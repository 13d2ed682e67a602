#!/usr/bin/env bash
# Session 15's fourth H200 run (~6 min): (1) the block step after the rope-table key fix (the
# host spelled 1,024 positions into a string per rope call; first estimated at ~1.2 ms of a
# step's recording, measured later at ~0.3 ms: BENCHMARKS.md), f16
# three times beside f32, verified against ts first, PyTorch's block before and after; (2)
# GPT-2 small training (FA2 vs standard) and 8K decoding; (3) LeanAttention decode re-measured
# with unquantized timestamps (Dawn's timestamp_quantization off: session 5's 32K rows were 3-4
# ticks of 65.5 us) at B 1, Hq 32, D 128 with a sweep of decode-kernel layouts, PyTorch SDPA
# decode in the same command.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-s15d.sh
source "$(dirname "$0")/h200-prelude.sh"
torch_block() {
  timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 20 --warmup 5 \
    --out "$out/torch-nn-$1.json" >> "$log" 2>&1
  echo "=== torch rc=$?" >> "$log"
}
torch_block before
echo "=== bench-nn-block" >> "$log"
timeout 200 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs \
  --dtypes f16,f32,f16,f16 --steps 20 --warmup 3 --warmup-ms 1500 \
  --out "$out/nn-block.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
torch_block after
echo "=== bench-gpt training + generation at 8K" >> "$log"
timeout 170 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --contexts 8192 --gen-tokens 60,2 \
  --out "$out/gpt.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
echo "=== torch_decode.py" >> "$log"
timeout 60 python3 .gpu/app/torch_decode.py --batch 1 --hkv 8,32 --nk 32768,262144 \
  --out "$out/torch-decode.json" >> "$log" 2>&1
echo "=== torch decode rc=$?" >> "$log"
echo "=== bench-lean (unquantized timestamps)" >> "$log"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 150 bash .gpu/run.sh .gpu/app/bench-lean.mjs \
  --torch "$out/torch-decode.json" --batch 1 --hkv 8,32 --nk 32768,262144 \
  --partitions fa2,splitK,streamK --splits 16 --tunings default,t512,t1024,t128u8 --repeats 7 \
  --out "$out/lean.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify.*again|^===|torch|faster|failed|FAIL|Error|ceiling \(' "$log" | tail -c 12000
