import { Rng, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import {
  type DecodePartitionKind,
  type DecodePiece,
  type DecodeUnit,
  piecesByUnit,
  planDecodePartition,
} from './partition.js';

/**
 * The decode partition planner (KERNELS.md "LeanAttention"): every key tile of every unit in
 * exactly one non-empty piece, each unit's pieces contiguous and in key order in worker order,
 * the balance each kind promises (streamK: worker loads within one tile of each other; splitK:
 * within one tile per unit; fa2: one worker per unit), on hand-made edge cases (empty units,
 * more workers than tiles, one tile, counts near 2^53) and a seeded property test.
 */

const units = (...tiles: number[]): DecodeUnit[] => tiles.map((t) => ({ tiles: t }));

const load = (pieces: readonly DecodePiece[]): number =>
  pieces.reduce((a, x) => a + (x.end - x.begin), 0);

/** The invariants every kind guarantees; returns the plan's worker loads. */
function checkCoverage(plan: DecodePiece[][], us: readonly DecodeUnit[]): number[] {
  const next = new Array<number>(us.length).fill(0);
  for (const pieces of plan) {
    for (const x of pieces) {
      expect(x.unit).toBeGreaterThanOrEqual(0);
      expect(x.unit).toBeLessThan(us.length);
      expect(x.end, `piece ${JSON.stringify(x)} not empty`).toBeGreaterThan(x.begin);
      // In worker order, a unit's pieces start where its previous piece ended: every tile
      // once, none skipped, in key order.
      expect(x.begin, `unit ${x.unit} contiguous`).toBe(next[x.unit]);
      next[x.unit] = x.end;
    }
  }
  us.forEach((u, i) => {
    expect(next[i], `unit ${i} covered`).toBe(u.tiles);
  });
  return plan.map(load);
}

describe('planDecodePartition: examples', () => {
  test('streamK cuts across unit boundaries into equal ranges', () => {
    // 3 units of 5, 0 and 4 tiles = 9 tiles over 4 workers: 3, 2, 2, 2.
    expect(planDecodePartition({ kind: 'streamK', workers: 4, units: units(5, 0, 4) })).toEqual([
      [{ unit: 0, begin: 0, end: 3 }],
      [{ unit: 0, begin: 3, end: 5 }],
      [{ unit: 2, begin: 0, end: 2 }],
      [{ unit: 2, begin: 2, end: 4 }],
    ]);
    // One worker holds everything, one piece per non-empty unit.
    expect(planDecodePartition({ kind: 'streamK', workers: 1, units: units(2, 0, 1) })).toEqual([
      [
        { unit: 0, begin: 0, end: 2 },
        { unit: 2, begin: 0, end: 1 },
      ],
    ]);
    // A worker whose range spans three units.
    expect(planDecodePartition({ kind: 'streamK', workers: 2, units: units(1, 2, 1, 2) })).toEqual([
      [
        { unit: 0, begin: 0, end: 1 },
        { unit: 1, begin: 0, end: 2 },
      ],
      [
        { unit: 2, begin: 0, end: 1 },
        { unit: 3, begin: 0, end: 2 },
      ],
    ]);
  });

  test("the README's example", () => {
    expect(planDecodePartition({ kind: 'streamK', workers: 3, units: units(5, 3) })).toEqual([
      [{ unit: 0, begin: 0, end: 3 }],
      [
        { unit: 0, begin: 3, end: 5 },
        { unit: 1, begin: 0, end: 1 },
      ],
      [{ unit: 1, begin: 1, end: 3 }],
    ]);
  });

  test('fa2: one worker per unit, empty units idle', () => {
    expect(planDecodePartition({ kind: 'fa2', units: units(3, 0, 1) })).toEqual([
      [{ unit: 0, begin: 0, end: 3 }],
      [],
      [{ unit: 2, begin: 0, end: 1 }],
    ]);
    // workers is not read by fa2 (but still validated).
    expect(planDecodePartition({ kind: 'fa2', workers: 64, units: units(3) })).toHaveLength(1);
  });

  test('splitK: splits ranges per unit, worker u * splits + s', () => {
    expect(planDecodePartition({ kind: 'splitK', splits: 3, units: units(7, 2) })).toEqual([
      [{ unit: 0, begin: 0, end: 3 }],
      [{ unit: 0, begin: 3, end: 5 }],
      [{ unit: 0, begin: 5, end: 7 }],
      [{ unit: 1, begin: 0, end: 1 }],
      [{ unit: 1, begin: 1, end: 2 }],
      [],
    ]);
  });

  test('no units, all units empty, one tile', () => {
    for (const kind of ['fa2', 'splitK', 'streamK'] as const) {
      expect(planDecodePartition({ kind, workers: 3, splits: 2, units: [] })).toEqual(
        kind === 'streamK' ? [[], [], []] : [],
      );
      const empty = planDecodePartition({ kind, workers: 3, splits: 2, units: units(0, 0) });
      expect(empty.flat()).toEqual([]);
      const one = planDecodePartition({ kind, workers: 3, splits: 2, units: units(0, 1, 0) });
      expect(one.flat()).toEqual([{ unit: 1, begin: 0, end: 1 }]);
    }
  });

  test('streamK with more workers than tiles: one tile each, the rest idle', () => {
    const plan = planDecodePartition({ kind: 'streamK', workers: 10, units: units(2, 0, 3) });
    expect(plan).toHaveLength(10);
    expect(checkCoverage(plan, units(2, 0, 3))).toEqual([1, 1, 1, 1, 1, 0, 0, 0, 0, 0]);
  });

  test('huge counts plan without per-tile work', () => {
    // 2^51 tiles: a planner that loops per tile would not finish within the test's limit, so
    // the limit is the check (a wall-clock bound here failed under CI's load: 1441 ms vs 1000).
    const big = units(2 ** 50, 3, 2 ** 51 + 7, 0, 12345678901);
    const plan = planDecodePartition({ kind: 'streamK', workers: 1000, units: big });
    const loads = checkCoverage(plan, big);
    expect(Math.max(...loads) - Math.min(...loads)).toBeLessThanOrEqual(1);
    const total = big.reduce((a, u) => a + u.tiles, 0);
    expect(loads.reduce((a, x) => a + x, 0)).toBe(total);
    const split = planDecodePartition({ kind: 'splitK', splits: 64, units: big });
    checkCoverage(split, big);
    checkCoverage(planDecodePartition({ kind: 'fa2', units: big }), big);
  });
});

describe('planDecodePartition: property test (seeded)', () => {
  const rng = new Rng(20261202);
  const cases = Array.from({ length: 300 }, (_, i) => {
    const n = rng.int(0, 12);
    // Mostly decode-like units (a few to a few hundred tiles), some empty, some of one tile.
    const tiles = Array.from({ length: n }, () => {
      const r = rng.uniform();
      return r < 0.15 ? 0 : r < 0.3 ? 1 : rng.int(2, r < 0.9 ? 40 : 400);
    });
    return { i, tiles, workers: rng.int(1, 70), splits: rng.int(1, 9) };
  });
  test.each(cases)('case $i: tiles $tiles, workers $workers, splits $splits', (c) => {
    const us = units(...c.tiles);
    const total = c.tiles.reduce((a, x) => a + x, 0);

    const sk = planDecodePartition({ kind: 'streamK', workers: c.workers, units: us });
    expect(sk).toHaveLength(c.workers);
    const loads = checkCoverage(sk, us);
    expect(
      Math.max(...loads) - Math.min(...loads),
      'streamK balanced to one tile',
    ).toBeLessThanOrEqual(1);
    // The loads are exactly the balanced cut: the first total mod workers hold one more.
    loads.forEach((x, w) => {
      expect(x).toBe(Math.floor(total / c.workers) + (w < total % c.workers ? 1 : 0));
    });
    // Each worker's pieces follow the concatenated tile order (units ascending).
    for (const pieces of sk) {
      for (let j = 1; j < pieces.length; j++)
        expect(pieces[j]!.unit).toBeGreaterThan(pieces[j - 1]!.unit);
    }

    const sp = planDecodePartition({ kind: 'splitK', splits: c.splits, units: us });
    expect(sp).toHaveLength(us.length * c.splits);
    const spLoads = checkCoverage(sp, us);
    us.forEach((_, u) => {
      const mine = spLoads.slice(u * c.splits, (u + 1) * c.splits);
      expect(Math.max(...mine) - Math.min(...mine), `splitK unit ${u}`).toBeLessThanOrEqual(1);
      for (const pieces of sp.slice(u * c.splits, (u + 1) * c.splits))
        for (const x of pieces) expect(x.unit).toBe(u);
    });

    const fa = planDecodePartition({ kind: 'fa2', units: us });
    expect(fa).toHaveLength(us.length);
    expect(checkCoverage(fa, us)).toEqual(c.tiles);

    // The fix-up's view: per unit, its pieces in key order.
    for (const plan of [sk, sp, fa]) {
      const byUnit = piecesByUnit(plan, us.length);
      byUnit.forEach((pieces, u) => {
        expect(load(pieces)).toBe(c.tiles[u]);
        let at = 0;
        for (const x of pieces) {
          expect(x.unit).toBe(u);
          expect(x.begin).toBe(at);
          at = x.end;
        }
      });
    }
  });
});

describe('planDecodePartition: typed errors', () => {
  const ok = units(3, 4);
  test.each([0, -1, 2.5, Number.NaN, Number.POSITIVE_INFINITY, '4', undefined, 2 ** 60])(
    'streamK workers = %s',
    (workers) => {
      const call = () =>
        planDecodePartition({ kind: 'streamK', workers: workers as number, units: ok });
      expect(call).toThrow(ValueError);
      expect(call).toThrow(expect.objectContaining({ argument: 'workers' }));
      expect(call).toThrow(/^workers: expected a positive integer, got/);
    },
  );

  test('workers given to fa2 / splitK is still validated', () => {
    for (const kind of ['fa2', 'splitK'] as const) {
      const call = () => planDecodePartition({ kind, workers: 0, splits: 2, units: ok });
      expect(call).toThrow(expect.objectContaining({ argument: 'workers' }));
    }
  });

  test.each([0, -3, 1.5, undefined, '2'])('splitK splits = %s', (splits) => {
    const call = () => planDecodePartition({ kind: 'splitK', splits: splits as number, units: ok });
    expect(call).toThrow(ValueError);
    expect(call).toThrow(expect.objectContaining({ argument: 'splits' }));
  });

  test('kind, units, request', () => {
    const kind = () =>
      planDecodePartition({ kind: 'lean' as DecodePartitionKind, workers: 2, units: ok });
    expect(kind).toThrow(expect.objectContaining({ argument: 'kind' }));
    expect(kind).toThrow(/^kind: expected "fa2", "splitK" or "streamK", got/);
    const notArray = () =>
      planDecodePartition({ kind: 'fa2', units: 3 as unknown as DecodeUnit[] });
    expect(notArray).toThrow(expect.objectContaining({ argument: 'units' }));
    const req = () => planDecodePartition(null as never);
    expect(req).toThrow(expect.objectContaining({ argument: 'request' }));
  });

  test.each([
    [{ tiles: -1 }, 'units[1].tiles'],
    [{ tiles: 1.5 }, 'units[1].tiles'],
    [{ tiles: Number.NaN }, 'units[1].tiles'],
    [{}, 'units[1].tiles'],
    [null, 'units[1].tiles'],
    [5, 'units[1].tiles'],
  ])('unit %j -> ValueError naming %s', (bad, name) => {
    const call = () =>
      planDecodePartition({
        kind: 'streamK',
        workers: 2,
        units: [{ tiles: 1 }, bad as DecodeUnit],
      });
    expect(call).toThrow(ValueError);
    expect(call).toThrow(expect.objectContaining({ argument: name }));
  });

  test('a total beyond 2^53 - 1 tiles', () => {
    const call = () =>
      planDecodePartition({ kind: 'streamK', workers: 2, units: units(2 ** 52, 2 ** 52) });
    expect(call).toThrow(expect.objectContaining({ argument: 'units' }));
  });

  test('piecesByUnit rejects a piece of an unknown unit', () => {
    const call = () => piecesByUnit([[{ unit: 2, begin: 0, end: 1 }]], 2);
    expect(call).toThrow(expect.objectContaining({ argument: 'plan' }));
  });
});
