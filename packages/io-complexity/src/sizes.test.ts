import { ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { simulate, simulationSteps } from './algorithms/index.js';
import { closedFormIO, lowerBound, tileIO } from './closed-form.js';
import { planTiles } from './planner.js';
import { ioSweep } from './plot.js';
import { ExactCountError, MAX_EXACT_COUNT, resolveProblem } from './problem.js';

/** What `fn` throws (fails the test when it returns). */
function thrown(fn: () => unknown): ExactCountError {
  try {
    fn();
  } catch (err) {
    return err as ExactCountError;
  }
  throw new Error('expected a throw');
}

describe('exact counts are bounded by the work done, named after the caller', () => {
  test('a [64, 0] window at N = 1e7 is accepted and simulated exactly, in a few block visits', () => {
    // Before: refused with "N: expected N^2 (d + dv) small enough ..." (the dense N^2 bound).
    const N = 1e7;
    const problem = { N, d: 64, M: 1 << 22, window: [64, 0] as const };
    expect(resolveProblem(problem)).toMatchObject({ N, left: 64, right: 0, masked: true });
    const blocks = { blockQ: 1000, blockK: 1000 };
    // Query block 0 loads key block 0; every later one its own key block and the one before.
    const Tr = N / 1000;
    expect(simulationSteps('fa2', problem, blocks)).toBeLessThanOrEqual(4 * Tr);
    const c = simulate('fa2', problem, { blocks });
    expect(c.reads).toBe(N * 64 + (1000 + (Tr - 1) * 2000) * 128);
    expect(c.writes).toBe(N * 65);
    // Each key block is met by its own query block and the next (the window's 64 rows).
    const b = simulate('fa2-backward', problem, { blocks });
    const visits = 1 + (Tr - 1) * 2;
    expect(b.reads).toBe(2 * N * 64 + N * 128 + visits * 1000 * (2 * 64 + 64 + 2));
    expect(b.writes).toBe(N * (2 * 64 + 64 + 1) + visits * 1000 * 64);
  });

  test('the dense closed forms and the bound work at N = 1e7 (counts well below 2^53)', () => {
    const p = { N: 1e7, d: 64, M: 100_000 };
    const c = closedFormIO('fa2', p);
    expect(Number.isSafeInteger(c.total)).toBe(true);
    expect(c.total).toBe(1e7 * 64 + Math.ceil(1e7 / 762) * 1e7 * 128 + 1e7 * 65);
    expect(lowerBound(1e7, 64, 100_000)).toBeGreaterThan(0);
  });

  test('past 2^53 the error names the arguments given, the limit and the count', () => {
    // A causal band reaches every key: 1-row blocks at N = 1e8 would count ~1.3e18.
    const causal = thrown(() =>
      simulate(
        'fa2',
        { N: 1e8, d: 64, M: 1 << 20, causal: true },
        { blocks: { blockQ: 100, blockK: 100 } },
      ),
    );
    expect(causal).toBeInstanceOf(ExactCountError);
    expect(causal).toBeInstanceOf(ValueError);
    expect(causal.argument).toBe('problem');
    expect(causal.fields).toEqual(['N', 'd', 'causal']);
    expect(causal.limit).toBe(MAX_EXACT_COUNT);
    expect(causal.count).toBe(1e8 * 64 + 1e8 * 65 + 1e6 * 1e8 * 128);
    expect(causal.message).toBe(
      'problem {N, d, causal}: simulating fa2 with blockQ 100, blockK 100 counts up to 1.280e+16 elements, past exact integer counts (at most 2^53 - 1 = 9007199254740991); got N = 100000000, d = 64, causal = true',
    );
    expect(causal.message).toBe(`problem {N, d, causal}: ${causal.detail}`);
    // The same N with a [64, 0] window counts a sliver of that: accepted.
    expect(
      simulationSteps(
        'fa2',
        { N: 1e8, d: 64, M: 1 << 20, window: [64, 0] },
        { blockQ: 100, blockK: 100 },
      ),
    ).toBeLessThanOrEqual(1e6 * 4);
    // Closed forms: the blocks asked for decide; dv is named when given.
    const closed = thrown(() =>
      tileIO('fa2', { N: 1e8, d: 64, dv: 32, M: 1 }, { blockQ: 1, blockK: 1 }),
    );
    expect(closed.message).toMatch(
      /^problem \{N, d, dv\}: fa2 with blockQ 1, blockK 1 at M = 1 counts up to 9\.600e\+17 elements, .*got N = 100000000, d = 64, dv = 32$/,
    );
    // Even reading the inputs once is past 2^53: refused up front, naming d (not N alone).
    expect(thrown(() => resolveProblem({ N: 2 ** 40, d: 2 ** 12, M: 1 })).message).toMatch(
      /^problem \{N, d\}: reading Q, K, V and writing O once counts up to 1\.801e\+16 elements/,
    );
  });

  test('a sweep names only the arguments given (dv only when passed), and the M at fault', () => {
    const err = thrown(() => ioSweep({ N: 1e7, d: 256, Mmin: 600, Mmax: 700, points: 2 }));
    expect(err).toBeInstanceOf(ExactCountError);
    expect(err.fields).toEqual(['N', 'd']);
    expect(err.message).toMatch(
      /^problem \{N, d\}: standard with blockQ 1, blockK 1 at M = 600 counts up to \d\.\d{3}e\+16 elements/,
    );
  });

  test('planTiles names its own arguments (seqLen, headDim), not N and d', () => {
    const err = thrown(() =>
      planTiles({ fastMemoryBytes: 4096, headDim: 64, dtype: 'f32', seqLen: 2 ** 40 }),
    );
    expect(err).toBeInstanceOf(ExactCountError);
    expect(err.argument).toBe('options');
    expect(err.fields).toEqual(['seqLen', 'headDim']);
    expect(err.message).toMatch(
      /^options \{seqLen, headDim\}: fa2 with blockQ \d+, blockK \d+ counts up to .* got seqLen = 1099511627776, headDim = 64$/,
    );
  });
});
