import { describe, Rng, Tensor, ValueError } from '@attnkit/tensor';
import type { Var, VarLike } from '../autograd.js';
import { add, mul, silu } from '../ops/elementwise.js';
import { reshape, slice } from '../ops/shape.js';
import { type KvCache, MultiHeadAttention, type MultiHeadAttentionOptions } from './attention.js';
import { LayerNorm, Linear, MLP, type MlpOptions, RMSNorm } from './layers.js';
import { Module } from './module.js';

export interface TransformerBlockOptions extends MultiHeadAttentionOptions {
  mlp?: MlpOptions['activation'];
  mlpHidden?: number;
  norm?: 'layer' | 'rms';
  /**
   * AdaLN-zero conditioning (DiT, Peebles & Xie 2023, sec. 3.2): the width of the condition c;
   * the norms lose their affine and a zero-initialised Linear(silu(c)) gives shift, scale and
   * gate for each branch, so the block starts as the identity.
   */
  adaLNZero?: number;
}

/** x + attn(norm1 x), then x + mlp(norm2 x) (pre-norm, as GPT-2 and Llama). */
export class TransformerBlock extends Module {
  readonly norm1: LayerNorm | RMSNorm;
  readonly attn: MultiHeadAttention;
  readonly norm2: LayerNorm | RMSNorm;
  readonly mlp: MLP;
  readonly modulation: Linear | null;
  constructor(
    readonly dim: number,
    heads: number,
    options: TransformerBlockOptions = {},
  ) {
    super();
    const { mlp = 'gelu', mlpHidden, norm = 'layer', adaLNZero, ...rest } = options;
    const attn = { ...rest, rng: rest.rng ?? new Rng(0) };
    if (norm !== 'layer' && norm !== 'rms')
      throw new ValueError(
        `TransformerBlock: norm expected 'layer' or 'rms', got ${describe(norm)}`,
        'norm',
      );
    const affine = adaLNZero === undefined;
    const makeNorm = () =>
      norm === 'layer'
        ? new LayerNorm(dim, { dtype: attn.dtype, affine })
        : new RMSNorm(dim, { dtype: attn.dtype });
    this.norm1 = this.child('norm1', makeNorm());
    this.attn = this.child('attn', new MultiHeadAttention(dim, heads, attn));
    this.norm2 = this.child('norm2', makeNorm());
    const init = { dtype: attn.dtype, rng: attn.rng, activation: mlp };
    this.mlp = this.child(
      'mlp',
      new MLP(dim, mlpHidden === undefined ? init : { ...init, hidden: mlpHidden }),
    );
    this.modulation = null;
    if (adaLNZero !== undefined) {
      const m = this.child('modulation', new Linear(adaLNZero, 6 * dim, { dtype: attn.dtype }));
      const dt = attn.dtype ?? 'f32';
      m.weight.data = Tensor.zeros(m.weight.shape, dt);
      m.bias!.data = Tensor.zeros(m.bias!.shape, dt);
      this.modulation = m;
    }
  }

  /** x [B, T, C]; `cond` [B, condDim] with adaLNZero; `kvCache` for decoding. */
  forward(x: VarLike, options: { cond?: VarLike; kvCache?: KvCache } = {}): Var {
    const attnOpts = options.kvCache ? { kvCache: options.kvCache } : {};
    if (!this.modulation) {
      const h = add(x, this.attn.forward(this.norm1.forward(x), attnOpts));
      return add(h, this.mlp.forward(this.norm2.forward(h)));
    }
    if (!options.cond)
      throw new ValueError(
        'TransformerBlock: cond expected (the block was built with adaLNZero)',
        'cond',
      );
    const b = x.shape[0]!;
    const mod = reshape(this.modulation.forward(silu(options.cond)), [b, 1, 6 * this.dim]);
    const [shift1, scale1, gate1, shift2, scale2, gate2] = [0, 1, 2, 3, 4, 5].map((i) =>
      slice(mod, 2, i * this.dim, (i + 1) * this.dim),
    ) as [Var, Var, Var, Var, Var, Var];
    // modulate(x, shift, scale) = x (1 + scale) + shift (DiT's adaLN).
    const modulate = (y: Var, shift: Var, scale: Var) => add(mul(y, add(scale, 1)), shift);
    const h = add(
      x,
      mul(gate1, this.attn.forward(modulate(this.norm1.forward(x), shift1, scale1), attnOpts)),
    );
    return add(h, mul(gate2, this.mlp.forward(modulate(this.norm2.forward(h), shift2, scale2))));
  }
}
