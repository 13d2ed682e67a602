/**
 * HyperAttention (issue 14 item 4, the WebGPU half) beside our exact FlashAttention-2 on WebGPU,
 * in the same run: hyperAttention (packages/hyper-attention: the LSH sort, gathers and combine
 * in WGSL, the exact pieces on FA2's WGSL kernels) and flashAttention (backend webgpu), BHND f32,
 * B 1, H heads, D = Dv, causal and not, on two inputs (as benchmarks/hyper/cpu.mjs):
 *   random   q, k, v normal-ish (flat softmax rows: the mass is spread over all keys);
 *   planted  random plus 16 heavy keys per head: key j_t = 1.5 u_t for a random direction u_t
 *            and N / 64 random queries each moved by + u_t, so each of those queries puts most
 *            of its softmax mass on one key: the case the LSH exists for.
 * Bundled with build.mjs (dist/bench-hyper.mjs).
 *
 *   node bench-hyper.mjs [--lengths 4096,16384,32768,65536,131072] [--dims 64,128] [--heads 4]
 *       [--masks causal,full] [--inputs random,planted] [--reps 3] [--sweep-n 32768]
 *       [--block-size 256] [--sample-size 256] [--min-seq-len 4096] [--out hyper.json]
 *       [--skip-verify]
 *
 * 1. Verification first (unless --skip-verify), outputs poisoned (NaN-filled): small problems
 *    (GQA, odd lengths, causal and not) against the ts backend on the same seed (the same
 *    buckets and draws: relative L2 <= 1e-5, forward and backward) and, in the exact limit
 *    (one block of every key), against float64 attention (KERNELS.md's f32 tolerance); a
 *    failure exits 1 after the table.
 * 2. Table: wall time of one call (the call to a queue wait; hyper's includes its CPU side: the
 *    plan, cached across calls of one shape, and the uploads of its index arrays), median and
 *    best of --reps after one warm-up call; speedup = FA2 median / hyper median; relative
 *    Frobenius error ||O_hyper - O_fa2|| / ||O_fa2|| with FA2's f32 output as the reference. At
 *    N = --sweep-n, blockSize and sampleSize are swept too. Rows print as they finish (JSON),
 *    the table at the end, and --out gets everything.
 */
import { writeFileSync } from 'node:fs';
import { accuracy, softmaxAttentionReference, toleranceFor } from '@attnkit/attention';
import { flashAttention } from '@attnkit/flash-attention';
import {
  HYPER_DEFAULTS,
  type HyperAttentionOptions,
  hyperAttention,
  hyperAttentionBackward,
} from '@attnkit/hyper-attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { createWebGpuContext, toWebGpu } from '@attnkit/webgpu';
import { benchDisabledToggles, benchToggles, median, randomData } from './common.js';

const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const flag = (name: string) => args.includes(`--${name}`);
const list = (name: string, dflt: string) => (value(name) ?? dflt).split(',');
const LENGTHS = list('lengths', '4096,16384,32768,65536,131072').map(Number);
const DIMS = list('dims', '64,128').map(Number);
const MASKS = list('masks', 'causal,full');
const INPUTS = list('inputs', 'random,planted');
const H = Number(value('heads') ?? 4);
const REPS = Number(value('reps') ?? 3);
const SWEEP_N = Number(value('sweep-n') ?? 32768);
const DEFAULT = {
  blockSize: Number(value('block-size') ?? HYPER_DEFAULTS.blockSize),
  sampleSize: Number(value('sample-size') ?? HYPER_DEFAULTS.sampleSize),
  minSeqLen: Number(value('min-seq-len') ?? HYPER_DEFAULTS.minSeqLen),
};
const SWEEP = [
  { ...DEFAULT, blockSize: 128 },
  { ...DEFAULT, blockSize: 512 },
  { ...DEFAULT, sampleSize: 64 },
  { ...DEFAULT, sampleSize: 1024 },
];

const ctx = await createWebGpuContext({
  dawnToggles: benchToggles(),
  disabledDawnToggles: benchDisabledToggles(),
});
console.log(`adapter ${JSON.stringify(ctx.adapterInfo)} backend=${ctx.backend}`);
const out: Record<string, unknown> = {
  adapter: ctx.adapterInfo,
  date: new Date().toISOString(),
  command: `node bench-hyper.mjs ${args.join(' ')}`.trim(),
  B: 1,
  H,
  reps: REPS,
  defaults: DEFAULT,
  timing: 'wall (call to queue wait)',
};
const save = () => value('out') && writeFileSync(value('out')!, JSON.stringify(out, null, 2));
let failures = 0;
const up = (t: Tensor) => toWebGpu(t, ctx);

