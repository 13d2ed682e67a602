import { keyRange } from '@attnkit/attention';
import { describe, ShapeError, ValueError } from '@attnkit/tensor';

/**
 * Tiling-mask counters (FastAttention's tiling-mask, KERNELS.md "FastAttention"): for a
 * causal / window band and an optional block-sparse mask, how many (blockQ x blockK) tiles of
 * one (batch, head) the skeleton's FA2 forward skips, runs on the masked path, and runs on the
 * mask-free path. Computed from indices only (two key ranges per query tile, one mask lookup
 * per tile; never an Nq x Nk mask), with exactly the skeleton's rules:
 *
 * - ts: skeleton cpu/fa2.ts forEachQTile visits key tiles [tFirst, tEnd) between
 *   the first row's lower and the last row's upper key bound; cpu/tile.ts classifyTile then
 *   skips a tile outside the band or in a dropped block, and marks it mask-free (FULL) when the
 *   last row's lower bound <= k0 and the first row's upper bound >= k0 + cols (cols clipped
 *   at Nk, so a ragged last key tile can be mask-free). Tiles divide block-sparse blocks.
 * - webgpu: skeleton webgpu/shaders.ts tileLoop runs the same band range, but its mask-free
 *   test uses the whole BC (`c0 + BC <= hiFirst`), so a ragged last key tile is always masked;
 *   tiles may straddle mask blocks, and the host's per-tile summary (webgpu/aux.ts buildAux:
 *   0 all covered blocks dropped, 1 mixed, 2 all kept) skips or refines them.
 */

export interface TileCountProblem {
  /** Query rows of the sequence (Nq). */
  seqQ: number;
  /** Keys of the sequence (Nk). */
  seqK: number;
  /** Bottom-right aligned causal band (KERNELS.md "Common"). */
  causal?: boolean;
  /** Sliding window [left, right], -1 unbounded; with causal the right bound is folded to <= 0. */
  window?: readonly [number, number];
  /** Block-sparse mask of this (batch, head): [ceil(Nq / blockQ), ceil(Nk / blockK)] row-major, non-zero keeps. */
  blockSparse?: { blockQ: number; blockK: number; mask: ArrayLike<number> };
}

export interface TileShape {
  blockQ: number;
  blockK: number;
}

export interface TileCountOptions {
  /**
   * Whose classification to count: 'ts' (default) or 'webgpu'. The native engine
   * (flash_common.h classifyTile) has the same band rule on its own tiles (the forward's query
   * tile is its SIMD block, 64 rows with AVX-512), so 'ts' with those tiles counts its band
   * decisions; its block-sparse summary (over the rows that reach a tile) is not modelled.
   */
  backend?: 'ts' | 'webgpu';
}

export interface TileCounts {
  /** ceil(Nq / blockQ) * ceil(Nk / blockK). */
  total: number;
  /** Tiles the kernel never loads: total - partial - full. */
  skipped: number;
  /** Of `skipped`: tiles outside the loop's band range, never even classified. */
  outsideBand: number;
  /** Visited on the masked path (per-element range / block tests). */
  partial: number;
  /** Visited on the mask-free path. */
  full: number;
  /**
   * Key rows the visited tiles load (each tile's columns clipped at Nk): the forward's K/V
   * traffic is keyRowsLoaded * (D + Dv) elements, the I/O model's Tr * N * (D + Dv) when dense.
   */
  keyRowsLoaded: number;
}

function int(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new ValueError(`${name}: expected an integer >= ${min}, got ${describe(value)}`, name);
  }
  return value;
}

/** The band as @attnkit/attention's resolveAttentionProblem folds it (causal: right <= 0). */
export function resolveBand(causal: unknown, window: unknown): { left: number; right: number } {
  if (causal !== undefined && typeof causal !== 'boolean') {
    throw new ValueError(`causal: expected a boolean, got ${describe(causal)}`, 'causal');
  }
  const w = window ?? [-1, -1];
  if (
    !Array.isArray(w) ||
    w.length !== 2 ||
    !w.every((x) => Number.isInteger(x) && (x as number) >= -1)
  ) {
    throw new ValueError(
      `window: expected [left, right] integers >= -1 (-1 = unbounded), got ${describe(window)}`,
      'window',
    );
  }
  let [left, right] = w as [number, number];
  if (causal) right = right < 0 ? 0 : Math.min(right, 0);
  return { left, right };
}

