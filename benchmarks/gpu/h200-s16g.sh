#!/usr/bin/env bash
# Session 16's same-command comparison with fla (~5-6 min warm, most of it Triton autotuning
# fla's kernels): bench-gla's final SIMT chunkGla verified (float64, poisoned outputs) and timed
# at B 4, H 16, T 8192, K = V = 128, f16 (unquantized), then fla's Triton chunk_gla forward at
# the same shape (benchmarks/gla/fla_peer.py: its float64 check first).
# Pack: bash benchmarks/gpu/pack-queue.sh && cp benchmarks/gla/fla_peer.py .gpu/app/ &&
#   cp -r /root/flapeer/src /root/flapeer/fallback .gpu/app/     (fla: a run-only copy of
#   fla-org/flash-linear-attention at bc3b101, fla/__init__.py reduced to its __version__ line
#   (fla.ops imports it; run 7 failed on an empty one) and fla/ops/__init__.py emptied;
#   fallback: the `packaging` module; never committed). Run (carry [".gpu"], timeout_s 470):
#   bash benchmarks/gpu/h200-s16g.sh
source "$(dirname "$0")/h200-prelude.sh"
DISABLE_DAWN_TOGGLES=timestamp_quantization timeout 100 bash .gpu/run.sh .gpu/app/bench-gla.mjs \
  --shapes "4,16,8192,128,128" --dtype f16 --repeats 10 --warmup-ms 2000 --tc off \
  --out "$out/gla.json" 2>&1 | keep >> "$log"
echo "=== bench-gla rc=${PIPESTATUS[0]}" >> "$log"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' >> "$log" 2>&1
timeout "${FLA_TIMEOUT:-270}" python3 .gpu/app/fla_peer.py --fla .gpu/app/src --fallback .gpu/app/fallback \
  --shapes "4,16,8192,128" --passes forward --out "$out/fla.json" >> "$log" 2>&1
echo "=== fla rc=$?" >> "$log"
grep -E '^\||^verify|^===|FAIL|Error|fla chunk_gla' "$log" | cut -c1-300
