# Sourced by the H200 scripts from session 14 on: the output folder ($OUT on the device), the
# log, the filter that keeps Dawn's compiler chatter out of it, and the GPU's clocks first.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
keep() { grep -v -E 'deprecated builtin|subgroupMatrix|^ *\^|warning|Compilation log|generated while|^\s*$|native engine unavailable|garbage-collected|^window' | cut -c1-400; }
timeout 10 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv >> "$log" 2>&1
