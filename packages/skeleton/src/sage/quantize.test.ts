import { Rng, ShapeError, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import {
  kGroupOf,
  qGroupOf,
  rint,
  type SageDims,
  type SageGranularity,
  type SageQuantConfig,
  sageGroupCounts,
} from './codec.js';
import { quantizeSageTs } from './quantize.js';

/**
 * quantizeSageTs against a direct transcription of ARITHMETIC.md "Pre-pass" (element by
 * element, no shared scratch): codes and scales equal, every granularity, smoothing on and off,
 * per-head bits with GQA, odd lengths; plus the rules one at a time and the typed errors.
 */

function randn(rng: Rng, n: number, std = 1): Float32Array {
  const a = new Float32Array(n);
  rng.fillNormal(a, 0, std);
  return a;
}

interface Naive {
  qCodes: Int8Array;
  qScale: Float32Array;
  kCodes: Int8Array;
  kScale: Float32Array;
  vCodes: Int8Array;
  vScale: Float32Array;
  bias: Float32Array;
}

function naiveQuantize(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dm: SageDims,
  cfg: SageQuantConfig,
): Naive {
  const { batch, hq, hkv, nq, nk, d, dv } = dm;
  const g = cfg.granularity;
  const { nQG, nKG, nQB } = sageGroupCounts(nq, nk, g);
  const f = Math.fround;
  const out: Naive = {
    qCodes: new Int8Array(q.length),
    qScale: new Float32Array(batch * hq * nQG),
    kCodes: new Int8Array(k.length),
    kScale: new Float32Array(batch * hkv * nKG),
    vCodes: new Int8Array(v.length),
    vScale: new Float32Array(batch * hkv * dv),
    bias: new Float32Array(batch * hq * nQB * nk),
  };
  const code = (x: number, s: number, qmax: number) =>
    s === 0 ? 0 : Math.max(-qmax, Math.min(qmax, rint(x / s)));
  for (let b = 0; b < batch; b++) {
    for (let hk = 0; hk < hkv; hk++) {
      const K = (j: number, c: number) => k[((b * hkv + hk) * nk + j) * d + c]!;
      const km = (c: number) => {
        let s = 0;
        for (let j = 0; j < nk; j++) s += K(j, c);
        return f(s / nk);
      };
      const kms = Array.from({ length: d }, (_, c) => (cfg.smoothK ? km(c) : 0));
      const Ks = (j: number, c: number) => (cfg.smoothK ? f(K(j, c) - kms[c]!) : K(j, c));
      const heads = Array.from({ length: hq / hkv }, (_, x) => hk * (hq / hkv) + x);
      const kq = heads.some((h) => cfg.qBits[h] === 8) ? 127 : 7;
      for (let G = 0; G < nKG; G++) {
        let amax = 0;
        for (let j = 0; j < nk; j++)
          if (kGroupOf(j, g) === G)
            for (let c = 0; c < d; c++) amax = Math.max(amax, Math.abs(Ks(j, c)));
        const s = f(amax / kq);
        out.kScale[(b * hkv + hk) * nKG + G] = s;
        for (let j = 0; j < nk; j++)
          if (kGroupOf(j, g) === G)
            for (let c = 0; c < d; c++)
              out.kCodes[((b * hkv + hk) * nk + j) * d + c] = code(Ks(j, c), s, kq);
      }
      for (let c = 0; c < dv; c++) {
        let amax = 0;
        for (let j = 0; j < nk; j++)
          amax = Math.max(amax, Math.abs(v[((b * hkv + hk) * nk + j) * dv + c]!));
        const sV = f(amax / 127);
        out.vScale[(b * hkv + hk) * dv + c] = f(sV / 255);
        for (let j = 0; j < nk; j++) {
          const e = ((b * hkv + hk) * nk + j) * dv + c;
          out.vCodes[e] = code(v[e]!, sV, 127);
        }
      }
      for (const h of heads) {
        const Q = (i: number, c: number) => q[((b * hq + h) * nq + i) * d + c]!;
        const qm = (a: number, c: number) => {
          let s = 0;
          const i1 = Math.min(nq, 128 * a + 128);
          for (let i = 128 * a; i < i1; i++) s += Q(i, c);
          return f(s / (i1 - 128 * a));
        };
        const Qs = (i: number, c: number) => (cfg.smoothQ ? f(Q(i, c) - qm(i >> 7, c)) : Q(i, c));
        const qq = cfg.qBits[h] === 8 ? 127 : 7;
        if (cfg.smoothQ)
          for (let a = 0; a < nQB; a++)
            for (let j = 0; j < nk; j++) {
              let s = 0;
              for (let c = 0; c < d; c++) s += qm(a, c) * Ks(j, c);
              out.bias[((b * hq + h) * nQB + a) * nk + j] = f(s);
            }
        for (let G = 0; G < nQG; G++) {
          let amax = 0;
          for (let i = 0; i < nq; i++)
            if (qGroupOf(i, g) === G)
              for (let c = 0; c < d; c++) amax = Math.max(amax, Math.abs(Qs(i, c)));
          const s = f(amax / qq);
          out.qScale[(b * hq + h) * nQG + G] = s;
          for (let i = 0; i < nq; i++)
            if (qGroupOf(i, g) === G)
              for (let c = 0; c < d; c++)
                out.qCodes[((b * hq + h) * nq + i) * d + c] = code(Qs(i, c), s, qq);
        }
      }
    }
  }
  return out;
}

const dims = (over: Partial<SageDims> = {}): SageDims => ({
  batch: 2,
  hq: 4,
  hkv: 2,
  nq: 37,
  nk: 70,
  d: 16,
  dv: 32,
  ...over,
});

const config = (over: Partial<SageQuantConfig> = {}): SageQuantConfig => ({
  qBits: new Uint8Array([8, 4, 4, 4]),
  granularity: 'warp',
  smoothK: true,
  smoothQ: true,
  pvBits: 8,
  ...over,
});

function inputs(dm: SageDims, seed: number) {
  const rng = new Rng(seed);
  const q = randn(rng, dm.batch * dm.hq * dm.nq * dm.d);
  const k = randn(rng, dm.batch * dm.hkv * dm.nk * dm.d);
  const v = randn(rng, dm.batch * dm.hkv * dm.nk * dm.dv);
  // A channel offset in K (the case smoothing is for) and a Q mean, so the means matter.
  for (let e = 3; e < k.length; e += dm.d) k[e] = k[e]! + 10;
  for (let e = 5; e < q.length; e += dm.d) q[e] = q[e]! + 2;
  return { q, k, v };
}

describe('quantizeSageTs', () => {
  const grans: SageGranularity[] = ['block', 'warp', 'thread'];
  for (const g of grans)
    for (const smooth of [true, false])
      test(`equals the transcription of ARITHMETIC.md: ${g}, smoothing ${smooth}`, () => {
        const dm = dims({ nq: g === 'block' ? 150 : 37 });
        const cfg = config({ granularity: g, smoothK: smooth, smoothQ: smooth });
        const { q, k, v } = inputs(dm, 7 + (smooth ? 1 : 0));
        const got = quantizeSageTs(q, k, v, dm, cfg);
        const want = naiveQuantize(q, k, v, dm, cfg);
        expect(got.qScale).toEqual(want.qScale);
        expect(got.kScale).toEqual(want.kScale);
        expect(got.vScale).toEqual(want.vScale);
        expect(got.qCodes).toEqual(want.qCodes);
        expect(got.kCodes).toEqual(want.kCodes);
        expect(got.vCodes).toEqual(want.vCodes);
        if (smooth) expect(got.bias).toEqual(want.bias);
        else expect(got.bias).toBeUndefined();
        expect(got.v).toBeUndefined();
      });

  test('K of a kv head uses 8 bits when any query head of its group does; codes within qmax', () => {
    const dm = dims();
    const { q, k, v } = inputs(dm, 3);
    const c = quantizeSageTs(q, k, v, dm, config({ qBits: new Uint8Array([4, 4, 4, 8]) }));
    const per = dm.nk * dm.d;
    for (let b = 0; b < dm.batch; b++)
      for (let hk = 0; hk < 2; hk++) {
        const codes = c.kCodes.subarray((b * 2 + hk) * per, (b * 2 + hk + 1) * per);
        const max = codes.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
        expect(max).toBe(hk === 0 ? 7 : 127);
      }
    const perQ = dm.nq * dm.d;
    for (let h = 0; h < 4; h++) {
      const codes = c.qCodes.subarray(h * perQ, (h + 1) * perQ);
      expect(codes.reduce((m, x) => Math.max(m, Math.abs(x)), 0)).toBe(h === 3 ? 127 : 7);
    }
  });

  test('zero groups get scale 0 and codes 0; empty thread groups scale 0', () => {
    const dm = dims({ batch: 1, hq: 1, hkv: 1, nq: 20, nk: 5 });
    const q = new Float32Array(20 * 16);
    const k = new Float32Array(5 * 16);
    const v = new Float32Array(5 * 32);
    for (let c = 0; c < 16; c++) q[16 * 16 + c] = 1; // row 16 only (thread group 8)
    const c = quantizeSageTs(
      q,
      k,
      v,
      dm,
      config({ qBits: new Uint8Array([8]), granularity: 'thread', smoothQ: false }),
    );
    expect(c.qScale.length).toBe(16);
    expect(Array.from(c.qScale).filter((s) => s !== 0)).toEqual([Math.fround(1 / 127)]);
    expect(c.qScale[8]).toBe(Math.fround(1 / 127));
    expect(c.kScale.every((s) => s === 0)).toBe(true);
    expect(c.kCodes.every((x) => x === 0)).toBe(true);
    expect(c.vScale!.every((s) => s === 0)).toBe(true);
  });

  test('rint, not Math.round: a code on a .5 boundary rounds to even', () => {
    const dm = dims({ batch: 1, hq: 1, hkv: 1, nq: 1, nk: 1, d: 16, dv: 16 });
    const q = new Float32Array(16);
    q[0] = 7; // amax 7, qmax 7: s = 1, so codes are rint(x)
    q[1] = 2.5;
    q[2] = -2.5;
    q[3] = 3.5;
    const c = quantizeSageTs(q, new Float32Array(16), new Float32Array(16), dm, {
      qBits: new Uint8Array([4]),
      granularity: 'warp',
      smoothK: false,
      smoothQ: false,
      pvBits: 8,
    });
    expect(Array.from(c.qCodes.subarray(0, 4))).toEqual([7, 2, -2, 4]);
  });

  test('pvBits 32 keeps V as f32 (no V codes)', () => {
    const dm = dims();
    const { q, k, v } = inputs(dm, 4);
    const c = quantizeSageTs(q, k, v, dm, config({ pvBits: 32 }));
    expect(c.v).toBe(v);
    expect(c.vCodes).toBeUndefined();
    expect(c.vScale).toBeUndefined();
  });

  test('typed errors naming the argument', () => {
    const dm = dims();
    const { q, k, v } = inputs(dm, 5);
    const err = (fn: () => unknown, type: typeof ValueError, name: string) => {
      try {
        fn();
      } catch (e) {
        expect(e).toBeInstanceOf(type);
        expect((e as { argument?: string }).argument).toBe(name);
        expect((e as Error).message.startsWith(`${name}:`)).toBe(true);
        return;
      }
      throw new Error(`no error for ${name}`);
    };
    for (const [name, a] of [
      ['q', q],
      ['k', k],
      ['v', v],
    ] as const) {
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
        const copy = { q, k, v, [name]: Float32Array.from(a) };
        copy[name][a.length - 3] = bad;
        err(() => quantizeSageTs(copy.q, copy.k, copy.v, dm, config()), ValueError, name);
      }
    }
    err(
      () => quantizeSageTs(q, k, v, dm, config({ qBits: new Uint8Array([8, 4, 2, 4]) })),
      ValueError,
      'qkBits',
    );
    err(
      () => quantizeSageTs(q, k, v, dm, config({ qBits: new Uint8Array([8]) })),
      ValueError,
      'qkBits',
    );
    err(
      () => quantizeSageTs(q, k, v, dm, config({ granularity: 'row' as SageGranularity })),
      ValueError,
      'granularity',
    );
    err(() => quantizeSageTs(q, k, v, dm, config({ pvBits: 16 as 8 })), ValueError, 'pvBits');
    err(
      () => quantizeSageTs(q, k, v, dm, config({ smoothK: 1 as unknown as boolean })),
      ValueError,
      'smoothK',
    );
    for (const d of [8, 40, 272]) {
      const dd = dims({ d });
      err(() => quantizeSageTs(q, k, v, dd, config()), ValueError, 'q');
    }
    err(() => quantizeSageTs(q, k, v, dims({ dv: 24 }), config()), ValueError, 'v');
    err(() => quantizeSageTs(q, k, v, dims({ hkv: 3 }), config()), ValueError, 'k');
    err(() => quantizeSageTs(q.subarray(1), k, v, dm, config()), ShapeError, 'q');
  });
});
