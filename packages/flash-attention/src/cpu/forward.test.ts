import { softmaxAttentionReference, toleranceFor } from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import {
  type Accounting,
  expectClose,
  FLAVORS,
  poisonAllocations,
  randomCase,
} from '@attnkit/testing';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { type FlashAlgorithm, flashAttention, flashAttentionTs } from '../index.js';

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

const ALGORITHMS: readonly FlashAlgorithm[] = ['fa1', 'fa2'];

describe('forward vs the float64 reference (seeded random shapes)', () => {
  const rng = new Rng(20240611);
  const cases = Array.from({ length: 22 }, (_, i) => randomCase(rng, FLAVORS[i % FLAVORS.length]!));
  test.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const ref = softmaxAttentionReference(c.q, c.k, c.v, c.options);
    const tol = toleranceFor({ dtype: 'f32' });
    for (const algorithm of ALGORITHMS) {
      const { o, lse } = flashAttentionTs(c.q, c.k, c.v, { ...c.options, algorithm });
      expect(o.dtype).toBe('f32');
      expect(lse.dtype).toBe('f32');
      expect(o.shape).toEqual(ref.o.shape);
      expect(lse.shape).toEqual(ref.lse.shape);
      expectClose(o, ref.o, tol, `${algorithm} o`);
      expectClose(lse, ref.lse, tol, `${algorithm} lse`);
    }
  });
});

describe('half-precision inputs', () => {
  const rng = new Rng(7);
  test.each(['f16', 'bf16'] as const)('%s inputs: o in the same dtype, lse in f32', (dtype) => {
    for (const flavor of ['gqa', 'window causal', 'varlen'] as const) {
      const c = randomCase(rng, flavor, dtype);
      // The reference sees the same half-precision inputs, so only o's rounding separates them.
      const ref = softmaxAttentionReference(c.q, c.k, c.v, c.options);
      for (const algorithm of ALGORITHMS) {
        const { o, lse } = flashAttentionTs(c.q, c.k, c.v, { ...c.options, algorithm });
        expect(o.dtype).toBe(dtype);
        expect(lse.dtype).toBe('f32');
        expectClose(o, ref.o, toleranceFor({ dtype }), `${algorithm} ${c.name} o`);
        expectClose(lse, ref.lse, toleranceFor({ dtype: 'f32' }), `${algorithm} ${c.name} lse`);
      }
    }
  });
});

describe('rows without keys', () => {
  test('Nq > Nk causal: O exactly 0 and LSE -Infinity on the masked rows, exact elsewhere', () => {
    const rng = new Rng(3);
    const [nq, nk] = [45, 20];
    const q = rng.randn([2, 2, nq, 16]);
    const k = rng.randn([2, 2, nk, 16]);
    const v = rng.randn([2, 2, nk, 24]);
    const ref = softmaxAttentionReference(q, k, v, { causal: true });
    for (const algorithm of ALGORITHMS) {
      const { o, lse } = flashAttentionTs(q, k, v, {
        causal: true,
        algorithm,
        blockQ: 16,
        blockK: 8,
      });
      for (let b = 0; b < 2; b++) {
        for (let h = 0; h < 2; h++) {
          for (let i = 0; i < nq; i++) {
            const masked = i < nq - nk; // query i sees keys j <= i - (nq - nk)
            expect(lse.get(b, h, i) === Number.NEGATIVE_INFINITY).toBe(masked);
            if (masked)
              for (let c = 0; c < 24; c++) expect(Object.is(o.get(b, h, i, c), 0)).toBe(true);
          }
        }
      }
      expectClose(o, ref.o, 1e-5, algorithm);
    }
  });

  test('no keys at all (Nk = 0): every row is 0 / -Infinity', async () => {
    const rng = new Rng(4);
    const q = rng.randn([1, 2, 5, 16]);
    const k = Tensor.zeros([1, 2, 0, 16]);
    const v = Tensor.zeros([1, 2, 0, 8]);
    const { o, lse } = await flashAttention(q, k, v);
    expect([...o.toFloat32Array()]).toEqual(new Array(2 * 5 * 8).fill(0));
    expect([...lse.toFloat32Array()]).toEqual(new Array(10).fill(Number.NEGATIVE_INFINITY));
  });
});

describe('tiles and skipping', () => {
  test('every tile size gives the same result (1x1 up to one tile covering everything)', () => {
    const rng = new Rng(11);
    const q = rng.randn([1, 2, 37, 16]);
    const k = rng.randn([1, 2, 29, 16]);
    const v = rng.randn([1, 2, 29, 16]);
    const options = { causal: true, window: [9, -1] as const };
    const ref = softmaxAttentionReference(q, k, v, options).o;
    for (const [blockQ, blockK] of [
      [1, 1],
      [2, 7],
      [37, 29],
      [64, 64],
    ]) {
      for (const algorithm of ALGORITHMS) {
        const { o } = flashAttentionTs(q, k, v, { ...options, algorithm, blockQ, blockK });
        expectClose(o, ref, 1e-5, `${algorithm} ${blockQ}x${blockK}`);
      }
    }
  });

  test('an all-zero block mask is dense attention with every key masked', () => {
    const rng = new Rng(12);
    const q = rng.randn([1, 1, 20, 16]);
    const k = rng.randn([1, 1, 20, 16]);
    const v = rng.randn([1, 1, 20, 16]);
    const mask = Tensor.from(new Uint8Array([1, 0, 0, 0]), [2, 2]);
    const { o, lse } = flashAttentionTs(q, k, v, { blockSparse: { blockQ: 10, blockK: 10, mask } });
    const L = lse.toFloat32Array();
    // Rows 10..19 see only blocks (1, *), both masked.
    for (let i = 10; i < 20; i++) expect(L[i]).toBe(Number.NEGATIVE_INFINITY);
    for (let i = 0; i < 10; i++) expect(Number.isFinite(L[i]!)).toBe(true);
    expect(
      o
        .toFloat32Array()
        .subarray(10 * 16)
        .every((x) => x === 0),
    ).toBe(true);
  });

  test('strided views and the async API give the same result as contiguous inputs', async () => {
    const rng = new Rng(13);
    // BNHD storage viewed as BHND: what a model's fused QKV projection hands over.
    const q = rng.randn([2, 19, 4, 16]).transpose(1, 2);
    const k = rng.randn([2, 23, 2, 16]).transpose(1, 2);
    const v = rng.randn([2, 23, 2, 16]).transpose(1, 2);
    const ref = softmaxAttentionReference(q, k, v, { causal: true });
    const { o } = await flashAttention(q, k, v, { causal: true, backend: 'ts' });
    expectClose(o, ref.o, 1e-5, 'strided');
  });
});
