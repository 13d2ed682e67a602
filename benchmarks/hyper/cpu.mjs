// HyperAttention on the CPU (issue 14 item 4, the CPU half): hyperAttention
// (@attnkit/hyper-attention; its exact pieces on FlashAttention's native kernels when the addon
// loads, else ts) beside exact FlashAttention-2 (flashAttention, same backend) in the same run,
// at B 1, H 4, D = Dv = 64, N in {4K, 8K, 16K, 32K}, causal and not, on two inputs:
//   random   q, k, v standard normal (flat softmax rows: the mass is spread over all keys);
//   planted  random plus 16 heavy keys per head: key j_t = 1.5 u_t for a random direction u_t
//            (standard normal, |u| ~ 8) and N / 64 random queries each moved by + u_t, so
//            each of those queries puts most of its softmax mass on one key (score ~ 1.5 |u|^2 /
//            8 = 12 against ~N(0, 1) elsewhere): the case the LSH exists for.
// Error: relative Frobenius ||O_hyper - O_fa2|| / ||O_fa2|| over the whole output (FA2 in f32
// is within 2e-5 of float64), the metric; and specErr, the largest over (batch, head)
// of ||O_hyper - O_fa2||_2 / ||V||_2 (spectral norms), an upper bound of the paper's
// guarantee ||O~ - O||_2 / (||D^-1 A||_2 ||V||_2) since the row-stochastic D^-1 A has
// ||D^-1 A||_2 >= 1: on random inputs O is an average of many v's with a tiny norm, so the
// Frobenius ratio measures the sampling noise against that tiny norm, while the paper's
// measures it against V's scale. Speedup: FA2's median time / hyper's median time.
// FLOPs: FA2 flashFlops (4 B H N^2 D, halved causal); hyper: 4 D per (query, key) pair it scores
// (its causal leaves, exact rectangles, diagonal blocks and sampleSize draws per query of each
// bottom-left block; the draws dropped in a query's own block counted as scored).
//
//   pnpm build   (tensor, attention, skeleton, flash-attention, hyper-attention, native)
//   node benchmarks/hyper/cpu.mjs [--reps 3] [--lengths 4096,8192,16384,32768] [--heads 4]
//       [--dim 64] [--sweep-n 16384 | --no-sweep] [--quick]
//       [--out benchmarks/hyper/results/<date>-cpu.json]
//
// Timing: a warm-up of every contender, then `reps` rounds calling each once (order flipped
// every other round, a 50 ms pause before each); best and median per contender.
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
const { flashAttention, flashFlops, nativeAvailable } = await dist('flash-attention');
const { hyperAttention, planHyperJobs, diagonalBlocks, HYPER_DEFAULTS } =
  await dist('hyper-attention');

