#!/usr/bin/env bash
# Session 20 (issue 17): GPT-2 small cached decoding on the H200 with the paged device cache
# (DevicePagedKvCache: pages written by copies queued with nn's passes, nn's paged attention)
# against session 12's DeviceKvCache (a concat per token), alternating in one process
# (bench-gpt --cache-ab; decoding verified against ts first), then 8K again in a fresh process.
# Run 1 alternated A B A B (the second of each pair was faster: a trend within the process);
# run 2 (h200-s20b.sh) warms both up and times them ABBA.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-gpt.mjs
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s20.sh
source "$(dirname "$0")/h200-prelude.sh"
echo "=== bench-gpt generation A/B, 1K and 8K, profiled" >> "$log"
timeout 240 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 1024,8192 \
  --gen-tokens 100,2 --cache-ab --profile --out "$out/gpt-gen.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
echo "=== bench-gpt generation A/B at 8K, fresh process" >> "$log"
timeout 180 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip train --contexts 8192 \
  --gen-tokens 100,2 --cache-ab --out "$out/gpt-gen-8k.json" 2>&1 | keep >> "$log"
echo "=== rc=${PIPESTATUS[0]}" >> "$log"
grep -E '^\||^verify|^===|A/B|Error|failed|profile' "$log" | tail -c 9000