interface Resolved {
  nq: number;
  nk: number;
  left: number;
  right: number;
  bs: { blockQ: number; blockK: number; nbk: number; mask: ArrayLike<number> } | undefined;
}

function resolve(problem: TileCountProblem): Resolved {
  if (problem === null || typeof problem !== 'object') {
    throw new ValueError(
      `problem: expected { seqQ, seqK, causal?, window?, blockSparse? }, got ${describe(problem)}`,
      'problem',
    );
  }
  const nq = int(problem.seqQ, 'seqQ', 0);
  const nk = int(problem.seqK, 'seqK', 0);
  const { left, right } = resolveBand(problem.causal, problem.window);
  const b = problem.blockSparse;
  if (b === undefined) return { nq, nk, left, right, bs: undefined };
  if (b === null || typeof b !== 'object') {
    throw new ValueError(
      `blockSparse: expected { blockQ, blockK, mask }, got ${describe(b)}`,
      'blockSparse',
    );
  }
  const blockQ = int(b.blockQ, 'blockSparse.blockQ', 1);
  const blockK = int(b.blockK, 'blockSparse.blockK', 1);
  const nbq = Math.ceil(nq / blockQ);
  const nbk = Math.ceil(nk / blockK);
  if (b.mask === null || typeof b.mask !== 'object' || typeof b.mask.length !== 'number') {
    throw new ValueError(
      `blockSparse.mask: expected an array of ${nbq} x ${nbk} entries, got ${describe(b.mask)}`,
      'blockSparse.mask',
    );
  }
  if (b.mask.length !== nbq * nbk) {
    throw new ShapeError(
      `blockSparse.mask: expected ${nbq} x ${nbk} = ${nbq * nbk} entries (ceil(Nq / blockQ) x ceil(Nk / blockK)), got ${b.mask.length}`,
      'blockSparse.mask',
    );
  }
  return { nq, nk, left, right, bs: { blockQ, blockK, nbk, mask: b.mask } };
}

/** Tile classes of tileClasses: not visited, masked path, mask-free path (the skeleton's SKIP / PARTIAL / FULL). */
export const TILE_SKIPPED = 0;
export const TILE_PARTIAL = 1;
export const TILE_FULL = 2;

/**
 * Walks the tiles of one (batch, head) the skeleton's loop visits, in its order: visit(qt, kt,
 * full, cols) for each tile it runs; returns the tile grid and the count outside the band.
 */
