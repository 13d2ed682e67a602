#!/usr/bin/env bash
# Packs .gpu/ for h100-s31.sh: bench-lean.mjs from the tree, and bench-lean-oldcombine.mjs from the
# same tree with the split-K / stream-K combine of 9cb5bc2 (one thread a row, looping over the
# columns and slots) put back for the build only; then PyTorch's decode script. Run from the
# repository root; leaves the tree as it found it. The old build takes shaders.ts and host.ts
# whole from 9cb5bc2: a later change to either would be missing from it (check the diff first).
set -euo pipefail
files=(packages/skeleton/src/webgpu/shaders.ts packages/skeleton/src/webgpu/host.ts)
for f in "${files[@]}"; do cp "$f" "/tmp/$(basename "$f").keep"; done
restore() { for f in "${files[@]}"; do cp "/tmp/$(basename "$f").keep" "$f"; done; }
trap restore EXIT
for f in "${files[@]}"; do git show "9cb5bc2:$f" > "$f"; done
node benchmarks/gpu/build.mjs > /dev/null
cp benchmarks/gpu/dist/bench-lean.mjs /tmp/bench-lean-oldcombine.mjs
restore
node benchmarks/gpu/build.mjs > /dev/null
cp /tmp/bench-lean-oldcombine.mjs benchmarks/gpu/dist/bench-lean-oldcombine.mjs
# The new build has the combine's row loop, the old one not (a stale build would show here).
grep -q "Rows past the grid" benchmarks/gpu/dist/bench-lean.mjs
! grep -q "Rows past the grid" benchmarks/gpu/dist/bench-lean-oldcombine.mjs
rm -rf .gpu/app
bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-lean.mjs benchmarks/gpu/dist/bench-lean-oldcombine.mjs \
  benchmarks/gpu/torch_decode.py
rm -f .gpu/node_modules/webgpu/dist/linux-x64/dawn.node
