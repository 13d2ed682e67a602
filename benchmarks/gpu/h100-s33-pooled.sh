#!/usr/bin/env bash
# Session 33: K and V of 1.94 GiB each (B 1, Hkv 32, 248K keys, f16: 2^31 - 2^26 bytes) fit one
# binding, but BufferPool's size class rounded their buffers up to 2^31 bytes, past Dawn's
# 2^31 - 4: the build of d481fa6 (expected: WebGPU validation errors at dispatch). The tree's
# pool gives a request that one binding holds a buffer one binding holds. Each partition's first
# call is checked against one-head calls (checkChunked), then timed.
# Pack: bash benchmarks/gpu/pack-s33b.sh. Run (carry [".gpu"], timeout_s 300): bash benchmarks/gpu/h100-s33-pooled.sh
source "$(dirname "$0")/h200-prelude.sh"
DEADLINE=${DEADLINE:-280}
export DISABLE_DAWN_TOGGLES=timestamp_quantization
ARGS=(--batch 1 --hkv 32 --nk 253952 --partitions fa2,splitK,streamK --repeats 5 --skip-verify)
step nocap 60 bash .gpu/run.sh .gpu/app/bench-lean-nocap.mjs "${ARGS[@]}" --out "$out/nocap.json"
step capped 120 bash .gpu/run.sh .gpu/app/bench-lean.mjs "${ARGS[@]}" --out "$out/capped.json"
grep -E '^ok|^FAIL|^---|===|rror|ceiling \(|^row|^1 ' "$log" | cut -c1-260 | tail -c 6000
