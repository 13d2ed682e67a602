import type { AttentionProblem } from '@attnkit/attention';
import { describe, ValueError } from '@attnkit/tensor';
import { planDecodePartition } from '../cpu/partition.js';
import type { Params } from './params.js';

/**
 * Host-side tables the WGSL kernels read (pure: no device). `aux` is one u32 array:
 * per batch entry (startQ, startK, nq, nk), then a per-tile summary of the block-sparse mask for
 * the kernel's tiling (0: every block the tile touches is dropped, so the tile is skipped;
 * 1: mixed, checked per element; 2: all kept, the mask-free path), then the mask itself, one u32
 * per block. Tiles of the WGSL kernels need not divide the mask's blocks. A mask mod's block
 * mask keeps 0 / 1 / 2 per block (no, some, all pairs pass): there a tile takes the mask-free
 * path only when all its blocks are 2, and its elements in blocks marked 1 run the mod.
 */

export interface KernelTiling {
  /** Query rows per tile and keys per tile of this kernel. */
  tileQ: number;
  tileK: number;
}

export interface AuxTables {
  aux: Uint32Array;
  tsOff: number;
  bsOff: number;
  ntq: number;
  ntk: number;
}

export function buildAux(p: AttentionProblem, tiling: KernelTiling): AuxTables {
  const B = p.batch;
  const bs = p.blockSparse;
  const ntq = Math.max(1, Math.ceil(p.maxSeqQ / tiling.tileQ));
  const ntk = Math.max(1, Math.ceil(p.maxSeqK / tiling.tileK));
  const perSlice = bs ? bs.nbq * bs.nbk : 0;
  const slices = bs ? bs.mask.length / perSlice : 0;
  const tsOff = 4 * B;
  const bsOff = tsOff + slices * ntq * ntk;
  const aux = new Uint32Array(Math.max(1, bsOff + slices * perSlice));
  for (let b = 0; b < B; b++) {
    aux[4 * b] = p.startQ[b]!;
    aux[4 * b + 1] = p.startK[b]!;
    aux[4 * b + 2] = p.seqQ[b]!;
    aux[4 * b + 3] = p.seqK[b]!;
  }
  if (!bs) return { aux, tsOff, bsOff, ntq, ntk };
  for (let i = 0; i < bs.mask.length; i++) aux[bsOff + i] = bs.mask[i]!;
  const fullValue = p.maskMod ? 2 : 1;
  for (let s = 0; s < slices; s++) {
    for (let qt = 0; qt < ntq; qt++) {
      const qb0 = Math.floor((qt * tiling.tileQ) / bs.blockQ);
      const qb1 = Math.floor((Math.min((qt + 1) * tiling.tileQ, p.maxSeqQ) - 1) / bs.blockQ);
      for (let kt = 0; kt < ntk; kt++) {
        const kb0 = Math.floor((kt * tiling.tileK) / bs.blockK);
        const kb1 = Math.floor((Math.min((kt + 1) * tiling.tileK, p.maxSeqK) - 1) / bs.blockK);
        let kept = 0;
        let full = 0;
        let total = 0;
        for (let qb = qb0; qb <= qb1; qb++) {
          for (let kb = kb0; kb <= kb1; kb++) {
            const value = bs.mask[s * perSlice + qb * bs.nbk + kb]!;
            total++;
            kept += value !== 0 ? 1 : 0;
            full += value >= fullValue ? 1 : 0;
          }
        }
        aux[tsOff + (s * ntq + qt) * ntk + kt] = kept === 0 ? 0 : full === total ? 2 : 1;
      }
    }
  }
  return { aux, tsOff, bsOff, ntq, ntk };
}

interface Strides {
  batch: number;
  head: number;
  row: number;
}

function strides(p: AttentionProblem, heads: number, n: number, width: number): Strides {
  return p.layout === 'BHND'
    ? { batch: heads * n * width, head: n * width, row: width }
    : { batch: 0, head: width, row: heads * width };
}

/** The uniform values of one kernel launch (see params.ts for their meaning). */
export function buildParams(p: AttentionProblem, tables: AuxTables): Params {
  const q = strides(p, p.hq, p.maxSeqQ, p.d);
  // Paged K/V: pools of tokens [Hkv, W] (as THD, startK 0); rows through the block table.
  const pool = (width: number): Strides => ({ batch: 0, head: width, row: p.hkv * width });
  const k = p.paged ? pool(p.d) : strides(p, p.hkv, p.maxSeqK, p.d);
  const v = p.paged ? pool(p.dv) : strides(p, p.hkv, p.maxSeqK, p.dv);
  const o = strides(p, p.hq, p.maxSeqQ, p.dv);
  const bs = p.blockSparse;
  const perSlice = bs ? bs.nbq * bs.nbk : 1;
  return {
    group: p.group,
    d: p.d,
    dv: p.dv,
    qBatch: q.batch,
    qHead: q.head,
    qRow: q.row,
    kBatch: k.batch,
    kHead: k.head,
    kRow: k.row,
    vBatch: v.batch,
    vHead: v.head,
    vRow: v.row,
    oBatch: o.batch,
    oHead: o.head,
    oRow: o.row,
    lBatch: p.layout === 'BHND' ? p.hq * p.maxSeqQ : 0,
    lHead: p.layout === 'BHND' ? p.maxSeqQ : p.totalQ,
    left: p.left,
    right: p.right,
    bsQ: bs?.blockQ ?? 1,
    bsK: bs?.blockK ?? 1,
    nbq: bs?.nbq ?? 0,
    nbk: bs?.nbk ?? 0,
    bsBatch: bs ? bs.batchStride / perSlice : 0,
    bsHead: bs ? bs.headStride / perSlice : 0,
    bsOff: tables.bsOff,
    tsOff: tables.tsOff,
    ntq: tables.ntq,
    ntk: tables.ntk,
    negInf: 0xff800000,
    scale: p.scale,
    scaleLog2: p.scale * Math.LOG2E,
  };
}

