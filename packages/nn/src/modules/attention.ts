import { describe, formatShape, Rng, ShapeError, ValueError } from '@attnkit/tensor';
import { keep, noGrad, type Var, type VarLike } from '../autograd.js';
import { type AttentionOptions, attention } from '../ops/attention.js';
import { linears } from '../ops/matmul.js';
import { rope } from '../ops/rope.js';
import { concat, permute, reshape } from '../ops/shape.js';
import { type InitOptions, Linear, plainLinear } from './layers.js';
import { Module } from './module.js';

/**
 * The decoding hook: one per attention layer. The layer hands it this step's keys and values
 * ([B, Hkv, T, D], already rotated) and attends over what it returns; `length` (the tokens
 * cached before this step) is where the new tokens' positions start.
 */
export interface KvCache {
  readonly length: number;
  update(k: Var, v: Var): { k: Var; v: Var };
  /**
   * Optional: store this step's keys and values and attend q ([B, Hq, T, D]) over the whole
   * sequence itself, returning [B, Hq, T, Dv]; the layer then calls it instead of update() and
   * its own attention op (a paged cache reads its pages in place: attention's `paged` option,
   * forward only). `options` are the layer's (family, causal, window, sigmoidBias).
   */
  attend?(q: Var, k: Var, v: Var, options: AttentionOptions): Var;
}

/**
 * A KvCache that concatenates along the sequence axis (no gradient: decoding). Its tensors
 * are kept: a decoding step inside scope() does not dispose the cache.
 */
export class ConcatKvCache implements KvCache {
  k: Var | null = null;
  v: Var | null = null;
  get length(): number {
    return this.k?.shape[2] ?? 0;
  }
  update(k: Var, v: Var): { k: Var; v: Var } {
    noGrad(() => {
      this.k = keep(this.k ? concat([this.k, k], 2) : k.detach());
      this.v = keep(this.v ? concat([this.v, v], 2) : v.detach());
    });
    return { k: this.k!, v: this.v! };
  }
}

export interface MultiHeadAttentionOptions extends InitOptions {
  /** Key/value heads (GQA; divides heads). Default: heads. */
  kvHeads?: number;
  /** Rotary embeddings on q and k (default true; an object sets the base). */
  rope?: boolean | { base?: number };
  causal?: boolean;
  window?: readonly [number, number];
  /** Attention family: 'flash' (default), 'sigmoid' or 'standard' (ops/attention.ts). */
  family?: string;
  /** Family 'sigmoid': b in sigmoid(scale q k^T + b) (AttentionOptions.sigmoidBias). */
  sigmoidBias?: number;
  bias?: boolean;
}

/**
 * Multi-head attention over x [B, T, C]: projections wq [H D, C], wk and wv [Hkv D, C], wo
 * [C, H D]; q and k rotated (RoPE), attention on the chosen family's kernels.
 */
export class MultiHeadAttention extends Module {
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly wq: Linear;
  readonly wk: Linear;
  readonly wv: Linear;
  readonly wo: Linear;
  readonly options: MultiHeadAttentionOptions;
  constructor(
    readonly dim: number,
    heads: number,
    options: MultiHeadAttentionOptions = {},
  ) {
    super();
    const kvHeads = options.kvHeads ?? heads;
    if (!Number.isInteger(heads) || heads < 1 || dim % heads !== 0)
      throw new ValueError(
        `MultiHeadAttention: heads expected a positive divisor of dim = ${dim}, got ${describe(heads)}`,
        'heads',
      );
    if (!Number.isInteger(kvHeads) || kvHeads < 1 || heads % kvHeads !== 0)
      throw new ValueError(
        `MultiHeadAttention: kvHeads expected a positive divisor of heads = ${heads}, got ${describe(kvHeads)}`,
        'kvHeads',
      );
    this.heads = heads;
    this.kvHeads = kvHeads;
    this.headDim = dim / heads;
    this.options = options;
    // One Rng for the four projections: separate default Rngs would give them equal weights.
    const { dtype, rng = new Rng(0), bias = false } = options;
    const init = { dtype, rng, bias };
    this.wq = this.child('wq', new Linear(dim, dim, init));
    this.wk = this.child('wk', new Linear(dim, kvHeads * this.headDim, init));
    this.wv = this.child('wv', new Linear(dim, kvHeads * this.headDim, init));
    this.wo = this.child('wo', new Linear(dim, dim, init));
  }

  forward(x: VarLike, options: { kvCache?: KvCache } = {}): Var {
    if (x.shape.length !== 3 || x.shape[2] !== this.dim)
      throw new ShapeError(
        `MultiHeadAttention: x expected [B, T, ${this.dim}], got ${formatShape(x.shape)}`,
        'x',
      );
    const [b, t] = x.shape as [number, number, number];
    const split = (y: Var, h: number) => permute(reshape(y, [b, t, h, this.headDim]), [0, 2, 1, 3]);
    // The three projections: one pass where no gradient is recorded and the backend fuses them
    // (each layer's own forward where a subclass overrides it).
    const ls = [this.wq, this.wk, this.wv];
    const [qy, ky, vy] = (
      ls.every(plainLinear)
        ? linears(
            x,
            ls.map((l) => l.weight),
            ls.map((l) => l.bias),
          )
        : ls.map((l) => l.forward(x))
    ) as [Var, Var, Var];
    let q = split(qy, this.heads);
    let k = split(ky, this.kvHeads);
    let v = split(vy, this.kvHeads);
    const cache = options.kvCache;
    const useRope = this.options.rope ?? true;
    if (useRope) {
      const base = typeof useRope === 'object' ? useRope.base : undefined;
      const opts = { offset: cache?.length ?? 0, ...(base !== undefined ? { base } : {}) };
      q = rope(q, opts);
      k = rope(k, opts);
    }
    const { family, causal = true, window, sigmoidBias } = this.options;
    const opts: AttentionOptions = {
      causal,
      ...(family !== undefined ? { family } : {}),
      ...(window !== undefined ? { window } : {}),
      ...(sigmoidBias !== undefined ? { sigmoidBias } : {}),
    };
    let o: Var;
    if (cache?.attend) o = cache.attend(q, k, v, opts);
    else {
      if (cache) ({ k, v } = cache.update(k, v));
      o = attention(q, k, v, opts);
    }
    return this.wo.forward(reshape(permute(o, [0, 2, 1, 3]), [b, t, this.dim]));
  }
}
