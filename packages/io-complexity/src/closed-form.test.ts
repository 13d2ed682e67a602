import { Rng, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { simulate } from './algorithms/index.js';
import {
  closedFormIO,
  defaultBlocks,
  fa1PaperBlocks,
  ioReport,
  lowerBound,
  minimumM,
  smallCacheIO,
  tileIO,
} from './closed-form.js';
import { ALGORITHMS, TILE_ALGORITHMS } from './problem.js';

/** FlashAttention's Theta(N^2 d^2 / M), Dao et al. Theorem 2, as the normaliser. */
const faScale = (N: number, d: number, M: number) => (N * N * d * d) / M;

describe('FlashAttention I/O is Theta(N^2 d^2 / M) for M in [d^2, N d] (Theorem 2)', () => {
  for (const [N, d] of [
    [256, 16],
    [512, 32],
    [2048, 64],
  ] as const) {
    test(`N = ${N}, d = ${d}: I/O * M / (N^2 d^2) stays in a constant band`, () => {
      const norm: Record<string, number[]> = { fa1: [], fa2: [], 'fa2-backward': [], standard: [] };
      for (let M = d * d; M <= N * d; M = Math.ceil(M * 1.25)) {
        for (const algo of Object.keys(norm)) {
          norm[algo]!.push(closedFormIO(algo as never, { N, d, M }).total / faScale(N, d, M));
        }
      }
      expect(norm.fa1!.length).toBeGreaterThan(10);
      // FA1 with the paper's blocks moves ~ 12 N^2 d^2 / M (Tc ~ 4Nd / M passes over Q, O, l, m).
      const bands = { fa1: [10, 24], fa2: [3, 12], 'fa2-backward': [12, 40] } as const;
      for (const [algo, [lo, hi]] of Object.entries(bands)) {
        for (const x of norm[algo]!) {
          expect(x, algo).toBeGreaterThan(lo);
          expect(x, algo).toBeLessThan(hi);
        }
      }
      // Standard attention is Theta(N^2 + N d) instead: the same normalisation grows with M.
      const s = norm.standard!;
      expect(s.at(-1)! / s[0]!).toBeGreaterThan(4);
    });
  }

  test('the simulator shows the same band (fa1, fa2 at N = 200, d = 12)', () => {
    const N = 200;
    const d = 12;
    for (const M of [144, 300, 700, 1500, 2400]) {
      for (const [algo, lo, hi] of [
        ['fa1', 10, 24],
        ['fa2', 3, 12],
      ] as const) {
        const x = simulate(algo, { N, d, M }).total / faScale(N, d, M);
        expect(x, `${algo} M = ${M}`).toBeGreaterThan(lo);
        expect(x, `${algo} M = ${M}`).toBeLessThan(hi);
      }
    }
  });
});

describe('the small-cache algorithm beats FlashAttention for M < d^2', () => {
  for (const [N, d] of [
    [256, 32],
    [512, 64],
    [300, 48],
  ] as const) {
    test(`N = ${N}, d = ${d}`, () => {
      let checked = 0;
      for (let M = minimumM('fa1', { N, d }); M < d * d; M += 37) {
        const small = closedFormIO('small-cache', { N, d, M }).total;
        // FA1 exactly as the paper runs it, for every M < d^2.
        expect(small, `M = ${M}`).toBeLessThan(closedFormIO('fa1', { N, d, M }).total);
        // FA2 even with I/O-optimal blocks, once the cache is well below d^2.
        if (M <= (d * d) / 2) {
          expect(small, `M = ${M}`).toBeLessThan(closedFormIO('fa2', { N, d, M }).total);
        }
        checked++;
      }
      expect(checked).toBeGreaterThan(15);
    });
  }

  test('the gap grows like d / sqrt(M) as the cache shrinks', () => {
    const N = 512;
    const d = 64;
    const gap = (M: number) =>
      closedFormIO('fa2', { N, d, M }).total / closedFormIO('small-cache', { N, d, M }).total;
    expect(gap(300) / gap(1200)).toBeGreaterThan(1.6); // sqrt(1200 / 300) = 2
    expect(gap(300)).toBeGreaterThan(2.5);
  });

  test('the simulator agrees (N = 96, d = 32, M = 200)', () => {
    const p = { N: 96, d: 32, M: 200 };
    expect(simulate('small-cache', p).total).toBeLessThan(simulate('fa2', p).total);
    expect(simulate('small-cache', p).total).toBeLessThan(simulate('fa1', p).total);
  });
});

describe('lowerBound', () => {
  test('no algorithm with any fitting blocks goes below it', () => {
    const rng = new Rng(3);
    let checked = 0;
    for (const N of [1, 2, 7, 33, 128]) {
      for (const d of [1, 4, 16, 64]) {
        for (const dv of [d, 3]) {
          for (let trial = 0; trial < 6; trial++) {
            const blocks = { blockQ: rng.int(1, N + 1), blockK: rng.int(1, N + 1) };
            for (const algo of TILE_ALGORITHMS) {
              const c = tileIO(algo, { N, d, dv, M: 3 + rng.int(0, 4 * N * d) }, blocks);
              // Give each run exactly the memory its blocks need: the tightest legal M.
              const M = Math.max(c.peakFast, 3);
              const io = tileIO(algo, { N, d, dv, M }, blocks).total;
              expect(io, `${algo} ${N} ${d} ${dv} ${M}`).toBeGreaterThanOrEqual(
                lowerBound(N, d, M, dv),
              );
              checked++;
            }
            const sc = { tile: rng.int(1, N + 1), chunk: rng.int(1, d + 1) };
            const M = smallCacheIO({ N, d, dv, M: 1 }, sc).peakFast;
            expect(smallCacheIO({ N, d, dv, M }, sc).total).toBeGreaterThanOrEqual(
              lowerBound(N, d, M, dv),
            );
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(900);
  });

  test('follows N^2 d^2 / M above d^2 and N^2 d / sqrt(M) below it', () => {
    const N = 4096;
    const d = 64;
    // M >= d^2: between N^2 d^2 / (2M) - M and N^2 d^2 / M.
    for (const M of [4096, 8192, 16384]) {
      const lb = lowerBound(N, d, M);
      expect(lb).toBeGreaterThanOrEqual(faScale(N, d, M) / 2 - M);
      expect(lb).toBeLessThan(faScale(N, d, M));
    }
    // M < d^2: between N^2 d / (2 sqrt M) - M and N^2 d / sqrt M.
    for (const M of [64, 400, 2000]) {
      const lb = lowerBound(N, d, M);
      expect(lb).toBeGreaterThanOrEqual((N * N * d) / (2 * Math.sqrt(M)) - M);
      expect(lb).toBeLessThan((N * N * d) / Math.sqrt(M));
    }
    // With everything in cache only reading the inputs and writing O remains: 4 N d.
    expect(lowerBound(100, 8, 1e6)).toBe(3200);
    expect(lowerBound(100, 8, 1e6, 2)).toBe(100 * (16 + 4));
  });

  test('invalid arguments throw ValueError naming them', () => {
    expect(() => lowerBound(0, 4, 10)).toThrow(/^N: expected a positive integer, got 0/);
    expect(() => lowerBound(4, -1, 10)).toThrow(/^d: /);
    expect(() => lowerBound(4, 4, 1.5)).toThrow(/^M: /);
    expect(() => lowerBound(4, 4, 10, 0)).toThrow(/^dv: /);
  });
});

describe('block choices', () => {
  test("fa1PaperBlocks: the paper's Bc = ceil(M / 4d), Br = min(Bc, d) when they fit, shrunk when not", () => {
    // M = 16 d^2: Bc = 4d = 256 > N would clamp; N = 4096 keeps it. 2 Bc d + Br (2d + 6) + Br Bc fits.
    expect(fa1PaperBlocks({ N: 4096, d: 64, M: 65536 })).toEqual({ blockQ: 64, blockK: 256 });
    // M = d^2: Bc = 16, Br = 16 needs 4448 > 4096 elements; the largest fitting is 14.
    expect(fa1PaperBlocks({ N: 4096, d: 64, M: 4096 })).toEqual({ blockQ: 14, blockK: 14 });
    expect(tileIO('fa1', { N: 4096, d: 64, M: 4096 }, { blockQ: 15, blockK: 15 }).peakFast).toBe(
      4155,
    );
    expect(fa1PaperBlocks({ N: 10, d: 4, M: 10_000 })).toEqual({ blockQ: 4, blockK: 10 });
    expect(() => fa1PaperBlocks({ N: 10, d: 4, M: 22 })).toThrow(
      /^M: expected at least 23 elements for fa1/,
    );
  });

  test('default blocks minimise the closed form over every fitting pair (brute force)', () => {
    for (const algo of ['standard', 'fa2', 'fa2-backward'] as const) {
      for (const p of [
        { N: 23, d: 3, M: 60 },
        { N: 40, d: 4, dv: 6, M: 150 },
        { N: 17, d: 2, M: 400 },
      ]) {
        const chosen = defaultBlocks(algo, p);
        const best = closedFormIO(algo, p, chosen);
        expect(best.peakFast).toBeLessThanOrEqual(p.M);
        for (let bq = 1; bq <= p.N; bq++) {
          for (let bk = 1; bk <= p.N; bk++) {
            const c = tileIO(algo, p, { blockQ: bq, blockK: bk });
            if (c.peakFast <= p.M)
              expect(c.total, `${algo} ${bq} ${bk}`).toBeGreaterThanOrEqual(best.total);
          }
        }
      }
    }
  });

  test('small-cache defaults: the largest fitting tile', () => {
    const p = { N: 50, d: 20, M: 120 };
    const { tile, chunk } = defaultBlocks('small-cache', p);
    expect(smallCacheIO(p, { tile, chunk }).peakFast).toBeLessThanOrEqual(120);
    expect(smallCacheIO(p, { tile: tile + 1, chunk: 1 }).peakFast).toBeGreaterThan(120);
    expect(smallCacheIO(p, { tile, chunk: chunk + 1 }).peakFast).toBeGreaterThan(120);
  });

  test('minimumM is the smallest M each algorithm runs in', () => {
    const shape = { N: 9, d: 5, dv: 3 };
    for (const algo of ALGORITHMS) {
      const m = minimumM(algo, shape);
      expect(simulate(algo, { ...shape, M: m }).peakFast).toBeLessThanOrEqual(m);
      expect(() => simulate(algo, { ...shape, M: m - 1 })).toThrow(/^M: /);
    }
  });
});

describe('ioReport', () => {
  test('one row per algorithm that fits, with the bound and the ratio', () => {
    const rows = ioReport({ N: 1024, d: 64, M: 8192 });
    expect(rows.map((r) => r.algo)).toEqual([...ALGORITHMS]);
    const lb = lowerBound(1024, 64, 8192);
    for (const r of rows) {
      expect(Object.keys(r)).toEqual([
        'algo',
        'N',
        'd',
        'M',
        'reads',
        'writes',
        'total',
        'peakFast',
        'lowerBound',
        'ratio',
      ]);
      expect(r).toMatchObject({ N: 1024, d: 64, M: 8192, lowerBound: lb });
      expect(r.total).toBe(r.reads + r.writes);
      expect(r.ratio).toBeCloseTo(r.total / lb, 12);
      expect(r.ratio).toBeGreaterThan(1);
      expect(r.peakFast).toBeLessThanOrEqual(8192);
    }
    // FA1 needs 4d + 7 elements (a row of each tile), FA2 4d + 3: only what runs is reported.
    expect(ioReport({ N: 64, d: 64, M: 200 }).map((r) => r.algo)).toEqual([
      'standard',
      'small-cache',
    ]);
    expect(ioReport({ N: 64, d: 64, M: 100 }).map((r) => r.algo)).toEqual(['small-cache']);
  });

  test('rows equal the simulator (N = 77, d = 8, M = 500)', () => {
    const p = { N: 77, d: 8, M: 500 };
    for (const r of ioReport(p)) {
      const s = simulate(r.algo, p);
      expect({ reads: r.reads, writes: r.writes, peakFast: r.peakFast }).toEqual({
        reads: s.reads,
        writes: s.writes,
        peakFast: s.peakFast,
      });
    }
  });

  test('invalid arguments throw ValueError naming them', () => {
    expect(() => ioReport({ N: 8, d: 8 } as never)).toThrow(
      /^M: expected a positive integer, got undefined/,
    );
    expect(() => ioReport({ N: 8, d: 8, M: 100 }, ['fa9' as never])).toThrow(ValueError);
    expect(() => ioReport({ N: 8, d: 8, M: 100 }, 'fa1' as never)).toThrow(/^algos: /);
  });
});
