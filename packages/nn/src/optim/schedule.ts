import { describe, ValueError } from '@attnkit/tensor';
import type { Param } from '../autograd.js';
import { backendFor, kernelsFor } from '../dispatch.js';

export interface WarmupCosineOptions {
  /** Peak learning rate, reached after `warmup` steps. */
  lr: number;
  warmup: number;
  /** Step at which the cosine reaches minLr (and stays). */
  total: number;
  minLr?: number;
}

/**
 * Linear warmup from lr / warmup to lr over `warmup` steps, then a half cosine down to minLr
 * at `total` (nanoGPT's get_lr). `step` counts from 0.
 */
export function warmupCosine(options: WarmupCosineOptions): (step: number) => number {
  const { lr, warmup, total, minLr = 0 } = options;
  for (const [name, v] of Object.entries({ lr, warmup, total, minLr }))
    if (typeof v !== 'number' || !(v >= 0))
      throw new ValueError(
        `warmupCosine: ${name} expected a non-negative number, got ${describe(v)}`,
        name,
      );
  if (total < warmup)
    throw new ValueError(`warmupCosine: total (${total}) expected >= warmup (${warmup})`, 'total');
  return (step) => {
    if (step < warmup) return (lr * (step + 1)) / warmup;
    if (step >= total) return minLr;
    const ratio = (step - warmup) / Math.max(total - warmup, 1);
    return minLr + 0.5 * (1 + Math.cos(Math.PI * ratio)) * (lr - minLr);
  };
}

/**
 * Scales every gradient by min(1, maxNorm / ||g||) where ||g|| is the norm of all gradients
 * together; returns ||g|| before clipping.
 */
export function clipGradNorm(params: Iterable<Param>, maxNorm: number): number {
  if (typeof maxNorm !== 'number' || !(maxNorm > 0))
    throw new ValueError(
      `clipGradNorm: maxNorm expected a positive number, got ${describe(maxNorm)}`,
      'maxNorm',
    );
  const withGrad = [...params].filter((p) => p.grad);
  let sq = 0;
  for (const p of withGrad)
    sq += kernelsFor('clipGradNorm', backendFor('clipGradNorm', [p.grad!])).sumSquares(p.grad!);
  const norm = Math.sqrt(sq);
  const factor = maxNorm / (norm + 1e-6);
  if (factor < 1)
    for (const p of withGrad)
      p.grad = kernelsFor('clipGradNorm', backendFor('clipGradNorm', [p.grad!])).affine(
        p.grad!,
        factor,
        0,
      );
  return norm;
}
