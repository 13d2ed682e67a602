import type { Tensor } from '@attnkit/tensor';
import type { AdamWHyper, SgdHyper } from '../table.js';
import { f32, out, run, tensorOf } from './engine.js';

/** The ts kernels' updates (PyTorch's SGD, AdamW), in double per element on the engine. */
export function sgdStep(pt: Tensor, gt: Tensor, buft: Tensor | null, h: SgdHyper) {
  const n = pt.size;
  const p = out(n);
  const buf = h.momentum !== 0 ? out(n) : null;
  const inputs: Record<string, Float32Array> = {
    p: f32(pt, 'sgd', 'param'),
    g: f32(gt, 'sgd', 'grad'),
  };
  if (buft) inputs.buf = f32(buft, 'sgd', 'momentum');
  run(
    'nn.sgd',
    {
      count: n,
      hasBuf: buft ? 1 : 0,
      momentumBuf: buf ? 1 : 0,
      lr: h.lr,
      momentum: h.momentum,
      dampening: h.dampening,
      weightDecay: h.weightDecay,
      nesterov: h.nesterov ? 1 : 0,
    },
    inputs,
    buf ? { p, buf } : { p },
  );
  return { p: tensorOf(p, pt.shape), buf: buf && tensorOf(buf, pt.shape) };
}

export function adamwStep(pt: Tensor, gt: Tensor, mt: Tensor, vt: Tensor, h: AdamWHyper) {
  const n = pt.size;
  const [p, m, v] = [out(n), out(n), out(n)];
  run(
    'nn.adamw',
    {
      count: n,
      lr: h.lr,
      beta1: h.beta1,
      beta2: h.beta2,
      eps: h.eps,
      weightDecay: h.weightDecay,
      bc1: 1 - h.beta1 ** h.step,
      bc2: 1 - h.beta2 ** h.step,
    },
    {
      p: f32(pt, 'adamw', 'param'),
      g: f32(gt, 'adamw', 'grad'),
      m: f32(mt, 'adamw', 'exp_avg'),
      v: f32(vt, 'adamw', 'exp_avg_sq'),
    },
    { p, m, v },
  );
  return { p: tensorOf(p, pt.shape), m: tensorOf(m, pt.shape), v: tensorOf(v, pt.shape) };
}
