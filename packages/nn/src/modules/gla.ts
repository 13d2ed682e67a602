import { describe, formatShape, Rng, ShapeError, type Tensor, ValueError } from '@attnkit/tensor';
import { keep, noGrad, type Var, type VarLike } from '../autograd.js';
import { affine, mul, silu } from '../ops/elementwise.js';
import { gla, logsigmoid } from '../ops/gla.js';
import { rmsNorm } from '../ops/nn.js';
import { reshape } from '../ops/shape.js';
import { type InitOptions, Linear, RMSNorm, Sequential } from './layers.js';
import { Module } from './module.js';

/**
 * The recurrent state of one GatedLinearAttention layer while decoding (what fla keeps in its
 * cache per layer): `state` [B, H, K, V] after the `length` tokens seen so far (null before the
 * first call). Its tensor is kept (keep()): a decoding step inside scope() does not dispose it.
 */
export class GlaState {
  state: Tensor | null = null;
  length = 0;

  /** @internal The layer's update: the new state replaces (and disposes) the old one. */
  update(finalState: Tensor, tokens: number): void {
    const prev = this.state;
    this.state = keep(finalState);
    this.length += tokens;
    // On a GPU its buffer returns to the pool once the queued step that read it is submitted.
    if (prev && prev.storage !== finalState.storage) prev.dispose();
  }

  /** Forgets the sequence (the next call starts from a zero state). */
  reset(): void {
    this.state?.dispose();
    this.state = null;
    this.length = 0;
  }
}

export interface GatedLinearAttentionOptions extends InitOptions {
  /** Key width as a fraction of dim: keyDim = dim * expandK (default 0.5, fla's). */
  expandK?: number;
  /** Value width as a multiple of dim: valueDim = dim * expandV (default 1). */
  expandV?: number;
  /** Rank of the gate projection gk_proj = Linear(dim, r) then Linear(r, keyDim) (default 16). */
  gateLowRankDim?: number;
  /** gk = logsigmoid(gk_proj(x)) / gateLogitNormalizer (default 16). */
  gateLogitNormalizer?: number;
  /** Biases on q_proj, k_proj, v_proj, g_proj and o_proj (default false, as fla). */
  bias?: boolean;
  /** The output norm's eps (default 1e-5). */
  normEps?: number;
}

function positive(name: string, n: unknown, integer: boolean): number {
  if (typeof n !== 'number' || !(n > 0) || !Number.isFinite(n) || (integer && !Number.isInteger(n)))
    throw new ValueError(
      `GatedLinearAttention: ${name} expected a positive ${integer ? 'integer' : 'number'}, got ${describe(n)}`,
      name,
    );
  return n;
}

/**
 * The GLA layer (Yang et al. 2024, section 4.4; fla's fla/layers/gla.py GatedLinearAttention with
 * its defaults): x [B, T, dim] ->
 *   q, k = q_proj(x), k_proj(x) [B, T, H, dk]; v = v_proj(x) [B, T, H, dv];
 *   gk = logsigmoid(gk_proj(x)) / gateLogitNormalizer (gk_proj: a low-rank pair of Linears);
 *   o = gla(q, k, v, gk) [B, T, H, dv]; o = rmsNorm(o) * silu(g_proj(x)) per head (one norm
 *   weight shared by the heads: fla's FusedRMSNormGated); y = o_proj(o) [B, T, dim].
 * keyDim = dim * expandK and valueDim = dim * expandV, each split over `heads`. Parameter names
 * are fla's (q_proj, k_proj, v_proj, gk_proj.0, gk_proj.1, g_proj, g_norm_swish_gate, o_proj),
 * so its state dicts map one to one.
 */
export class GatedLinearAttention extends Module {
  readonly heads: number;
  readonly keyDim: number;
  readonly valueDim: number;
  readonly headKDim: number;
  readonly headVDim: number;
  readonly gateLogitNormalizer: number;
  readonly normEps: number;
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly gk_proj: Sequential;
  readonly g_proj: Linear;
  readonly g_norm_swish_gate: RMSNorm;
  readonly o_proj: Linear;

