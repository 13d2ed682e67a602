import { describe, expect, test } from 'vitest';
import { kGroupOf, qGroupOf, rint, type SageGranularity, sageGroupCounts } from './codec.js';

const GRANS: SageGranularity[] = ['block', 'warp', 'thread'];

describe('rint', () => {
  test('halves to even, both signs', () => {
    const cases: [number, number][] = [
      [0.5, 0],
      [1.5, 2],
      [2.5, 2],
      [3.5, 4],
      [-0.5, 0],
      [-1.5, -2],
      [-2.5, -2],
      [-3.5, -4],
      [126.5, 126],
      [127.5, 128],
      [-126.5, -126],
      [2.4999999999999996, 2],
      [0.49999999999999994, 0],
      [2.5000000000000004, 3],
      [-7.2, -7],
      [6.7, 7],
      [0, 0],
      [2 ** 53 + 2, 2 ** 53 + 2],
    ];
    for (const [x, want] of cases) expect(rint(x) + 0, `rint(${x})`).toBe(want);
  });
  test('agrees with a reference on random values', () => {
    // Reference: floor, then the remainder decides; exact halves go to the even neighbour.
    const ref = (x: number) => {
      const f = Math.floor(x);
      const d = x - f;
      if (d < 0.5) return f;
      if (d > 0.5) return f + 1;
      return f % 2 === 0 ? f : f + 1;
    };
    let seed = 12345;
    for (let n = 0; n < 20000; n++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const x = ((seed / 2 ** 32) * 600 - 300) / (n % 3 === 0 ? 1 : 2);
      const y = n % 2 === 0 ? Math.round(x * 2) / 2 : x; // many exact halves
      expect(rint(y) + 0).toBe(ref(y) + 0);
    }
  });
});

describe('groups', () => {
  test('every row / key falls in [0, nQG) / [0, nKG); group sizes as ARITHMETIC.md', () => {
    for (const g of GRANS) {
      for (const [nq, nk] of [
        [1, 1],
        [16, 64],
        [77, 131],
        [128, 128],
        [129, 200],
        [300, 1],
      ] as const) {
        const { nQG, nKG, nQB } = sageGroupCounts(nq, nk, g);
        expect(nQB).toBe(Math.ceil(nq / 128));
        const qSize = new Array<number>(nQG).fill(0);
        for (let i = 0; i < nq; i++) {
          const G = qGroupOf(i, g);
          expect(G).toBeGreaterThanOrEqual(0);
          expect(G).toBeLessThan(nQG);
          qSize[G]!++;
        }
        const kSize = new Array<number>(nKG).fill(0);
        for (let j = 0; j < nk; j++) {
          const G = kGroupOf(j, g);
          expect(G).toBeLessThan(nKG);
          kSize[G]!++;
        }
        const qFull = { block: 128, warp: 16, thread: 2 }[g];
        const kFull = { block: 64, warp: 64, thread: 16 }[g];
        // Only the last tile's groups may be short (or empty).
        const qLast = { block: 1, warp: 1, thread: 8 }[g];
        const kLast = { block: 1, warp: 1, thread: 4 }[g];
        qSize.forEach((s, G) => {
          if (G < nQG - qLast) expect(s).toBe(qFull);
          else expect(s).toBeLessThanOrEqual(qFull);
        });
        kSize.forEach((s, G) => {
          if (G < nKG - kLast) expect(s).toBe(kFull);
          else expect(s).toBeLessThanOrEqual(kFull);
        });
      }
    }
  });
  test('thread groups: rows i and i + 8 of a 16-row tile; keys with equal (j & 7) >> 1 of a tile', () => {
    expect(qGroupOf(3, 'thread')).toBe(qGroupOf(11, 'thread'));
    expect(qGroupOf(3, 'thread')).not.toBe(qGroupOf(4, 'thread'));
    expect(qGroupOf(19, 'thread')).toBe(8 + 3);
    expect(kGroupOf(0, 'thread')).toBe(kGroupOf(9, 'thread'));
    expect(kGroupOf(1, 'thread')).toBe(kGroupOf(57, 'thread'));
    expect(kGroupOf(2, 'thread')).toBe(1);
    expect(kGroupOf(64 + 7, 'thread')).toBe(4 + 3);
    expect(kGroupOf(63, 'warp')).toBe(0);
    expect(kGroupOf(64, 'block')).toBe(1);
    expect(qGroupOf(127, 'block')).toBe(0);
    expect(qGroupOf(128, 'block')).toBe(1);
  });
});
