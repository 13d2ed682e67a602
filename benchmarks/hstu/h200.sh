#!/usr/bin/env bash
# Runs on the device machine (repository root as cwd, .gpu/ packed by benchmarks/gpu/pack.sh
# with bench-hstu.mjs): attnkit's WGSL HSTU and causal FA2 on the seed-0 jagged batch (B 16,
# N 4096, H 4, D 128), then PyTorch (HSTU eager and torch.compile'd, SDPA flash fp16) on the same
# lengths. Writes under $OUT: gpu.txt, hstu-webgpu.{json,log}, hstu-torch.{json,log}.
# Merge: node benchmarks/hstu/table.mjs hstu-torch.json hstu-webgpu.json
set -uo pipefail
out=${OUT:-/tmp/hstu-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
timeout 200 bash .gpu/run.sh .gpu/app/bench-hstu.mjs --out "$out/hstu-webgpu.json" "$@" 2>&1 |
  grep -v 'deprecated builtin' | tee "$out/hstu-webgpu.log"
PYTHONUNBUFFERED=1 timeout 330 python3 benchmarks/hstu/torch_hstu.py --out "$out/hstu-torch.json" 2>&1 |
  tee "$out/hstu-torch.log"
