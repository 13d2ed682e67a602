#!/usr/bin/env bash
# Packs every bundle of the device runs that wait for a session with H200 time into one .gpu/,
# so that they run as consecutive device calls on one warm machine without repacking between
# them (each call carries [".gpu"]; a call more than 30 s after the last one starts a cold
# machine):
#   OUT-relative logs, one call each (timeout_s 600):
#     bash benchmarks/gpu/h200-stream.sh   issue 15 part 3, 256K streaming vs resident
#     bash benchmarks/gpu/h200-nn.sh       issue 16 item 7, nn block step vs PyTorch
#     bash benchmarks/gpu/h200-gpt.sh      issue 17, GPT-2 small FA2 vs standard, KV cache
#     bash .gpu/run.sh .gpu/app/bench-limits.mjs --n 1024,4096,16384 --d 64,128 --out $OUT/limits.json
#                                          issue 15 part 1 target: default-limits FastAttention
#                                          vs the tuned FA2 on the H200 (~2 min)
#     bash benchmarks/gpu/h200-next.sh     the three above that session 11 left, in one call
#     bash benchmarks/gpu/h200-s12.sh      nn block + torch, GPT-2 small f32 and f16, generation
#     bash benchmarks/gpu/h200-next12.sh   bench-matmul (the unrolled f16 stores), then h200-final.sh
#     bash benchmarks/gpu/h200-s13.sh      matmul + block robust / not, GPU timeline, torch, GPT-2 small
#     bash benchmarks/gpu/h200-s13b.sh     matmul by span, block early submit A/B, decode with cached bindings
#     bash benchmarks/gpu/h200-s13c.sh     same-process A/B of reuseBindings / submitEarly, decode on/off
#     bash benchmarks/gpu/h200-s13d.sh     block step on the final code + torch (short)
#     bash benchmarks/gpu/h200-s14.sh      staged tensor-core matmul, recorded attention A/B, GPT-2 small
#     bash benchmarks/gpu/h200-s14b.sh     block steps with clock samples, GPU timeline, generation
#     bash benchmarks/gpu/h200-s14c.sh     block step at steady clocks, robust and not, + torch
#     bash benchmarks/gpu/h200-s14d.sh     pipelined greedy decoding at 1K / 8K (two processes), warmed bench-matmul
#     bash benchmarks/gpu/h200-s14e.sh     decode pipelined / serial A/B, block recorded / async / late-submit A/B
#     bash benchmarks/gpu/h200-s14f.sh     final code: block f32 / f16 + torch, decoding at 8K (short)
#     bash benchmarks/gpu/h200-s15.sh      rows reductions / word copies: block A/B (-wdirect) profiled, torch, GPT-2 small
#     bash benchmarks/gpu/h200-s15b.sh     block: first-submit batch A/B (8 / 4 / 2), staged split-K A/B, torch
#     bash benchmarks/gpu/h200-s15c.sh     the new defaults timed 3x + f32 + first8, torch twice, GPT-2 small (first-batch A/B decode)
#     bash benchmarks/gpu/h200-s15d.sh     block after the rope-key fix + torch, GPT-2 small, lean decode unquantized + torch decode
#     bash benchmarks/gpu/h200-s15e.sh     block with steady warm-up + torch, lean decode passes spanning tiles (u8, u16, t512u4)
#     bash benchmarks/gpu/h200-s15f.sh     lean decode: 512 / 1024-thread layouts, stream-K 132 / 264 workers, split-K 8 / 16
#     bash benchmarks/gpu/h200-s15g.sh     final defaults: lean decode (no tuning) + torch decode, GPT-2 small decoding at 8K
#     bash benchmarks/gpu/h200-s15h.sh     GPT-2 small decoding at 8K, decode kernel 512 / 256 threads alternating
#     bash benchmarks/gpu/h200-s15i.sh     after the review mends: block verified + timed briefly, lean default decode verified + timed
#     bash benchmarks/gpu/h200-s16.sh      GLA: rewritten SIMT scores / state / o passes verified, timed unquantized, + torch
#     bash benchmarks/gpu/h200-s16b.sh     GLA: where the SIMT forward passes spend their time (--diag), robust / not
#     bash benchmarks/gpu/h200-s16c.sh     GLA: unrolled product loops verified + timed, --diag again
#     bash benchmarks/gpu/h200-s16d.sh     GLA: 4-element loads (vec4 bindings) verified + timed, --diag
#     bash benchmarks/gpu/h200-s16e.sh     GLA: 16-byte stores, o in its dtype (no cast), verified + timed, --diag
#     bash benchmarks/gpu/h200-s16f.sh     GLA final: both variants verified, T 256-8192 table (crossover vs our FA2), state-pass register sets A/B, + torch
#     bash benchmarks/gpu/h200-s16g.sh     GLA final vs fla chunk_gla forward in one command (see its header for the fla copy)
#     bash benchmarks/gpu/h200-s17.sh      GLA raw-word prefetch verified + timed, A/B vs the previous bundle (its header), --diag
#     bash benchmarks/gpu/h200-s17b.sh     lean decode: prefetch tunings (p) vs the default, + torch decode
#     bash benchmarks/gpu/h200-s17c.sh     GLA + dq/dk/dgk pass: T 256-8192 vs our FA2, backward A/B, --diag-backward, torch
#     bash benchmarks/gpu/h200-s17d.sh     GLA final: both variants verified, T 2048 / 8192, torch, fla fwd (+ bwd) in one command
# The allreduce bench on the device host's CPUs packs its own folder
# (benchmarks/fast/allreduce-pack.sh, carry [".ardev"]).
# Usage, from the project root: bash benchmarks/gpu/pack-queue.sh
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
node benchmarks/gpu/build.mjs
rm -rf .gpu/app
bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-stream.mjs \
  benchmarks/gpu/dist/bench-nn-block.mjs benchmarks/gpu/torch_nn_block.py \
  benchmarks/gpu/dist/bench-gpt.mjs benchmarks/gpu/dist/attnkit-gpt.mjs \
  ../shared/data/tinyshakespeare.txt benchmarks/gpu/cpuprof-top.mjs \
  benchmarks/gpu/dist/bench-limits.mjs benchmarks/gpu/dist/bench-matmul.mjs \
  benchmarks/gpu/dist/bench-lean.mjs benchmarks/gpu/torch_decode.py \
  benchmarks/gpu/dist/bench-gla.mjs benchmarks/gpu/torch_sdpa.py
ls .gpu/app
