import { UnsupportedError } from '@attnkit/attention';
import { flashAttentionFamily } from '@attnkit/flash-attention';
import { sigmoidAttentionFamily } from '@attnkit/sigmoid-attention';
import type { TiledFamily, TiledOptions } from '@attnkit/skeleton';
import { DTypeError, type Tensor, ValueError } from '@attnkit/tensor';
import type { AttentionKernelOptions } from './table.js';

/**
 * The attention families nn's attention op runs, each a tiled family of the skeleton: its
 * `resolve` gives the problem and hooks that every backend's kernels run (the skeleton's TS
 * loop, the native engine's templates, the WGSL generator), so a family here is a name and a
 * dispatcher, never a kernel of nn's own.
 */
export interface AttentionFamily {
  readonly family: TiledFamily<TiledOptions>;
  /** Softmax: the forward writes the LSE and the backward reads o and lse. Pointwise: neither. */
  readonly lse: boolean;
}

const FAMILIES: Readonly<Record<string, AttentionFamily>> = {
  // FlashAttention-2 (softmax, online max and sum).
  flash: { family: flashAttentionFamily as TiledFamily<TiledOptions>, lse: true },
  // FlashSigmoid: w = sigmoid(scale q.k + b) with no row normalisation.
  sigmoid: { family: sigmoidAttentionFamily as TiledFamily<TiledOptions>, lse: false },
};

/** The family names nn's attention kernels run ('standard' is ops/standard-attention's). */
export const KERNEL_FAMILIES: readonly string[] = Object.keys(FAMILIES);

/**
 * The family `options.family` names and its options as the family takes them (no `family`;
 * sigmoid's `bias` from `sigmoidBias`). An unknown family is an UnsupportedError naming the
 * backend and the families there are, never another family's kernel; `f32Only` (the ts and
 * native kernels) makes a non-f32 q a DTypeError.
 */
export function attentionFamily(
  op: string,
  backend: string,
  q: Tensor,
  options: AttentionKernelOptions,
  f32Only: boolean,
): { fam: AttentionFamily; opts: TiledOptions & { bias?: number } } {
  const name = options.family;
  const fam = Object.hasOwn(FAMILIES, name) ? FAMILIES[name] : undefined;
  if (fam === undefined) {
    const why = `backend '${backend}' has no attention kernel for family '${name}' (available: ${KERNEL_FAMILIES.join(', ')}; 'standard' is nn's composed softmax)`;
    throw new UnsupportedError(`${op}: ${why}`, 'family', { [backend]: why });
  }
  if (f32Only && q.dtype !== 'f32')
    throw new DTypeError(
      `${op}: family '${name}' on backend '${backend}' takes f32 q, k, v, got ${q.dtype}`,
      'q',
    );
  const { family: _, sigmoidBias, ...rest } = options;
  const opts: TiledOptions & { bias?: number } = rest;
  if (sigmoidBias !== undefined) {
    if (name !== 'sigmoid')
      throw new ValueError(
        `${op}: sigmoidBias expected only with family 'sigmoid', got family '${name}'`,
        'sigmoidBias',
      );
    opts.bias = sigmoidBias;
  }
  return { fam, opts };
}
