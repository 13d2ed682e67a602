import { KvCache } from '@attnkit/lean-attention';
import {
  type AttentionOptions,
  attention,
  concat,
  keep,
  type KvCache as LayerKvCache,
  noGrad,
  permute,
  type Var,
} from '@attnkit/nn';
import { ShapeError, Tensor } from '@attnkit/tensor';

/**
 * nn's per-layer decoding hook backed by lean-attention's paged KvCache: one page pool per
 * layer, one sequence per batch row. Each step appends the new keys and values into the pages;
 * `attend` (what nn's MultiHeadAttention calls when the hook has it) then runs nn's attention op
 * on the pools through the block tables (its `paged` option: K and V read in place, forward
 * only), and `update` (the plain hook) hands back the sequence gathered out of the pages
 * ([B, Hkv, L, D]) for the layer's own attention.
 */
export class PagedKvCache implements LayerKvCache {
  readonly pages: KvCache;
  readonly ids: number[];
  constructor(options: { batch: number; kvHeads: number; headDim: number; maxTokens: number }) {
    const { batch, kvHeads, headDim, maxTokens } = options;
    const pageSize = 16;
    this.pages = new KvCache({
      numKvHeads: kvHeads,
      headDim,
      pageSize,
      numPages: batch * Math.ceil(maxTokens / pageSize),
      dtype: 'f32',
    });
    this.ids = Array.from({ length: batch }, () => this.pages.addSequence());
  }

  get length(): number {
    return this.pages.length(this.ids[0]!);
  }

  /** This step's k, v ([B, Hkv, T, D], rotated) into each row's pages. */
  private append(k: Var, v: Var): void {
    const b = k.shape[0];
    if (b !== this.ids.length)
      throw new ShapeError(`PagedKvCache: k expected batch ${this.ids.length}, got ${b}`, 'k');
    // [B, Hkv, T, D] -> per row [T, Hkv, D], the pool's token-major layout (any strides do).
    const kd = k.data.contiguous();
    const vd = v.data.contiguous();
    this.ids.forEach((id, row) => {
      const rowOf = (t: Tensor) =>
        t
          .slice(0, row, row + 1)
          .reshape(t.shape.slice(1))
          .permute([1, 0, 2]);
      this.pages.append(id, rowOf(kd), rowOf(vd));
    });
  }

  /**
   * Appends k, v, then attends q over every row's pages in place (no gather, no permute):
   * before this, gathering the pages and permuting them to [B, Hkv, L, D] were most of a cached
   * token's time on the CPU at 8K context (apps/gpt/README.md).
   */
  attend(q: Var, k: Var, v: Var, options: AttentionOptions): Var {
    this.append(k, v);
    const t = this.pages.blockTables(this.ids);
    const paged = { pageSize: this.pages.pageSize, blockTable: t.blockTable, lengths: t.lengths };
    return attention(q, this.pages.kPool, this.pages.vPool, { ...options, paged });
  }

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
