import {
  keyRange,
  resolveAttentionProblem,
  resolveScoreMods,
  type ScoreMod,
} from '@attnkit/attention';
import { SOFTMAX_HOOKS, tiledForwardTs } from '@attnkit/skeleton';
import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import {
  resolveBand,
  type TileCountProblem,
  type TileCounts,
  tileClasses,
  tileCounts,
} from './tile-counts.js';

const SEED = Number(process.env.ATTNKIT_TEST_SEED ?? Date.now() % 1_000_000);

function band(p: TileCountProblem) {
  return resolveBand(p.causal, p.window);
}

function kept(p: TileCountProblem, qb: number, kb: number): boolean {
  const bs = p.blockSparse;
  if (!bs) return true;
  return bs.mask[qb * Math.ceil(p.seqK / bs.blockK) + kb] !== 0;
}

/** Per-element classification (the definition): a tile is skipped with no allowed pair, mask-free with all pairs allowed. */
function bruteTs(p: TileCountProblem, bq: number, bk: number): Omit<TileCounts, 'outsideBand'> {
  const b = band(p);
  const out = { total: 0, skipped: 0, partial: 0, full: 0, keyRowsLoaded: 0 };
  for (let q0 = 0; q0 < p.seqQ; q0 += bq) {
    for (let k0 = 0; k0 < p.seqK; k0 += bk) {
      out.total++;
      const rows = Math.min(bq, p.seqQ - q0);
      const cols = Math.min(bk, p.seqK - k0);
      let allowed = 0;
      for (let i = q0; i < q0 + rows; i++) {
        const [lo, hi] = keyRange(b, i, p.seqQ, p.seqK);
        for (let j = k0; j < k0 + cols; j++) {
          const bs = p.blockSparse;
          const ok =
            j >= lo &&
            j < hi &&
            (!bs || kept(p, Math.floor(i / bs.blockQ), Math.floor(j / bs.blockK)));
          if (ok) allowed++;
        }
      }
      if (allowed === 0) out.skipped++;
      else {
        out.keyRowsLoaded += cols;
        if (allowed === rows * cols) out.full++;
        else out.partial++;
      }
    }
  }
  return out;
}

/**
 * The WGSL kernels' rule, per element: skipped when no pair of the tile is in the band or every
 * mask block it covers is dropped; mask-free when every pair of the whole BR x BC extent
 * (columns past Nk count as outside the band) is in the band and every covered block is kept.
 */
function bruteWebGpu(p: TileCountProblem, bq: number, bk: number): Omit<TileCounts, 'outsideBand'> {
  const b = band(p);
  const out = { total: 0, skipped: 0, partial: 0, full: 0, keyRowsLoaded: 0 };
  const bs = p.blockSparse;
  for (let q0 = 0; q0 < p.seqQ; q0 += bq) {
    for (let k0 = 0; k0 < p.seqK; k0 += bk) {
      out.total++;
      const rows = Math.min(bq, p.seqQ - q0);
      const cols = Math.min(bk, p.seqK - k0);
      let inBand = 0;
      for (let i = q0; i < q0 + rows; i++) {
        const [lo, hi] = keyRange(b, i, p.seqQ, p.seqK);
        for (let j = k0; j < k0 + bk; j++) if (j >= lo && j < hi) inBand++;
      }
      let covered = 0;
      let keptBlocks = 0;
      if (bs) {
        for (
          let qb = Math.floor(q0 / bs.blockQ);
          qb <= Math.floor((q0 + rows - 1) / bs.blockQ);
          qb++
        )
          for (
            let kb = Math.floor(k0 / bs.blockK);
            kb <= Math.floor((k0 + cols - 1) / bs.blockK);
            kb++
          ) {
            covered++;
            if (kept(p, qb, kb)) keptBlocks++;
          }
      }
      if (inBand === 0 || (bs && keptBlocks === 0)) out.skipped++;
      else {
        out.keyRowsLoaded += cols;
        if (inBand === rows * bk && keptBlocks === covered) out.full++;
        else out.partial++;
      }
    }
  }
  return out;
}

function randomProblem(
  rng: Rng,
  blockSparse: boolean,
  blocks?: [number, number],
): TileCountProblem {
  const seqQ = rng.int(1, 70);
  const seqK = rng.int(1, 70);
  const kind = rng.int(0, 4);
  const p: TileCountProblem = { seqQ, seqK };
  if (kind === 1 || kind === 3) p.causal = true;
  if (kind >= 2) p.window = [rng.int(-1, 20), rng.int(-1, 20)];
  if (blockSparse) {
    const [blockQ, blockK] = blocks ?? [rng.int(1, 17), rng.int(1, 17)];
    const n = Math.ceil(seqQ / blockQ) * Math.ceil(seqK / blockK);
    const mask = Uint8Array.from({ length: n }, () => (rng.uniform() < 0.6 ? 1 : 0));
    p.blockSparse = { blockQ, blockK, mask };
  }
  return p;
}

const strip = ({ outsideBand: _, ...rest }: TileCounts) => rest;

