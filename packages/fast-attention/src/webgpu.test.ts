import {
  accuracy,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { expectClose } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { deviceClassOf, fastAttention, fastAttentionBackward } from './attention.js';
import { WEBGPU_DEFAULT } from './devices.js';
import { planTwoLevel } from './planner.js';
import { CORE_DEFAULT_LIMITS, defaultLimitsContext } from './test-context.js';

/**
 * The skeleton's WGSL FA2 with the two-level planner's tiles on a device requested with WebGPU's
 * default limits only (16 KiB workgroup storage, 256 invocations, no subgroups, no f16): on
 * llvmpipe (EGL_PLATFORM=surfaceless) every result equals the float64 reference at the f32
 * tolerance (KERNELS.md: 1e-5 relative L2).
 */
const ctx = await defaultLimitsContext();
const SEED = Number(process.env.ATTNKIT_TEST_SEED ?? Date.now() % 1_000_000);
const TOL = 1e-5;

afterAll(() => ctx?.device.destroy());

/**
 * expectClose at TOL; a reference that is exactly zero has no relative error to measure (causal
 * with window left 0 leaves every row one key: P = 1, dS = P (dP - D) = 0, so dq = 0 in float64,
 * while f32 rounds dP and D = rowsum(dO * O) apart by ~1e-7; dk = dS^T Q likewise): then every
 * value must be within TOL of zero.
 */
function expectGradClose(got: Tensor, want: Tensor, label: string): void {
  if (want.toFloat64Array().every((x) => x === 0)) {
    const a = accuracy(got, want);
    expect(a.nonFinite, `${label}: non-finite values`).toBe(0);
    expect(a.maxAbs, `${label}: max |x| against an all-zero reference`).toBeLessThanOrEqual(TOL);
  } else expectClose(got, want, TOL, label);
}

describe.skipIf(!ctx)(`fast-attention on WebGPU default limits (seed ${SEED})`, () => {
  test('the device has the default limits and no optional feature', () => {
    expect(ctx!.limits).toEqual(CORE_DEFAULT_LIMITS);
    expect(ctx!.limits.maxComputeWorkgroupStorageSize).toBe(16384);
    expect(ctx!.limits.maxComputeInvocationsPerWorkgroup).toBe(256);
    expect(ctx!.device.features.has('subgroups')).toBe(false);
    expect(ctx!.device.features.has('shader-f16')).toBe(false);
    const dev = deviceClassOf(ctx!);
    expect(dev.maxComputeWorkgroupStorageSize).toBe(WEBGPU_DEFAULT.maxComputeWorkgroupStorageSize);
    expect(dev.maxComputeInvocationsPerWorkgroup).toBe(
      WEBGPU_DEFAULT.maxComputeInvocationsPerWorkgroup,
    );
  });

  test('forward and backward equal the float64 reference: odd N, Nq != Nk, GQA, causal, window', async () => {
    const rng = new Rng(SEED);
    const cases = [
      { causal: false, window: undefined },
      { causal: true, window: undefined },
      { causal: false, window: [rng.int(0, 40), rng.int(0, 40)] as [number, number] },
      { causal: true, window: [rng.int(0, 60), -1] as [number, number] },
    ];
    for (const [n, band] of cases.entries()) {
      const hkv = rng.int(1, 3);
      const hq = hkv * rng.int(1, 3);
      // More than 64 rows per kv head: decode-sized problems would take the decode kernel
      // (explicit tiles keep the generic forward anyway).
      const nq = 2 * rng.int(33, 90) + 1;
      const nk = n === 0 ? nq : 2 * rng.int(10, 120) + 1;
      const d = [16, 32, 64, 40][n]!;
      const dv = n === 3 ? 24 : d;
      const batch = rng.int(1, 3);
      const q = rng.randn([batch, hq, nq, d], 'f32');
      const k = rng.randn([batch, hkv, nk, d], 'f32');
      const v = rng.randn([batch, hkv, nk, dv], 'f32');
      const dO = rng.randn([batch, hq, nq, dv], 'f32');
      const opts = {
        ...(band.causal ? { causal: true } : {}),
        ...(band.window ? { window: band.window } : {}),
      };
      const label = JSON.stringify({ batch, hq, hkv, nq, nk, d, dv, ...opts });
      const ref = softmaxAttentionReference(q, k, v, opts);
      const [gq, gk, gv, gdo] = [q, k, v, dO].map((t) => toWebGpu(t, ctx!)) as Tensor[];
      const { o, lse, plan } = await fastAttention(gq!, gk!, gv!, opts);
      // The planner's tiles, not the skeleton's default: planned for these limits.
      expect(plan.outer.fastBytes).toBeLessThanOrEqual(16384);
      expect(plan.webgpu!.plans.forward.threads).toBeLessThanOrEqual(256);
      expectClose(await o.toCpu(), ref.o, TOL, `${label} o`);
      expectClose(await lse.toCpu(), ref.lse, TOL, `${label} lse`);
      const want = softmaxAttentionReferenceBackward(q, k, v, dO, opts);
      const g = await fastAttentionBackward({ q: gq!, k: gk!, v: gv!, o, lse, dO: gdo! }, opts);
      expectGradClose(await g.dq.toCpu(), want.dq, `${label} dq`);
      expectGradClose(await g.dk.toCpu(), want.dk, `${label} dk`);
      expectGradClose(await g.dv.toCpu(), want.dv, `${label} dv`);
      for (const t of [gq, gk, gv, gdo, o, lse, g.dq, g.dk, g.dv]) t!.dispose();
    }
    // ~15 s alone on llvmpipe; 63 s beside other packages' tests on CI's two cores.
  });

  test('D = 128 (the tightest fit in 16 KiB) over several query and key tiles, causal with Nq < Nk', async () => {
    const rng = new Rng(SEED + 3);
    const nq = 2 * rng.int(100, 160) + 1;
    const nk = nq + rng.int(1, 100);
    const q = rng.randn([1, 2, nq, 128], 'f32');
    const k = rng.randn([1, 1, nk, 128], 'f32');
    const v = rng.randn([1, 1, nk, 128], 'f32');
    const dO = rng.randn([1, 2, nq, 128], 'f32');
    const opts = { causal: true };
    const [gq, gk, gv, gdo] = [q, k, v, dO].map((t) => toWebGpu(t, ctx!)) as Tensor[];
    const { o, lse, plan } = await fastAttention(gq!, gk!, gv!, opts);
    for (const kernel of ['forward', 'dq', 'dkdv'] as const)
      expect(plan.webgpu!.plans[kernel].workgroupBytes).toBeLessThanOrEqual(16384);
    expect(nq / plan.outer.blockQ).toBeGreaterThan(2);
    const label = `nq ${nq} nk ${nk}`;
    const ref = softmaxAttentionReference(q, k, v, opts);
    expectClose(await o.toCpu(), ref.o, TOL, `${label} o`);
    expectClose(await lse.toCpu(), ref.lse, TOL, `${label} lse`);
    const want = softmaxAttentionReferenceBackward(q, k, v, dO, opts);
    const g = await fastAttentionBackward({ q: gq!, k: gk!, v: gv!, o, lse, dO: gdo! }, opts);
    expectClose(await g.dq.toCpu(), want.dq, TOL, `${label} dq`);
    expectClose(await g.dk.toCpu(), want.dk, TOL, `${label} dk`);
    expectClose(await g.dv.toCpu(), want.dv, TOL, `${label} dv`);
    for (const t of [gq, gk, gv, gdo, o, lse, g.dq, g.dk, g.dv]) t!.dispose();
  });

  test('block-sparse (tiles straddle the mask blocks) and f16 storage without shader-f16', async () => {
    const rng = new Rng(SEED + 1);
    const nq = 2 * rng.int(40, 100) + 1;
    const nk = 2 * rng.int(40, 100) + 1;
    const [blockQ, blockK] = [rng.int(5, 40), rng.int(5, 40)];
    const nbq = Math.ceil(nq / blockQ);
    const nbk = Math.ceil(nk / blockK);
    const mask = Tensor.from(
      Uint8Array.from({ length: nbq * nbk }, () => (rng.uniform() < 0.6 ? 1 : 0)),
      [nbq, nbk],
    );
    const opts = { causal: true, blockSparse: { blockQ, blockK, mask } };
    const q = rng.randn([1, 4, nq, 32], 'f32');
    const k = rng.randn([1, 2, nk, 32], 'f32');
    const v = rng.randn([1, 2, nk, 32], 'f32');
    const ref = softmaxAttentionReference(q, k, v, opts);
    const label = JSON.stringify({ nq, nk, blockQ, blockK });
    const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx!));
    const r = await fastAttention(gq!, gk!, gv!, opts);
    expectClose(await r.o.toCpu(), ref.o, TOL, `${label} o`);
    expectClose(await r.lse.toCpu(), ref.lse, TOL, `${label} lse`);
    // f16 storage (u32 pairs on a device without shader-f16), f32 accumulation: KERNELS.md 2e-3.
    const h = [q, k, v].map((t) => toWebGpu(t.astype('f16'), ctx!));
    const r16 = await fastAttention(h[0]!, h[1]!, h[2]!, { causal: true });
    const ref16 = softmaxAttentionReference(q, k, v, { causal: true });
    expectClose(await r16.o.toCpu(), ref16.o, 2e-3, 'f16 o');
    for (const t of [gq, gk, gv, ...h, r.o, r.lse, r16.o, r16.lse]) t!.dispose();
  });

  test('a named class must fit the device: webgpu-default runs, h200 and a cpu class are typed errors', async () => {
    const rng = new Rng(SEED + 2);
    const q = rng.randn([1, 1, 67, 16], 'f32');
    const gq = toWebGpu(q, ctx!);
    const r = await fastAttention(gq, gq, gq, { device: 'webgpu-default' });
    expectClose(await r.o.toCpu(), softmaxAttentionReference(q, q, q).o, TOL, 'o');
    await expect(fastAttention(gq, gq, gq, { device: 'h200' })).rejects.toThrow(
      /device: expected a class within this device's limits \(16384 bytes, 256 invocations\)/,
    );
    await expect(fastAttention(gq, gq, gq, { device: 'cpu-1m' })).rejects.toThrow(
      /device: expected a webgpu device class for webgpu tensors/,
    );
    for (const t of [gq, r.o, r.lse]) t.dispose();
  });

  test('the plan differs from the default and is the one for the webgpu-default class', async () => {
    const plan = planTwoLevel(deviceClassOf(ctx!), { seqQ: 1024, seqK: 1024, headDim: 64 });
    const cls = planTwoLevel(WEBGPU_DEFAULT, { seqQ: 1024, seqK: 1024, headDim: 64 });
    expect(plan.webgpu!.tiles).toEqual(cls.webgpu!.tiles);
    expect(plan.defaultPlan).toBeDefined();
    expect(plan.outer.blockQ).not.toBe(plan.defaultPlan!.blockQ);
  });
});
