import { formatShape, ShapeError, type Tensor } from '@attnkit/tensor';
import { rowsCols } from '../ts/util.js';
import { gpuContext } from './context.js';
import { binary } from './elementwise.js';
import { Params, runMap, runRows } from './program.js';
import { type GpuFloat, output, type QueuedStorage, storageOf } from './queue.js';
import { sumAs, sumTo } from './reduce.js';

/**
 * Softmax, the norms and cross-entropy as two passes each: a row kernel (one workgroup per row)
 * writes f32 statistics (max and sum, mean and rstd, ...), then a map kernel writes every
 * element from them, so f16 outputs are written a whole u32 word per thread whatever the row
 * width. Weight and bias gradients are column sums (sumTo) of f32 products.
 */

const LOOP = (body: string) => `for (var j = li; j < cols; j = j + 256u) { ${body} }`;

function check(op: string, ts: readonly [Tensor | null, string][]): void {
  const ctx = gpuContext(op);
  for (const [t, name] of ts) if (t) storageOf(t, op, name, ctx);
}

function checkChannels(op: string, name: string, t: Tensor | null, cols: number): void {
  if (t && (t.ndim !== 1 || t.shape[0] !== cols))
    throw new ShapeError(`${op}: ${name} expected [${cols}], got ${formatShape(t.shape)}`, name);
}

/** Per-row max and sum of exp(x - max) into [rows, 2] f32. */
function softmaxStats(x: Tensor): Tensor {
  const ctx = gpuContext('softmax');
  const [rows, cols] = rowsCols(x.shape);
  const stats = output(ctx, [rows, 2], 'f32');
  runRows(
    ctx,
    'softmax stats',
    [{ name: 'x', t: x }],
    [stats],
    rows,
    cols,
    `  var m = ninf();
  ${LOOP('m = max(m, ld_x(o + j));')}
  m = wmax(li, m);
  var s = 0.0;
  if (m > ninf()) { ${LOOP('s = s + exp(ld_x(o + j) - m);')} }
  s = wsum(li, s);
  if (li == 0u) { o0[2u * row] = m; o0[2u * row + 1u] = s; }`,
    new Params(),
  );
  return stats;
}

/**
 * Per row, the index of the largest value (the first on ties; NaN never wins, as `v > m` is
 * false for it; 0 for a row with nothing above -Infinity): the row's max, then the smallest
 * column that holds it (a workgroup min over f32 column numbers, exact below 2^24 columns).
 */
export function argmax(x: Tensor): Tensor {
  check('argmax', [[x, 'x']]);
  const ctx = gpuContext('argmax');
  const cols = x.shape.at(-1) ?? 1;
  if (x.ndim === 0 || cols === 0 || cols >= 2 ** 24)
    throw new ShapeError(
      `argmax: x expected at least one dim with a last dim in [1, 2^24), got ${formatShape(x.shape)}`,
      'x',
    );
  const [rows] = rowsCols(x.shape);
  const out = output(ctx, x.shape.slice(0, -1), 'i32');
  runRows(
    ctx,
    'argmax',
    [{ name: 'x', t: x }],
    [out],
    rows,
    cols,
    `  var m = ninf();
  ${LOOP('let v = ld_x(o + j); if (v > m) { m = v; }')}
  m = wmax(li, m);
  var first = f32(cols);
  // A row of -Infinity (and NaN) has no larger value than the first: 0, as the scan's.
  if (m > ninf()) { ${LOOP('if (ld_x(o + j) == m) { first = min(first, f32(j)); }')} }
  first = -wmax(li, -first);
  if (li == 0u) { o0[row] = select(0, i32(first), first < f32(cols)); }`,
    new Params(),
  );
  return out;
}