function walk(
  problem: TileCountProblem,
  tiles: TileShape,
  options: TileCountOptions | undefined,
  visit: (qt: number, kt: number, full: boolean, cols: number) => void,
): { ntq: number; ntk: number; outsideBand: number } {
  const r = resolve(problem);
  if (tiles === null || typeof tiles !== 'object') {
    throw new ValueError(`tiles: expected { blockQ, blockK }, got ${describe(tiles)}`, 'tiles');
  }
  const bq = int(tiles.blockQ, 'tiles.blockQ', 1);
  const bk = int(tiles.blockK, 'tiles.blockK', 1);
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw new ValueError(`options: expected { backend? }, got ${describe(options)}`, 'options');
  }
  const backend = options?.backend ?? 'ts';
  if (backend !== 'ts' && backend !== 'webgpu') {
    throw new ValueError(`backend: expected "ts" or "webgpu", got ${describe(backend)}`, 'backend');
  }
  const { nq, nk, bs } = r;
  if (bs && backend === 'ts') {
    for (const [name, t, blk] of [
      ['tiles.blockQ', bq, bs.blockQ],
      ['tiles.blockK', bk, bs.blockK],
    ] as const) {
      if (blk % t !== 0) {
        throw new ValueError(
          `${name}: expected a divisor of the block-sparse block ${blk} (the ts kernel's tiles may not straddle mask blocks), got ${t}`,
          name,
        );
      }
    }
  }
  const ntq = Math.ceil(nq / bq);
  const ntk = Math.ceil(nk / bk);
  let outsideBand = 0;
  for (let q0 = 0, qt = 0; q0 < nq; q0 += bq, qt++) {
    const rows = Math.min(bq, nq - q0);
    const [loFirst, hiFirst] = keyRange(r, q0, nq, nk);
    const [loLast, hiLast] = keyRange(r, q0 + rows - 1, nq, nk);
    // skeleton cpu/fa2.ts forEachQTile (WGSL tileLoop's range is the same).
    const tFirst = Math.floor(Math.max(0, loFirst) / bk);
    const tEnd = Math.max(tFirst, Math.ceil(Math.min(nk, hiLast) / bk));
    for (let t = tFirst; t < tEnd; t++) {
      const k0 = t * bk;
      const k1 = Math.min(k0 + bk, nk);
      if (hiLast <= k0 || loFirst >= k1) continue;
      let full = loLast <= k0 && hiFirst >= (backend === 'ts' ? k1 : k0 + bk);
      if (bs) {
        // ts: one block holds the whole tile. webgpu: the summary of the blocks it covers.
        const qb0 = Math.floor(q0 / bs.blockQ);
        const kb0 = Math.floor(k0 / bs.blockK);
        const qb1 = backend === 'ts' ? qb0 : Math.floor((q0 + rows - 1) / bs.blockQ);
        const kb1 = backend === 'ts' ? kb0 : Math.floor((k1 - 1) / bs.blockK);
        let kept = 0;
        let covered = 0;
        for (let qb = qb0; qb <= qb1; qb++) {
          for (let kb = kb0; kb <= kb1; kb++) {
            covered++;
            if (bs.mask[qb * bs.nbk + kb] !== 0) kept++;
          }
        }
        if (kept === 0) continue;
        full = full && kept === covered;
      }
      visit(qt, t, full, k1 - k0);
    }
    outsideBand += ntk - (tEnd - tFirst);
  }
  return { ntq, ntk, outsideBand };
}

/**
 * Counts the (blockQ x blockK) tiles of one (batch, head) that the skeleton's FA2 forward
 * skips, runs masked and runs mask-free (see the module comment for whose rules). O(tiles of
 * the band), no per-element work. ValueError naming the argument for bad sizes; with
 * backend 'ts' and block sparsity the tiles must divide the mask blocks (as the TS kernel
 * requires).
 */
export function tileCounts(
  problem: TileCountProblem,
  tiles: TileShape,
  options: TileCountOptions = {},
): TileCounts {
  let partial = 0;
  let full = 0;
  let keyRowsLoaded = 0;
  const { ntq, ntk, outsideBand } = walk(problem, tiles, options, (_qt, _kt, isFull, cols) => {
    if (isFull) full++;
    else partial++;
    keyRowsLoaded += cols;
  });
  const total = ntq * ntk;
  return { total, skipped: total - partial - full, outsideBand, partial, full, keyRowsLoaded };
}

/**
 * The class of every tile, row-major [ceil(Nq / blockQ), ceil(Nk / blockK)]: TILE_SKIPPED,
 * TILE_PARTIAL or TILE_FULL, by the same rules as tileCounts. Holds one byte per tile (never
 * per element); for inspecting small problems and plotting tile maps.
 */
export function tileClasses(
  problem: TileCountProblem,
  tiles: TileShape,
  options: TileCountOptions = {},
): Uint8Array {
  const { nq, nk } = resolve(problem);
  const bq = int(tiles?.blockQ, 'tiles.blockQ', 1);
  const bk = int(tiles?.blockK, 'tiles.blockK', 1);
  const ntk = Math.ceil(nk / bk);
  const out = new Uint8Array(Math.ceil(nq / bq) * ntk);
  walk(problem, tiles, options, (qt, kt, full) => {
    out[qt * ntk + kt] = full ? TILE_FULL : TILE_PARTIAL;
  });
  return out;
}
