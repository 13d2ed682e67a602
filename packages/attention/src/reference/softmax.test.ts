import { DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { dot, numericGrad, randn, relL2 } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { type AttentionOptions, resolveAttentionProblem } from '../spec.js';
import { softmaxAttentionReference, softmaxAttentionReferenceBackward } from './softmax.js';

const rng = new Rng(0x5eed1);

/** Checks all three gradients of the reference against central differences of sum(O * dO). */
function gradCheck(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions): void {
  const { o } = softmaxAttentionReference(q, k, v, options);
  const dO = randn(rng, o.shape);
  const g = softmaxAttentionReferenceBackward(q, k, v, dO, options);
  const loss = ([a, b, c]: Tensor[]) => dot(softmaxAttentionReference(a!, b!, c!, options).o, dO);
  const grads = [g.dq, g.dk, g.dv];
  for (let w = 0; w < 3; w++) {
    const num = numericGrad(loss, [q, k, v], w);
    const ana = grads[w]!.toFloat64Array();
    expect(ana.some((x) => x !== 0)).toBe(true);
    expect(relL2(ana, num)).toBeLessThan(1e-6);
  }
}

/**
 * Dense softmax attention written straight from KERNELS.md with its own mask rule, for one
 * BHND head pair: q [Nq, D], k [Nk, D], v [Nk, Dv] as row-major arrays.
 */
function naiveHead(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  nq: number,
  nk: number,
  d: number,
  dv: number,
  scale: number,
  visible: (i: number, j: number) => boolean,
): { o: number[]; lse: number[] } {
  const o: number[] = [];
  const lse: number[] = [];
  for (let i = 0; i < nq; i++) {
    const s: number[] = [];
    for (let j = 0; j < nk; j++) {
      let x = 0;
      for (let c = 0; c < d; c++) x += q[i * d + c]! * k[j * d + c]!;
      s.push(visible(i, j) ? x * scale : Number.NEGATIVE_INFINITY);
    }
    const m = Math.max(...s);
    if (m === Number.NEGATIVE_INFINITY) {
      lse.push(m);
      for (let c = 0; c < dv; c++) o.push(0);
      continue;
    }
    const e = s.map((x) => Math.exp(x - m));
    const l = e.reduce((a, x) => a + x, 0);
    lse.push(m + Math.log(l));
    for (let c = 0; c < dv; c++) {
      let acc = 0;
      for (let j = 0; j < nk; j++) acc += (e[j]! / l) * v[j * dv + c]!;
      o.push(acc);
    }
  }
  return { o, lse };
}

function head(t: Tensor, b: number, h: number): Float64Array {
  return t
    .slice(0, b, b + 1)
    .slice(1, h, h + 1)
    .toFloat64Array();
}

describe('softmaxAttentionReference', () => {
  test('matches a dense KERNELS.md computation (GQA, causal bottom-right, window, Nq != Nk, Dv != D)', () => {
    const [B, Hq, Hkv, Nq, Nk, D, Dv] = [2, 4, 2, 6, 9, 5, 3];
    const q = randn(rng, [B, Hq, Nq, D]);
    const k = randn(rng, [B, Hkv, Nk, D]);
    const v = randn(rng, [B, Hkv, Nk, Dv]);
    const scale = 0.7;
    const [left, right] = [3, 1];
    const { o, lse } = softmaxAttentionReference(q, k, v, {
      scale,
      causal: true,
      window: [left, right],
    });
    expect(o.dtype).toBe('f64');
    expect(o.shape).toEqual([B, Hq, Nq, Dv]);
    expect(lse.shape).toEqual([B, Hq, Nq]);
    // causal caps the right edge at the diagonal i + Nk - Nq.
    const visible = (i: number, j: number) => j <= i + Nk - Nq && j >= i + Nk - Nq - left;
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < Hq; h++) {
        const kvh = Math.floor(h / (Hq / Hkv));
        const want = naiveHead(
          head(q, b, h),
          head(k, b, kvh),
          head(v, b, kvh),
          Nq,
          Nk,
          D,
          Dv,
          scale,
          visible,
        );
        expect(relL2(head(o, b, h), want.o)).toBeLessThan(1e-14);
        expect(
          relL2(
            lse
              .slice(0, b, b + 1)
              .slice(1, h, h + 1)
              .toFloat64Array(),
            want.lse,
          ),
        ).toBeLessThan(1e-14);
      }
    }
  });

  test('default scale is 1/sqrt(D); f16, bf16 and f32 inputs are decoded then computed in float64', () => {
    const q = randn(rng, [1, 2, 4, 8]);
    const k = randn(rng, [1, 2, 5, 8]);
    const v = randn(rng, [1, 2, 5, 8]);
    const a = softmaxAttentionReference(q, k, v).o.toFloat64Array();
    const b = softmaxAttentionReference(q, k, v, { scale: 1 / Math.sqrt(8) }).o.toFloat64Array();
    expect([...a]).toEqual([...b]);
    for (const dt of ['f32', 'f16', 'bf16'] as const) {
      const [q2, k2, v2] = [q, k, v].map((t) => t.astype(dt)) as [Tensor, Tensor, Tensor];
      const [q3, k3, v3] = [q2, k2, v2].map((t) => t.astype('f64')) as [Tensor, Tensor, Tensor];
      const got = softmaxAttentionReference(q2, k2, v2);
      expect(got.o.dtype).toBe('f64');
      expect([...got.o.toFloat64Array()]).toEqual([
        ...softmaxAttentionReference(q3, k3, v3).o.toFloat64Array(),
      ]);
    }
  });

  test('non-contiguous views are read in logical order', () => {
    const q = randn(rng, [1, 5, 2, 4]);
    const k = randn(rng, [1, 6, 2, 4]);
    const v = randn(rng, [1, 6, 2, 4]);
    // BNHD storage viewed as BHND.
    const [qt, kt, vt] = [q, k, v].map((t) => t.transpose(1, 2)) as [Tensor, Tensor, Tensor];
    const [qc, kc, vc] = [qt, kt, vt].map((t) => t.contiguous()) as [Tensor, Tensor, Tensor];
    expect(qt.isContiguous()).toBe(false);
    expect([...softmaxAttentionReference(qt, kt, vt).o.toFloat64Array()]).toEqual([
      ...softmaxAttentionReference(qc, kc, vc).o.toFloat64Array(),
    ]);
  });

  test('GQA equals each query head run against its kv head alone (forward and backward)', () => {
    const [B, Hq, Hkv, N, D] = [2, 6, 2, 7, 4];
    const q = randn(rng, [B, Hq, N, D]);
    const k = randn(rng, [B, Hkv, N, D]);
    const v = randn(rng, [B, Hkv, N, D]);
    const dO = randn(rng, [B, Hq, N, D]);
    const opts: AttentionOptions = { causal: true };
    const full = softmaxAttentionReference(q, k, v, opts);
    const grads = softmaxAttentionReferenceBackward(q, k, v, dO, opts);
    const dkSum = new Float64Array(k.size);
    const dvSum = new Float64Array(v.size);
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / (Hq / Hkv));
      const qh = q.slice(1, h, h + 1);
      const kh = k.slice(1, kvh, kvh + 1);
      const vh = v.slice(1, kvh, kvh + 1);
      const one = softmaxAttentionReference(qh, kh, vh, opts);
      expect([...one.o.toFloat64Array()]).toEqual([...full.o.slice(1, h, h + 1).toFloat64Array()]);
      expect([...one.lse.toFloat64Array()]).toEqual([
        ...full.lse.slice(1, h, h + 1).toFloat64Array(),
      ]);
      const g = softmaxAttentionReferenceBackward(qh, kh, vh, dO.slice(1, h, h + 1), opts);
      expect([...g.dq.toFloat64Array()]).toEqual([...grads.dq.slice(1, h, h + 1).toFloat64Array()]);
      const dk = g.dk.toFloat64Array();
      const dv = g.dv.toFloat64Array();
      for (let b = 0; b < B; b++) {
        for (let x = 0; x < N * D; x++) {
          dkSum[(b * Hkv + kvh) * N * D + x]! += dk[b * N * D + x]!;
          dvSum[(b * Hkv + kvh) * N * D + x]! += dv[b * N * D + x]!;
        }
      }
    }
    expect(relL2(grads.dk.toFloat64Array(), dkSum)).toBeLessThan(1e-15);
    expect(relL2(grads.dv.toFloat64Array(), dvSum)).toBeLessThan(1e-15);
  });

  test('fully masked rows: O = 0, LSE = -Infinity, zero gradients, no NaN', () => {
    const [Nq, Nk] = [7, 3];
    const q = randn(rng, [1, 2, Nq, 4]);
    const k = randn(rng, [1, 2, Nk, 4]);
    const v = randn(rng, [1, 2, Nk, 4]);
    const dO = randn(rng, [1, 2, Nq, 4]);
    const { o, lse } = softmaxAttentionReference(q, k, v, { causal: true });
    const g = softmaxAttentionReferenceBackward(q, k, v, dO, { causal: true });
    for (let h = 0; h < 2; h++) {
      for (let i = 0; i < Nq; i++) {
        // bottom-right causal: row i sees keys j <= i - (Nq - Nk), none for i < 4.
        const empty = i < Nq - Nk;
        expect(lse.get(0, h, i) === Number.NEGATIVE_INFINITY).toBe(empty);
        for (let c = 0; c < 4; c++) {
          expect(Number.isNaN(o.get(0, h, i, c))).toBe(false);
          if (empty) {
            expect(o.get(0, h, i, c)).toBe(0);
            expect(g.dq.get(0, h, i, c)).toBe(0);
          } else if (i > Nq - Nk) {
            // rows with one key have P = 1 and dQ = 0 exactly; later rows must not.
            expect(g.dq.get(0, h, i, c)).not.toBe(0);
          }
        }
      }
    }
    // a window that excludes every key everywhere: everything is zero, nothing is NaN.
    const none = softmaxAttentionReference(q, k, v, { window: [0, 0], causal: false });
    expect(none.lse.toFloat64Array().some((x) => x === Number.NEGATIVE_INFINITY)).toBe(true);
  });

  test('decode (Nq = 1) with causal sees every key', () => {
    const q = randn(rng, [1, 1, 1, 4]);
    const k = randn(rng, [1, 1, 9, 4]);
    const v = randn(rng, [1, 1, 9, 4]);
    const a = softmaxAttentionReference(q, k, v, { causal: true }).o.toFloat64Array();
    const b = softmaxAttentionReference(q, k, v).o.toFloat64Array();
    expect([...a]).toEqual([...b]);
  });

  test('THD equals per-sequence BHND results (forward and backward), lse is [Hq, totalQ]', () => {
    const cuQ = [0, 3, 8, 12];
    const cuK = [0, 5, 9, 16];
    const [Hq, Hkv, D, Dv] = [4, 2, 3, 5];
    const q = randn(rng, [12, Hq, D]);
    const k = randn(rng, [16, Hkv, D]);
    const v = randn(rng, [16, Hkv, Dv]);
    const dO = randn(rng, [12, Hq, Dv]);
    const opts: AttentionOptions = {
      layout: 'THD',
      cuSeqlensQ: cuQ,
      cuSeqlensK: Int32Array.from(cuK),
      causal: true,
      window: [2, -1],
    };
    const { o, lse } = softmaxAttentionReference(q, k, v, opts);
    expect(o.shape).toEqual([12, Hq, Dv]);
    expect(lse.shape).toEqual([Hq, 12]);
    const g = softmaxAttentionReferenceBackward(q, k, v, dO, opts);
    for (let b = 0; b < 3; b++) {
      // [T, H, D] slice -> [1, H, T, D]
      const toBhnd = (t: Tensor, cu: number[]) =>
        t
          .slice(0, cu[b]!, cu[b + 1]!)
          .transpose(0, 1)
          .reshape([1, t.shape[1]!, cu[b + 1]! - cu[b]!, t.shape[2]!]);
      const sub: AttentionOptions = { causal: true, window: [2, -1] };
      const [qb, kb, vb, gb] = [
        toBhnd(q, cuQ),
        toBhnd(k, cuK),
        toBhnd(v, cuK),
        toBhnd(dO, cuQ),
      ] as Tensor[];
      const ref = softmaxAttentionReference(qb!, kb!, vb!, sub);
      const refG = softmaxAttentionReferenceBackward(qb!, kb!, vb!, gb!, sub);
      expect([...toBhnd(o, cuQ).toFloat64Array()]).toEqual([...ref.o.toFloat64Array()]);
      expect([...lse.slice(1, cuQ[b]!, cuQ[b + 1]!).toFloat64Array()]).toEqual([
        ...ref.lse.toFloat64Array(),
      ]);
      expect([...toBhnd(g.dq, cuQ).toFloat64Array()]).toEqual([...refG.dq.toFloat64Array()]);
      expect([...toBhnd(g.dk, cuK).toFloat64Array()]).toEqual([...refG.dk.toFloat64Array()]);
      expect([...toBhnd(g.dv, cuK).toFloat64Array()]).toEqual([...refG.dv.toFloat64Array()]);
    }
  });

  test('block-sparse equals dense attention with the dropped blocks masked', () => {
    const [Hq, Nq, Nk, D] = [2, 5, 7, 3];
    const q = randn(rng, [1, Hq, Nq, D]);
    const k = randn(rng, [1, 1, Nk, D]);
    const v = randn(rng, [1, 1, Nk, D]);
    // per-head [Hq, ceil(5/2), ceil(7/3)] = [2, 3, 3]
    const maskBits = [1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 1, 1];
    const mask = Tensor.from(Uint8Array.from(maskBits), [Hq, 3, 3]);
    const { o } = softmaxAttentionReference(q, k, v, {
      blockSparse: { blockQ: 2, blockK: 3, mask },
    });
    for (let h = 0; h < Hq; h++) {
      const visible = (i: number, j: number) =>
        maskBits[h * 9 + Math.floor(i / 2) * 3 + Math.floor(j / 3)] === 1;
      const want = naiveHead(
        head(q, 0, h),
        head(k, 0, 0),
        head(v, 0, 0),
        Nq,
        Nk,
        D,
        D,
        1 / Math.sqrt(D),
        visible,
      );
      expect(relL2(head(o, 0, h), want.o)).toBeLessThan(1e-14);
    }
    // head 1's first block row is all zero: rows 0 and 1 are fully masked.
    expect(o.get(0, 1, 0, 0)).toBe(0);
    expect(o.get(0, 1, 1, 2)).toBe(0);
    expect(o.get(0, 0, 1, 2)).not.toBe(0);
  });
});

