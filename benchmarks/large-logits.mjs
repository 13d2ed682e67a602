// The backward's accuracy at large logits (issue 9 item 2) on the CPU backends, as a table and
// JSON: it runs the sweep test (packages/flash-attention/src/large-logits.test.ts: q scaled so
// that max |scale q.k| over the allowed pairs is 1e1 .. 1e6, GQA 4/2, Nq 37, Nk 45, D 32,
// causal and not) with ATTNKIT_REPORT set, which makes the test also record the relative L2 of
// dq, dk, dv against the float64 reference and each gradient's error over the bound it is held
// to ("x bound": at most 1 passes).
//
//   pnpm build && node benchmarks/large-logits.mjs [--out benchmarks/results/large-logits.json]
//
// WebGPU: the GPU bench checks the same cases before timing (benchmarks/gpu, checkLargeLogits).
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: { out: { type: 'string', default: join(here, 'results', 'large-logits.json') } },
});
const r = spawnSync('npx', ['vitest', 'run', 'src/large-logits.test.ts'], {
  cwd: join(here, '..', 'packages', 'flash-attention'),
  env: { ...process.env, ATTNKIT_REPORT: resolve(args.out) },
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
