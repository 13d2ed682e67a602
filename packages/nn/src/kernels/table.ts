import type { PagedOptions } from '@attnkit/attention';
import type { Rng, Tensor } from '@attnkit/tensor';

export type BinaryOp = 'add' | 'sub' | 'mul' | 'div';
export type UnaryOp = 'exp' | 'log' | 'relu' | 'gelu' | 'silu' | 'sigmoid' | 'tanh';

/** One rotated chunk of the head dimension: `dim` channels, one position per token. */
export interface RopeSection {
  dim: number;
  /** Position of each token (length = the token axis), e.g. t for 1D, (t, h, w) for video. */
  positions: Float64Array;
}

export interface AttentionKernelOptions {
  family: string;
  /** Sigmoid attention's b in sigmoid(scale q.k + b) (family 'sigmoid'; default -log Nk). */
  sigmoidBias?: number;
  causal?: boolean;
  scale?: number;
  window?: readonly [number, number];
  /** Paged K/V pools (forward only; ops/attention.ts AttentionOptions.paged). */
  paged?: PagedOptions;
}

/**
 * What the GLA kernels take beside q, k, v, gk (ops/gla.ts; @attnkit/linear-attention's options
 * with its form): initialState [B, H, K, V] (no gradient), outputFinalState, scale (default
 * K^-0.5).
 */
export interface GlaKernelOptions {
  form: 'chunk' | 'recurrent';
  scale?: number;
  initialState?: Tensor;
  outputFinalState?: boolean;
}

export interface SgdHyper {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count (bias correction). */
  step: number;
}

/**
 * The kernels one backend provides: every op of ops/ is written against these, so a backend
 * (ts now; native and webgpu later) is this table filled in. Tensors in, tensors out, on the
 * backend's device; nothing reads back to the host except `item`-style reductions the caller
 * asks for.
 */
