import type { Tensor } from '@attnkit/tensor';
import type { AdamWHyper, SgdHyper } from '../table.js';
import { alloc, dtypeOf, floatsOf, tensorOf } from './util.js';

/** PyTorch's SGD: g += wd p; buf = momentum buf + (1 - dampening) g (buf = g at first); p -= lr buf. */
export function sgdStep(pt: Tensor, gt: Tensor, buft: Tensor | null, h: SgdHyper) {
  const p = floatsOf(pt, 'sgd', 'param');
  const g = floatsOf(gt, 'sgd', 'grad');
  const old = buft && floatsOf(buft, 'sgd', 'momentum');
  const out = alloc(dtypeOf(pt), p.length);
  const buf = h.momentum !== 0 ? alloc(dtypeOf(pt), p.length) : null;
  for (let i = 0; i < p.length; i++) {
    let d = g[i]! + h.weightDecay * p[i]!;
    if (buf) {
      buf[i] = old ? h.momentum * old[i]! + (1 - h.dampening) * d : d;
      d = h.nesterov ? d + h.momentum * buf[i]! : buf[i]!;
    }
    out[i] = p[i]! - h.lr * d;
  }
  return { p: tensorOf(out, pt.shape), buf: buf && tensorOf(buf, pt.shape) };
}

/** AdamW (Loshchilov & Hutter 2019, Algorithm 2): decay p by lr wd, then the Adam step. */
export function adamwStep(pt: Tensor, gt: Tensor, mt: Tensor, vt: Tensor, h: AdamWHyper) {
  const p = floatsOf(pt, 'adamw', 'param');
  const g = floatsOf(gt, 'adamw', 'grad');
  const m0 = floatsOf(mt, 'adamw', 'exp_avg');
  const v0 = floatsOf(vt, 'adamw', 'exp_avg_sq');
  const dt = dtypeOf(pt);
  const [out, m, v] = [alloc(dt, p.length), alloc(dt, p.length), alloc(dt, p.length)];
  const bc1 = 1 - h.beta1 ** h.step;
  const bc2 = 1 - h.beta2 ** h.step;
  for (let i = 0; i < p.length; i++) {
    m[i] = h.beta1 * m0[i]! + (1 - h.beta1) * g[i]!;
    v[i] = h.beta2 * v0[i]! + (1 - h.beta2) * g[i]! * g[i]!;
    const mh = m[i]! / bc1;
    const vh = v[i]! / bc2;
    out[i] = p[i]! * (1 - h.lr * h.weightDecay) - (h.lr * mh) / (Math.sqrt(vh) + h.eps);
  }
  return { p: tensorOf(out, pt.shape), m: tensorOf(m, pt.shape), v: tensorOf(v, pt.shape) };
}
