#!/usr/bin/env bash
# Session 31, issue 12: the split-K / stream-K combine with 16 lanes a row (debb8ff) against the
# one-thread-a-row combine before it, and issue 12 item 7's whole table with it. Every step gets
# what is left of a 580 s deadline (the call's limit is 590), most important first:
# 1. new vs old combine, alternating twice, at B 1, Hkv 8 and 32, Nk 32K and 256K, split-K 16 and
#    stream-K 132 (verified first, unquantized timestamps), PyTorch SDPA decode (fp16, Nq 1) first;
# 2. the item-7 table: B 1 and 8, Hkv 32 and 8, Nk 8K-256K, fa2 / split-K / stream-K (defaults),
#    PyTorch over the same sweep first, between the A/B's two rounds;
# 3. worker and split counts at the target case now that the fix-up is cheap.
# Pack: bash benchmarks/gpu/pack-s31.sh. Run (carry [".gpu"], timeout_s 590): bash benchmarks/gpu/h100-s31.sh
source "$(dirname "$0")/h200-prelude.sh"   # out, log, keep, step (DEADLINE=250 when the budget is short)
export DISABLE_DAWN_TOGGLES=timestamp_quantization
step torch-ab 35 python3 .gpu/app/torch_decode.py --batch 1 --hkv 8,32 --nk 32768,262144 --out "$out/torch-ab.json"
AB=(--torch "$out/torch-ab.json" --batch 1 --hkv 8,32 --nk 32768,262144 --partitions splitK,streamK
  --splits 16 --workers 132 --repeats 7)
step ab-new-1 40 bash .gpu/run.sh .gpu/app/bench-lean.mjs "${AB[@]}" --out "$out/ab-new-1.json"
step ab-old-1 40 bash .gpu/run.sh .gpu/app/bench-lean-oldcombine.mjs "${AB[@]}" --out "$out/ab-old-1.json"
step torch-decode 60 python3 .gpu/app/torch_decode.py --batch 1,8 --hkv 32,8 --nk 8192,32768,131072,262144 \
  --out "$out/torch-decode.json"
step table 150 bash .gpu/run.sh .gpu/app/bench-lean.mjs --torch "$out/torch-decode.json" \
  --batch 1,8 --hkv 32,8 --nk 8192,32768,131072,262144 --partitions fa2,splitK,streamK --repeats 7 \
  --out "$out/lean-table.json"
step ab-new-2 40 bash .gpu/run.sh .gpu/app/bench-lean.mjs "${AB[@]}" --skip-verify --out "$out/ab-new-2.json"
step ab-old-2 40 bash .gpu/run.sh .gpu/app/bench-lean-oldcombine.mjs "${AB[@]}" --skip-verify --out "$out/ab-old-2.json"
step sweep 80 bash .gpu/run.sh .gpu/app/bench-lean.mjs --torch "$out/torch-decode.json" --skip-verify \
  --batch 1 --hkv 8 --nk 32768,262144 --partitions splitK,streamK --splits 4,16,32,64 \
  --workers 132,264,528 --repeats 7 --out "$out/sweep.json"
grep -E '^ok|^FAIL|^---|===|rror|verification|ceiling|^B |^1 |^8 |^  (fa2|splitK|streamK)|^row|not ok' "$log" | cut -c1-200 | tail -c 11500
