#!/usr/bin/env bash
# Session 29, lean decode (issue 12): fewer lanes per key. The default layout (512 threads, a key's
# 16 chunks on 16 lanes, 4 shuffle steps per row and key for 8 FMAs a lane) was never swept over
# `lanes` on a GPU. Tunings: l8 (8 lanes, 2 chunks each, rows over 2 slices), l8r4 (8 lanes, all 4
# rows of a GQA group per thread: 3 shuffle steps per row for 16 FMAs), l8r4u4, t256l8r4,
# t256l4r4 (4 lanes, 4 chunks, 2 steps), each verified against float64 first (outputs poisoned),
# unquantized timestamps, B 1, Hq 32, Hkv 8 / 32, Nk 32K / 256K, split-K 16 and stream-K 132,
# PyTorch SDPA decode in the same command.
# Pack: as h100-s29.sh plus bench-lean.mjs and torch_decode.py. Run (carry [".gpu"], timeout_s 420):
#   bash benchmarks/gpu/lean-s29.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 60 python3 .gpu/app/torch_decode.py --batch 1 --hkv 8,32 --nk 32768,262144 \
  --out "$out/torch-decode.json" >> "$log" 2>&1
echo "=== torch decode rc=$?" >> "$log"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 330 bash .gpu/run.sh .gpu/app/bench-lean.mjs \
  --torch "$out/torch-decode.json" --batch 1 --hkv 8,32 --nk 32768,262144 \
  --partitions splitK,streamK --splits 16 --workers 132 \
  --tunings default,l8,l8r4,l8r4u4,t256l8r4,t256l4r4 --repeats 7 --out "$out/lean.json" 2>&1 | keep >> "$log"
echo "=== bench-lean rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^===|failed|FAIL|Error|ceiling \(|^B |^1 |^  (fa2|splitK|streamK)|^B1|not ok' "$log" | tail -c 9000
