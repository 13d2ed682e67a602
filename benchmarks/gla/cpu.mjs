// Gated linear attention on the CPU (issue 13 item 6, the CPU half): chunkGla (chunkwise GLA,
// C 64, @attnkit/linear-attention on the native backend, the C++ engine's gla ops, and on the ts
// backend) forward and forward + backward, beside our causal FlashAttention-2 (flashAttention, native backend when
// the addon loads, else ts) at the same (B, H, T, D): B 1, H 8, K = V = D = 64. GLA is BTHK
// [B, T, H, D] with gates log sigmoid(normal) / 16; FA2 is BHND [B, H, T, D], causal.
//
// FLOPs: each contender's own count (glaFlops: the chunk form's products, linear in T;
// flashFlops: 4 B H T^2 D / 2 forward, 2.5x backward); bytes: the minimum each must move (GLA:
// glaBytes; FA2: q, k, v, o, lse forward, plus dO, dq, dk, dv backward). The crossover is the
// smallest T of the sweep from which chunkGla stays faster than causal FA2, by median and by
// best time (on a shared machine the best is the steadier of the two), for each GLA backend;
// `ratio` = FA2 ms / chunkGla ms at each T (> 1: chunkGla faster).
//
//   pnpm build   (or at least tensor, attention, skeleton, flash-attention, linear-attention, native)
//   node benchmarks/gla/cpu.mjs [--reps 3] [--lengths 512,1024,2048,4096,8192] [--quick]
//       [--gla native,ts] [--ts-max 32768] [--out benchmarks/gla/results/<date>-cpu.json]
// --gla: the chunkGla backends to time (native only where its addon loads); --ts-max: the
// longest T the (slow, one-thread) ts backend runs at.
//
// Timing: a warm-up of every contender, then `reps` rounds calling each once (order flipped every
// other round, a 50 ms pause before each), best and median per contender: other processes on a
// shared machine slow the contenders alike.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
const { Rng, Tensor } = await dist('tensor');
const { flashAttention, flashAttentionBackward, flashFlops, nativeAvailable } =
  await dist('flash-attention');
const { chunkGla, chunkGlaBackward, glaBytes, glaFlops } = await dist('linear-attention');
const { registeredKernels } = await dist('attention');

const { values: a } = parseArgs({
  options: {
    reps: { type: 'string' },
    lengths: { type: 'string' },
    quick: { type: 'boolean', default: false },
    'forward-only': { type: 'boolean', default: false },
    gla: { type: 'string' },
    'ts-max': { type: 'string' },
    out: { type: 'string' },
  },
});
const REPS = Number(a.reps ?? (a.quick ? 1 : 3));
const LENGTHS = (a.lengths ?? (a.quick ? '512,2048' : '512,1024,2048,4096,8192'))
  .split(',')
  .map(Number);
const [B, H, D] = [1, 8, 64];
const faBackend = (await nativeAvailable()) ? 'native' : 'ts';
// The registry sees the native backend once @attnkit/native has loaded (nativeAvailable above).
const nativeGla = registeredKernels({ family: 'gla', pass: 'forward' }).some(
  (r) => r.backend === 'native' && (r.available?.() ?? true) === true,
);
const GLA_BACKENDS = (a.gla ?? 'native,ts')
  .split(',')
  .filter((b) => b === 'ts' || (b === 'native' && nativeGla));
const TS_MAX = Number(a['ts-max'] ?? Number.POSITIVE_INFINITY);

