#!/usr/bin/env bash
# Session 13's third H200 run (one device command, ~5 min after a cold start): same-process A/B
# of nn's reuseBindings (suffix -nocache) and submitEarly (-late) on the TransformerBlock step,
# PyTorch's block, and GPT-2 small's 8K decoding in fresh processes alternating the binding
# cache on and off (--no-reuse); the host CPU and its load first (run 3's host was ~2x slower).
# Pack: bash benchmarks/gpu/pack-queue.sh. Run (device tool, carry [".gpu"], timeout_s 600):
#   bash benchmarks/gpu/h200-s13c.sh
# (Run record: the -late variant, nn's submitEarly option, was removed after this run measured no gain.)
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
keep() { grep -v -E 'deprecated builtin|subgroupMatrix|^ *\^|warning|Compilation log|generated while|^\s*$|native engine unavailable|garbage-collected|^window|^verify' | cut -c1-400; }
{ lscpu | grep -E 'Model name|^CPU\(s\)'; uptime; } >> "$log" 2>&1
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv >> "$log" 2>&1
echo "=== bench-nn-block A/B" >> "$log"
timeout 170 bash .gpu/run.sh .gpu/app/bench-nn-block.mjs --steps 10 --warmup 3 \
  --dtypes f32,f32-nocache,f32-late,f16,f16-nocache,f16-late,f32,f32-nocache,f32-late,f16,f16-nocache,f16-late \
  --out "$out/nn-block.json" 2>&1 | keep >> "$log"
timeout 60 python3 .gpu/app/torch_nn_block.py --shape 8,1024,768,12 --steps 10 --warmup 3 \
  --out "$out/torch-nn.json" >> "$log" 2>&1
echo "=== torch rc=$?" >> "$log"
i=0
for flag in "" --no-reuse "" --no-reuse; do
  i=$((i + 1))
  echo "=== bench-gpt generation 8K ${flag:-default}" >> "$log"
  timeout 75 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 8192 --gen-tokens 60,2 \
    --profile $flag --out "$out/gpt-gen-$i.json" 2>&1 | keep | grep -E 'decode token|^\| 8192|^===' >> "$log"
done
{ uptime; } >> "$log" 2>&1
grep -E '^\||^===|torch|decode token|load average|Model name' "$log" | tail -c 11000
