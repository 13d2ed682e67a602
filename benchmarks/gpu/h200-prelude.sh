# Sourced by the H200 scripts from session 14 on: the output folder ($OUT on the device), the
# log, the filter that keeps Dawn's compiler chatter out of it, and the GPU's clocks first.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
keep() { grep -v -E 'deprecated builtin|subgroupMatrix|^ *\^|warning|Compilation log|generated while|^\s*$|native engine unavailable|garbage-collected|^window' | cut -c1-400; }
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv >> "$log" 2>&1
# `step NAME LIMIT CMD...`: runs CMD with the smaller of LIMIT seconds and what is left of the
# script's DEADLINE (default 580 s, under the device call's 590), logs its exit code and time,
# and skips it when under 15 s are left, so a slow step never costs the call's later output.
DEADLINE=${DEADLINE:-580}
left() { local l=$((DEADLINE - SECONDS)); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
step() { local name=$1 limit; limit=$(left "$2"); shift 2
  if [ "$limit" -lt 15 ]; then echo "=== $name skipped (deadline)" >> "$log"; return; fi
  echo "--- $name at ${SECONDS}s, limit ${limit}s" >> "$log"
  timeout "$limit" "$@" 2>&1 | keep >> "$log"
  echo "=== $name rc=${PIPESTATUS[0]} at ${SECONDS}s" >> "$log"; }
