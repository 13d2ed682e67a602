#!/usr/bin/env bash
# Packs .gpu/ for session 33's lean call (h100-s33-lean.sh): bench-lean built from the tree (binding
# chunks for K / V past one storage binding) and PyTorch's decode script. Run from the repository root.
set -euo pipefail
node benchmarks/gpu/build.mjs > /dev/null
grep -q "binding chunk copy" benchmarks/gpu/dist/bench-lean.mjs
rm -rf .gpu/app
bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-lean.mjs benchmarks/gpu/torch_decode.py
rm -f .gpu/node_modules/webgpu/dist/linux-x64/dawn.node
