import type { Tensor } from '@attnkit/tensor';
import type { Param } from '../autograd.js';
import type { kernelsFor } from '../dispatch.js';
import { checkHyper, Optimizer, stateDtype } from './optimizer.js';

export interface AdamWOptions {
  lr: number;
  betas?: readonly [number, number];
  eps?: number;
  /** Decoupled weight decay (default 0.01, as PyTorch). */
  weightDecay?: number;
}

/** AdamW (Loshchilov & Hutter 2019): Adam with weight decay applied to p, not to g. */
export class AdamW extends Optimizer {
  protected readonly slots = ['exp_avg', 'exp_avg_sq'];
  betas: readonly [number, number];
  eps: number;
  weightDecay: number;
  constructor(params: Iterable<Param>, options: AdamWOptions) {
    super('AdamW', params, options?.lr);
    const [b1, b2] = options.betas ?? [0.9, 0.999];
    this.betas = [
      checkHyper('AdamW', 'betas[0]', b1, 0, 1),
      checkHyper('AdamW', 'betas[1]', b2, 0, 1),
    ];
    this.eps = checkHyper('AdamW', 'eps', options.eps ?? 1e-8, 0);
    this.weightDecay = checkHyper('AdamW', 'weightDecay', options.weightDecay ?? 0.01, 0);
  }
  protected update(
    k: ReturnType<typeof kernelsFor>,
    p: Param,
    g: Tensor,
    s: Record<string, Tensor>,
  ) {
    const zeros = () => k.full(p.shape, 0, stateDtype(p.dtype));
    const [m, v] = [s.exp_avg ?? zeros(), s.exp_avg_sq ?? zeros()];
    const old = p.data;
    const out = k.adamwStep(old, g, m, v, {
      lr: this.lr,
      beta1: this.betas[0],
      beta2: this.betas[1],
      eps: this.eps,
      weightDecay: this.weightDecay,
      step: this.stepCount,
    });
    p.data = out.p;
    s.exp_avg = out.m;
    s.exp_avg_sq = out.v;
    for (const t of [old, m, v]) t.dispose();
  }
}
