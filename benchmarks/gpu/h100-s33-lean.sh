#!/usr/bin/env bash
# Session 33, issue 12 item 7's whole table now that K / V past one storage binding run in binding
# chunks (the 6 shapes sessions 17-32 skipped: K or V >= 2 GiB). PyTorch SDPA decode (fp16, Nq 1)
# over the same 16 shapes first; then bench-lean: verification (small random shapes vs float64),
# the read / copy ceilings, and the table (B 1 and 8, Hkv 32 and 8, Nk 8K-256K, fa2 / split-K /
# stream-K at their defaults), each chunked shape's first call checked against one-head calls.
# Pack: bash benchmarks/gpu/pack-s33.sh. Run (carry [".gpu"], timeout_s 590): bash benchmarks/gpu/h100-s33-lean.sh
source "$(dirname "$0")/h200-prelude.sh"
export DISABLE_DAWN_TOGGLES=timestamp_quantization
step torch-decode 90 python3 .gpu/app/torch_decode.py --batch 1,8 --hkv 32,8 --nk 8192,32768,131072,262144 \
  --out "$out/torch-decode.json"
step table 470 bash .gpu/run.sh .gpu/app/bench-lean.mjs --torch "$out/torch-decode.json" \
  --batch 1,8 --hkv 32,8 --nk 8192,32768,131072,262144 --partitions fa2,splitK,streamK --repeats 7 \
  --out "$out/lean-table.json"
grep -E '^ok|^FAIL|^---|===|rror|verification|ceiling|^B |^1 |^8 |^row|not ok|skip' "$log" | cut -c1-220 | tail -c 11500