describe('tileCounts: hand-checked', () => {
  test('causal 8 x 8, 4 x 4 tiles: the diagonal tiles masked, one below mask-free, one above skipped', () => {
    expect(tileCounts({ seqQ: 8, seqK: 8, causal: true }, { blockQ: 4, blockK: 4 })).toEqual({
      total: 4,
      skipped: 1,
      outsideBand: 1,
      partial: 2,
      full: 1,
      keyRowsLoaded: 12,
    });
  });
  test('tileClasses: the causal 8 x 8 map, row-major [query tile, key tile]', () => {
    // 0 skipped, 1 masked, 2 mask-free.
    expect(
      Array.from(tileClasses({ seqQ: 8, seqK: 8, causal: true }, { blockQ: 4, blockK: 4 })),
    ).toEqual([1, 0, 2, 1]);
    expect(
      Array.from(
        tileClasses({ seqQ: 5, seqK: 7 }, { blockQ: 4, blockK: 4 }, { backend: 'webgpu' }),
      ),
    ).toEqual([2, 1, 2, 1]);
    expect(() => tileClasses(null as never, { blockQ: 1, blockK: 1 })).toThrow(/problem: expected/);
  });
  test('window [2, 0] on 8 x 8, 4 x 4 tiles: three masked tiles, one skipped', () => {
    // Row i sees keys i-2..i: rows 0-3 see keys 0-3 only; rows 4-7 see 2-7, no tile whole.
    expect(tileCounts({ seqQ: 8, seqK: 8, window: [2, 0] }, { blockQ: 4, blockK: 4 })).toEqual({
      total: 4,
      skipped: 1,
      outsideBand: 1,
      partial: 3,
      full: 0,
      keyRowsLoaded: 12,
    });
  });
  test('causal, Nq = 3 < Nk = 8 (bottom-right): 4 x 4 tiles, first key tile mask-free', () => {
    // Query i sees keys j <= i + 5: rows 0..2 see 0..5, 0..6, 0..7.
    expect(tileCounts({ seqQ: 3, seqK: 8, causal: true }, { blockQ: 4, blockK: 4 })).toEqual({
      total: 2,
      skipped: 0,
      outsideBand: 0,
      partial: 1,
      full: 1,
      keyRowsLoaded: 8,
    });
  });
  test('dense 5 x 7, 4 x 4 tiles: ts classifies the ragged key tile by its 3 real columns, webgpu masks it', () => {
    const p = { seqQ: 5, seqK: 7 };
    const t = { blockQ: 4, blockK: 4 };
    expect(tileCounts(p, t)).toMatchObject({ total: 4, skipped: 0, partial: 0, full: 4 });
    expect(tileCounts(p, t, { backend: 'webgpu' })).toMatchObject({ full: 2, partial: 2 });
    expect(tileCounts(p, t).keyRowsLoaded).toBe(2 * 7);
  });
  test('block-sparse 8 x 8 with 4 x 4 blocks [1 0; 1 1]', () => {
    const p = { seqQ: 8, seqK: 8, blockSparse: { blockQ: 4, blockK: 4, mask: [1, 0, 1, 1] } };
    expect(tileCounts(p, { blockQ: 4, blockK: 4 })).toMatchObject({
      total: 4,
      skipped: 1,
      outsideBand: 0,
      full: 3,
    });
    expect(tileCounts(p, { blockQ: 2, blockK: 2 })).toMatchObject({
      total: 16,
      skipped: 4,
      full: 12,
    });
    // webgpu 8 x 8 tiles straddle all four blocks: one dropped, so the tile runs masked.
    expect(tileCounts(p, { blockQ: 8, blockK: 8 }, { backend: 'webgpu' })).toMatchObject({
      total: 1,
      partial: 1,
      full: 0,
    });
  });
  test('bad input: typed errors naming the argument', () => {
    expect(() => tileCounts({ seqQ: -1, seqK: 4 }, { blockQ: 2, blockK: 2 })).toThrow(ValueError);
    expect(() => tileCounts({ seqQ: 4, seqK: 4 }, { blockQ: 0, blockK: 2 })).toThrow(
      /tiles.blockQ/,
    );
    expect(() =>
      tileCounts({ seqQ: 4, seqK: 4, window: [1, 2, 3] as never }, { blockQ: 2, blockK: 2 }),
    ).toThrow(/window/);
    expect(() =>
      tileCounts(
        { seqQ: 8, seqK: 8, blockSparse: { blockQ: 4, blockK: 4, mask: [1, 1, 1] } },
        { blockQ: 4, blockK: 4 },
      ),
    ).toThrow(/blockSparse.mask: expected 2 x 2 = 4 entries/);
    expect(() =>
      tileCounts(
        { seqQ: 8, seqK: 8, blockSparse: { blockQ: 4, blockK: 4, mask: [1, 1, 1, 1] } },
        { blockQ: 3, blockK: 4 },
      ),
    ).toThrow(/tiles.blockQ: expected a divisor of the block-sparse block 4/);
    expect(() =>
      tileCounts({ seqQ: 4, seqK: 4 }, { blockQ: 2, blockK: 2 }, { backend: 'cuda' as never }),
    ).toThrow(/backend/);
  });
  test('empty sequences have no tiles', () => {
    expect(tileCounts({ seqQ: 0, seqK: 5, causal: true }, { blockQ: 2, blockK: 2 }).total).toBe(0);
    expect(tileCounts({ seqQ: 5, seqK: 0 }, { blockQ: 2, blockK: 2 })).toMatchObject({
      total: 0,
      partial: 0,
      full: 0,
    });
  });
});

