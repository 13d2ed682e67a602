import { toleranceFor } from '@attnkit/attention';
import { nativeAvailable } from '@attnkit/skeleton';
import {
  DeviceError,
  type DType,
  encodeHalfArray,
  Rng,
  ShapeError,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { expectClose, poisonAllocations, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  CacheFullError,
  DEFAULT_MAX_QUERY_LENGTH,
  KvCache,
  type LeanAttentionOptions,
  leanAttention,
} from './index.js';

/**
 * Paged K/V (AttentionOptions.paged): every backend x partition reads K and V through the block
 * table and equals an independent float64 reference computed from the sequences' contiguous
 * keys. Pools are built with shuffled, non-contiguous pages, the pages no sequence uses filled
 * with NaN (a read through a wrong row poisons the output), lengths not a multiple of the page
 * or the tile, and a sequence of length 0.
 */

interface PagedCase {
  q: Tensor;
  kPool: Tensor;
  vPool: Tensor;
  paged: { pageSize: number; blockTable: Int32Array; lengths: Int32Array };
  /** Per sequence: keys [len, Hkv, D] and values [len, Hkv, Dv] in f64 (the stored values). */
  keys: Float64Array[];
  values: Float64Array[];
  dims: { b: number; hq: number; hkv: number; nq: number; d: number; dv: number };
}

/** Decoded values of t (f16 storage rounds; the reference sees what the kernels read). */
const f64Of = (t: Tensor) => Float64Array.from(t.toFloat32Array());

function pagedCase(
  rng: Rng,
  o: {
    lengths: number[];
    hq: number;
    hkv: number;
    nq: number;
    d: number;
    dv: number;
    pageSize: number;
    dtype: DType;
    spare?: number;
  },
): PagedCase {
  const { lengths, hq, hkv, nq, d, dv, pageSize: ps, dtype } = o;
  const b = lengths.length;
  const need = lengths.map((n) => Math.ceil(n / ps));
  const maxPages = Math.max(1, ...need) + 1; // a padding column, as a cache's tables may have
  const numPages = need.reduce((a, x) => a + x, 0) + (o.spare ?? 3);
  // A shuffled pool: sequences get random, non-contiguous pages.
  const order = Array.from({ length: numPages }, (_, i) => i);
  for (let i = numPages - 1; i > 0; i--) {
    const j = rng.int(0, i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const blockTable = new Int32Array(b * maxPages).fill(-1);
  let next = 0;
  for (let s = 0; s < b; s++)
    for (let p = 0; p < need[s]!; p++) blockTable[s * maxPages + p] = order[next++]!;
  const kPoolF = new Float32Array(numPages * ps * hkv * d).fill(Number.NaN);
  const vPoolF = new Float32Array(numPages * ps * hkv * dv).fill(Number.NaN);
  const keys: Float64Array[] = [];
  const values: Float64Array[] = [];
  for (let s = 0; s < b; s++) {
    const n = lengths[s]!;
    const kt = rng.randn([Math.max(1, n), hkv, d], dtype);
    const vt = rng.randn([Math.max(1, n), hkv, dv], dtype);
    const kf = kt.toFloat32Array();
    const vf = vt.toFloat32Array();
    keys.push(f64Of(kt).subarray(0, n * hkv * d));
    values.push(f64Of(vt).subarray(0, n * hkv * dv));
    for (let t = 0; t < n; t++) {
      const row = blockTable[s * maxPages + Math.floor(t / ps)]! * ps + (t % ps);
      kPoolF.set(kf.subarray(t * hkv * d, (t + 1) * hkv * d), row * hkv * d);
      vPoolF.set(vf.subarray(t * hkv * dv, (t + 1) * hkv * dv), row * hkv * dv);
    }
  }
  // Pool rows no sequence holds stay NaN (f16 NaN in an f16 pool).
  const pool = (x: Float32Array, shape: number[]) =>
    dtype === 'f16' ? Tensor.from(encodeHalfArray('f16', x), shape, 'f16') : Tensor.from(x, shape);
  const kPool = pool(kPoolF, [numPages, ps, hkv, d]);
  const vPool = pool(vPoolF, [numPages, ps, hkv, dv]);
  return {
    q: rng.randn([b, hq, nq, d], dtype),
    kPool,
    vPool,
    paged: { pageSize: ps, blockTable, lengths: Int32Array.from(lengths) },
    keys,
    values,
    dims: { b, hq, hkv, nq, d, dv },
  };
}

/** Float64 decode attention of the case's contiguous keys: bottom-right causal / window. */
function reference(c: PagedCase, causal: boolean, window: [number, number] = [-1, -1]) {
  const { b: B, hq, hkv, nq, d, dv } = c.dims;
  const Q = f64Of(c.q);
  const o = new Float64Array(B * hq * nq * dv);
  const lse = new Float64Array(B * hq * nq);
  const scale = 1 / Math.sqrt(d);
  let right = window[1];
  if (causal) right = right < 0 ? 0 : Math.min(right, 0);
  for (let b = 0; b < B; b++) {
    const nk = c.paged.lengths[b]!;
    const K = c.keys[b]!;
    const V = c.values[b]!;
    for (let h = 0; h < hq; h++) {
      const kh = Math.floor(h / (hq / hkv));
      for (let i = 0; i < nq; i++) {
        const diag = i + nk - nq;
        const lo = window[0] < 0 ? 0 : Math.max(0, diag - window[0]);
        const hi = right < 0 ? nk : Math.min(nk, diag + right + 1);
        const row = (b * hq + h) * nq + i;
        if (hi <= lo) {
          lse[row] = Number.NEGATIVE_INFINITY;
          continue;
        }
        const s: number[] = [];
        for (let j = lo; j < hi; j++) {
          let x = 0;
          for (let e = 0; e < d; e++) x += Q[row * d + e]! * K[(j * hkv + kh) * d + e]!;
          s.push(x * scale);
        }
        const m = Math.max(...s);
        let l = 0;
        for (let t = 0; t < s.length; t++) {
          const w = Math.exp(s[t]! - m);
          l += w;
          for (let e = 0; e < dv; e++) o[row * dv + e] += w * V[((lo + t) * hkv + kh) * dv + e]!;
        }
        for (let e = 0; e < dv; e++) o[row * dv + e] /= l;
        lse[row] = m + Math.log(l);
      }
    }
  }
  return { o, lse };
}

/** O and LSE of a call equal the reference: finite everywhere the reference is, -inf LSE / 0 rows where it has no keys. */
function expectMatches(
  r: { o: Float32Array; lse: Float32Array },
  ref: { o: Float64Array; lse: Float64Array },
  tol: number,
  label: string,
) {
  expect(r.o.some(Number.isNaN), `${label}: NaN in o`).toBe(false);
  const live: number[] = [];
  const refLive: number[] = [];
  for (let i = 0; i < ref.lse.length; i++) {
    if (ref.lse[i] === Number.NEGATIVE_INFINITY) {
      expect(r.lse[i], `${label}: lse of a row without keys`).toBe(Number.NEGATIVE_INFINITY);
    } else {
      live.push(r.lse[i]!);
      refLive.push(ref.lse[i]!);
    }
  }
  const dv = r.o.length / ref.lse.length;
  for (let i = 0; i < ref.lse.length; i++) {
    if (ref.lse[i] !== Number.NEGATIVE_INFINITY) continue;
    for (let e = 0; e < dv; e++)
      expect(r.o[i * dv + e], `${label}: o of a row without keys`).toBe(0);
  }
  expectClose(r.o, ref.o, tol, `${label} o`);
  if (live.length > 0) expectClose(live, refLive, tol, `${label} lse`);
}

const PARTITIONS: LeanAttentionOptions[] = [
  { partition: 'fa2' },
  { partition: 'splitK' },
  { partition: 'splitK', splits: 3 },
  { partition: 'streamK' },
  { partition: 'streamK', workers: 5 },
];

let ctx: WebGpuContext | undefined;
beforeAll(async () => {
  ctx = await webGpuTestContext();
});
afterAll(() => ctx?.destroy());

type Backend = 'ts' | 'native' | 'webgpu';
const BACKENDS: Backend[] = ['ts', 'native', 'webgpu'];

/** Runs leanAttention on `backend` with the case's pools; undefined when the backend is absent. */
async function run(c: PagedCase, backend: Backend, opts: LeanAttentionOptions) {
  if (backend === 'native' && nativeAvailable() !== true) return undefined;
  if (backend === 'webgpu') {
    if (!ctx) return undefined;
    const [q, k, v] = [c.q, c.kPool, c.vPool].map((x) => toWebGpu(x, ctx!));
    try {
      const r = await leanAttention(q!, k!, v!, { ...opts, paged: c.paged });
      const out = {
        o: (await r.o.toCpu()).toFloat32Array(),
        lse: (await r.lse.toCpu()).toFloat32Array(),
      };
      r.o.dispose();
      r.lse.dispose();
      return out;
    } finally {
      for (const x of [q, k, v]) x!.dispose();
    }
  }
  const acc = poisonAllocations();
  try {
    const r = await leanAttention(c.q, c.kPool, c.vPool, { ...opts, paged: c.paged, backend });
    return { o: r.o.toFloat32Array(), lse: r.lse.toFloat32Array() };
  } finally {
    acc.restore();
  }
}

describe('paged K/V through the block table', () => {
  // One test per backend x dtype x partition (likewise per shape below): on CI, llvmpipe compiles
  // each WebGPU variant afresh (an empty shader cache) beside the other packages' tests, and the
  // whole loop in one test took 562 s of its 600 s limit there (2026-12-05).
  const DTYPES = [
    ['f32', 16],
    ['f16', 8],
  ] as const;
  test.each(
    BACKENDS.flatMap((backend) =>
      DTYPES.flatMap(([dtype, ps]) =>
        PARTITIONS.map((p) => [backend, dtype, ps, JSON.stringify(p), p] as const),
      ),
    ),
  )(
    '%s %s (page %d) %s: equals the float64 reference (shuffled pages, odd lengths, a length 0, GQA 8/2, causal)',
    async (backend, dtype, ps, _, p) => {
      const rng = new Rng(101 + backend.length + (dtype === 'f16' ? 50 : 0));
      const c = pagedCase(rng, {
        lengths: [37, 0, 1, 130],
        hq: 8,
        hkv: 2,
        nq: 3,
        d: 16,
        dv: 12,
        pageSize: ps,
        dtype,
      });
      const ref = reference(c, true);
      const tol = toleranceFor({ dtype, maxSeqLen: 130 });
      const r = await run(c, backend, { ...p, causal: true });
      if (!r) return;
      expectMatches(r, ref, tol, `${backend} ${dtype} ${JSON.stringify(p)}`);
    },
  );

  const SHAPES = [
    { nq: 1, hq: 4, hkv: 1, ps: 64, lengths: [200, 65] },
    { nq: 5, hq: 2, hkv: 2, ps: 1, lengths: [9, 4, 0] },
    { nq: 16, hq: 6, hkv: 3, ps: 16, lengths: [16, 47] },
    // Long and short together: stream-K pieces cross pages and sequences.
    { nq: 2, hq: 8, hkv: 2, ps: 16, lengths: [2049, 1, 600] },
  ];
  test.each(
    BACKENDS.flatMap((backend) => SHAPES.map((s) => [backend, JSON.stringify(s), s] as const)),
  )('%s: Nq 1..16, MQA and MHA, window, page size 1 and 64: %s', async (backend, _, s) => {
    const rng = new Rng(7 + backend.length + s.nq);
    const c = pagedCase(rng, {
      lengths: s.lengths,
      hq: s.hq,
      hkv: s.hkv,
      nq: s.nq,
      d: 8,
      dv: 8,
      pageSize: s.ps,
      dtype: 'f32',
    });
    for (const [causal, window] of [
      [false, [-1, -1]],
      [true, [20, -1]],
    ] as const) {
      const ref = reference(c, causal, [...window]);
      const tol = toleranceFor({ dtype: 'f32', maxSeqLen: Math.max(...s.lengths) });
      for (const p of [PARTITIONS[0]!, PARTITIONS[2]!, PARTITIONS[4]!]) {
        const r = await run(c, backend, { ...p, causal, window: [...window] });
        if (!r) return;
        expectMatches(r, ref, tol, `${backend} ${JSON.stringify({ ...s, causal, ...p })}`);
      }
    }
  });
});

describe('paged: typed errors name the field', () => {
  const rng = new Rng(5);
  const q = rng.randn([2, 2, 1, 8]);
  const k = rng.randn([4, 4, 1, 8]);
  const v = rng.randn([4, 4, 1, 6]);
  const good = {
    pageSize: 4,
    blockTable: Int32Array.of(0, 1, 2, -1),
    lengths: Int32Array.of(5, 3),
  };
  const named = async (
    paged: unknown,
    argument: string,
    cls: unknown = ValueError,
    kk: Tensor = k,
    vv: Tensor = v,
    extra: object = {},
  ) => {
    const e = await leanAttention(q, kk, vv, {
      paged,
      backend: 'ts',
      ...extra,
    } as LeanAttentionOptions).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e, `${argument}: ${JSON.stringify(paged)}`).toBeInstanceOf(cls as never);
    expect((e as { argument?: string }).argument).toBe(argument);
  };
  test('good tables run; bad ones are refused', async () => {
    const r = await leanAttention(q, k, v, { paged: good, backend: 'ts' });
    expect(r.o.shape).toEqual([2, 2, 1, 6]);
    await named({ ...good, pageSize: 0 }, 'paged.pageSize');
    await named({ ...good, pageSize: 2 }, 'k', ShapeError); // k's page dim is 4
    await named({ ...good, blockTable: Int32Array.of(0, 4, 2, -1) }, 'paged.blockTable'); // page 4 of 4
    await named({ ...good, blockTable: Int32Array.of(0, 1, -1, -1) }, 'paged.blockTable'); // a needed slot unset
    await named({ ...good, blockTable: Int32Array.of(0, 1, 2) }, 'paged.blockTable'); // not [B, maxPages]
    await named({ ...good, lengths: Int32Array.of(9, 3) }, 'paged.lengths'); // > maxPages x pageSize
    await named({ ...good, lengths: Int32Array.of(-1, 3) }, 'paged.lengths');
    await named({ ...good, lengths: Int32Array.of(5) }, 'paged.lengths');
    await named(7, 'paged');
    await named(good, 'v', ShapeError, k, rng.randn([3, 4, 1, 6]));
    await named(good, 'k', ShapeError, rng.randn([4, 4, 1, 6]), v); // D differs from q's
    await named(good, 'layout', ValueError, k, v, { layout: 'THD', cuSeqlensQ: [0, 1, 2] });
  });
});

describe('KvCache.attend', () => {
  /** Appends random tokens to `id` and returns them (f64 of the stored values). */
  function grow(rng: Rng, cache: KvCache, id: number, n: number, log: Map<number, Float64Array[]>) {
    const k = rng.randn([n, cache.numKvHeads, cache.headDim], cache.dtype);
    const v = rng.randn([n, cache.numKvHeads, cache.valueDim], cache.dtype);
    if (cache.device === 'webgpu' && rng.uniform() < 0.5) {
      // A webgpu cache takes webgpu tokens too (buffer-to-buffer copies into the pages).
      const [kg, vg] = [toWebGpu(k, ctx!), toWebGpu(v, ctx!)];
      cache.append(id, kg, vg);
      kg.dispose();
      vg.dispose();
    } else {
      cache.append(id, k, v);
    }
    const [ks, vs] = log.get(id) ?? [new Float64Array(0), new Float64Array(0)];
    const cat = (a: Float64Array, b: Float64Array) => {
      const out = new Float64Array(a.length + b.length);
      out.set(a);
      out.set(b, a.length);
      return out;
    };
    log.set(id, [cat(ks!, f64Of(k)), cat(vs!, f64Of(v))]);
  }

  test.each([
    ['ts', 'cpu'],
    ['native', 'cpu'],
    ['webgpu', 'cpu'],
    ['webgpu', 'webgpu'],
  ] as const)(
    '%s kernels, %s pools: append, attend, free, reuse the pages, append, attend: equals the reference of each step',
    async (backend, device) => {
      if (backend === 'native' && nativeAvailable() !== true) return;
      if (backend === 'webgpu' && !ctx) return;
      const rng = new Rng(31 + backend.length + device.length);
      for (const dtype of ['f32', 'f16'] as const) {
        const cache = new KvCache({
          numKvHeads: 2,
          headDim: 8,
          valueDim: 6,
          pageSize: 4,
          numPages: 24,
          dtype,
          ...(device === 'webgpu' ? { device, context: ctx! } : {}),
        });
        const log = new Map<number, Float64Array[]>();
        const a = cache.addSequence();
        const b = cache.addSequence();
        const c = cache.addSequence();
        // Interleaved appends: the sequences' pages alternate in the pool.
        for (let step = 0; step < 3; step++) {
          grow(rng, cache, a, 3, log);
          grow(rng, cache, b, 5, log);
        }
        const attendAll = async (ids: number[], nq: number, label: string) => {
          const q = rng.randn([ids.length, 4, nq, 8], dtype);
          const lengths = ids.map((id) => cache.length(id));
          const keys = ids.map((id) => log.get(id)?.[0] ?? new Float64Array(0));
          const values = ids.map((id) => log.get(id)?.[1] ?? new Float64Array(0));
          const fake = {
            q,
            paged: { lengths: Int32Array.from(lengths) },
            keys,
            values,
            dims: { b: ids.length, hq: 4, hkv: 2, nq, d: 8, dv: 6 },
          } as unknown as PagedCase;
          const ref = reference(fake, true);
          const tol = toleranceFor({ dtype, maxSeqLen: 64 });
          for (const p of PARTITIONS) {
            let r: { o: Float32Array; lse: Float32Array };
            if (backend === 'webgpu') {
              const qg = toWebGpu(q, ctx!);
              const out = await cache.attend(qg, { ...p, ids, causal: true });
              r = {
                o: (await out.o.toCpu()).toFloat32Array(),
                lse: (await out.lse.toCpu()).toFloat32Array(),
              };
              for (const x of [qg, out.o, out.lse]) x.dispose();
            } else {
              const out = await cache.attend(q, { ...p, ids, causal: true, backend });
              r = { o: out.o.toFloat32Array(), lse: out.lse.toFloat32Array() };
            }
            expectMatches(r, ref, tol, `${backend} ${dtype} ${label} ${JSON.stringify(p)}`);
          }
        };
        await attendAll([b, c, a], 2, 'first'); // c is empty: its rows O 0, LSE -inf
        cache.removeSequence(a); // a's pages go back to the pool ...
        log.delete(a);
        const d = cache.addSequence();
        grow(rng, cache, d, 7, log); // ... and d takes some of them
        grow(rng, cache, c, 1, log);
        grow(rng, cache, b, 2, log); // pages written after the first attend (webgpu: re-uploaded)
        await attendAll([d, b, c], 1, 'after reuse');
        await attendAll([c], 3, 'one'); // Nq 3 over 1 key: causal leaves two rows without keys
        expect(cache.pagesInUse).toBe(
          [b, c, d].reduce((s, id) => s + Math.ceil(cache.length(id) / 4), 0),
        );
        cache.dispose();
      }
    },
  );

  test('typed errors: unknown ids, ids that are not q batch, a head dim that differs', async () => {
    const cache = new KvCache({ numKvHeads: 1, headDim: 8, numPages: 4, dtype: 'f32' });
    const id = cache.addSequence();
    cache.append(id, new Rng(1).randn([3, 1, 8]), new Rng(2).randn([3, 1, 8]));
    const q = new Rng(3).randn([1, 2, 1, 8]);
    const err = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (e: unknown) => e,
      );
    const e1 = (await err(cache.attend(q, { ids: [id + 1] }))) as ValueError;
    expect(e1).toBeInstanceOf(ValueError);
    expect(e1.argument).toBe('ids[0]');
    const e2 = (await err(cache.attend(q, { ids: [id, id] }))) as ValueError;
    expect(e2.argument).toBe('ids');
    const e3 = (await err(
      cache.attend(new Rng(4).randn([1, 2, 1, 6]), { ids: [id] }),
    )) as ShapeError;
    expect(e3).toBeInstanceOf(ShapeError);
    expect(e3.argument).toBe('k');
    const r = await cache.attend(q, { ids: [id], backend: 'ts' });
    expect(r.o.shape).toEqual([1, 2, 1, 8]);
    // A query longer than the cache allows (default 16 tokens; 2 here) is refused, naming q.
    expect(cache.maxQueryLength).toBe(DEFAULT_MAX_QUERY_LENGTH);
    const long = new Rng(5).randn([1, 2, DEFAULT_MAX_QUERY_LENGTH + 1, 8]);
    const e4 = (await err(cache.attend(long, { ids: [id], backend: 'ts' }))) as ValueError;
    expect(e4).toBeInstanceOf(ValueError);
    expect([e4.argument, e4.message.includes('maxQueryLength (16)')]).toEqual(['q', true]);
    const small = new KvCache({
      numKvHeads: 1,
      headDim: 8,
      numPages: 4,
      dtype: 'f32',
      maxQueryLength: 2,
    });
    const sid = small.addSequence();
    small.append(sid, new Rng(1).randn([3, 1, 8]), new Rng(2).randn([3, 1, 8]));
    const ok = await small.attend(new Rng(6).randn([1, 2, 2, 8]), { ids: [sid], backend: 'ts' });
    expect(ok.o.shape).toEqual([1, 2, 2, 8]);
    const e5 = (await err(
      small.attend(new Rng(6).randn([1, 2, 3, 8]), { ids: [sid], backend: 'ts' }),
    )) as ValueError;
    expect([e5 instanceof ValueError, e5.argument]).toEqual([true, 'q']);
    expect(small.length(sid)).toBe(3); // nothing changed
    for (const bad of [0, 1.5, -1, Number.NaN])
      expect(
        () =>
          new KvCache({
            numKvHeads: 1,
            headDim: 8,
            numPages: 4,
            dtype: 'f32',
            maxQueryLength: bad,
          }),
      ).toThrow(expect.objectContaining({ argument: 'maxQueryLength' }));
  });

  test('webgpu pools: typed errors (context, odd f16 rows, a cpu q, gather), a refused append changes nothing', async () => {
    if (!ctx) return;
    const base = { numKvHeads: 1, headDim: 8, numPages: 4, dtype: 'f32' as const };
    const named = (f: () => unknown, argument: string, cls: unknown = ValueError) => {
      let e: unknown;
      try {
        f();
      } catch (x) {
        e = x;
      }
      expect(e).toBeInstanceOf(cls as never);
      expect((e as { argument?: string }).argument).toBe(argument);
    };
    named(() => new KvCache({ ...base, device: 'webgpu' }), 'context');
    named(() => new KvCache({ ...base, device: 'gpu' as never, context: ctx! }), 'device');
    named(
      () => new KvCache({ ...base, headDim: 7, dtype: 'f16', device: 'webgpu', context: ctx! }),
      'headDim',
    );
    const cache = new KvCache({ ...base, pageSize: 2, device: 'webgpu', context: ctx! });
    expect(cache.kPool.device).toBe('webgpu');
    const id = cache.addSequence();
    const rng = new Rng(9);
    cache.append(id, rng.randn([3, 1, 8]), rng.randn([3, 1, 8]));
    named(() => cache.append(id, rng.randn([7, 1, 8]), rng.randn([7, 1, 8])), 'k', CacheFullError);
    expect([cache.length(id), cache.pagesInUse]).toEqual([3, 2]);
    named(() => cache.gather(id), 'gather', DeviceError);
    const e = await cache.attend(rng.randn([1, 1, 1, 8]), { ids: [id] }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(DeviceError);
    expect((e as DeviceError).argument).toBe('q');
    cache.dispose();
  });
});
