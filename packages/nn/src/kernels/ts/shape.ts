import { numel, type Tensor } from '@attnkit/tensor';
import { concatShape } from '../shared.js';
import { alloc, dtypeOf, floatsOf, tensorOf } from './util.js';

// Views on cpu tensors share storage; the ops never write into a tensor, so sharing is safe.
export const reshape = (x: Tensor, shape: readonly number[]) => x.reshape(shape);
export const permute = (x: Tensor, dims: readonly number[]) => x.permute(dims).contiguous();
export const slice = (x: Tensor, dim: number, start: number, end: number) =>
  x.slice(dim, start, end).contiguous();

export function sliceBackward(
  dyt: Tensor,
  shape: readonly number[],
  dim: number,
  start: number,
): Tensor {
  const dy = floatsOf(dyt, 'slice', 'dy');
  const out = alloc(dtypeOf(dyt), numel(shape));
  const inner = numel(shape.slice(dim + 1));
  const outer = numel(shape.slice(0, dim));
  const n = dyt.shape[dim]!;
  for (let o = 0; o < outer; o++)
    out.set(dy.subarray(o * n * inner, (o + 1) * n * inner), (o * shape[dim]! + start) * inner);
  return tensorOf(out, shape);
}

export function concat(xs: readonly Tensor[], dim: number): Tensor {
  const first = xs[0]!;
  const shape = concatShape(xs, dim);
  const out = alloc(dtypeOf(first), numel(shape));
  const inner = numel(shape.slice(dim + 1));
  const outer = numel(shape.slice(0, dim));
  let at = 0;
  for (const [i, x] of xs.entries()) {
    const data = floatsOf(x, 'concat', `xs[${i}]`);
    const n = x.shape[dim]! * inner;
    for (let o = 0; o < outer; o++)
      out.set(data.subarray(o * n, (o + 1) * n), o * shape[dim]! * inner + at);
    at += n;
  }
  return tensorOf(out, shape);
}
