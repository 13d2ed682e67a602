import {
  accuracy,
  type HstuBucketedRab,
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
  hstuBucketedRabDense,
  hstuCachedReference,
  hstuPositionBucket,
  hstuTimeBucket,
  softcap,
  toleranceFor,
} from '@attnkit/attention';
import { DeviceError, DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  type HstuAttentionOptions,
  type HstuBucketedRabOptions,
  type HstuCachedAttentionOptions,
  hstuAttention,
  hstuAttentionBackward,
  hstuCachedAttention,
} from './index.js';

// HSTU's bucketed rab (position / time tables, computed inside the kernels) through the public
// functions: o and every gradient (tables included) against the float64 reference with the same
// bucketedRab, equality with the dense form (hstuBucketedRabDense as `rab`, its drab summed per
// column), finite differences of the tables' gradients (ts), M-FALCON cached scoring, typed
// errors. Every backend runs it (ts, native, webgpu).
const BACKENDS = ['ts', 'native', 'webgpu'] as const;
type Backend = (typeof BACKENDS)[number];

const rng = new Rng(41);
// Odd lengths, an empty sequence, maxSeqLen above the longest.
const seqOffsets = Int32Array.of(0, 13, 13, 40, 47);
const L = 47;
const H = 2;
const N = 30;
const base: HstuAttentionOptions = { seqOffsets, maxSeqLen: N, alpha: 0.3 };
const q = rng.randn([L, H, 16]);
const k = rng.randn([L, H, 16]);
const v = rng.randn([L, H, 12]);
const dO = rng.randn([L, H, 12]);

/**
 * Unix-second timestamps (~1.7e9), non-decreasing per sequence with repeated values (gaps of 0)
 * and gaps from seconds to months, so many log buckets are reached; `shuffle` permutes them
 * (|dt| is symmetric; the kernels must not assume order).
 */
function timestamps(shuffle = false): number[] {
  const out: number[] = [];
  for (let b = 0; b + 1 < seqOffsets.length; b++) {
    let t = 1_700_000_000 + Math.floor(rng.uniform() * 1e6);
    const seq: number[] = [];
    for (let i = seqOffsets[b]!; i < seqOffsets[b + 1]!; i++) {
      const u = rng.uniform();
      t += u < 0.25 ? 0 : Math.floor(10 ** (u * 7));
      seq.push(t);
    }
    if (shuffle) seq.sort(() => rng.uniform() - 0.5);
    out.push(...seq);
  }
  return out;
}

/** A table [rows, cols] with entries of order 1 (comparable to alpha q.k, so the term matters). */
const table = (rows: number, cols: number) => rng.randn([rows, cols]);

interface Config {
  name: string;
  rab: () => HstuBucketedRab;
  extra?: Partial<HstuAttentionOptions>;
}

const CONFIGS: Config[] = [
  {
    name: 'position only, per-head, P = 2N - 1',
    rab: () => ({ positionTable: table(H, 2 * N - 1) }),
  },
  {
    name: 'time only, shared, log',
    rab: () => ({ timestampTable: table(1, 60), timestamps: timestamps() }),
  },
  {
    name: 'both, per-head position (P = 9: clamped), shared time, sqrt / 40, shuffled times',
    rab: () => ({
      positionTable: table(H, 9),
      timestampTable: table(1, 25),
      timestamps: Float64Array.from(timestamps(true)),
      bucketFn: 'sqrt',
      bucketDivisor: 40,
    }),
  },
  {
    name: 'both per-head, log / 0.5, timestamps as an f64 Tensor',
    rab: () => ({
      positionTable: table(H, 2 * N - 1),
      timestampTable: table(H, 12),
      timestamps: Tensor.from(Float64Array.from(timestamps()), [L], 'f64'),
      bucketDivisor: 0.5,
    }),
  },
  {
    name: 'both, with numTargets, a contextual prefix and a window',
    rab: () => ({
      positionTable: table(1, 2 * N - 1),
      timestampTable: table(H, 40),
      timestamps: timestamps(),
    }),
    extra: {
      numTargets: [3, 0, 5, 2],
      contextualSeqLen: 2,
      maxAttnLen: 6,
      minFullAttnSeqLen: 2,
    },
  },
  {
    name: 'both, non-causal',
    rab: () => ({
      positionTable: table(H, 2 * N - 1),
      timestampTable: table(H, 40),
      timestamps: Int32Array.from(timestamps(), (t) => t - 1_600_000_000),
    }),
    extra: { causal: false },
  },
];

