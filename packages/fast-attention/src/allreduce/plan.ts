import { describe, ValueError } from '@attnkit/tensor';

/**
 * FastAttention's tiling-AllReduce, planned (pure: no worker, no device). Tensor parallelism
 * over P devices: device p owns a contiguous range of query heads — whole GQA groups, so the
 * K/V heads it reads are its own — computes their attention and its slice of the output
 * projection, O_p W_o[p rows], and the P partial outputs are summed row tile by row tile.
 *
 * The reduction is a reduce-scatter + all-gather, not a ring. Every row tile's columns are cut
 * into P contiguous chunks and device p sums chunk p of every tile: it reads the P partials of
 * its chunk once and writes the sum into the one output every device and the caller share,
 * which is the all-gather. All P devices work on each tile at once, so a tile is reduced in
 * rows x dModel / P sums per device whatever P (a tile owned by one device would take P x that
 * on one thread, and with few partial buffers the devices would wait for it). A ring all-reduce
 * passes the same chunks P - 1 hops to be summed and P - 1 more to be broadcast: it pays off on
 * point-to-point links where every link carries a chunk at every step, but in one address space
 * it only adds 2 (P - 1) dependent steps (each a wait) per tile while moving the same bytes.
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
}

/** Output columns [start, end): the chunk of every row tile one device sums. */
export interface ColumnChunk {
  device: number;
  start: number;
  end: number;
}

export interface AllReduceProblem {
  batch: number;
  /** Query heads. */
  hq: number;
  /** KV heads (hq a multiple of hkv; hkv = hq without GQA). */
  hkv: number;
  /** Query rows per batch entry. */
  seqQ: number;
  /** Output columns (W_o's). */
  dModel: number;
  /** Devices (workers), 1..hkv. */
  devices: number;
  /** Query rows per tile (default 64, at most seqQ). */
  tileRows?: number | undefined;
  /**
   * Partial-tile buffers per device (default 4): device p may compute tile t once tile t - slots
   * has been reduced (every chunk). With overlap off every tile needs its own (slots = tiles).
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
  /** chunks[p]: the columns device p reduces. */
  chunks: ColumnChunk[];
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

/** Row tiles of tileRows query rows per batch entry (the last of each ragged). */
export function planRowTiles(batch: number, seqQ: number, tileRows: number): RowTile[] {
  const tiles: RowTile[] = [];
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < seqQ; r += tileRows) {
      tiles.push({
        index: tiles.length,
        batch: b,
        rowStart: r,
        rowEnd: Math.min(seqQ, r + tileRows),
      });
    }
  }
  return tiles;
}

/**
 * dModel columns in P contiguous chunks, the first dModel mod P one column wider (a device
 * whose chunk is empty, when dModel < P, reduces nothing).
 */
export function planColumnChunks(dModel: number, devices: number): ColumnChunk[] {
  const base = Math.floor(dModel / devices);
  const extra = dModel % devices;
  const chunks: ColumnChunk[] = [];
  let c = 0;
  for (let p = 0; p < devices; p++) {
    const n = base + (p < extra ? 1 : 0);
    chunks.push({ device: p, start: c, end: c + n });
    c += n;
  }
  return chunks;
}

/** The whole plan: head shards, row tiles, column chunks, partial buffers. ValueError naming the field. */
export function planTiledAllReduce(problem: AllReduceProblem): AllReducePlan {
  if (problem === null || typeof problem !== 'object') {
    throw new ValueError(`problem: expected an object, got ${describe(problem)}`, 'problem');
  }
  const batch = positiveInt(problem.batch, 'batch');
  const seqQ = positiveInt(problem.seqQ, 'seqQ');
  const dModel = positiveInt(problem.dModel, 'dModel');
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
  const tiles = planRowTiles(batch, seqQ, tileRows);
  return {
    devices: problem.devices,
    groupSize: problem.hq / problem.hkv,
    shards,
    tileRows,
    tiles,
    chunks: planColumnChunks(dModel, problem.devices),
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
