import { UnsupportedError } from '@attnkit/attention';
import { contiguousStrides, formatShape, numel, sameShape, type Tensor } from '@attnkit/tensor';
import { concatShape } from '../shared.js';
import type { BinaryOp } from '../table.js';
import { assertBroadcastsTo, broadcastShapes } from '../ts/util.js';
import { f32, out, run, storageOf, tensorOf } from './engine.js';

/**
 * The strided kernels on the engine's nn.map: one loop over an index space of up to 8 dims
 * with a stride set per operand, so broadcasting, reductions to a shape, permutes, slices and
 * concatenation are each a choice of strides (views are read in place, never gathered first).
 */

// nn.map's op codes (engine.h NnMapOp).
const MAP = { add: 0, sub: 1, mul: 2, div: 3, copy: 4, sum: 5, max: 6, maxBackward: 7 } as const;
const MAX_RANK = 8;

interface Strided {
  dims: number[];
  /** y, a, b strides (b: also c's). */
  strides: number[][];
}

/**
 * Drops size-1 dims and merges neighbours every operand walks as one (stride[i] = stride[i+1]
 * dim[i+1]), so a contiguous problem is one dim and a bias add two.
 */
export function collapseDims(
  dims: readonly number[],
  strides: readonly (readonly number[])[],
): Strided {
  if (dims.includes(0)) return { dims: [0], strides: strides.map(() => [0]) };
  const d: number[] = [];
  const s: number[][] = strides.map(() => []);
  for (let i = 0; i < dims.length; i++) {
    if (dims[i] === 1) continue;
    const last = d.length - 1;
    const merge = last >= 0 && strides.every((st, k) => s[k]![last] === st[i]! * dims[i]!);
    if (merge) d[last]! *= dims[i]!;
    else d.push(dims[i]!);
    for (const [k, st] of strides.entries()) {
      if (merge) s[k]![last] = st[i]!;
      else s[k]!.push(st[i]!);
    }
  }
  if (d.length === 0) return { dims: [1], strides: strides.map(() => [0]) };
  return { dims: d, strides: s };
}

/** Strides of `small` read at each index of `big` (numpy broadcasting: 0 on broadcast dims). */
export function broadcastStrides(small: readonly number[], big: readonly number[]): number[] {
  return readStrides(small, contiguousStrides(small), big);
}

/** A view's own strides (shape, strides) read at each index of `big`, broadcast as above. */
function readStrides(
  shape: readonly number[],
  strides: readonly number[],
  big: readonly number[],
): number[] {
  const off = big.length - shape.length;
  return big.map((_, i) => (i < off || shape[i - off] === 1 ? 0 : strides[i - off]!));
}

const pad = (x: readonly number[]) => [...x, ...new Array<number>(MAX_RANK - x.length).fill(0)];

function map(
  op: string,
  code: number,
  dims: readonly number[],
  strides: { y: readonly number[]; a: readonly number[]; b?: readonly number[] },
  arrays: { a: Float32Array; b?: Float32Array; c?: Float32Array; y: Float32Array },
  offsets: { y?: number; a?: number } = {},
): void {
  const all = [strides.y, strides.a, strides.b ?? strides.y.map(() => 0)];
  const c = collapseDims(dims, all);
  if (c.dims.length > MAX_RANK) {
    const why = `backend 'native' walks at most ${MAX_RANK} dims that do not merge, got ${formatShape(dims)}`;
    throw new UnsupportedError(`${op}: ${why}`, op, { native: why });
  }
  const inputs: Record<string, Float32Array> = { a: arrays.a };
  if (arrays.b) inputs.b = arrays.b;
  if (arrays.c) inputs.c = arrays.c;
  run(
    'nn.map',
    {
      op: code,
      rank: c.dims.length,
      dims: pad(c.dims),
      yOffset: offsets.y ?? 0,
      yStrides: pad(c.strides[0]!),
      aOffset: offsets.a ?? 0,
      aStrides: pad(c.strides[1]!),
      bStrides: pad(c.strides[2]!),
    },
    inputs,
    { y: arrays.y },
  );
}

/** A tensor's storage with its view's offset and strides. */
function view(t: Tensor, op: string, argument: string) {
  return { data: storageOf(t, op, argument), offset: t.offset, strides: t.strides };
}

