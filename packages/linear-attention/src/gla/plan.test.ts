import { describe, expect, test } from 'vitest';
import {
  GLA_CHUNK_SIZE,
  glaBytes,
  glaChunks,
  glaFlops,
  glaSequences,
  glaSubChunkSize,
  isPowerOfTwo,
} from './plan.js';

describe('GLA planning', () => {
  test('sequences: B rows of T, or the packed cuSeqlens ones (an empty one included)', () => {
    expect(glaSequences(2, 5)).toEqual([
      { index: 0, batch: 0, bos: 0, eos: 5 },
      { index: 1, batch: 1, bos: 0, eos: 5 },
    ]);
    expect(glaSequences(1, 9, [0, 4, 4, 9])).toEqual([
      { index: 0, batch: 0, bos: 0, eos: 4 },
      { index: 1, batch: 0, bos: 4, eos: 4 },
      { index: 2, batch: 0, bos: 4, eos: 9 },
    ]);
    expect(glaSequences(0, 7)).toEqual([]);
  });

  test('chunks cover a sequence with a ragged last one; sub-chunks of at most 16', () => {
    expect(glaChunks(10, 4)).toEqual([
      [0, 4],
      [4, 8],
      [8, 10],
    ]);
    expect(glaChunks(8, 4)).toEqual([
      [0, 4],
      [4, 8],
    ]);
    expect(glaChunks(0, 64)).toEqual([]);
    expect(GLA_CHUNK_SIZE).toBe(64);
    expect([1, 8, 16, 64, 256].map(glaSubChunkSize)).toEqual([1, 8, 16, 16, 16]);
    expect([1, 2, 64, 2 ** 30].every(isPowerOfTwo)).toBe(true);
    expect([0, 3, 48, -4, 2.5, Number.NaN, 2 ** 31].some(isPowerOfTwo)).toBe(false);
  });

  test('FLOPs: the recurrent form 2 T K V forward; the chunk form its per-chunk products', () => {
    const p = { lengths: [100], H: 2, K: 8, V: 4 };
    expect(glaFlops(p, 'recurrent', 'forward')).toBe(2 * 2 * (2 * 100 * 8 * 4));
    expect(glaFlops(p, 'recurrent', 'backward')).toBe(2 * 2 * (6 * 100 * 8 * 4));
    // One chunk of L = 100 (C = 128): L(L+1)/2 (K + V) + 2 L K V multiply-adds.
    const L = 100;
    const tri = (L * (L + 1)) / 2;
    expect(glaFlops(p, 'chunk', 'forward', 128)).toBe(2 * 2 * (tri * 12 + 2 * L * 32));
    // Chunks of 64 and 36 add up; the chunk form beats no chunking at C = T.
    const split = (n: number) => ((n * (n + 1)) / 2) * 12 + 2 * n * 32;
    expect(glaFlops(p, 'chunk', 'forward', 64)).toBe(2 * 2 * (split(64) + split(36)));
    expect(glaFlops({ ...p, lengths: [50, 50] }, 'chunk', 'forward', 64)).toBe(
      2 * 2 * 2 * split(50),
    );
    const bwd = glaFlops(p, 'chunk', 'backward', 128);
    expect(bwd).toBe(2 * 2 * (L * 32 + tri * 8 + 2 * tri * 4 + L * (L - 1) * 8 + 4 * L * 32));
  });

  test('bytes: tokens read and written, states in f32', () => {
    const p = { lengths: [10, 6], H: 2, K: 8, V: 4 };
    expect(glaBytes(p, 'forward', 2)).toBe(2 * 16 * (3 * 8 + 2 * 4) * 2);
    expect(glaBytes(p, 'forward', 4, { initialState: true, finalState: true })).toBe(
      2 * (16 * 32 * 4 + 2 * 2 * 32 * 4),
    );
    expect(glaBytes(p, 'backward', 4, { initialState: true })).toBe(
      2 * (16 * (6 * 8 + 3 * 4) * 4 + 2 * 2 * 32 * 4),
    );
  });
});
