#!/usr/bin/env bash
# Session 15's sixth H200 run (~3 min): LeanAttention decode layouts around run 5's best
# (512 threads x 4 keys a pass: a pass of 128 keys spans two tiles), with stream-K at 132
# workers (one 512-thread workgroup per SM) beside 264, split-K 8 and 16, every layout verified
# against float64 first, unquantized timestamps, PyTorch SDPA decode in the same command.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 400):
#   bash benchmarks/gpu/h200-s15f.sh
source "$(dirname "$0")/h200-prelude.sh"
echo "=== torch_decode.py" >> "$log"
timeout 60 python3 .gpu/app/torch_decode.py --batch 1 --hkv 8,32 --nk 32768,262144 \
  --out "$out/torch-decode.json" >> "$log" 2>&1
echo "=== torch decode rc=$?" >> "$log"
echo "=== bench-lean (unquantized timestamps)" >> "$log"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 240 bash .gpu/run.sh .gpu/app/bench-lean.mjs \
  --torch "$out/torch-decode.json" --batch 1 --hkv 8,32 --nk 32768,262144 \
  --partitions fa2,splitK,streamK --splits 8,16 --workers 132,264 \
  --tunings default,t512u4,t512u8,t1024u4 --repeats 7 --out "$out/lean.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^===|failed|FAIL|Error|ceiling \(|^B |^1 |^  (fa2|splitK|streamK)|^B1|not ok' "$log" | tail -c 9000
