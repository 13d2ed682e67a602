#!/usr/bin/env bash
# What session 12 left for the H200 (one device command, ~4 min with a cold start): nn's matmul
# kernels alone (bench-matmul: does the unrolled f16 store of 7fcfed5 bring the f16 SIMT kernel
# to the f32 one's speed?), then h200-final.sh (GPT decoding fresh and after training, GPT-2
# small FA2 vs standard, the TransformerBlock step f32 / f16 with PyTorch in the same command).
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-next12.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
# A warm-up so the matmul rows are not timed while the SM clock ramps from idle.
timeout 60 bash .gpu/run.sh .gpu/app/bench-matmul.mjs --reps 2 > /dev/null 2>&1
timeout 100 bash .gpu/run.sh .gpu/app/bench-matmul.mjs --reps 5 --out "$out/matmul.json" 2>&1 |
  grep -E '^\|' > "$out/matmul.txt"
OUT="$out/final" bash "$here/h200-final.sh"
cat "$out/matmul.txt"
tail -c 6000 "$out/final/log.txt"
