#!/usr/bin/env bash
# Session 21 (issue 17), second command (written while no device was lent; not run yet): does
# nn's early-submit schedule (2, 4, 8, ... passes after an idle queue) earn its submits?
# GPT-2 small f16 training steps (vocabulary 50304), FA2 vs standard, with the default and with
# `--off earlySubmit`, alternating processes; then the new code's training step in f32 once.
# Pack: as h200-s21.sh (bench-gpt.mjs is the bundle used here).
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s21b.sh
source "$(dirname "$0")/h200-prelude.sh"
for off in "" earlySubmit "" earlySubmit; do
  echo "=== bench-gpt training, f16, vocab 50304${off:+, --off $off}" >> "$log"
  timeout 130 bash .gpu/run.sh .gpu/app/bench-gpt.mjs --skip generate --dtype f16 --vocab 50304 \
    ${off:+--off $off} --out "$out/gpt-train-f16${off:+-late}-$SECONDS.json" 2>&1 | keep >> "$log"
  echo "=== rc=${PIPESTATUS[0]}" >> "$log"
done
grep -E '^\| |^verify|^===|kernel options|Error|failed' "$log" | tail -c 9000
