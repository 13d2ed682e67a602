#!/usr/bin/env bash
# Runs on the device machine (see README.md beside this file): PyTorch SDPA first, then the
# WGSL kernels with the torch numbers merged into one table. Writes under $OUT:
#   gpu.txt, torch.json, torch.log, webgpu.json, webgpu.log, table.md
# Extra arguments go to bench-webgpu.mjs (e.g. --sweep, --quick).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
quick=()
for a in "$@"; do [ "$a" = --quick ] && quick=(--quick); done
PYTHONUNBUFFERED=1 timeout 100 python3 "$here/torch_sdpa.py" --out "$out/torch.json" "${quick[@]}" 2>&1 | tee "$out/torch.log"
timeout 270 bash "$here/../run.sh" "$here/bench-webgpu.mjs" --torch "$out/torch.json" \
  --out "$out/webgpu.json" --table "$out/table.md" "$@" 2>&1 | grep -v 'deprecated builtin' | tee "$out/webgpu.log"
