import { formatShape, type Rng, ShapeError, type Tensor, ValueError } from '@attnkit/tensor';
import type { RopeSection } from '../table.js';
import { alloc, dtypeOf, type FloatDType, floatsOf, rowsCols, tensorOf } from './util.js';

export function softmax(xt: Tensor): Tensor {
  const x = floatsOf(xt, 'softmax');
  const [rows, cols] = rowsCols(xt.shape);
  const y = alloc(dtypeOf(xt), x.length);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < cols; j++) max = Math.max(max, x[o + j]!);
    // A row of -Infinity (fully masked) gives zeros, not NaN.
    if (max === Number.NEGATIVE_INFINITY) continue;
    let sum = 0;
    for (let j = 0; j < cols; j++) sum += y[o + j] = Math.exp(x[o + j]! - max);
    for (let j = 0; j < cols; j++) y[o + j] /= sum;
  }
  return tensorOf(y, xt.shape);
}

export function softmaxBackward(yt: Tensor, dyt: Tensor): Tensor {
  const y = floatsOf(yt, 'softmax');
  const dy = floatsOf(dyt, 'softmax', 'dy');
  const [rows, cols] = rowsCols(yt.shape);
  const dx = alloc(dtypeOf(yt), y.length);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let dot = 0;
    for (let j = 0; j < cols; j++) dot += y[o + j]! * dy[o + j]!;
    for (let j = 0; j < cols; j++) dx[o + j] = y[o + j]! * (dy[o + j]! - dot);
  }
  return tensorOf(dx, yt.shape);
}

export function logSoftmax(xt: Tensor): Tensor {
  const x = floatsOf(xt, 'logSoftmax');
  const [rows, cols] = rowsCols(xt.shape);
  const y = alloc(dtypeOf(xt), x.length);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const lse = logSumExp(x, o, cols);
    for (let j = 0; j < cols; j++) y[o + j] = x[o + j]! - lse;
  }
  return tensorOf(y, xt.shape);
}

export function logSoftmaxBackward(yt: Tensor, dyt: Tensor): Tensor {
  const y = floatsOf(yt, 'logSoftmax');
  const dy = floatsOf(dyt, 'logSoftmax', 'dy');
  const [rows, cols] = rowsCols(yt.shape);
  const dx = alloc(dtypeOf(yt), y.length);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let sum = 0;
    for (let j = 0; j < cols; j++) sum += dy[o + j]!;
    for (let j = 0; j < cols; j++) dx[o + j] = dy[o + j]! - Math.exp(y[o + j]!) * sum;
  }
  return tensorOf(dx, yt.shape);
}

function logSumExp(x: ArrayLike<number>, o: number, n: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let j = 0; j < n; j++) max = Math.max(max, x[o + j]!);
  if (max === Number.NEGATIVE_INFINITY) return max;
  let sum = 0;
  for (let j = 0; j < n; j++) sum += Math.exp(x[o + j]! - max);
  return max + Math.log(sum);
}

function checkChannels(op: string, name: string, t: Tensor | null, cols: number): void {
  if (t && (t.ndim !== 1 || t.shape[0] !== cols))
    throw new ShapeError(`${op}: ${name} expected [${cols}], got ${formatShape(t.shape)}`, name);
}

export function layerNorm(xt: Tensor, wt: Tensor | null, bt: Tensor | null, eps: number) {
  const x = floatsOf(xt, 'layerNorm');
  const [rows, cols] = rowsCols(xt.shape);
  checkChannels('layerNorm', 'weight', wt, cols);
  checkChannels('layerNorm', 'bias', bt, cols);
  const w = wt && floatsOf(wt, 'layerNorm', 'weight');
  const b = bt && floatsOf(bt, 'layerNorm', 'bias');
  const dt = dtypeOf(xt);
  const y = alloc(dt, x.length);
  const mean = alloc(dt, rows);
  const rstd = alloc(dt, rows);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let mu = 0;
    for (let j = 0; j < cols; j++) mu += x[o + j]!;
    mu /= cols;
    let v = 0;
    for (let j = 0; j < cols; j++) v += (x[o + j]! - mu) ** 2;
    const rs = 1 / Math.sqrt(v / cols + eps);
    mean[r] = mu;
    rstd[r] = rs;
    for (let j = 0; j < cols; j++)
      y[o + j] = (x[o + j]! - mu) * rs * (w ? w[j]! : 1) + (b ? b[j]! : 0);
  }
  const rowShape = xt.shape.slice(0, -1);
  return {
    y: tensorOf(y, xt.shape),
    mean: tensorOf(mean, rowShape),
    rstd: tensorOf(rstd, rowShape),
  };
}

