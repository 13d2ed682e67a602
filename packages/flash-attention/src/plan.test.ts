import { ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { planFlashTiles, workspaceBytes } from './plan.js';

/** The forward working set the planner promises to fit, counted independently (bytes). */
function forwardBytes(bq: number, bk: number, d: number, dv: number): number {
  const q = bq * d;
  const kv = bk * (d + dv);
  const scores = bq * bk;
  const out = bq * dv;
  const stats = 2 * bq;
  return 4 * (q + kv + scores + out + stats);
}

const isPow2 = (x: number) => Number.isInteger(Math.log2(x));

describe('planFlashTiles', () => {
  test('default budget (256 KiB): the largest square power-of-two tile that fits, <= 128', () => {
    // d = 64: 128 x 128 needs 229 KiB; d = 128: 128 x 128 needs 328 KiB, 64 x 64 needs 114 KiB.
    expect(planFlashTiles({ nq: 1024, nk: 1024, d: 64, dv: 64 })).toEqual({
      blockQ: 128,
      blockK: 128,
    });
    expect(planFlashTiles({ nq: 1024, nk: 1024, d: 128, dv: 128 })).toEqual({
      blockQ: 64,
      blockK: 64,
    });
    expect(planFlashTiles({ nq: 1024, nk: 1024, d: 16, dv: 16 })).toEqual({
      blockQ: 128,
      blockK: 128,
    });
  });

  test('every plan fits its budget, is a power of two unless clamped, and is maximal', () => {
    for (const d of [16, 40, 64, 80, 128, 256]) {
      for (const dv of [d, 32]) {
        for (const budget of [16 * 1024, 64 * 1024, 256 * 1024, 2 ** 20]) {
          const { blockQ, blockK } = planFlashTiles({
            nq: 4096,
            nk: 4096,
            d,
            dv,
            fastMemoryBytes: budget,
          });
          expect(blockQ).toBe(blockK);
          expect(isPow2(blockQ)).toBe(true);
          expect(forwardBytes(blockQ, blockK, d, dv)).toBeLessThanOrEqual(budget);
          if (blockQ < 128)
            expect(forwardBytes(2 * blockQ, 2 * blockK, d, dv)).toBeGreaterThan(budget);
        }
      }
    }
  });

  test('clamped to the sequence lengths (decode: one query row)', () => {
    expect(planFlashTiles({ nq: 1, nk: 1000, d: 128, dv: 128 })).toEqual({ blockQ: 1, blockK: 64 });
    expect(planFlashTiles({ nq: 77, nk: 20, d: 64, dv: 64 })).toEqual({ blockQ: 77, blockK: 20 });
    expect(planFlashTiles({ nq: 0, nk: 0, d: 64, dv: 64 })).toEqual({ blockQ: 1, blockK: 1 });
  });

  test('aligned to block-sparse blocks: the divisor pair of largest area that fits', () => {
    const plan = (blockQ: number, blockK: number, d = 64) =>
      planFlashTiles({ nq: 1024, nk: 1024, d, dv: d, blockSparse: { blockQ, blockK } });
    expect(plan(32, 32)).toEqual({ blockQ: 32, blockK: 32 });
    expect(plan(256, 512)).toEqual({ blockQ: 128, blockK: 128 });
    expect(plan(48, 100)).toEqual({ blockQ: 48, blockK: 100 });
    // A prime block is kept whole rather than split into single rows.
    expect(plan(97, 64, 128)).toEqual({ blockQ: 97, blockK: 64 });
    for (const d of [16, 64, 128, 256]) {
      for (const [bq, bk] of [
        [7, 12],
        [128, 96],
        [300, 45],
        [96, 100],
      ] as const) {
        const p = plan(bq, bk, d);
        expect(bq % p.blockQ).toBe(0);
        expect(bk % p.blockK).toBe(0);
        expect(forwardBytes(p.blockQ, p.blockK, d, d)).toBeLessThanOrEqual(256 * 1024);
        // No other divisor pair (each <= 128) that fits covers more of a block.
        for (let tq = 1; tq <= Math.min(bq, 128); tq++) {
          for (let tk = 1; tk <= Math.min(bk, 128); tk++) {
            if (bq % tq || bk % tk || forwardBytes(tq, tk, d, d) > 256 * 1024) continue;
            expect(tq * tk).toBeLessThanOrEqual(p.blockQ * p.blockK);
          }
        }
      }
    }
  });

  test('bad arguments or a budget below one row of each tile: ValueError naming them', () => {
    const base = { nq: 8, nk: 8, d: 64, dv: 64 };
    const cases: [unknown, string][] = [
      [null, 'problem'],
      [{ ...base, nq: -1 }, 'nq'],
      [{ ...base, nk: 2.5 }, 'nk'],
      [{ ...base, d: 0 }, 'd'],
      [{ ...base, dv: '64' }, 'dv'],
      [{ ...base, fastMemoryBytes: 0 }, 'fastMemoryBytes'],
      [{ ...base, fastMemoryBytes: Number.NaN }, 'fastMemoryBytes'],
      [{ ...base, fastMemoryBytes: 1000 }, 'fastMemoryBytes'],
      [{ ...base, blockSparse: { blockQ: 0, blockK: 8 } }, 'blockSparse.blockQ'],
      [{ ...base, blockSparse: { blockQ: 8, blockK: 1.5 } }, 'blockSparse.blockK'],
      [{ ...base, blockSparse: 5 }, 'blockSparse'],
    ];
    for (const [arg, name] of cases) {
      expect(() => planFlashTiles(arg as never), name).toThrow(ValueError);
      expect(() => planFlashTiles(arg as never)).toThrow(
        expect.objectContaining({ argument: name }),
      );
    }
  });
});

describe('workspaceBytes', () => {
  test('covers the forward working set and grows with the tiles, not with N', () => {
    for (const [bq, bk, d, dv] of [
      [128, 128, 64, 64],
      [64, 32, 128, 40],
      [1, 64, 16, 16],
    ]) {
      const plan = { blockQ: bq!, blockK: bk! };
      expect(workspaceBytes(plan, d!, dv!)).toBeGreaterThanOrEqual(forwardBytes(bq!, bk!, d!, dv!));
    }
    // Backward: K, V, dK, dV tiles, Q and dO tiles, two score tiles and two key-range arrays.
    expect(workspaceBytes({ blockQ: 64, blockK: 64 }, 64, 64)).toBe(
      4 * (2 * 64 * 128 + 64 * 128 + 2 * 64 * 64 + 2 * 64),
    );
  });

  test('bad arguments throw ValueError naming them', () => {
    const cases: [() => unknown, string][] = [
      [() => workspaceBytes(null as never, 64, 64), 'plan'],
      [() => workspaceBytes({ blockQ: 0, blockK: 8 }, 64, 64), 'plan.blockQ'],
      [() => workspaceBytes({ blockQ: 8, blockK: -8 }, 64, 64), 'plan.blockK'],
      [() => workspaceBytes({ blockQ: 8, blockK: 8 }, 0, 64), 'd'],
      [() => workspaceBytes({ blockQ: 8, blockK: 8 }, 64, Number.NaN), 'dv'],
    ];
    for (const [call, name] of cases) {
      expect(call, name).toThrow(ValueError);
      expect(call).toThrow(expect.objectContaining({ argument: name }));
    }
  });
});