describe('softmaxAttentionReferenceBackward (central finite differences)', () => {
  test('GQA + causal + window, Nq != Nk, Dv != D', () => {
    const q = randn(rng, [1, 4, 4, 3]);
    const k = randn(rng, [1, 2, 6, 3]);
    const v = randn(rng, [1, 2, 6, 2]);
    gradCheck(q, k, v, { causal: true, window: [3, 0], scale: 0.8 });
  });

  test('non-causal window with right context, Nq > Nk, an empty first row', () => {
    const q = randn(rng, [2, 2, 6, 3]);
    const k = randn(rng, [2, 1, 4, 3]);
    const v = randn(rng, [2, 1, 4, 4]);
    // diagonal i - 2: row i sees keys [i - 3, i - 1], so row 0 sees none.
    const opts: AttentionOptions = { window: [1, 1] };
    expect(softmaxAttentionReference(q, k, v, opts).lse.get(1, 1, 0)).toBe(
      Number.NEGATIVE_INFINITY,
    );
    gradCheck(q, k, v, opts);
  });

  test('THD varlen, causal', () => {
    const q = randn(rng, [7, 2, 3]);
    const k = randn(rng, [9, 1, 3]);
    const v = randn(rng, [9, 1, 2]);
    gradCheck(q, k, v, {
      layout: 'THD',
      cuSeqlensQ: [0, 3, 7],
      cuSeqlensK: [0, 4, 9],
      causal: true,
    });
  });

  test('block-sparse, shared mask', () => {
    const q = randn(rng, [1, 2, 5, 3]);
    const k = randn(rng, [1, 2, 6, 3]);
    const v = randn(rng, [1, 2, 6, 3]);
    const mask = Tensor.from(Uint8Array.from([1, 0, 0, 1, 1, 1]), [3, 2]);
    gradCheck(q, k, v, { blockSparse: { blockQ: 2, blockK: 3, mask } });
  });

  test('dO of the wrong shape is a ShapeError naming dO', () => {
    const q = randn(rng, [1, 2, 4, 3]);
    const k = randn(rng, [1, 2, 4, 3]);
    const v = randn(rng, [1, 2, 4, 5]);
    const bad = randn(rng, [1, 2, 4, 3]);
    expect(() => softmaxAttentionReferenceBackward(q, k, v, bad)).toThrow(ShapeError);
    expect(() => softmaxAttentionReferenceBackward(q, k, v, bad)).toThrow(
      /^dO: expected shape \[1, 2, 4, 5\]/,
    );
    const ints = Tensor.zeros([1, 2, 4, 5], 'i32');
    expect(() => softmaxAttentionReferenceBackward(q, k, v, ints)).toThrow(DTypeError);
  });
});

