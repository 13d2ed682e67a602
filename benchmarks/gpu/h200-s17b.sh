#!/usr/bin/env bash
# Session 17, lean decode run (~4 min warm): the decode kernel's prefetch (the next pass's K / V
# words loaded into registers during the current pass's math, tuning letter p) against the
# default layout, every tuning verified against float64 first (outputs poisoned), unquantized
# timestamps, B 1, Hq 32, Hkv 8 / 32, Nk 32K / 256K, split-K 16 and stream-K 132, PyTorch SDPA
# decode in the same command.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 420):
#   bash benchmarks/gpu/h200-s17b.sh
source "$(dirname "$0")/h200-prelude.sh"
echo "=== torch_decode.py" >> "$log"
timeout 60 python3 .gpu/app/torch_decode.py --batch 1 --hkv 8,32 --nk 32768,262144 \
  --out "$out/torch-decode.json" >> "$log" 2>&1
echo "=== torch decode rc=$?" >> "$log"
echo "=== bench-lean (unquantized timestamps)" >> "$log"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 300 bash .gpu/run.sh .gpu/app/bench-lean.mjs \
  --torch "$out/torch-decode.json" --batch 1 --hkv 8,32 --nk 32768,262144 \
  --partitions splitK,streamK --splits 16 --workers 132 \
  --tunings default,p,t512u2p,t256p,t512u8p --repeats 7 --out "$out/lean.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^===|failed|FAIL|Error|ceiling \(|^B |^1 |^  (fa2|splitK|streamK)|^B1|not ok' "$log" | tail -c 9000
