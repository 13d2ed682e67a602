import {
  allocStorage,
  CpuStorage,
  DeviceError,
  DTypeError,
  describe,
  formatShape,
  ShapeError,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { emptyWebGpu, toWebGpu, type WebGpuContext, webGpuStorageOf } from '@attnkit/webgpu';
import { type LeanAttentionOptions, type LeanAttentionResult, leanAttention } from './attention.js';
import { CacheFullError } from './errors.js';

/** Storage dtypes of a KV cache (f16 is stored as raw bit patterns, like every f16 tensor). */
export type KvCacheDType = 'f32' | 'f16';

export interface KvCacheOptions {
  /** Layers sharing the block tables; only 1 today (make one cache per layer). */
  numLayers?: 1;
  /** Key/value heads (Hkv). */
  numKvHeads: number;
  /** Key head dimension (D). */
  headDim: number;
  /** Value head dimension (Dv); default `headDim`. */
  valueDim?: number;
  /** Tokens per page: a power of two, default 16 (64 is the other common choice). */
  pageSize?: number;
  /** Pages in the pool: its capacity is numPages * pageSize tokens over all sequences. */
  numPages: number;
  /** Storage dtype of K and V; appended tensors must have it. */
  dtype: KvCacheDType;
  /**
   * Where the pools live: 'cpu' (default) or 'webgpu' (GPU buffers on `context`; appends write
   * into them, `attend` takes webgpu queries on that device and reads them in place).
   */
  device?: 'cpu' | 'webgpu';
  /** The WebGPU device of a 'webgpu' cache (from createWebGpuContext / getWebGpuContext). */
  context?: WebGpuContext;
  /**
   * The most query tokens per sequence `attend` takes (Nq); default 16
   * (`DEFAULT_MAX_QUERY_LENGTH`), the decode regime the partitions are tuned for. A longer q
   * is refused (ValueError naming `q`): it is usually a prefill sent to the decode path by
   * mistake. Raise it for speculative decoding with long drafts, or use flashAttention.
   */
  maxQueryLength?: number;
}

/** KvCache's default `maxQueryLength`: the decode regime, Nq 1..16 new tokens a sequence. */
export const DEFAULT_MAX_QUERY_LENGTH = 16;

/** Several sequences' block tables in the form a decode kernel reads. */
export interface BlockTables {
  /** [B, maxPages] row-major page ids; entries past a sequence's pages are -1. */
  blockTable: Int32Array;
  /** Columns of `blockTable`: the most pages any of the sequences holds (0 if all are empty). */
  maxPages: number;
  /** [B] tokens in each sequence. */
  lengths: Int32Array;
}

/**
 * Options of KvCache.attend: leanAttention's (partition, workers, splits, causal, window,
 * scale, backend, ...) without the ones the cache supplies (paged, layout, cu_seqlens).
 */
export interface KvCacheAttendOptions
  extends Omit<LeanAttentionOptions, 'paged' | 'layout' | 'cuSeqlensQ' | 'cuSeqlensK'> {
  /** The sequences of the batch, in q's batch order (q.shape[0] of them). */
  ids: readonly number[] | Int32Array;
}

/** The pools uploaded to one WebGPU device, and the pages written since (to upload next). */
interface GpuMirror {
  k: Tensor;
  v: Tensor;
  /** Pages appended into since the last upload; uploaded (and cleared) by the next attend. */
  dirty: Set<number>;
}

interface Sequence {
  /** Page ids in token order: token t lives in pages[t / pageSize], slot t % pageSize. */
  pages: number[];
  length: number;
}

const OPTION_KEYS = [
  'numLayers',
  'numKvHeads',
  'headDim',
  'valueDim',
  'pageSize',
  'numPages',
  'dtype',
  'device',
  'context',
  'maxQueryLength',
] as const;

// Block tables, lengths and token positions are int32 in the kernels (WGSL has no 64-bit
// integers), so no sequence may grow past this.
const INT32_MAX = 2 ** 31 - 1;

/**
 * A paged KV cache (vLLM's PagedAttention layout, as LeanAttention decodes over it): K and V of
 * every sequence live in fixed-size pages of one shared pool, and a sequence is its block table
 * (the page ids, in order) plus its length. Appending takes free pages as a sequence grows past
 * a page boundary; removing a sequence returns its pages for reuse, so no sequence needs a
 * contiguous reservation of its maximum length.
 *
 * Pools: `kPool` [numPages, pageSize, Hkv, D] and `vPool` [numPages, pageSize, Hkv, Dv], cpu
 * tensors in `dtype` (GPU buffers with `device: 'webgpu'`); token t of a sequence is row
 * t % pageSize of page blockTable[t / pageSize]. `attend` runs the decode kernels, which read K
 * and V through the block table (leanAttention's `paged` option); `gather` copies a sequence out
 * contiguously, for tests and as the reference path.
 *
 * Every mutating call validates everything before it changes anything: a refused call leaves
 * the pool, the block tables and the lengths as they were. Invariant: `pagesInUse` equals the
 * sum over live sequences of ceil(length / pageSize), and `pagesInUse + freePages = numPages`.
 */
export class KvCache {
  readonly numLayers = 1;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly valueDim: number;
  readonly pageSize: number;
  readonly numPages: number;
  readonly dtype: KvCacheDType;
  /** The most query tokens per sequence `attend` takes. */
  readonly maxQueryLength: number;
  /** Where the pools live (KvCacheOptions.device). */
  readonly device: 'cpu' | 'webgpu';
  /** [numPages, pageSize, Hkv, D]: what a kernel reads through a block table. Do not write into it. */
  readonly kPool: Tensor;
  /** [numPages, pageSize, Hkv, Dv]. Do not write into it. */
  readonly vPool: Tensor;

  /** The cpu pools' elements (empty for a 'webgpu' cache). */
  private readonly kData: Float32Array | Uint16Array;
  private readonly vData: Float32Array | Uint16Array;
  /** A 'webgpu' cache's device. */
  private readonly ctx: WebGpuContext | undefined;
  /** The pools on each WebGPU device an attend ran on (KvCache.attend with a webgpu q). */
  private readonly mirrors = new Map<WebGpuContext, GpuMirror>();
  /** A stack of free page ids; the top is free[freeCount - 1]. */
  private readonly free: Int32Array;
  private freeCount: number;
  private readonly sequences = new Map<number, Sequence>();
  /** Ids are never reused, so a removed id stays an error instead of naming a newer sequence. */
  private nextId = 0;

  constructor(options: KvCacheOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new ValueError(
        `options: expected { numKvHeads, headDim, numPages, dtype, ... }, got ${describe(options)}`,
        'options',
      );
    }
    for (const key of Object.keys(options)) {
      if (!(OPTION_KEYS as readonly string[]).includes(key)) {
        throw new ValueError(
          `${key}: not a KvCache option (expected one of ${OPTION_KEYS.join(', ')})`,
          key,
        );
      }
    }
    if (options.numLayers !== undefined && options.numLayers !== 1) {
      throw new ValueError(
        `numLayers: one layer per KvCache for now (make one cache per layer), got ${describe(options.numLayers)}`,
        'numLayers',
      );
    }
    this.numKvHeads = positiveInt(options.numKvHeads, 'numKvHeads');
    this.headDim = positiveInt(options.headDim, 'headDim');
    this.valueDim =
      options.valueDim === undefined ? this.headDim : positiveInt(options.valueDim, 'valueDim');
    const pageSize = options.pageSize ?? 16;
    // A power of two lets a kernel find a token's page and slot with a shift and a mask.
    if (
      !Number.isInteger(pageSize) ||
      pageSize < 1 ||
      pageSize > 2 ** 30 ||
      pageSize & (pageSize - 1)
    ) {
      throw new ValueError(
        `pageSize: expected a power of two >= 1 (16 or 64 are usual), got ${describe(pageSize)}`,
        'pageSize',
      );
    }
    this.pageSize = pageSize;
    this.numPages = positiveInt(options.numPages, 'numPages');
    if (this.numPages * pageSize > INT32_MAX) {
      throw new ValueError(
        `numPages: ${this.numPages} pages of ${pageSize} tokens hold ${this.numPages * pageSize} tokens, past the int32 positions the kernels use (at most ${INT32_MAX})`,
        'numPages',
      );
    }
    if (options.dtype !== 'f32' && options.dtype !== 'f16') {
      throw new DTypeError(
        `dtype: expected 'f32' or 'f16' (the storage of K and V), got ${describe(options.dtype)}`,
        'dtype',
      );
    }
    this.dtype = options.dtype;
    this.maxQueryLength =
      options.maxQueryLength === undefined
        ? DEFAULT_MAX_QUERY_LENGTH
        : positiveInt(options.maxQueryLength, 'maxQueryLength');

    const kShape = [this.numPages, pageSize, this.numKvHeads, this.headDim];
    const vShape = [this.numPages, pageSize, this.numKvHeads, this.valueDim];
    const device = options.device ?? 'cpu';
    if (device !== 'cpu' && device !== 'webgpu')
      throw new ValueError(`device: expected 'cpu' or 'webgpu', got ${describe(device)}`, 'device');
    this.device = device;
    if (device === 'webgpu') {
      const ctx = options.context;
      if (!ctx || typeof (ctx as { checkAlive?: unknown }).checkAlive !== 'function')
        throw new ValueError(
          `context: expected the WebGpuContext of a 'webgpu' cache (createWebGpuContext / getWebGpuContext), got ${describe(ctx)}`,
          'context',
        );
      // Appends write whole token rows with writeBuffer / copyBufferToBuffer, whose offsets and
      // sizes are 4-byte multiples: an f16 row needs an even Hkv x D (as f16 on webgpu needs
      // even head dims anyway).
      for (const [w, name] of [
        [this.headDim, 'headDim'],
        [this.valueDim, 'valueDim'],
      ] as const) {
        if (this.dtype === 'f16' && (this.numKvHeads * w) % 2 !== 0)
          throw new ValueError(
            `${name}: expected numKvHeads x ${name} even for an f16 'webgpu' cache (token rows are written in 4-byte words), got ${this.numKvHeads} x ${w}`,
            name,
          );
      }
      this.ctx = ctx;
      this.kData = new Float32Array(0);
      this.vData = new Float32Array(0);
      this.kPool = emptyWebGpu(kShape, this.dtype, ctx);
      try {
        this.vPool = emptyWebGpu(vShape, this.dtype, ctx);
      } catch (e) {
        this.kPool.dispose();
        throw e;
      }
    } else {
      this.ctx = undefined;
      // allocStorage turns a pool the runtime cannot hold into an AllocationError naming the shape.
      this.kData = allocStorage(
        this.dtype,
        kShape.reduce((a, b) => a * b),
        kShape,
      );
      this.vData = allocStorage(
        this.dtype,
        vShape.reduce((a, b) => a * b),
        vShape,
      );
      this.kPool = new Tensor(new CpuStorage(this.dtype, this.kData), kShape);
      this.vPool = new Tensor(new CpuStorage(this.dtype, this.vData), vShape);
    }

    // Pages leave the stack as 0, 1, 2, ...: a fresh cache fills its pool in order.
    this.free = new Int32Array(this.numPages);
    for (let i = 0; i < this.numPages; i++) this.free[i] = this.numPages - 1 - i;
    this.freeCount = this.numPages;
  }

  /** Pages held by live sequences. */
  get pagesInUse(): number {
    return this.numPages - this.freeCount;
  }

  /** Pages available to appends. */
  get freePages(): number {
    return this.freeCount;
  }

  /** The live sequence ids, oldest first. */
  sequenceIds(): number[] {
    return [...this.sequences.keys()];
  }

  /** Whether `id` names a live sequence. */
  has(id: number): boolean {
    return this.sequences.has(id);
  }

  /** A new empty sequence (no pages yet); returns its id. */
  addSequence(): number {
    const id = this.nextId++;
    this.sequences.set(id, { pages: [], length: 0 });
    return id;
  }

  /** Removes sequence `id`; its pages go back to the pool. */
  removeSequence(id: number): void {
    const seq = this.sequence(id, 'id');
    // Pushed in reverse so that the next append takes them back in their old order.
    for (let i = seq.pages.length - 1; i >= 0; i--) this.free[this.freeCount++] = seq.pages[i]!;
    this.sequences.delete(id);
  }

  /** Tokens in sequence `id`. */
  length(id: number): number {
    return this.sequence(id, 'id').length;
  }

  /** Sequence `id`'s page ids in token order (a copy): ceil(length / pageSize) entries. */
  blockTable(id: number): Int32Array {
    return Int32Array.from(this.sequence(id, 'id').pages);
  }

  /**
   * The block tables of `ids` (a batch, in this order) padded to one [B, maxPages] int32 array,
   * with their lengths: what a decode kernel takes beside `kPool` and `vPool`. Padding is -1; a
   * kernel never reads it, as it stops at ceil(length / pageSize) pages.
   */
  blockTables(ids: readonly number[] | Int32Array): BlockTables {
    if (!Array.isArray(ids) && !(ids instanceof Int32Array)) {
      throw new ValueError(`ids: expected an array of sequence ids, got ${describe(ids)}`, 'ids');
    }
    const seqs = Array.from(ids, (id, b) => this.sequence(id, `ids[${b}]`));
    let maxPages = 0;
    for (const s of seqs) maxPages = Math.max(maxPages, s.pages.length);
    const blockTable = new Int32Array(seqs.length * maxPages).fill(-1);
    const lengths = new Int32Array(seqs.length);
    seqs.forEach((s, b) => {
      blockTable.set(s.pages, b * maxPages);
      lengths[b] = s.length;
    });
    return { blockTable, maxPages, lengths };
  }

  /**
   * Appends n >= 1 tokens to sequence `id`: k [n, Hkv, D] and v [n, Hkv, Dv], cpu tensors in the
   * cache's dtype (any strides). Takes ceil((length + n) / pageSize) - ceil(length / pageSize)
   * pages from the pool. Nothing changes when it throws: ValueError for an unknown or removed
   * id, ShapeError / DTypeError / DeviceError for k or v, CacheFullError when the pool has too
   * few free pages.
   */
  append(id: number, k: Tensor, v: Tensor): void {
    const seq = this.sequence(id, 'id');
    const n = this.checkRows(k, 'k', this.headDim, 'headDim');
    const nv = this.checkRows(v, 'v', this.valueDim, 'valueDim');
    if (nv !== n) {
      throw new ShapeError(
        `v: expected ${n} tokens (as many as k), got ${formatShape(v.shape)}`,
        'v',
      );
    }
    const needed = this.pagesFor(seq, id, n, 'k', 'appending', 'to');
    if (this.ctx) {
      this.ctx.checkAlive();
      // Both sources read (cpu) or checked bindable whole (webgpu: contiguous at offset 0)
      // before any page is taken, so a refused append changes nothing.
      const kIn = this.source(k, 'k');
      const vIn = this.source(v, 'v');
      for (let i = 0; i < needed; i++) seq.pages.push(this.free[--this.freeCount]!);
      this.writeRows(seq, n, kIn, this.kPool, this.numKvHeads * this.headDim);
      this.writeRows(seq, n, vIn, this.vPool, this.numKvHeads * this.valueDim);
      seq.length += n;
      return;
    }
    // Read both sources before taking pages: data() of a strided view allocates and may throw.
    const kSrc = ownCopy(k.data() as Float32Array | Uint16Array, this.kData);
    const vSrc = ownCopy(v.data() as Float32Array | Uint16Array, this.vData);
    for (let i = 0; i < needed; i++) seq.pages.push(this.free[--this.freeCount]!);
    this.copyRows(seq, seq.length, n, kSrc, this.kData, this.numKvHeads * this.headDim, 'in');
    this.copyRows(seq, seq.length, n, vSrc, this.vData, this.numKvHeads * this.valueDim, 'in');
    this.markDirty(seq, n);
    seq.length += n;
  }

  /**
   * The pages sequence `id` would take from the pool to grow by n >= 0 tokens (0 while its last
   * page has room): what `append` / `reserve` take, for a caller that checks several sequences
   * before touching any. ValueError naming `id` or `n`.
   */
  pagesNeeded(id: number, n: number): number {
    const seq = this.sequence(id, 'id');
    if (!Number.isInteger(n) || n < 0 || n > INT32_MAX - seq.length)
      throw new ValueError(
        `n: expected an integer in [0, ${INT32_MAX - seq.length}] (tokens to add), got ${describe(n)}`,
        'n',
      );
    return Math.ceil((seq.length + n) / this.pageSize) - seq.pages.length;
  }

  /**
   * Appends n >= 1 tokens whose rows the caller writes itself: takes the pages they need (as
   * append does), counts them in the sequence's length and returns where they go, as runs of
   * consecutive pool rows (pages next to each other in the pool merge into one run): tokens
   * [token, token + count) of the n land at rows [row, row + count) of both pools, row = page x
   * pageSize + slot, i.e. elements from row x Hkv x D of kPool (x Dv of vPool). For a caller
   * whose tokens are computed by GPU work it has not submitted yet (nn's webgpu queue), which
   * append's own submit would overtake: it writes the runs in order with that work. Every run
   * must be written before the next attend reads the sequence (the pools keep whatever was
   * there). Nothing changes when it throws: ValueError naming `id` or `n`, CacheFullError
   * (naming `n`) when the pool has too few free pages.
   */
  reserve(id: number, n: number): { token: number; row: number; count: number }[] {
    const seq = this.sequence(id, 'id');
    if (!Number.isInteger(n) || n < 1 || n > INT32_MAX - seq.length)
      throw new ValueError(
        `n: expected an integer in [1, ${INT32_MAX - seq.length}] (tokens to append), got ${describe(n)}`,
        'n',
      );
    const needed = this.pagesFor(seq, id, n, 'n', 'reserving', 'in');
    for (let i = 0; i < needed; i++) seq.pages.push(this.free[--this.freeCount]!);
    const runs: { token: number; row: number; count: number }[] = [];
    for (let t = 0; t < n; ) {
      const pos = seq.length + t;
      const slot = pos % this.pageSize;
      const count = Math.min(this.pageSize - slot, n - t);
      const row = seq.pages[Math.floor(pos / this.pageSize)]! * this.pageSize + slot;
      const last = runs.at(-1);
      if (last && last.row + last.count === row) last.count += count;
      else runs.push({ token: t, row, count });
      t += count;
    }
    this.markDirty(seq, n);
    seq.length += n;
    return runs;
  }

  /**
   * Sequence `id`'s K [length, Hkv, D] and V [length, Hkv, Dv], copied out of its pages into new
   * contiguous tensors in the cache's dtype. The reference path: decode kernels read through the
   * block table instead of gathering.
   */
  gather(id: number): { k: Tensor; v: Tensor } {
    const seq = this.sequence(id, 'id');
    if (this.ctx)
      throw new DeviceError(
        `gather: expected a cpu cache (this one's pools are on webgpu; read them with await kPool.toCpu() / vPool.toCpu() and blockTable(${id}))`,
        'gather',
      );
    const kRow = this.numKvHeads * this.headDim;
    const vRow = this.numKvHeads * this.valueDim;
    const kShape = [seq.length, this.numKvHeads, this.headDim];
    const vShape = [seq.length, this.numKvHeads, this.valueDim];
    const kOut = allocStorage(this.dtype, seq.length * kRow, kShape);
    const vOut = allocStorage(this.dtype, seq.length * vRow, vShape);
    this.copyRows(seq, 0, seq.length, kOut, this.kData, kRow, 'out');
    this.copyRows(seq, 0, seq.length, vOut, this.vData, vRow, 'out');
    return { k: Tensor.from(kOut, kShape, this.dtype), v: Tensor.from(vOut, vShape, this.dtype) };
  }

  /**
   * Decode attention of q [B, Hq, Nq, D] (BHND; B = ids.length, Hq a multiple of numKvHeads)
   * against the cached keys and values of sequences `ids`: leanAttention with the pools and the
   * sequences' block tables (`paged`), so the kernels read K and V through the block table
   * without gathering them. Per-sequence lengths are the sequences' lengths (causal / window
   * bottom-right relative to each); a sequence of length 0 gives O = 0 and LSE = -Infinity.
   * Backend: `backend`, else q's device (a webgpu q runs the WGSL kernels; cpu: native, else
   * ts). On webgpu the pools are uploaded once per device and kept there: appends write into
   * the cpu pools and mark their pages, which the next attend uploads (only those pages).
   * Typed errors: ValueError naming `ids` (unknown or removed id, count not B), ValueError
   * naming `q` (Nq past maxQueryLength), and
   * leanAttention's (ShapeError naming q for a head dim or head count that differs, ...).
   */
  async attend(q: Tensor, options: KvCacheAttendOptions): Promise<LeanAttentionResult> {
    if (options === null || typeof options !== 'object')
      throw new ValueError(`options: expected { ids, ... }, got ${describe(options)}`, 'options');
    const { ids, ...rest } = options;
    const t = this.blockTables(ids);
    const b = q?.shape?.[0];
    if (q?.ndim !== 4 || b !== t.lengths.length)
      throw new ValueError(
        `ids: expected one id per batch entry of q [B, Hq, Nq, D] (${describe(q?.shape)}), got ${t.lengths.length} ids`,
        'ids',
      );
    const nq = q.shape[2];
    if (nq > this.maxQueryLength)
      throw new ValueError(
        `q: expected at most maxQueryLength (${this.maxQueryLength}) query tokens per sequence, got Nq ${nq} (q ${describe(q.shape)}); raise maxQueryLength when creating the cache, or run a prefill with flashAttention`,
        'q',
      );
    const paged = { pageSize: this.pageSize, blockTable: t.blockTable, lengths: t.lengths };
    if (this.ctx) {
      if (q.device !== 'webgpu' || webGpuStorageOf(q, 'q').ctx !== this.ctx)
        throw new DeviceError(
          `q: expected a webgpu tensor on the cache's device (the pools live there), got one on ${q.device === 'webgpu' ? 'another WebGPU device' : q.device}`,
          'q',
        );
      return leanAttention(q, this.kPool, this.vPool, { ...rest, paged });
    }
    if (q.device === 'webgpu') {
      const m = this.mirror(webGpuStorageOf(q, 'q').ctx);
      return leanAttention(q, m.k, m.v, { ...rest, paged });
    }
    return leanAttention(q, this.kPool, this.vPool, { ...rest, paged });
  }

  /** Frees the pools' device copies (made by attend with webgpu queries), and a 'webgpu' cache's pools. */
  dispose(): void {
    if (this.ctx) {
      this.kPool.dispose();
      this.vPool.dispose();
    }
    for (const m of this.mirrors.values()) {
      m.k.dispose();
      m.v.dispose();
    }
    this.mirrors.clear();
  }

  /** The pools on `ctx`, with the pages appended since the last attend uploaded. */
  private mirror(ctx: WebGpuContext): GpuMirror {
    let m = this.mirrors.get(ctx);
    if (!m) {
      m = { k: toWebGpu(this.kPool, ctx), v: toWebGpu(this.vPool, ctx), dirty: new Set() };
      this.mirrors.set(ctx, m);
      return m;
    }
    for (const page of m.dirty) {
      writePage(ctx, m.k, this.kData, page, this.pageSize * this.numKvHeads * this.headDim);
      writePage(ctx, m.v, this.vData, page, this.pageSize * this.numKvHeads * this.valueDim);
    }
    m.dirty.clear();
    return m;
  }

  toString(): string {
    return `KvCache(${this.dtype}, Hkv ${this.numKvHeads}, D ${this.headDim}, Dv ${this.valueDim}, ${this.pagesInUse}/${this.numPages} pages of ${this.pageSize}, ${this.sequences.size} sequences)`;
  }

  // ---- internals --------------------------------------------------------------------------

  /**
   * The pages n more tokens of `seq` need beyond those it holds; CacheFullError naming
   * `argument` when the pool has fewer free (nothing taken yet).
   */
  private pagesFor(
    seq: Sequence,
    id: number,
    n: number,
    argument: string,
    verb: string,
    preposition: string,
  ): number {
    const needed = this.pagesNeeded(id, n);
    if (needed > this.freeCount) {
      throw new CacheFullError(
        `${argument}: ${verb} ${n} tokens ${preposition} sequence ${id} (length ${seq.length}, ${seq.pages.length} pages) needs ${needed} more pages of ${this.pageSize} tokens, but ${this.freeCount} of ${this.numPages} are free (remove sequences or use a larger numPages)`,
        argument,
        needed,
        this.freeCount,
      );
    }
    return needed;
  }

  /** A cpu cache's device copies re-upload the pages of n tokens from seq.length at their next attend. */
  private markDirty(seq: Sequence, n: number): void {
    if (this.mirrors.size === 0) return;
    const first = Math.floor(seq.length / this.pageSize);
    const end = Math.ceil((seq.length + n) / this.pageSize);
    for (const m of this.mirrors.values())
      for (let i = first; i < end; i++) m.dirty.add(seq.pages[i]!);
  }

  private sequence(id: number, argument: string): Sequence {
    const seq = this.sequences.get(id);
    if (seq) return seq;
    const removed = Number.isInteger(id) && id >= 0 && id < this.nextId;
    throw new ValueError(
      removed
        ? `${argument}: sequence ${id} was removed (expected a live sequence id)`
        : `${argument}: expected a live sequence id from addSequence(), got ${describe(id)}`,
      argument,
    );
  }

  /** Checks k or v against the cache; returns its token count n. */
  private checkRows(t: Tensor, argument: 'k' | 'v', width: number, widthName: string): number {
    const expected = `[n >= 1, ${this.numKvHeads} (numKvHeads), ${width} (${widthName})]`;
    if (!(t instanceof Tensor)) {
      throw new ValueError(
        `${argument}: expected a Tensor ${expected}, got ${describe(t)}`,
        argument,
      );
    }
    if (this.ctx) {
      if (
        t.device !== 'cpu' &&
        (t.device !== 'webgpu' || webGpuStorageOf(t, argument).ctx !== this.ctx)
      )
        throw new DeviceError(
          `${argument}: expected a cpu tensor or a webgpu one on the cache's device, got one on ${t.device === 'webgpu' ? 'another WebGPU device' : t.device}`,
          argument,
        );
    } else if (t.device !== 'cpu') {
      throw new DeviceError(
        `${argument}: expected a cpu tensor, got one on ${t.device} (use await ${argument}.toCpu())`,
        argument,
      );
    }
    if (t.dtype !== this.dtype) {
      throw new DTypeError(
        `${argument}: expected ${this.dtype} (the cache's dtype), got ${t.dtype}`,
        argument,
      );
    }
    const [n, h, d] = t.shape;
    if (t.ndim !== 3 || n! < 1 || h !== this.numKvHeads || d !== width) {
      throw new ShapeError(
        `${argument}: expected ${expected}, got ${formatShape(t.shape)}`,
        argument,
      );
    }
    return n!;
  }

  /** An append source of a 'webgpu' cache: a webgpu tensor's buffer, or a cpu tensor's bytes. */
  private source(t: Tensor, argument: 'k' | 'v'): GPUBuffer | Uint8Array {
    if (t.device === 'webgpu') return webGpuStorageOf(t, argument).buffer;
    const host = t.data() as Float32Array | Uint16Array;
    return new Uint8Array(host.buffer, host.byteOffset, host.byteLength);
  }

  /**
   * A 'webgpu' cache's append: the n token rows of src (`row` elements each; cpu or webgpu) into
   * the pool's pages from token seq.length on, one writeBuffer (cpu source) or buffer copy
   * (webgpu source) per run of tokens inside a page. Queue order puts them before any later
   * kernel that reads the pool.
   */
  private writeRows(
    seq: Sequence,
    n: number,
    src: GPUBuffer | Uint8Array,
    pool: Tensor,
    row: number,
  ): void {
    const ctx = this.ctx!;
    const bpr = row * (this.dtype === 'f16' ? 2 : 4);
    const dst = webGpuStorageOf(pool, 'pool').buffer;
    const gpu = src instanceof Uint8Array ? undefined : src;
    const bytes = src instanceof Uint8Array ? src : undefined;
    const encoder = gpu ? ctx.device.createCommandEncoder({ label: 'kv-cache append' }) : undefined;
    let t = 0;
    while (t < n) {
      const pos = seq.length + t;
      const slot = pos % this.pageSize;
      const run = Math.min(this.pageSize - slot, n - t);
      const at = (seq.pages[Math.floor(pos / this.pageSize)]! * this.pageSize + slot) * bpr;
      if (encoder) encoder.copyBufferToBuffer(gpu!, t * bpr, dst, at, run * bpr);
      else ctx.device.queue.writeBuffer(dst, at, bytes!, t * bpr, run * bpr);
      t += run;
    }
    if (encoder) ctx.device.queue.submit([encoder.finish()]);
  }

  /**
   * Copies n token rows (`row` elements each) between contiguous `flat` and the pages of `seq`,
   * starting at token `start`: 'in' writes flat into the pool, 'out' reads the pool into flat.
   * One typed-array copy per run of tokens inside a page.
   */
  private copyRows(
    seq: Sequence,
    start: number,
    n: number,
    flat: Float32Array | Uint16Array,
    pool: Float32Array | Uint16Array,
    row: number,
    direction: 'in' | 'out',
  ): void {
    let t = 0;
    while (t < n) {
      const pos = start + t;
      const slot = pos % this.pageSize;
      const run = Math.min(this.pageSize - slot, n - t);
      const at = (seq.pages[Math.floor(pos / this.pageSize)]! * this.pageSize + slot) * row;
      if (direction === 'in') pool.set(flat.subarray(t * row, (t + run) * row), at);
      else flat.set(pool.subarray(at, at + run * row), t * row);
      t += run;
    }
  }
}

