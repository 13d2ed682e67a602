#!/usr/bin/env bash
# Packs .gpu/ for h100-s30b.sh: bench-tc.mjs from the tree, bench-tc-oldmask.mjs from the same
# tree with split-f16's 13-bit hi mask (the mask before session 30) patched in for the build
# only, and the softmax goldens. Run from the repository root; leaves the tree as it found it.
set -euo pipefail
f=packages/skeleton/src/webgpu/split-f16.ts
cp "$f" /tmp/split-f16.ts.keep
trap 'cp /tmp/split-f16.ts.keep "$f"' EXIT
python3 - "$f" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
i = s.index('export const HI_BITS_WGSL')
j = s.index('}`;', i) + 3
s = s[:i] + "export const HI_BITS_WGSL = `fn hiBits(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) & 0xffffe000u); }`;" + s[j:]
open(p, 'w').write(s)
PY
node benchmarks/gpu/build.mjs > /dev/null
cp benchmarks/gpu/dist/bench-tc.mjs /tmp/bench-tc-oldmask.mjs
cp /tmp/split-f16.ts.keep "$f"
node benchmarks/gpu/build.mjs > /dev/null
cp /tmp/bench-tc-oldmask.mjs benchmarks/gpu/dist/bench-tc-oldmask.mjs
# The old build has the 13-bit mask, the new one not (a stale build would show here).
grep -q '0xffffe000u' benchmarks/gpu/dist/bench-tc-oldmask.mjs
! grep -q '0xffffe000u' benchmarks/gpu/dist/bench-tc.mjs
mkdir -p benchmarks/gpu/dist/goldens
cp ../shared/goldens/softmax*.safetensors benchmarks/gpu/dist/goldens/
rm -rf .gpu/app
bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/dist/bench-tc-oldmask.mjs benchmarks/gpu/dist/goldens
rm -f .gpu/node_modules/webgpu/dist/linux-x64/dawn.node
