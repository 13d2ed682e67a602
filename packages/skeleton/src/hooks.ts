import type { AttentionProblem, ResolvedScoreMod } from '@attnkit/attention';

/**
 * The skeleton's hooks, shared by its three backends (TS kernel, WGSL generator, C++
 * templates). The mask rule is not a hook: it is spec.ts's `allowed` (band, block sparsity,
 * mask mod), carried by the AttentionProblem.
 *
 * - `normalize`: how a row of scores becomes weights.
 *     softmax: online max/sum, O = acc / l, LSE = m + log l (FA2 Algorithm 1); optional
 *              per-head sinks join l as e^(sink - m) (zero value vector). Backward:
 *              dS = P (dP - D), D_i = dO_i . O_i.
 *     sigmoid: w = sigmoid(s + bias[b]) (FlashSigmoid): no row statistics, no LSE, O = sum w v.
 *              Backward: dS = dP w (1 - w), no D pre-pass.
 * - `scoreMods`: applied in order to each score after the scale (mods.ts semantics); the
 *   backward multiplies dS by each mod's derivative at its input.
 * - `operands` (storage codec) is the dtype of the tensors (f32, f16/bf16 packed); `schedule`
 *   is the tile order and skipping the mask rule implies (band, block-sparse).
 */
export type NormalizeHook =
  | { kind: 'softmax'; sinks?: Float32Array | undefined }
  | { kind: 'sigmoid'; bias: Float32Array };

export interface TiledHooks {
  normalize: NormalizeHook;
  scoreMods: readonly ResolvedScoreMod[];
}

/** Plain FlashAttention: softmax, no mods. */
export const SOFTMAX_HOOKS: TiledHooks = { normalize: { kind: 'softmax' }, scoreMods: [] };

/** Sigmoid's bias per batch entry: the given constant, or -log(Nk) of each sequence (KERNELS.md). */
export function sigmoidBias(p: AttentionProblem, bias?: number): Float32Array {
  const out = new Float32Array(p.batch);
  for (let b = 0; b < p.batch; b++) {
    const nk = p.seqK[b]!;
    out[b] = bias ?? (nk > 0 ? -Math.log(nk) : 0);
  }
  return out;
}