async function interleaved(fns) {
  const ms = fns.map(() => []);
  for (const fn of fns) await fn();
  for (let r = 0; r < REPS; r++) {
    const order = fns.map((_, i) => i);
    if (r % 2) order.reverse();
    for (const i of order) {
      await setTimeout(50);
      const t0 = process.hrtime.bigint();
      await fns[i]();
      ms[i].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  const med = (xs) => {
    const s = [...xs].sort((x, y) => x - y);
    return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  return ms.map((xs) => ({ bestMs: Math.min(...xs), medianMs: med(xs), ms: xs }));
}

/** FA2's minimum traffic in f32: q, k, v, o and lse forward; the backward adds dO, dq, dk, dv. */
const faBytes = (T, pass) => 4 * B * H * (pass === 'forward' ? 4 * T * D + T : 8 * T * D + T);

const rng = new Rng(13);
const rows = [];
for (const T of LENGTHS) {
  const bthk = [B, T, H, D];
  const bhnd = [B, H, T, D];
  const q = rng.randn(bthk);
  const k = rng.randn(bthk);
  const v = rng.randn(bthk);
  const dO = rng.randn(bthk);
  const gk = Tensor.from(
    rng
      .randn(bthk)
      .toFloat32Array()
      .map((x) => -Math.log1p(Math.exp(-x)) / 16),
    bthk,
  );
  // FA2 gets its own BHND tensors of the same size (the values do not change its work).
  const [fq, fk, fv, fdO] = [0, 1, 2, 3].map(() => rng.randn(bhnd));
  const fa = { causal: true, backend: faBackend };
  const glas = GLA_BACKENDS.filter((b) => b !== 'ts' || T <= TS_MAX);
  // [name, backend, fn]
  const contenders = [
    ...glas.map((backend) => ['gla forward', backend, () => chunkGla(q, k, v, gk, { backend })]),
    ['fa2 forward', faBackend, () => flashAttention(fq, fk, fv, fa)],
  ];
  if (!a['forward-only'])
    contenders.push(
      ...glas.map((backend) => [
        'gla fwd+bwd',
        backend,
        async () => {
          await chunkGla(q, k, v, gk, { backend });
          await chunkGlaBackward(q, k, v, gk, dO, { backend });
        },
      ]),
      [
        'fa2 fwd+bwd',
        faBackend,
        async () => {
          const r = await flashAttention(fq, fk, fv, fa);
          await flashAttentionBackward(fq, fk, fv, r.o, r.lse, fdO, fa);
        },
      ],
    );
  process.stderr.write(`T ${T}: ${contenders.length} contenders x ${REPS + 1} calls...\n`);
  const times = await interleaved(contenders.map((c) => c[2]));
  const lengths = Array(B).fill(T);
  for (const [i, [name, backend]] of contenders.entries()) {
    const gla = name.startsWith('gla');
    const both = name.endsWith('fwd+bwd');
    const count = (pass) =>
      gla
        ? glaFlops({ lengths, H, K: D, V: D }, 'chunk', pass)
        : flashFlops({ batch: B, hq: H, nq: T, nk: T, d: D, causal: true }, pass);
    const bytes = (pass) =>
      gla ? glaBytes({ lengths, H, K: D, V: D }, pass, 4) : faBytes(T, pass);
    const flops = count('forward') + (both ? count('backward') : 0);
    const moved = bytes('forward') + (both ? bytes('backward') : 0);
    const t = times[i];
    rows.push({
      T,
      contender: name,
      backend,
      flops,
      bytes: moved,
      medianMs: t.medianMs,
      bestMs: t.bestMs,
      gflops: flops / (t.medianMs * 1e6),
      gbps: moved / (t.medianMs * 1e6),
      ms: t.ms,
    });
  }
}

/**
 * Smallest T from which GLA stays faster than FA2 by `stat` ('medianMs' or 'bestMs'; null when
 * never, or not at the longest T), with the pairs it was read from.
 */
function crossover(kind, stat, backend) {
  const pairs = LENGTHS.map((T) => ({
    T,
    gla: rows.find((r) => r.T === T && r.contender === `gla ${kind}` && r.backend === backend)?.[
      stat
    ],
    fa: rows.find((r) => r.T === T && r.contender === `fa2 ${kind}`)?.[stat],
  })).filter((p) => p.gla !== undefined && p.fa !== undefined);
  let from = null;
  for (let i = pairs.length - 1; i >= 0 && pairs[i].gla < pairs[i].fa; i--) from = pairs[i].T;
  return { from, pairs };
}

const head = [
  'T',
  'contender',
  'backend',
  'median ms',
  'best ms',
  'GFLOP',
  'GFLOP/s',
  'MB',
  'GB/s',
];
const body = rows.map((r) => [
  String(r.T),
  r.contender,
  r.backend,
  r.medianMs.toFixed(1),
  r.bestMs.toFixed(1),
  (r.flops / 1e9).toFixed(2),
  r.gflops.toFixed(2),
  (r.bytes / 1e6).toFixed(1),
  r.gbps.toFixed(3),
]);
const widths = head.map((h, i) => Math.max(h.length, ...body.map((x) => x[i].length)));
const line = (cells) =>
  cells
    .map((c, i) => c.padEnd(widths[i]))
    .join('  ')
    .trimEnd();
console.log(line(head));
console.log(line(widths.map((w) => '-'.repeat(w))));
for (const b of body) console.log(line(b));
const kinds = a['forward-only'] ? ['forward'] : ['forward', 'fwd+bwd'];
// FA2 ms / chunkGla ms per T, kind and GLA backend (by median and by best).
const ratios = [];
for (const r of rows.filter((x) => x.contender.startsWith('gla'))) {
  const kind = r.contender.slice(4);
  const fa = rows.find((x) => x.T === r.T && x.contender === `fa2 ${kind}`);
  if (fa)
    ratios.push({
      T: r.T,
      kind,
      backend: r.backend,
      glaGflops: r.gflops,
      fa2Gflops: fa.gflops,
      ratioMedian: fa.medianMs / r.medianMs,
      ratioBest: fa.bestMs / r.bestMs,
    });
}
console.log('');
for (const x of ratios)
  console.log(
    `T ${x.T} ${x.kind} chunkGla (${x.backend}) ${x.glaGflops.toFixed(2)} GFLOP/s vs FA2 ${x.fa2Gflops.toFixed(2)}: FA2 ms / chunkGla ms = ${x.ratioMedian.toFixed(2)} (median), ${x.ratioBest.toFixed(2)} (best)`,
  );
const cross = {};
for (const backend of GLA_BACKENDS)
  for (const kind of kinds)
    for (const stat of ['medianMs', 'bestMs'])
      cross[`${backend} ${kind} ${stat}`] = crossover(kind, stat, backend);
for (const [key, c] of Object.entries(cross))
  console.log(
    `crossover (${key}): ${c.from === null ? `chunkGla not faster within T <= ${Math.max(...c.pairs.map((p) => p.T), 0)}` : `chunkGla faster than causal FA2 from T = ${c.from} on (of ${c.pairs.map((p) => p.T).join(', ')})`}`,
  );

const date = new Date().toISOString();
const out =
  a.out ?? join(here, 'results', `${date.slice(0, 10)}-cpu${a.quick ? '-quick' : ''}.json`);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  `${JSON.stringify(
    {
      date,
      node: process.version,
      cpu: cpus()[0]?.model,
      cores: cpus().length,
      loadavg: loadavg(),
      shape: { B, H, K: D, V: D, D },
      reps: REPS,
      glaBackends: GLA_BACKENDS,
      tsMax: Number.isFinite(TS_MAX) ? TS_MAX : null,
      faBackend,
      threads: process.env.ATTNKIT_NUM_THREADS ?? null,
      rows,
      ratios,
      crossover: cross,
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote ${out}`);
