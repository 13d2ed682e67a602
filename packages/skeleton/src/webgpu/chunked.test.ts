import {
  type AttentionOptions,
  type ModdedReferenceOptions,
  moddedAttentionReference,
  resolveAttentionProblem,
  resolveScoreMods,
  softcap,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { type ScheduleHook, sigmoidBias, type TiledHooks } from '../hooks.js';
import { encodeForwardWebGpu, tiledForwardWebGpu } from './host.js';

// Forwards whose q, k, v, o or lse pass one storage binding run in binding chunks (chunks.ts,
// host.ts chunkedForward): each chunk binds its piece of q, k, v where it lies and its o / lse
// are copied into place. The device's limit is lowered here so that small tensors need chunks:
// without them these calls are the ValueError of checkBindingSizes, so a passing case ran the
// chunks. Outputs start as NaN (the test context poisons them): a chunk not copied shows.
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

/** Runs `fn` with the test context planning against a binding limit of `limit` bytes. */
async function withBindingLimit<T>(limit: number, fn: () => Promise<T>): Promise<T> {
  const real = ctx!.limits;
  const lowered = ctx as unknown as { limits: typeof real };
  lowered.limits = { ...real, maxStorageBufferBindingSize: limit };
  try {
    return await fn();
  } finally {
    lowered.limits = real;
  }
}

interface Case {
  name: string;
  dtype?: 'f32' | 'f16';
  batch: number;
  hq: number;
  hkv: number;
  nq: number;
  nk: number;
  d: number;
  dv?: number;
  attn?: AttentionOptions;
  sinks?: boolean;
  sigmoid?: boolean;
  /** The binding limit to plan against, in kv heads' worth of the largest of q, k, v, o. */
  heads: number;
  schedules: (ScheduleHook | undefined)[];
}

const DECODE_SCHEDULES: (ScheduleHook | undefined)[] = [
  undefined,
  { kind: 'splitK', splits: 3 },
  { kind: 'streamK', workers: 5 },
];

const CASES: Case[] = [
  // Chunks start at multiples of 256 bytes in q, k and v: the shapes below make a kv head's
  // slice a multiple of 256 bytes, or of 128 (case 2: chunks then start at even heads).
  {
    name: 'decode GQA, one kv head a chunk',
    batch: 2,
    hq: 8,
    hkv: 4,
    nq: 1,
    nk: 301,
    d: 64,
    heads: 1,
    schedules: DECODE_SCHEDULES,
  },
  {
    name: 'decode, kv-head pairs',
    batch: 2,
    hq: 6,
    hkv: 6,
    nq: 2,
    nk: 320,
    d: 16,
    heads: 2.5,
    schedules: DECODE_SCHEDULES,
  },
  // One batch entry is 3 kv heads: 7 heads' room holds 2 entries, so chunks of 2, 2, 1 entries.
  {
    name: 'decode, whole batch entries',
    batch: 5,
    hq: 3,
    hkv: 3,
    nq: 4,
    nk: 64,
    d: 16,
    heads: 7,
    schedules: DECODE_SCHEDULES,
  },
  {
    name: 'decode f16, sinks, causal window',
    dtype: 'f16',
    batch: 1,
    hq: 8,
    hkv: 4,
    nq: 4,
    nk: 256,
    d: 16,
    sinks: true,
    attn: { causal: true, window: [100, 0] },
    heads: 1.5,
    schedules: DECODE_SCHEDULES,
  },
  {
    name: 'prefill causal, Dv != D',
    batch: 2,
    hq: 4,
    hkv: 2,
    nq: 37,
    nk: 45,
    d: 64,
    dv: 128,
    attn: { causal: true },
    // Split-K's partials (2 splits x Dv f32 a row) are the largest binding: 1 kv head a chunk.
    heads: 2,
    schedules: [undefined, { kind: 'splitK', splits: 2 }, { kind: 'streamK', workers: 3 }],
  },
  {
    name: 'prefill sigmoid',
    batch: 1,
    hq: 4,
    hkv: 4,
    nq: 20,
    nk: 32,
    d: 16,
    sigmoid: true,
    heads: 3,
    schedules: [undefined],
  },
];

describe.skipIf(!ctx)('forwards past one storage binding run in binding chunks', () => {
  const rng = new Rng(20261206);
  for (const c of CASES) {
    test.each(c.schedules.map((s) => [s?.kind ?? 'band', s] as const))(
      `${c.name}, schedule %s`,
      async (_, schedule) => {
        const dtype = c.dtype ?? 'f32';
        const dv = c.dv ?? c.d;
        const attn: AttentionOptions = { ...c.attn };
        const q = rng.randn([c.batch, c.hq, c.nq, c.d], dtype);
        const k = rng.randn([c.batch, c.hkv, c.nk, c.d], dtype);
        const v = rng.randn([c.batch, c.hkv, c.nk, dv], dtype);
        const sinks = c.sinks
          ? Float32Array.from({ length: c.hq }, (_, h) => 0.5 - 0.3 * h)
          : undefined;
        const ref: ModdedReferenceOptions = { ...attn, scoreMod: [] };
        if (c.sigmoid) ref.normalize = 'sigmoid';
        if (sinks) ref.sinks = sinks;
        const want = moddedAttentionReference(q, k, v, ref);
        const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx!)) as Tensor[];
        const p = resolveAttentionProblem(gq!, gk!, gv!, attn);
        const hooks = {
          normalize: c.sigmoid
            ? { kind: 'sigmoid', bias: sigmoidBias(p) }
            : { kind: 'softmax', sinks },
          scoreMods: [],
          schedule,
        } as TiledHooks;
        const e = dtype === 'f16' ? 2 : 4;
        const g = c.hq / c.hkv;
        const slice = Math.max(g * c.nq * Math.max(c.d, dv), c.nk * Math.max(c.d, dv)) * e;
        const limit = Math.floor(c.heads * slice);
        // Some whole tensor (q, k, v or o) is past the limit: the call must cut.
        expect(limit).toBeLessThan(c.batch * c.hkv * slice);
        await withBindingLimit(limit, async () => {
          const { o, lse } = await tiledForwardWebGpu(p, hooks, gq!, gk!, gv!);
          const tol = toleranceFor({ dtype });
          expect(o.shape).toEqual([c.batch, c.hq, c.nq, dv]);
          expectClose(await o.toCpu(), want.o, tol, `${c.name} o`);
          if (c.sigmoid) expect(lse).toBeUndefined();
          else expectClose(await lse!.toCpu(), want.lse!, tol, `${c.name} lse`);
          for (const t of [o, lse]) t?.dispose();
        });
        for (const t of [gq, gk, gv]) t!.dispose();
      },
    );
  }

  test("sigmoid with a bias per batch entry: each chunk gets its entries' bias", async () => {
    // 3 entries of 2 kv heads; a binding holds 2 kv heads' worth: one entry a chunk.
    const [B, H, nq, nk, d] = [3, 2, 5, 64, 64];
    const bias = Float32Array.of(-1, 0.5, -2.5);
    const q = rng.randn([B, H, nq, d]);
    const k = rng.randn([B, H, nk, d]);
    const v = rng.randn([B, H, nk, d]);
    const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx!)) as Tensor[];
    const p = resolveAttentionProblem(gq!, gk!, gv!);
    const hooks = { normalize: { kind: 'sigmoid', bias }, scoreMods: [] } as TiledHooks;
    await withBindingLimit(2 * nk * d * 4, async () => {
      const { o } = await tiledForwardWebGpu(p, hooks, gq!, gk!, gv!);
      const got = (await o.toCpu()).toFloat32Array();
      const per = H * nq * d;
      for (let b = 0; b < B; b++) {
        const entry = (t: Tensor, n: number) =>
          Tensor.from(t.toFloat32Array().slice(b * H * n * d, (b + 1) * H * n * d), [1, H, n, d]);
        const want = moddedAttentionReference(entry(q, nq), entry(k, nk), entry(v, nk), {
          normalize: 'sigmoid',
          bias: bias[b]!,
          scoreMod: [],
        });
        expectClose(
          Tensor.from(got.slice(b * per, (b + 1) * per), [1, H, nq, d]),
          want.o,
          toleranceFor({ dtype: 'f32' }),
          `entry ${b}`,
        );
      }
      o.dispose();
    });
    for (const t of [gq, gk, gv]) t!.dispose();
  });

  test('the synchronous encode path declines a chunked forward (nothing made)', async () => {
    const [q, k, v] = [
      [1, 2, 1, 64],
      [1, 2, 64, 64],
      [1, 2, 64, 64],
    ].map((s) => toWebGpu(rng.randn(s), ctx!));
    const p = resolveAttentionProblem(q!, k!, v!);
    await withBindingLimit(64 * 64 * 4, async () => {
      const plain = { normalize: { kind: 'softmax' }, scoreMods: [] } as TiledHooks;
      let sunk = 0;
      const r = encodeForwardWebGpu(p, plain, q!, k!, v!, {}, { sink: () => void sunk++ });
      expect(r).toBeUndefined();
      expect(sunk).toBe(0);
    });
    for (const t of [q, k, v]) t!.dispose();
  });

  test('what chunks do not cut keeps its ValueError naming the tensor (a score mod; THD)', async () => {
    const [q, k, v] = [
      [1, 2, 4, 16],
      [1, 2, 64, 16],
      [1, 2, 64, 16],
    ].map((s) => toWebGpu(rng.randn(s), ctx!));
    const p = resolveAttentionProblem(q!, k!, v!);
    await withBindingLimit(64 * 16 * 4, async () => {
      const capped = {
        normalize: { kind: 'softmax' },
        scoreMods: resolveScoreMods([softcap(5)], p, 'webgpu'),
      } as TiledHooks;
      await expect(tiledForwardWebGpu(p, capped, q!, k!, v!)).rejects.toMatchObject({
        name: 'ValueError',
        argument: 'k',
      });
      const [tq, tk, tv] = [
        [4, 2, 16],
        [128, 2, 16],
        [128, 2, 16],
      ].map((s) => toWebGpu(rng.randn(s), ctx!));
      const thd = resolveAttentionProblem(tq!, tk!, tv!, {
        layout: 'THD',
        cuSeqlensQ: [0, 4],
        cuSeqlensK: [0, 128],
      });
      const plain = { normalize: { kind: 'softmax' }, scoreMods: [] } as TiledHooks;
      await expect(tiledForwardWebGpu(thd, plain, tq!, tk!, tv!)).rejects.toMatchObject({
        name: 'ValueError',
        argument: 'k',
      });
      for (const t of [tq, tk, tv]) t!.dispose();
    });
    for (const t of [q, k, v]) t!.dispose();
  });

  test("split-K's partials of one kv head past the limit: a ValueError naming schedule", async () => {
    const [q, k, v] = [
      [1, 2, 16, 64],
      [1, 2, 64, 64],
      [1, 2, 64, 64],
    ].map((s) => toWebGpu(rng.randn(s), ctx!));
    const p = resolveAttentionProblem(q!, k!, v!);
    await withBindingLimit(64 * 64 * 4, async () => {
      const hooks = {
        normalize: { kind: 'softmax' },
        scoreMods: [],
        schedule: { kind: 'splitK', splits: 8 },
      } as TiledHooks;
      await expect(tiledForwardWebGpu(p, hooks, q!, k!, v!)).rejects.toMatchObject({
        name: 'ValueError',
        argument: 'schedule',
        message: expect.stringMatching(/^schedule: one kv head's slice of split-K's partials/),
      });
    });
    for (const t of [q, k, v]) t!.dispose();
  });

  test("malformed hooks past the limit keep prepare's ValueError naming hooks", async () => {
    const [q, k, v] = [
      [1, 2, 1, 64],
      [1, 2, 64, 64],
      [1, 2, 64, 64],
    ].map((s) => toWebGpu(rng.randn(s), ctx!));
    const p = resolveAttentionProblem(q!, k!, v!);
    await withBindingLimit(64 * 64 * 4, async () => {
      for (const bad of [null, {}, { normalize: { kind: 'softmax' } }])
        await expect(
          tiledForwardWebGpu(p, bad as unknown as TiledHooks, q!, k!, v!),
        ).rejects.toMatchObject({ name: 'ValueError', argument: 'hooks' });
    });
    for (const t of [q, k, v]) t!.dispose();
  });

  test('no aligned cut: a ValueError naming the tensor, before anything runs', async () => {
    // D 6 f32, 7 keys: 168 bytes a kv head, so a chunk may start only every 32 kv heads.
    const [q, k, v] = [
      [1, 3, 1, 6],
      [1, 3, 7, 6],
      [1, 3, 7, 6],
    ].map((s) => toWebGpu(rng.randn(s), ctx!));
    const p = resolveAttentionProblem(q!, k!, v!);
    await withBindingLimit(2 * 168, async () => {
      const plain = { normalize: { kind: 'softmax' }, scoreMods: [] } as TiledHooks;
      await expect(tiledForwardWebGpu(p, plain, q!, k!, v!)).rejects.toThrow(
        /cannot be cut into pieces of at most 336 bytes that start at multiples of 256/,
      );
    });
    for (const t of [q, k, v]) t!.dispose();
  });
});
