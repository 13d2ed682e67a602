#!/usr/bin/env bash
# Session 15's eighth H200 call (~20 s on a warm machine), run as one command line:
# GPT-2 small decoding at 8K with the decode kernel's default layout (512 threads) and the
# 256-thread one alternating (--threads-ab), after run 7's slow 42.9 tok/s; verified first.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 150):
#   bash benchmarks/gpu/h200-s15h.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 120 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 8192 --gen-tokens 40,2 \
  --threads-ab --out "$out/gpt-threads.json" 2>&1 | keep > "$out/gpt-threads.log"
echo rc=$?
grep -E "verify|A/B|^\|" "$out/gpt-threads.log" | tail -8
