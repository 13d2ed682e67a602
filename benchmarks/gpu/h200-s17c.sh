#!/usr/bin/env bash
# Session 17, GLA run 3 (~5 min warm): the final kernels (raw-word prefetch in the forward
# passes; the dq / dk / dgk pass's sub-chunk products unrolled and its dgk prefix / suffix sums
# run by run) verified (SIMT and tensor-core variants, float64, poisoned outputs) and timed:
# T 256 .. 8192 beside our causal FA2 (the crossover), the tensor-core variant at T 8192, the
# previous bundle (bench-gla-old.mjs, built at 3206626: forward as now, the old dq / dk / dgk
# pass) at T 8192 for the backward A/B, --diag-backward (parts of the dq / dk / dgk pass left
# out), and PyTorch SDPA causal at the same shapes.
# Pack: bash benchmarks/gpu/pack-queue.sh && cp /tmp/old/bench-gla-old.mjs .gpu/app/
# Run (device tool, carry [".gpu"], timeout_s 560): bash benchmarks/gpu/h200-s17c.sh
source "$(dirname "$0")/h200-prelude.sh"
export DISABLE_DAWN_TOGGLES=timestamp_quantization
shapes="4,16,256,128,128;4,16,512,128,128;4,16,1024,128,128;4,16,2048,128,128;4,16,8192,128,128"
timeout 200 bash .gpu/run.sh .gpu/app/bench-gla.mjs --shapes "$shapes" --dtype f16 --repeats 10 \
  --warmup-ms 2000 --tc off --out "$out/gla.json" 2>&1 | keep >> "$log"
echo "=== bench-gla rc=${PIPESTATUS[0]}" >> "$log"
timeout 90 bash .gpu/run.sh .gpu/app/bench-gla.mjs --shapes "4,16,8192,128,128" --dtype f16 \
  --repeats 10 --warmup-ms 1500 --tc on --no-fa2 --out "$out/gla-tc.json" 2>&1 | keep >> "$log"
echo "=== bench-gla tc rc=${PIPESTATUS[0]}" >> "$log"
echo "=== old dq dk dgk pass (bench-gla-old.mjs)" >> "$log"
timeout 60 bash .gpu/run.sh .gpu/app/bench-gla-old.mjs --shapes "4,16,8192,128,128" --dtype f16 \
  --repeats 10 --warmup-ms 1500 --tc off --no-fa2 --skip-verify --out "$out/gla-old.json" 2>&1 | keep >> "$log"
timeout 80 bash .gpu/run.sh .gpu/app/bench-gla.mjs --shapes "4,16,8192,128,128" --dtype f16 \
  --warmup-ms 1500 --diag "-;qkg:intra;qkg:cross;qkg:prefix;qkg:intra,qkg:cross,qkg:prefix" \
  --diag-backward --out "$out/diag.json" 2>&1 | keep >> "$log"
echo "=== diag rc=${PIPESTATUS[0]}" >> "$log"
timeout 60 python3 .gpu/app/torch_sdpa.py --shapes "4,16,256,128;4,16,512,128;4,16,1024,128;4,16,2048,128;4,16,8192,128" \
  --out "$out/torch-gla.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
grep -E '^\||^verify|^===|failed|FAIL|Error|diag|forward .*causal=True' "$log" | cut -c1-400