function positiveInt(value: unknown, argument: string): number {
  if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > INT32_MAX) {
    throw new ValueError(
      `${argument}: expected an integer in [1, ${INT32_MAX}], got ${describe(value)}`,
      argument,
    );
  }
  return value as number;
}

/** `src` itself, or a copy when it is a view of `pool` (k sliced from kPool): the page-by-page
 * copy would otherwise overwrite source rows it has yet to read. */
function ownCopy<T extends Float32Array | Uint16Array>(src: T, pool: T): T {
  return src.buffer === pool.buffer ? (src.slice() as T) : src;
}

/**
 * Uploads page `page` (`per` elements) of a pool into its device copy. writeBuffer takes
 * 4-byte-aligned ranges: an f16 page of an odd element count widens to the aligned words around
 * it (the neighbours' bytes are written with their own, unchanged values).
 */
function writePage(
  ctx: WebGpuContext,
  t: Tensor,
  data: Float32Array | Uint16Array,
  page: number,
  per: number,
): void {
  const bpe = data.BYTES_PER_ELEMENT;
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const start = Math.floor((page * per * bpe) / 4) * 4;
  const end = Math.min(Math.ceil(((page + 1) * per * bpe) / 4) * 4, bytes.length);
  const buffer = webGpuStorageOf(t, 'pool').buffer;
  const len = end - start;
  if (len % 4 === 0) {
    ctx.device.queue.writeBuffer(buffer, start, bytes, start, len);
    return;
  }
  // The pool's last word is a half: pad the copy to a whole word.
  const padded = new Uint8Array(len + (4 - (len % 4)));
  padded.set(bytes.subarray(start, end));
  ctx.device.queue.writeBuffer(buffer, start, padded);
}