export function softmax(x: Tensor): Tensor {
  check('softmax', [[x, 'x']]);
  const ctx = gpuContext('softmax');
  const stats = softmaxStats(x);
  const y = output(ctx, x.shape, x.dtype);
  const [, cols] = rowsCols(x.shape);
  runMap(
    ctx,
    'softmax',
    [
      { name: 'x', t: x },
      { name: 's', t: stats },
    ],
    [y],
    // A row of -Infinity (fully masked) gives zeros, not NaN.
    `let r = e / pu(4u);
  let m = ld_s(2u * r);
  if (m == ninf()) { return vec4<f32>(0.0); }
  return vec4<f32>(exp(ld_x(e) - m) / ld_s(2u * r + 1u));`,
    new Params().u(4, cols),
  );
  stats.dispose();
  return y;
}

export function logSoftmax(x: Tensor): Tensor {
  check('logSoftmax', [[x, 'x']]);
  const ctx = gpuContext('logSoftmax');
  const stats = softmaxStats(x);
  const y = output(ctx, x.shape, x.dtype);
  const [, cols] = rowsCols(x.shape);
  runMap(
    ctx,
    'logSoftmax',
    [
      { name: 'x', t: x },
      { name: 's', t: stats },
    ],
    [y],
    `let r = e / pu(4u);
  return vec4<f32>(ld_x(e) - (ld_s(2u * r) + log(ld_s(2u * r + 1u))));`,
    new Params().u(4, cols),
  );
  stats.dispose();
  return y;
}

/** Per-row sum of f(y, dy) into [rows] f32. */
function rowSum(op: string, y: Tensor, dy: Tensor, expr: string): Tensor {
  const ctx = gpuContext(op);
  const [rows, cols] = rowsCols(y.shape);
  const out = output(ctx, [rows], 'f32');
  runRows(
    ctx,
    `${op} stats`,
    [
      { name: 'y', t: y },
      { name: 'dy', t: dy },
    ],
    [out],
    rows,
    cols,
    `  var s = 0.0;
  ${LOOP(`s = s + ${expr};`)}
  s = wsum(li, s);
  if (li == 0u) { o0[row] = s; }`,
    new Params(),
  );
  return out;
}

function rowMap(op: string, y: Tensor, dy: Tensor, stat: Tensor, expr: string): Tensor {
  const ctx = gpuContext(op);
  const out = output(ctx, y.shape, y.dtype);
  runMap(
    ctx,
    op,
    [
      { name: 'y', t: y },
      { name: 'dy', t: dy },
      { name: 's', t: stat },
    ],
    [out],
    `let s = ld_s(e / pu(4u));\n  let y = ld_y(e);\n  let dy = ld_dy(e);\n  return vec4<f32>(${expr});`,
    new Params().u(4, rowsCols(y.shape)[1]),
  );
  stat.dispose();
  return out;
}

export function softmaxBackward(y: Tensor, dy: Tensor): Tensor {
  check('softmax', [
    [y, 'y'],
    [dy, 'dy'],
  ]);
  const dot = rowSum('softmax backward', y, dy, 'ld_y(o + j) * ld_dy(o + j)');
  return rowMap('softmax backward', y, dy, dot, 'y * (dy - s)');
}

export function logSoftmaxBackward(y: Tensor, dy: Tensor): Tensor {
  check('logSoftmax', [
    [y, 'y'],
    [dy, 'dy'],
  ]);
  const sum = rowSum('logSoftmax backward', y, dy, 'ld_dy(o + j)');
  return rowMap('logSoftmax backward', y, dy, sum, 'dy - exp(y) * s');
}

/** The inputs and WGSL of an optional per-channel tensor c (weight or bias). */
const channel = (name: string, t: Tensor | null, absent: string) =>
  t ? { inputs: [{ name, t }], wgsl: `ld_${name}(e % pu(4u))` } : { inputs: [], wgsl: absent };

/**
 * A row's mean `mu` and 1 / sqrt(var + eps) `rs` (two passes over the row's elements `el`, a WGSL
 * expression of j): the arithmetic of every layerNorm kernel here, the fused addLayerNorm's too.
 */
const rowMoments = (el: string) => `  var s = 0.0;
  ${LOOP(`s = s + ${el};`)}
  let mu = wsum(li, s) / f32(cols);
  var v = 0.0;
  ${LOOP(`let d = ${el} - mu; v = v + d * d;`)}
  let rs = inverseSqrt(wsum(li, v) / f32(cols) + pf(4u));`;

