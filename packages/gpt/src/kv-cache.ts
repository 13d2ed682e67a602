import { CacheFullError, KvCache } from '@attnkit/lean-attention';
import {
  type AttentionOptions,
  attention,
  concat,
  copyIntoWebGpu,
  isGradEnabled,
  keep,
  type KvCache as LayerKvCache,
  noGrad,
  permute,
  reshape,
  slice,
  type Var,
} from '@attnkit/nn';
import { DeviceError, DTypeError, describe, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { type WebGpuContext, WebGpuStorage } from '@attnkit/webgpu';

const tensorOf = (x: Var | Tensor): Tensor => (x instanceof Tensor ? x : x.data);

/**
 * The cache's own sizes (batch rows, tokens a row may hold) as positive integers: ValueError
 * naming the option. Heads, dims, page size, dtype and context are lean KvCache's to check.
 */
function checkSizes<O extends { batch: number; maxTokens: number }>(who: string, options: O): O {
  if (options === null || typeof options !== 'object')
    throw new ValueError(`${who}: options expected an object, got ${describe(options)}`, 'options');
  for (const name of ['batch', 'maxTokens'] as const) {
    const x = options[name];
    if (!Number.isInteger(x) || x < 1)
      throw new ValueError(`${who}: ${name} expected a positive integer, got ${describe(x)}`, name);
  }
  return options;
}

/**
 * A step's k and v against the cache ([B, Hkv, T >= 1, D], the cache's dtype) and the pages its
 * rows need against the pool's free ones, before anything is appended: either the whole step
 * goes in or nothing does. Returns T.
 */
function checkStep(who: string, pages: KvCache, ids: readonly number[], k: Var, v: Var): number {
  const t = k.shape[2]!;
  for (const [x, name] of [
    [k, 'k'],
    [v, 'v'],
  ] as const) {
    const want = [ids.length, pages.numKvHeads, t, pages.headDim];
    if (x.shape.length !== 4 || x.shape.some((n, i) => n !== want[i]) || !(t >= 1))
      throw new ShapeError(
        `${who}: ${name} expected [${want}] ([B, Hkv, T >= 1, D]), got [${x.shape}]`,
        name,
      );
    if (x.dtype !== pages.dtype)
      throw new DTypeError(
        `${who}: ${name} expected ${pages.dtype} (the cache's dtype), got ${x.dtype}`,
        name,
      );
  }
  const needed = ids.reduce((n, id) => n + pages.pagesNeeded(id, t), 0);
  if (needed > pages.freePages)
    throw new CacheFullError(
      `k: appending ${t} tokens to ${ids.length} rows needs ${needed} more pages, but ${pages.freePages} of ${pages.numPages} are free`,
      'k',
      needed,
      pages.freePages,
    );
  return t;
}

/**
 * What attend's paged attention would refuse, checked before the step is appended: q [B, Hq, T,
 * D] for this step (Hq a multiple of Hkv), and no gradient recorded (paged K/V is forward only;
 * a cache decodes under noGrad).
 */
function checkQuery(
  who: string,
  pages: KvCache,
  ids: readonly number[],
  q: Var,
  k: Var,
  paged: boolean,
): void {
  const [b, hq, t, d] = q.shape as number[];
  if (
    q.shape.length !== 4 ||
    b !== ids.length ||
    t !== k.shape[2] ||
    d !== pages.headDim ||
    !(hq! >= 1 && hq! % pages.numKvHeads === 0)
  )
    throw new ShapeError(
      `${who}: q expected [${ids.length}, a multiple of ${pages.numKvHeads}, ${k.shape[2]}, ${pages.headDim}] ([B, Hq, T, D]), got [${q.shape}]`,
      'q',
    );
  if (!paged) return;
  if (isGradEnabled() && [q, k].some((x) => (x as Var).requiresGrad === true))
    throw new ValueError(
      `${who}: q expected no gradient (a KV cache decodes forward only: run the step under noGrad), got inputs that require one`,
      'q',
    );
}

/**
 * What both paged hooks share: the lean KvCache (one sequence per batch row), the length, and
 * `attend`, which checks the step and q first (nothing is appended when attention would refuse
 * it), appends, then runs nn's attention on the pools through the block tables. Family
 * 'standard' (the N x N matmuls read contiguous K/V, not pages) attends the sequence `update`
 * gathers instead. Subclasses write a step's rows into the pages (`append`) and gather them.
 */
abstract class PagedHook implements LayerKvCache {
  readonly ids: number[];
  protected constructor(
    readonly pages: KvCache,
    batch: number,
    /** The class name the errors carry. */
    protected readonly who: string,
  ) {
    this.ids = Array.from({ length: batch }, () => pages.addSequence());
  }

  get length(): number {
    return this.pages.length(this.ids[0]!);
  }

  /** This step's k, v ([B, Hkv, T, D], rotated) into each row's pages, or nothing on a throw. */
  protected abstract append(k: Var, v: Var): void;

  abstract update(k: Var, v: Var): { k: Var; v: Var };

  /** Appends k, v, then attends q over every row's pages in place (nn's paged attention). */
  attend(q: Var, k: Var, v: Var, options: AttentionOptions): Var {
    const inPlace = options.family !== 'standard';
    checkQuery(this.who, this.pages, this.ids, q, k, inPlace);
    if (!inPlace) {
      const kv = this.update(k, v);
      return attention(q, kv.k, kv.v, options);
    }
    this.append(k, v);
    const t = this.pages.blockTables(this.ids);
    const paged = { pageSize: this.pages.pageSize, blockTable: t.blockTable, lengths: t.lengths };
    return attention(q, this.pages.kPool, this.pages.vPool, { ...options, paged });
  }
}

/**
 * nn's per-layer decoding hook backed by lean-attention's paged KvCache: one page pool per
 * layer, one sequence per batch row. Each step appends the new keys and values into the pages;
 * `attend` (what nn's MultiHeadAttention calls when the hook has it) then runs nn's attention op
 * on the pools through the block tables (its `paged` option: K and V read in place, forward
 * only), and `update` (the plain hook) hands back the sequence gathered out of the pages
 * ([B, Hkv, L, D]) for the layer's own attention.
 */
export class PagedKvCache extends PagedHook {
  constructor(options: { batch: number; kvHeads: number; headDim: number; maxTokens: number }) {
    const { batch, kvHeads, headDim, maxTokens } = checkSizes('PagedKvCache', options);
    const pageSize = 16;
    const pages = new KvCache({
      numKvHeads: kvHeads,
      headDim,
      pageSize,
      numPages: batch * Math.ceil(maxTokens / pageSize),
      dtype: 'f32',
    });
    super(pages, batch, 'PagedKvCache');
  }

  protected append(k: Var, v: Var): void {
    checkStep(this.who, this.pages, this.ids, k, v);
    // [B, Hkv, T, D] -> per row [T, Hkv, D], the pool's token-major layout (any strides do).
    const kd = tensorOf(k).contiguous();
    const vd = tensorOf(v).contiguous();
    this.ids.forEach((id, row) => {
      const rowOf = (t: Tensor) =>
        t
          .slice(0, row, row + 1)
          .reshape(t.shape.slice(1))
          .permute([1, 0, 2]);
      this.pages.append(id, rowOf(kd), rowOf(vd));
    });
  }

  // attend (PagedHook) reads the pages in place: gathering them and permuting to [B, Hkv, L, D]
  // every step were most of a cached token's time on the CPU at 8K context (apps/gpt/README.md).
  update(k: Var, v: Var): { k: Var; v: Var } {
    const [b, h, , d] = k.shape as [number, number, number, number];
    this.append(k, v);
    const n = this.length;
    const gathered = this.ids.map((id) => this.pages.gather(id));
    // Each row's sequence comes out token-major [L, Hkv, D]; the layer gets [B, Hkv, L, D]
    // through nn's permute op: the backend's strided copy (C++ on native), not a JavaScript one.
    const stack = (pick: (g: { k: Tensor; v: Tensor }) => Tensor) => {
      let rows: Tensor;
      if (b === 1) rows = pick(gathered[0]!).reshape([1, n, h, d]);
      else {
        const out = new Float32Array(b * n * h * d);
        gathered.forEach((g, row) => {
          out.set(pick(g).toFloat32Array(), row * n * h * d);
        });
        rows = Tensor.from(out, [b, n, h, d]);
      }
      return permute(rows, [0, 2, 1, 3]);
    };
    return { k: stack((g) => g.k), v: stack((g) => g.v) };
  }
}

/**
 * nn's per-layer decoding hook on webgpu: lean-attention's paged KvCache with its pools on the
 * GPU (device 'webgpu'), one sequence per batch row. Each step's keys and values are written
 * into the pages by buffer copies queued in order with nn's passes (nn's copyIntoWebGpu, at the
 * pool rows KvCache.reserve hands out: the step's k / v are computed by passes not submitted
 * yet, which KvCache.append's own submit would overtake), and `attend` runs nn's attention op
 * on the pools through the block tables (its `paged` option). Per token and layer: two copies
 * and the attention, where DeviceKvCache concatenated the whole sequence (an O(L) copy, two
 * passes and two new buffers). `update` (the plain hook) gathers the pages with nn's slice and
 * concat ops into [B, Hkv, L, D]. dispose() frees the pools.
 */
export class DevicePagedKvCache extends PagedHook {
  private readonly ctx: WebGpuContext;
  constructor(options: {
    batch: number;
    kvHeads: number;
    headDim: number;
    maxTokens: number;
    dtype: 'f32' | 'f16';
    context: WebGpuContext;
    pageSize?: number;
  }) {
    const { batch, maxTokens } = checkSizes('DevicePagedKvCache', options);
    const { kvHeads, headDim, dtype, context, pageSize = 16 } = options;
    const pages = new KvCache({
      numKvHeads: kvHeads,
      headDim,
      pageSize,
      numPages: batch * Math.ceil(maxTokens / pageSize),
      dtype,
      device: 'webgpu',
      context,
    });
    super(pages, batch, 'DevicePagedKvCache');
    this.ctx = context;
    // State, not a step's intermediate: a scope disposes what ops made inside it, and update's
    // reshape of a pool is a view that shares the pool's buffer.
    keep(pages.kPool);
    keep(pages.vPool);
  }

  /** In queue order with nn's passes (copyIntoWebGpu at reserve's rows). */
  protected append(k: Var, v: Var): void {
    const { pages, ids, who } = this;
    const t = checkStep(who, pages, ids, k, v);
    // Webgpu tensors on the pools' device, alive: what copyIntoWebGpu would refuse after the
    // first row's pages were taken.
    for (const [x, name] of [
      [k, 'k'],
      [v, 'v'],
    ] as const) {
      const st = tensorOf(x).storage;
      if (!(st instanceof WebGpuStorage) || st.ctx !== this.ctx)
        throw new DeviceError(
          `${who}: ${name} expected a webgpu tensor on the cache's device, got one on ${st instanceof WebGpuStorage ? 'another WebGpuContext' : tensorOf(x).device}`,
          name,
        );
      st.checkLive(name, who);
    }
    const bpe = pages.dtype === 'f16' ? 2 : 4;
    noGrad(() => {
      // Token-major [B, T, Hkv, D], the pools' row layout: k itself when T is 1 (and it starts
      // on a 4-byte word, as buffer copies need), else a permute's copy.
      const rows = (x: Var) => {
        const data = tensorOf(x);
        return t === 1 && data.isContiguous() && (data.offset * bpe) % 4 === 0
          ? data
          : permute(x, [0, 2, 1, 3]).data;
      };
      const [kt, vt] = [rows(k), rows(v)];
      const row = pages.numKvHeads * pages.headDim;
      ids.forEach((id, r) => {
        for (const run of pages.reserve(id, t)) {
          const from = (r * t + run.token) * row;
          copyIntoWebGpu(pages.kPool, run.row * row, kt, from, run.count * row);
          copyIntoWebGpu(pages.vPool, run.row * row, vt, from, run.count * row);
        }
      });
    });
  }

  update(k: Var, v: Var): { k: Var; v: Var } {
    this.append(k, v);
    const { pages } = this;
    const [h, d] = [pages.numKvHeads, pages.headDim];
    // Each row's pages, in order, sliced out of the pool ([numPages x pageSize, Hkv, D]) and
    // concatenated: [L, Hkv, D] per row, then [B, Hkv, L, D].
    const gather = (pool: Tensor) =>
      noGrad(() => {
        const flat = reshape(pool, [pages.numPages * pages.pageSize, h, d]);
        const rows = this.ids.map((id) => {
          const n = pages.length(id);
          const table = pages.blockTable(id);
          // One slice per run of consecutive pages (a sequence decoded alone takes its pages
          // in order: one slice, not one per page, i.e. 512 passes a layer at 8K).
          const parts: Var[] = [];
          for (let i = 0; i < table.length; ) {
            let j = i + 1;
            while (j < table.length && table[j] === table[j - 1]! + 1) j++;
            const start = table[i]! * pages.pageSize;
            const tokens = Math.min((j - i) * pages.pageSize, n - i * pages.pageSize);
            parts.push(slice(flat, 0, start, start + tokens));
            i = j;
          }
          const seq = parts.length === 1 ? parts[0]! : concat(parts, 0);
          return permute(reshape(seq, [1, n, h, d]), [0, 2, 1, 3]);
        });
        return rows.length === 1 ? rows[0]! : concat(rows, 0);
      });
    return { k: gather(pages.kPool), v: gather(pages.vPool) };
  }

  /** Frees the pools. */
  dispose(): void {
    this.pages.dispose();
  }
}

/**
 * A per-layer cache that stays on the tensors' device (webgpu): each step concatenates the new
 * keys and values along the sequence axis and frees the previous tensors, so it holds one copy
 * of the sequence (O(L) memory, an O(L) device copy per token; nothing read back). Kept from
 * scopes: a decoding step inside scope() does not free it; dispose() does.
 */
export class DeviceKvCache implements LayerKvCache {
  k: Var | null = null;
  v: Var | null = null;

  get length(): number {
    return this.k?.shape[2] ?? 0;
  }

  update(k: Var, v: Var): { k: Var; v: Var } {
    noGrad(() => {
      const [oldK, oldV] = [this.k, this.v];
      this.k = keep(oldK ? concat([oldK, k], 2) : copy(k));
      this.v = keep(oldV ? concat([oldV, v], 2) : copy(v));
      oldK?.data.dispose();
      oldV?.data.dispose();
    });
    return { k: this.k!, v: this.v! };
  }

  dispose(): void {
    this.k?.data.dispose();
    this.v?.data.dispose();
    this.k = this.v = null;
  }
}

/** A tensor of its own (the step's k may be a view the step's scope frees). */
const copy = (x: Var) => concat([x], 2);
