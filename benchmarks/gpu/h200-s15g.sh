#!/usr/bin/env bash
# Session 15's last H200 run (~2 min): the final code's defaults on the device: LeanAttention
# decode with no tuning (the 512-thread layout, stream-K at 132 workers), verified against
# float64 first, unquantized timestamps, PyTorch SDPA decode beside it; GPT-2 small decoding
# at 8K (its attention takes the same decode kernel; verified against ts first).
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 300):
#   bash benchmarks/gpu/h200-s15g.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 40 python3 .gpu/app/torch_decode.py --batch 1 --hkv 8,32 --nk 32768,262144 \
  --out "$out/torch-decode.json" >> "$log" 2>&1
echo "=== torch decode rc=$?" >> "$log"
echo "=== bench-lean defaults" >> "$log"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 90 bash .gpu/run.sh .gpu/app/bench-lean.mjs \
  --torch "$out/torch-decode.json" --batch 1 --hkv 8,32 --nk 32768,262144 --repeats 7 \
  --out "$out/lean.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
echo "=== bench-gpt generation at 8K" >> "$log"
timeout 90 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 8192 \
  --gen-tokens 60,2 ${GPT_ARGS:-} --out "$out/gpt-gen.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^===|failed|FAIL|Error|ceiling \(|^B |^1 |verify \(|^\|' "$log" | tail -c 6000
