import { type DType, describe, Rng, Tensor, ValueError } from '@attnkit/tensor';
import type { Param, Var, VarLike } from '../autograd.js';
import { applyUnary, mul } from '../ops/elementwise.js';
import { linears } from '../ops/matmul.js';
import { dropout, embedding, layerNorm, rmsNorm } from '../ops/nn.js';
import { Module } from './module.js';

export type FloatDType = 'f32' | 'f64';

/** Construction options common to layers: parameter dtype and the seeded initialiser. */
export interface InitOptions {
  dtype?: FloatDType;
  /** Draws the initial weights (default: a fresh Rng(0)). */
  rng?: Rng;
}

function positiveInt(op: string, name: string, n: unknown): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1)
    throw new ValueError(`${op}: ${name} expected a positive integer, got ${describe(n)}`, name);
  return n;
}

/** Uniform in [-bound, bound] (PyTorch's Linear init: bound = 1 / sqrt(fanIn)). */
function uniform(rng: Rng, shape: number[], bound: number, dtype: DType): Tensor {
  const values = rng
    .rand(shape, 'f64')
    .toFloat64Array()
    .map((u) => (2 * u - 1) * bound);
  return Tensor.from(values, shape, 'f64').astype(dtype);
}

/** y = x W^T + b, W [out, in] (PyTorch's layout, so its checkpoints load as they are). */
export class Linear extends Module {
  readonly weight: Param;
  readonly bias: Param | null;
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    options: InitOptions & { bias?: boolean } = {},
  ) {
    super();
    positiveInt('Linear', 'inFeatures', inFeatures);
    positiveInt('Linear', 'outFeatures', outFeatures);
    const { dtype = 'f32', rng = new Rng(0), bias = true } = options;
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = this.param('weight', uniform(rng, [outFeatures, inFeatures], bound, dtype));
    this.bias = bias ? this.param('bias', uniform(rng, [outFeatures], bound, dtype)) : null;
  }
  forward(x: VarLike): Var {
    // matmul then add; one pass where no gradient is recorded and the backend fuses it.
    return linears(x, [this.weight], this.bias ? [this.bias] : null)[0]!;
  }
}

/**
 * Whether `l` computes what Linear.forward does (no subclass overriding it: LoRA, quantised
 * layers), so that a module may run it through `linears` together with others.
 */
export function plainLinear(l: Linear): boolean {
  return l.forward === Linear.prototype.forward;
}

export class Embedding extends Module {
  readonly weight: Param;
  constructor(
    readonly numEmbeddings: number,
    readonly dim: number,
    options: InitOptions & { std?: number } = {},
  ) {
    super();
    positiveInt('Embedding', 'numEmbeddings', numEmbeddings);
    positiveInt('Embedding', 'dim', dim);
    const { dtype = 'f32', rng = new Rng(0), std = 1 } = options;
    this.weight = this.param('weight', rng.randn([numEmbeddings, dim], dtype, std));
  }
  forward(ids: Tensor): Var {
    return embedding(this.weight, ids);
  }
}

export class LayerNorm extends Module {
  readonly weight: Param | null;
  readonly bias: Param | null;
  readonly eps: number;
  constructor(
    readonly dim: number,
    options: { eps?: number; dtype?: FloatDType; affine?: boolean } = {},
  ) {
    super();
    positiveInt('LayerNorm', 'dim', dim);
    const { dtype = 'f32', affine = true } = options;
    this.eps = options.eps ?? 1e-5;
    this.weight = affine ? this.param('weight', Tensor.full([dim], 1, dtype)) : null;
    this.bias = affine ? this.param('bias', Tensor.zeros([dim], dtype)) : null;
  }
  forward(x: VarLike): Var {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

export class RMSNorm extends Module {
  readonly weight: Param;
  readonly eps: number;
  constructor(
    readonly dim: number,
    options: { eps?: number; dtype?: FloatDType } = {},
  ) {
    super();
    positiveInt('RMSNorm', 'dim', dim);
    this.eps = options.eps ?? 1e-6;
    this.weight = this.param('weight', Tensor.full([dim], 1, options.dtype ?? 'f32'));
  }
  forward(x: VarLike): Var {
    return rmsNorm(x, this.weight, this.eps);
  }
}

/** Dropout with its own seeded Rng (a fixed seed gives the same masks run after run). */
export class Dropout extends Module {
  readonly rng: Rng;
  constructor(
    readonly p: number,
    options: { seed?: number } = {},
  ) {
    super();
    if (typeof p !== 'number' || !(p >= 0 && p < 1))
      throw new ValueError(`Dropout: p expected a number in [0, 1), got ${describe(p)}`, 'p');
    this.rng = new Rng(options.seed ?? 0);
  }
  forward(x: VarLike): Var {
    return dropout(x, this.p, this.rng, this.training);
  }
}

/** A module with a one-argument forward (what Sequential chains). */
export interface Layer extends Module {
  forward(x: Var): Var;
}

export class Sequential extends Module {
  readonly layers: readonly Layer[];
  constructor(...layers: Layer[]) {
    super();
    layers.forEach((l, i) => {
      this.child(String(i), l);
    });
    this.layers = layers;
  }
  forward(x: VarLike): Var {
    let y = x as Var;
    for (const l of this.layers) y = l.forward(y);
    return y;
  }
}

export interface MlpOptions extends InitOptions {
  /** 'gelu': fc2(gelu(fc1 x)) (GPT-2); 'swiglu': w2(silu(w1 x) * w3 x) (Shazeer 2020, Llama). */
  activation?: 'gelu' | 'swiglu';
  /** Hidden width (default 4 dim for gelu, 8/3 dim rounded up to 8 for swiglu). */
  hidden?: number;
  bias?: boolean;
}

export class MLP extends Module {
  readonly activation: 'gelu' | 'swiglu';
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly gate: Linear | null;
  constructor(
    readonly dim: number,
    options: MlpOptions = {},
  ) {
    super();
    const { activation = 'gelu', bias = activation === 'gelu', dtype, rng = new Rng(0) } = options;
    const init = { dtype, rng };
    if (activation !== 'gelu' && activation !== 'swiglu')
      throw new ValueError(
        `MLP: activation expected 'gelu' or 'swiglu', got ${describe(activation)}`,
        'activation',
      );
    this.activation = activation;
    const hidden =
      options.hidden ?? (activation === 'gelu' ? 4 * dim : 8 * Math.ceil((8 * dim) / 3 / 8));
    this.fc1 = this.child('fc1', new Linear(dim, hidden, { ...init, bias }));
    this.gate =
      activation === 'swiglu'
        ? this.child('gate', new Linear(dim, hidden, { ...init, bias }))
        : null;
    this.fc2 = this.child('fc2', new Linear(hidden, dim, { ...init, bias }));
  }
  forward(x: VarLike): Var {
    // fc1 and its activation: one pass where no gradient is recorded and the backend fuses it.
    const { fc1 } = this;
    const act = this.gate ? 'silu' : 'gelu';
    const h1 = plainLinear(fc1)
      ? linears(x, [fc1.weight], fc1.bias ? [fc1.bias] : null, act)[0]!
      : applyUnary(act, fc1.forward(x));
    return this.fc2.forward(this.gate ? mul(h1, this.gate.forward(x)) : h1);
  }
}
