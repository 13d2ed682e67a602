import { CacheFullError } from '@attnkit/lean-attention';
import {
  attention,
  concat,
  noGrad,
  Param,
  registerWebGpuKernels,
  scope,
  syncWebGpu,
  type Var,
  webGpuQueueStats,
} from '@attnkit/nn';
import { DTypeError, Rng, ShapeError, Tensor } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { DevicePagedKvCache, PagedKvCache } from './kv-cache.js';

const ctx = await webGpuTestContext();
if (ctx) registerWebGpuKernels(ctx);
afterAll(() => ctx?.destroy());

const rng = new Rng(21);
const gpu = (shape: number[], dtype: 'f32' | 'f16' = 'f32') =>
  toWebGpu(rng.randn(shape).astype(dtype), ctx!);
const host = async (x: Var | Tensor) =>
  (await (x instanceof Tensor ? x : x.data).toCpu()).toFloat64Array();

async function worst(got: Var | Tensor, want: Var | Tensor): Promise<number> {
  const [g, w] = [await host(got), await host(want)];
  expect(g.length).toBe(w.length);
  let m = 0;
  // Math.max of a NaN is NaN: an unwritten (poisoned) element fails the bound.
  for (let i = 0; i < w.length; i++) m = Math.max(m, Math.abs(g[i]! - w[i]!));
  return m;
}

/** A webgpu paged cache with the tests' defaults (one row, 2 kv heads of 8, 16 tokens, f32). */
const deviceCache = (
  options: Partial<ConstructorParameters<typeof DevicePagedKvCache>[0]> = {},
): DevicePagedKvCache =>
  new DevicePagedKvCache({
    batch: 1,
    kvHeads: 2,
    headDim: 8,
    maxTokens: 16,
    dtype: 'f32',
    context: ctx!,
    ...options,
  });

