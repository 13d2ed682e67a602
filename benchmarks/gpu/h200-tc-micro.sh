#!/usr/bin/env bash
# Issue 20 on the H200: what each subgroup-matrix operation costs (bench-tc-micro), then the
# tensor-core FA2 forward's default config and its noRoundTrip debug variant at (4, 16, 4096,
# 128) (checked against the SIMT kernel in the same run), for each Dawn toggle set in
# $TOGGLE_SETS (space-separated; "-" = the defaults only). SM clocks sampled every 100 ms into
# $OUT/clocks.csv.
# Pack: node benchmarks/gpu/build.mjs && bash ../shared/gpu/pack.sh \
#   benchmarks/gpu/dist/bench-tc-micro.mjs benchmarks/gpu/dist/bench-tc.mjs benchmarks/gpu/h200-tc-micro.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,utilization.gpu --format=csv -lms 100 \
  > "$out/clocks.csv" 2>/dev/null &
smi=$!
fa_variants=${FA_VARIANTS:-'[{},{"debug":"noRoundTrip"}]'}
for set in ${TOGGLE_SETS:--}; do
  extra=$([ "$set" = - ] && echo "" || echo "$set")
  tag=${extra:-default}
  echo "=== micro [$tag] $(date +%T.%N | cut -c1-12)" >> "$log"
  EXTRA_DAWN_TOGGLES=$extra timeout 300 bash .gpu/run.sh .gpu/app/bench-tc-micro.mjs \
    ${MICRO:+--variants "$MICRO"} --out "$out/micro-$tag.json" 2>&1 | grep -E 'RESULT|adapter|rror' | cut -c1-400 >> "$log"
  echo "=== micro [$tag] rc=${PIPESTATUS[0]} $(date +%T.%N | cut -c1-12)" >> "$log"
  if [ "${FA:-1}" = 1 ]; then
    echo "=== fa [$tag] $(date +%T.%N | cut -c1-12)" >> "$log"
    EXTRA_DAWN_TOGGLES=$extra timeout 200 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-table --skip-verify \
      --repeats 7 --variants "$fa_variants" --out "$out/fa-$tag.json" 2>&1 |
      grep -v 'deprecated builtin' | grep -E '^(variant|table)|rror' | cut -c1-400 >> "$log"
    echo "=== fa [$tag] rc=${PIPESTATUS[0]} $(date +%T.%N | cut -c1-12)" >> "$log"
  fi
done
kill $smi 2>/dev/null
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv >> "$log" 2>&1