  constructor(
    readonly dim: number,
    heads: number,
    options: GatedLinearAttentionOptions = {},
  ) {
    super();
    if (options === null || typeof options !== 'object')
      throw new ValueError(
        `GatedLinearAttention: options expected an object, got ${describe(options)}`,
        'options',
      );
    positive('dim', dim, true);
    positive('heads', heads, true);
    const {
      expandK = 0.5,
      expandV = 1,
      gateLowRankDim = 16,
      gateLogitNormalizer = 16,
      bias = false,
      normEps = 1e-5,
      rng = new Rng(0),
      dtype,
    } = options;
    positive('expandK', expandK, false);
    positive('expandV', expandV, false);
    positive('gateLowRankDim', gateLowRankDim, true);
    positive('gateLogitNormalizer', gateLogitNormalizer, false);
    if (typeof normEps !== 'number' || !(normEps >= 0))
      throw new ValueError(
        `GatedLinearAttention: normEps expected a non-negative number, got ${describe(normEps)}`,
        'normEps',
      );
    // fla: int(hidden_size * expand_k)
    const keyDim = Math.floor(dim * expandK);
    const valueDim = Math.floor(dim * expandV);
    for (const [name, width, expand] of [
      ['expandK', keyDim, 'keyDim = dim * expandK'],
      ['expandV', valueDim, 'valueDim = dim * expandV'],
    ] as const)
      if (width < heads || width % heads !== 0)
        throw new ValueError(
          `GatedLinearAttention: heads expected to divide ${expand} = ${width}, got heads = ${heads} (${name} ${describe(name === 'expandK' ? expandK : expandV)})`,
          'heads',
        );
    this.heads = heads;
    this.keyDim = keyDim;
    this.valueDim = valueDim;
    this.headKDim = keyDim / heads;
    this.headVDim = valueDim / heads;
    this.gateLogitNormalizer = gateLogitNormalizer;
    this.normEps = normEps;
    // One Rng for every projection: separate default Rngs would give them equal weights.
    const init = { dtype, rng, bias };
    this.q_proj = this.child('q_proj', new Linear(dim, keyDim, init));
    this.k_proj = this.child('k_proj', new Linear(dim, keyDim, init));
    this.v_proj = this.child('v_proj', new Linear(dim, valueDim, init));
    this.g_proj = this.child('g_proj', new Linear(dim, valueDim, init));
    this.gk_proj = this.child(
      'gk_proj',
      new Sequential(
        new Linear(dim, gateLowRankDim, { dtype, rng, bias: false }),
        new Linear(gateLowRankDim, keyDim, { dtype, rng, bias: true }),
      ),
    );
    this.g_norm_swish_gate = this.child(
      'g_norm_swish_gate',
      new RMSNorm(this.headVDim, { eps: normEps, dtype }),
    );
    this.o_proj = this.child('o_proj', new Linear(valueDim, dim, init));
  }

  /**
   * x [B, T, dim] -> [B, T, dim]. With `state` (decoding): no gradient is recorded, the layer
   * starts from the stored state (zero on the first call), stores the state after x's last
   * token, and runs the recurrent (step) form for T = 1, the chunk form for T > 1: a prompt
   * prefilled then decoded token by token gives the outputs of the whole sequence at once.
   */
  forward(x: VarLike, options: { state?: GlaState } = {}): Var {
    if (options === null || typeof options !== 'object')
      throw new ValueError(
        `GatedLinearAttention: options expected an object, got ${describe(options)}`,
        'options',
      );
    if (x.shape.length !== 3 || x.shape[2] !== this.dim)
      throw new ShapeError(
        `GatedLinearAttention: x expected [B, T, ${this.dim}], got ${formatShape(x.shape)}`,
        'x',
      );
    const { state } = options;
    if (state === undefined) return this.#run(x);
    if (!(state instanceof GlaState))
      throw new ValueError(
        `GatedLinearAttention: state expected a GlaState, got ${describe(state)}`,
        'state',
      );
    const [b] = x.shape as [number, number, number];
    const want = [b, this.heads, this.headKDim, this.headVDim];
    if (state.state && state.state.shape.join() !== want.join())
      throw new ShapeError(
        `GatedLinearAttention: state expected a state of shape ${formatShape(want)} (this layer's, batch ${b}), got ${formatShape(state.state.shape)}`,
        'state',
      );
    return noGrad(() => this.#run(x, state));
  }

  #run(x: VarLike, state?: GlaState): Var {
    const [b, t] = x.shape as [number, number, number];
    const { heads: h, headKDim: dk, headVDim: dv } = this;
    const q = reshape(this.q_proj.forward(x), [b, t, h, dk]);
    const k = reshape(this.k_proj.forward(x), [b, t, h, dk]);
    const v = reshape(this.v_proj.forward(x), [b, t, h, dv]);
    const gk = reshape(
      affine(logsigmoid(this.gk_proj.forward(x as Var)), 1 / this.gateLogitNormalizer, 0),
      [b, t, h, dk],
    );
    const r = state
      ? gla(q, k, v, gk, {
          form: t === 1 ? 'recurrent' : 'chunk',
          outputFinalState: true,
          ...(state.state ? { initialState: state.state } : {}),
        })
      : gla(q, k, v, gk);
    const g = reshape(this.g_proj.forward(x), [b, t, h, dv]);
    const normed = rmsNorm(r.o, this.g_norm_swish_gate.weight, this.normEps);
    const y = this.o_proj.forward(reshape(mul(normed, silu(g)), [b, t, this.valueDim]));
    // The state moves on only once the step's output exists: an error above leaves it as it was.
    state?.update(r.finalState!, t);
    return y;
  }
}
