// A/B of the pure-TS FlashAttention-2 before and after the skeleton (issue 8), in one process:
// the public flashAttentionTs / flashAttentionBackwardTs of the commit before the skeleton
// (built in a git worktree) and of this tree, alternating every repetition on the same inputs.
//
//   git worktree add /tmp/base 2c5ee01 && (cd /tmp/base && pnpm install && pnpm build)
//   pnpm build && node benchmarks/ts-skeleton-ab.mjs /tmp/base [reps] > benchmarks/results/...json
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const base = resolve(process.argv[2] ?? '/tmp/base');
const reps = Number(process.argv[3] ?? 7);
const load = (root) =>
  import(pathToFileURL(resolve(root, 'packages/flash-attention/dist/index.js')).href);
const [before, after] = await Promise.all([load(base), load('.')]);
const { Rng } = await import(pathToFileURL(resolve('packages/tensor/dist/index.js')).href);

const [B, H, N, D] = [1, 8, 1024, 64];
const rng = new Rng(1);
const [q, k, v, dO] = [0, 1, 2, 3].map(() => rng.randn([B, H, N, D]));
const rows = [];
for (const causal of [false, true]) {
  const opts = { causal };
  const fwd = after.flashAttentionTs(q, k, v, opts);
  const calls = {
    forward: (m) => m.flashAttentionTs(q, k, v, opts),
    backward: (m) => m.flashAttentionBackwardTs(q, k, v, fwd.o, fwd.lse, dO, opts),
  };
  for (const [pass, call] of Object.entries(calls)) {
    const t = { before: [], after: [] };
    call(before);
    call(after);
    for (let i = 0; i < reps; i++) {
      const order = i % 2 ? ['after', 'before'] : ['before', 'after'];
      for (const name of order) {
        const t0 = performance.now();
        call(name === 'before' ? before : after);
        t[name].push(performance.now() - t0);
      }
    }
    const min = (xs) => Math.min(...xs);
    const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
    const row = {
      shape: [B, H, N, D],
      causal,
      pass,
      beforeMinMs: min(t.before),
      afterMinMs: min(t.after),
      beforeMedianMs: med(t.before),
      afterMedianMs: med(t.after),
      change: min(t.after) / min(t.before) - 1,
    };
    rows.push(row);
    console.error(
      `${pass.padEnd(8)} causal=${causal} before ${row.beforeMinMs.toFixed(1)} ms, after ${row.afterMinMs.toFixed(1)} ms (min of ${reps}): ${(100 * row.change).toFixed(1)}%`,
    );
  }
}
console.log(JSON.stringify({ date: new Date().toISOString(), base, reps, rows }, null, 2));