/** A stream-K launch's tables (appended to the kernel's aux) and its uniform values. */
export interface StreamKTables {
  /** The kernel's aux tables followed by the plan's (see STREAMK_FIELDS in shaders.ts). */
  aux: Uint32Array;
  /** Uniform values of STREAMK_FIELDS. */
  values: Record<'splits' | 'skWorkers' | 'skRecords' | 'skUnits' | 'skCounts' | 'skHeads', number>;
  /** Workgroups to dispatch: the workers that hold a piece (at least 1; trailing ones are empty). */
  workers: number;
  /** The plan's units' tile counts, in unit order (b, h, query tile): for tests and checks. */
  unitTiles: number[];
}

/**
 * Stream-K's plan for the WGSL forward (KERNELS.md "LeanAttention"): the units are the
 * (b, h, query tile of `tileQ` rows) with rows, b outer, then h, then the tile; each unit's
 * key tiles are counted exactly as the forward's tileLoop visits them (the band's column
 * tiles [u32(loFirst) / BC, max(ceil(hiLast / BC), that)) with key_lo / key_hi of the tile's
 * first and last rows, shaders.ts rangeFns), so a piece's [begin, end) maps onto the
 * kernel's loop. planDecodePartition cuts them among `workers`; the result is appended to
 * `tables.aux`: worker offsets (dispatched workers + 1), piece records (b, h, query tile,
 * first key tile, end key tile, slot: the piece's index among its unit's pieces), the first
 * unit of each (b, h), and each unit's piece count. No block sparsity (its per-tile summary
 * would change the counts; the host declines it).
 */
export function buildStreamK(
  p: AttentionProblem,
  tables: AuxTables,
  tiling: KernelTiling,
  workers: number,
): StreamKTables {
  // Checked here as the planner would: the clamp below must not hide a bad count.
  if (!Number.isSafeInteger(workers) || workers < 1)
    throw new ValueError(
      `workers: expected a positive integer, got ${describe(workers)}`,
      'workers',
    );
  const { tileQ: br, tileK: bc } = tiling;
  const units: { tiles: number }[] = [];
  const unitTile: [b: number, h: number, qt: number, ctLo: number][] = [];
  const unitBase: number[] = [];
  for (let b = 0; b < p.batch; b++) {
    const nq = p.seqQ[b]!;
    const nk = p.seqK[b]!;
    const off = nk - nq;
    // shaders.ts key_lo / key_hi (spec.ts keyRange), in the kernel's integer arithmetic.
    const keyLo = (r: number) => (p.left < 0 ? 0 : Math.max(r + off - p.left, 0));
    const keyHi = (r: number) =>
      p.right < 0 ? nk : Math.min(Math.max(r + off + p.right + 1, 0), nk);
    for (let h = 0; h < p.hq; h++) {
      unitBase.push(units.length);
      for (let qt = 0; qt * br < nq; qt++) {
        const rFirst = qt * br;
        const rLast = Math.min(rFirst + br, nq) - 1;
        const loFirst = keyLo(rFirst);
        const hiLast = Math.max(keyHi(rLast), 0);
        const ctLo = Math.floor(loFirst / bc);
        const ctHi = Math.max(Math.ceil(hiLast / bc), ctLo);
        units.push({ tiles: ctHi - ctLo });
        unitTile.push([b, h, qt, ctLo]);
      }
    }
  }
  // More workers than tiles: the first `total` hold one tile each and the rest nothing, which
  // is the plan for `total` workers; planning that many keeps a huge count O(units).
  const total = units.reduce((n, u) => n + u.tiles, 0);
  const plan = planDecodePartition({
    kind: 'streamK',
    workers: Math.max(1, Math.min(workers, total)),
    units,
  });
  // A plan without tiles has one empty worker: one workgroup that does nothing is dispatched.
  let used = plan.length;
  while (used > 1 && plan[used - 1]!.length === 0) used--;
  const pieces = plan.slice(0, used).reduce((n, w) => n + w.length, 0);
  const base = tables.aux.length;
  const skWorkers = base;
  const skRecords = skWorkers + used + 1;
  const skUnits = skRecords + 6 * pieces;
  const skCounts = skUnits + unitBase.length;
  const aux = new Uint32Array(Math.max(1, skCounts + units.length));
  aux.set(tables.aux);
  const counts = new Uint32Array(units.length);
  let rec = 0;
  for (let w = 0; w < used; w++) {
    aux[skWorkers + w] = rec;
    for (const piece of plan[w]!) {
      const [b, h, qt, ctLo] = unitTile[piece.unit]!;
      const r = skRecords + 6 * rec++;
      aux[r] = b;
      aux[r + 1] = h;
      aux[r + 2] = qt;
      aux[r + 3] = ctLo + piece.begin;
      aux[r + 4] = ctLo + piece.end;
      // Pieces of a unit come in worker order (= key order): the slot is the count so far.
      aux[r + 5] = counts[piece.unit]!++;
    }
  }
  aux[skWorkers + used] = rec;
  aux.set(unitBase, skUnits);
  aux.set(counts, skCounts);
  let splits = 1;
  for (const c of counts) splits = Math.max(splits, c);
  return {
    aux,
    values: { splits, skWorkers, skRecords, skUnits, skCounts, skHeads: p.hq },
    workers: used,
    unitTiles: units.map((u) => u.tiles),
  };
}
