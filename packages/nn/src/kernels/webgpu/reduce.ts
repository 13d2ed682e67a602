import { numel, sameShape, type Tensor } from '@attnkit/tensor';
import type { WebGpuStorage } from '@attnkit/webgpu';
import { assertBroadcastsTo } from '../ts/util.js';
import { gpuContext } from './context.js';
import { cast } from './elementwise.js';
import {
  broadcastStrides,
  coalesce,
  grid,
  memoProgram,
  offsetsWgsl,
  Params,
  PRELUDE,
  readDecl,
  runMap,
  stridesOf,
  WG,
} from './program.js';
import { type GpuFloat, output, queueOf, storageOf } from './queue.js';

type Mode = 'sum' | 'max' | 'first' | 'minu';

/**
 * Reduces x over the dims where `keep` has 1 (and x not), numpy-broadcast style, into a new
 * f32 tensor of shape keep (u32 offsets for 'first': the flat offset of the first element
 * equal to y's in its group). Each thread sums a chunk of its group in order; with more than
 * one chunk a second pass reduces the chunks' partials (deterministic: no atomics).
 */
function reduce(x: Tensor, keep: readonly number[], mode: Mode, y?: Tensor): Tensor {
  const ctx = gpuContext('reduce');
  const nd = x.ndim;
  const k = [...new Array<number>(nd - keep.length).fill(1), ...keep];
  const xs = stridesOf(x.shape);
  const keptShape: number[] = [];
  const keptStride: number[] = [];
  const redShape: number[] = [];
  const redStride: number[] = [];
  for (let d = 0; d < nd; d++) {
    if (x.shape[d] === 1) continue;
    if (k[d] === 1) {
      redShape.push(x.shape[d]!);
      redStride.push(xs[d]!);
    } else {
      keptShape.push(x.shape[d]!);
      keptStride.push(xs[d]!);
    }
  }
  const kept = coalesce(keptShape, [keptStride]);
  const red = coalesce(redShape, [redStride]);
  const nOut = numel(keep);
  const total = numel(redShape);
  const chunks = Math.max(1, Math.min(Math.ceil(total / 64), Math.ceil(65536 / Math.max(nOut, 1))));
  const per = Math.ceil(total / chunks);
  const outDt = mode === 'first' || mode === 'minu' ? 'i32' : 'f32';
  const partial = output(
    ctx,
    chunks === 1 ? keep : [chunks, nOut],
    outDt === 'i32' ? 'i32' : 'f32',
  );
  if (nOut === 0) return partial;
  const p = new Params()
    .u(4, nOut)
    .u(5, total)
    .u(6, per)
    .arr(8, kept.shape)
    .arr(16, kept.strides[0]!)
    .arr(24, red.shape)
    .arr(32, red.strides[0]!);
  const xDt = mode === 'minu' ? 'u32' : (x.dtype as 'f32' | 'f16');
  const yDt = y?.dtype as GpuFloat | undefined;
  const nk = kept.shape.length;
  const nr = red.shape.length;
  // Built once per source (the pipeline cache then finds it by object, and a pass whose
  // pipeline is ready can be encoded at once).
  const program = memoProgram(`reduce|${mode}|${xDt}|${yDt ?? ''}|${nk}|${nr}`, () => ({
    code: reduceShader(mode, xDt, yDt, outDt, nk, nr),
    bindings: ['uniform', 'read', ...(yDt ? (['read'] as const) : []), 'storage'],
    label: `nn reduce ${mode}`,
  }));
  p.u(0, chunks);
  const wg = grid(Math.ceil((chunks * nOut) / WG), p);
  const storages = [x, ...(y ? [y] : []), partial].map((t) => t.storage as WebGpuStorage);
  queueOf(ctx).pass(program, p.words, storages, wg, [partial.storage as WebGpuStorage]);
  if (chunks === 1) return partial;
  const next = reduce(partial, [1, nOut], mode === 'first' ? 'minu' : mode);
  partial.dispose();
  return next.reshape(keep);
}

export function sumTo(x: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(x.shape, shape)) return x;
  assertBroadcastsTo('sumTo', shape, x.shape);
  storageOf(x, 'sum', 'x', gpuContext('sum'));
  return toDtype(reduce(x, shape, 'sum'), x.dtype as GpuFloat);
}

export function maxTo(x: Tensor, shape: readonly number[]): Tensor {
  assertBroadcastsTo('max', shape, x.shape);
  storageOf(x, 'max', 'x', gpuContext('max'));
  return toDtype(reduce(x, shape, 'max'), x.dtype as GpuFloat);
}

export function maxToBackward(x: Tensor, y: Tensor, dy: Tensor): Tensor {
  const ctx = gpuContext('max');
  storageOf(x, 'max', 'x', ctx);
  storageOf(y, 'max', 'y', ctx);
  storageOf(dy, 'max', 'dy', ctx);
  // The gradient goes to the first maximal element of each group, as the ts kernel does.
  const first = reduce(x, y.shape, 'first', y);
  const out = output(ctx, x.shape, x.dtype);
  const { shape: cs, strides } = coalesce(x.shape, [broadcastStrides(y.shape, x.shape)]);
  runMap(
    ctx,
    'max backward',
    [
      { name: 'first', t: first },
      { name: 'dy', t: dy },
    ],
    [out],
    'let g = offs(e).x;\n  return vec4<f32>(select(0.0, ld_dy(g), u32(ld_first(g)) == e));',
    new Params().arr(8, cs).arr(16, strides[0]!),
    offsetsWgsl('offs', cs.length, 8, [16]),
  );
  first.dispose();
  return out;
}

function toDtype(t: Tensor, dtype: GpuFloat): Tensor {
  if (dtype === 'f32') return t;
  const c = cast(t, dtype);
  t.dispose();
  return c;
}

function reduceShader(
  mode: Mode,
  xDt: 'u32' | 'f32' | 'f16',
  yDt: GpuFloat | undefined,
  outDt: 'i32' | 'f32',
  nk: number,
  nr: number,
): string {
  const init = mode === 'sum' ? '0.0' : mode === 'max' ? 'ninf()' : '0xffffffffu';
  const step =
    mode === 'sum'
      ? 'acc = acc + ld_x(base + off);'
      : mode === 'max'
        ? 'let v = ld_x(base + off); if (v > acc) { acc = v; }'
        : mode === 'first'
          ? 'if (acc == 0xffffffffu && ld_x(base + off) == yv) { acc = base + off; }'
          : 'acc = min(acc, x[base + off]);';
  return `${PRELUDE}
${xDt === 'u32' ? '@group(0) @binding(1) var<storage, read> x: array<u32>;' : readDecl('x', 1, xDt)}
${yDt ? readDecl('y', 2, yDt) : ''}
@group(0) @binding(${yDt ? 3 : 2}) var<storage, read_write> o0: array<${outDt === 'i32' ? 'u32' : 'f32'}>;
${offsetsWgsl('keptOff', nk, 8, [16])}
${offsetsWgsl('redOff', nr, 24, [32])}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = (wid.y * pu(1u) + wid.x) * ${WG}u + li;
  let nOut = pu(4u);
  let o = t % nOut;
  let chunk = t / nOut;
  if (chunk >= pu(0u)) { return; }
  let base = keptOff(o).x;
  ${mode === 'first' ? 'let yv = ld_y(o);' : ''}
  var acc = ${init};
  let start = chunk * pu(6u);
  let end = min(start + pu(6u), pu(5u));
  for (var r = start; r < end; r = r + 1u) {
    let off = redOff(r).x;
    ${step}
  }
  o0[t] = acc;
}`;
}
