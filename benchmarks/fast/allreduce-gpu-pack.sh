#!/usr/bin/env bash
# Packs benchmarks/fast/allreduce.mjs with --backend webgpu for the lent GPU machine (issue 19's
# stand-in while no kind with several GPUs is lent: P webgpu device workers on the one GPU):
# the bench and the device worker bundled with every workspace package (webgpu external), into
# .gpu/app/ via ../shared/gpu/pack.sh. Then, there (carry [".gpu"]):
#   bash benchmarks/fast/h100-allreduce.sh
# Needs `pnpm build` here first.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
tmp=$(mktemp -d)
esbuild=$root/packages/fast-attention/node_modules/.bin/esbuild
sed -e "s#await dist('\([a-z-]*\)')#await import('@attnkit/\1')#" benchmarks/fast/allreduce.mjs \
  > packages/fast-attention/.allreduce-bench.mjs
trap 'rm -f packages/fast-attention/.allreduce-bench.mjs; rm -rf "$tmp"' EXIT
(cd packages/fast-attention &&
  "$esbuild" .allreduce-bench.mjs --bundle --platform=node --format=esm --target=node20 \
    --alias:@attnkit/fast-attention=./src/index.ts --external:webgpu \
    --outfile="$tmp/bench-allreduce.mjs" --log-level=warning &&
  "$esbuild" src/allreduce/worker.ts --bundle --platform=node --format=esm --target=node20 \
    --external:webgpu --outfile="$tmp/allreduce-worker.js" --log-level=warning)
bash ../shared/gpu/pack.sh "$tmp/bench-allreduce.mjs" "$tmp/allreduce-worker.js"
rm -f .gpu/node_modules/webgpu/dist/linux-x64/dawn.node
