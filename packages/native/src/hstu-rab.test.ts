import {
  type HstuOptions,
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
  hstuBucketedRabDense,
  hstuPositionBucket,
  hstuTimeBucket,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  resolveAttentionProblem,
  scoreBias,
  softcap,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { engineOrSkip, expectClose } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import {
  loadNative,
  type NativeAttentionProblem,
  type NativeEngine,
  type NativeHstuRab,
} from './index.js';

// HSTU's bucketed rab inside the engine (problem.hstuRab; the skeleton's HstuRabHook) against
// the float64 reference with `bucketedRab`, forward and backward (the tables' gradients too),
// on every ISA this CPU has: jagged batches with odd lengths and an empty sequence, per-head and
// shared tables, tables smaller than 2N - 1 (clamped columns), log and sqrt buckets, timestamps
// whose differences reach past the last bucket, the causal and the two-sided band, HSTU masks,
// and cached queries (Nq < Nk: the sequence's last tokens). Fresh inputs per case, outputs
// poisoned with NaN so every element must be written.

const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];

/**
 * The integer thresholds of the time buckets (the skeleton's hstuTimeThresholds, rebuilt here
 * from the reference's own bucket function: this package sits below the skeleton): entry t is
 * the smallest a >= 0 with bucket(a) >= t, for the buckets some int32 reaches.
 */
function thresholdsOf(numTime: number, fn: 'log' | 'sqrt'): Int32Array {
  const out = [0];
  const MAX = 0x7fffffff;
  for (let t = 1; t < numTime; t++) {
    if (hstuTimeBucket(MAX, numTime, fn) < t) break;
    let lo = out[t - 1]!;
    let hi = MAX;
    while (lo < hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      if (hstuTimeBucket(mid, numTime, fn) >= t) hi = mid;
      else lo = mid + 1;
    }
    out.push(lo);
  }
  return Int32Array.from(out);
}

interface RabCase {
  name: string;
  lens: number[];
  /** Queries per sequence (its last tokens); absent = all. */
  delta?: number[];
  heads: number;
  /** Table rows: 'h' per head, 1 shared; 0 = no such table. */
  posRows: 'h' | 1 | 0;
  timeRows: 'h' | 1 | 0;
  numPos?: number;
  numTime?: number;
  fn?: 'log' | 'sqrt';
  causal?: boolean;
  mask?: Pick<HstuOptions, 'numTargets' | 'contextualSeqLen' | 'maxAttnLen' | 'minFullAttnSeqLen'>;
  /** The timestamps (default stampsOf). */
  stamps?: number[];
}

/**
 * Timestamps whose differences sit on every bucket boundary of `thresholds` and every power of
 * two up to 2^30, each -1, +0 and +1: where an f32 |dt| would round into the next bucket or
 * octave (the vector paths' cell of |dt| comes from its f32 exponent, corrected).
 */