/** The row's `el` normalised into out[o + j], scaled by ld_w and shifted by ld_b when given. */
const normedRow = (el: string, out: string, w: Tensor | null, b: Tensor | null) =>
  LOOP(`${out}[o + j] = (${el} - mu) * rs * ${w ? 'ld_w(j)' : '1.0'} + ${b ? 'ld_b(j)' : '0.0'};`);

/** A row's mean and 1 / sqrt(var + eps), into o0[row] and o1[row]. */
const LAYER_NORM_STATS = `${rowMoments('ld_x(o + j)')}
  if (li == 0u) { o0[row] = mu; o1[row] = rs; }`;

export function layerNorm(x: Tensor, w: Tensor | null, b: Tensor | null, eps: number) {
  check('layerNorm', [
    [x, 'x'],
    [w, 'weight'],
    [b, 'bias'],
  ]);
  const ctx = gpuContext('layerNorm');
  const [rows, cols] = rowsCols(x.shape);
  checkChannels('layerNorm', 'weight', w, cols);
  checkChannels('layerNorm', 'bias', b, cols);
  const rowShape = x.shape.slice(0, -1);
  const mean = output(ctx, rowShape, 'f32');
  const rstd = output(ctx, rowShape, 'f32');
  if (x.dtype === 'f32') {
    // One pass: the row's workgroup writes y after its statistics (a decoded token's 25
    // layerNorms were 50 of its passes). f16 outputs are written in pairs by the map kernel.
    const y = output(ctx, x.shape, 'f32');
    const ws = [...(w ? [{ name: 'w', t: w }] : []), ...(b ? [{ name: 'b', t: b }] : [])];
    runRows(
      ctx,
      'layerNorm',
      [{ name: 'x', t: x }, ...ws],
      [mean, rstd, y],
      rows,
      cols,
      `${LAYER_NORM_STATS}
  ${normedRow('ld_x(o + j)', 'o2', w, b)}`,
      new Params().fl(4, eps),
    );
    return { y, mean, rstd };
  }
  runRows(
    ctx,
    'layerNorm stats',
    [{ name: 'x', t: x }],
    [mean, rstd],
    rows,
    cols,
    LAYER_NORM_STATS,
    new Params().fl(4, eps),
  );
  const y = output(ctx, x.shape, x.dtype);
  const cw = channel('w', w, '1.0');
  const cb = channel('b', b, '0.0');
  runMap(
    ctx,
    'layerNorm',
    [
      { name: 'x', t: x },
      { name: 'mean', t: mean },
      { name: 'rstd', t: rstd },
      ...cw.inputs,
      ...cb.inputs,
    ],
    [y],
    `let r = e / pu(4u);
  return vec4<f32>((ld_x(e) - ld_mean(r)) * ld_rstd(r) * ${cw.wgsl} + ${cb.wgsl});`,
    new Params().u(4, cols),
  );
  return { y, mean, rstd };
}

/**
 * sum = x + r and y = layerNorm(sum) (nn's addLayerNorm where no gradient is recorded: a
 * block's residual add and the next norm). f32: one pass that writes sum, then reads its own
 * elements back for the statistics and y (rowMoments, normedRow): the arithmetic of
 * binary('add') then layerNorm's one-pass kernel, bitwise, with no statistics written (a decoded token's 24 residual adds were
 * passes of their own). f16: those two kernels.
 */
