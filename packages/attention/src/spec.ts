import {
  DeviceError,
  DTypeError,
  describe,
  formatShape,
  isFloatDType,
  ShapeError,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';
import { type MaskMod, type ResolvedMaskMod, resolveMaskMod } from './mods.js';

/**
 * The softmax-attention problem of KERNELS.md "Common", validated once and resolved into
 * plain numbers so every kernel (reference, TS, native, WGSL) addresses memory the same way.
 */

export type Layout = 'BHND' | 'THD';

/** Block-sparse FlashAttention: blocks whose mask entry is 0 are skipped entirely. */
export interface BlockSparseOptions {
  blockQ: number;
  blockK: number;
  /** u8/i32 (non-zero = keep) of shape [nbq, nbk] (shared), [Hq, nbq, nbk] or [B, Hq, nbq, nbk]. */
  mask: Tensor;
}

export interface AttentionOptions {
  /** Softmax scale; default 1/sqrt(D). */
  scale?: number;
  /** Bottom-right aligned causal mask: query i sees key j iff j <= i + (Nk - Nq). */
  causal?: boolean;
  /** Sliding window [left, right], -1 = unbounded. */
  window?: readonly [number, number];
  /** BHND (default) or THD (packed variable length, needs cuSeqlensQ/K). */
  layout?: Layout;
  cuSeqlensQ?: Int32Array | readonly number[];
  cuSeqlensK?: Int32Array | readonly number[];
  blockSparse?: BlockSparseOptions;
  /** A user mask on top of causal / window (FlexAttention's mask_mod); see mods.ts. */
  maskMod?: MaskMod;
  /**
   * Paged K/V (vLLM's PagedAttention block tables): k and v are page pools
   * [numPages, pageSize, Hkv, D] / [numPages, pageSize, Hkv, Dv] and sequence b's key t is row
   * t % pageSize of page blockTable[b * maxPages + floor(t / pageSize)]; Nk_b = lengths[b].
   * q is BHND [B, Hq, Nq, D] (layout THD is not taken with it). Causal / window are bottom-right
   * relative to lengths[b], as for varlen.
   */
  paged?: PagedOptions;
}

/** AttentionOptions.paged: the block tables of a paged K/V pool. */
export interface PagedOptions {
  /** Tokens per page: k.shape[1]. */
  pageSize: number;
  /** Row-major [B, maxPages]: page of each sequence's page slot; only the slots a length needs are read. */
  blockTable: Int32Array;
  /** [B]: keys of each sequence, each <= maxPages * pageSize. */
  lengths: Int32Array;
}

/** The resolved paged K/V (AttentionProblem.paged). */
export interface ResolvedPaged {
  pageSize: number;
  maxPages: number;
  numPages: number;
  /** [B, maxPages] row-major; entries of the slots lengths[b] needs are in [0, numPages). */
  blockTable: Int32Array;
}

export interface ResolvedBlockSparse {
  blockQ: number;
  blockK: number;
  nbq: number;
  nbk: number;
  /**
   * Row-major [B?, Hq?, nbq, nbk]: 0 = skip the block, non-zero = keep it. Derived from a
   * mask mod, 1 marks a block where only some pairs pass the mod and 2 one where all do.
   */
  mask: Uint8Array;
  batchStride: number;
  headStride: number;
}

export interface AttentionProblem {
  layout: Layout;
  batch: number;
  hq: number;
  hkv: number;
  /** Query heads per kv head (GQA group size). */
  group: number;
  d: number;
  dv: number;
  scale: number;
  causal: boolean;
  /** Effective window with causal folded in (right = 0 when causal); -1 = unbounded. */
  left: number;
  right: number;
  /** Sequence lengths per batch entry. */
  seqQ: Int32Array;
  seqK: Int32Array;
  /** Token offsets per batch entry (0 for BHND; cu_seqlens[b] for THD). */
  startQ: Int32Array;
  startK: Int32Array;
  totalQ: number;
  totalK: number;
  maxSeqQ: number;
  maxSeqK: number;
  /** Elements between consecutive tokens of one head. */
  qRow: number;
  kRow: number;
  vRow: number;
  oRow: number;
  blockSparse: ResolvedBlockSparse | undefined;
  /** The user mask (its block mask is `blockSparse`, values 0 / 1 / 2). */
  maskMod: ResolvedMaskMod | undefined;
  /**
   * Paged K/V (AttentionOptions.paged) or undefined. With it kBase(b, h) is the pool's token 0
   * of head h, kRow / vRow are Hkv D / Hkv Dv, and key j of sequence b lives at pool row
   * keyRow(p, b, j): every K/V row address goes through keyRow.
   */
  paged?: ResolvedPaged | undefined;
  /** Shapes of the outputs in this layout. */
  oShape: number[];
  lseShape: number[];
}

/** Element offset of token 0 of (batch b, query head h) in q (width d) or o (width dv). */
export function qBase(
  p: Pick<AttentionProblem, 'layout' | 'hq' | 'maxSeqQ' | 'startQ'>,
  b: number,
  h: number,
  width: number,
): number {
  return p.layout === 'BHND'
    ? (b * p.hq + h) * p.maxSeqQ * width
    : (p.startQ[b]! * p.hq + h) * width;
}

/**
 * Element offset of token 0 of (batch b, kv head h) in k (width d) or v (width dv); key j is at
 * kBase + keyRow(p, b, j) * kRow (vRow). Paged: token 0 of the pool, head h.
 */
export function kBase(p: AttentionProblem, b: number, h: number, width: number): number {
  if (p.paged) return h * width;
  return p.layout === 'BHND'
    ? (b * p.hkv + h) * p.maxSeqK * width
    : (p.startK[b]! * p.hkv + h) * width;
}

/**
 * The stored row of key j of sequence b, relative to kBase: j for contiguous K/V; paged, row
 * j % pageSize of page blockTable[b * maxPages + floor(j / pageSize)] of the pool.
 */
export function keyRow(p: Pick<AttentionProblem, 'paged'>, b: number, j: number): number {
  const pg = p.paged;
  if (!pg) return j;
  const slot = Math.floor(j / pg.pageSize);
  return pg.blockTable[b * pg.maxPages + slot]! * pg.pageSize + (j - slot * pg.pageSize);
}

/** Offset of LSE[b, h, 0]: BHND lse is [B, Hq, Nq]; THD lse is [Hq, totalQ] (as FlashAttention's varlen API). */
export function lseBase(p: AttentionProblem, b: number, h: number): number {
  return p.layout === 'BHND' ? (b * p.hq + h) * p.maxSeqQ : h * p.totalQ + p.startQ[b]!;
}

/**
 * Keys allowed for query row i of a sequence with nq queries and nk keys, from causal and
 * window alone: the half-open range [lo, hi). Block sparsity is applied on top of it.
 * An empty range (lo >= hi) is a fully masked row. Needs only the band (`left`, `right`), so
 * models without tensors (the I/O simulator) classify tiles with it too.
 */
export function keyRange(
  p: Pick<AttentionProblem, 'left' | 'right'>,
  i: number,
  nq: number,
  nk: number,
): [number, number] {
  const diag = i + nk - nq;
  const lo = p.left < 0 ? 0 : Math.max(0, diag - p.left);
  const hi = p.right < 0 ? nk : Math.min(nk, diag + p.right + 1);
  return [lo, hi];
}

/** Whether the block (qb, kb) of (batch b, query head h) is kept by the block-sparse mask. */
export function blockKept(
  p: AttentionProblem,
  b: number,
  h: number,
  qb: number,
  kb: number,
): boolean {
  const bs = p.blockSparse;
  if (!bs) return true;
  return bs.mask[b * bs.batchStride + h * bs.headStride + qb * bs.nbk + kb] !== 0;
}

/**
 * THE mask rule (KERNELS.md "Common" and FlexAttention's mask_mod): whether query i may attend
 * key j of sequence b, head h — the causal/window band, then block sparsity, then the user's
 * mask mod. Every kernel and the I/O simulator implement exactly this; tests compare them to it.
 */
export function allowed(p: AttentionProblem, b: number, h: number, i: number, j: number): boolean {
  const [lo, hi] = keyRange(p, i, p.seqQ[b]!, p.seqK[b]!);
  if (j < lo || j >= hi) return false;
  const bs = p.blockSparse;
  if (bs && !blockKept(p, b, h, Math.floor(i / bs.blockQ), Math.floor(j / bs.blockK))) return false;
  return !p.maskMod || p.maskMod.ts(b, h, i, j);
}

/**
 * The block mask of a mask mod (FlexAttention's create_block_mask): for each blockSize^2 block
 * of the longest sequences, 0 when no pair passes the mod, 2 when all do, 1 otherwise. Costs
 * one call of `mod.ts` per pair of [B?, H?, maxSeqQ, maxSeqK] (once per call, as FlexAttention).
 */
export function maskModBlockMask(
  mod: ResolvedMaskMod,
  batch: number,
  hq: number,
  maxSeqQ: number,
  maxSeqK: number,
): ResolvedBlockSparse {
  const bsz = mod.blockSize;
  const nbq = Math.ceil(maxSeqQ / bsz);
  const nbk = Math.ceil(maxSeqK / bsz);
  const nb = mod.perBatch ? batch : 1;
  const nh = mod.perHead ? hq : 1;
  const mask = new Uint8Array(nb * nh * nbq * nbk);
  for (let b = 0; b < nb; b++) {
    for (let h = 0; h < nh; h++) {
      const base = (b * nh + h) * nbq * nbk;
      for (let qb = 0; qb < nbq; qb++) {
        for (let kb = 0; kb < nbk; kb++) {
          let pass = 0;
          let total = 0;
          for (let i = qb * bsz; i < Math.min(maxSeqQ, (qb + 1) * bsz); i++) {
            for (let j = kb * bsz; j < Math.min(maxSeqK, (kb + 1) * bsz); j++) {
              total++;
              if (mod.ts(b, h, i, j)) pass++;
            }
          }
          mask[base + qb * nbk + kb] = pass === 0 ? 0 : pass === total ? 2 : 1;
        }
      }
    }
  }
  return {
    blockQ: bsz,
    blockK: bsz,
    nbq,
    nbk,
    mask,
    headStride: mod.perHead ? nbq * nbk : 0,
    batchStride: mod.perBatch ? nh * nbq * nbk : 0,
  };
}

function fail(Err: typeof ShapeError, argument: string, expected: string, got: unknown): never {
  throw new Err(
    `${argument}: expected ${expected}, got ${typeof got === 'string' ? got : describe(got)}`,
    argument,
  );
}

function checkTensor(t: unknown, name: string, rank: number): Tensor {
  const tt = t as Tensor;
  if (!tt || typeof tt !== 'object' || !Array.isArray(tt.shape) || typeof tt.dtype !== 'string') {
    fail(ShapeError, name, 'a Tensor', t);
  }
  if (tt.ndim !== rank) fail(ShapeError, name, `rank ${rank}`, `shape ${formatShape(tt.shape)}`);
  if (!isFloatDType(tt.dtype))
    fail(DTypeError, name, 'a float dtype (f32, f64, f16, bf16)', tt.dtype);
  return tt;
}

const INT32_MAX = 2 ** 31 - 1;

function checkCuSeqlens(v: unknown, name: string, total: number): Int32Array {
  if (v === undefined)
    fail(ValueError, name, `int32 offsets of length B+1 (required with layout THD)`, v);
  const arr = v as ArrayLike<number>;
  if (!(v instanceof Int32Array) && !Array.isArray(v))
    fail(ValueError, name, 'an Int32Array or number[]', v);
  if (arr.length < 2) fail(ValueError, name, 'at least 2 entries (B+1 with B >= 1)', v);
  // Checked before Int32Array.from, which would wrap 2**32 + 8 to 8 and truncate 2.5 to 2.
  for (let i = 0; i < arr.length; i++) {
    const x = arr[i];
    if (!Number.isInteger(x) || x! < 0 || x! > INT32_MAX) {
      fail(
        ValueError,
        name,
        `integer entries in [0, ${INT32_MAX}] (entry ${i} is ${describe(x)})`,
        v,
      );
    }
  }
  const out = Int32Array.from(arr);
  if (out[0] !== 0) fail(ValueError, name, 'first entry 0', v);
  for (let i = 1; i < arr.length; i++) {
    if (out[i]! < out[i - 1]!) {
      fail(ValueError, name, `non-decreasing offsets (entry ${i} is ${out[i]} < ${out[i - 1]})`, v);
    }
  }
  if (out[out.length - 1] !== total) {
    fail(
      ValueError,
      name,
      `last entry equal to the packed token count ${total}`,
      out[out.length - 1],
    );
  }
  return out;
}

/**
 * Validates q, k, v and options (KERNELS.md "Common") and resolves the problem. Throws a
 * ShapeError / DTypeError / ValueError / DeviceError naming the offending argument.
 */
export function resolveAttentionProblem(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions = {},
): AttentionProblem {
  if (options === null || typeof options !== 'object')
    fail(ValueError, 'options', 'an object', options);
  const layout = options.layout ?? 'BHND';
  if (layout !== 'BHND' && layout !== 'THD') fail(ValueError, 'layout', '"BHND" or "THD"', layout);
  if (options.paged !== undefined && layout !== 'BHND')
    fail(ValueError, 'layout', '"BHND" with paged K/V (q [B, Hq, Nq, D])', layout);
  const rank = layout === 'BHND' ? 4 : 3;
  checkTensor(q, 'q', rank);
  checkTensor(k, 'k', rank);
  checkTensor(v, 'v', rank);
  if (k.dtype !== q.dtype) fail(DTypeError, 'k', `dtype ${q.dtype} (same as q)`, k.dtype);
  if (v.dtype !== q.dtype) fail(DTypeError, 'v', `dtype ${q.dtype} (same as q)`, v.dtype);
  if (k.device !== q.device) fail(DeviceError, 'k', `device ${q.device} (same as q)`, k.device);
  if (v.device !== q.device) fail(DeviceError, 'v', `device ${q.device} (same as q)`, v.device);

  let batch: number;
  let hq: number;
  let hkv: number;
  let seqQ: Int32Array;
  let seqK: Int32Array;
  let startQ: Int32Array;
  let startK: Int32Array;
  let totalQ: number;
  let totalK: number;
  let paged: ResolvedPaged | undefined;
  const d = q.shape[rank - 1]!;
  const dv = v.shape[rank - 1]!;
  if (options.paged !== undefined) {
    if (options.cuSeqlensQ !== undefined || options.cuSeqlensK !== undefined)
      fail(
        ValueError,
        'paged',
        'no cu_seqlens beside it (lengths are paged.lengths)',
        'cu_seqlens',
      );
    const [B, Hq, Nq] = q.shape as [number, number, number, number];
    const r = resolvePaged(options.paged, k, v, B, d);
    paged = r.paged;
    batch = B;
    hq = Hq;
    hkv = k.shape[2]!;
    seqQ = new Int32Array(B).fill(Nq);
    seqK = r.lengths;
    startQ = new Int32Array(B);
    startK = new Int32Array(B);
    totalQ = B * Nq;
    totalK = paged.numPages * paged.pageSize;
  } else if (layout === 'BHND') {
    const [B, Hq, Nq] = q.shape as [number, number, number, number];
    const [Bk, Hkv, Nk, Dk] = k.shape as [number, number, number, number];
    if (Bk !== B || Dk !== d)
      fail(
        ShapeError,
        'k',
        `shape [${B}, Hkv, Nk, ${d}] (q is ${formatShape(q.shape)})`,
        `shape ${formatShape(k.shape)}`,
      );
    if (v.shape[0] !== B || v.shape[1] !== Hkv || v.shape[2] !== Nk) {
      fail(
        ShapeError,
        'v',
        `shape [${B}, ${Hkv}, ${Nk}, Dv] (k is ${formatShape(k.shape)})`,
        `shape ${formatShape(v.shape)}`,
      );
    }
    if (options.cuSeqlensQ !== undefined || options.cuSeqlensK !== undefined) {
      fail(
        ValueError,
        'cuSeqlensQ',
        'no cu_seqlens with layout BHND (use layout "THD")',
        'cu_seqlens',
      );
    }
    batch = B;
    hq = Hq;
    hkv = Hkv;
    seqQ = new Int32Array(B).fill(Nq);
    seqK = new Int32Array(B).fill(Nk);
    startQ = new Int32Array(B);
    startK = new Int32Array(B);
    totalQ = B * Nq;
    totalK = B * Nk;
  } else {
    const [TQ, Hq] = q.shape as [number, number, number];
    const [TK, Hkv, Dk] = k.shape as [number, number, number];
    if (Dk !== d)
      fail(ShapeError, 'k', `last dim ${d} (q's head dim)`, `shape ${formatShape(k.shape)}`);
    if (v.shape[0] !== TK || v.shape[1] !== Hkv) {
      fail(
        ShapeError,
        'v',
        `shape [${TK}, ${Hkv}, Dv] (k is ${formatShape(k.shape)})`,
        `shape ${formatShape(v.shape)}`,
      );
    }
    const cq = checkCuSeqlens(options.cuSeqlensQ, 'cuSeqlensQ', TQ);
    const ck = checkCuSeqlens(
      options.cuSeqlensK ?? options.cuSeqlensQ,
      options.cuSeqlensK ? 'cuSeqlensK' : 'cuSeqlensQ',
      TK,
    );
    if (ck.length !== cq.length)
      fail(ValueError, 'cuSeqlensK', `length ${cq.length} (as cuSeqlensQ)`, ck.length);
    batch = cq.length - 1;
    hq = Hq;
    hkv = Hkv;
    seqQ = new Int32Array(batch);
    seqK = new Int32Array(batch);
    for (let b = 0; b < batch; b++) {
      seqQ[b] = cq[b + 1]! - cq[b]!;
      seqK[b] = ck[b + 1]! - ck[b]!;
    }
    startQ = cq.subarray(0, batch);
    startK = ck.subarray(0, batch);
    totalQ = TQ;
    totalK = TK;
  }
  if (hkv < 1 || hq % hkv !== 0)
    fail(ShapeError, 'k', `a head count dividing Hq = ${hq} (GQA/MQA)`, `Hkv = ${hkv}`);
  if (d < 1) fail(ShapeError, 'q', 'head dim D >= 1', d);
  if (dv < 1) fail(ShapeError, 'v', 'head dim Dv >= 1', dv);

  const scale = options.scale ?? 1 / Math.sqrt(d);
  if (typeof scale !== 'number' || !Number.isFinite(scale))
    fail(ValueError, 'scale', 'a finite number', scale);
  const causal = options.causal ?? false;
  if (typeof causal !== 'boolean') fail(ValueError, 'causal', 'a boolean', causal);
  const window = options.window ?? [-1, -1];
  if (
    !Array.isArray(window) ||
    window.length !== 2 ||
    !window.every((w) => Number.isInteger(w) && w >= -1)
  ) {
    fail(ValueError, 'window', '[left, right] integers >= -1 (-1 = unbounded)', window);
  }
  let [left, right] = window as [number, number];
  // FlashAttention folds causal into the window: right bound 0 relative to the diagonal.
  if (causal) right = right < 0 ? 0 : Math.min(right, 0);

  const maxSeqQ = Math.max(0, ...seqQ);
  const maxSeqK = Math.max(0, ...seqK);
  const maskMod = resolveMaskMod(options.maskMod);
  if (maskMod && options.blockSparse !== undefined) {
    fail(
      ValueError,
      'maskMod',
      'no blockSparse beside it (fold the block mask into the mask mod)',
      'both maskMod and blockSparse',
    );
  }
  const blockSparse = maskMod
    ? maskModBlockMask(maskMod, batch, hq, maxSeqQ, maxSeqK)
    : options.blockSparse
      ? resolveBlockSparse(options.blockSparse, batch, hq, maxSeqQ, maxSeqK)
      : undefined;

  const oShape = layout === 'BHND' ? [batch, hq, maxSeqQ, dv] : [totalQ, hq, dv];
  const lseShape = layout === 'BHND' ? [batch, hq, maxSeqQ] : [hq, totalQ];
  return {
    layout,
    batch,
    hq,
    hkv,
    group: hq / hkv,
    d,
    dv,
    scale,
    causal,
    left,
    right,
    seqQ,
    seqK,
    startQ,
    startK,
    totalQ,
    totalK,
    maxSeqQ,
    maxSeqK,
    qRow: layout === 'BHND' ? d : hq * d,
    kRow: layout === 'BHND' && !paged ? d : hkv * d,
    vRow: layout === 'BHND' && !paged ? dv : hkv * dv,
    oRow: layout === 'BHND' ? dv : hq * dv,
    blockSparse,
    maskMod,
    paged,
    oShape,
    lseShape,
  };
}

/** An Int32Array (or integer number[]) option of paged, as an Int32Array; ValueError naming it. */
function int32Option(v: unknown, name: string, length: number, what: string): Int32Array {
  if (!(v instanceof Int32Array) && !Array.isArray(v))
    fail(ValueError, name, `an Int32Array ${what}`, v);
  const arr = v as ArrayLike<number>;
  if (arr.length !== length)
    fail(ValueError, name, `length ${length} (${what})`, `length ${arr.length}`);
  for (let i = 0; i < arr.length; i++) {
    const x = arr[i];
    if (!Number.isInteger(x) || Math.abs(x!) > INT32_MAX)
      fail(ValueError, name, `int32 entries (entry ${i} is ${describe(x)})`, v);
  }
  return v instanceof Int32Array ? v : Int32Array.from(arr);
}

/**
 * Validates AttentionOptions.paged against the pools k [numPages, pageSize, Hkv, D] and
 * v [numPages, pageSize, Hkv, Dv] and q's batch B: ShapeError naming k / v, ValueError naming
 * paged, paged.pageSize, paged.blockTable, paged.lengths.
 */
function resolvePaged(
  opt: unknown,
  k: Tensor,
  v: Tensor,
  batch: number,
  d: number,
): { paged: ResolvedPaged; lengths: Int32Array } {
  if (opt === null || typeof opt !== 'object' || Array.isArray(opt))
    fail(ValueError, 'paged', '{ pageSize, blockTable, lengths }', opt);
  const o = opt as PagedOptions;
  const ps = o.pageSize;
  if (typeof ps !== 'number' || !Number.isSafeInteger(ps) || ps < 1)
    fail(ValueError, 'paged.pageSize', 'a positive integer', ps);
  const [numPages, kps, , dk] = k.shape as [number, number, number, number];
  if (kps !== ps || dk !== d)
    fail(
      ShapeError,
      'k',
      `a page pool [numPages, pageSize ${ps}, Hkv, D ${d}] with paged K/V`,
      `shape ${formatShape(k.shape)}`,
    );
  if (numPages < 1)
    fail(ShapeError, 'k', 'a pool of at least one page', `shape ${formatShape(k.shape)}`);
  if (v.shape[0] !== numPages || v.shape[1] !== ps || v.shape[2] !== k.shape[2])
    fail(
      ShapeError,
      'v',
      `shape [${numPages}, ${ps}, ${k.shape[2]}, Dv] (k is ${formatShape(k.shape)})`,
      `shape ${formatShape(v.shape)}`,
    );
  const lengths = int32Option(o.lengths, 'paged.lengths', batch, 'one key count per batch entry');
  const bt = o.blockTable;
  if (!(bt instanceof Int32Array) && !Array.isArray(bt))
    fail(ValueError, 'paged.blockTable', 'an Int32Array [B, maxPages]', bt);
  const n = (bt as ArrayLike<number>).length;
  if (batch > 0 && n % batch !== 0)
    fail(
      ValueError,
      'paged.blockTable',
      `a length that is a multiple of B = ${batch} ([B, maxPages] row-major)`,
      `length ${n}`,
    );
  const maxPages = batch > 0 ? n / batch : 0;
  const table = int32Option(bt, 'paged.blockTable', n, '[B, maxPages] row-major');
  for (let b = 0; b < batch; b++) {
    const len = lengths[b]!;
    if (len < 0 || len > maxPages * ps)
      fail(
        ValueError,
        'paged.lengths',
        `entries in [0, maxPages x pageSize = ${maxPages * ps}] (entry ${b} is ${len})`,
        lengths,
      );
    for (let slot = 0, need = Math.ceil(len / ps); slot < need; slot++) {
      const page = table[b * maxPages + slot]!;
      if (page < 0 || page >= numPages)
        fail(
          ValueError,
          'paged.blockTable',
          `pages in [0, ${numPages}) (the pool's pages) for every page slot a length needs (batch ${b}, slot ${slot} holds ${page})`,
          `page ${page}`,
        );
    }
  }
  return { paged: { pageSize: ps, maxPages, numPages, blockTable: table }, lengths };
}

function resolveBlockSparse(
  bs: BlockSparseOptions,
  batch: number,
  hq: number,
  maxSeqQ: number,
  maxSeqK: number,
): ResolvedBlockSparse {
  const { blockQ, blockK, mask } = bs;
  if (!Number.isInteger(blockQ) || blockQ < 1)
    fail(ValueError, 'blockSparse.blockQ', 'a positive integer', blockQ);
  if (!Number.isInteger(blockK) || blockK < 1)
    fail(ValueError, 'blockSparse.blockK', 'a positive integer', blockK);
  const t = mask as Tensor;
  if (!t || !Array.isArray(t.shape)) fail(ShapeError, 'blockSparse.mask', 'a Tensor', mask);
  if (t.dtype !== 'u8' && t.dtype !== 'i32' && t.dtype !== 'i8') {
    fail(DTypeError, 'blockSparse.mask', 'dtype u8, i8 or i32', t.dtype);
  }
  const nbq = Math.ceil(maxSeqQ / blockQ);
  const nbk = Math.ceil(maxSeqK / blockK);
  const s = t.shape;
  const tail = `[..., ${nbq}, ${nbk}] (ceil(Nq/blockQ), ceil(Nk/blockK))`;
  if (s.length < 2 || s.length > 4 || s[s.length - 2] !== nbq || s[s.length - 1] !== nbk) {
    fail(ShapeError, 'blockSparse.mask', `shape ${tail}`, `shape ${formatShape(s)}`);
  }
  if (s.length >= 3 && s[s.length - 3] !== hq)
    fail(ShapeError, 'blockSparse.mask', `head dim ${hq}`, `shape ${formatShape(s)}`);
  if (s.length === 4 && s[0] !== batch)
    fail(ShapeError, 'blockSparse.mask', `batch dim ${batch}`, `shape ${formatShape(s)}`);
  const values = t.toFloat64Array();
  const m = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) m[i] = values[i] !== 0 ? 1 : 0;
  return {
    blockQ,
    blockK,
    nbq,
    nbk,
    mask: m,
    headStride: s.length >= 3 ? nbq * nbk : 0,
    batchStride: s.length === 4 ? hq * nbq * nbk : 0,
  };
}
