import { DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { dot, numericGrad, randn, relL2 } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import {
  type SigmoidAttentionOptions,
  sigmoidAttentionReference,
  sigmoidAttentionReferenceBackward,
} from './sigmoid.js';

const rng = new Rng(0x51c);

function head(t: Tensor, b: number, h: number): Float64Array {
  return t
    .slice(0, b, b + 1)
    .slice(1, h, h + 1)
    .toFloat64Array();
}

function add(a: Tensor, b: Tensor): Tensor {
  const y = b.toFloat64Array();
  return Tensor.from(
    a.toFloat64Array().map((x, i) => x + y[i]!),
    a.shape,
    'f64',
  );
}

describe('sigmoidAttentionReference', () => {
  test('matches a dense computation with masked entries zeroed (GQA, causal, window, Nq != Nk)', () => {
    const [B, Hq, Hkv, Nq, Nk, D, Dv] = [2, 4, 2, 5, 8, 3, 4];
    const q = randn(rng, [B, Hq, Nq, D]);
    const k = randn(rng, [B, Hkv, Nk, D]);
    const v = randn(rng, [B, Hkv, Nk, Dv]);
    const opts: SigmoidAttentionOptions = { causal: true, window: [4, -1], scale: 0.6 };
    const { o } = sigmoidAttentionReference(q, k, v, opts);
    expect(o.shape).toEqual([B, Hq, Nq, Dv]);
    const bias = -Math.log(Nk);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < Hq; h++) {
        const [Q, K, V] = [head(q, b, h), head(k, b, h >> 1), head(v, b, h >> 1)];
        const want: number[] = [];
        for (let i = 0; i < Nq; i++) {
          const row = new Array<number>(Dv).fill(0);
          for (let j = 0; j < Nk; j++) {
            const diag = i + Nk - Nq;
            if (j > diag || j < diag - 4) continue;
            let s = 0;
            for (let c = 0; c < D; c++) s += Q[i * D + c]! * K[j * D + c]!;
            const p = 1 / (1 + Math.exp(-(0.6 * s + bias)));
            for (let c = 0; c < Dv; c++) row[c]! += p * V[j * Dv + c]!;
          }
          want.push(...row);
        }
        expect(relL2(head(o, b, h), want)).toBeLessThan(1e-14);
      }
    }
  });

  test('the bias shifts the logits; no row normalisation (O is linear in V)', () => {
    const q = randn(rng, [1, 1, 4, 3]);
    const k = randn(rng, [1, 1, 6, 3]);
    const v = randn(rng, [1, 1, 6, 3]);
    const v2 = randn(rng, [1, 1, 6, 3]);
    const a = sigmoidAttentionReference(q, k, v, { bias: -1 }).o.toFloat64Array();
    const b = sigmoidAttentionReference(q, k, v, { bias: -2 }).o.toFloat64Array();
    expect(relL2(a, b)).toBeGreaterThan(1e-3);
    const lhs = sigmoidAttentionReference(q, k, add(v, v2)).o.toFloat64Array();
    const rhs = add(
      sigmoidAttentionReference(q, k, v).o,
      sigmoidAttentionReference(q, k, v2).o,
    ).toFloat64Array();
    expect(relL2(lhs, rhs)).toBeLessThan(1e-14);
  });

  test('errors name the argument', () => {
    const q = randn(rng, [1, 2, 4, 3]);
    const k = randn(rng, [1, 2, 4, 3]);
    const v = randn(rng, [1, 2, 4, 3]);
    expect(() => sigmoidAttentionReference(q, k, v, { bias: Number.NaN })).toThrow(
      /^bias: expected a finite number/,
    );
    expect(() =>
      sigmoidAttentionReference(q, k, v, { layout: 'THD' } as SigmoidAttentionOptions),
    ).toThrow(ValueError);
    expect(() => sigmoidAttentionReference(q, k.astype('f32'), v)).toThrow(DTypeError);
    expect(() => sigmoidAttentionReference(q, randn(rng, [1, 2, 5, 3]), v)).toThrow(ShapeError);
    expect(() => sigmoidAttentionReferenceBackward(q, k, v, randn(rng, [1, 2, 4, 2]))).toThrow(
      /^dO: expected shape/,
    );
  });
});

describe('sigmoidAttentionReferenceBackward (central finite differences)', () => {
  test.each([
    [
      'GQA, causal, window, Nq != Nk, Dv != D',
      [1, 4, 2, 4, 6, 3, 2],
      { causal: true, window: [3, -1], bias: -0.5 },
    ],
    ['full, default bias and scale', [2, 2, 2, 5, 5, 3, 3], {}],
  ] as const)('%s', (_name, [B, Hq, Hkv, Nq, Nk, D, Dv], opts) => {
    const q = randn(rng, [B, Hq, Nq, D]);
    const k = randn(rng, [B, Hkv, Nk, D]);
    const v = randn(rng, [B, Hkv, Nk, Dv]);
    const dO = randn(rng, [B, Hq, Nq, Dv]);
    const g = sigmoidAttentionReferenceBackward(q, k, v, dO, opts);
    const loss = ([a, b, c]: Tensor[]) => dot(sigmoidAttentionReference(a!, b!, c!, opts).o, dO);
    [g.dq, g.dk, g.dv].forEach((grad, w) => {
      expect(relL2(grad.toFloat64Array(), numericGrad(loss, [q, k, v], w))).toBeLessThan(1e-6);
    });
  });
});