function edgeStamps(thresholds: Int32Array): number[] {
  const set = new Set<number>([0]);
  const edges = [...thresholds, ...Array.from({ length: 31 }, (_, e) => 2 ** e)];
  for (const x of edges) for (const d of [-1, 0, 1]) if (x + d >= 0) set.add(x + d);
  // Shuffled: neighbouring keys then fall in unrelated buckets.
  const out = [...set];
  const r = new Rng(5);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(r.uniform() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out.map((x) => x + 1_000_000_000);
}

const LOG_EDGES = edgeStamps(thresholdsOf(72, 'log'));
const SQRT_EDGES = edgeStamps(thresholdsOf(40, 'sqrt'));
// 200 reachable columns: more than the AVX-512 path keeps in registers (128), so it gathers.
const WIDE_EDGES = edgeStamps(thresholdsOf(200, 'sqrt'));

const CASES: RabCase[] = [
  {
    name: 'time columns on every log bucket boundary and power of two (+-1)',
    lens: [LOG_EDGES.length],
    heads: 1,
    posRows: 0,
    timeRows: 1,
    numTime: 72,
    causal: false,
    stamps: LOG_EDGES,
  },
  {
    name: 'time columns on every sqrt bucket boundary and power of two (+-1)',
    lens: [SQRT_EDGES.length],
    heads: 1,
    posRows: 0,
    timeRows: 1,
    numTime: 40,
    fn: 'sqrt',
    causal: false,
    stamps: SQRT_EDGES,
  },
  {
    name: 'time columns on every boundary of 200 sqrt buckets (+-1), per-head',
    lens: [WIDE_EDGES.length],
    heads: 2,
    posRows: 0,
    timeRows: 'h',
    numTime: 200,
    fn: 'sqrt',
    causal: false,
    stamps: WIDE_EDGES,
  },
  {
    name: 'per-head tables, causal, odd lengths, an empty sequence',
    lens: [13, 0, 29, 7],
    heads: 2,
    posRows: 'h',
    timeRows: 'h',
  },
  {
    name: 'shared small tables (clamped position columns), sqrt buckets',
    lens: [17, 5, 0, 23],
    heads: 3,
    posRows: 1,
    timeRows: 1,
    numPos: 9,
    numTime: 12,
    fn: 'sqrt',
  },
  {
    name: 'per-head positions, shared times, two-sided band',
    lens: [11, 19],
    heads: 2,
    posRows: 'h',
    timeRows: 1,
    causal: false,
  },
  { name: 'position table only', lens: [21, 4], heads: 2, posRows: 'h', timeRows: 0, numPos: 15 },
  { name: 'time table only', lens: [9, 26], heads: 2, posRows: 0, timeRows: 'h' },
  {
    name: 'HSTU mask: targets, contextual prefix, window',
    lens: [19, 0, 31, 6],
    heads: 2,
    posRows: 'h',
    timeRows: 1,
    mask: { numTargets: [4, 0, 5, 2], contextualSeqLen: 2, maxAttnLen: 5, minFullAttnSeqLen: 1 },
  },
  {
    name: 'cached: Nq < Nk (the last tokens), candidates as targets',
    lens: [15, 0, 27, 8],
    delta: [3, 0, 5, 8],
    heads: 2,
    posRows: 1,
    timeRows: 'h',
    mask: { numTargets: [3, 0, 5, 8] },
  },
];

/** Jagged integer timestamps: sorted per sequence, gaps log-uniform up to 1e8 (and some 0). */
function stampsOf(rng: Rng, L: number): number[] {
  const out: number[] = [];
  let t = 1_700_000_000;
  for (let x = 0; x < L; x++) {
    const u = rng.uniform();
    t += u < 0.15 ? 0 : Math.floor(Math.exp(rng.uniform() * Math.log(1e8)));
    out.push(t);
  }
  return out;
}

function rebased(cu: Int32Array, stamps: number[]): { keyTime: Int32Array; nextTime: Int32Array } {
  const L = cu[cu.length - 1]!;
  const keyTime = new Int32Array(L);
  const nextTime = new Int32Array(L);
  for (let b = 0; b + 1 < cu.length; b++) {
    const s = cu[b]!;
    const e = cu[b + 1]!;
    const min = Math.min(...stamps.slice(s, e));
    for (let t = s; t < e; t++) {
      keyTime[t] = stamps[t]! - min;
      nextTime[t] = stamps[Math.min(t + 1, e - 1)]! - min;
    }
  }
  return { keyTime, nextTime };
}

const offsets = (lens: number[]) => {
  const cu = new Int32Array(lens.length + 1);
  for (let b = 0; b < lens.length; b++) cu[b + 1] = cu[b]! + lens[b]!;
  return cu;
};

/** Rows of a [L, H, X] tensor's data at the given token indices. */
function rowsOf(t: Tensor, rows: number[]): Float32Array {
  const [, h, x] = t.shape as [number, number, number];
  const src = t.toFloat32Array();
  const out = new Float32Array(rows.length * h * x);
  for (const [n, r] of rows.entries()) out.set(src.subarray(r * h * x, (r + 1) * h * x), n * h * x);
  return out;
}

function build(rng: Rng, c: RabCase) {
  const H = c.heads;
  const D = 16;
  const Dv = 8;
  const cu = offsets(c.lens);
  const L = cu[c.lens.length]!;
  const N = Math.max(...c.lens);
  const delta = c.delta ?? c.lens;
  const qcu = offsets(delta);
  // Token index of each query row: sequence b's last delta[b] tokens.
  const qRows: number[] = [];
  for (let b = 0; b < c.lens.length; b++)
    for (let r = 0; r < delta[b]!; r++) qRows.push(cu[b]! + c.lens[b]! - delta[b]! + r);
  const qFull = rng.randn([L, H, D]);
  const k = rng.randn([L, H, D]);
  const v = rng.randn([L, H, Dv]);
  const dOq = rng.randn([qRows.length, H, Dv]);
  // The reference runs the whole sequences; rows that are not queries get dO = 0, so their
  // pairs add nothing to dK, dV or the tables.
  const dOFull = new Float32Array(L * H * Dv);
  const dOData = dOq.toFloat32Array();
  for (const [n, r] of qRows.entries())
    dOFull.set(dOData.subarray(n * H * Dv, (n + 1) * H * Dv), r * H * Dv);
  const q = Tensor.from(rowsOf(qFull, qRows), [qRows.length, H, D]);
  const numPos = c.numPos ?? 2 * N - 1;
  const numTime = c.numTime ?? 40;
  const fn = c.fn ?? 'log';
  const rows = (r: 'h' | 1 | 0) => (r === 'h' ? H : 1);
  const positionTable = c.posRows ? rng.randn([rows(c.posRows), numPos]) : undefined;
  const timestampTable = c.timeRows ? rng.randn([rows(c.timeRows), numTime]) : undefined;
  const stamps = c.stamps ?? stampsOf(rng, L);
  const alpha = 0.4;
  const causal = c.causal ?? true;
  const contextual = c.mask?.contextualSeqLen ?? 0;
  const refOptions: HstuOptions = {
    seqOffsets: cu,
    maxSeqLen: N,
    alpha,
    causal,
    bucketedRab: {
      ...(positionTable ? { positionTable } : {}),
      ...(timestampTable ? { timestampTable, timestamps: stamps } : {}),
      bucketFn: fn,
    },
    ...c.mask,
  };
  // The band contains the mask (a contextual prefix sees later tokens: no band then).
  const p = resolveAttentionProblem(q, k, v, {
    layout: 'THD',
    cuSeqlensQ: qcu,
    cuSeqlensK: cu,
    scale: alpha,
    causal: causal && contextual === 0,
  });
  const hstuRab: NativeHstuRab = {};
  if (positionTable) {
    hstuRab.posTable = positionTable.toFloat32Array();
    hstuRab.posHeads = positionTable.shape[0]!;
    hstuRab.numPos = numPos;
  }
  if (timestampTable) {
    hstuRab.timeTable = timestampTable.toFloat32Array();
    hstuRab.timeHeads = timestampTable.shape[0]!;
    hstuRab.numTime = numTime;
    Object.assign(hstuRab, rebased(cu, stamps));
    hstuRab.thresholds = thresholdsOf(numTime, fn);
  }
  const problem: NativeAttentionProblem = {
    ...p,
    normalize: { kind: 'silu', factor: 1 / N },
    hstuRab,
  };
  const m = c.mask;
  if (m) {
    problem.hstuMask = {
      numTargets: Int32Array.from(m.numTargets ?? c.lens.map(() => 0)),
      contextual,
      maxAttnLen: m.maxAttnLen ?? 0,
      minFull: m.minFullAttnSeqLen ?? 0,
      causal,
    };
  }
  return {
    q,
    qFull,
    k,
    v,
    dOq,
    dOFull: Tensor.from(dOFull, [L, H, Dv]),
    qRows,
    problem,
    refOptions,
    positionTable,
    timestampTable,
    N,
  };
}

/** The per-head case with both tables (the typed-error and no-grad tests start from it). */
const BASE_CASE = CASES.find((c) => c.name.startsWith('per-head tables'))!;

const nan = (n: number) => new Float32Array(n).fill(Number.NaN);

describe.each(engines.map((e) => [e.isa, e] as const))('hstuRab on %s', (_isa, engine) => {
  const rng = new Rng(4242);
  for (const c of CASES) {
    test(c.name, async () => {
      const x = build(rng, c);
      const tol = toleranceFor({ maxSeqLen: x.N });
      const o = nan((x.q.size / x.q.shape[2]!) * x.v.shape[2]!);
      await engine.flashForward(
        x.problem,
        x.q.toFloat32Array(),
        x.k.toFloat32Array(),
        x.v.toFloat32Array(),
        o,
        undefined,
      );
      const ref = hstuAttentionReference(x.qFull, x.k, x.v, x.refOptions);
      expectClose(o, rowsOf(ref.o, x.qRows), tol, 'o');
      // Split-K (FlashDecoding): the same tile code on key ranges of parallel tasks.
      const o3 = nan(o.length);
      await engine.flashForward(
        { ...x.problem, splits: 3 },
        x.q.toFloat32Array(),
        x.k.toFloat32Array(),
        x.v.toFloat32Array(),
        o3,
        undefined,
      );
      expectClose(o3, rowsOf(ref.o, x.qRows), tol, 'o (split-K)');

      const dq = nan(x.q.size);
      const dk = nan(x.k.size);
      const dv = nan(x.v.size);
      const dPositionTable = x.positionTable ? nan(x.positionTable.size) : undefined;
      const dTimestampTable = x.timestampTable ? nan(x.timestampTable.size) : undefined;
      await engine.flashBackward(
        x.problem,
        x.q.toFloat32Array(),
        x.k.toFloat32Array(),
        x.v.toFloat32Array(),
        undefined,
        undefined,
        x.dOq.toFloat32Array(),
        dq,
        dk,
        dv,
        undefined,
        undefined,
        { dPositionTable, dTimestampTable },
      );
      const g = hstuAttentionReferenceBackward(x.qFull, x.k, x.v, x.dOFull, x.refOptions);
      expectClose(dq, rowsOf(g.dq, x.qRows), tol, 'dq');
      expectClose(dk, g.dk, tol, 'dk');
      expectClose(dv, g.dv, tol, 'dv');
      if (dPositionTable) expectClose(dPositionTable, g.dPositionTable!, tol, 'dPositionTable');
      if (dTimestampTable) expectClose(dTimestampTable, g.dTimestampTable!, tol, 'dTimestampTable');
    });
  }

  test('BHND layout: the key-axis times at b maxSeqK + j', async () => {
    const c: RabCase = { name: 'bhnd', lens: [11, 11, 11], heads: 2, posRows: 'h', timeRows: 'h' };
    const x = build(rng, c);
    const [B, H, N, D, Dv] = [3, 2, 11, 16, 8];
    // [B N, H, X] (THD, equal lengths) <-> [B, H, N, X].
    const toBhnd = (t: Float32Array, X: number, back = false) => {
      const out = new Float32Array(t.length);
      for (let b = 0; b < B; b++)
        for (let h = 0; h < H; h++)
          for (let i = 0; i < N; i++)
            for (let e = 0; e < X; e++) {
              const thd = ((b * N + i) * H + h) * X + e;
              const bhnd = ((b * H + h) * N + i) * X + e;
              if (back) out[thd] = t[bhnd]!;
              else out[bhnd] = t[thd]!;
            }
      return out;
    };
    const starts = Int32Array.of(0, 0, 0);
    const problem: NativeAttentionProblem = {
      ...x.problem,
      layout: 'BHND',
      startQ: starts,
      startK: starts,
      totalQ: 0,
      totalK: 0,
    };
    const o = nan(B * H * N * Dv);
    await engine.flashForward(
      problem,
      toBhnd(x.q.toFloat32Array(), D),
      toBhnd(x.k.toFloat32Array(), D),
      toBhnd(x.v.toFloat32Array(), Dv),
      o,
      undefined,
    );
    const ref = hstuAttentionReference(x.qFull, x.k, x.v, x.refOptions);
    expectClose(toBhnd(o, Dv, true), ref.o, toleranceFor({ maxSeqLen: N }), 'o');
  });

  test('softmax with a softcap after the rab: equals the dense bias (reference and the dense dbias)', async () => {
    const x = build(rng, {
      name: 'softmax',
      lens: [13, 0, 21, 8],
      heads: 2,
      posRows: 'h',
      timeRows: 'h',
    });
    const { seqOffsets: cu, maxSeqLen: N, bucketedRab } = x.refOptions;
    const dense = hstuBucketedRabDense(cu, N, bucketedRab!);
    const [B, H] = dense.shape as [number, number];
    const strides = { batchStride: H * N * N, headStride: N * N, rowStride: N };
    const ref = {
      layout: 'THD' as const,
      cuSeqlensQ: cu,
      cuSeqlensK: cu,
      scale: 0.4,
      causal: true,
      scoreMod: [scoreBias(Tensor.from(dense.toFloat32Array(), dense.shape)), softcap(5)],
    };
    const problem: NativeAttentionProblem = {
      ...x.problem,
      normalize: { kind: 'softmax' },
      scoreMods: [{ kind: 'softcap', cap: 5 }],
    };
    const [q, k, v, dO] = [x.q, x.k, x.v, x.dOq].map((t) => t.toFloat32Array()) as [
      Float32Array,
      Float32Array,
      Float32Array,
      Float32Array,
    ];
    const o = nan(x.dOq.size);
    const lse = nan(x.q.size / 16);
    await engine.flashForward(problem, q, k, v, o, lse);
    const r = moddedAttentionReference(x.q, x.k, x.v, ref);
    const tol = toleranceFor({ maxSeqLen: N });
    expectClose(o, r.o, tol, 'o');
    expectClose(lse, r.lse!, tol, 'lse');
    const [dq, dk, dv] = [nan(x.q.size), nan(x.k.size), nan(x.v.size)];
    const dPositionTable = nan(x.positionTable!.size);
    const dTimestampTable = nan(x.timestampTable!.size);
    await engine.flashBackward(problem, q, k, v, o, lse, dO, dq, dk, dv, undefined, undefined, {
      dPositionTable,
      dTimestampTable,
    });
    const g = moddedAttentionReferenceBackward(x.q, x.k, x.v, x.dOq, ref);
    expectClose(dq, g.dq, tol, 'dq');
    expectClose(dk, g.dk, tol, 'dk');
    expectClose(dv, g.dv, tol, 'dv');
    // The tables' gradients = the dense bias's dS (the engine's dbias) summed per column.
    const dbias = new Float32Array(dense.size);
    await engine.flashBackward(
      {
        ...problem,
        hstuRab: undefined,
        scoreMods: [
          {
            kind: 'bias',
            bias: dense.toFloat32Array(),
            ...strides,
            dbias,
            dbiasBatchStride: strides.batchStride,
            dbiasHeadStride: strides.headStride,
          },
          { kind: 'softcap', cap: 5 },
        ],
      },
      q,
      k,
      v,
      o,
      lse,
      dO,
      nan(x.q.size),
      nan(x.k.size),
      nan(x.v.size),
    );
    const P = x.positionTable!.shape[1]!;
    const T = x.timestampTable!.shape[1]!;
    const wantP = new Float64Array(H * P);
    const wantT = new Float64Array(H * T);
    const stamps = bucketedRab!.timestamps as number[];
    for (let b = 0; b < B; b++) {
      const s = cu[b]!;
      const n = cu[b + 1]! - s;
      for (let h = 0; h < H; h++)
        for (let i = 0; i < n; i++)
          for (let j = 0; j < n; j++) {
            const dz = dbias[b * strides.batchStride + h * strides.headStride + i * N + j]!;
            wantP[h * P + hstuPositionBucket(i, j, P)]! += dz;
            const dt = stamps[s + Math.min(i + 1, n - 1)]! - stamps[s + j]!;
            wantT[h * T + hstuTimeBucket(dt, T)]! += dz;
          }
    }
    expectClose(dPositionTable, wantP, tol, 'dPositionTable');
    expectClose(dTimestampTable, wantT, tol, 'dTimestampTable');
  });

  test('without the table gradients the backward gives the same dq, dk, dv', async () => {
    const x = build(rng, BASE_CASE);
    const args = [x.q, x.k, x.v].map((t) => t.toFloat32Array());
    const run = async (grads: boolean) => {
      const out = [nan(x.q.size), nan(x.k.size), nan(x.v.size)] as const;
      await engine.flashBackward(
        x.problem,
        args[0]!,
        args[1]!,
        args[2]!,
        undefined,
        undefined,
        x.dOq.toFloat32Array(),
        ...out,
        undefined,
        undefined,
        grads
          ? {
              dPositionTable: nan(x.positionTable!.size),
              dTimestampTable: nan(x.timestampTable!.size),
            }
          : undefined,
      );
      return out;
    };
    const [a, b] = [await run(true), await run(false)];
    // Equal up to the order of dQ's per-thread sums (the pool hands tasks out dynamically).
    for (let n = 0; n < 3; n++) expectClose(b[n]!, a[n]!, 1e-6, `gradient ${n}`);
  });
});

describe('problem.hstuRab: typed errors naming the argument', () => {
  if (!base) return;
  const rng = new Rng(7);
  const x = build(rng, BASE_CASE);
  const fwd = (rab: unknown) =>
    base.run(
      'attention.forward',
      { ...x.problem, hstuRab: rab as NativeHstuRab },
      { q: x.q.toFloat32Array(), k: x.k.toFloat32Array(), v: x.v.toFloat32Array() },
      { o: new Float32Array(x.q.size / 2) },
    );
  const r = x.problem.hstuRab!;
  test('shapes, counts and kinds', async () => {
    await expect(fwd(r)).resolves.toBeUndefined();
    await expect(fwd(undefined)).resolves.toBeUndefined();
    await expect(fwd(7)).rejects.toThrow(/^problem\.hstuRab: expected \{ posTable/);
    await expect(fwd({})).rejects.toThrow(/^problem\.hstuRab: expected posTable or timeTable/);
    await expect(fwd({ ...r, posTable: Array.from(r.posTable!) })).rejects.toThrow(TypeError);
    await expect(fwd({ ...r, posTable: r.posTable!.subarray(1) })).rejects.toThrow(
      /^problem\.hstuRab\.posTable: expected \d+ elements \(2 heads x \d+ columns\)/,
    );
    await expect(fwd({ ...r, numPos: r.numPos! + 1 })).rejects.toThrow(
      /^problem\.hstuRab\.numPos: expected an odd integer/,
    );
    await expect(fwd({ ...r, posHeads: 3 })).rejects.toThrow(/^problem\.hstuRab\.posHeads/);
    await expect(fwd({ ...r, timeHeads: 0 })).rejects.toThrow(RangeError);
    await expect(fwd({ ...r, keyTime: r.keyTime!.subarray(1) })).rejects.toThrow(
      /^problem\.hstuRab\.keyTime: expected \d+ elements \(one per key token: totalK\)/,
    );
    await expect(fwd({ ...r, nextTime: Float32Array.from(r.nextTime!) })).rejects.toThrow(
      /^problem\.hstuRab\.nextTime: expected a Int32Array/,
    );
    const neg = Int32Array.from(r.keyTime!);
    neg[3] = -1;
    await expect(fwd({ ...r, keyTime: neg })).rejects.toThrow(
      /^problem\.hstuRab\.keyTime\[3\]: expected a time >= 0/,
    );
    await expect(fwd({ ...r, thresholds: new Int32Array(0) })).rejects.toThrow(
      /^problem\.hstuRab\.thresholds: expected 1 to numTime = 40 entries, got 0 entries/,
    );
    await expect(fwd({ ...r, thresholds: new Int32Array(41) })).rejects.toThrow(RangeError);
    await expect(fwd({ ...r, thresholds: Int32Array.of(1, 2) })).rejects.toThrow(
      /^problem\.hstuRab\.thresholds\[0\]: expected 0, got 1/,
    );
    await expect(fwd({ ...r, thresholds: Int32Array.of(0, 5, 4) })).rejects.toThrow(
      /^problem\.hstuRab\.thresholds\[2\]: expected at least thresholds\[1\] = 5/,
    );
  });

  test('no permuted tiles with it; queries are the last tokens', async () => {
    await expect(
      base.flashForward(
        x.problem,
        x.q.toFloat32Array(),
        x.k.toFloat32Array(),
        x.v.toFloat32Array(),
        new Float32Array(x.q.size / 2),
        undefined,
        { permQ: new Int32Array(2 * x.problem.totalQ) },
      ),
    ).rejects.toThrow(
      /^inputs\.permQ: expected undefined \(problem\.hstuRab reads the sequence order's positions/,
    );
    const seqQ = Int32Array.from(x.problem.seqQ);
    seqQ[0] = seqQ[0]! + 1;
    const seqK = Int32Array.from(x.problem.seqK);
    seqK[0] = seqK[0]! - 1;
    await expect(
      base.flashForward(
        { ...x.problem, seqK },
        x.q.toFloat32Array(),
        x.k.toFloat32Array(),
        x.v.toFloat32Array(),
        new Float32Array(x.q.size / 2),
        undefined,
      ),
    ).rejects.toThrow(/^problem\.seqQ\[0\]: expected at most seqK = 12/);
  });

  test("backward outputs: the tables' gradients only with their tables, right lengths", async () => {
    const bwd = (problem: NativeAttentionProblem, outs: Record<string, Float32Array>) =>
      base.run(
        'attention.backward',
        problem,
        {
          q: x.q.toFloat32Array(),
          k: x.k.toFloat32Array(),
          v: x.v.toFloat32Array(),
          dO: x.dOq.toFloat32Array(),
        },
        {
          dq: new Float32Array(x.q.size),
          dk: new Float32Array(x.k.size),
          dv: new Float32Array(x.v.size),
          ...outs,
        },
      );
    await expect(
      bwd(x.problem, { dPositionTable: new Float32Array(x.positionTable!.size) }),
    ).resolves.toBeUndefined();
    await expect(bwd(x.problem, { dPositionTable: new Float32Array(3) })).rejects.toThrow(
      /^outputs\.dPositionTable: expected \d+ elements \(hstuRab\.posHeads x numPos\), got 3 elements/,
    );
    const { timeTable: _t, ...posOnly } = r;
    await expect(
      bwd(
        { ...x.problem, hstuRab: posOnly },
        { dTimestampTable: new Float32Array(x.timestampTable!.size) },
      ),
    ).rejects.toThrow(
      /^outputs\.dTimestampTable: expected undefined \(the problem has no hstuRab\.timeTable\)/,
    );
  });
});
