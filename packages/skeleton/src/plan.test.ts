import { ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { planFlashTiles, planNativeTiles, workspaceBytes } from './plan.js';

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

/** FA2 forward slow-memory I/O (Dao 2023 Alg. 1): Q once, K and V once per query tile, O and L written once. */
function fa2IO(n: number, bq: number, d: number, dv: number): number {
  return n * d + Math.ceil(n / Math.min(bq, n)) * n * (d + dv) + n * (dv + 1);
}

/** True when (bq, bk) is at least as good as every candidate: less I/O, or equal I/O and no smaller tile. */
function dominates(
  plan: { blockQ: number; blockK: number },
  candidates: [number, number][],
  n: number,
  d: number,
  dv: number,
): boolean {
  const io = fa2IO(n, plan.blockQ, d, dv);
  return candidates.every(([tq, tk]) => {
    const other = fa2IO(n, tq, d, dv);
    return other > io || (other === io && tq * tk <= plan.blockQ * plan.blockK);
  });
}

describe('planFlashTiles', () => {
  test('default budget (256 KiB): the I/O model gives blockQ the memory, up to 128 rows', () => {
    // d = 64: 128 x 128 needs 229 KiB. d = 128: 128 x 128 needs 328 KiB; FA2's forward moves
    // K and V once per query tile, so 128 x 64 (225 KiB) beats the old square 64 x 64.
    expect(planFlashTiles({ nq: 1024, nk: 1024, d: 64, dv: 64 })).toEqual({
      blockQ: 128,
      blockK: 128,
    });
    expect(planFlashTiles({ nq: 1024, nk: 1024, d: 128, dv: 128 })).toEqual({
      blockQ: 128,
      blockK: 64,
    });
    expect(planFlashTiles({ nq: 1024, nk: 1024, d: 16, dv: 16 })).toEqual({
      blockQ: 128,
      blockK: 128,
    });
  });

  test('every plan fits its budget, is a power of two and has the least FA2 I/O among those', () => {
    const n = 4096;
    for (const d of [16, 40, 64, 80, 128, 256]) {
      for (const dv of [d, 32]) {
        for (const budget of [16 * 1024, 64 * 1024, 256 * 1024, 2 ** 20]) {
          const plan = planFlashTiles({ nq: n, nk: n, d, dv, fastMemoryBytes: budget });
          const { blockQ, blockK } = plan;
          expect(isPow2(blockQ) && isPow2(blockK)).toBe(true);
          expect(Math.max(blockQ, blockK)).toBeLessThanOrEqual(128);
          expect(forwardBytes(blockQ, blockK, d, dv)).toBeLessThanOrEqual(budget);
          const fits: [number, number][] = [];
          for (let tq = 1; tq <= 128; tq *= 2) {
            for (let tk = 1; tk <= 128; tk *= 2) {
              if (forwardBytes(tq, tk, d, dv) <= budget) fits.push([tq, tk]);
            }
          }
          // Key blocks of 16 rows are kept whenever one fits; the I/O decides among those.
          const wide = fits.filter(([, tk]) => tk >= 16);
          if (wide.length > 0) expect(blockK).toBeGreaterThanOrEqual(16);
          expect(dominates(plan, wide.length > 0 ? wide : fits, n, d, dv)).toBe(true);
        }
      }
    }
  });

  test('clamped to the sequence lengths (decode: one query row)', () => {
    expect(planFlashTiles({ nq: 1, nk: 1000, d: 128, dv: 128 })).toEqual({
      blockQ: 1,
      blockK: 128,
    });
    expect(planFlashTiles({ nq: 77, nk: 20, d: 64, dv: 64 })).toEqual({ blockQ: 77, blockK: 20 });
    expect(planFlashTiles({ nq: 0, nk: 0, d: 64, dv: 64 })).toEqual({ blockQ: 1, blockK: 1 });
  });

  test('aligned to block-sparse blocks: the divisor pair of least I/O, then largest area', () => {
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
        const fits: [number, number][] = [];
        for (let tq = 1; tq <= Math.min(bq, 128); tq++) {
          for (let tk = 1; tk <= Math.min(bk, 128); tk++) {
            if (bq % tq || bk % tk || forwardBytes(tq, tk, d, d) > 256 * 1024) continue;
            fits.push([tq, tk]);
          }
        }
        expect(dominates(p, fits, 1024, d, d)).toBe(true);
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

/** FA2 backward working set (Dao 2023 Alg. 2, f32 bytes): K, V, dK, dV tiles of bk keys; Q, dO, dQ tiles, L, D of bq queries; S and dS. */
function backwardBytes(bq: number, bk: number, d: number, dv: number): number {
  return 4 * Math.max(2 * bq * dv + bq, 2 * bk * (d + dv) + bq * (2 * d + dv + 2) + 2 * bq * bk);
}

describe('planNativeTiles', () => {
  test('1 MiB L2: the largest key tile against 256 queries, the largest query block against 64 keys', () => {
    for (const d of [32, 64, 128, 256]) {
      const n = 4096;
      const { blockQ, blockK } = planNativeTiles({ nq: n, nk: n, d, dv: d });
      const budget = 1 << 20;
      // FA2 moves the same data for any key tile (and the backward for any query block), so the
      // model's tie-break fills the budget: the next row no longer fits, or the engine's cap.
      expect(forwardBytes(256, blockK!, d, d)).toBeLessThanOrEqual(budget);
      if (blockK! < 1024) expect(forwardBytes(256, blockK! + 1, d, d)).toBeGreaterThan(budget);
      expect(backwardBytes(blockQ!, 64, d, d)).toBeLessThanOrEqual(budget);
      if (blockQ! < 1024) expect(backwardBytes(blockQ! + 1, 64, d, d)).toBeGreaterThan(budget);
      expect(Math.min(blockQ!, blockK!)).toBeGreaterThanOrEqual(16);
    }
    // d = 64: 256 (130) + 384 bk <= 262144 floats; 16384 + 322 bq <= 262144.
    expect(planNativeTiles({ nq: 1024, nk: 1024, d: 64, dv: 64 })).toEqual({
      blockQ: 763,
      blockK: 596,
    });
  });

  test('the budget and the engine blocks are parameters; hints are clamped to the sequences', () => {
    const small = planNativeTiles({
      nq: 2048,
      nk: 2048,
      d: 64,
      dv: 64,
      fastMemoryBytes: 256 << 10,
    });
    expect(forwardBytes(256, small.blockK!, 64, 64)).toBeLessThanOrEqual(256 << 10);
    expect(forwardBytes(256, small.blockK! + 1, 64, 64)).toBeGreaterThan(256 << 10);
    const avx2 = planNativeTiles({
      nq: 2048,
      nk: 2048,
      d: 64,
      dv: 64,
      forwardQueryRows: 128,
      backwardKeyRows: 16,
    });
    // 128 (130) + 256 bk <= 262144 floats; 4096 + 226 bq fits up to the engine's cap of 1024.
    expect(avx2.blockK).toBe(959);
    expect(backwardBytes(avx2.blockQ!, 16, 64, 64)).toBeLessThanOrEqual(1 << 20);
    expect(avx2.blockQ).toBe(1024);
    expect(planNativeTiles({ nq: 1, nk: 300, d: 64, dv: 64 })).toEqual({ blockQ: 1, blockK: 300 });
    expect(planNativeTiles({ nq: 5, nk: 3, d: 64, dv: 64 })).toEqual({ blockQ: 5, blockK: 3 });
    expect(planNativeTiles({ nq: 0, nk: 8, d: 64, dv: 64 })).toEqual({
      blockQ: undefined,
      blockK: undefined,
    });
    // 256 query rows of d = 1024 overflow 1 MiB on their own: leave the engine its default.
    expect(planNativeTiles({ nq: 4096, nk: 4096, d: 1024, dv: 1024 }).blockK).toBeUndefined();
  });

  test('bad arguments throw ValueError naming them', () => {
    const base = { nq: 8, nk: 8, d: 64, dv: 64 };
    const cases: [unknown, string][] = [
      [null, 'problem'],
      [{ ...base, nq: -1 }, 'nq'],
      [{ ...base, d: 0 }, 'd'],
      [{ ...base, dv: 1.5 }, 'dv'],
      [{ ...base, fastMemoryBytes: 0 }, 'fastMemoryBytes'],
      [{ ...base, forwardQueryRows: 0 }, 'forwardQueryRows'],
      [{ ...base, backwardKeyRows: '64' }, 'backwardKeyRows'],
    ];
    for (const [arg, name] of cases) {
      expect(() => planNativeTiles(arg as never), name).toThrow(ValueError);
      expect(() => planNativeTiles(arg as never)).toThrow(
        expect.objectContaining({ argument: name }),
      );
    }
  });
});