let ctx: WebGpuContext | undefined;
beforeAll(async () => {
  ctx = await webGpuTestContext();
});
afterAll(() => ctx?.destroy());

const onDevice = (t: Tensor, backend: Backend) => (backend === 'webgpu' ? toWebGpu(t, ctx!) : t);
const toCpu = async (t: Tensor) => (t.device === 'cpu' ? t : t.toCpu());

/** bucketedRab with its tables on `backend`'s device (timestamps stay host data). */
function rabOn(br: HstuBucketedRab, backend: Backend): HstuBucketedRabOptions {
  const out = { ...br } as HstuBucketedRabOptions;
  if (br.positionTable) out.positionTable = onDevice(br.positionTable, backend);
  if (br.timestampTable) out.timestampTable = onDevice(br.timestampTable, backend);
  return out;
}

/** Skips `backend` when it needs WebGPU and there is none. */
function needs(backend: Backend, c: { skip: (why: string) => void }): void {
  if (backend === 'webgpu' && !ctx) c.skip('no WebGPU adapter');
}

describe('bucketedRab vs the float64 reference on every backend', () => {
  for (const backend of BACKENDS) {
    for (const cfg of CONFIGS) {
      for (const dtype of ['f32', 'f16', 'bf16'] as const) {
        test(`${backend}: ${cfg.name}, ${dtype} inputs`, async (c) => {
          needs(backend, c);
          const br = cfg.rab();
          const cast = (t: Tensor) => onDevice(t.astype(dtype), backend);
          const o: HstuAttentionOptions = {
            ...base,
            ...cfg.extra,
            bucketedRab: rabOn(br, backend),
            backend,
          };
          const fwd = await hstuAttention(cast(q), cast(k), cast(v), o);
          const g = await hstuAttentionBackward(cast(q), cast(k), cast(v), cast(dO), o);
          const h = (t: Tensor) => t.astype(dtype);
          const ref = { ...base, ...cfg.extra, bucketedRab: br };
          const rf = hstuAttentionReference(h(q), h(k), h(v), ref);
          const rg = hstuAttentionReferenceBackward(h(q), h(k), h(v), h(dO), ref);
          const t = toleranceFor({ dtype, maxSeqLen: N });
          expect(accuracy(await toCpu(fwd.o), rf.o).relL2).toBeLessThanOrEqual(t);
          // The term matters: without it the output is far from the reference.
          const plain = hstuAttentionReference(h(q), h(k), h(v), { ...base, ...cfg.extra });
          expect(accuracy(plain.o, rf.o).relL2).toBeGreaterThan(10 * t);
          const names = ['dq', 'dk', 'dv', 'dPositionTable', 'dTimestampTable'] as const;
          for (const n of names) {
            if (rg[n] === undefined) {
              expect(g[n], `${n} without its table`).toBeUndefined();
              continue;
            }
            const got = await toCpu(g[n]!);
            expect(got.shape, n).toEqual(rg[n]!.shape);
            expect(accuracy(got, rg[n]!).relL2, n).toBeLessThanOrEqual(t);
          }
          for (const n of ['dPositionTable', 'dTimestampTable'] as const)
            if (g[n]) expect(g[n]!.dtype, n).toBe('f32');
          expect(g.drab).toBeUndefined();
        });
      }
    }
  }
});

/**
 * The tables' gradients from a dense drab: drab[b, h', i, j] summed into the column of pair
 * (i, j) of each table (h' = 0 for a table with one row), i, j within each sequence.
 */