export function addLayerNorm(
  x: Tensor,
  r: Tensor,
  w: Tensor | null,
  b: Tensor | null,
  eps: number,
): { sum: Tensor; y: Tensor } {
  check('addLayerNorm', [
    [x, 'x'],
    [r, 'r'],
    [w, 'weight'],
    [b, 'bias'],
  ]);
  if (x.shape.join() !== r.shape.join())
    throw new ShapeError(
      `addLayerNorm: r expected x's shape ${formatShape(x.shape)}, got ${formatShape(r.shape)}`,
      'r',
    );
  const ctx = gpuContext('addLayerNorm');
  const [rows, cols] = rowsCols(x.shape);
  checkChannels('addLayerNorm', 'weight', w, cols);
  checkChannels('addLayerNorm', 'bias', b, cols);
  if (x.dtype !== 'f32' || r.dtype !== 'f32') {
    const sum = binary('add', x, r);
    const { y, mean, rstd } = layerNorm(sum, w, b, eps);
    // Released once the queued kernels are submitted (the pool's fence).
    mean.dispose();
    rstd.dispose();
    return { sum, y };
  }
  const sum = output(ctx, x.shape, 'f32');
  const y = output(ctx, x.shape, 'f32');
  const ws = [...(w ? [{ name: 'w', t: w }] : []), ...(b ? [{ name: 'b', t: b }] : [])];
  runRows(
    ctx,
    'addLayerNorm',
    [{ name: 'x', t: x }, { name: 'r', t: r }, ...ws],
    [sum, y],
    rows,
    cols,
    // Each invocation reads back only the elements it wrote (the same j stride), so no barrier.
    `  ${LOOP('o0[o + j] = ld_x(o + j) + ld_r(o + j);')}
${rowMoments('o0[o + j]')}
  ${normedRow('o0[o + j]', 'o1', w, b)}`,
    new Params().fl(4, eps),
  );
  return { sum, y };
}

export function layerNormBackward(
  x: Tensor,
  w: Tensor | null,
  mean: Tensor,
  rstd: Tensor,
  dy: Tensor,
) {
  check('layerNorm', [
    [x, 'x'],
    [w, 'weight'],
    [mean, 'mean'],
    [rstd, 'rstd'],
    [dy, 'dy'],
  ]);
  const ctx = gpuContext('layerNorm');
  const [rows, cols] = rowsCols(x.shape);
  const cw = channel('w', w, '1.0');
  const wj = w ? 'ld_w(j)' : '1.0';
  const inputs = [
    { name: 'x', t: x },
    { name: 'mean', t: mean },
    { name: 'rstd', t: rstd },
    { name: 'dy', t: dy },
    ...cw.inputs,
  ];
  // dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * w.
  const stats = output(ctx, [rows, 2], 'f32');
  runRows(
    ctx,
    'layerNorm backward stats',
    inputs,
    [stats],
    rows,
    cols,
    `  let mu = ld_mean(row);
  let rs = ld_rstd(row);
  var mg = 0.0;
  var mgx = 0.0;
  ${LOOP(`let g = ld_dy(o + j) * ${wj}; mg = mg + g; mgx = mgx + g * (ld_x(o + j) - mu) * rs;`)}
  mg = wsum(li, mg) / f32(cols);
  mgx = wsum(li, mgx) / f32(cols);
  if (li == 0u) { o0[2u * row] = mg; o0[2u * row + 1u] = mgx; }`,
    new Params(),
  );
  const dx = output(ctx, x.shape, x.dtype);
  const dyxh = output(ctx, x.shape, 'f32');
  runMap(
    ctx,
    'layerNorm backward',
    [...inputs, { name: 's', t: stats }],
    [dx, dyxh],
    `let r = e / pu(4u);
  let rs = ld_rstd(r);
  let xh = (ld_x(e) - ld_mean(r)) * rs;
  let dy = ld_dy(e);
  let g = dy * ${cw.wgsl};
  return vec4<f32>(rs * (g - ld_s(2u * r) - xh * ld_s(2u * r + 1u)), dy * xh, 0.0, 0.0);`,
    new Params().u(4, cols),
  );
  stats.dispose();
  const dt = x.dtype as GpuFloat;
  const dweight = columnSum(dyxh, cols, dt);
  const dbias = columnSum(dy, cols, dt);
  // One row: the column sum is dyxh itself (sumTo returns its input when nothing is summed).
  if (dweight.storage !== dyxh.storage) dyxh.dispose();
  return { dx, dweight, dbias };
}

/** Sum over every row of [rows, cols] -> [cols] in dtype. */
function columnSum(t: Tensor, cols: number, dtype: GpuFloat): Tensor {
  return sumAs(t.reshape([t.size / Math.max(cols, 1), cols]), [cols], dtype);
}

