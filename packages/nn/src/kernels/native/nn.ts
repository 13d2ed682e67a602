import { formatShape, ShapeError, type Tensor, ValueError } from '@attnkit/tensor';
import type { RopeSection } from '../table.js';
import { rowsCols } from '../ts/util.js';
import { f32, out, run, tensorOf } from './engine.js';

function rowOp(x: Tensor, dy: Tensor | null, log: boolean, op: string): Tensor {
  const [rows, cols] = rowsCols(x.shape);
  const y = out(x.size);
  const inputs: Record<string, Float32Array> = { x: f32(x, op) };
  if (dy) inputs.dy = f32(dy, op, 'dy');
  run('nn.softmax', { rows, cols, log: log ? 1 : 0, backward: dy ? 1 : 0 }, inputs, { out: y });
  return tensorOf(y, x.shape);
}

export const softmax = (x: Tensor) => rowOp(x, null, false, 'softmax');
export const softmaxBackward = (y: Tensor, dy: Tensor) => rowOp(y, dy, false, 'softmax');
export const logSoftmax = (x: Tensor) => rowOp(x, null, true, 'logSoftmax');
export const logSoftmaxBackward = (y: Tensor, dy: Tensor) => rowOp(y, dy, true, 'logSoftmax');

function checkChannels(op: string, name: string, t: Tensor | null, cols: number): void {
  if (t && (t.ndim !== 1 || t.shape[0] !== cols))
    throw new ShapeError(`${op}: ${name} expected [${cols}], got ${formatShape(t.shape)}`, name);
}

function norm(op: string, x: Tensor, w: Tensor | null, b: Tensor | null, eps: number) {
  const [rows, cols] = rowsCols(x.shape);
  checkChannels(op, 'weight', w, cols);
  checkChannels(op, 'bias', b, cols);
  const rms = op === 'rmsNorm';
  const inputs: Record<string, Float32Array> = { x: f32(x, op) };
  if (w) inputs.weight = f32(w, op, 'weight');
  if (b) inputs.bias = f32(b, op, 'bias');
  const [y, mean, rstd] = [out(x.size), out(rows), out(rows)];
  const outputs: Record<string, Float32Array> = rms ? { y, rstd } : { y, mean, rstd };
  run(
    'nn.norm',
    { rows, cols, rms: rms ? 1 : 0, hasWeight: w ? 1 : 0, hasBias: b ? 1 : 0, eps },
    inputs,
    outputs,
  );
  const rowShape = x.shape.slice(0, -1);
  return {
    y: tensorOf(y, x.shape),
    mean: tensorOf(mean, rowShape),
    rstd: tensorOf(rstd, rowShape),
  };
}

function normBackward(
  op: string,
  x: Tensor,
  w: Tensor | null,
  mean: Tensor | null,
  rstd: Tensor,
  dy: Tensor,
) {
  const [rows, cols] = rowsCols(x.shape);
  const rms = mean === null;
  const inputs: Record<string, Float32Array> = {
    x: f32(x, op),
    rstd: f32(rstd, op, 'rstd'),
    dy: f32(dy, op, 'dy'),
  };
  if (w) inputs.weight = f32(w, op, 'weight');
  if (mean) inputs.mean = f32(mean, op, 'mean');
  const [dx, dweight, dbias] = [out(x.size), out(cols), out(cols)];
  run(
    'nn.normBackward',
    { rows, cols, rms: rms ? 1 : 0, hasWeight: w ? 1 : 0 },
    inputs,
    rms ? { dx, dweight } : { dx, dweight, dbias },
  );
  return {
    dx: tensorOf(dx, x.shape),
    dweight: tensorOf(dweight, [cols]),
    dbias: tensorOf(dbias, [cols]),
  };
}

export const layerNorm = (x: Tensor, w: Tensor | null, b: Tensor | null, eps: number) =>
  norm('layerNorm', x, w, b, eps);

export const layerNormBackward = (
  x: Tensor,
  w: Tensor | null,
  mean: Tensor,
  rstd: Tensor,
  dy: Tensor,
) => normBackward('layerNorm', x, w, mean, rstd, dy);

export function rmsNorm(x: Tensor, w: Tensor | null, eps: number) {
  const { y, rstd } = norm('rmsNorm', x, w, null, eps);
  return { y, rstd };
}

export function rmsNormBackward(x: Tensor, w: Tensor | null, rstd: Tensor, dy: Tensor) {
  const { dx, dweight } = normBackward('rmsNorm', x, w, null, rstd, dy);
  return { dx, dweight };
}

function intsOf(t: Tensor, op: string, argument: string): Int32Array {
  if (t.dtype !== 'i32')
    throw new ValueError(`${op}: ${argument} expected i32 indices, got ${t.dtype}`, argument);
  return t.data() as Int32Array;
}