describe('DevicePagedKvCache (webgpu)', () => {
  test('attend over the pages equals attention over the concatenated keys and values, prefill then one token at a time, two rows, GQA, pages crossed; update gathers the same k / v', async () => {
    if (!ctx) return void console.warn('webgpu unavailable: skipped');
    const [b, hq, hkv, d] = [2, 4, 2, 8];
    const make = () =>
      deviceCache({ batch: b, kvHeads: hkv, headDim: d, maxTokens: 24, pageSize: 4 });
    const [attending, updating] = [make(), make()];
    let ks: Tensor[] = [];
    let vs: Tensor[] = [];
    for (const t of [7, 1, 1, 5, 1]) {
      const [q, k, v] = [gpu([b, hq, t, d]), gpu([b, hkv, t, d]), gpu([b, hkv, t, d])];
      ks.push(k);
      vs.push(v);
      const kAll = ks.length === 1 ? k : concat(ks, 2).data;
      const vAll = vs.length === 1 ? v : concat(vs, 2).data;
      ks = [kAll];
      vs = [vAll];
      const want = attention(q, kAll, vAll, { causal: true });
      const got = attending.attend(q, k, v, { causal: true });
      expect(await worst(got, want), `attend after ${attending.length} tokens`).toBeLessThan(1e-5);
      const g = updating.update(k, v);
      expect(await worst(g.k, kAll), 'update: k').toBe(0);
      expect(await worst(g.v, vAll), 'update: v').toBe(0);
      expect(attending.length).toBe(kAll.shape[2]);
    }
    // 15 tokens over pages of 4: 4 pages a row, the pool's rows written in place.
    expect(attending.pages.pagesInUse).toBe(8);
    attending.dispose();
    updating.dispose();
  });

  test("update slices a row's consecutive pages as one run: one slice and one permute per pool", async () => {
    if (!ctx) return void console.warn('webgpu unavailable: skipped');
    const cache = deviceCache({ maxTokens: 24, pageSize: 4 });
    const [k, v] = [gpu([1, 2, 13, 8]), gpu([1, 2, 13, 8])];
    cache.update(k, v);
    const [k1, v1] = [gpu([1, 2, 1, 8]), gpu([1, 2, 1, 8])];
    await syncWebGpu(ctx);
    const before = webGpuQueueStats(ctx).passes;
    const g = cache.update(k1, v1);
    await syncWebGpu(ctx);
    // 14 tokens in 4 consecutive pages: per pool one slice (not 4 and a concat) and the permute.
    expect(webGpuQueueStats(ctx).passes - before).toBe(4);
    expect(await worst(g.k, concat([k, k1], 2))).toBe(0);
    expect(await worst(g.v, concat([v, v1], 2))).toBe(0);
    cache.dispose();
  });

  test('refusals are typed errors naming k or v, and change nothing: other heads or dims, another dtype, a full pool', async () => {
    if (!ctx) return void console.warn('webgpu unavailable: skipped');
    const cache = deviceCache({ maxTokens: 8, pageSize: 4 });
    const q = gpu([1, 2, 3, 8]);
    const [k, v] = [gpu([1, 2, 3, 8]), gpu([1, 2, 3, 8])];
    const before = attention(q, k, v, { causal: true });
    expect(await worst(cache.attend(q, k, v, { causal: true }), before)).toBeLessThan(1e-5);
    const cases: [() => unknown, new (...a: never[]) => Error, string][] = [
      [() => cache.attend(q, gpu([1, 1, 3, 8]), v, {}), ShapeError, 'k'],
      [() => cache.attend(q, k, gpu([1, 2, 3, 6]), {}), ShapeError, 'v'],
      [() => cache.update(gpu([1, 2, 3, 8], 'f16'), gpu([1, 2, 3, 8], 'f16')), DTypeError, 'k'],
      // 3 + 6 tokens past the pool's 2 pages of 4.
      [() => cache.update(gpu([1, 2, 6, 8]), gpu([1, 2, 6, 8])), CacheFullError, 'k'],
    ];
    for (const [call, type, argument] of cases) {
      let err: unknown;
      try {
        call();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(type);
      expect((err as { argument: string }).argument).toBe(argument);
      expect(cache.length).toBe(3);
      expect(cache.pages.pagesInUse).toBe(1);
    }
    // The three tokens are still what attend reads.
    const q1 = gpu([1, 2, 1, 8]);
    const [k1, v1] = [gpu([1, 2, 1, 8]), gpu([1, 2, 1, 8])];
    const want = attention(q1, concat([k, k1], 2), concat([v, v1], 2), { causal: true });
    expect(await worst(cache.attend(q1, k1, v1, { causal: true }), want)).toBeLessThan(1e-5);
    const live = ctx.pool.liveBytes;
    cache.dispose();
    await syncWebGpu(ctx);
    expect(ctx.pool.liveBytes).toBeLessThan(live);
  });

  test('attending frees what it made without the garbage collector (the paged op frees its LSE)', async () => {
    if (!ctx) return void console.warn('webgpu unavailable: skipped');
    const cache = deviceCache();
    const [q, k, v] = [gpu([1, 4, 1, 8]), gpu([1, 2, 1, 8]), gpu([1, 2, 1, 8])];
    const step = () => noGrad(() => scope(() => void cache.attend(q, k, v, { causal: true })));
    step();
    await syncWebGpu(ctx);
    const live = ctx.pool.liveBytes;
    for (let i = 0; i < 5; i++) step();
    await syncWebGpu(ctx);
    expect(ctx.pool.liveBytes).toBe(live);
    expect(cache.length).toBe(6);
    cache.dispose();
  });

  test('what attention would refuse is refused before the step is appended: q of other heads or length, k on the cpu, a recorded gradient, zero tokens', async () => {
    if (!ctx) return void console.warn('webgpu unavailable: skipped');
    const cache = deviceCache();
    const [k, v] = [gpu([1, 2, 2, 8]), gpu([1, 2, 2, 8])];
    const cases: [() => unknown, string, string][] = [
      [() => cache.attend(gpu([1, 3, 2, 8]), k, v, {}), 'ShapeError', 'q'],
      [() => cache.attend(gpu([1, 4, 1, 8]), k, v, {}), 'ShapeError', 'q'],
      [
        () => cache.attend(gpu([1, 4, 2, 8]), rng.randn([1, 2, 2, 8]).astype('f32'), v, {}),
        'DeviceError',
        'k',
      ],
      [
        () => cache.attend(gpu([1, 4, 0, 8]), gpu([1, 2, 0, 8]), gpu([1, 2, 0, 8]), {}),
        'ShapeError',
        'k',
      ],
      [() => cache.attend(new Param(gpu([1, 4, 2, 8])), k, v, {}), 'ValueError', 'q'],
    ];
    for (const [call, name, argument] of cases) {
      expect(call).toThrow(expect.objectContaining({ name, argument }));
      expect(cache.length).toBe(0);
      expect(cache.pages.pagesInUse).toBe(0);
    }
    cache.dispose();
  });

  test.each(['ts', 'webgpu'] as const)(
    "family 'standard' attends the gathered sequence (its matmuls read contiguous K/V, not pages): the values of attention over the concatenation (%s)",
    async (backend) => {
      if (backend === 'webgpu' && !ctx) return void console.warn('webgpu unavailable: skipped');
      const place = (shape: number[]) =>
        backend === 'webgpu' ? gpu(shape) : rng.randn(shape).astype('f32');
      const cache =
        backend === 'webgpu'
          ? deviceCache({ kvHeads: 1, pageSize: 4 })
          : new PagedKvCache({ batch: 1, kvHeads: 1, headDim: 8, maxTokens: 16 });
      const opts = { family: 'standard', causal: true };
      let [ks, vs]: Tensor[][] = [[], []];
      for (const t of [5, 1]) {
        const [q, k, v] = [place([1, 2, t, 8]), place([1, 1, t, 8]), place([1, 1, t, 8])];
        ks = [...ks, k];
        vs = [...vs, v];
        const kAll = ks.length > 1 ? concat(ks, 2).data : k;
        const vAll = vs.length > 1 ? concat(vs, 2).data : v;
        ks = [kAll];
        vs = [vAll];
        const got = cache.attend(q, k, v, opts);
        expect(await worst(got, attention(q, kAll, vAll, opts))).toBeLessThan(1e-5);
      }
      expect(cache.length).toBe(6);
      (cache as { dispose?: () => void }).dispose?.();
    },
  );

  test('bad sizes are ValueErrors naming them (heads, dims, dtype, context: lean KvCache names them)', () => {
    const good = { batch: 1, kvHeads: 1, headDim: 4, maxTokens: 8 };
    for (const [bad, argument] of [
      [{ batch: 0 }, 'batch'],
      [{ batch: 1.5 }, 'batch'],
      [{ maxTokens: -1 }, 'maxTokens'],
      [{ maxTokens: Number.NaN }, 'maxTokens'],
      [{ kvHeads: 0 }, 'numKvHeads'],
    ] as const) {
      expect(() => new PagedKvCache({ ...good, ...bad })).toThrow(
        expect.objectContaining({ name: 'ValueError', argument }),
      );
      if (ctx)
        expect(() => deviceCache({ ...good, ...bad })).toThrow(
          expect.objectContaining({ name: 'ValueError', argument }),
        );
    }
    expect(() => new PagedKvCache(null as never)).toThrow(
      expect.objectContaining({ name: 'ValueError', argument: 'options' }),
    );
    if (ctx)
      expect(() => deviceCache({ context: {} as never })).toThrow(
        expect.objectContaining({ name: 'ValueError', argument: 'context' }),
      );
  });

  test('the cpu PagedKvCache refuses a batch that differs from its rows', () => {
    const cache = new PagedKvCache({ batch: 2, kvHeads: 1, headDim: 4, maxTokens: 8 });
    const k = rng.randn([1, 1, 1, 4]).astype('f32');
    expect(() => cache.update(k, k)).toThrow(ShapeError);
  });
});
