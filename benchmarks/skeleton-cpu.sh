#!/usr/bin/env bash
# Issue 8's CPU table: FA2 (softmax) vs FlashSigmoid vs softmax with a built-in score mod, on the
# ts and native backends, through `attnkit bench` (the registry's kernels), one process per row.
# Usage (repository root, after `pnpm build`): bash benchmarks/skeleton-cpu.sh [OUTDIR]
set -euo pipefail
out=${1:-benchmarks/results/$(date -u +%F)-skeleton-cpu}
mkdir -p "$out"
shape=1,8,1024,64
for backend in native ts; do
  for row in "softmax none" "sigmoid none" "softmax softcap:30" "softmax alibi"; do
    set -- $row
    name="$backend-$1-${2/:/}"
    node apps/cli/dist/main.js bench --family "$1" --score-mod "$2" --backend "$backend" \
      --shape "$shape" --no-reference --repeats 5 --warmup 1 --out "$out/$name.json" >/dev/null
    node -e "const r=require(require('path').resolve('$out/$name.json')).rows;for(const x of r)console.log([x.backend,x.family,x.pass,x.medianMs.toFixed(1),x.gflops.toFixed(2)].join('\t'))"
  done
done
