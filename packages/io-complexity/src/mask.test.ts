import {
  allowed,
  resolveAttentionProblem,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
} from '@attnkit/attention';
import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { simulate } from './algorithms/index.js';
import { closedFormIO, defaultBlocks } from './closed-form.js';
import { tileMasked } from './mask.js';
import { type IOProblem, resolveProblem } from './problem.js';

/** Reads FA2 forward must make when it skips exactly the tiles with no allowed pair. */
function fa2ReadsByTiles(p: IOProblem, br: number, bc: number): number {
  const r = resolveProblem(p);
  let reads = r.N * r.d;
  for (let r0 = 0; r0 < r.N; r0 += br) {
    for (let c0 = 0; c0 < r.N; c0 += bc) {
      const rows = Math.min(br, r.N - r0);
      const cols = Math.min(bc, r.N - c0);
      if (!tileMasked(r, r0, rows, c0, cols)) reads += cols * (r.d + r.dv);
    }
  }
  return reads;
}

describe('mask-aware FA2 (spec.ts keyRange)', () => {
  test('skipped tiles are exactly those with no allowed pair (cross-check with allowed)', () => {
    const rng = new Rng(7);
    for (let trial = 0; trial < 60; trial++) {
      const N = rng.int(1, 40);
      const band = rng.int(0, 2);
      const causal = band !== 1;
      const window: [number, number] =
        band === 0 ? [-1, -1] : [rng.int(-1, 10), band === 1 ? rng.int(-1, 10) : -1];
      const x = Tensor.from(new Float32Array(N * 2), [1, 1, N, 2]);
      const ap = resolveAttentionProblem(x, x, x, { causal, window });
      const p = resolveProblem({ N, d: 2, M: 1 << 20, causal, window });
      expect([p.left, p.right]).toEqual([ap.left, ap.right]);
      const br = rng.int(1, 12);
      const bc = rng.int(1, 12);
      for (let r0 = 0; r0 < N; r0 += br) {
        for (let c0 = 0; c0 < N; c0 += bc) {
          const rows = Math.min(br, N - r0);
          const cols = Math.min(bc, N - c0);
          let any = false;
          for (let i = r0; i < r0 + rows; i++) {
            for (let j = c0; j < c0 + cols; j++) any ||= allowed(ap, 0, 0, i, j);
          }
          expect(tileMasked(p, r0, rows, c0, cols)).toBe(!any);
        }
      }
    }
  });

  test('causal FA2 at N = 4096 reads about half the K/V: exactly the kept tiles', () => {
    const dense: IOProblem = { N: 4096, d: 64, M: 65536 };
    const causal: IOProblem = { ...dense, causal: true };
    const blocks = defaultBlocks('fa2', dense);
    expect(defaultBlocks('fa2', causal)).toEqual(blocks);
    const a = simulate('fa2', dense);
    const c = simulate('fa2', causal);
    expect(a).toEqual(closedFormIO('fa2', dense));
    expect(c.reads).toBe(fa2ReadsByTiles(causal, blocks.blockQ, blocks.blockK));
    expect(c.writes).toBe(a.writes);
    expect(c.peakFast).toBe(a.peakFast);
    const kvDense = a.reads - 4096 * 64;
    const kvCausal = c.reads - 4096 * 64;
    // Tr query blocks of br rows see (i + 1) br / bc key blocks each: (Tr + 1) / (2 Tr) of dense.
    const tr = Math.ceil(4096 / blocks.blockQ);
    // Default blocks at M = 65536 are large (few query blocks), so the diagonal costs more than 1/2.
    expect(kvCausal / kvDense).toBeGreaterThan(0.5);
    expect(kvCausal / kvDense).toBeLessThan(0.6);
    if (4096 % blocks.blockQ === 0 && blocks.blockQ % blocks.blockK === 0) {
      expect(kvCausal / kvDense).toBeCloseTo((tr + 1) / (2 * tr), 12);
    }
  });

  test('a sliding window reads K/V in proportion to the band', () => {
    const N = 4096;
    const blocks = { blockQ: 64, blockK: 64 };
    const kv = (window: [number, number]) =>
      simulate('fa2', { N, d: 64, M: 65536, window }, { blocks }).reads - N * 64;
    for (const w of [64, 128, 256, 512]) {
      const r = kv([w, 0]);
      // Query block i meets key blocks i - w / 64 .. i: w / 64 + 1 of them (fewer at the start).
      const tiles = (N / 64) * (w / 64 + 1) - ((w / 64) * (w / 64 + 1)) / 2;
      expect(r).toBe(tiles * 64 * 128);
      expect(r).toBe(fa2ReadsByTiles({ N, d: 64, M: 65536, window: [w, 0] }, 64, 64) - N * 64);
    }
    expect(kv([256, 256]) / kv([128, 128])).toBeCloseTo(9 / 5, 1);
  });

  test('masked FA2 forward and backward compute the causal / window reference', () => {
    const rng = new Rng(99);
    const N = 13;
    const d = 4;
    const dv = 3;
    const randn = (n: number) => {
      const x = new Float64Array(n);
      rng.fillNormal(x);
      return x;
    };
    const q = randn(N * d);
    const k = randn(N * d);
    const v = randn(N * dv);
    const dO = randn(N * dv);
    const t = (x: Float64Array, cols: number) => Tensor.from(x, [1, 1, N, cols], 'f64');
    for (const opts of [{ causal: true }, { window: [2, 3] as [number, number] }]) {
      const ref = softmaxAttentionReference(t(q, d), t(k, d), t(v, dv), opts);
      const bwd = softmaxAttentionReferenceBackward(t(q, d), t(k, d), t(v, dv), t(dO, dv), opts);
      const problem = { N, d, dv, M: 4096, ...opts };
      const blocks = { blockQ: 4, blockK: 3 };
      const f = simulate('fa2', problem, { blocks, data: { q, k, v } });
      const o = f.outputs!.o!;
      const lse = f.outputs!.lse!;
      const close = (a: Float64Array, b: Float64Array) => {
        expect(a.length).toBe(b.length);
        for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(b[i]!, 10);
      };
      close(o, ref.o.toFloat64Array());
      close(lse, ref.lse.toFloat64Array());
      const b = simulate('fa2-backward', problem, { blocks, data: { q, k, v, o, lse, dO } });
      close(b.outputs!.dq!, bwd.dq.toFloat64Array());
      close(b.outputs!.dk!, bwd.dk.toFloat64Array());
      close(b.outputs!.dv!, bwd.dv.toFloat64Array());
    }
  });

  test('causal FA2 backward skips the masked query blocks', () => {
    const dense: IOProblem = { N: 1024, d: 64, M: 65536 };
    const a = simulate('fa2-backward', dense);
    const c = simulate('fa2-backward', { ...dense, causal: true });
    expect(a).toEqual(closedFormIO('fa2-backward', dense));
    expect(c.reads).toBeLessThan(0.7 * a.reads);
    expect(c.writes).toBeLessThan(a.writes);
  });

  test('dense-only algorithms and closed forms refuse a mask; bad bands are ValueErrors', () => {
    const p: IOProblem = { N: 64, d: 8, M: 4096, causal: true };
    for (const algo of ['standard', 'fa1', 'small-cache'] as const) {
      expect(() => simulate(algo, p)).toThrow(ValueError);
    }
    expect(() => closedFormIO('fa2', p)).toThrow(/dense attention only/);
    expect(() => resolveProblem({ N: 4, d: 1, M: 9, window: [-2, 0] })).toThrow(ValueError);
    expect(() => resolveProblem({ N: 4, d: 1, M: 9, causal: 1 })).toThrow(ValueError);
    expect(resolveProblem({ N: 4, d: 1, M: 9, causal: true, window: [3, 5] })).toMatchObject({
      left: 3,
      right: 0,
      masked: true,
    });
  });
});
