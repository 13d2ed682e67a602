#!/usr/bin/env bash
# Session 26, issue 11 item 7: the N 8192 rows of Sage's f16 tensor-core engine (the default
# engine of `tensorCores` since session 25), which did not fit session 25's step. The table
# compares the engine's O with the portable kernel's row by row at this shape (the portable
# kernel verified against the TS spec in earlier runs), then times it beside the portable kernel
# and our FA2 f16 kernels; PyTorch SDPA forward on the same shape after it.
# Pack: with h200-s26.sh's bundles plus benchmarks/gpu/dist/bench-sage.mjs benchmarks/gpu/torch_sdpa.py
# Run (device tool, carry [".gpu"], timeout_s 500): bash benchmarks/gpu/h200-s26b.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 330 bash .gpu/run.sh .gpu/app/bench-sage.mjs --skip-verify --skip-i8 --f16-subgroups 4 \
  --shapes '4,32,8192,128' --repeats 5 --out "$out/sage-8192.json" 2>&1 |
  grep -v 'deprecated builtin' | grep -E '^(adapter|ok|FAIL|row|table|verification|failures|\[)|rror|TOPS' | cut -c1-600 >> "$log"
echo "=== bench-sage rc=${PIPESTATUS[0]}" >> "$log"
timeout 100 python3 .gpu/app/torch_sdpa.py --shapes "4,32,8192,128" --forward-only --out "$out/torch-sage-8192.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
tail -40 "$log" | cut -c1-400
