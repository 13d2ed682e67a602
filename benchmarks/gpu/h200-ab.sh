#!/usr/bin/env bash
# A/B of session 12's nn changes on the H200 (one device command, ~5 min): split-K weight
# gradients (kernel option splitK, variant suffix -nosplit) and eager encoding with early
# submits (encodeEagerly, suffix -queued), on the TransformerBlock step (f32 and f16, PyTorch
# in the same command) and on GPT-2 small's training step and decoding, with a CPU profile of
# the f32 block steps (where the host time of a step goes). AB_VARIANTS overrides the list.
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-ab.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
keep() { grep -v -E 'deprecated builtin|subgroupMatrix|^ *\^|warning|Compilation log|generated while|^\s*$|native engine unavailable|garbage-collected' | cut -c1-400; }
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv >> "$log" 2>&1
echo "=== bench-nn-block A/B" >> "$log"
s=$SECONDS
timeout 200 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs \
  --dtypes ${AB_VARIANTS:-f32,f32-queued,f16,f16-queued,f32,f32-queued,f16,f16-queued} \
  --steps 10 --warmup 3 --out "$out/nn-ab.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 10 --warmup 3 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
echo "=== cpu profile, f32 block steps" >> "$log"
timeout 90 bash .gpu/run.sh --cpu-prof --cpu-prof-dir="$out/prof" .gpu/app/bench-nn-block.mjs \
  --dtypes f32 --steps 20 --warmup 3 2>&1 | keep > "$out/prof-run.txt"
win=$(grep -o -- '--from-us [0-9]* --to-us [0-9]*' "$out/prof-run.txt" | tail -1)
tail -3 "$out/prof-run.txt" >> "$log"
timeout 30 /tmp/gpu-node .gpu/app/cpuprof-top.mjs "$out"/prof/*.cpuprofile $win 2>&1 | head -40 >> "$log"
rm -rf "$out/prof"
for q in "" --queued; do
  echo "=== bench-gpt f32 $q" >> "$log"
  s=$SECONDS
  timeout 120 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --contexts 8192 --gen-tokens 100,2 $q \
    --out "$out/gpt$q.json" 2>&1 | keep | grep -v '^window' >> "$log"
  echo "=== rc=${PIPESTATUS[0]} $((SECONDS - s)) s" >> "$log"
done
