#!/usr/bin/env bash
# Session 30's second device command: split-f16's hi mask fixed below f16's normal range (the
# first command's 'small V' case failed at o 1.7e-3 with the 13-bit mask).
# 1. bench-tc's 13 random cases at f32's 1e-5 with the new mask, --range-check, and every softmax
#    golden as f32 through the default route;
# 2. the split-f16 forward's cost of the wider mask (it runs once per P element): split-f16 f32 at
#    the table's three shapes, causal and not, the new build and the old one (bench-tc-oldmask:
#    the same tree with the 13-bit mask), alternating twice;
# 3. split-f16 against SIMT f32 at (4, 16, 4096, 64), causal and not.
# Pack: bash benchmarks/gpu/pack-s30b.sh (builds both, copies the goldens, packs .gpu).
# Run (carry [".gpu"]): bash benchmarks/gpu/h100-s30b.sh
source "$(dirname "$0")/h200-prelude.sh"
tc() { local name=$1 limit=$2 app=$3; shift 3
  timeout "$limit" bash .gpu/run.sh ".gpu/app/$app" "$@" --out "$out/$name.json" 2>&1 | keep >> "$log"
  echo "=== $name rc=${PIPESTATUS[0]} at ${SECONDS}s" >> "$log"; }
tc verify-range-f32 90 bench-tc.mjs --dtype f32 --skip-table --skip-variants --range-check
# --dtype f32 added in session 32: session 31 ran this step without it, so it checked the f16 kernels.
tc goldens-f32 80 bench-tc.mjs --dtype f32 --skip-table --skip-variants --skip-verify --goldens .gpu/app/goldens
for r in 1 2; do
  for b in new old; do
    app=bench-tc.mjs; [ "$b" = old ] && app=bench-tc-oldmask.mjs
    tc "split-$b-$r" 60 "$app" --skip-verify --skip-variants --skip-backward --impls 'split-f16 f32' --repeats 5
  done
done
# 3. D 64 with 4096 rows (the evidence the automatic choice would need to take split-f16 at D 64):
#    split-f16 (its new 4 x 1 tile) against SIMT f32, causal and not.
tc d64-4096 60 bench-tc.mjs --skip-verify --skip-variants --skip-backward --impls 'split-f16 f32,simt f32' \
  --shapes '[[4,16,4096,64]]' --repeats 5
grep -E '^ok|^FAIL|^table|===|rror|verification' "$log" | cut -c1-220 | tail -80