describe('resolveAttentionProblem errors name the argument', () => {
  const q = randn(rng, [1, 4, 5, 3]);
  const k = randn(rng, [1, 2, 6, 3]);
  const v = randn(rng, [1, 2, 6, 2]);
  function expectError(fn: () => unknown, Err: typeof ShapeError, argument: string): void {
    let err: unknown;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Err);
    expect((err as ShapeError).argument).toBe(argument);
    expect((err as Error).message.startsWith(`${argument}: expected`)).toBe(true);
  }

  test('mismatched shapes of k and v', () => {
    expectError(() => resolveAttentionProblem(q, randn(rng, [1, 2, 6, 4]), v), ShapeError, 'k');
    expectError(() => resolveAttentionProblem(q, randn(rng, [2, 2, 6, 3]), v), ShapeError, 'k');
    expectError(() => resolveAttentionProblem(q, k, randn(rng, [1, 2, 5, 2])), ShapeError, 'v');
    expectError(() => resolveAttentionProblem(q, k, randn(rng, [2, 6, 2])), ShapeError, 'v');
  });

  test('wrong dtypes', () => {
    expectError(
      () => resolveAttentionProblem(Tensor.zeros([1, 4, 5, 3], 'i32'), k, v),
      DTypeError,
      'q',
    );
    expectError(() => resolveAttentionProblem(q, k.astype('f32'), v), DTypeError, 'k');
    expectError(() => resolveAttentionProblem(q, k, v.astype('f16')), DTypeError, 'v');
  });

  test('Hq not a multiple of Hkv', () => {
    const k3 = randn(rng, [1, 3, 6, 3]);
    const v3 = randn(rng, [1, 3, 6, 2]);
    expectError(() => resolveAttentionProblem(q, k3, v3), ShapeError, 'k');
  });

  test('cu_seqlens: non-monotone, last offset != total, missing', () => {
    const qt = randn(rng, [6, 2, 3]);
    const kt = randn(rng, [6, 2, 3]);
    const vt = randn(rng, [6, 2, 3]);
    expectError(
      () => resolveAttentionProblem(qt, kt, vt, { layout: 'THD', cuSeqlensQ: [0, 4, 2, 6] }),
      ValueError,
      'cuSeqlensQ',
    );
    expectError(
      () => resolveAttentionProblem(qt, kt, vt, { layout: 'THD', cuSeqlensQ: [0, 2, 5] }),
      ValueError,
      'cuSeqlensQ',
    );
    expectError(
      () =>
        resolveAttentionProblem(qt, kt, vt, {
          layout: 'THD',
          cuSeqlensQ: [0, 2, 6],
          cuSeqlensK: [0, 3, 7],
        }),
      ValueError,
      'cuSeqlensK',
    );
    expectError(
      () => resolveAttentionProblem(qt, kt, vt, { layout: 'THD' }),
      ValueError,
      'cuSeqlensQ',
    );
  });

  test('NaN scale and bad windows', () => {
    expectError(() => resolveAttentionProblem(q, k, v, { scale: Number.NaN }), ValueError, 'scale');
    expectError(() => resolveAttentionProblem(q, k, v, { window: [-2, 3] }), ValueError, 'window');
    expectError(() => resolveAttentionProblem(q, k, v, { window: [1.5, 3] }), ValueError, 'window');
    expectError(
      () => resolveAttentionProblem(q, k, v, { window: [1] as unknown as [number, number] }),
      ValueError,
      'window',
    );
  });

  test('block mask of the wrong shape or dtype', () => {
    // ceil(5/2) x ceil(6/4) = 3 x 2 is right; 2 x 2 is not.
    const ok = Tensor.from(new Uint8Array(6).fill(1), [3, 2]);
    expect(
      resolveAttentionProblem(q, k, v, { blockSparse: { blockQ: 2, blockK: 4, mask: ok } })
        .blockSparse?.nbq,
    ).toBe(3);
    const bad = Tensor.from(new Uint8Array(4).fill(1), [2, 2]);
    expectError(
      () => resolveAttentionProblem(q, k, v, { blockSparse: { blockQ: 2, blockK: 4, mask: bad } }),
      ShapeError,
      'blockSparse.mask',
    );
    const badHeads = Tensor.from(new Uint8Array(12).fill(1), [2, 3, 2]);
    expectError(
      () =>
        resolveAttentionProblem(q, k, v, { blockSparse: { blockQ: 2, blockK: 4, mask: badHeads } }),
      ShapeError,
      'blockSparse.mask',
    );
    const floats = Tensor.from(new Float32Array(6).fill(1), [3, 2]);
    expectError(
      () =>
        resolveAttentionProblem(q, k, v, { blockSparse: { blockQ: 2, blockK: 4, mask: floats } }),
      DTypeError,
      'blockSparse.mask',
    );
  });
});
