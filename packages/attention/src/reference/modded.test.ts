import { DeviceError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { numericGrad, randn, relL2 } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { alibi, alibiSlopes, type MaskMod, type ScoreMod, scoreBias, softcap } from '../mods.js';
import {
  type ModdedReferenceOptions,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
} from './modded.js';
import { sigmoidAttentionReference, sigmoidAttentionReferenceBackward } from './sigmoid.js';
import { softmaxAttentionReference, softmaxAttentionReferenceBackward } from './softmax.js';

const rng = new Rng(0x70d);

const flat = (t: Tensor) => t.toFloat64Array();

describe('moddedAttentionReference without mods equals the family references', () => {
  const q = randn(rng, [2, 4, 7, 5]);
  const k = randn(rng, [2, 2, 9, 5]);
  const v = randn(rng, [2, 2, 9, 3]);
  const dO = randn(rng, [2, 4, 7, 3]);
  const opts = { causal: true, window: [4, -1] as [number, number] };

  test('softmax: o, lse and gradients', () => {
    const got = moddedAttentionReference(q, k, v, opts);
    const want = softmaxAttentionReference(q, k, v, opts);
    expect(relL2(flat(got.o), flat(want.o))).toBeLessThan(1e-14);
    expect(flat(got.lse!)).toEqual(flat(want.lse));
    const g = moddedAttentionReferenceBackward(q, k, v, dO, opts);
    const w = softmaxAttentionReferenceBackward(q, k, v, dO, opts);
    for (const n of ['dq', 'dk', 'dv'] as const)
      expect(relL2(flat(g[n]), flat(w[n])), n).toBeLessThan(1e-13);
  });

  test('sigmoid: o and gradients, default bias -log(Nk)', () => {
    const o2 = { ...opts, normalize: 'sigmoid' as const };
    const got = moddedAttentionReference(q, k, v, o2);
    expect(got.lse).toBeUndefined();
    expect(relL2(flat(got.o), flat(sigmoidAttentionReference(q, k, v, opts).o))).toBeLessThan(
      1e-14,
    );
    const g = moddedAttentionReferenceBackward(q, k, v, dO, o2);
    const w = sigmoidAttentionReferenceBackward(q, k, v, dO, opts);
    for (const n of ['dq', 'dk', 'dv'] as const)
      expect(relL2(flat(g[n]), flat(w[n])), n).toBeLessThan(1e-13);
  });
});

describe('score mods follow their definitions', () => {
  const [B, H, N, D] = [1, 2, 5, 4];
  const q = randn(rng, [B, H, N, D]);
  const k = randn(rng, [B, H, N + 2, D]);
  const v = randn(rng, [B, H, N + 2, 3]);

  /** Dense softmax of explicitly modified scores, one head. */
  function dense(h: number, mod: (s: number, i: number, j: number) => number): number[] {
    const Q = q.slice(1, h, h + 1).toFloat64Array();
    const K = k.slice(1, h, h + 1).toFloat64Array();
    const V = v.slice(1, h, h + 1).toFloat64Array();
    const out: number[] = [];
    for (let i = 0; i < N; i++) {
      const s: number[] = [];
      for (let j = 0; j < N + 2; j++) {
        let x = 0;
        for (let c = 0; c < D; c++) x += Q[i * D + c]! * K[j * D + c]!;
        s.push(mod(x / 2, i, j));
      }
      const m = Math.max(...s);
      const e = s.map((x) => Math.exp(x - m));
      const l = e.reduce((a, x) => a + x, 0);
      for (let c = 0; c < 3; c++) out.push(e.reduce((a, x, j) => a + (x / l) * V[j * 3 + c]!, 0));
    }
    return out;
  }

  test('softcap, then ALiBi (distance to the bottom-right diagonal), then a bias tensor', () => {
    const bias = rng.randn([H, N, N + 2], 'f32');
    const slopes = [0.5, 0.25];
    const mods: ScoreMod[] = [softcap(1.5), alibi(slopes), scoreBias(bias)];
    const { o } = moddedAttentionReference(q, k, v, { scoreMod: mods });
    const bb = bias.toFloat64Array();
    for (let h = 0; h < H; h++) {
      const want = dense(h, (s, i, j) => {
        const capped = 1.5 * Math.tanh(s / 1.5);
        return capped - slopes[h]! * Math.abs(i + 2 - j) + bb[(h * N + i) * (N + 2) + j]!;
      });
      expect(relL2(o.slice(1, h, h + 1).toFloat64Array(), want)).toBeLessThan(1e-14);
    }
  });

  test('alibiSlopes: the geometric sequence of the paper, and non-powers of two', () => {
    expect([...alibiSlopes(8)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((i) => 2 ** -i));
    const s12 = alibiSlopes(12);
    expect(s12.length).toBe(12);
    expect(s12[0]).toBeCloseTo(2 ** -1, 7);
    expect(s12[8]).toBeCloseTo(2 ** -0.5, 7);
  });
});

describe('gradients through mods and sinks (central finite differences)', () => {
  function gradCheck(qkv: Tensor[], options: ModdedReferenceOptions, sinks?: number[]): void {
    const dO = randn(rng, moddedAttentionReference(qkv[0]!, qkv[1]!, qkv[2]!, options).o.shape);
    const w = dO.toFloat64Array();
    const loss = (t: Tensor[], s = sinks) => {
      const o = moddedAttentionReference(t[0]!, t[1]!, t[2]!, { ...options, sinks: s }).o;
      return o.toFloat64Array().reduce((a, x, i) => a + x * w[i]!, 0);
    };
    const g = moddedAttentionReferenceBackward(qkv[0]!, qkv[1]!, qkv[2]!, dO, {
      ...options,
      sinks,
    });
    (['dq', 'dk', 'dv'] as const).forEach((n, which) => {
      const num = numericGrad((t) => loss(t), qkv, which);
      expect(relL2(flat(g[n]), num), n).toBeLessThan(1e-6);
    });
    if (sinks) {
      const num = sinks.map((_, h) => {
        const e = 1e-5;
        const up = sinks.map((x, i) => (i === h ? x + e : x));
        const dn = sinks.map((x, i) => (i === h ? x - e : x));
        return (loss(qkv, up) - loss(qkv, dn)) / (2 * e);
      });
      expect(relL2(flat(g.dsinks!), num)).toBeLessThan(1e-6);
    }
  }

  test('softmax with softcap + alibi + bias, GQA, causal, Nq != Nk', () => {
    const q = randn(rng, [1, 4, 4, 3]);
    const k = randn(rng, [1, 2, 6, 3]);
    const v = randn(rng, [1, 2, 6, 2]);
    const bias = rng.randn([4, 4, 6], 'f32');
    gradCheck([q, k, v], {
      causal: true,
      scoreMod: [softcap(2), alibi(alibiSlopes(4)), scoreBias(bias)],
    });
  });

  test('sigmoid with softcap, THD varlen', () => {
    const q = randn(rng, [7, 2, 3]);
    const k = randn(rng, [9, 1, 3]);
    const v = randn(rng, [9, 1, 2]);
    gradCheck([q, k, v], {
      normalize: 'sigmoid',
      layout: 'THD',
      cuSeqlensQ: [0, 3, 7],
      cuSeqlensK: [0, 4, 9],
      causal: true,
      scoreMod: softcap(1.2),
    });
  });

  test('softmax with sinks (dsinks too), a custom mod with its gradient', () => {
    const q = randn(rng, [1, 2, 5, 3]);
    const k = randn(rng, [1, 2, 5, 3]);
    const v = randn(rng, [1, 2, 5, 4]);
    const square: ScoreMod = {
      kind: 'custom',
      name: 'half_square',
      ts: (s) => 0.5 * s * s,
      tsGrad: (s) => s,
    };
    gradCheck([q, k, v], { scoreMod: square, window: [2, 1] }, [0.3, -1.2]);
  });
});

describe('mask mods', () => {
  const q = randn(rng, [1, 2, 6, 3]);
  const k = randn(rng, [1, 2, 8, 3]);
  const v = randn(rng, [1, 2, 8, 2]);

  test('equal to softmax over the allowed keys; a row with no key has O = 0 and LSE = -inf', () => {
    // Document mask: query row i in document floor(i / 3), key j in document floor(j / 4); row
    // 5 (document 1) sees keys 4..7, and no query sees key ... ; query row 2 is masked whole.
    const mm: MaskMod = {
      name: 'doc',
      ts: (_b, _h, i, j) => i !== 2 && Math.floor(i / 3) === Math.floor(j / 4),
      blockSize: 2,
    };
    const { o, lse } = moddedAttentionReference(q, k, v, { maskMod: mm });
    expect(lse!.get(0, 1, 2)).toBe(Number.NEGATIVE_INFINITY);
    expect([o.get(0, 1, 2, 0), o.get(0, 1, 2, 1)]).toEqual([0, 0]);
    expect(flat(o).every(Number.isFinite)).toBe(true);
    // Row 4 sees keys 4..7 only: the same as attending those keys without a mask.
    const sub = (t: Tensor) => t.slice(2, 4, 8);
    const ref = softmaxAttentionReference(q.slice(2, 4, 5), sub(k), sub(v));
    expect(relL2(o.slice(2, 4, 5).toFloat64Array(), flat(ref.o))).toBeLessThan(1e-14);
  });

  test('bad mods are typed errors naming the argument', () => {
    const bad = (opts: ModdedReferenceOptions, Err: typeof ValueError, arg: string) => {
      let caught: unknown;
      try {
        moddedAttentionReference(q, k, v, opts);
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(Err);
      expect((caught as ValueError).argument).toBe(arg);
    };
    bad({ scoreMod: softcap(0) }, ValueError, 'scoreMod.cap');
    bad({ scoreMod: [softcap(1), alibi([1])] }, ValueError, 'scoreMod[1].slopes');
    bad({ scoreMod: scoreBias(rng.randn([6, 7], 'f32')) }, ShapeError, 'scoreMod.bias');
    bad({ scoreMod: { kind: 'nope' } as unknown as ScoreMod }, ValueError, 'scoreMod.kind');
    bad({ maskMod: { name: 'x y', ts: () => true } }, ValueError, 'maskMod.name');
    const mask = Tensor.from(Uint8Array.from([1]), [1, 1]);
    bad(
      { maskMod: { name: 'm', ts: () => true }, blockSparse: { blockQ: 8, blockK: 8, mask } },
      ValueError,
      'maskMod',
    );
    // A bias on another device than q's (a stand-in object: no GPU is needed to check this).
    const bias = rng.randn([6, 8], 'f32');
    const onGpu = new Proxy(bias, {
      get: (t, key) => (key === 'device' ? 'webgpu' : Reflect.get(t, key)),
    });
    bad({ scoreMod: scoreBias(onGpu) }, DeviceError, 'scoreMod.bias');
  });
});

describe('permuted tiles (permute)', () => {
  const [B, Hq, Hkv, Nq, Nk, D] = [2, 4, 2, 6, 9, 3];
  const q = randn(rng, [B, Hq, Nq, D]);
  const k = randn(rng, [B, Hkv, Nk, D]);
  const v = randn(rng, [B, Hkv, Nk, 2]);
  const dO = randn(rng, [B, Hq, Nq, 2]);
  const shuffled = (heads: number, n: number) =>
    Int32Array.from(
      Array.from({ length: B * heads }, () => {
        const a = Array.from({ length: n }, (_, i) => i);
        for (let i = n - 1; i > 0; i--) {
          const j = Math.floor(rng.uniform() * (i + 1));
          [a[i], a[j]] = [a[j]!, a[i]!];
        }
        return a;
      }).flat(),
    );
  const pq = shuffled(Hq, Nq);
  const pk = shuffled(Hkv, Nk);
  /** Rows of [B, H, N, W] reordered: out[b, h, i] = t[b, h, perm[b, h, i]] (or the inverse). */
  function reorder(t: Tensor, perm: Int32Array, inverse: boolean): Tensor {
    const [b0, h0, n0, w0] = t.shape as [number, number, number, number];
    const x = t.toFloat64Array();
    const out = new Float64Array(x.length);
    for (let s = 0; s < b0 * h0; s++) {
      for (let i = 0; i < n0; i++) {
        const from = inverse ? i : perm[s * n0 + i]!;
        const to = inverse ? perm[s * n0 + i]! : i;
        for (let c = 0; c < w0; c++) out[(s * n0 + to) * w0 + c] = x[(s * n0 + from) * w0 + c]!;
      }
    }
    return Tensor.from(out, t.shape, 'f64');
  }
  const opts = { causal: true, scoreMod: alibi(alibiSlopes(Hq)) } as const;

  test('equals attention of the gathered rows, scattered back (forward and backward)', () => {
    const gq = reorder(q, pq, false);
    const gk = reorder(k, pk, false);
    const gv = reorder(v, pk, false);
    const gdo = reorder(dO, pq, false);
    const want = moddedAttentionReference(gq, gk, gv, opts);
    const got = moddedAttentionReference(q, k, v, { ...opts, permute: { q: pq, k: pk } });
    expect(relL2(flat(got.o), flat(reorder(want.o, pq, true)))).toBeLessThan(1e-14);
    const lse3 = (t: Tensor) => Tensor.from(t.toFloat64Array(), [B, Hq, Nq, 1], 'f64');
    expect(flat(lse3(got.lse!))).toEqual(flat(reorder(lse3(want.lse!), pq, true)));
    const gw = moddedAttentionReferenceBackward(gq, gk, gv, gdo, opts);
    const gg = moddedAttentionReferenceBackward(q, k, v, dO, {
      ...opts,
      permute: { q: pq, k: pk },
    });
    expect(relL2(flat(gg.dq), flat(reorder(gw.dq, pq, true)))).toBeLessThan(1e-13);
    expect(relL2(flat(gg.dk), flat(reorder(gw.dk, pk, true)))).toBeLessThan(1e-13);
    expect(relL2(flat(gg.dv), flat(reorder(gw.dv, pk, true)))).toBeLessThan(1e-13);
  });

  test('a slice that is not a permutation, or of the wrong length, names permute.q / permute.k', () => {
    const dup = pq.slice();
    dup[1] = dup[0]!;
    expect(() => moddedAttentionReference(q, k, v, { permute: { q: dup } })).toThrow(
      expect.objectContaining({ argument: 'permute.q' }),
    );
    expect(() => moddedAttentionReference(q, k, v, { permute: { k: pk.subarray(1) } })).toThrow(
      expect.objectContaining({ argument: 'permute.k' }),
    );
  });
});

test('a NaN score poisons its row as the softmax reference does (O and LSE NaN)', () => {
  const q = randn(rng, [1, 1, 4, 3]);
  const k = randn(rng, [1, 1, 5, 3]);
  const v = randn(rng, [1, 1, 5, 2]);
  const qd = q.toFloat64Array();
  qd[3] = Number.NaN; // row 1
  const qn = Tensor.from(qd, q.shape, 'f64');
  const got = moddedAttentionReference(qn, k, v);
  const want = softmaxAttentionReference(qn, k, v);
  expect(Number.isNaN(got.lse!.get(0, 0, 1))).toBe(true);
  expect(Number.isNaN(got.o.get(0, 0, 1, 0))).toBe(true);
  expect(flat(got.o).map(Number.isNaN)).toEqual(flat(want.o).map(Number.isNaN));
  expect(got.lse!.get(0, 0, 2)).toBeCloseTo(want.lse.get(0, 0, 2), 12);
});
