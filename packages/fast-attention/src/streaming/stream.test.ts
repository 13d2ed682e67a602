import { resolveAttentionProblem, softmaxAttentionReference } from '@attnkit/attention';
import { planWebGpuFlash, SOFTMAX_HOOKS, tiledForwardWebGpu } from '@attnkit/skeleton';
import { DeviceError, Rng, type Tensor, ValueError } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { GpuDeviceLostError, loopVarsWithoutInitializer, toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { defaultLimitsContext } from '../test-context.js';
import { MERGE_SHADERS } from './merge.js';
import { GpuBudgetError, type StreamProblem, streamBuffers, totalOf } from './plan.js';
import { streamingAttention } from './stream.js';

/**
 * Streaming attention on llvmpipe: K/V on the cpu, budgets small enough that several query
 * chunks and key chunks run, against the resident FA2 (the skeleton's forward on the same
 * device) and the float64 reference, with the pool's high-water mark under the budget.
 */
const ctx = await webGpuTestContext();
const SEED = Number(process.env.ATTNKIT_TEST_SEED ?? Date.now() % 1_000_000);
const TOL = { f32: 2e-5, f16: 2e-3, bf16: 1e-2 } as const;

afterAll(() => ctx?.destroy());

interface Case {
  batch: number;
  hq: number;
  hkv: number;
  nq: number;
  nk: number;
  d: number;
  dv: number;
  dtype: 'f32' | 'f16' | 'bf16';
  causal?: boolean;
  window?: [number, number];
  qOnGpu: boolean;
}

/** A budget that holds `qTiles` query tiles and `kTiles` key tiles of every kv head at once. */
function budgetFor(c: Case, qTiles: number, kTiles: number): number {
  const fp = planWebGpuFlash({
    kernel: 'forward',
    d: c.d,
    dv: c.dv,
    maxComputeWorkgroupStorageSize: ctx!.limits.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: Math.min(
      ctx!.limits.maxComputeInvocationsPerWorkgroup,
      ctx!.limits.maxComputeWorkgroupSizeX,
    ),
    subgroupMinSize: ctx!.features.subgroups ? ctx!.features.subgroupMinSize : 0,
  });
  const p: StreamProblem = {
    ...c,
    left: -1,
    right: -1,
    outputOnGpu: c.qOnGpu,
  };
  return totalOf(
    streamBuffers(p, c.hkv, Math.min(c.nq, qTiles * fp.br), Math.min(c.nk, kTiles * fp.bc)),
  );
}

async function check(c: Case, budget: number, label: string) {
  const rng = new Rng(SEED + label.length);
  const q = rng.randn([c.batch, c.hq, c.nq, c.d], c.dtype);
  const k = rng.randn([c.batch, c.hkv, c.nk, c.d], c.dtype);
  const v = rng.randn([c.batch, c.hkv, c.nk, c.dv], c.dtype);
  const opts = {
    ...(c.causal ? { causal: true } : {}),
    ...(c.window ? { window: c.window } : {}),
  };
  const name = `${label} ${JSON.stringify(c)}`;
  const gq = c.qOnGpu ? toWebGpu(q, ctx!) : q;
  const base = ctx!.pool.resetHighWater();
  const r = await streamingAttention(gq, k, v, { gpuBudgetBytes: budget, ctx: ctx!, ...opts });
  expect(ctx!.pool.highWaterBytes - base, `${name}: high-water mark`).toBeLessThanOrEqual(budget);
  expect(r.plan.totalBytes).toBeLessThanOrEqual(budget);
  // Only o and lse stay (on the GPU when q is there).
  expect(ctx!.pool.liveBytes - base).toBe(c.qOnGpu ? r.plan.buffers.output : 0);
  expect(r.o.device).toBe(c.qOnGpu ? 'webgpu' : 'cpu');
  const o = await r.o.toCpu();
  const lse = await r.lse.toCpu();
  const ref = softmaxAttentionReference(q, k, v, opts);
  expectClose(o, ref.o, TOL[c.dtype], `${name} o vs float64`);
  expectClose(lse, ref.lse, TOL.f32, `${name} lse vs float64`);
  // The resident kernel: the skeleton's FA2 forward with K/V on the GPU.
  const [rq, rk, rv] = [q, k, v].map((t) => toWebGpu(t, ctx!)) as [Tensor, Tensor, Tensor];
  const res = await tiledForwardWebGpu(
    resolveAttentionProblem(rq, rk, rv, opts),
    SOFTMAX_HOOKS,
    rq,
    rk,
    rv,
    { tensorCores: false },
  );
  expectClose(o, await res.o.toCpu(), TOL[c.dtype], `${name} o vs resident`);
  expectClose(lse, await res.lse!.toCpu(), TOL.f32, `${name} lse vs resident`);
  for (const t of [rq, rk, rv, res.o, res.lse!, r.o, r.lse]) t.dispose();
  if (c.qOnGpu) gq.dispose();
  return r;
}

describe.skipIf(!ctx)(`streamingAttention on WebGPU (seed ${SEED})`, () => {
  test('merge kernels declare loop vars with initializers', () => {
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      expect(loopVarsWithoutInitializer(MERGE_SHADERS.mergeShader(dtype))).toEqual([]);
      expect(loopVarsWithoutInitializer(MERGE_SHADERS.finishShader(dtype))).toEqual([]);
    }
  });

  // One test a case: each under its own limit. The five together took ~10 s alone on llvmpipe,
  // 60-262 s beside other packages' tests on CI's two cores (a timed-out run also kept working
  // under the next test and changed its pool counts).
  const prefillCases = ((): Case[] => {
    const rng = new Rng(SEED);
    return [
      {
        batch: 2,
        hq: 4,
        hkv: 2,
        nq: 2 * rng.int(60, 110) + 1,
        nk: 2 * rng.int(90, 160) + 1,
        d: 32,
        dv: 32,
        dtype: 'f32',
        qOnGpu: true,
      },
      {
        batch: 1,
        hq: 3,
        hkv: 1,
        nq: 2 * rng.int(80, 140) + 1,
        nk: 2 * rng.int(80, 140) + 1,
        d: 16,
        dv: 24,
        dtype: 'f32',
        causal: true,
        qOnGpu: false,
      },
      {
        batch: 1,
        hq: 2,
        hkv: 2,
        nq: 2 * rng.int(60, 120) + 1,
        nk: 2 * rng.int(100, 160) + 1,
        d: 32,
        dv: 32,
        dtype: 'f16',
        causal: true,
        qOnGpu: true,
      },
      {
        batch: 2,
        hq: 4,
        hkv: 1,
        nq: 2 * rng.int(60, 120) + 1,
        // Above two 64-key tiles (the budget holds two): Nk 127 fit one chunk (seed 463263).
        nk: 2 * rng.int(70, 120) + 1,
        d: 16,
        dv: 16,
        dtype: 'f16',
        window: [rng.int(5, 60), rng.int(0, 40)],
        qOnGpu: false,
      },
      {
        batch: 1,
        hq: 2,
        hkv: 1,
        nq: 2 * rng.int(60, 120) + 1,
        nk: 2 * rng.int(120, 180) + 1,
        d: 16,
        dv: 16,
        dtype: 'f32',
        causal: true,
        window: [rng.int(20, 80), -1],
        qOnGpu: true,
      },
    ];
  })();
  test.each(prefillCases.map((c, n) => [n, c] as const))(
    'prefill equals the resident FA2 and float64 (case %i of odd Nk, Nq != Nk, GQA, causal, window, f32 and f16)',
    async (n, c) => {
      const r = await check(c, budgetFor(c, 1, 2), `case ${n}`);
      // Streamed for real: several query chunks, each over several key chunks.
      expect(r.stats.groups).toBeGreaterThan(c.batch);
      expect(r.plan.keyChunk).toBeLessThan(c.nk);
      // A narrow window's band fits one key chunk per query chunk.
      if (!c.window) expect(r.stats.chunks).toBeGreaterThan(r.stats.groups);
      if (c.causal) expect(r.stats.uploadedBytes).toBeLessThan(r.stats.denseBytes);
    },
  );

  // One test a case, as the prefill cases (~110 s together beside CI's other tests).
  const decodeCases = ((): Case[] => {
    const rng = new Rng(SEED + 7);
    return (['f32', 'f16', 'f16'] as const).map((dtype, n) => ({
      batch: 2,
      hq: 8,
      hkv: 2,
      nq: n === 2 ? 4 : 1,
      nk: 2 * rng.int(300, 600) + 1,
      d: 64,
      dv: 64,
      dtype,
      causal: true,
      qOnGpu: n !== 1,
    }));
  })();
  test.each(decodeCases.map((c, n) => [n, c] as const))(
    'decode (case %i of Nq 1 and 4, causal, GQA, f32 and f16) through the same path',
    async (n, c) => {
      const r = await check(c, budgetFor(c, 1, 3), `decode ${n}`);
      expect(r.stats.chunks).toBeGreaterThan(2 * r.stats.groups);
    },
  );

  test('rows with no allowed key: o 0 and lse -Infinity, as the resident kernel', async () => {
    // Causal with Nq > Nk: the first Nq - Nk rows see nothing.
    const rng = new Rng(SEED + 9);
    const q = rng.randn([1, 2, 150, 16], 'f32');
    const k = rng.randn([1, 1, 70, 16], 'f32');
    const v = rng.randn([1, 1, 70, 16], 'f32');
    const c: Case = {
      batch: 1,
      hq: 2,
      hkv: 1,
      nq: 150,
      nk: 70,
      d: 16,
      dv: 16,
      dtype: 'f32',
      qOnGpu: false,
    };
    const r = await streamingAttention(q, k, v, {
      gpuBudgetBytes: budgetFor(c, 1, 1),
      ctx: ctx!,
      causal: true,
    });
    const o = r.o.data();
    const lse = r.lse.data();
    for (let h = 0; h < 2; h++) {
      for (let i = 0; i < 80; i++) {
        expect(lse[h * 150 + i]).toBe(Number.NEGATIVE_INFINITY);
        for (let j = 0; j < 16; j++) expect(o[(h * 150 + i) * 16 + j]).toBe(0);
      }
    }
    const ref = softmaxAttentionReference(q, k, v, { causal: true });
    expectClose(r.o, ref.o, TOL.f32, 'empty rows o');
  });

  test('a budget below one tile pair is a GpuBudgetError before any work; bad inputs are typed errors', async () => {
    const rng = new Rng(SEED + 1);
    const q = rng.randn([1, 2, 100, 16], 'f32');
    const k = rng.randn([1, 2, 100, 16], 'f32');
    const v = rng.randn([1, 2, 100, 16], 'f32');
    const live = ctx!.pool.live;
    await expect(
      streamingAttention(q, k, v, { gpuBudgetBytes: 4096, ctx: ctx! }),
    ).rejects.toBeInstanceOf(GpuBudgetError);
    await expect(streamingAttention(q, k, v, { gpuBudgetBytes: 4096, ctx: ctx! })).rejects.toThrow(
      /gpuBudgetBytes: expected at least \d+ bytes/,
    );
    expect(ctx!.pool.live).toBe(live);
    const gk = toWebGpu(k, ctx!);
    await expect(
      streamingAttention(q, gk, v, { gpuBudgetBytes: 2 ** 24, ctx: ctx! }),
    ).rejects.toThrow(DeviceError);
    gk.dispose();
    await expect(
      streamingAttention(q, k, v, { gpuBudgetBytes: 2 ** 24, ctx: ctx!, paged: {} } as never),
    ).rejects.toThrow(/paged: expected one of gpuBudgetBytes/);
    await expect(
      streamingAttention(q, k, rng.randn([1, 2, 99, 16], 'f32'), {
        gpuBudgetBytes: 2 ** 24,
        ctx: ctx!,
      }),
    ).rejects.toThrow(/^v: /);
    await expect(
      streamingAttention(q, k, v, { gpuBudgetBytes: 2 ** 24, ctx: ctx!, layout: 'THD' } as never),
    ).rejects.toThrow(/layout: expected "BHND"/);
    await expect(
      streamingAttention(q, k, v, { gpuBudgetBytes: -1, ctx: ctx! }),
    ).rejects.toBeInstanceOf(ValueError);
    expect(ctx!.pool.live).toBe(live);
  });

  test('bf16 storage, causal with GQA', async () => {
    const rng = new Rng(SEED + 5);
    const c: Case = {
      batch: 1,
      hq: 4,
      hkv: 2,
      nq: 2 * rng.int(60, 120) + 1,
      nk: 2 * rng.int(100, 160) + 1,
      d: 32,
      dv: 16,
      dtype: 'bf16',
      causal: true,
      qOnGpu: false,
    };
    const r = await check(c, budgetFor(c, 1, 2), 'bf16');
    expect(r.stats.chunks).toBeGreaterThan(r.stats.groups);
  });

  test('an error mid-run (a callback that throws) rejects with it and releases every buffer', async () => {
    const rng = new Rng(SEED + 3);
    const c: Case = {
      batch: 1,
      hq: 2,
      hkv: 1,
      nq: 130,
      nk: 301,
      d: 16,
      dv: 16,
      dtype: 'f32',
      qOnGpu: true,
    };
    const q = toWebGpu(rng.randn([1, 2, 130, 16], 'f32'), ctx!);
    const k = rng.randn([1, 1, 301, 16], 'f32');
    const v = rng.randn([1, 1, 301, 16], 'f32');
    const before = ctx!.pool.liveBytes;
    const boom = new ValueError('stop', 'onChunk');
    await expect(
      streamingAttention(q, k, v, {
        gpuBudgetBytes: budgetFor(c, 1, 1),
        ctx: ctx!,
        onChunk: ({ chunk }) => {
          if (chunk === 2) throw boom;
        },
      }),
    ).rejects.toBe(boom);
    expect(ctx!.pool.liveBytes).toBe(before);
    q.dispose();
  });

  test('a device lost mid-run rejects with GpuDeviceLostError and releases every buffer', async () => {
    const own = await defaultLimitsContext();
    const rng = new Rng(SEED + 2);
    const c: Case = {
      batch: 1,
      hq: 2,
      hkv: 1,
      nq: 130,
      nk: 301,
      d: 16,
      dv: 16,
      dtype: 'f32',
      qOnGpu: false,
    };
    const q = rng.randn([1, 2, 130, 16], 'f32');
    const k = rng.randn([1, 1, 301, 16], 'f32');
    const v = rng.randn([1, 1, 301, 16], 'f32');
    const run = streamingAttention(q, k, v, {
      gpuBudgetBytes: budgetFor(c, 1, 1),
      ctx: own!,
      onChunk: ({ chunk }) => {
        if (chunk === 1) own!.device.destroy();
      },
    });
    await expect(run).rejects.toBeInstanceOf(GpuDeviceLostError);
    expect(own!.pool.live).toBe(0);
    expect(own!.pool.liveBytes).toBe(0);
  });
});