export function layerNormBackward(
  xt: Tensor,
  wt: Tensor | null,
  meant: Tensor,
  rstdt: Tensor,
  dyt: Tensor,
) {
  const x = floatsOf(xt, 'layerNorm');
  const w = wt && floatsOf(wt, 'layerNorm', 'weight');
  const mean = floatsOf(meant, 'layerNorm');
  const rstd = floatsOf(rstdt, 'layerNorm');
  const dy = floatsOf(dyt, 'layerNorm', 'dy');
  const [rows, cols] = rowsCols(xt.shape);
  const dt = dtypeOf(xt);
  const dx = alloc(dt, x.length);
  const dw = alloc(dt, cols);
  const db = alloc(dt, cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const mu = mean[r]!;
    const rs = rstd[r]!;
    // dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * w.
    let mg = 0;
    let mgx = 0;
    for (let j = 0; j < cols; j++) {
      const xh = (x[o + j]! - mu) * rs;
      const g = dy[o + j]! * (w ? w[j]! : 1);
      mg += g;
      mgx += g * xh;
      dw[j] += dy[o + j]! * xh;
      db[j] += dy[o + j]!;
    }
    mg /= cols;
    mgx /= cols;
    for (let j = 0; j < cols; j++) {
      const xh = (x[o + j]! - mu) * rs;
      const g = dy[o + j]! * (w ? w[j]! : 1);
      dx[o + j] = rs * (g - mg - xh * mgx);
    }
  }
  return { dx: tensorOf(dx, xt.shape), dweight: tensorOf(dw, [cols]), dbias: tensorOf(db, [cols]) };
}

export function rmsNorm(xt: Tensor, wt: Tensor | null, eps: number) {
  const x = floatsOf(xt, 'rmsNorm');
  const [rows, cols] = rowsCols(xt.shape);
  checkChannels('rmsNorm', 'weight', wt, cols);
  const w = wt && floatsOf(wt, 'rmsNorm', 'weight');
  const dt = dtypeOf(xt);
  const y = alloc(dt, x.length);
  const rstd = alloc(dt, rows);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let ss = 0;
    for (let j = 0; j < cols; j++) ss += x[o + j]! * x[o + j]!;
    const rs = 1 / Math.sqrt(ss / cols + eps);
    rstd[r] = rs;
    for (let j = 0; j < cols; j++) y[o + j] = x[o + j]! * rs * (w ? w[j]! : 1);
  }
  return { y: tensorOf(y, xt.shape), rstd: tensorOf(rstd, xt.shape.slice(0, -1)) };
}

export function rmsNormBackward(xt: Tensor, wt: Tensor | null, rstdt: Tensor, dyt: Tensor) {
  const x = floatsOf(xt, 'rmsNorm');
  const w = wt && floatsOf(wt, 'rmsNorm', 'weight');
  const rstd = floatsOf(rstdt, 'rmsNorm');
  const dy = floatsOf(dyt, 'rmsNorm', 'dy');
  const [rows, cols] = rowsCols(xt.shape);
  const dt = dtypeOf(xt);
  const dx = alloc(dt, x.length);
  const dw = alloc(dt, cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const rs = rstd[r]!;
    // dx = rstd (g - xhat mean(g xhat)), g = dy * w, xhat = x rstd.
    let mgx = 0;
    for (let j = 0; j < cols; j++) {
      const xh = x[o + j]! * rs;
      mgx += dy[o + j]! * (w ? w[j]! : 1) * xh;
      dw[j] += dy[o + j]! * xh;
    }
    mgx /= cols;
    for (let j = 0; j < cols; j++)
      dx[o + j] = rs * (dy[o + j]! * (w ? w[j]! : 1) - x[o + j]! * rs * mgx);
  }
  return { dx: tensorOf(dx, xt.shape), dweight: tensorOf(dw, [cols]) };
}

function intsOf(t: Tensor, op: string, argument: string): Int32Array {
  if (t.dtype !== 'i32')
    throw new ValueError(`${op}: ${argument} expected i32 indices, got ${t.dtype}`, argument);
  const ids = t.data() as Int32Array;
  return ids;
}

export function gather(wt: Tensor, idt: Tensor): Tensor {
  if (wt.ndim !== 2)
    throw new ShapeError(
      `embedding: weight expected [rows, dim], got ${formatShape(wt.shape)}`,
      'weight',
    );
  const w = floatsOf(wt, 'embedding', 'weight');
  const [rows, dim] = wt.shape as [number, number];
  const ids = intsOf(idt, 'embedding', 'ids');
  const out = alloc(dtypeOf(wt), ids.length * dim);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= rows)
      throw new ValueError(
        `embedding: ids expected entries in [0, ${rows - 1}], got ${id} at ${i}`,
        'ids',
      );
    out.set(w.subarray(id * dim, (id + 1) * dim), i * dim);
  }
  return tensorOf(out, [...idt.shape, dim]);
}

