import {
  accuracy,
  registeredKernels,
  softmaxAttentionReference,
  UnsupportedError,
} from '@attnkit/attention';
import {
  loadNativeBackend,
  nativeAvailable,
  quantizeSageTs,
  sageForwardTs,
} from '@attnkit/skeleton';
import {
  BackendUnavailableError,
  DeviceError,
  DTypeError,
  Rng,
  ShapeError,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { type Accounting, poisonAllocations } from '@attnkit/testing';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { sageAttention } from './index.js';

/**
 * sageAttention's API on the cpu: the ts backend is exactly the skeleton's spec (same codes,
 * same kernel), BSHD is BHND transposed, f16/bf16 widen exactly, per-head bits, the lse (the
 * smoothing shift put back), backend choice, and the typed errors of issue 11 item 8.
 */

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

let seed = Date.now() % 1_000_000;
function problem(b: number, hq: number, hkv: number, nq: number, nk: number, d: number, dv = d) {
  const rng = new Rng(seed++);
  return {
    q: rng.randn([b, hq, nq, d]),
    k: rng.randn([b, hkv, nk, d]),
    v: rng.randn([b, hkv, nk, dv]),
  };
}

async function rejects(
  p: Promise<unknown>,
  type: abstract new (...a: never[]) => Error,
  arg: string,
) {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${type.name} naming ${arg}`).toBeInstanceOf(type);
  expect((err as { argument?: string }).argument).toBe(arg);
  return err as Error;
}

describe('sageAttention', () => {
  test('registered as family sage (forward) on ts, native and webgpu', () => {
    const regs = registeredKernels({ family: 'sage' });
    expect(regs.map((r) => `${r.pass}:${r.backend}`).sort()).toEqual([
      'forward:native',
      'forward:ts',
      'forward:webgpu',
    ]);
  });

  test('ts backend: exactly the skeleton spec from the same codes (GQA, Nq != Nk, causal)', async () => {
    const { q, k, v } = problem(2, 4, 2, 77, 131, 64, 32);
    const dims = { batch: 2, hq: 4, hkv: 2, nq: 77, nk: 131, d: 64, dv: 32 };
    const config = {
      qBits: Uint8Array.from([8, 4, 4, 8]),
      granularity: 'thread' as const,
      smoothK: true,
      smoothQ: true,
      pvBits: 8 as const,
    };
    const { o } = await sageAttention(q, k, v, {
      qkBits: [8, 4, 4, 8],
      granularity: 'thread',
      causal: true,
      backend: 'ts',
    });
    const want = sageForwardTs(
      quantizeSageTs(q.toFloat32Array(), k.toFloat32Array(), v.toFloat32Array(), dims, config),
      { scale: 1 / 8, causal: true, returnLse: false },
    );
    expect(o.shape).toEqual([2, 4, 77, 32]);
    expect(o.dtype).toBe('f32');
    expect(o.toFloat32Array()).toEqual(want.o);
  });

  test('BSHD is BHND transposed (inputs and output)', async () => {
    const { q, k, v } = problem(2, 2, 1, 45, 70, 32);
    const t = (x: Tensor) => x.permute([0, 2, 1, 3]).contiguous();
    const bhnd = await sageAttention(q, k, v, { causal: true, window: [20, -1], backend: 'ts' });
    const bshd = await sageAttention(t(q), t(k), t(v), {
      layout: 'BSHD',
      causal: true,
      window: [20, -1],
      backend: 'ts',
      returnLse: true,
    });
    expect(bshd.o.shape).toEqual([2, 45, 2, 32]);
    expect(t(bshd.o).toFloat32Array()).toEqual(bhnd.o.toFloat32Array());
    expect(bshd.lse!.shape).toEqual([2, 2, 45]);
  });

  test('f16 and bf16 inputs: widened exactly, o in the input dtype', async () => {
    const { q, k, v } = problem(1, 2, 2, 33, 40, 48);
    for (const dt of ['f16', 'bf16'] as const) {
      const [qh, kh, vh] = [q, k, v].map((x) => x.astype(dt)) as [Tensor, Tensor, Tensor];
      const { o } = await sageAttention(qh, kh, vh, { backend: 'ts' });
      expect(o.dtype).toBe(dt);
      // Same as f32 inputs holding the widened values, then rounded to dt.
      const wide = await sageAttention(qh.astype('f32'), kh.astype('f32'), vh.astype('f32'), {
        backend: 'ts',
      });
      expect(o.toFloat32Array()).toEqual(wide.o.astype(dt).toFloat32Array());
      const ref = softmaxAttentionReference(qh, kh, vh, {}).o;
      expect(accuracy(o, ref).cosine).toBeGreaterThanOrEqual(0.999);
    }
  });

  test('per-head bits: each head as if the whole call used its bits (MHA: K bits follow the head)', async () => {
    const { q, k, v } = problem(1, 3, 3, 50, 50, 64);
    const mixed = (
      await sageAttention(q, k, v, { qkBits: [8, 4, 8], backend: 'ts' })
    ).o.toFloat32Array();
    const all8 = (await sageAttention(q, k, v, { qkBits: 8, backend: 'ts' })).o.toFloat32Array();
    const all4 = (await sageAttention(q, k, v, { qkBits: 4, backend: 'ts' })).o.toFloat32Array();
    const head = (a: Float32Array, h: number) => a.subarray(h * 50 * 64, (h + 1) * 50 * 64);
    expect(head(mixed, 0)).toEqual(head(all8, 0));
    expect(head(mixed, 1)).toEqual(head(all4, 1));
    expect(head(mixed, 2)).toEqual(head(all8, 2));
    expect(head(all4, 1)).not.toEqual(head(all8, 1));
  });

  test('lse: the attention asked for (smoothK shift put back), -Infinity for rows without keys', async () => {
    const { q, k, v } = problem(1, 2, 1, 40, 25, 32);
    // K with a large mean: without the shift the lse would be off by scale q . mean(K).
    const kd = k.toFloat32Array().map((x, i) => x + (i % 32 === 3 ? 8 : 0));
    const kk = Tensor.from(kd, k.shape);
    const ref = softmaxAttentionReference(q, kk, v, { causal: true });
    for (const smoothK of [true, false]) {
      const { lse } = await sageAttention(q, kk, v, {
        causal: true,
        returnLse: true,
        smoothK,
        backend: 'ts',
      });
      const a = accuracy(lse!, ref.lse);
      expect(a.nonFinite).toBe(0);
      // Without the shift the error would be scale q_i . mean(K) ~ 8 |q_i3| / sqrt(32): units.
      // What remains is the quantized scores' (larger unsmoothed: K's outlier channel widens
      // its INT8 step).
      expect(a.maxAbs, `smoothK ${smoothK} seed ${seed}`).toBeLessThan(smoothK ? 0.05 : 0.12);
      // Nq 40 > Nk 25, bottom-right causal: 15 rows see no key.
      expect(lse!.get(0, 0, 14)).toBe(Number.NEGATIVE_INFINITY);
      expect(lse!.get(0, 1, 15)).toBeGreaterThan(Number.NEGATIVE_INFINITY);
    }
  });

  test('native (when its addon loads): the ts spec row by row, lse too, BSHD', async (ctx) => {
    await loadNativeBackend();
    if (nativeAvailable() !== true) ctx.skip();
    const { q, k, v } = problem(1, 4, 2, 77, 131, 64, 32);
    const t = (x: Tensor) => x.permute([0, 2, 1, 3]).contiguous();
    // 'auto' (the best this CPU has) and 'scalar' (every CPU); the SIMD ISAs one by one: skeleton tests.
    for (const isa of ['auto', 'scalar'] as const) {
      const opts = { causal: true, qkBits: [8, 4, 8, 8] as (4 | 8)[], returnLse: true, isa };
      const nat = await sageAttention(t(q), t(k), t(v), {
        ...opts,
        layout: 'BSHD',
        backend: 'native',
      });
      const ts = await sageAttention(q, k, v, { ...opts, isa: undefined, backend: 'ts' });
      const a = t(nat.o).toFloat32Array();
      const b = ts.o.toFloat32Array();
      // ARITHMETIC.md: rows within 1e-5, except rows with a flipped P~ code (<= 1% + 2, 1e-2).
      let flipped = 0;
      for (let r = 0; r < a.length / 32; r++) {
        const row = accuracy(a.subarray(r * 32, r * 32 + 32), b.subarray(r * 32, r * 32 + 32));
        if (row.relL2 > 1e-5) {
          flipped++;
          expect(row.relL2, `${isa} row ${r}`).toBeLessThanOrEqual(1e-2);
        }
      }
      expect(flipped, isa).toBeLessThanOrEqual(Math.floor(a.length / 32 / 100) + 2);
      expect(accuracy(nat.lse!, ts.lse!).maxAbs, isa).toBeLessThan(1e-4);
    }
  });

  test('backend choice: native when its kernels load, else ts; named backends checked', async () => {
    const { q, k, v } = problem(1, 1, 1, 5, 9, 16);
    const r = await sageAttention(q, k, v);
    expect(r.o.shape).toEqual([1, 1, 5, 16]);
    await rejects(sageAttention(q, k, v, { backend: 'webgpu' }), DeviceError, 'q');
    const native = registeredKernels({ family: 'sage' }).find((x) => x.backend === 'native')!;
    if (native.available!() !== true)
      await rejects(
        sageAttention(q, k, v, { backend: 'native' }),
        BackendUnavailableError,
        'backend',
      );
    expect(typeof nativeAvailable()).not.toBe('undefined');
    await rejects(sageAttention(q, k, v, { backend: 'cuda' as 'ts' }), ValueError, 'backend');
  });
});

describe('bad input (typed errors naming the argument)', () => {
  const { q, k, v } = problem(1, 2, 1, 9, 11, 32);
  test('bits, granularity, pvBits, smoothing, options', async () => {
    await rejects(sageAttention(q, k, v, { qkBits: 6 as 8 }), ValueError, 'qkBits');
    await rejects(sageAttention(q, k, v, { qkBits: [8] as 8[] }), ValueError, 'qkBits');
    await rejects(sageAttention(q, k, v, { qkBits: [8, 2] as 8[] }), ValueError, 'qkBits');
    await rejects(
      sageAttention(q, k, v, { granularity: 'row' as 'warp' }),
      ValueError,
      'granularity',
    );
    await rejects(sageAttention(q, k, v, { pvBits: 16 as 8 }), ValueError, 'pvBits');
    await rejects(
      sageAttention(q, k, v, { smoothQ: 'yes' as unknown as boolean }),
      ValueError,
      'smoothQ',
    );
    await rejects(sageAttention(q, k, v, { scale: Number.NaN }), ValueError, 'scale');
    await rejects(
      sageAttention(q, k, v, { returnLse: 1 as unknown as boolean }),
      ValueError,
      'returnLse',
    );
    await rejects(sageAttention(q, k, v, { threads: 0 }), ValueError, 'threads');
    await rejects(sageAttention(q, k, v, { isa: 'sse' as 'avx2' }), ValueError, 'isa');
    await rejects(sageAttention(q, k, v, { layout: 'BNHD' as 'BHND' }), ValueError, 'layout');
    await rejects(
      sageAttention(q, k, v, { blocky: 1 } as unknown as Record<string, never>),
      ValueError,
      'blocky',
    );
  });
  test('head dims the integer path cannot take', async () => {
    for (const d of [8, 24, 40, 272]) {
      const rng = new Rng(d);
      const e = await rejects(
        sageAttention(rng.randn([1, 1, 4, d]), rng.randn([1, 1, 4, d]), rng.randn([1, 1, 4, 16])),
        ValueError,
        'q',
      );
      expect(e.message).toContain('multiple of 16');
    }
    const rng = new Rng(1);
    await rejects(
      sageAttention(rng.randn([1, 1, 4, 16]), rng.randn([1, 1, 4, 16]), rng.randn([1, 1, 4, 20])),
      ValueError,
      'v',
    );
  });
  test('non-finite q, k or v', async () => {
    for (const name of ['q', 'k', 'v'] as const) {
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
        const t = { q, k, v };
        const data = t[name].toFloat32Array();
        data[data.length - 2] = bad;
        t[name] = Tensor.from(data, t[name].shape);
        const e = await rejects(sageAttention(t.q, t.k, t.v, { backend: 'ts' }), ValueError, name);
        expect(e.message).toMatch(/finite/);
      }
    }
  });
  test('calibration that does not match the heads; both qkBits and calibration', async () => {
    const cal = {
      version: 1 as const,
      kind: 'sage-calibration' as const,
      heads: 4,
      qkBits: [4, 8, 8, 4] as (4 | 8)[],
      threshold: 0.999,
      per: 'head' as const,
      samples: 1,
      granularity: 'warp' as const,
      smoothK: true,
      smoothQ: true,
      pvBits: 8 as const,
      metrics: { cosInt4: [], relL1Int4: [], cosInt8: [], relL1Int8: [] },
    };
    const e = await rejects(
      sageAttention(q, k, v, { calibration: cal }),
      ValueError,
      'calibration',
    );
    expect(e.message).toContain('Hq = 2');
    await rejects(sageAttention(q, k, v, { qkBits: cal }), ValueError, 'qkBits');
    await rejects(
      sageAttention(q, k, v, { calibration: { ...cal, heads: 2, qkBits: [4, 8] }, qkBits: 8 }),
      ValueError,
      'calibration',
    );
    await rejects(
      sageAttention(q, k, v, { calibration: { version: 2 } as unknown as typeof cal }),
      ValueError,
      'calibration',
    );
  });
  test('shapes, dtypes, devices', async () => {
    await rejects(
      sageAttention(q, k, Tensor.from(new Float32Array(32 * 10), [1, 1, 10, 32])),
      ShapeError,
      'v',
    );
    await rejects(
      sageAttention(q, Tensor.from(new Float32Array(11 * 16), [1, 1, 11, 16]), v),
      ShapeError,
      'k',
    );
    await rejects(
      sageAttention(q.astype('f64'), k.astype('f64'), v.astype('f64')),
      DTypeError,
      'q',
    );
    await rejects(sageAttention(q, k.astype('f16'), v), DTypeError, 'k');
    await rejects(sageAttention(q.reshape([2, 9, 32]), k, v), ShapeError, 'q');
    await rejects(
      sageAttention(
        q,
        Tensor.from(new Float32Array(3 * 11 * 32), [1, 3, 11, 32]),
        Tensor.from(new Float32Array(3 * 11 * 32), [1, 3, 11, 32]),
      ),
      ValueError,
      'k',
    );
  });
  test("other families' options: UnsupportedError naming them (varlen, masks, mods, paged)", async () => {
    for (const [opt, value] of [
      ['cuSeqlensQ', [0, 9]],
      ['blockSparse', {}],
      ['scoreMod', { kind: 'softcap', cap: 5 }],
      ['paged', {}],
      ['numSplits', 2],
    ] as const) {
      const e = await rejects(
        sageAttention(q, k, v, { [opt]: value } as unknown as Record<string, never>),
        UnsupportedError,
        opt,
      );
      expect(Object.keys((e as UnsupportedError).reasons).sort()).toEqual([
        'native',
        'ts',
        'webgpu',
      ]);
    }
    await rejects(sageAttention(q, k, v, { layout: 'THD' as 'BHND' }), UnsupportedError, 'layout');
  });
});
