import { softmaxAttentionReference, softmaxAttentionReferenceBackward } from '@attnkit/attention';
import { AttnkitError, Rng, Tensor, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import {
  closedFormIO,
  defaultBlocks,
  smallCacheIO,
  tileIO,
  tileWorkingSets,
} from '../closed-form.js';
import { FastMemoryOverflowError } from '../memory.js';
import { type ResolvedProblem, TILE_ALGORITHMS, type TileAlgorithm } from '../problem.js';
import { simulate, simulateFa2, simulateFa2Backward, simulateSmallCache } from './index.js';

function randn(rng: Rng, n: number): Float64Array {
  const x = new Float64Array(n);
  rng.fillNormal(x);
  return x;
}

function maxAbsDiff(a: Float64Array, b: Float64Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return Number.isNaN(m) ? Number.POSITIVE_INFINITY : m;
}

/** Independent float64 attention (the @attnkit/attention reference) of one head. */
function reference(
  N: number,
  d: number,
  dv: number,
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  dO: Float64Array,
) {
  const t = (x: Float64Array, cols: number) => Tensor.from(x, [1, 1, N, cols], 'f64');
  const fwd = softmaxAttentionReference(t(q, d), t(k, d), t(v, dv));
  const bwd = softmaxAttentionReferenceBackward(t(q, d), t(k, d), t(v, dv), t(dO, dv));
  return {
    o: fwd.o.toFloat64Array(),
    lse: fwd.lse.toFloat64Array(),
    dq: bwd.dq.toFloat64Array(),
    dk: bwd.dk.toFloat64Array(),
    dv: bwd.dv.toFloat64Array(),
  };
}

describe('the simulated loops compute attention (values carried through fast memory only)', () => {
  const rng = new Rng(20240213);
  // Ragged everywhere: N = 11 is no multiple of any block, dv != d.
  const N = 11;
  const d = 4;
  const dv = 3;
  const q = randn(rng, N * d);
  const k = randn(rng, N * d);
  const v = randn(rng, N * dv);
  const dO = randn(rng, N * dv);
  const ref = reference(N, d, dv, q, k, v, dO);
  const tileCases = [
    { blockQ: 1, blockK: 1 },
    { blockQ: 3, blockK: 4 },
    { blockQ: 4, blockK: 3 },
    { blockQ: 11, blockK: 11 },
    { blockQ: 50, blockK: 2 },
  ];

  for (const algo of ['standard', 'fa1', 'fa2'] as const) {
    for (const blocks of tileCases) {
      test(`${algo} with blocks ${blocks.blockQ} x ${blocks.blockK}`, () => {
        const p = { N, d, dv, M: 10_000 };
        const r = simulate(algo, p, { blocks, data: { q, k, v } });
        expect(maxAbsDiff(r.outputs!.o!, ref.o)).toBeLessThan(1e-13);
        if (algo !== 'standard') expect(maxAbsDiff(r.outputs!.lse!, ref.lse)).toBeLessThan(1e-13);
        // The arithmetic leaves the counts alone: they equal the closed form.
        const { outputs: _, ...c } = r;
        expect(c).toEqual(tileIO(algo, p, blocks));
      });
    }
  }

  test('standard attention streams a softmax row in two passes when it does not fit', () => {
    // M = 9 holds neither a row of S (11) nor more than one key: chunks of 7 elements.
    const p = { N, d, dv, M: 9 };
    const r = simulate('standard', p, { blocks: { blockQ: 1, blockK: 1 }, data: { q, k, v } });
    expect(maxAbsDiff(r.outputs!.o!, ref.o)).toBeLessThan(1e-13);
    expect(r.reads).toBe(tileIO('standard', p, { blockQ: 1, blockK: 1 }).reads);
    expect(r.peakFast).toBe(9);
  });

  for (const blocks of tileCases) {
    test(`fa2-backward with blocks ${blocks.blockQ} x ${blocks.blockK}`, () => {
      const p = { N, d, dv, M: 10_000 };
      const r = simulateFa2Backward(p, { blocks, data: { q, k, v, o: ref.o, lse: ref.lse, dO } });
      expect(maxAbsDiff(r.outputs!.dq!, ref.dq)).toBeLessThan(1e-13);
      expect(maxAbsDiff(r.outputs!.dk!, ref.dk)).toBeLessThan(1e-13);
      expect(maxAbsDiff(r.outputs!.dv!, ref.dv)).toBeLessThan(1e-13);
    });
  }

  for (const blocks of [
    { tile: 1, chunk: 1 },
    { tile: 2, chunk: 3 },
    { tile: 4, chunk: 2 },
    { tile: 5, chunk: 7 },
    { tile: 20, chunk: 20 },
  ]) {
    test(`small-cache with tile ${blocks.tile}, chunk ${blocks.chunk}`, () => {
      const p = { N, d, dv, M: 10_000 };
      const r = simulateSmallCache(p, { blocks, data: { q, k, v } });
      expect(maxAbsDiff(r.outputs!.o!, ref.o)).toBeLessThan(1e-13);
      expect(maxAbsDiff(r.outputs!.lse!, ref.lse)).toBeLessThan(1e-13);
    });
  }

  test('default blocks in a tight memory still compute the same O', () => {
    for (const algo of ['standard', 'fa1', 'fa2', 'small-cache'] as const) {
      const r = simulate(algo, { N, d, dv, M: 40 }, { data: { q, k, v } });
      expect(r.peakFast).toBeLessThanOrEqual(40);
      expect(maxAbsDiff(r.outputs!.o!, ref.o), algo).toBeLessThan(1e-13);
    }
  });

  test('wrong input sizes are typed errors naming the array', () => {
    expect(() => simulateFa2({ N, d, dv, M: 100 }, { data: { q, k: k.subarray(1), v } })).toThrow(
      /data\.k: expected a Float64Array of 44 elements/,
    );
    expect(() =>
      simulateFa2Backward(
        { N, d, dv, M: 1000 },
        { data: { q, k, v, o: ref.o, lse: ref.lse } as never },
      ),
    ).toThrow(/data\.dO/);
  });
});

describe('simulated counts equal the closed forms exactly', () => {
  const grid: ResolvedProblem[] = [];
  for (const N of [1, 7, 16, 23]) {
    for (const d of [2, 5]) for (const dv of [d, 3]) grid.push({ N, d, dv, M: 0 });
  }
  const tiles = [1, 3, 4, 8, 40].flatMap((blockQ) =>
    [1, 2, 5, 16].map((blockK) => ({ blockQ, blockK })),
  );

  for (const algo of TILE_ALGORITHMS) {
    test(`${algo}: ${grid.length} shapes x ${tiles.length} block pairs, M = the working set`, () => {
      let checked = 0;
      for (const shape of grid) {
        for (const blocks of tiles) {
          const br = Math.min(blocks.blockQ, shape.N);
          const bc = Math.min(blocks.blockK, shape.N);
          const sets = tileWorkingSets(algo as TileAlgorithm, { ...shape, M: 1e9 }, br, bc);
          const tight = Math.max(...sets.map((s) => s.inputs + s.accum));
          // Standard attention's softmax grows to fill M: try a memory where a row of S fits and one where it does not.
          const Ms =
            algo === 'standard' ? [Math.max(tight, 3), Math.max(tight, shape.N + 2)] : [tight];
          for (const M of Ms) {
            const p = { ...shape, M };
            expect(
              simulate(algo, p, { blocks }),
              `${algo} ${JSON.stringify(p)} ${JSON.stringify(blocks)}`,
            ).toEqual(tileIO(algo, p, blocks));
            checked++;
          }
        }
      }
      expect(checked).toBeGreaterThanOrEqual(grid.length * tiles.length);
    });
  }

  test(`small-cache: ${grid.length} shapes x 24 (tile, chunk)`, () => {
    for (const shape of grid) {
      for (const tile of [1, 2, 3, 5, 8, 30]) {
        for (const chunk of [1, 2, 4, 7]) {
          const blocks = { tile, chunk };
          const peak = smallCacheIO({ ...shape, M: 1 }, blocks).peakFast;
          const p = { ...shape, M: peak };
          expect(simulate('small-cache', p, { blocks }), JSON.stringify({ p, blocks })).toEqual(
            smallCacheIO(p, blocks),
          );
        }
      }
    }
  });

  test('default blocks: simulator and closed form agree at larger sizes', () => {
    for (const algo of ['standard', 'fa1', 'fa2', 'fa2-backward', 'small-cache'] as const) {
      for (const p of [
        { N: 257, d: 16, M: 300 },
        { N: 200, d: 8, dv: 12, M: 1000 },
        { N: 96, d: 32, M: 4000 },
      ]) {
        expect(simulate(algo, p), `${algo} ${JSON.stringify(p)}`).toEqual(closedFormIO(algo, p));
        expect(simulate(algo, p).peakFast).toBeLessThanOrEqual(p.M);
      }
    }
  });
});

describe('the simulator enforces the capacity', () => {
  test('blocks one element too large for M throw FastMemoryOverflowError naming M', () => {
    for (const algo of TILE_ALGORITHMS) {
      const p = { N: 20, d: 6, dv: 5, M: 1 };
      const blocks = { blockQ: 5, blockK: 7 };
      const peak = tileIO(algo, { ...p, M: 10_000 }, blocks).peakFast;
      // Standard attention's softmax phase (min(N, M - 2) + 2 = 22) stays below its product phases here.
      const M = peak;
      expect(simulate(algo, { ...p, M }, { blocks }).peakFast).toBe(peak);
      let error: unknown;
      try {
        simulate(algo, { ...p, M: M - 1 }, { blocks });
      } catch (e) {
        error = e;
      }
      expect(error, algo).toBeInstanceOf(FastMemoryOverflowError);
      expect(error).toBeInstanceOf(AttnkitError);
      expect((error as FastMemoryOverflowError).argument).toBe('M');
      expect((error as FastMemoryOverflowError).capacity).toBe(M - 1);
    }
  });

  test('small-cache tiles that do not fit throw', () => {
    const p = { N: 30, d: 9, M: 50 };
    expect(() => simulateSmallCache(p, { blocks: { tile: 6, chunk: 1 } })).toThrow(
      FastMemoryOverflowError,
    );
    expect(simulateSmallCache(p, { blocks: { tile: 5, chunk: 1 } }).peakFast).toBeLessThanOrEqual(
      50,
    );
  });

  test('an M below every block size is a ValueError naming M, from the default blocks', () => {
    expect(() => defaultBlocks('fa2', { N: 10, d: 8, M: 20 })).toThrow(ValueError);
    expect(() => simulateFa2({ N: 10, d: 8, M: 20 })).toThrow(
      /^M: expected at least 35 elements for fa2/,
    );
  });

  test('invalid problems and blocks are typed errors naming the argument', () => {
    expect(() => simulate('fa2', { N: 0, d: 4, M: 100 })).toThrow(
      /^N: expected a positive integer, got 0/,
    );
    expect(() => simulate('fa2', { N: 4, d: 2.5, M: 100 })).toThrow(/^d: /);
    expect(() => simulate('fa2', { N: 4, d: 2, M: Number.NaN })).toThrow(/^M: .*got NaN/);
    expect(() => simulate('fa2', { N: 4, d: 2, dv: -1, M: 100 })).toThrow(/^dv: /);
    expect(() =>
      simulate('fa2', { N: 4, d: 2, M: 100 }, { blocks: { blockQ: 0, blockK: 1 } }),
    ).toThrow(/^blocks\.blockQ: /);
    expect(() =>
      simulate('small-cache', { N: 4, d: 2, M: 100 }, { blocks: { tile: 2 } as never }),
    ).toThrow(/^blocks\.chunk: /);
    expect(() => simulate('fa3' as never, { N: 4, d: 2, M: 100 })).toThrow(
      /^algo: expected one of standard, fa1/,
    );
    expect(() => simulate('fa2', null as never)).toThrow(/^problem: /);
    // The counts of the run asked for (1-row blocks: N^2 (d + dv) reads) pass 2^53: the error
    // names the problem's arguments and the bound, before any loop runs.
    expect(() =>
      simulate('fa2', { N: 2 ** 24, d: 128, M: 1000 }, { blocks: { blockQ: 1, blockK: 1 } }),
    ).toThrow(
      /^problem \{N, d\}: simulating fa2 with blockQ 1, blockK 1 counts up to 7\.206e\+16 elements, past exact integer counts \(at most 2\^53 - 1 = 9007199254740991\); got N = 16777216, d = 128$/,
    );
  });
});
