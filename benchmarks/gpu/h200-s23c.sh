#!/usr/bin/env bash
# Session 23, one call for two jobs (device time was short): h200-s23b.sh (issue 20's new
# defaults verified and tabled), then as much of h200-s21.sh (issue 17's decode A/B at 8K,
# written in session 21, never run) as the call's time leaves: processes alternate the new code
# (bench-gpt), session 20's decode path (bench-gpt-s20), and the new code with nn's early
# submits off; each process is skipped once the call has run 470 s.
# Pack: node benchmarks/gpu/build.mjs && python3 benchmarks/gpu/s21ab.py && rm -rf .gpu/app &&
#   bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/dist/bench-gpt.mjs \
#   benchmarks/gpu/dist/bench-gpt-lifo.mjs benchmarks/gpu/dist/bench-gpt-s20.mjs
# Run (device tool, carry [".gpu"], timeout_s 590): bash benchmarks/gpu/h200-s23c.sh
source "$(dirname "$0")/h200-prelude.sh"
timeout 120 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-variants --verify-variants '[{}]' \
  --verify-backward --out "$out/verify-f16.json" 2>&1 | keep >> "$log"
echo "=== verify f16 rc=${PIPESTATUS[0]}" >> "$log"
timeout 220 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-verify --skip-variants --impls 'tc f16' \
  --repeats 10 --out "$out/table.json" 2>&1 | keep >> "$log"
echo "=== table rc=${PIPESTATUS[0]} at ${SECONDS}s" >> "$log"
echo "verified ok: $(grep -c "^ok" "$log")" >> "$log"
for b in bench-gpt bench-gpt-s20 late bench-gpt bench-gpt-s20 late; do
  left=$((560 - SECONDS))
  if [ "$left" -lt 90 ]; then echo "=== $b skipped at ${SECONDS}s" >> "$log"; continue; fi
  if [ "$b" = late ]; then app=bench-gpt; extra="--off earlySubmit"; else app=$b; extra=""; fi
  echo "=== $b, context 8192 ${extra}" >> "$log"
  timeout $((left - 10)) bash .gpu/run.sh .gpu/app/$app.mjs --skip train --contexts 8192 --warm \
    --gen-tokens 100,2 $extra --out "$out/$b-8192-$SECONDS.json" 2>&1 | keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]} at ${SECONDS}s" >> "$log"
done
grep -E '^table|^===|FAIL|rror|verification failures|^verified|^\| [0-9]|decode A/B' "$log" | cut -c1-250 | tail -60