const { values: a } = parseArgs({
  options: {
    reps: { type: 'string' },
    lengths: { type: 'string' },
    heads: { type: 'string' },
    'sweep-n': { type: 'string' },
    'no-sweep': { type: 'boolean', default: false },
    dim: { type: 'string' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const REPS = Number(a.reps ?? (a.quick ? 1 : 3));
const LENGTHS = (a.lengths ?? (a.quick ? '2048,4096' : '4096,8192,16384,32768'))
  .split(',')
  .map(Number);
const SWEEP_N = a['no-sweep'] ? -1 : Number(a['sweep-n'] ?? (a.quick ? 4096 : 16384));
const [B, H, D] = [1, Number(a.heads ?? 4), Number(a.dim ?? 64)];
const backend = (await nativeAvailable()) ? 'native' : 'ts';

async function interleaved(fns) {
  const ms = fns.map(() => []);
  const out = [];
  for (const fn of fns) out.push(await fn());
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
  return ms.map((xs, i) => ({ bestMs: Math.min(...xs), medianMs: med(xs), ms: xs, out: out[i] }));
}

/** (query, key) pairs hyperAttention scores per head (see the header). */
function hyperPairs(N, causal, o) {
  let pairs = 0;
  for (const j of planHyperJobs(N, N, causal, o.minSeqLen)) {
    const nq = j.q1 - j.q0;
    const nk = j.k1 - j.k0;
    if (j.kind === 'exact') pairs += j.causal ? (nq * (nq + 1)) / 2 : nq * nk;
    else {
      const b = diagonalBlocks(nq, nk, o.blockSize);
      for (let c = 0; c < b.count; c++) {
        const [qa, qb] = b.q(c);
        const [ka, kb] = b.k(c);
        pairs += (qb - qa) * (kb - ka);
      }
      if (b.count > 1) pairs += nq * o.sampleSize;
    }
  }
  return pairs;
}

function makeInputs(N, kind, rng) {
  const shape = [B, H, N, D];
  const q = rng.randn(shape);
  const k = rng.randn(shape);
  const v = rng.randn(shape);
  if (kind === 'planted') {
    const Q = q.toFloat32Array();
    const K = k.toFloat32Array();
    const u = new Float32Array(D);
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < 16; t++) {
        rng.fillNormal(u);
        const j = rng.int(0, N);
        for (let c = 0; c < D; c++) K[(h * N + j) * D + c] = 1.5 * u[c];
        for (let s = 0; s < N / 64; s++) {
          const i = rng.int(0, N);
          for (let c = 0; c < D; c++) Q[(h * N + i) * D + c] += u[c];
        }
      }
    }
    return { q: Tensor.from(Q, shape), k: Tensor.from(K, shape), v };
  }
  return { q, k, v };
}

function relFrob(x, ref) {
  const X = x.toFloat32Array();
  const R = ref.toFloat32Array();
  let d2 = 0;
  let r2 = 0;
  for (let i = 0; i < R.length; i++) {
    d2 += (X[i] - R[i]) ** 2;
    r2 += R[i] ** 2;
  }
  return Math.sqrt(d2 / r2);
}

/** Spectral norm of each [N, C] slice of a [B, H, N, C] f32 array (power iteration on its Gram). */
function sliceNorms(X, slices, N, C) {
  const out = [];
  for (let s = 0; s < slices; s++) {
    const G = new Float64Array(C * C);
    for (let i = 0; i < N; i++) {
      const r = (s * N + i) * C;
      for (let a = 0; a < C; a++) {
        const xa = X[r + a];
        for (let b = 0; b < C; b++) G[a * C + b] += xa * X[r + b];
      }
    }
    let x = new Float64Array(C).fill(1 / Math.sqrt(C));
    let lambda = 0;
    for (let it = 0; it < 200; it++) {
      const y = new Float64Array(C);
      for (let a = 0; a < C; a++) for (let b = 0; b < C; b++) y[a] += G[a * C + b] * x[b];
      const n = Math.hypot(...y);
      if (n === 0) break;
      const done = Math.abs(n - lambda) <= 1e-10 * n;
      lambda = n;
      x = y.map((t) => t / n);
      if (done) break;
    }
    out.push(Math.sqrt(lambda));
  }
  return out;
}

/** max over (batch, head) of ||O~ - O||_2 / ||V||_2 (see the header). */
function specErr(x, ref, v) {
  const X = x.toFloat32Array();
  const R = ref.toFloat32Array();
  const E = X.map((t, i) => t - R[i]);
  const [b, h, n, c] = x.shape;
  const e = sliceNorms(E, b * h, n, c);
  const vn = sliceNorms(v.toFloat32Array(), b * v.shape[1], v.shape[2], v.shape[3]);
  return Math.max(...e.map((t, i) => t / vn[Math.floor(i / (h / v.shape[1]))]));
}

const DEFAULT = {
  blockSize: HYPER_DEFAULTS.blockSize,
  sampleSize: HYPER_DEFAULTS.sampleSize,
  minSeqLen: HYPER_DEFAULTS.minSeqLen,
};
const SWEEP = [
  { ...DEFAULT, blockSize: 128 },
  { ...DEFAULT, blockSize: 512 },
  { ...DEFAULT, sampleSize: 64 },
  { ...DEFAULT, sampleSize: 1024 },
  { ...DEFAULT, minSeqLen: 2048 },
  { ...DEFAULT, minSeqLen: 8192 },
];

const rng = new Rng(14);
const rows = [];
for (const N of LENGTHS) {
  for (const kind of ['random', 'planted']) {
    const { q, k, v } = makeInputs(N, kind, rng);
    for (const causal of [true, false]) {
      const configs = N === SWEEP_N ? [DEFAULT, ...SWEEP] : [DEFAULT];
      const contenders = [
        ['fa2', () => flashAttention(q, k, v, { causal, backend }).then((r) => r.o)],
        ...configs.map((c) => [
          'hyper',
          () => hyperAttention(q, k, v, { ...c, causal, backend }).then((r) => r.o),
        ]),
      ];
      process.stderr.write(
        `N ${N} ${kind} ${causal ? 'causal' : 'full'}: ${contenders.length} contenders x ${REPS + 1} calls...\n`,
      );
      const times = await interleaved(contenders.map((c) => c[1]));
      const exact = times[0];
      for (const [i, [name]] of contenders.entries()) {
        const t = times[i];
        const c = i === 0 ? undefined : configs[i - 1];
        const flops = c
          ? 4 * D * B * H * hyperPairs(N, causal, c)
          : flashFlops({ batch: B, hq: H, nq: N, nk: N, d: D, causal }, 'forward');
        rows.push({
          N,
          input: kind,
          causal,
          contender: name,
          ...(c ?? {}),
          relErr: c ? relFrob(t.out, exact.out) : 0,
          specErr: c ? specErr(t.out, exact.out, v) : 0,
          medianMs: t.medianMs,
          bestMs: t.bestMs,
          speedup: exact.medianMs / t.medianMs,
          flops,
          gflops: flops / (t.medianMs * 1e6),
          ms: t.ms,
        });
      }
    }
  }
}

const head = [
  'N',
  'input',
  'mask',
  'contender',
  'block',
  'samples',
  'minSeqLen',
  'median ms',
  'best ms',
  'speedup',
  'rel err',
  'spec err',
  'GFLOP',
  'GFLOP/s',
];
const body = rows.map((r) => [
  String(r.N),
  r.input,
  r.causal ? 'causal' : 'full',
  r.contender,
  r.contender === 'fa2' ? '' : String(r.blockSize),
  r.contender === 'fa2' ? '' : String(r.sampleSize),
  r.contender === 'fa2' ? '' : String(r.minSeqLen),
  r.medianMs.toFixed(0),
  r.bestMs.toFixed(0),
  r.contender === 'fa2' ? '1' : `${r.speedup.toFixed(2)}x`,
  r.contender === 'fa2' ? '' : r.relErr.toFixed(3),
  r.contender === 'fa2' ? '' : r.specErr.toFixed(4),
  (r.flops / 1e9).toFixed(1),
  r.gflops.toFixed(0),
]);
const widths = head.map((h, i) => Math.max(h.length, ...body.map((x) => x[i].length)));
const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
console.log(line(head));
console.log(line(widths.map((w) => '-'.repeat(w))));
for (const b of body) console.log(line(b));

const meta = {
  date: new Date().toISOString(),
  machine: `${cpus().length} x ${cpus()[0]?.model ?? '?'}`,
  loadavg: loadavg(),
  backend,
  B,
  H,
  D,
  reps: REPS,
  command: `node benchmarks/hyper/cpu.mjs ${process.argv.slice(2).join(' ')}`.trim(),
};
console.log(JSON.stringify({ ...meta, rows: rows.length }));
const out =
  a.out ?? join(here, 'results', `${meta.date.slice(0, 10)}-cpu${a.quick ? '-quick' : ''}.json`);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify({ ...meta, rows }, null, 2)}\n`);
console.log(`wrote ${out}`);
