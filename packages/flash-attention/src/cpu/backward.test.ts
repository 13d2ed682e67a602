import {
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import {
  type Accounting,
  expectClose,
  FLAVORS,
  poisonAllocations,
  randomCase,
} from '@attnkit/testing';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { flashAttentionBackward, flashAttentionBackwardTs, flashAttentionTs } from '../index.js';

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

type Grads = Record<'dq' | 'dk' | 'dv', Tensor>;

function expectGrads(got: Grads, ref: Grads, tol: number, label: string): void {
  for (const name of ['dq', 'dk', 'dv'] as const)
    expectClose(got[name], ref[name], tol, `${label} ${name}`);
}

describe('FA2 backward vs the float64 reference (seeded random shapes)', () => {
  const rng = new Rng(99);
  const cases = Array.from({ length: 18 }, (_, i) => randomCase(rng, FLAVORS[i % FLAVORS.length]!));
  test.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const ref = softmaxAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.options);
    const { o, lse } = flashAttentionTs(c.q, c.k, c.v, c.options);
    const grads = flashAttentionBackwardTs(c.q, c.k, c.v, o, lse, c.dO, c.options);
    expect(grads.dq.shape).toEqual(c.q.shape);
    expect(grads.dk.shape).toEqual(c.k.shape);
    expect(grads.dv.shape).toEqual(c.v.shape);
    expectGrads(grads, ref, 1e-5, c.name);
  });
});

describe('backward details', () => {
  test("algorithm 'fa1' runs the same backward kernel", async () => {
    const c = randomCase(new Rng(5), 'gqa');
    const { o, lse } = flashAttentionTs(c.q, c.k, c.v, { ...c.options, algorithm: 'fa1' });
    const a = await flashAttentionBackward(c.q, c.k, c.v, o, lse, c.dO, {
      ...c.options,
      algorithm: 'fa1',
    });
    const b = flashAttentionBackwardTs(c.q, c.k, c.v, o, lse, c.dO, c.options);
    for (const name of ['dq', 'dk', 'dv'] as const) {
      expect(a[name].toFloat32Array()).toEqual(b[name].toFloat32Array());
    }
  });

  test('rows without keys (Nq > Nk causal) get zero gradients and add nothing to dK, dV', () => {
    const rng = new Rng(6);
    const [nq, nk] = [40, 25];
    const q = rng.randn([1, 4, nq, 16]);
    const k = rng.randn([1, 2, nk, 16]);
    const v = rng.randn([1, 2, nk, 16]);
    const dO = rng.randn([1, 4, nq, 16]);
    const options = { causal: true, blockQ: 8, blockK: 8 };
    const { o, lse } = flashAttentionTs(q, k, v, options);
    const g = flashAttentionBackwardTs(q, k, v, o, lse, dO, options);
    const dq = g.dq.toFloat32Array();
    for (let h = 0; h < 4; h++) {
      for (let i = 0; i < nq - nk; i++) {
        const row = dq.subarray((h * nq + i) * 16, (h * nq + i + 1) * 16);
        expect(row.every((x) => Object.is(x, 0))).toBe(true);
      }
    }
    expectGrads(g, softmaxAttentionReferenceBackward(q, k, v, dO, options), 1e-5, 'empty rows');
  });

  test.each(['f16', 'bf16'] as const)('%s inputs: gradients in the same dtype', (dtype) => {
    const rng = new Rng(8);
    for (const flavor of ['mqa', 'varlen', 'sparse per-head'] as const) {
      const c = randomCase(rng, flavor, dtype);
      const { o, lse } = flashAttentionTs(c.q, c.k, c.v, c.options);
      const g = flashAttentionBackwardTs(c.q, c.k, c.v, o, lse, c.dO, c.options);
      expect(g.dq.dtype).toBe(dtype);
      expect(g.dk.dtype).toBe(dtype);
      expect(g.dv.dtype).toBe(dtype);
      const ref = softmaxAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.options);
      expectGrads(g, ref, toleranceFor({ dtype }), c.name);
    }
  });

  test('the reference forward and our forward agree on what the backward consumes', () => {
    // dQ depends on O through D = rowsum(dO * O): feeding the reference's O gives the same grads.
    const c = randomCase(new Rng(10), 'window causal');
    const ref = softmaxAttentionReference(c.q, c.k, c.v, c.options);
    const { o, lse } = flashAttentionTs(c.q, c.k, c.v, c.options);
    const a = flashAttentionBackwardTs(c.q, c.k, c.v, o, lse, c.dO, c.options);
    const b = flashAttentionBackwardTs(
      c.q,
      c.k,
      c.v,
      ref.o.astype('f32'),
      ref.lse.astype('f32'),
      c.dO,
      c.options,
    );
    expectGrads(a, b, 1e-5, c.name);
  });
});
