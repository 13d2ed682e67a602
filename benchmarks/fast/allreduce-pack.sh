#!/usr/bin/env bash
# Packs benchmarks/fast/allreduce.mjs to run on a machine without the workspace (the lent
# device machine's CPU cores, say): node, the bench and the device worker bundled with every
# workspace package, and the native addon, into .ardev/ (git-excluded). Then, there:
#   bash .ardev/run.sh        (carry [".ardev"]; results under $OUT)
# Needs `pnpm build` of @attnkit/native's addon here (or ATTNKIT_NATIVE_ADDON pointing at one).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
grep -qx '/.ardev/' .git/info/exclude || echo '/.ardev/' >> .git/info/exclude
rm -rf .ardev/app && mkdir -p .ardev/app
esbuild=$root/packages/fast-attention/node_modules/.bin/esbuild
# The bench with static imports (the repo copy loads each package's dist at run time).
sed -e "s#await dist('\([a-z-]*\)')#await import('@attnkit/\1')#" benchmarks/fast/allreduce.mjs \
  > packages/fast-attention/.allreduce-bench.mjs
trap 'rm -f packages/fast-attention/.allreduce-bench.mjs' EXIT
(cd packages/fast-attention &&
  "$esbuild" .allreduce-bench.mjs --bundle --platform=node --format=esm --target=node20 \
    --alias:@attnkit/fast-attention=./src/index.ts --external:webgpu \
    --outfile="$root/.ardev/app/bench.mjs" --log-level=warning &&
  "$esbuild" src/allreduce/worker.ts --bundle --platform=node --format=esm --target=node20 \
    --external:webgpu --outfile="$root/.ardev/app/allreduce-worker.js" --log-level=warning)
cp "${ATTNKIT_NATIVE_ADDON:-packages/native/build/Release/attnkit_native.node}" .ardev/app/
[ -s .ardev/node.xz ] || xz -T0 -6 -c "$(readlink -f "$(command -v node)")" > .ardev/node.xz
cat > .ardev/run.sh <<'RUN'
#!/usr/bin/env bash
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
xz -dc .ardev/node.xz > /tmp/node && chmod +x /tmp/node
export ATTNKIT_NATIVE_ADDON=$PWD/.ardev/app/attnkit_native.node
nproc > "$out/cpu.txt"; lscpu | head -20 >> "$out/cpu.txt"; uptime >> "$out/cpu.txt"
b() { local name=$1; shift; echo "=== $name $*"; timeout 170 /tmp/node .ardev/app/bench.mjs "$@" --out "$out/$name.json" 2>&1 | grep -v '^|---'; }
{
UV_THREADPOOL_SIZE=8 ATTNKIT_NUM_THREADS=1 b core-per-device-model --p 2,4,8 --n 4096 --h 8 --d 64 --dmodel 2048 --reps 11
UV_THREADPOOL_SIZE=8 ATTNKIT_NUM_THREADS=1 b core-per-device-wide --p 2,4,8 --n 2048 --h 8 --d 32 --dmodel 8192 --reps 11
b shared-pool-model --p 2,4,8 --n 4096 --h 8 --d 64 --dmodel 2048 --reps 11
} 2>&1 | tee "$out/log.txt"
RUN
chmod +x .ardev/run.sh
du -sh .ardev | awk '{print "packed .ardev/ (" $1 ")"}'