/** A row's 1 / sqrt(mean(x^2) + eps) into o0[row]. */
const RMS_NORM_STATS = `  var s = 0.0;
  ${LOOP('let v = ld_x(o + j); s = s + v * v;')}
  let rs = inverseSqrt(wsum(li, s) / f32(cols) + pf(4u));
  if (li == 0u) { o0[row] = rs; }`;

export function rmsNorm(x: Tensor, w: Tensor | null, eps: number) {
  check('rmsNorm', [
    [x, 'x'],
    [w, 'weight'],
  ]);
  const ctx = gpuContext('rmsNorm');
  const [rows, cols] = rowsCols(x.shape);
  checkChannels('rmsNorm', 'weight', w, cols);
  const rstd = output(ctx, x.shape.slice(0, -1), 'f32');
  if (x.dtype === 'f32') {
    // One pass, as layerNorm's.
    const y = output(ctx, x.shape, 'f32');
    runRows(
      ctx,
      'rmsNorm',
      [{ name: 'x', t: x }, ...(w ? [{ name: 'w', t: w }] : [])],
      [rstd, y],
      rows,
      cols,
      `${RMS_NORM_STATS}
  ${LOOP(`o1[o + j] = ld_x(o + j) * rs * ${w ? 'ld_w(j)' : '1.0'};`)}`,
      new Params().fl(4, eps),
    );
    return { y, rstd };
  }
  runRows(
    ctx,
    'rmsNorm stats',
    [{ name: 'x', t: x }],
    [rstd],
    rows,
    cols,
    RMS_NORM_STATS,
    new Params().fl(4, eps),
  );
  const y = output(ctx, x.shape, x.dtype);
  const cw = channel('w', w, '1.0');
  runMap(
    ctx,
    'rmsNorm',
    [{ name: 'x', t: x }, { name: 'rstd', t: rstd }, ...cw.inputs],
    [y],
    `return vec4<f32>(ld_x(e) * ld_rstd(e / pu(4u)) * ${cw.wgsl});`,
    new Params().u(4, cols),
  );
  return { y, rstd };
}

export function rmsNormBackward(x: Tensor, w: Tensor | null, rstd: Tensor, dy: Tensor) {
  check('rmsNorm', [
    [x, 'x'],
    [w, 'weight'],
    [rstd, 'rstd'],
    [dy, 'dy'],
  ]);
  const ctx = gpuContext('rmsNorm');
  const [rows, cols] = rowsCols(x.shape);
  const cw = channel('w', w, '1.0');
  const wj = w ? 'ld_w(j)' : '1.0';
  const inputs = [
    { name: 'x', t: x },
    { name: 'rstd', t: rstd },
    { name: 'dy', t: dy },
    ...cw.inputs,
  ];
  // dx = rstd (g - xhat mean(g xhat)), g = dy * w, xhat = x rstd.
  const stats = output(ctx, [rows], 'f32');
  runRows(
    ctx,
    'rmsNorm backward stats',
    inputs,
    [stats],
    rows,
    cols,
    `  let rs = ld_rstd(row);
  var s = 0.0;
  ${LOOP(`s = s + ld_dy(o + j) * ${wj} * ld_x(o + j) * rs;`)}
  s = wsum(li, s) / f32(cols);
  if (li == 0u) { o0[row] = s; }`,
    new Params(),
  );
  const dx = output(ctx, x.shape, x.dtype);
  const dyxh = output(ctx, x.shape, 'f32');
  runMap(
    ctx,
    'rmsNorm backward',
    [...inputs, { name: 's', t: stats }],
    [dx, dyxh],
    `let r = e / pu(4u);
  let rs = ld_rstd(r);
  let x = ld_x(e);
  let dy = ld_dy(e);
  return vec4<f32>(rs * (dy * ${cw.wgsl} - x * rs * ld_s(r)), dy * x * rs, 0.0, 0.0);`,
    new Params().u(4, cols),
  );
  stats.dispose();
  const dweight = columnSum(dyxh, cols, x.dtype as GpuFloat);
  if (dweight.storage !== dyxh.storage) dyxh.dispose();
  return { dx, dweight };
}

