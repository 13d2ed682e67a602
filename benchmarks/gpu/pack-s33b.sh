#!/usr/bin/env bash
# Packs .gpu/ for session 33's second lean call (h100-s33-pooled.sh): bench-lean from the tree,
# and a second build with @attnkit/webgpu's context.ts of d481fa6 (whole buffers bound whole, even
# when the pool's size class passes the binding limit). Run from the repository root; leaves the
# tree as it found it.
set -euo pipefail
f=packages/webgpu/src/context.ts
cp "$f" /tmp/context.ts.keep
trap 'cp /tmp/context.ts.keep "$f"' EXIT
git show d481fa6:$f > "$f"
node benchmarks/gpu/build.mjs > /dev/null
cp benchmarks/gpu/dist/bench-lean.mjs /tmp/bench-lean-nocap.mjs
cp /tmp/context.ts.keep "$f"
node benchmarks/gpu/build.mjs > /dev/null
cp /tmp/bench-lean-nocap.mjs benchmarks/gpu/dist/bench-lean-nocap.mjs
grep -q "size: maxBinding - maxBinding % 4" benchmarks/gpu/dist/bench-lean.mjs
! grep -q "size: maxBinding - maxBinding % 4" benchmarks/gpu/dist/bench-lean-nocap.mjs
rm -rf .gpu/app
bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-lean.mjs benchmarks/gpu/dist/bench-lean-nocap.mjs
rm -f .gpu/node_modules/webgpu/dist/linux-x64/dawn.node