describe(`tileCounts vs per-element classification (seed ${SEED})`, () => {
  test('ts rule: causal / window / block-sparse, random shapes and tiles', () => {
    const rng = new Rng(SEED);
    for (let n = 0; n < 300; n++) {
      const sparse = n % 3 === 2;
      const bq = rng.int(1, 17);
      const bk = rng.int(1, 17);
      // The ts kernel's tiles divide the mask blocks.
      const p = randomProblem(rng, sparse, [bq * rng.int(1, 4), bk * rng.int(1, 4)]);
      const got = tileCounts(p, { blockQ: bq, blockK: bk });
      expect(strip(got), JSON.stringify({ p, bq, bk })).toEqual(bruteTs(p, bq, bk));
      if (!sparse) expect(got.outsideBand).toBe(got.skipped);
      else expect(got.outsideBand).toBeLessThanOrEqual(got.skipped);
    }
  });
  test('webgpu rule: tiles straddling mask blocks, ragged edges', () => {
    const rng = new Rng(SEED + 1);
    for (let n = 0; n < 300; n++) {
      const p = randomProblem(rng, n % 2 === 1);
      const bq = rng.int(1, 17);
      const bk = rng.int(1, 17);
      const got = tileCounts(p, { blockQ: bq, blockK: bk }, { backend: 'webgpu' });
      expect(strip(got), JSON.stringify({ p, bq, bk })).toEqual(bruteWebGpu(p, bq, bk));
    }
  });
});

/**
 * The skeleton's TS forward itself: an identity custom score mod records every (i, j) the loop
 * scores. The mod runs on each visited tile's rows over their key ranges (all columns on the
 * mask-free path), so the visited tiles are those it saw and the mask-free ones those where it
 * saw every pair.
 */
function skeletonVisits(p: TileCountProblem, bq: number, bk: number) {
  const seen = new Map<number, number>();
  const ntk = Math.ceil(p.seqK / bk);
  const mod: ScoreMod = {
    kind: 'custom',
    name: 'record',
    ts: (s, _b, _h, i, j) => {
      const at = Math.floor(i / bq) * ntk + Math.floor(j / bk);
      seen.set(at, (seen.get(at) ?? 0) + 1);
      return s;
    },
  };
  const d = 4;
  const q = Tensor.from(new Float32Array(p.seqQ * d).fill(0.5), [1, 1, p.seqQ, d]);
  const k = Tensor.from(new Float32Array(p.seqK * d).fill(0.25), [1, 1, p.seqK, d]);
  const v = Tensor.from(new Float32Array(p.seqK * d).fill(1), [1, 1, p.seqK, d]);
  const bs = p.blockSparse;
  const opts = {
    ...(p.causal ? { causal: true } : {}),
    ...(p.window ? { window: p.window } : {}),
    ...(bs
      ? {
          blockSparse: {
            blockQ: bs.blockQ,
            blockK: bs.blockK,
            mask: Tensor.from(Uint8Array.from(bs.mask), [
              Math.ceil(p.seqQ / bs.blockQ),
              Math.ceil(p.seqK / bs.blockK),
            ]),
          },
        }
      : {}),
  };
  const ap = resolveAttentionProblem(q, k, v, opts);
  const hooks = { ...SOFTMAX_HOOKS, scoreMods: resolveScoreMods(mod, ap, 'cpu') };
  tiledForwardTs(ap, hooks, q, k, v, { blockQ: bq, blockK: bk });
  let full = 0;
  let partial = 0;
  for (const [at, n] of seen) {
    const rows = Math.min(bq, p.seqQ - Math.floor(at / ntk) * bq);
    const cols = Math.min(bk, p.seqK - (at % ntk) * bk);
    if (n === rows * cols) full++;
    else partial++;
  }
  return { visited: seen.size, full, partial };
}

describe(`tileCounts vs the skeleton's TS forward (seed ${SEED})`, () => {
  test('visited, mask-free and masked tiles agree with what the loop scores', () => {
    const rng = new Rng(SEED + 2);
    for (let n = 0; n < 60; n++) {
      const bq = rng.int(1, 9);
      const bk = rng.int(1, 9);
      const p = randomProblem(rng, n % 3 === 2, [bq * rng.int(1, 3), bk * rng.int(1, 3)]);
      const got = tileCounts(p, { blockQ: bq, blockK: bk });
      const seen = skeletonVisits(p, bq, bk);
      expect(
        { visited: got.partial + got.full, full: got.full, partial: got.partial },
        JSON.stringify({ p, bq, bk }),
      ).toEqual(seen);
    }
  });
});
