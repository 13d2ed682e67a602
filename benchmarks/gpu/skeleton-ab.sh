#!/usr/bin/env bash
# Runs on the device machine: the skeleton A/B of issue 8 in one command. First the WGSL FA2
# kernels of the commit before the skeleton (bench-webgpu-base.mjs, built from 2c5ee01's
# tooling/gpu with the --dtypes flag added), then this tree's kernels with --families (FA2,
# FlashSigmoid, softcap and ALiBi mods), f32 storage, the same shapes and timing method.
# Writes base.json, base.log, new.json, new.log, table-*.md under $OUT.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
run() { timeout "$1" bash "$here/../run.sh" "${@:2}" 2>&1 | grep -v 'deprecated builtin'; }
run 110 "$here/bench-webgpu-base.mjs" --dtypes f32 --repeats 7 --out "$out/base.json" --table "$out/table-base.md" | tee "$out/base.log"
run 170 "$here/bench-webgpu.mjs" --dtypes f32 --repeats 7 --families --out "$out/new.json" --table "$out/table-new.md" | tee "$out/new.log"