function columnSums(
  drab: Float32Array,
  heads: number,
  br: HstuBucketedRab,
  stamps: ArrayLike<number>,
): { pos?: Float64Array; time?: Float64Array } {
  const pt = br.positionTable;
  const tt = br.timestampTable;
  const pos = pt ? new Float64Array(pt.size) : undefined;
  const time = tt ? new Float64Array(tt.size) : undefined;
  for (let b = 0; b + 1 < seqOffsets.length; b++) {
    const s = seqOffsets[b]!;
    const len = seqOffsets[b + 1]! - s;
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < len; i++)
        for (let j = 0; j < len; j++) {
          const x = drab[((b * heads + h) * N + i) * N + j]!;
          if (pt && pos) {
            const row = pt.shape[0] === 1 ? 0 : h;
            pos[row * pt.shape[1]! + hstuPositionBucket(i, j, pt.shape[1]!)]! += x;
          }
          if (tt && time) {
            const row = tt.shape[0] === 1 ? 0 : h;
            const dt = stamps[s + Math.min(i + 1, len - 1)]! - stamps[s + j]!;
            const col = hstuTimeBucket(dt, tt.shape[1]!, br.bucketFn ?? 'log', br.bucketDivisor);
            time[row * tt.shape[1]! + col]! += x;
          }
        }
  }
  return { pos, time };
}

describe('bucketedRab equals its dense form (hstuBucketedRabDense as rab)', () => {
  for (const backend of BACKENDS) {
    for (const [name, shared, mod] of [
      ['per-head tables', false, false],
      ['shared tables', true, false],
      ['per-head tables, a softcap scoreMod after it', false, true],
    ] as const) {
      test(`${backend}: ${name}`, async (c) => {
        needs(backend, c);
        const stamps = timestamps();
        const br: HstuBucketedRab = {
          positionTable: table(shared ? 1 : H, 2 * N - 1),
          timestampTable: table(shared ? 1 : H, 30),
          timestamps: stamps,
        };
        const dense = hstuBucketedRabDense(seqOffsets, N, br).astype('f32');
        const heads = dense.shape[1]!;
        // The rab joins the score first: a user scoreMod (softcap) applies after it in both.
        const extra: Partial<HstuAttentionOptions> = mod ? { scoreMod: softcap(3) } : {};
        const oB: HstuAttentionOptions = {
          ...base,
          ...extra,
          bucketedRab: rabOn(br, backend),
          backend,
        };
        const oD: HstuAttentionOptions = {
          ...base,
          ...extra,
          rab: onDevice(dense, backend),
          backend,
        };
        const [Q, K, V, G] = [q, k, v, dO].map((t) => onDevice(t, backend)) as [
          Tensor,
          Tensor,
          Tensor,
          Tensor,
        ];
        const fb = await hstuAttention(Q, K, V, oB);
        const fd = await hstuAttention(Q, K, V, oD);
        expect(accuracy(await toCpu(fb.o), await toCpu(fd.o)).relL2).toBeLessThanOrEqual(1e-5);
        const gb = await hstuAttentionBackward(Q, K, V, G, oB);
        const gd = await hstuAttentionBackward(Q, K, V, G, oD);
        for (const n of ['dq', 'dk', 'dv'] as const)
          expect(accuracy(await toCpu(gb[n]), await toCpu(gd[n])).relL2, n).toBeLessThanOrEqual(
            1e-5,
          );
        const sums = columnSums((await toCpu(gd.drab!)).toFloat32Array(), heads, br, stamps);
        const dp = (await toCpu(gb.dPositionTable!)).toFloat32Array();
        const dt = (await toCpu(gb.dTimestampTable!)).toFloat32Array();
        expect(accuracy(dp, Float32Array.from(sums.pos!)).relL2).toBeLessThanOrEqual(1e-5);
        expect(accuracy(dt, Float32Array.from(sums.time!)).relL2).toBeLessThanOrEqual(1e-5);
      });
    }
  }
});

