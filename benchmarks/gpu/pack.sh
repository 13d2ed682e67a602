#!/usr/bin/env bash
# Builds the H100 kit and packs it into .gpu/ with ../shared/gpu/pack.sh:
#   bash benchmarks/gpu/pack.sh
# then the device tool: carry [".gpu"], command "bash .gpu/app/h100.sh" (add --sweep to also
# time tile variants). Results come back under $OUT (table.md, webgpu.json, torch.json, logs).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
node benchmarks/gpu/build.mjs
bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-webgpu.mjs benchmarks/gpu/torch_sdpa.py benchmarks/gpu/h100.sh
