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
 * tensor of shape keep: f32 from the general kernel, `dtype` from the rows kernel (sums over
 * rows, reduceRows; callers cast what is not yet `dtype`), u32 offsets for 'first' (the flat
 * offset of the first element equal to y's in its group). Each thread sums a chunk of its group in order; with more than
 * one chunk a second pass reduces the chunks' partials (deterministic: no atomics).
 */
function reduce(
  x: Tensor,
  keep: readonly number[],
  mode: Mode,
  y?: Tensor,
  /** The rows kernel stores this dtype itself; the general one gives f32 (cast after). */
  dtype: GpuFloat = 'f32',
): Tensor {
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
  if ((mode === 'sum' || mode === 'max') && nOut > 0 && total > 0) {
    const rows = rowsLayout(kept, red);
    if (rows) {
      const r = reduceRows(x, rows, mode, dtype);
      if (r) return r.reshape(keep);
    }
  }
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
  return sumAs(x, shape, x.dtype as GpuFloat);
}

/**
 * x summed to `shape` (broadcast-compatible, x's storage checked by the caller), in `dtype`:
 * f32 sums, rounded once at the end (split-K partials of an f16 product, f16 gradients).
 */
export function sumAs(x: Tensor, shape: readonly number[], dtype: GpuFloat): Tensor {
  return toDtype(reduce(x, shape, 'sum', undefined, dtype), dtype);
}

export function maxTo(x: Tensor, shape: readonly number[]): Tensor {
  assertBroadcastsTo('max', shape, x.shape);
  storageOf(x, 'max', 'x', gpuContext('max'));
  const dt = x.dtype as GpuFloat;
  return toDtype(reduce(x, shape, 'max', undefined, dt), dt);
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
  if (t.dtype === dtype) return t;
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

/**
 * The reductions a training step is made of sum the rows of a row-major [B, R, N] (B may be 1)
 * into [B, N]: bias and norm-weight gradients (the batch and token rows of [rows, C]) and the K
 * slices of a split product ([1, S, M N]). The general kernel above decomposes every element's
 * index over all dims and gives one thread a chunk of one column; here a workgroup takes C
 * columns x L row lanes, each thread 4 adjacent columns in one 16-byte (f32) or 8-byte (f16)
 * load where N % 4 = 0, and writes the result in the requested dtype (no cast pass). The
 * layout, or undefined: kept = [N] or [B, N] with N contiguous, one reduced dim of stride N.
 */
export interface RowsLayout {
  b: number;
  r: number;
  n: number;
}

export function rowsLayout(
  kept: { shape: number[]; strides: number[][] },
  red: { shape: number[]; strides: number[][] },
): RowsLayout | undefined {
  const ks = kept.shape;
  const kt = kept.strides[0]!;
  if (red.shape.length !== 1) return undefined;
  const r = red.shape[0]!;
  const rStride = red.strides[0]![0]!;
  const n = ks.at(-1)!;
  if (kt.at(-1) !== 1 || rStride !== n) return undefined;
  if (ks.length === 1) return { b: 1, r, n };
  if (ks.length === 2 && kt[0] === r * n) return { b: ks[0]!, r, n };
  return undefined;
}

/** Row lanes per workgroup of 256 (the rest of its threads are columns), smallest first. */
const LANES = [4, 16, 64] as const;
/** Workgroups that keep every SM of a large GPU busy (two per SM of the H200's 132). */
const ROWS_TARGET_GROUPS = 264;
/** Rows a lane sums at least before the rows are split into chunks (a second pass). */
const ROWS_PER_LANE = 16;

/**
 * How reduceRows covers [B, R, N] (pure): `vec` columns a thread (4 where N % 4 = 0, else 1),
 * `lanes` row lanes of a workgroup (its other 256 / lanes threads take columns), `gx`
 * workgroups across the columns, and `chunks` of `per` rows (more than one: a second pass sums
 * the chunks' partials). The fewest lanes whose workgroups fill the GPU; rows split into
 * chunks only where that still leaves it part-idle and each lane keeps ROWS_PER_LANE rows.
 * Undefined when the chunks or B pass 65535 (the general kernel runs); column blocks past
 * 65535 are walked grid-stride.
 */
export function rowsPlan({ b, r, n }: RowsLayout):
  | {
      vec: 1 | 4;
      lanes: 4 | 16 | 64;
      gx: number;
      chunks: number;
      per: number;
    }
  | undefined {
  const vec = n % 4 === 0 ? 4 : 1;
  const threads = Math.ceil(n / vec);
  const gxOf = (l: number) => Math.ceil(threads / (256 / l));
  // Few rows: no more lanes than rows (the smallest count that covers them).
  const fits = LANES.filter((_, i) => i === 0 || LANES[i - 1]! < r);
  const lanes = fits.find((l) => gxOf(l) * b >= ROWS_TARGET_GROUPS) ?? fits.at(-1)!;
  const gx = gxOf(lanes);
  let chunks = 1;
  if (gx * b < ROWS_TARGET_GROUPS)
    chunks = Math.max(
      1,
      Math.min(Math.ceil(ROWS_TARGET_GROUPS / (gx * b)), Math.floor(r / (lanes * ROWS_PER_LANE))),
    );
  const per = Math.ceil(r / chunks);
  chunks = Math.ceil(r / per);
  // More column blocks than a grid dimension takes are walked grid-stride (reduceRows).
  if (chunks > 65535 || b > 65535) return undefined;
  return { vec, lanes, gx, chunks, per };
}

let rowsGridX = 65535;
/** Tests only: the grid's x cap of reduceRows (65535), lowered to exercise the block walk. */
export function setRowsGridX(cap: number | undefined): void {
  rowsGridX = cap ?? 65535;
}

/** [B, R, N] summed (or maxed) over R into [B, N] of `dtype`, or undefined (no plan). */
function reduceRows(
  x: Tensor,
  layout: RowsLayout,
  mode: 'sum' | 'max',
  dtype: GpuFloat,
): Tensor | undefined {
  const plan = rowsPlan(layout);
  if (!plan) return undefined;
  const ctx = gpuContext('reduce');
  const { b, r, n } = layout;
  const { vec, lanes, gx, chunks, per } = plan;
  // A thread of one column stores one element: f16 pairs would share words, so f32 (cast after).
  const outDt: GpuFloat = chunks > 1 || vec === 1 ? 'f32' : dtype;
  const out = output(ctx, chunks > 1 ? [b, chunks, n] : [b, n], outDt);
  const xDt = x.dtype as GpuFloat;
  const program = memoProgram(`rows|${mode}|${xDt}|${outDt}|${vec}|${lanes}`, () => ({
    code: rowsShader(mode, xDt, outDt, vec, lanes),
    bindings: ['uniform', 'read', 'storage'],
    label: `nn reduce ${mode} rows`,
  }));
  const nx = Math.min(gx, rowsGridX);
  const p = new Params().u(4, n).u(5, r).u(6, per).u(7, chunks).u(8, gx).u(9, nx);
  queueOf(ctx).pass(
    program,
    p.words,
    [x, out].map((t) => t.storage as WebGpuStorage),
    [nx, chunks, b],
    [out.storage as WebGpuStorage],
  );
  if (chunks === 1) return toDtype(out, dtype);
  const next = reduceRows(out, { b, r: chunks, n }, mode, dtype);
  out.dispose();
  return next;
}

function rowsShader(
  mode: 'sum' | 'max',
  xDt: GpuFloat,
  outDt: GpuFloat,
  vec: 1 | 4,
  lanes: number,
): string {
  const cols = 256 / lanes;
  const xType = vec === 1 ? '' : xDt === 'f32' ? 'vec4<f32>' : 'vec2<u32>';
  const load =
    vec === 1 ? 'vec4<f32>(ld_x(e), 0.0, 0.0, 0.0)' : xDt === 'f32' ? 'x[e / 4u]' : 'ld4(e / 4u)';
  const combine = (a: string, v: string) =>
    mode === 'sum' ? `${a} + ${v}` : `select(${a}, ${v}, ${v} > ${a})`;
  const oType = vec === 1 || outDt === 'f32' ? (vec === 1 ? 'f32' : 'vec4<f32>') : 'vec2<u32>';
  const store =
    vec === 1
      ? 'o0[i] = t.x;'
      : outDt === 'f32'
        ? 'o0[i / 4u] = t;'
        : 'o0[i / 4u] = vec2<u32>(pack2x16float(t.xy), pack2x16float(t.zw));';
  return `${PRELUDE}
${vec === 1 ? readDecl('x', 1, xDt) : `@group(0) @binding(1) var<storage, read> x: array<${xType}>;`}
${xDt === 'f16' && vec === 4 ? 'fn ld4(w: u32) -> vec4<f32> { let p = x[w]; return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y)); }' : ''}
@group(0) @binding(2) var<storage, read_write> o0: array<${oType}>;
var<workgroup> part: array<vec4<f32>, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let n = pu(4u);
  let rows = pu(5u);
  let per = pu(6u);
  let chunks = pu(7u);
  let c = li % ${cols}u;
  let lane = li / ${cols}u;
  let r1 = min((wg.y + 1u) * per, rows);
  // Column blocks wg.x, wg.x + the grid's x, ...: more than a grid dimension takes.
  for (var blk = wg.x; blk < pu(8u); blk += pu(9u)) {
  let col = (blk * ${cols}u + c) * ${vec}u;
  // Rows lane, lane + L, ...: four loads in flight before they are combined (in order).
  var acc = vec4<f32>(${mode === 'sum' ? '0.0' : 'ninf()'});
  if (col < n) {
    let base = wg.z * rows * n + col;
    var r = wg.y * per + lane;
    for (; r + ${3 * lanes}u < r1; r += ${4 * lanes}u) {
      var e = base + r * n;
      let v0 = ${load};
      e += ${lanes}u * n;
      let v1 = ${load};
      e += ${lanes}u * n;
      let v2 = ${load};
      e += ${lanes}u * n;
      let v3 = ${load};
      acc = ${combine(combine(combine(combine('acc', 'v0'), 'v1'), 'v2'), 'v3')};
    }
    for (; r < r1; r += ${lanes}u) {
      let e = base + r * n;
      let v = ${load};
      acc = ${combine('acc', 'v')};
    }
  }
  part[li] = acc;
  workgroupBarrier();
  if (lane == 0u && col < n) {
    var t = acc;
    for (var l = 1u; l < ${lanes}u; l++) {
      let v = part[l * ${cols}u + c];
      t = ${combine('t', 'v')};
    }
    let i = (wg.z * chunks + wg.y) * n + col;
    ${store}
  }
  // The next block's lanes overwrite part only after lane 0 read it.
  workgroupBarrier();
  }
}`;
}