async function verify(): Promise<void> {
  const lines: string[] = [];
  const rng = new Rng(14);
  ctx.poisonOutputs = true;
  const check = (what: string, a: ReturnType<typeof accuracy>, tol: number) => {
    const ok = a.nonFinite === 0 && a.relL2 <= tol;
    if (!ok) failures++;
    lines.push(`${what} ${a.relL2.toExponential(2)}${ok ? '' : ` FAIL (tol ${tol})`}`);
  };
  // [Hq, Hkv, Nq, Nk, D]: GQA, odd lengths, Nq != Nk; the recursion runs (minSeqLen 64).
  for (const [hq, hkv, nq, nk, d] of [
    [4, 2, 301, 301, 64],
    [2, 1, 203, 290, 128],
  ] as const) {
    const q = rng.randn([1, hq, nq, d]);
    const k = rng.randn([1, hkv, nk, d]);
    const v = rng.randn([1, hkv, nk, d]);
    const dO = rng.randn([1, hq, nq, d]);
    for (const causal of [false, true]) {
      const o: HyperAttentionOptions = {
        blockSize: 32,
        sampleSize: 24,
        minSeqLen: 64,
        causal,
        seed: 3,
        returnLse: true,
      };
      const tag = `(${hq},${hkv},${nq},${nk},${d}) ${causal ? 'causal' : 'full'}`;
      const want = await hyperAttention(q, k, v, { ...o, backend: 'ts' });
      const wantG = await hyperAttentionBackward(q, k, v, want.o, want.lse!, dO, {
        ...o,
        backend: 'ts',
      });
      const [gq, gk, gv, gdo] = [up(q), up(k), up(v), up(dO)];
      const got = await hyperAttention(gq, gk, gv, o);
      check(`${tag} o vs ts`, accuracy(await got.o.toCpu(), want.o), 1e-5);
      const g = await hyperAttentionBackward(gq, gk, gv, got.o, got.lse!, gdo, o);
      for (const name of ['dq', 'dk', 'dv'] as const)
        check(`${tag} ${name} vs ts`, accuracy(await g[name].toCpu(), wantG[name]), 2e-5);
      // The exact limit: one diagonal block holds every key.
      const ref = softmaxAttentionReference(q, k, v, { causal });
      const exact = await hyperAttention(gq, gk, gv, { blockSize: nk, minSeqLen: 1, causal });
      check(
        `${tag} exact limit o vs float64`,
        accuracy(await exact.o.toCpu(), ref.o),
        toleranceFor({ dtype: 'f32' }),
      );
      for (const t of [gq, gk, gv, gdo, got.o, got.lse!, g.dq, g.dk, g.dv, exact.o]) t.dispose();
    }
  }
  ctx.poisonOutputs = false;
  for (const l of lines) console.log(`verify ${l}`);
  out.verify = lines;
  save();
}

/** A small xorshift for the planted positions (the bench's data must be cheap at 10^8 elements). */
function ints(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return Math.floor((s / 4294967296) * n);
  };
}

function makeInputs(N: number, D: number, kind: string, seed: number) {
  const shape = [1, H, N, D];
  const n = H * N * D;
  const Q = randomData(n, seed);
  const K = randomData(n, seed + 1);
  const V = randomData(n, seed + 2);
  if (kind === 'planted') {
    const pick = ints(seed + 3);
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < 16; t++) {
        const u = randomData(D, seed * 131 + h * 17 + t + 5);
        const j = pick(N);
        for (let c = 0; c < D; c++) K[(h * N + j) * D + c] = 1.5 * u[c]!;
        for (let s = 0; s < N / 64; s++) {
          const i = pick(N);
          for (let c = 0; c < D; c++) Q[(h * N + i) * D + c]! += u[c]!;
        }
      }
    }
  }
  return {
    q: up(Tensor.from(Q, shape)),
    k: up(Tensor.from(K, shape)),
    v: up(Tensor.from(V, shape)),
  };
}

