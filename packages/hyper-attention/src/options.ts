import { type AttentionProblem, resolveAttentionProblem } from '@attnkit/attention';
import { DTypeError, describe, type Tensor, ValueError } from '@attnkit/tensor';
import { MAX_PROJECTIONS } from './lsh.js';

/**
 * Where the exact pieces run: the FlashAttention kernels of @attnkit/flash-attention, 'ts' or
 * 'native' on cpu tensors, 'webgpu' (the whole algorithm in WGSL) on webgpu tensors.
 */
export type HyperBackend = 'ts' | 'native' | 'webgpu';

export interface HyperAttentionOptions {
  /** Keys per sorted diagonal block (default 256, the paper's); a positive integer. */
  blockSize?: number;
  /** Keys drawn uniformly for the residual (default 256); 0 = diagonal blocks only. */
  sampleSize?: number;
  /** Hyperplanes of the angular LSH (default 7: 128 buckets); an integer in [1, 30]. */
  numProjections?: number;
  /**
   * Exact attention below this length (default 4096): non-causal when Nq < minSeqLen, causal
   * squares of side <= minSeqLen (the recursion's leaves). A positive integer.
   */
  minSeqLen?: number;
  /** Bottom-right aligned causal mask (KERNELS.md "Common"), through the paper's recursion. */
  causal?: boolean;
  /** Seed of the hyperplanes and the samples (a safe integer, default 0). */
  seed?: number;
  /** Softmax scale; default 1/sqrt(D). */
  scale?: number;
  /** Also return the LSE of the estimate (log of the estimated softmax denominator). */
  returnLse?: boolean;
  /** Default: webgpu for webgpu tensors; for cpu tensors native when its addon loads, else ts. */
  backend?: HyperBackend;
}

export interface HyperAttentionResult {
  /** [B, Hq, Nq, Dv], q's dtype. */
  o: Tensor;
  /** With returnLse: [B, Hq, Nq] f32, natural log; -Infinity for a row without keys. */
  lse?: Tensor;
}

export interface ResolvedHyper {
  p: AttentionProblem;
  blockSize: number;
  sampleSize: number;
  numProjections: number;
  minSeqLen: number;
  causal: boolean;
  seed: number;
  returnLse: boolean;
}

export const HYPER_DEFAULTS = {
  blockSize: 256,
  sampleSize: 256,
  numProjections: 7,
  minSeqLen: 4096,
  seed: 0,
} as const;

const KNOWN = new Set([
  'blockSize',
  'sampleSize',
  'numProjections',
  'minSeqLen',
  'causal',
  'seed',
  'scale',
  'returnLse',
  'backend',
]);

function integer(value: unknown, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new ValueError(`${name}: expected an integer ${range}, got ${describe(value)}`, name);
  }
  return value;
}

/** Validates the inputs and options (typed errors naming the argument). */
export function resolveHyper(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: HyperAttentionOptions,
): ResolvedHyper {
  if (options === null || typeof options !== 'object' || Array.isArray(options))
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key))
      throw new ValueError(
        `${key}: expected one of ${[...KNOWN].join(', ')} (hyperAttention takes BHND inputs without window, masks or varlen), got an unknown option`,
        key,
      );
  }
  const p = resolveAttentionProblem(q, k, v, { scale: options.scale, causal: options.causal });
  if (q.dtype === 'f64')
    throw new DTypeError(
      'q: expected f32, f16 or bf16 (the kernels compute in f32), got f64; for float64 results use softmaxAttentionReference from @attnkit/attention',
      'q',
    );
  const returnLse = options.returnLse ?? false;
  if (typeof returnLse !== 'boolean')
    throw new ValueError(`returnLse: expected a boolean, got ${describe(returnLse)}`, 'returnLse');
  const seed = options.seed ?? HYPER_DEFAULTS.seed;
  if (!Number.isSafeInteger(seed))
    throw new ValueError(`seed: expected a safe integer, got ${describe(seed)}`, 'seed');
  return {
    p,
    blockSize: integer(options.blockSize ?? HYPER_DEFAULTS.blockSize, 'blockSize', 1),
    sampleSize: integer(options.sampleSize ?? HYPER_DEFAULTS.sampleSize, 'sampleSize', 0),
    numProjections: integer(
      options.numProjections ?? HYPER_DEFAULTS.numProjections,
      'numProjections',
      1,
      MAX_PROJECTIONS,
    ),
    minSeqLen: integer(options.minSeqLen ?? HYPER_DEFAULTS.minSeqLen, 'minSeqLen', 1),
    causal: p.causal,
    seed,
    returnLse,
  };
}
