#!/usr/bin/env bash
# Session 29's second device command (written for the lent H100 or the H200; no device was lent
# in session 29 after the refusals, so it has not run yet):
# 1. Lean decode (issue 12): fewer lanes per key. The default layout (512 threads, a key's 16
#    chunks on 16 lanes: 4 shuffle steps per row and key for 8 FMAs a lane) was never swept over
#    `lanes` on a GPU. Tunings: l8 (8 lanes, 2 chunks each, rows over 2 slices), l8r4 (8 lanes,
#    the GQA group's 4 rows per thread: 3 steps per row for 16 FMAs), t256l8r4, t256l4r4 (4
#    lanes, 4 chunks, 2 steps), each verified against float64 first (outputs poisoned),
#    unquantized timestamps; B 1, Hq 32, Hkv 8 / 32, Nk 32K / 256K, split-K 16 and stream-K 132;
#    PyTorch SDPA decode in the same command.
# 2. Where Sage's f16 engine loses to the FA2 forward it is built on (issue 11): the FA2 f16
#    forward at (4, 32, 4096, 128) with its default tile (8 subgroups x 32 keys, lazy rescale),
#    with the tile Sage must use (4 x 64 keys: ARITHMETIC.md's 64-key tiles), lazy 8 and lazy 0
#    (Sage's codes need the exact running max), then the Sage engine itself at that shape: the
#    steps apart are the tile's, the eager rescale's and the Sage hooks' costs.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh
#   benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/dist/bench-sage.mjs benchmarks/gpu/dist/bench-lean.mjs
#   benchmarks/gpu/torch_sdpa.py benchmarks/gpu/torch_decode.py
#   (then rm -f .gpu/node_modules/webgpu/dist/linux-x64/dawn.node). Run (carry [".gpu"], timeout_s 590):
#   bash benchmarks/gpu/h100-s29b.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 60 python3 .gpu/app/torch_decode.py --batch 1 --hkv 8,32 --nk 32768,262144 \
  --out "$out/torch-decode.json" >> "$log" 2>&1
echo "=== torch decode rc=$?" >> "$log"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 280 bash .gpu/run.sh .gpu/app/bench-lean.mjs \
  --torch "$out/torch-decode.json" --batch 1 --hkv 8,32 --nk 32768,262144 \
  --partitions splitK,streamK --splits 16 --workers 132 \
  --tunings default,l8,l8r4,t256l8r4,t256l4r4 --repeats 7 --out "$out/lean.json" 2>&1 | keep >> "$log"
echo "=== bench-lean rc=${PIPESTATUS[0]}" >> "$log"
timeout 90 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-verify --skip-table --repeats 5 \
  --variant-shape 4,32,4096,128 \
  --variants '[{},{"subgroups":4,"keyMatrices":4,"lazy":8},{"subgroups":4,"keyMatrices":4,"lazy":0},{"subgroups":8,"keyMatrices":2,"lazy":0}]' \
  --out "$out/fa2-sage-tiles.json" 2>&1 | keep >> "$log"
echo "=== fa2 tiles rc=${PIPESTATUS[0]}" >> "$log"
timeout 100 bash .gpu/run.sh .gpu/app/bench-sage.mjs --skip-verify --skip-i8 --f16-subgroups 4 --causal false \
  --shapes '4,32,4096,128' --repeats 5 --out "$out/sage-4096.json" 2>&1 |
  grep -v 'deprecated builtin' | grep -E '^(ok|FAIL|row|table|verification|failures|\[)|rror|TOPS' | cut -c1-600 >> "$log"
echo "=== bench-sage rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^===|failed|FAIL|Error|ceiling \(|^B |^1 |^  (fa2|splitK|streamK)|^B1|not ok|^variant|TOPS' "$log" | tail -c 9000