/** Wall ms of `fn` (call to queue wait): one warm-up call, then REPS; what it returns is disposed. */
async function wall(fn: () => Promise<Tensor[]>): Promise<{ medianMs: number; bestMs: number }> {
  for (const t of await fn()) t.dispose();
  await ctx.sync();
  const ms: number[] = [];
  for (let r = 0; r < REPS; r++) {
    const t0 = performance.now();
    const res = await fn();
    await ctx.sync();
    ms.push(performance.now() - t0);
    for (const t of res) t.dispose();
  }
  return { medianMs: median(ms), bestMs: Math.min(...ms) };
}

function relFrob(x: Float32Array, ref: Float32Array): number {
  let d2 = 0;
  let r2 = 0;
  for (let i = 0; i < ref.length; i++) {
    d2 += (x[i]! - ref[i]!) ** 2;
    r2 += ref[i]! ** 2;
  }
  return Math.sqrt(d2 / r2);
}

const rows: Record<string, unknown>[] = [];

async function table(): Promise<void> {
  let seed = 100;
  for (const N of LENGTHS) {
    for (const D of DIMS) {
      for (const kind of INPUTS) {
        const { q, k, v } = makeInputs(N, D, kind, (seed += 10));
        for (const mask of MASKS) {
          const causal = mask === 'causal';
          const base = { N, D, H, input: kind, causal };
          let exactO: Float32Array | undefined;
          let fa2Ms: number | undefined;
          try {
            const first = await flashAttention(q, k, v, { causal, backend: 'webgpu' });
            exactO = (await first.o.toCpu()).data() as Float32Array;
            first.o.dispose();
            first.lse.dispose();
            const t = await wall(async () => {
              const r = await flashAttention(q, k, v, { causal, backend: 'webgpu' });
              return [r.o, r.lse];
            });
            fa2Ms = t.medianMs;
            const row = { ...base, contender: 'fa2', ...t, speedup: 1, relErr: 0 };
            rows.push(row);
            console.log(`row ${JSON.stringify(row)}`);
          } catch (e) {
            const row = { ...base, contender: 'fa2', error: String(e).slice(0, 400) };
            rows.push(row);
            console.log(`row ${JSON.stringify(row)}`);
          }
          for (const c of N === SWEEP_N ? [DEFAULT, ...SWEEP] : [DEFAULT]) {
            const row: Record<string, unknown> = { ...base, contender: 'hyper', ...c };
            try {
              const o = { ...c, causal };
              const first = await hyperAttention(q, k, v, o);
              const got = (await first.o.toCpu()).data() as Float32Array;
              first.o.dispose();
              if (exactO) row.relErr = relFrob(got, exactO);
              const t = await wall(async () => [(await hyperAttention(q, k, v, o)).o]);
              Object.assign(row, t);
              if (fa2Ms) row.speedup = fa2Ms / t.medianMs;
            } catch (e) {
              row.error = String(e).slice(0, 400);
            }
            rows.push(row);
            console.log(`row ${JSON.stringify(row)}`);
          }
          out.rows = rows;
          save();
        }
        for (const t of [q, k, v]) t.dispose();
      }
    }
  }
  const f = (x: unknown, d = 1) => (typeof x === 'number' ? x.toFixed(d) : '-');
  console.log(
    `\nhyperAttention vs exact FA2 on WebGPU, f32, B 1, H ${H} (wall ms, median of ${REPS})`,
  );
  console.log(
    '| N | D | input | mask | contender | block | samples | minSeqLen | median ms | best ms | speedup | rel err |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    const hyper = r.contender === 'hyper';
    console.log(
      `| ${r.N} | ${r.D} | ${r.input} | ${r.causal ? 'causal' : 'full'} | ${r.contender} | ${hyper ? r.blockSize : ''} | ${hyper ? r.sampleSize : ''} | ${hyper ? r.minSeqLen : ''} | ${f(r.medianMs)} | ${f(r.bestMs)} | ${hyper ? `${f(r.speedup, 2)}x` : '1'} | ${hyper ? f(r.relErr, 4) : ''} |${r.error ? ` error: ${r.error}` : ''}`,
    );
  }
}

if (!flag('skip-verify')) await verify();
await table();
save();
console.log(`failures ${failures}`);
process.exit(failures > 0 ? 1 : 0);