describe('finite differences of the tables (ts)', () => {
  test('dPositionTable and dTimestampTable match central differences of sum(o * dO)', async () => {
    const stamps = timestamps();
    const br: HstuBucketedRab = {
      positionTable: table(H, 2 * N - 1),
      timestampTable: table(1, 40),
      timestamps: stamps,
    };
    const o: HstuAttentionOptions = {
      ...base,
      numTargets: [2, 0, 4, 1],
      bucketedRab: br,
      backend: 'ts',
    };
    const g = await hstuAttentionBackward(q, k, v, dO, o);
    const G = dO.toFloat32Array();
    const loss = async (rab: HstuBucketedRab) => {
      const out = (await hstuAttention(q, k, v, { ...o, bucketedRab: rab })).o.toFloat32Array();
      let s = 0;
      for (let e = 0; e < out.length; e++) s += out[e]! * G[e]!;
      return s;
    };
    const eps = 1e-2;
    const check = async (which: 'positionTable' | 'timestampTable', at: number) => {
      const t = br[which]!;
      const up = t.toFloat32Array().slice();
      const dn = up.slice();
      up[at] = up[at]! + eps;
      dn[at] = dn[at]! - eps;
      const fd =
        ((await loss({ ...br, [which]: Tensor.from(up, t.shape) })) -
          (await loss({ ...br, [which]: Tensor.from(dn, t.shape) }))) /
        (2 * eps);
      const grad = (
        which === 'positionTable' ? g.dPositionTable! : g.dTimestampTable!
      ).toFloat32Array()[at]!;
      expect(Math.abs(grad - fd), `${which}[${at}]`).toBeLessThanOrEqual(
        2e-3 * Math.max(1, Math.abs(fd)),
      );
      return grad;
    };
    const P = 2 * N - 1;
    const c0 = (P - 1) / 2;
    // The diagonal (j = i), a few keys back, both heads; a column no causal pair reads (j > i): 0.
    for (const at of [c0, c0 - 1, c0 - 7, P + c0, P + c0 - 12]) {
      expect(Math.abs(await check('positionTable', at))).toBeGreaterThan(0);
    }
    expect(await check('positionTable', c0 + 3)).toBe(0);
    // The time columns some pair reaches, and one no pair reaches (gradient exactly 0).
    const dT = g.dTimestampTable!.toFloat32Array();
    const used = [...dT.keys()].filter((c) => dT[c] !== 0);
    expect(used.length).toBeGreaterThan(4);
    for (const at of used.slice(0, 6)) await check('timestampTable', at);
    const unused = [...dT.keys()].find((c) => dT[c] === 0);
    if (unused !== undefined) expect(await check('timestampTable', unused)).toBe(0);
  });
});

/** A jagged batch of history + candidates (cached.test.ts's), with the full sequences' k, v. */
function cachedProblem(history: number[], candidates: number[]) {
  const lens = history.map((n, b) => n + candidates[b]!);
  const offs = new Int32Array(lens.length + 1);
  const deltaOffsets = new Int32Array(lens.length + 1);
  for (let b = 0; b < lens.length; b++) {
    offs[b + 1] = offs[b]! + lens[b]!;
    deltaOffsets[b + 1] = deltaOffsets[b]! + candidates[b]!;
  }
  const Lk = offs[lens.length]!;
  const Ld = deltaOffsets[lens.length]!;
  const stamps: number[] = [];
  for (const n of lens) {
    let t = 1_710_000_000;
    for (let i = 0; i < n; i++) stamps.push((t += Math.floor(rng.uniform() * 5e4)));
  }
  return {
    deltaQ: rng.randn([Ld, H, 16]),
    k: rng.randn([Lk, H, 16]),
    v: rng.randn([Lk, H, 12]),
    seqOffsets: offs,
    deltaOffsets,
    stamps,
    maxSeqLen: Math.max(...lens) + 1,
  };
}

