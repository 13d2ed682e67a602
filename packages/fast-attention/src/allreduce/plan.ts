import { describe, ValueError } from '@attnkit/tensor';

/**
 * FastAttention's tiling-AllReduce, planned (pure: no worker, no device). Tensor parallelism
 * over P devices: device p owns a contiguous range of query heads — whole GQA groups, so the
 * K/V heads it reads are its own — computes their attention and its slice of the output
 * projection, O_p W_o[p rows], and the P partial outputs are summed row tile by row tile.
 *
 * The reduction is a reduce-scatter + all-gather, not a ring. Tile t is reduced by device
 * t mod P, which reads the P partials of that tile once and writes the sum into the one output
 * every device and the caller share; the all-gather is that shared output itself. A ring
 * all-reduce cuts each tile into P chunks passed P - 1 hops to be summed and P - 1 more to be
 * broadcast: it pays off on point-to-point links where every link carries a chunk at every step,
 * but in one address space it only adds 2 (P - 1) dependent steps per tile (each a wait) while
 * moving the same bytes, and it would cut the overlap unit (one row tile) P ways. Round-robin
 * owners keep the reduce work even (every tile has the same rows x dModel sums; the compute of a
 * tile is split by heads, so it is the same on every device whatever the mask).
 */

/** The query heads (and their kv heads) one device computes. */
export interface HeadShard {
  device: number;
  /** Query heads [headStart, headEnd). */
  headStart: number;
  headEnd: number;
  /** KV heads [kvHeadStart, kvHeadEnd): the GQA groups of those query heads, whole. */
  kvHeadStart: number;
  kvHeadEnd: number;
}

/** Query rows [rowStart, rowEnd) of batch entry `batch`: one unit of compute and of reduction. */
export interface RowTile {
  index: number;
  batch: number;
  rowStart: number;
  rowEnd: number;
  /** The device that sums this tile's P partials into the output. */
  owner: number;
}

export interface AllReduceProblem {
  batch: number;
  /** Query heads. */
  hq: number;
  /** KV heads (hq a multiple of hkv; hkv = hq without GQA). */
  hkv: number;
  /** Query rows per batch entry. */
  seqQ: number;
  /** Devices (workers), 1..hkv. */
  devices: number;
  /** Query rows per tile (default 64, at most seqQ). */
  tileRows?: number | undefined;
  /**
   * Partial-tile buffers per device (default 4): device p may compute tile t once tile t - slots
   * has been reduced. With overlap off every tile needs its own (slots = tiles).
   */
  slots?: number | undefined;
  /** Reduce while computing (default true); false: all tiles computed, then all reduced. */
  overlap?: boolean | undefined;
}

export interface AllReducePlan {
  devices: number;
  /** Query heads per GQA group (hq / hkv). */
  groupSize: number;
  shards: HeadShard[];
  tileRows: number;
  tiles: RowTile[];
  /** Partial-tile buffers per device, min(slots, tiles); all tiles with overlap off. */
  slots: number;
  overlap: boolean;
}

export const DEFAULT_TILE_ROWS = 64;
export const DEFAULT_SLOTS = 4;

function positiveInt(value: unknown, name: string, what = 'a positive integer'): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new ValueError(`${name}: expected ${what}, got ${describe(value)}`, name);
  }
  return value;
}

/**
 * Splits the hkv GQA groups (hq / hkv query heads each) over `devices` devices in contiguous
 * ranges, the first hkv mod P devices taking one group more: a group never straddles two
 * devices (its K/V heads would be read, and held, twice), so P may not exceed hkv.
 */
export function planHeadShards(hq: number, hkv: number, devices: number): HeadShard[] {
  positiveInt(hq, 'hq');
  positiveInt(hkv, 'hkv');
  if (hq % hkv !== 0) {
    throw new ValueError(
      `hkv: expected a divisor of hq = ${hq} (GQA groups of equal size), got ${hkv}`,
      'hkv',
    );
  }
  positiveInt(devices, 'devices', 'an integer >= 1');
  if (devices > hkv) {
    throw new ValueError(
      `devices: expected at most ${hkv} (one whole GQA group of ${hq / hkv} query head${hq === hkv ? '' : 's'} per device at least; hq = ${hq}, hkv = ${hkv}), got ${devices}`,
      'devices',
    );
  }
  const group = hq / hkv;
  const base = Math.floor(hkv / devices);
  const extra = hkv % devices;
  const shards: HeadShard[] = [];
  let kv = 0;
  for (let p = 0; p < devices; p++) {
    const n = base + (p < extra ? 1 : 0);
    shards.push({
      device: p,
      headStart: kv * group,
      headEnd: (kv + n) * group,
      kvHeadStart: kv,
      kvHeadEnd: kv + n,
    });
    kv += n;
  }
  return shards;
}

/** Row tiles of tileRows query rows per batch entry (the last of each ragged), owners round-robin. */
export function planRowTiles(
  batch: number,
  seqQ: number,
  tileRows: number,
  devices: number,
): RowTile[] {
  const tiles: RowTile[] = [];
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < seqQ; r += tileRows) {
      const index = tiles.length;
      tiles.push({
        index,
        batch: b,
        rowStart: r,
        rowEnd: Math.min(seqQ, r + tileRows),
        owner: index % devices,
      });
    }
  }
  return tiles;
}

/** The whole plan: head shards, row tiles and their owners, partial buffers. ValueError naming the field. */
export function planTiledAllReduce(problem: AllReduceProblem): AllReducePlan {
  if (problem === null || typeof problem !== 'object') {
    throw new ValueError(`problem: expected an object, got ${describe(problem)}`, 'problem');
  }
  const batch = positiveInt(problem.batch, 'batch');
  const seqQ = positiveInt(problem.seqQ, 'seqQ');
  const shards = planHeadShards(problem.hq, problem.hkv, problem.devices);
  const tileRows = Math.min(
    seqQ,
    positiveInt(problem.tileRows ?? DEFAULT_TILE_ROWS, 'tileRows', 'a positive integer'),
  );
  const overlap = problem.overlap ?? true;
  if (typeof overlap !== 'boolean') {
    throw new ValueError(`overlap: expected a boolean, got ${describe(overlap)}`, 'overlap');
  }
  const slotsWanted = positiveInt(problem.slots ?? DEFAULT_SLOTS, 'slots');
  const tiles = planRowTiles(batch, seqQ, tileRows, problem.devices);
  return {
    devices: problem.devices,
    groupSize: problem.hq / problem.hkv,
    shards,
    tileRows,
    tiles,
    slots: overlap ? Math.min(slotsWanted, tiles.length) : tiles.length,
    overlap,
  };
}

/**
 * The keys a causal row tile reads: query row i sees key j iff j <= i + (Nk - Nq) (KERNELS.md,
 * bottom-right aligned), so rows [rowStart, rowEnd) need keys [0, rowEnd + Nk - Nq) (clamped
 * to [0, Nk]); with that prefix as the tile's own key sequence, the same bottom-right rule on
 * the tile (seqK - seqQ = rowStart + Nk - Nq) is the original mask. Non-causal: all Nk keys.
 */
export function tileKeyLength(
  tile: Pick<RowTile, 'rowStart' | 'rowEnd'>,
  seqQ: number,
  seqK: number,
  causal: boolean,
): number {
  if (!causal) return seqK;
  return Math.max(0, Math.min(seqK, tile.rowEnd + seqK - seqQ));
}
