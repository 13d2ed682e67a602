import type { AttentionProblem } from '@attnkit/attention';
import {
  defineTiledFamily,
  sigmoidBias,
  type TiledFamily,
  type TiledOptions,
} from '@attnkit/skeleton';
import { DTypeError, describe, type Tensor, ValueError } from '@attnkit/tensor';

/**
 * Sigmoid attention (Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid
 * Self-Attention", 2024) and its FlashSigmoid kernels:
 *
 *     O = (sigmoid(scale Q K^T + b) masked) V,   b = -log(Nk) by default
 *
 * No row normalisation and no LSE, so every tile's weights are final as soon as they are
 * computed. On the tiled skeleton this family is one hook (pointwise sigmoid) and its
 * registrations: the same loops as FlashAttention on the ts, native and webgpu backends.
 */
export interface SigmoidAttentionOptions extends TiledOptions {
  /**
   * b in sigmoid(S + b). Default -log(Nk) of each sequence (the paper's choice: keeps the row
   * sums near 1 at initialisation, like softmax's).
   */
  bias?: number;
}

function sigmoidHook(p: AttentionProblem, options: SigmoidAttentionOptions) {
  const b = options.bias as unknown;
  if (b !== undefined && (typeof b !== 'number' || !Number.isFinite(b))) {
    throw new ValueError(`bias: expected a finite number, got ${describe(b)}`, 'bias');
  }
  return { kind: 'sigmoid' as const, bias: sigmoidBias(p, b as number | undefined) };
}

const family = defineTiledFamily<SigmoidAttentionOptions>({
  family: 'sigmoid',
  normalize: sigmoidHook,
  extraOptions: ['bias'],
  forwardOutputs: ['o'],
});

/**
 * The family's dispatcher (resolve, forward, backward, and the synchronous WebGPU encoders):
 * what a layer that runs attention synchronously builds on (@attnkit/nn's attention op with
 * family 'sigmoid'). sigmoidAttention / sigmoidAttentionBackward are the user-facing entry points.
 */
export const sigmoidAttentionFamily: TiledFamily<SigmoidAttentionOptions> = family;

function f64Guard(q: Tensor): void {
  if (q && (q as Tensor).dtype === 'f64') {
    throw new DTypeError(
      'q: expected f32, f16 or bf16 (the kernels compute in f32), got f64; for float64 results use sigmoidAttentionReference from @attnkit/attention',
      'q',
    );
  }
}

/**
 * Sigmoid attention forward. q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (or THD
 * with cuSeqlensQ/K); causal, window, GQA, varlen, Dv != D, block-sparse, score and mask mods.
 * Returns o in q's layout and dtype. The backend follows the inputs' device unless `backend`
 * names one.
 */
export async function sigmoidAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: SigmoidAttentionOptions = {},
): Promise<{ o: Tensor }> {
  f64Guard(q);
  const { o } = await family.forward(q, k, v, options);
  return { o };
}

/**
 * Gradients of sigmoid attention for the upstream gradient dO (shape of o): with
 * w = sigmoid(S + b), dV = w^T dO, dS = (dO V^T) w (1 - w), dQ = scale dS K, dK = scale dS^T Q
 * (dk, dv summed over the query heads of a group). The forward's o is not needed.
 */
export async function sigmoidAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  dO: Tensor,
  options: SigmoidAttentionOptions = {},
): Promise<{ dq: Tensor; dk: Tensor; dv: Tensor }> {
  f64Guard(q);
  const { dq, dk, dv } = await family.backward(q, k, v, undefined, undefined, dO, options);
  return { dq, dk, dv };
}
