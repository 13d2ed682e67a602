#!/usr/bin/env bash
# Session 21 (issue 17): the decode host path's changes on the H200, written while no device
# was lent (not run yet). Processes alternate three bundles of one build: the new code
# (bench-gpt), the BufferPool handing out the last released buffer again (-lifo), and that
# with fuseLinear and sharePasses off (-s20: session 20's decode path). Each: verification
# against ts, a 20-token warm-up generate, the cached generate twice (median), recompute;
# GPT-2 small f32 at 8K, then the new code at 1K.
# Pack: node benchmarks/gpu/build.mjs && python3 benchmarks/gpu/s21ab.py && rm -rf .gpu/app &&
#   bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-gpt.mjs benchmarks/gpu/dist/bench-gpt-lifo.mjs benchmarks/gpu/dist/bench-gpt-s20.mjs
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s21.sh
source "$(dirname "$0")/h200-prelude.sh"
for b in bench-gpt bench-gpt-s20 bench-gpt-lifo bench-gpt bench-gpt-s20 bench-gpt-lifo; do
  echo "=== $b, context 8192" >> "$log"
  timeout 110 bash .gpu/run.sh .gpu/app/$b.mjs --skip train --contexts 8192 --warm \
    --gen-tokens 100,2 --out "$out/$b-8192-$SECONDS.json" 2>&1 | keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]}" >> "$log"
done
# Six submits a decoded token (nn's early-submit schedule restarts at 2 passes after each token's
# readback; a Vulkan submit cost the host ~0.5 ms on the H200): the new code with earlySubmit off.
for i in 1 2; do
  echo "=== bench-gpt --off earlySubmit, context 8192" >> "$log"
  timeout 110 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 8192 --warm \
    --gen-tokens 100,2 --off earlySubmit --out "$out/bench-gpt-late-8192-$SECONDS.json" 2>&1 | keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]}" >> "$log"
done
echo "=== bench-gpt, context 1024" >> "$log"
timeout 80 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 1024 --warm \
  --gen-tokens 100,4 --out "$out/bench-gpt-1024.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\| [0-9]|^verify|^===|decode A/B|Error|failed' "$log" | tail -c 9000
