#!/usr/bin/env bash
# Packs .gpu/ for session 33's second lean call (h100-s33-pooled.sh): bench-lean from the tree,
# and a second build with @attnkit/webgpu's context.ts and pool.ts of d481fa6 (the pool's size
# classes could round a buffer that one binding holds past the binding limit). Run from the
# repository root; leaves the tree as it found it.
set -euo pipefail
files=(packages/webgpu/src/context.ts packages/webgpu/src/pool.ts)
for f in "${files[@]}"; do cp "$f" "/tmp/$(basename "$f").keep"; done
restore() { for f in "${files[@]}"; do cp "/tmp/$(basename "$f").keep" "$f"; done; }
trap restore EXIT
for f in "${files[@]}"; do git show "d481fa6:$f" > "$f"; done
node benchmarks/gpu/build.mjs > /dev/null
cp benchmarks/gpu/dist/bench-lean.mjs /tmp/bench-lean-nocap.mjs
restore
node benchmarks/gpu/build.mjs > /dev/null
cp /tmp/bench-lean-nocap.mjs benchmarks/gpu/dist/bench-lean-nocap.mjs
grep -q "size > cap && n <= cap" benchmarks/gpu/dist/bench-lean.mjs
! grep -q "size > cap && n <= cap" benchmarks/gpu/dist/bench-lean-nocap.mjs
rm -rf .gpu/app
bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-lean.mjs benchmarks/gpu/dist/bench-lean-nocap.mjs
rm -f .gpu/node_modules/webgpu/dist/linux-x64/dawn.node
