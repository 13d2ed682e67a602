#!/usr/bin/env bash
# Packs .gpu/ for session 32's device calls on one warm machine: h100-s31.sh (the lean decode
# A/B and item 7's table: two builds of bench-lean, new and old combine) and h200-s32-tc.sh (issue 20 item 8's table on
# the H200, with verification first): bench-tc.mjs from the tree, the softmax goldens and
# PyTorch's forward script besides; and h200-s32-sage.sh (issue 11 item 7 in one command: bench-sage).
# Run from the repository root; leaves the tree as it found it.
set -euo pipefail
files=(packages/skeleton/src/webgpu/shaders.ts packages/skeleton/src/webgpu/host.ts)
for f in "${files[@]}"; do cp "$f" "/tmp/$(basename "$f").keep"; done
restore() { for f in "${files[@]}"; do cp "/tmp/$(basename "$f").keep" "$f"; done; }
trap restore EXIT
# The old combine's build: shaders.ts and host.ts whole from 9cb5bc2 (their only change since is
# the combine: check `git diff 9cb5bc2 HEAD -- <both>` before reusing this after later changes).
for f in "${files[@]}"; do git show "9cb5bc2:$f" > "$f"; done
node benchmarks/gpu/build.mjs > /dev/null
cp benchmarks/gpu/dist/bench-lean.mjs /tmp/bench-lean-oldcombine.mjs
restore
node benchmarks/gpu/build.mjs > /dev/null
cp /tmp/bench-lean-oldcombine.mjs benchmarks/gpu/dist/bench-lean-oldcombine.mjs
grep -q "Rows past the grid" benchmarks/gpu/dist/bench-lean.mjs
! grep -q "Rows past the grid" benchmarks/gpu/dist/bench-lean-oldcombine.mjs
rm -rf benchmarks/gpu/dist/goldens && mkdir -p benchmarks/gpu/dist/goldens
cp ../shared/goldens/softmax*.safetensors benchmarks/gpu/dist/goldens/
rm -rf .gpu/app
bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-lean.mjs benchmarks/gpu/dist/bench-lean-oldcombine.mjs \
  benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/dist/bench-sage.mjs benchmarks/gpu/dist/goldens \
  benchmarks/gpu/torch_decode.py benchmarks/gpu/torch_sdpa.py
rm -f .gpu/node_modules/webgpu/dist/linux-x64/dawn.node