export interface Kernels {
  full(shape: readonly number[], value: number, dtype: 'f32' | 'f64'): Tensor;
  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor;
  /** a * x + b elementwise (scalars a, b). */
  affine(x: Tensor, a: number, b: number): Tensor;
  unary(op: UnaryOp, x: Tensor): Tensor;
  /** dx of `unary(op, x) = y` for the upstream dy. */
  unaryBackward(op: UnaryOp, x: Tensor, y: Tensor, dy: Tensor): Tensor;
  /** Sums x down to `shape` (the inverse of broadcasting: size-1 or missing leading dims). */
  sumTo(x: Tensor, shape: readonly number[]): Tensor;
  broadcastTo(x: Tensor, shape: readonly number[]): Tensor;
  /** Max over the axes (kept as size 1). */
  maxTo(x: Tensor, shape: readonly number[]): Tensor;
  /** dx of maxTo: dy to the first maximal element of each reduced group. */
  maxToBackward(x: Tensor, y: Tensor, dy: Tensor): Tensor;
  /**
   * The index of the largest value along the last axis (the first on ties; NaN never wins; 0
   * for a row with nothing above -Infinity), i32 of shape x.shape[:-1]. Not differentiable.
   */
  argmax(x: Tensor): Tensor;
  /** [..., M, K] x [..., K, N] (after the transposes), batch dims broadcast. */
  matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor;
  softmax(x: Tensor): Tensor;
  softmaxBackward(y: Tensor, dy: Tensor): Tensor;
  logSoftmax(x: Tensor): Tensor;
  logSoftmaxBackward(y: Tensor, dy: Tensor): Tensor;
  layerNorm(
    x: Tensor,
    weight: Tensor | null,
    bias: Tensor | null,
    eps: number,
  ): { y: Tensor; mean: Tensor; rstd: Tensor };
  /**
   * Optional (inference): y_j = act(x W_j^T + b_j) for weights W_j [N_j, K] of one x [..., K]
   * (`biases` one per weight, or null), fused where the backend has a kernel for the shapes;
   * undefined, having run nothing, where it has none (nn composes matmul, add, act). What nn's
   * `linears` runs where no gradient is recorded.
   */
  linears?(
    x: Tensor,
    weights: readonly Tensor[],
    biases: readonly Tensor[] | null,
    act: UnaryOp | undefined,
  ): Tensor[] | undefined;
  /**
   * Optional (inference): sum = x + r and y = layerNorm(sum) (same shapes), without the
   * statistics; what nn's addLayerNorm runs where no gradient is recorded. A backend without it
   * gets add then layerNorm.
   */
  addLayerNorm?(
    x: Tensor,
    r: Tensor,
    weight: Tensor | null,
    bias: Tensor | null,
    eps: number,
  ): { sum: Tensor; y: Tensor };
  layerNormBackward(
    x: Tensor,
    weight: Tensor | null,
    mean: Tensor,
    rstd: Tensor,
    dy: Tensor,
  ): { dx: Tensor; dweight: Tensor; dbias: Tensor };
  rmsNorm(x: Tensor, weight: Tensor | null, eps: number): { y: Tensor; rstd: Tensor };
  rmsNormBackward(
    x: Tensor,
    weight: Tensor | null,
    rstd: Tensor,
    dy: Tensor,
  ): { dx: Tensor; dweight: Tensor };
  gather(weight: Tensor, ids: Tensor): Tensor;
  scatterAdd(ids: Tensor, dy: Tensor, rows: number): Tensor;
  /** Mean over rows whose target is not ignoreIndex (0 when every row is ignored). */
  crossEntropy(
    logits: Tensor,
    targets: Tensor,
    ignoreIndex: number,
  ): { loss: Tensor; lse: Tensor; count: number };
  crossEntropyBackward(
    logits: Tensor,
    targets: Tensor,
    lse: Tensor,
    dy: Tensor,
    ignoreIndex: number,
    count: number,
  ): Tensor;
  /** Rotate-half rotary embedding over the last dim, token axis -2; `inverse` rotates back. */
  rope(x: Tensor, sections: readonly RopeSection[], base: number, inverse: boolean): Tensor;
  reshape(x: Tensor, shape: readonly number[]): Tensor;
  permute(x: Tensor, dims: readonly number[]): Tensor;
  slice(x: Tensor, dim: number, start: number, end: number): Tensor;
  /** Zeros of `shape` with dy placed at [start, start + dy.shape[dim]) along dim. */
  sliceBackward(dy: Tensor, shape: readonly number[], dim: number, start: number): Tensor;
  concat(xs: readonly Tensor[], dim: number): Tensor;
  /** 0 or 1 / (1 - p) per element, drawn from rng. */
  dropoutMask(shape: readonly number[], p: number, rng: Rng, dtype: 'f32' | 'f64'): Tensor;
  attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    options: AttentionKernelOptions,
  ): { o: Tensor; lse: Tensor | undefined };
  /** o and lse: the forward's (softmax families); a pointwise family (sigmoid) reads neither. */
  attentionBackward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor | undefined,
    lse: Tensor | undefined,
    dO: Tensor,
    options: AttentionKernelOptions,
  ): { dq: Tensor; dk: Tensor; dv: Tensor };
  /**
   * Gated linear attention (Yang et al. 2024) on @attnkit/linear-attention's kernels, layout
   * BTHK: q, k, gk [B, T, H, K] (gk log-space gates <= 0), v [B, T, H, V] -> o [B, T, H, V] and,
   * with outputFinalState, finalState [B, H, K, V] (f32; f64 for f64 inputs).
   */
  gla(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gk: Tensor,
    options: GlaKernelOptions,
  ): { o: Tensor; finalState?: Tensor };
  /** dq, dk, dv, dgk of `gla` for the upstream dO (the initial state, if any, in options). */
  glaBackward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gk: Tensor,
    dO: Tensor,
    options: GlaKernelOptions,
  ): { dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor };
  /** Sum of squares as a host number (gradient clipping). */
  sumSquares(x: Tensor): number;
  sgdStep(p: Tensor, g: Tensor, buf: Tensor | null, h: SgdHyper): { p: Tensor; buf: Tensor | null };
  adamwStep(
    p: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    h: AdamWHyper,
  ): { p: Tensor; m: Tensor; v: Tensor };
}

export type KernelName = keyof Kernels;
