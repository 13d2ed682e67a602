import type { Tensor } from '@attnkit/tensor';
import type { AdamWHyper, SgdHyper } from '../table.js';
import { gpuContext } from './context.js';
import { Params, runMap } from './program.js';
import { output, storageOf } from './queue.js';

/** PyTorch's SGD, as the ts kernel: one map kernel writing the parameter and the momentum. */
export function sgdStep(p: Tensor, g: Tensor, buf: Tensor | null, h: SgdHyper) {
  const ctx = gpuContext('sgd');
  storageOf(p, 'sgd', 'param', ctx);
  storageOf(g, 'sgd', 'grad', ctx);
  if (buf) storageOf(buf, 'sgd', 'momentum', ctx);
  const out = output(ctx, p.shape, p.dtype);
  const nextBuf = h.momentum !== 0 ? output(ctx, p.shape, buf?.dtype ?? 'f32') : null;
  const momentum = !nextBuf
    ? ''
    : `let b = ${buf ? 'pf(5u) * ld_buf(e) + pf(6u) * d' : 'd'};
  d = ${h.nesterov ? 'd + pf(5u) * b' : 'b'};
  bn = b;`;
  runMap(
    ctx,
    'sgd',
    [
      { name: 'p', t: p },
      { name: 'g', t: g },
      ...(buf && nextBuf ? [{ name: 'buf', t: buf }] : []),
    ],
    nextBuf ? [out, nextBuf] : [out],
    `let pv = ld_p(e);
  var d = ld_g(e) + pf(7u) * pv;
  var bn = 0.0;
  ${momentum}
  return vec4<f32>(pv - pf(4u) * d, bn, 0.0, 0.0);`,
    new Params()
      .fl(4, h.lr)
      .fl(5, h.momentum)
      .fl(6, 1 - h.dampening)
      .fl(7, h.weightDecay),
  );
  return { p: out, buf: nextBuf };
}

/** AdamW (Loshchilov & Hutter 2019, Algorithm 2): one map kernel writing p, m and v. */
export function adamwStep(p: Tensor, g: Tensor, m: Tensor, v: Tensor, h: AdamWHyper) {
  const ctx = gpuContext('adamw');
  storageOf(p, 'adamw', 'param', ctx);
  storageOf(g, 'adamw', 'grad', ctx);
  storageOf(m, 'adamw', 'exp_avg', ctx);
  storageOf(v, 'adamw', 'exp_avg_sq', ctx);
  const [po, mo, vo] = [
    output(ctx, p.shape, p.dtype),
    output(ctx, p.shape, m.dtype),
    output(ctx, p.shape, v.dtype),
  ];
  runMap(
    ctx,
    'adamw',
    [
      { name: 'p', t: p },
      { name: 'g', t: g },
      { name: 'm', t: m },
      { name: 'v', t: v },
    ],
    [po, mo, vo],
    `let gv = ld_g(e);
  let mn = pf(4u) * ld_m(e) + pf(5u) * gv;
  let vn = pf(6u) * ld_v(e) + pf(7u) * gv * gv;
  let pn = ld_p(e) * pf(8u) - pf(9u) * (mn / pf(10u)) / (sqrt(vn / pf(11u)) + pf(12u));
  return vec4<f32>(pn, mn, vn, 0.0);`,
    new Params()
      .fl(4, h.beta1)
      .fl(5, 1 - h.beta1)
      .fl(6, h.beta2)
      .fl(7, 1 - h.beta2)
      .fl(8, 1 - h.lr * h.weightDecay)
      .fl(9, h.lr)
      .fl(10, 1 - h.beta1 ** h.step)
      .fl(11, 1 - h.beta2 ** h.step)
      .fl(12, h.eps),
  );
  return { p: po, m: mo, v: vo };
}