function checkIds(op: string, ids: Int32Array, rows: number): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= rows)
      throw new ValueError(
        `${op}: ids expected entries in [0, ${rows - 1}], got ${id} at ${i}`,
        'ids',
      );
  }
}

export function gather(wt: Tensor, idt: Tensor): Tensor {
  if (wt.ndim !== 2)
    throw new ShapeError(
      `embedding: weight expected [rows, dim], got ${formatShape(wt.shape)}`,
      'weight',
    );
  const [rows, dim] = wt.shape as [number, number];
  const ids = intsOf(idt, 'embedding', 'ids');
  checkIds('embedding', ids, rows);
  const y = out(ids.length * dim);
  run(
    'nn.gather',
    { rows, dim, count: ids.length },
    { weight: f32(wt, 'embedding', 'weight'), ids },
    { y },
  );
  return tensorOf(y, [...idt.shape, dim]);
}

export function scatterAdd(idt: Tensor, dy: Tensor, rows: number): Tensor {
  const ids = intsOf(idt, 'embedding', 'ids');
  checkIds('embedding', ids, rows);
  const dim = dy.shape[dy.ndim - 1]!;
  const y = out(rows * dim);
  run(
    'nn.scatterAdd',
    { rows, dim, count: ids.length },
    { ids, dy: f32(dy, 'embedding', 'dy') },
    { y },
  );
  return tensorOf(y, [rows, dim]);
}

function checkTargets(
  targets: Int32Array,
  rows: number,
  cols: number,
  ignoreIndex: number,
): number {
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const y = targets[r]!;
    if (y === ignoreIndex) continue;
    if (y < 0 || y >= cols)
      throw new ValueError(
        `crossEntropy: targets expected entries in [0, ${cols - 1}] or ignoreIndex ${ignoreIndex}, got ${y} at ${r}`,
        'targets',
      );
    count++;
  }
  return count;
}

export function crossEntropy(lt: Tensor, tt: Tensor, ignoreIndex: number) {
  const logits = f32(lt, 'crossEntropy', 'logits');
  const [rows, cols] = rowsCols(lt.shape);
  const targets = intsOf(tt, 'crossEntropy', 'targets');
  const count = checkTargets(targets, rows, cols, ignoreIndex);
  const lse = out(rows);
  run('nn.crossEntropy', { rows, cols, ignoreIndex }, { logits, targets }, { lse });
  // The mean over the rows in double, as the ts kernel: rows are few, the logits are not.
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const y = targets[r]!;
    if (y !== ignoreIndex) total += lse[r]! - logits[r * cols + y]!;
  }
  const loss = new Float32Array([count === 0 ? 0 : total / count]);
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
  const [rows, cols] = rowsCols(lt.shape);
  const targets = intsOf(tt, 'crossEntropy', 'targets');
  checkTargets(targets, rows, cols, ignoreIndex);
  const scale = f32(dyt, 'crossEntropy', 'dy')[0]! / Math.max(count, 1);
  const dx = out(lt.size);
  run(
    'nn.crossEntropyBackward',
    { rows, cols, ignoreIndex, scale },
    { logits: f32(lt, 'crossEntropy', 'logits'), targets, lse: f32(lset, 'crossEntropy', 'lse') },
    { dx },
  );
  return tensorOf(dx, lt.shape);
}

/**
 * cos / sin tables [tokens, sum of the sections' halves] computed here in double (as the ts
 * kernel's angles), the rotation on the engine.
 */
export function rope(
  x: Tensor,
  sections: readonly RopeSection[],
  base: number,
  inverse: boolean,
): Tensor {
  if (sections.length > 4)
    throw new ValueError(
      `rope: expected at most 4 sections on backend 'native', got ${sections.length}`,
      'sections',
    );
  if (x.size === 0) return tensorOf(out(0), x.shape);
  const d = x.shape[x.ndim - 1]!;
  const tokens = x.shape[x.ndim - 2]!;
  const halves = sections.reduce((a, s) => a + s.dim / 2, 0);
  const cos = new Float32Array(tokens * halves);
  const sin = new Float32Array(tokens * halves);
  const sign = inverse ? -1 : 1;
  let h0 = 0;
  for (const s of sections) {
    const half = s.dim / 2;
    for (let i = 0; i < half; i++) {
      const f = base ** ((-2 * i) / s.dim);
      for (let t = 0; t < tokens; t++) {
        const theta = s.positions[t]! * f;
        cos[t * halves + h0 + i] = Math.cos(theta);
        sin[t * halves + h0 + i] = sign * Math.sin(theta);
      }
    }
    h0 += half;
  }
  const y = out(x.size);
  const dims = [0, 1, 2, 3].map((i) => sections[i]?.dim ?? 0);
  run(
    'nn.rope',
    { rows: x.size / d, d, tokens, halves, sections: sections.length, dims },
    { x: f32(x, 'rope'), cos, sin },
    { y },
  );
  return tensorOf(y, x.shape);
}
