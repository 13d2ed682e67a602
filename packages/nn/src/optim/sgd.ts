import type { Tensor } from '@attnkit/tensor';
import type { Param } from '../autograd.js';
import type { kernelsFor } from '../dispatch.js';
import { checkHyper, Optimizer } from './optimizer.js';

export interface SgdOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

/** SGD with momentum, as PyTorch's torch.optim.SGD (coupled weight decay: g + wd p). */
export class SGD extends Optimizer {
  protected readonly slots = ['momentum_buffer'];
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
  constructor(params: Iterable<Param>, options: SgdOptions) {
    super('SGD', params, options?.lr);
    this.momentum = checkHyper('SGD', 'momentum', options.momentum ?? 0, 0);
    this.dampening = checkHyper('SGD', 'dampening', options.dampening ?? 0, 0, 1);
    this.weightDecay = checkHyper('SGD', 'weightDecay', options.weightDecay ?? 0, 0);
    this.nesterov = options.nesterov ?? false;
  }
  protected update(
    k: ReturnType<typeof kernelsFor>,
    p: Param,
    g: Tensor,
    s: Record<string, Tensor>,
  ) {
    const out = k.sgdStep(p.data, g, s.momentum_buffer ?? null, {
      lr: this.lr,
      momentum: this.momentum,
      dampening: this.dampening,
      weightDecay: this.weightDecay,
      nesterov: this.nesterov,
    });
    const old = [p.data, ...(out.buf && s.momentum_buffer ? [s.momentum_buffer] : [])];
    p.data = out.p;
    if (out.buf) s.momentum_buffer = out.buf;
    for (const t of old) t.dispose();
  }
}
