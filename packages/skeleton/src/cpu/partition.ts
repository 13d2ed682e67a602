import { describe, ValueError } from '@attnkit/tensor';
import { splitKeyTiles } from './schedule.js';

/**
 * The decode partition planner (KERNELS.md "LeanAttention"): which worker reduces which key
 * tiles of which work unit. A unit is one (batch, head or head group, query tile) whose key
 * tiles must all be reduced into one online-softmax state; a worker is one workgroup / thread.
 * Pure (no tensors, no device): the same plan drives the TS forward's 'streamK' schedule and
 * can drive a device kernel's launch, and its guarantees are unit-tested on their own.
 */

/** The three partitionings of the LeanAttention paper's comparison. */
export type DecodePartitionKind = 'fa2' | 'splitK' | 'streamK';

/** One work unit: its number of key tiles (0 for an empty sequence or a fully masked band). */
export interface DecodeUnit {
  readonly tiles: number;
}

/** Key tiles [begin, end) (relative to the unit's first tile) of unit `unit`; never empty. */
export interface DecodePiece {
  readonly unit: number;
  readonly begin: number;
  readonly end: number;
}

export interface DecodePartitionRequest {
  kind: DecodePartitionKind;
  /** The units, in order; each unit's tiles are numbered 0..tiles-1. */
  units: readonly DecodeUnit[];
  /**
   * streamK: the number of concurrent workers (required; e.g. the device's resident workgroups
   * or the CPU's threads). fa2 and splitK launch as many workers as their rule says and do not
   * read it (a positive integer if given, so one request can be replayed with each kind).
   */
  workers?: number;
  /** splitK: key ranges per unit (required there, ignored otherwise). */
  splits?: number;
}

function bad(name: string, expected: string, got: unknown): never {
  throw new ValueError(`${name}: expected ${expected}, got ${describe(got)}`, name);
}

function positiveInt(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1)
    bad(name, 'a positive integer', value);
  return value;
}

/**
 * Plans the decode partition; returns, for each worker in launch order, its pieces in the order
 * it reduces them. Guarantees (tested): every key tile of every unit is in exactly one piece;
 * the pieces of a unit, read in worker order, are contiguous and in key order (so a fix-up that
 * merges them in that order reduces the unit's tiles in order); pieces are never empty (a unit
 * with no tiles has none, and a worker with nothing to do has an empty list).
 *
 * - fa2: one worker per unit (FA2 / FlashAttention's one workgroup per (b, h, Q tile)): worker u
 *   holds [{ unit: u, begin: 0, end: tiles }]. Load is the unit's length: one long sequence
 *   leaves the other workers idle.
 * - splitK (FlashDecoding): each unit's tiles cut into `splits` contiguous ranges whose sizes
 *   differ by at most one (splitKeyTiles); worker u * splits + s holds range s of unit u.
 *   Balanced per unit, not across units of different lengths.
 * - streamK (LeanAttention): the tiles of all units, concatenated in unit order, cut into
 *   `workers` contiguous ranges whose sizes differ by at most one (the first total mod workers
 *   ranges hold one more); a range crossing unit boundaries is split into one piece per unit it
 *   touches, and more workers than tiles leaves the trailing workers empty. Balanced across
 *   units to one tile whatever their lengths; a unit cut into several pieces needs a fix-up
 *   merge of their partial (m, l, acc) (combinePartials).
 *
 * Time and memory O(units + workers) for fa2 and streamK, O(units x splits) for splitK; never
 * per tile, so tile counts up to 2^53 - 1 in total plan instantly.
 * ValueError naming `request`, `kind`, `units`, `units[i].tiles`, `workers` or `splits`.
 */
export function planDecodePartition(request: DecodePartitionRequest): DecodePiece[][] {
  if (request === null || typeof request !== 'object')
    bad('request', '{ kind, units, workers?, splits? }', request);
  const { kind, units } = request;
  if (kind !== 'fa2' && kind !== 'splitK' && kind !== 'streamK')
    bad('kind', '"fa2", "splitK" or "streamK"', kind);
  if (!Array.isArray(units)) bad('units', 'an array of { tiles }', units);
  let total = 0;
  for (let i = 0; i < units.length; i++) {
    const u: unknown = units[i];
    const tiles = u !== null && typeof u === 'object' ? (u as DecodeUnit).tiles : undefined;
    if (typeof tiles !== 'number' || !Number.isSafeInteger(tiles) || tiles < 0)
      bad(
        `units[${i}].tiles`,
        'a non-negative integer',
        u === null || typeof u !== 'object' ? u : tiles,
      );
    total += tiles;
  }
  if (!Number.isSafeInteger(total))
    bad('units', `a total number of key tiles <= ${Number.MAX_SAFE_INTEGER}`, total);
  if (request.workers !== undefined || kind === 'streamK') positiveInt(request.workers, 'workers');

  if (kind === 'fa2') {
    return units.map((u, unit) => (u.tiles > 0 ? [{ unit, begin: 0, end: u.tiles }] : []));
  }
  if (kind === 'splitK') {
    const splits = positiveInt(request.splits, 'splits');
    const out: DecodePiece[][] = [];
    units.forEach((u, unit) => {
      for (const [begin, end] of splitKeyTiles(0, u.tiles - 1, splits))
        out.push(end > begin ? [{ unit, begin, end }] : []);
    });
    return out;
  }

  const workers = request.workers!;
  const base = Math.floor(total / workers);
  const extra = total % workers;
  const out: DecodePiece[][] = [];
  // A cursor over the concatenated tiles: unit `unit` starts at global tile `start`.
  let unit = 0;
  let start = 0;
  for (let w = 0; w < workers; w++) {
    // Worker w's global range [g0, g1): w * base + min(w, extra), sizes base + (w < extra).
    const g0 = w * base + Math.min(w, extra);
    const g1 = g0 + base + (w < extra ? 1 : 0);
    const pieces: DecodePiece[] = [];
    let pos = g0;
    while (pos < g1) {
      // Skip finished units and zero-tile ones (they own no global tile).
      while (start + units[unit]!.tiles <= pos) {
        start += units[unit]!.tiles;
        unit++;
      }
      const end = Math.min(g1, start + units[unit]!.tiles);
      pieces.push({ unit, begin: pos - start, end: end - start });
      pos = end;
    }
    out.push(pieces);
  }
  return out;
}

/**
 * The fix-up's view of a plan: for each of `unitCount` units, its pieces in worker order
 * (which is key order, see planDecodePartition). A unit without pieces (no tiles) gets [].
 * ValueError naming `plan` for a piece whose unit is outside [0, unitCount).
 */
export function piecesByUnit(
  plan: readonly (readonly DecodePiece[])[],
  unitCount: number,
): DecodePiece[][] {
  const out: DecodePiece[][] = Array.from({ length: unitCount }, () => []);
  for (const pieces of plan) {
    for (const piece of pieces) {
      const u = piece.unit;
      if (!Number.isInteger(u) || u < 0 || u >= unitCount)
        bad('plan', `pieces of units 0..${unitCount - 1}`, piece);
      out[u]!.push(piece);
    }
  }
  return out;
}
