import { DTypeError, Rng, ShapeError, type Tensor, ValueError } from '@attnkit/tensor';
import { dot, numericGrad, randn, relL2 } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import {
  type HstuOptions,
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
} from './hstu.js';

const rng = new Rng(0x4570);

describe('hstuAttentionReference', () => {
  test('matches a per-sequence dense computation of silu(alpha QK^T + rab) / N, diagonal included', () => {
    const offsets = [0, 3, 3, 8, 12];
    const [L, H, D, Dv, N] = [12, 2, 3, 4, 6];
    const q = randn(rng, [L, H, D]);
    const k = randn(rng, [L, H, D]);
    const v = randn(rng, [L, H, Dv]);
    const rab = randn(rng, [4, 1, N, N]);
    for (const causal of [true, false]) {
      const opts: HstuOptions = { seqOffsets: offsets, maxSeqLen: N, alpha: 0.4, causal, rab };
      const { o } = hstuAttentionReference(q, k, v, opts);
      expect(o.shape).toEqual([L, H, Dv]);
      const want = new Float64Array(L * H * Dv);
      for (let b = 0; b < 4; b++) {
        const s0 = offsets[b]!;
        for (let i = s0; i < offsets[b + 1]!; i++) {
          for (let j = s0; j < (causal ? i + 1 : offsets[b + 1]!); j++) {
            for (let h = 0; h < H; h++) {
              let z = rab.get(b, 0, i - s0, j - s0);
              for (let c = 0; c < D; c++) z += 0.4 * q.get(i, h, c) * k.get(j, h, c);
              const a = z / (1 + Math.exp(-z)) / N;
              for (let c = 0; c < Dv; c++) want[(i * H + h) * Dv + c]! += a * v.get(j, h, c);
            }
          }
        }
      }
      expect(relL2(o.toFloat64Array(), want)).toBeLessThan(1e-14);
    }
    expect(
      hstuAttentionReference(q, k, v, { seqOffsets: offsets, maxSeqLen: N, alpha: 0.4 }).o.get(
        0,
        0,
        0,
      ),
    ).not.toBe(0);
  });

  test('sequences do not see each other', () => {
    const offsets = Int32Array.from([0, 4, 9]);
    const q = randn(rng, [9, 1, 2]);
    const k = randn(rng, [9, 1, 2]);
    const v = randn(rng, [9, 1, 2]);
    const opts: HstuOptions = { seqOffsets: offsets, maxSeqLen: 5, alpha: 1, causal: false };
    const all = hstuAttentionReference(q, k, v, opts).o;
    const first = hstuAttentionReference(q.slice(0, 0, 4), k.slice(0, 0, 4), v.slice(0, 0, 4), {
      ...opts,
      seqOffsets: [0, 4],
    }).o;
    expect([...all.slice(0, 0, 4).toFloat64Array()]).toEqual([...first.toFloat64Array()]);
  });

  test('errors name the argument', () => {
    const q = randn(rng, [6, 2, 3]);
    const k = randn(rng, [6, 2, 3]);
    const v = randn(rng, [6, 2, 4]);
    const base: HstuOptions = { seqOffsets: [0, 2, 6], maxSeqLen: 4, alpha: 1 };
    const run =
      (o: Partial<HstuOptions>, kk: Tensor = k) =>
      () =>
        hstuAttentionReference(q, kk, v, { ...base, ...o });
    expect(run({ seqOffsets: [0, 4, 2, 6] })).toThrow(/^seqOffsets: expected non-decreasing/);
    expect(run({ seqOffsets: [0, 2, 5] })).toThrow(/^seqOffsets: expected last entry/);
    expect(run({ seqOffsets: [0, 1, 6] })).toThrow(
      /^seqOffsets: expected sequence lengths <= maxSeqLen 4/,
    );
    expect(run({ maxSeqLen: 0 })).toThrow(/^maxSeqLen: /);
    expect(run({ alpha: Number.NaN })).toThrow(/^alpha: /);
    expect(run({ rab: randn(rng, [1, 2, 4, 5]) })).toThrow(
      /^rab: expected shape \[2 or 1, 2 or 1, 4, 4\]/,
    );
    expect(run({}, randn(rng, [6, 2, 2]))).toThrow(ShapeError);
    expect(run({}, k.astype('i32'))).toThrow(DTypeError);
    expect(run({ causal: 'yes' as unknown as boolean })).toThrow(ValueError);
    expect(() => hstuAttentionReferenceBackward(q, k, v, randn(rng, [6, 2, 3]), base)).toThrow(
      /^dO: expected shape \[6, 2, 4\]/,
    );
  });
});

describe('hstuAttentionReferenceBackward (central finite differences)', () => {
  test.each([
    ['causal, rab shared over the batch', true, [1, 2]],
    ['non-causal, rab shared over heads', false, [3, 1]],
  ] as const)('%s', (_name, causal, [rb, rh]) => {
    const offsets = [0, 2, 5, 9];
    const [L, H, D, Dv, N] = [9, 2, 3, 2, 4];
    const q = randn(rng, [L, H, D]);
    const k = randn(rng, [L, H, D]);
    const v = randn(rng, [L, H, Dv]);
    const rab = randn(rng, [rb, rh, N, N]);
    const dO = randn(rng, [L, H, Dv]);
    const opts = (r: Tensor): HstuOptions => ({
      seqOffsets: offsets,
      maxSeqLen: N,
      alpha: 0.8,
      causal,
      rab: r,
    });
    const g = hstuAttentionReferenceBackward(q, k, v, dO, opts(rab));
    expect(g.drab?.shape).toEqual([rb, rh, N, N]);
    const loss = ([a, b, c, r]: Tensor[]) =>
      dot(hstuAttentionReference(a!, b!, c!, opts(r!)).o, dO);
    [g.dq, g.dk, g.dv, g.drab!].forEach((grad, w) => {
      expect(relL2(grad.toFloat64Array(), numericGrad(loss, [q, k, v, rab], w))).toBeLessThan(1e-6);
    });
    const noRab = hstuAttentionReferenceBackward(q, k, v, dO, {
      seqOffsets: offsets,
      maxSeqLen: N,
      alpha: 0.8,
    });
    expect(noRab.drab).toBeUndefined();
  });
});
