#!/usr/bin/env bash
# Session 25 (written then, not run: no device was lent). GPT-2 small generation on the H200 with
# the attention variants: sigmoid (the paged KV cache read by the WGSL decode kernel, which takes
# pointwise weights since session 25, timed here for the first time) and gla (the per-layer
# recurrent states), KV cache vs recompute at 1K and 8K, beside flash in the same command.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-gpt.mjs
# Run (device tool, carry [".gpu"], timeout_s 590):
#   bash benchmarks/gpu/h200-s25b.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log-generate.txt"
: > "$log"
for a in flash sigmoid gla; do
  s=$SECONDS
  timeout 180 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --gen-attention "$a" \
    --contexts 1024,8192 --gen-tokens 32,4 --out "$out/gpt-generate-$a.json" 2>&1 |
    grep -v 'deprecated builtin' | cut -c1-600 >> "$log"
  echo "=== generate $a rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
done
grep -E '^\||^Generation|===' "$log"
