import { DTypeError, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { simulate } from './algorithms/index.js';
import { tileIO } from './closed-form.js';
import { type PlannerAlgorithm, type PlannerDType, planTiles, tileFootprint } from './planner.js';

const ALGOS: PlannerAlgorithm[] = ['fa1', 'fa2', 'fa2-backward'];

describe('planTiles', () => {
  const cases: { bytes: number; d: number; dv?: number; dtype: PlannerDType; N: number }[] = [
    { bytes: 4096, d: 8, dtype: 'f32', N: 37 },
    { bytes: 6000, d: 8, dv: 5, dtype: 'f16', N: 50 },
    { bytes: 16384, d: 16, dtype: 'bf16', N: 64 },
    { bytes: 1500, d: 4, dtype: 'f32', N: 23 },
  ];

  for (const algo of ALGOS) {
    for (const c of cases) {
      test(`${algo}, ${c.bytes} B, d = ${c.d}, ${c.dtype}, N = ${c.N}: the brute-force minimum, and it fits`, () => {
        const plan = planTiles({
          fastMemoryBytes: c.bytes,
          headDim: c.d,
          headDimV: c.dv,
          dtype: c.dtype,
          seqLen: c.N,
          algo,
        });
        const p = { N: c.N, d: c.d, dv: c.dv, M: 1 };
        let min = Number.POSITIVE_INFINITY;
        let feasible = 0;
        for (let bq = 1; bq <= c.N; bq++) {
          for (let bk = 1; bk <= c.N; bk++) {
            const fp = tileFootprint({
              algo,
              headDim: c.d,
              headDimV: c.dv,
              dtype: c.dtype,
              blockQ: bq,
              blockK: bk,
            });
            if (fp.bytes > c.bytes) continue;
            feasible++;
            min = Math.min(min, tileIO(algo, p, { blockQ: bq, blockK: bk }).total);
          }
        }
        expect(feasible).toBeGreaterThan(5);
        expect(plan.predictedIO).toBe(min);
        expect(plan.fastBytes).toBeLessThanOrEqual(c.bytes);
        // The simulator, given exactly the planned working set, runs the plan and reports that I/O.
        const run = simulate(algo, { ...p, M: plan.fastElements }, { blocks: plan });
        expect(run.total).toBe(plan.predictedIO);
        expect(run.peakFast).toBe(plan.fastElements);
      });
    }
  }

  test('half-precision inputs leave room for larger tiles than f32', () => {
    const f32 = planTiles({ fastMemoryBytes: 16384, headDim: 64, dtype: 'f32', seqLen: 4096 });
    const f16 = planTiles({ fastMemoryBytes: 16384, headDim: 64, dtype: 'f16', seqLen: 4096 });
    expect(f16.predictedIO).toBeLessThan(f32.predictedIO);
    expect(f16.fastBytes).toBeLessThanOrEqual(16384);
    expect(f16.fastElements).toBeGreaterThan(f32.fastElements);
  });

  test('without seqLen: the large-N rate, matching the closed form per N^2 for long sequences', () => {
    const plan = planTiles({ fastMemoryBytes: 32768, headDim: 64, dtype: 'f32' });
    expect(plan.fastBytes).toBeLessThanOrEqual(32768);
    // FA2 reads K and V once per query block: (d + dv) / blockQ elements per query-key pair.
    expect(plan.predictedIO).toBeCloseTo(128 / plan.blockQ, 12);
    const N = plan.blockQ * 2000;
    const exact = tileIO('fa2', { N, d: 64, M: 1 }, plan).total / (N * N);
    expect(exact / plan.predictedIO).toBeGreaterThan(1);
    expect(exact / plan.predictedIO).toBeLessThan(1.01);
    // No larger query block fits, whatever the key block.
    expect(
      tileFootprint({ algo: 'fa2', headDim: 64, dtype: 'f32', blockQ: plan.blockQ + 1, blockK: 1 })
        .bytes,
    ).toBeGreaterThan(32768);
  });

  test('minBlockQ / minBlockK: the brute-force minimum among blocks at least that large', () => {
    for (const algo of ALGOS) {
      const o = { fastMemoryBytes: 8192, headDim: 8, dtype: 'f32' as const, seqLen: 45, algo };
      const plan = planTiles({ ...o, minBlockQ: 3, minBlockK: 6 });
      expect(plan.blockQ).toBeGreaterThanOrEqual(3);
      expect(plan.blockK).toBeGreaterThanOrEqual(6);
      expect(plan.fastBytes).toBeLessThanOrEqual(8192);
      let min = Number.POSITIVE_INFINITY;
      for (let bq = 3; bq <= 45; bq++) {
        for (let bk = 6; bk <= 45; bk++) {
          if (
            tileFootprint({ algo, headDim: 8, dtype: 'f32', blockQ: bq, blockK: bk }).bytes > 8192
          )
            continue;
          min = Math.min(
            min,
            tileIO(algo, { N: 45, d: 8, M: 1 }, { blockQ: bq, blockK: bk }).total,
          );
        }
      }
      expect(plan.predictedIO).toBe(min);
    }
    // FA2 forward unconstrained: the memory goes to blockQ.
    expect(planTiles({ fastMemoryBytes: 16384, headDim: 64, dtype: 'f32' }).blockK).toBe(1);
    const wide = planTiles({ fastMemoryBytes: 16384, headDim: 64, dtype: 'f32', minBlockK: 16 });
    expect(wide.blockK).toBeGreaterThanOrEqual(16);
    expect(wide.fastBytes).toBeLessThanOrEqual(16384);
  });

  test('maxBlockQ / maxBlockK: the brute-force minimum inside the box; min = max pins a block', () => {
    for (const algo of ALGOS) {
      const o = { fastMemoryBytes: 8192, headDim: 8, dtype: 'f32' as const, seqLen: 45, algo };
      const plan = planTiles({ ...o, minBlockQ: 2, maxBlockQ: 9, maxBlockK: 12 });
      expect(plan.blockQ).toBeGreaterThanOrEqual(2);
      expect(plan.blockQ).toBeLessThanOrEqual(9);
      expect(plan.blockK).toBeLessThanOrEqual(12);
      let min = Number.POSITIVE_INFINITY;
      for (let bq = 2; bq <= 9; bq++) {
        for (let bk = 1; bk <= 12; bk++) {
          if (
            tileFootprint({ algo, headDim: 8, dtype: 'f32', blockQ: bq, blockK: bk }).bytes > 8192
          )
            continue;
          min = Math.min(
            min,
            tileIO(algo, { N: 45, d: 8, M: 1 }, { blockQ: bq, blockK: bk }).total,
          );
        }
      }
      expect(plan.predictedIO).toBe(min);
      const pinned = planTiles({ ...o, minBlockQ: 5, maxBlockQ: 5, minBlockK: 7, maxBlockK: 7 });
      expect([pinned.blockQ, pinned.blockK]).toEqual([5, 7]);
      expect(pinned.predictedIO).toBe(
        tileIO(algo, { N: 45, d: 8, M: 1 }, { blockQ: 5, blockK: 7 }).total,
      );
    }
    // Without seqLen the bound still stops FA2's blockQ from taking all the memory.
    const capped = planTiles({
      fastMemoryBytes: 1 << 20,
      headDim: 64,
      dtype: 'f32',
      maxBlockQ: 128,
    });
    expect(capped.blockQ).toBe(128);
    expect(capped.predictedIO).toBeCloseTo(128 / 128, 12);
  });

  test('seqLen caps the blocks', () => {
    const plan = planTiles({ fastMemoryBytes: 1 << 20, headDim: 16, dtype: 'f32', seqLen: 10 });
    expect(plan.blockQ).toBeLessThanOrEqual(10);
    expect(plan.blockK).toBeLessThanOrEqual(10);
    expect(plan.predictedIO).toBe(
      tileIO('fa2', { N: 10, d: 16, M: 1 }, { blockQ: 10, blockK: 10 }).total,
    );
  });

  test('invalid arguments throw typed errors naming the argument', () => {
    const ok = { fastMemoryBytes: 4096, headDim: 8, dtype: 'f32' as const };
    expect(() => planTiles({ ...ok, fastMemoryBytes: 0 })).toThrow(
      /^fastMemoryBytes: expected a positive integer, got 0/,
    );
    expect(() => planTiles({ ...ok, headDim: 1.5 })).toThrow(/^headDim: /);
    expect(() => planTiles({ ...ok, headDimV: 0 })).toThrow(/^headDimV: /);
    expect(() => planTiles({ ...ok, seqLen: -3 })).toThrow(/^seqLen: /);
    expect(() => planTiles({ ...ok, dtype: 'f64' as never })).toThrow(DTypeError);
    expect(() => planTiles({ ...ok, dtype: 'f64' as never })).toThrow(
      /^dtype: expected f32, f16 or bf16, got "f64"/,
    );
    expect(() => planTiles({ ...ok, algo: 'standard' as never })).toThrow(/^algo: /);
    expect(() => planTiles({ ...ok, minBlockK: 0 })).toThrow(/^minBlockK: /);
    expect(() => planTiles({ ...ok, maxBlockK: 2.5 })).toThrow(/^maxBlockK: /);
    expect(() => planTiles({ ...ok, minBlockQ: 4, maxBlockQ: 3 })).toThrow(
      /^maxBlockQ: expected at least minBlockQ = 4, got 3/,
    );
    expect(() => planTiles({ ...ok, seqLen: 8, minBlockQ: 9 })).toThrow(
      /^minBlockQ: expected at most seqLen = 8, got 9/,
    );
    expect(() => planTiles(null as never)).toThrow(/^options: /);
    // One row of each FA2 tile at d = 64 in f32: Q, K, V rows (192) + O row, m, l, one score (67) = 259 x 4 bytes.
    expect(() => planTiles({ fastMemoryBytes: 1000, headDim: 64, dtype: 'f32' })).toThrow(
      ValueError,
    );
    expect(() => planTiles({ fastMemoryBytes: 1000, headDim: 64, dtype: 'f32' })).toThrow(
      /^fastMemoryBytes: expected at least 1036 bytes \(1 x 1 tiles of fa2/,
    );
  });
});