export function scatterAdd(idt: Tensor, dyt: Tensor, rows: number): Tensor {
  const dy = floatsOf(dyt, 'embedding', 'dy');
  const ids = intsOf(idt, 'embedding', 'ids');
  const dim = dyt.shape[dyt.ndim - 1]!;
  const out = alloc(dtypeOf(dyt), rows * dim);
  for (let i = 0; i < ids.length; i++) {
    const o = ids[i]! * dim;
    for (let j = 0; j < dim; j++) out[o + j] += dy[i * dim + j]!;
  }
  return tensorOf(out, [rows, dim]);
}

export function crossEntropy(lt: Tensor, tt: Tensor, ignoreIndex: number) {
  const logits = floatsOf(lt, 'crossEntropy', 'logits');
  const [rows, cols] = rowsCols(lt.shape);
  const targets = intsOf(tt, 'crossEntropy', 'targets');
  const dt = dtypeOf(lt);
  const lse = alloc(dt, rows);
  let total = 0;
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const y = targets[r]!;
    if (y === ignoreIndex) continue;
    if (y < 0 || y >= cols)
      throw new ValueError(
        `crossEntropy: targets expected entries in [0, ${cols - 1}] or ignoreIndex ${ignoreIndex}, got ${y} at ${r}`,
        'targets',
      );
    lse[r] = logSumExp(logits, r * cols, cols);
    total += lse[r]! - logits[r * cols + y]!;
    count++;
  }
  const loss = alloc(dt, 1);
  loss[0] = count === 0 ? 0 : total / count;
  return { loss: tensorOf(loss, []), lse: tensorOf(lse, [rows]), count };
}

export function crossEntropyBackward(
  lt: Tensor,
  tt: Tensor,
  lset: Tensor,
  dyt: Tensor,
  ignoreIndex: number,
  count: number,
): Tensor {
  const logits = floatsOf(lt, 'crossEntropy', 'logits');
  const [rows, cols] = rowsCols(lt.shape);
  const targets = intsOf(tt, 'crossEntropy', 'targets');
  const lse = floatsOf(lset, 'crossEntropy');
  const scale = floatsOf(dyt, 'crossEntropy', 'dy')[0]! / Math.max(count, 1);
  const dx = alloc(dtypeOf(lt), logits.length);
  for (let r = 0; r < rows; r++) {
    const y = targets[r]!;
    if (y === ignoreIndex) continue;
    const o = r * cols;
    for (let j = 0; j < cols; j++) dx[o + j] = Math.exp(logits[o + j]! - lse[r]!) * scale;
    dx[o + y] -= scale;
  }
  return tensorOf(dx, lt.shape);
}

export function rope(
  xt: Tensor,
  sections: readonly RopeSection[],
  base: number,
  inverse: boolean,
): Tensor {
  const x = floatsOf(xt, 'rope');
  const d = xt.shape[xt.ndim - 1]!;
  const tokens = xt.shape[xt.ndim - 2]!;
  const out = alloc(dtypeOf(xt), x.length);
  const rows = x.length / d;
  const sign = inverse ? -1 : 1;
  // Inverse frequencies base^(-2i/dim) per section, computed once.
  const freqs = sections.map((s) =>
    Float64Array.from({ length: s.dim / 2 }, (_, i) => base ** ((-2 * i) / s.dim)),
  );
  for (let r = 0; r < rows; r++) {
    const tok = r % tokens;
    const o = r * d;
    let c0 = o;
    sections.forEach((s, si) => {
      // Rotate-half within the section (GPT-NeoX / Llama layout): pair (i, i + dim/2) turns by
      // pos * base^(-2i/dim) (RoFormer eq. 15).
      const half = s.dim / 2;
      const pos = s.positions[tok]!;
      const f = freqs[si]!;
      for (let i = 0; i < half; i++) {
        const theta = pos * f[i]!;
        const cos = Math.cos(theta);
        const sin = sign * Math.sin(theta);
        const a = x[c0 + i]!;
        const b = x[c0 + half + i]!;
        out[c0 + i] = a * cos - b * sin;
        out[c0 + half + i] = b * cos + a * sin;
      }
      c0 += s.dim;
    });
    for (let j = c0; j < o + d; j++) out[j] = x[j]!;
  }
  return tensorOf(out, xt.shape);
}

export function dropoutMask(shape: readonly number[], p: number, rng: Rng, dtype: FloatDType) {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = alloc(dtype, n);
  const keep = 1 / (1 - p);
  for (let i = 0; i < n; i++) out[i] = rng.uniform() >= p ? keep : 0;
  return tensorOf(out, shape);
}
