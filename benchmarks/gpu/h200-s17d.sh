#!/usr/bin/env bash
# Session 17, GLA run 5 (~8 min warm), the issue's measurement in one device command: the final
# kernels (the dq / dk / dgk pass's V slices now 4-element raw words prefetched a slice ahead)
# verified (SIMT and tensor-core variants, float64, poisoned outputs) and timed at B 4, H 16,
# K = V = 128, T 2048 / 8192, f16, forward and forward + backward beside our causal FA2; PyTorch
# SDPA causal (forward and backward) at the same shapes; the previous bundle
# (bench-gla-old.mjs, built at 6df0228: run 3's kernels) for the backward A/B; --diag-backward;
# then fla's Triton chunk_gla forward and forward + backward at the same shapes.
# Pack: bash benchmarks/gpu/pack-queue.sh && cp /tmp/old/bench-gla-old.mjs benchmarks/gla/fla_peer.py .gpu/app/ &&
#   cp -r /root/flapeer/src /root/flapeer/fallback .gpu/app/   (fla as in h200-s16g.sh's header)
# Run (device tool, carry [".gpu"], timeout_s 590): bash benchmarks/gpu/h200-s17d.sh
source "$(dirname "$0")/h200-prelude.sh"
export DISABLE_DAWN_TOGGLES=timestamp_quantization
timeout 150 bash .gpu/run.sh .gpu/app/bench-gla.mjs --shapes "4,16,2048,128,128;4,16,8192,128,128" \
  --dtype f16 --repeats 10 --warmup-ms 2000 --tc both --out "$out/gla.json" 2>&1 | keep >> "$log"
echo "=== bench-gla rc=${PIPESTATUS[0]}" >> "$log"
timeout 40 python3 .gpu/app/torch_sdpa.py --shapes "4,16,2048,128;4,16,8192,128" \
  --out "$out/torch-gla.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
echo "=== previous dq dk dgk pass (bench-gla-old.mjs)" >> "$log"
timeout 50 bash .gpu/run.sh .gpu/app/bench-gla-old.mjs --shapes "4,16,8192,128,128" --dtype f16 \
  --repeats 10 --warmup-ms 1500 --tc off --no-fa2 --skip-verify --out "$out/gla-old.json" 2>&1 | keep >> "$log"
timeout 50 bash .gpu/run.sh .gpu/app/bench-gla.mjs --shapes "4,16,8192,128,128" --dtype f16 \
  --warmup-ms 1500 --diag "-;qkg:intra,qkg:cross,qkg:prefix" --diag-backward \
  --out "$out/diag.json" 2>&1 | keep >> "$log"
echo "=== diag rc=${PIPESTATUS[0]}" >> "$log"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' >> "$log" 2>&1
timeout "${FLA_TIMEOUT:-250}" python3 .gpu/app/fla_peer.py --fla .gpu/app/src --fallback .gpu/app/fallback \
  --shapes "4,16,2048,128;4,16,8192,128" --passes forward,forward+backward --out "$out/fla.json" >> "$log" 2>&1
echo "=== fla rc=$?" >> "$log"
grep -E '^\||^verify|^===|failed|FAIL|Error|diag|causal=True|fla chunk_gla' "$log" | cut -c1-400