/**
 * The rows' loss sum and count ([1, 2] f32) of each crossEntropy's lse, read by its backward
 * on the GPU: the count of rows not ignored is not known on the host without a readback.
 */
const totals = new WeakMap<object, Tensor>();

export function crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: number) {
  const ctx = gpuContext('crossEntropy');
  storageOf(logits, 'crossEntropy', 'logits', ctx);
  storageOf(targets, 'crossEntropy', 'targets', ctx, 'int');
  const [rows, cols] = rowsCols(logits.shape);
  const lse = output(ctx, [rows], 'f32');
  const lv = output(ctx, [rows, 2], 'f32');
  // A target outside [0, cols) that is not ignoreIndex makes the loss NaN (ts: a ValueError;
  // the GPU cannot throw).
  runRows(
    ctx,
    'crossEntropy stats',
    [
      { name: 'x', t: logits },
      { name: 'tg', t: targets },
    ],
    [lse, lv],
    rows,
    cols,
    `  let tgt = ld_tg(row);
  var m = ninf();
  ${LOOP('m = max(m, ld_x(o + j));')}
  m = wmax(li, m);
  var s = 0.0;
  ${LOOP('s = s + exp(ld_x(o + j) - m);')}
  s = wsum(li, s);
  if (li == 0u) {
    if (tgt == bitcast<i32>(pu(4u))) {
      o0[row] = 0.0; o1[2u * row] = 0.0; o1[2u * row + 1u] = 0.0;
    } else if (tgt < 0 || u32(tgt) >= cols) {
      o0[row] = nan(); o1[2u * row] = nan(); o1[2u * row + 1u] = 1.0;
    } else {
      let l = m + log(s);
      o0[row] = l; o1[2u * row] = l - ld_x(o + u32(tgt)); o1[2u * row + 1u] = 1.0;
    }
  }`,
    new Params().s(4, ignoreIndex),
  );
  const total = sumTo(lv, [1, 2]);
  lv.dispose();
  const loss = output(ctx, [], logits.dtype);
  runMap(
    ctx,
    'crossEntropy loss',
    [{ name: 'tot', t: total }],
    [loss],
    'return vec4<f32>(ld_tot(0u) / max(ld_tot(1u), 1.0));',
    new Params(),
  );
  totals.set(lse.storage, total);
  (lse.storage as QueuedStorage).extras.push(total);
  // The count stays on the GPU (NaN here); crossEntropyBackward reads it there.
  return { loss, lse, count: Number.NaN };
}

export function crossEntropyBackward(
  logits: Tensor,
  targets: Tensor,
  lse: Tensor,
  dy: Tensor,
  ignoreIndex: number,
  _count: number,
): Tensor {
  const ctx = gpuContext('crossEntropy');
  storageOf(logits, 'crossEntropy', 'logits', ctx);
  storageOf(targets, 'crossEntropy', 'targets', ctx, 'int');
  storageOf(dy, 'crossEntropy', 'dy', ctx);
  const total = totals.get(lse.storage);
  if (!total)
    throw new ShapeError(
      'crossEntropy: lse expected the one the webgpu crossEntropy kernel returned (it carries the row count), got another tensor',
      'lse',
    );
  const [, cols] = rowsCols(logits.shape);
  const dx = output(ctx, logits.shape, logits.dtype);
  runMap(
    ctx,
    'crossEntropy backward',
    [
      { name: 'x', t: logits },
      { name: 'tg', t: targets },
      { name: 'lse', t: lse },
      { name: 'dy', t: dy },
      { name: 'tot', t: total },
    ],
    [dx],
    `let r = e / pu(4u);
  let c = e % pu(4u);
  let tgt = ld_tg(r);
  if (tgt == bitcast<i32>(pu(5u))) { return vec4<f32>(0.0); }
  let scale = ld_dy(0u) / max(ld_tot(1u), 1.0);
  return vec4<f32>((exp(ld_x(e) - ld_lse(r)) - select(0.0, 1.0, i32(c) == tgt)) * scale);`,
    new Params().u(4, cols).s(5, ignoreIndex),
  );
  return dx;
}
