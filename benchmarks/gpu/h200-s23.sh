#!/usr/bin/env bash
# Session 23, call 2 (issue 20): the tensor-core forward with Q's matrices loaded straight from
# storage (qDirect: no Q block in workgroup memory), which frees the 17 KiB that larger key
# tiles need under the 48 KiB limit: 48-key tiles (keyMatrices 3), 64-key tiles in one staging
# buffer (keyMatrices 4, kvLayout single) and 128-row workgroups (8 subgroups). Each variant
# verified first on bench-tc's 11 cases against float64 (poisoned outputs; qDirect applies
# where every 16-row block of q lies within its buffer, the other cases stage Q), then timed at
# (4, 16, 4096, 128) non-causal f16, alternating with the default in one process. Then the same
# for the backward's dQ pass (blockDirect: Q's and dO's matrices from storage, so 4 or 8
# subgroups fit where the staged blocks held it to 2 at D = 128), verified on the 11 cases and
# timed beside the default backward.
# Pack: node benchmarks/gpu/build.mjs && rm -rf .gpu/app && bash ../shared/gpu/pack.sh benchmarks/gpu/dist/bench-tc.mjs
# Run (device tool, carry [".gpu"], timeout_s 600): bash benchmarks/gpu/h200-s23.sh
source "$(dirname "$0")/h200-prelude.sh"
V='{"qDirect":true}'
V3='{"qDirect":true,"keyMatrices":3}'
V4='{"qDirect":true,"keyMatrices":4,"kvLayout":"single"}'
V8='{"qDirect":true,"subgroups":8,"keyMatrices":2}'
timeout 300 bash .gpu/run.sh .gpu/app/bench-tc.mjs \
  --verify-variants "[$V,$V3,$V4,$V8]" \
  --variants "[{},$V,$V3,$V4,$V8,{},$V3,$V4,{\"qDirect\":true,\"keyMatrices\":3,\"prefetchK\":true,\"splitV\":true}]" \
  --skip-table --repeats 10 --out "$out/fwd.json" 2>&1 | keep >> "$log"
echo "=== bench-tc rc=${PIPESTATUS[0]}" >> "$log"
B1='{"dq":{"blockDirect":true}}'
B8='{"dq":{"blockDirect":true,"subgroups":8,"keyMatrices":1}}'
timeout 220 bash .gpu/run.sh .gpu/app/bench-tc.mjs --skip-verify --skip-variants --skip-table \
  --backward-variants "[$B1,$B8,$B1,$B8]" --time-backward --repeats 10 \
  --out "$out/bwd.json" 2>&1 | keep >> "$log"
echo "=== bench-tc backward rc=${PIPESTATUS[0]}" >> "$log"
echo "verified ok: $(grep -c "^ok" "$log")" >> "$log"
grep -E "^variant|^backward [^o]|^===|FAIL|rror|verification failures|^verified" "$log" | cut -c1-300 | tail -40