export function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const shape = sameShape(a.shape, b.shape) ? [...a.shape] : broadcastShapes(op, a.shape, b.shape);
  const va = view(a, op, 'a');
  const vb = view(b, op, 'b');
  const as = readStrides(a.shape, va.strides, shape);
  const bs = readStrides(b.shape, vb.strides, shape);
  const y = out(numel(shape));
  map(
    op,
    MAP[op],
    shape,
    { y: contiguousStrides(shape), a: as, b: bs },
    // nn.map has no offset for b: its view starts at the subarray.
    { a: va.data, b: vb.data.subarray(vb.offset), y },
    { a: va.offset },
  );
  return tensorOf(y, shape);
}

/** x's elements in the order of `shape` read through `strides` (a copy into a fresh tensor). */
function gatherView(
  op: string,
  x: Tensor,
  shape: readonly number[],
  strides: readonly number[],
  offset: number,
): Tensor {
  const y = out(numel(shape));
  map(
    op,
    MAP.copy,
    shape,
    { y: contiguousStrides(shape), a: strides },
    { a: storageOf(x, op), y },
    { a: offset },
  );
  return tensorOf(y, shape);
}

export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(x.shape, shape)) return x;
  assertBroadcastsTo('broadcastTo', x.shape, shape);
  return gatherView('broadcastTo', x, shape, readStrides(x.shape, x.strides, shape), x.offset);
}

export const permute = (x: Tensor, dims: readonly number[]) => {
  const v = x.permute(dims);
  return gatherView('permute', x, v.shape, v.strides, v.offset);
};

export const slice = (x: Tensor, dim: number, start: number, end: number) => {
  const v = x.slice(dim, start, end);
  return gatherView('slice', x, v.shape, v.strides, v.offset);
};

/** Reductions to `shape` over x's index space (sum, max): y strides 0 on the reduced dims. */
function reduceTo(op: string, code: number, x: Tensor, shape: readonly number[]): Tensor {
  const y = out(numel(shape));
  const vx = view(x, op, 'x');
  map(
    op,
    code,
    x.shape,
    { y: broadcastStrides(shape, x.shape), a: vx.strides },
    { a: vx.data, y },
    { a: vx.offset },
  );
  return tensorOf(y, shape);
}

export function sumTo(x: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(x.shape, shape)) return x;
  assertBroadcastsTo('sumTo', shape, x.shape);
  return reduceTo('sum', MAP.sum, x, shape);
}

export function maxTo(x: Tensor, shape: readonly number[]): Tensor {
  assertBroadcastsTo('max', shape, x.shape);
  return reduceTo('max', MAP.max, x, shape);
}

export function maxToBackward(x: Tensor, yt: Tensor, dyt: Tensor): Tensor {
  const dx = out(x.size);
  map(
    'max',
    MAP.maxBackward,
    x.shape,
    {
      y: contiguousStrides(x.shape),
      a: contiguousStrides(x.shape),
      b: broadcastStrides(yt.shape, x.shape),
    },
    { a: f32(x, 'max'), b: f32(yt, 'max', 'y'), c: f32(dyt, 'max', 'dy'), y: dx },
  );
  return tensorOf(dx, x.shape);
}

export function sliceBackward(
  dy: Tensor,
  shape: readonly number[],
  dim: number,
  start: number,
): Tensor {
  const y = out(numel(shape));
  y.fill(0);
  const ys = contiguousStrides(shape);
  const v = view(dy, 'slice', 'dy');
  map(
    'slice',
    MAP.copy,
    dy.shape,
    { y: ys, a: v.strides },
    { a: v.data, y },
    { y: start * ys[dim]!, a: v.offset },
  );
  return tensorOf(y, shape);
}

export function concat(xs: readonly Tensor[], dim: number): Tensor {
  const shape = concatShape(xs, dim);
  const y = out(numel(shape));
  const ys = contiguousStrides(shape);
  let at = 0;
  for (const [i, x] of xs.entries()) {
    const v = view(x, 'concat', `xs[${i}]`);
    map(
      'concat',
      MAP.copy,
      x.shape,
      { y: ys, a: v.strides },
      { a: v.data, y },
      { y: at * ys[dim]!, a: v.offset },
    );
    at += x.shape[dim]!;
  }
  return tensorOf(y, shape);
}
