#!/usr/bin/env bash
# Session 33, issue 19's stand-in on one GPU: FastAttention's tiling-AllReduce with P webgpu
# device workers (each its own Dawn device) on the one lent GPU, at the issue's shape (B 1, H 32,
# N 32768 and 131072, D 128; dModel 4096; inputs f32: the webgpu devices compute in f32), each
# result checked against P = 1 (relative L2). One GPU shared by P devices gives no speedup; this
# shows the machinery on real hardware at full size, and what the reduction costs there.
# Pack: bash benchmarks/fast/allreduce-gpu-pack.sh. Run (carry [".gpu"], timeout_s 590):
#   bash benchmarks/fast/h100-allreduce.sh
# STEPS=32k or 128k runs one (session 33: both steps, the 128k one failing on the upload bug fixed
# since; then `STEPS=128k DEADLINE=585`, alone: 386 s).
source "$(dirname "$0")/../gpu/h200-prelude.sh"
STEPS=${STEPS:-32k,128k}
[[ $STEPS == *32k* ]] && step ar-32k 150 bash .gpu/run.sh .gpu/app/bench-allreduce.mjs --backend webgpu --p 2,4 --n 32768 --h 32 \
  --d 128 --dmodel 4096 --tile-rows 2048 --reps 2 --out "$out/allreduce-32k.json"
# N 131072: one device's K / V (32 heads, f32) are 2 GiB each, past one WebGPU binding (the THD
# forward the devices run is not cut into binding chunks), so P = 2 is the reference there.
[[ $STEPS == *128k* ]] && step ar-128k 570 bash .gpu/run.sh .gpu/app/bench-allreduce.mjs --backend webgpu --p 4 --reference-p 2 \
  --n 131072 --h 32 --d 128 --dmodel 4096 --tile-rows 8192 --reps 1 --out "$out/allreduce-128k.json"
grep -E '^\||tiling|===|---|rror' "$log" | cut -c1-300 | tail -c 8000
