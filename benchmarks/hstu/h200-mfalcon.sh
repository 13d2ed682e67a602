#!/usr/bin/env bash
# Runs on the device machine (repository root as cwd, .gpu/ packed with bench-mfalcon.mjs and
# bench-hstu.mjs): M-FALCON cached scoring on WebGPU (512 candidates, history 2048, H 4, D 128)
# beside one-by-one scoring, then the HSTU / causal FA2 table with an interleaved forward A/B.
# Writes under $OUT: gpu.txt, mfalcon-webgpu.{json,log}, hstu-webgpu.{json,log}.
set -uo pipefail
out=${OUT:-/tmp/hstu-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
timeout 240 bash .gpu/run.sh .gpu/app/bench-mfalcon.mjs --backend webgpu --out "$out/mfalcon-webgpu.json" 2>&1 |
  grep -v 'deprecated builtin' | tee "$out/mfalcon-webgpu.log"
timeout 300 bash .gpu/run.sh .gpu/app/bench-hstu.mjs --ab-rounds 8 --out "$out/hstu-webgpu.json" "$@" 2>&1 |
  grep -v 'deprecated builtin' | tee "$out/hstu-webgpu.log"