describe('hstuCachedAttention (M-FALCON) with bucketedRab', () => {
  for (const backend of BACKENDS) {
    for (const extra of [{}, { contextualSeqLen: 2 }] as const) {
      test(`${backend}: equals hstuCachedReference (full-sequence positions and times)${
        'contextualSeqLen' in extra ? ', contextual prefix' : ''
      }`, async (c) => {
        needs(backend, c);
        const p = cachedProblem([21, 0, 9, 33], [4, 3, 0, 7]);
        const br: HstuBucketedRab = {
          positionTable: table(H, 2 * p.maxSeqLen - 1),
          timestampTable: table(1, 50),
          timestamps: p.stamps,
        };
        const options: HstuCachedAttentionOptions = {
          seqOffsets: p.seqOffsets,
          deltaOffsets: p.deltaOffsets,
          maxSeqLen: p.maxSeqLen,
          alpha: 0.4,
          ...extra,
        };
        const got = await hstuCachedAttention(
          onDevice(p.deltaQ, backend),
          onDevice(p.k, backend),
          onDevice(p.v, backend),
          { ...options, bucketedRab: rabOn(br, backend), backend },
        );
        const ref = hstuCachedReference(p.deltaQ, p.k, p.v, { ...options, bucketedRab: br }).o;
        const o = await toCpu(got.o);
        expect(accuracy(o, ref).relL2).toBeLessThanOrEqual(toleranceFor({ dtype: 'f32' }));
        // The candidates read their full-sequence positions: rows 0.. of the sequence would differ.
        const plain = hstuCachedReference(p.deltaQ, p.k, p.v, options).o;
        expect(accuracy(plain, ref).relL2).toBeGreaterThan(1e-2);
      });
    }
  }
});

