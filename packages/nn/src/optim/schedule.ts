import { describe, type Tensor, ValueError } from '@attnkit/tensor';
import { keep, noGrad, type Param, scope, type Var } from '../autograd.js';
import { backendFor, kernelsFor } from '../dispatch.js';
import { add, affine, exp, log, mul, relu } from '../ops/elementwise.js';
import { sum } from '../ops/reduce.js';

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
 * together; returns ||g|| before clipping. It reads the norm back to the host, which only the
 * cpu backends can do synchronously: on webgpu tensors use clipGradNormOnDevice.
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

/**
 * clipGradNorm without reading anything back: ||g|| and the factor min(1, maxNorm / (||g|| +
 * 1e-6)) are computed with nn's ops on the gradients' device and multiplied in, so it runs on
 * every backend, webgpu included (whose queue it never stalls). Returns ||g|| before clipping
 * as a one-element tensor on that device (read it with `await norm.toCpu()` when wanted; the
 * caller disposes it), or undefined when no parameter has a gradient. The same scaling as
 * clipGradNorm up to f32 rounding: norm = exp(log(sum g^2) / 2) and 1 / max(1, r) =
 * exp(-log(max(1, r))), since nn has no sqrt or reciprocal op.
 */
export function clipGradNormOnDevice(params: Iterable<Param>, maxNorm: number): Tensor | undefined {
  if (typeof maxNorm !== 'number' || !(maxNorm > 0))
    throw new ValueError(
      `clipGradNormOnDevice: maxNorm expected a positive number, got ${describe(maxNorm)}`,
      'maxNorm',
    );
  const withGrad = [...params].filter((p) => p.grad);
  if (withGrad.length === 0) return undefined;
  return scope(() =>
    noGrad(() => {
      let sq: Var | null = null;
      for (const p of withGrad) {
        const s = sum(mul(p.grad!, p.grad!));
        sq = sq ? add(sq, s) : s;
      }
      // 1e-30 keeps log finite for all-zero gradients (then norm ~1e-15 and the factor is 1).
      const norm = exp(affine(log(affine(sq!, 1, 1e-30)), 0.5));
      // r = (norm + 1e-6) / maxNorm; factor = 1 / max(1, r) = exp(-log(relu(r - 1) + 1)).
      const r1 = affine(norm, 1 / maxNorm, 1e-6 / maxNorm - 1);
      const factor = exp(affine(log(affine(relu(r1), 1, 1)), -1));
      for (const p of withGrad) {
        const old = p.grad!;
        p.grad = keep(mul(old, factor).data);
        old.dispose();
      }
      return keep(norm.data);
    }),
  );
}