describe('bucketedRab errors', () => {
  const stamps = timestamps();
  const good = (): HstuBucketedRabOptions => ({
    positionTable: table(H, 2 * N - 1),
    timestampTable: table(H, 20),
    timestamps: stamps,
  });
  const bad = async (
    br: unknown,
    error: typeof ValueError | typeof ShapeError | typeof DTypeError | typeof DeviceError,
    argument: string,
    message?: RegExp,
    extra: Partial<HstuAttentionOptions> = {},
  ) => {
    const o = {
      ...base,
      ...extra,
      bucketedRab: br as HstuBucketedRabOptions,
      backend: 'ts' as const,
    };
    for (const call of [
      () => hstuAttention(q, k, v, o),
      () => hstuAttentionBackward(q, k, v, dO, o),
    ]) {
      const e = await call().then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e, argument).toBeInstanceOf(error);
      expect((e as ValueError).argument).toBe(argument);
      if (message) expect((e as Error).message).toMatch(message);
    }
  };
  test('rab and bucketedRab together: a ValueError naming both', async () => {
    await bad(good(), ValueError, 'bucketedRab', /rab.*bucketedRab/, {
      rab: rng.randn([1, 1, N, N]),
    });
  });
  test('not an object, no table, an unknown field', async () => {
    await bad(table(H, 9), ValueError, 'bucketedRab');
    await bad({}, ValueError, 'bucketedRab', /positionTable or a timestampTable/);
    await bad({ ...good(), positionTabel: table(H, 9) }, ValueError, 'bucketedRab.positionTabel');
  });
  test('tables: shape, dtype, device', async (c) => {
    await bad({ positionTable: table(H, 2 * N) }, ShapeError, 'bucketedRab.positionTable', /odd/);
    await bad({ positionTable: table(3, 9) }, ShapeError, 'bucketedRab.positionTable');
    await bad({ positionTable: rng.randn([9]) }, ShapeError, 'bucketedRab.positionTable');
    await bad({ positionTable: [1, 2, 3] }, ShapeError, 'bucketedRab.positionTable');
    await bad(
      { positionTable: table(H, 9).astype('f16') },
      DTypeError,
      'bucketedRab.positionTable',
    );
    await bad(
      { ...good(), timestampTable: rng.randn([H, 1, 4]) },
      ShapeError,
      'bucketedRab.timestampTable',
    );
    await bad(
      { ...good(), timestampTable: table(H, 4).astype('bf16') },
      DTypeError,
      'bucketedRab.timestampTable',
    );
    if (!ctx) c.skip('no WebGPU adapter');
    await bad(
      { positionTable: toWebGpu(table(H, 9), ctx!) },
      DeviceError,
      'bucketedRab.positionTable',
    );
  });
  test('timestamps: required, length L, integers spanning < 2^31, host data', async (c) => {
    const name = 'bucketedRab.timestamps';
    await bad(
      { ...good(), timestamps: undefined },
      ValueError,
      name,
      /required with timestampTable/,
    );
    await bad({ ...good(), timestamps: stamps.slice(1) }, ShapeError, name, /length 47/);
    await bad({ ...good(), timestamps: Tensor.from(new Float32Array(46), [46]) }, ShapeError, name);
    await bad(
      { ...good(), timestamps: stamps.map((t, i) => (i === 20 ? t + 0.5 : t)) },
      ValueError,
      name,
      /integer timestamps/,
    );
    await bad(
      { ...good(), timestamps: stamps.map((t, i) => (i === 14 ? t + 2 ** 31 : t)) },
      ValueError,
      name,
      /span less than 2\^31/,
    );
    await bad({ ...good(), timestamps: 'now' }, ValueError, name);
    if (!ctx) c.skip('no WebGPU adapter');
    await bad(
      { ...good(), timestamps: toWebGpu(Tensor.from(Float32Array.from(stamps), [L]), ctx!) },
      DeviceError,
      name,
    );
  });
  test('bucketFn and bucketDivisor', async () => {
    await bad({ ...good(), bucketFn: 'ln' }, ValueError, 'bucketedRab.bucketFn');
    await bad({ ...good(), bucketDivisor: 0 }, ValueError, 'bucketedRab.bucketDivisor');
    await bad({ ...good(), bucketDivisor: Number.NaN }, ValueError, 'bucketedRab.bucketDivisor');
  });
  test('hstuCachedAttention: timestamps are the whole sequences (length L of k)', async () => {
    const p = cachedProblem([10, 6], [3, 2]);
    const o = {
      seqOffsets: p.seqOffsets,
      deltaOffsets: p.deltaOffsets,
      maxSeqLen: 14,
      alpha: 1,
      backend: 'ts' as const,
    };
    const br = { timestampTable: table(1, 8), timestamps: p.stamps.slice(0, 5) };
    await expect(
      hstuCachedAttention(p.deltaQ, p.k, p.v, { ...o, bucketedRab: br }),
    ).rejects.toMatchObject({
      name: 'ShapeError',
      argument: 'bucketedRab.timestamps',
    });
    const ok = await hstuCachedAttention(p.deltaQ, p.k, p.v, {
      ...o,
      bucketedRab: { ...br, timestamps: p.stamps },
    });
    expect(ok.o.shape).toEqual([5, H, 12]);
  });
  test('permuted tiles are refused on every backend (ValueError naming permute)', async (c) => {
    // Identity permutations of each (head, sequence) slice: still a permutation hook.
    const idx = new Int32Array(H * L);
    for (let h = 0; h < H; h++)
      for (let b = 0; b + 1 < seqOffsets.length; b++)
        for (let t = seqOffsets[b]!; t < seqOffsets[b + 1]!; t++)
          idx[h * L + t] = t - seqOffsets[b]!;
    for (const backend of BACKENDS) {
      if (backend === 'webgpu' && !ctx) c.skip('no WebGPU adapter');
      const o: HstuAttentionOptions = {
        ...base,
        bucketedRab: rabOn({ positionTable: table(H, 9) }, backend),
        permute: { q: idx, k: idx },
        backend,
      };
      const e = await hstuAttention(
        onDevice(q, backend),
        onDevice(k, backend),
        onDevice(v, backend),
        o,
      ).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e, backend).toBeInstanceOf(ValueError);
      expect((e as ValueError).argument, backend).toBe('permute');
      // Without the rab the same permutation runs.
      const { bucketedRab: _, ...plain } = o;
      await hstuAttention(onDevice(q, backend), onDevice(k, backend), onDevice(v, backend), plain);
    }
  });
});
