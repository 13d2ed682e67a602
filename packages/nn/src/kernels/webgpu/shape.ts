import { formatShape, numel, type Rng, ShapeError, Tensor } from '@attnkit/tensor';
import { type WebGpuContext, WebGpuStorage } from '@attnkit/webgpu';
import { concatShape } from '../shared.js';
import type { RopeSection } from '../table.js';
import { gpuContext } from './context.js';
import { cast, floatDtype } from './elementwise.js';
import {
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
  writeDecl,
} from './program.js';
import { type GpuFloat, output, queueOf, storageOf } from './queue.js';

// Views of contiguous webgpu tensors share the buffer (ops never write into a tensor).
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  storageOf(x, 'reshape', 'x', gpuContext('reshape'));
  return x.reshape(shape);
}

/** Out element e read from x at the offset of e's coordinates under `strides` (+ base). */
function gatherCopy(
  op: string,
  x: Tensor,
  shape: readonly number[],
  strides: number[],
  base: number,
) {
  const ctx = gpuContext(op);
  storageOf(x, op, 'x', ctx);
  const out = output(ctx, shape, x.dtype);
  const c = coalesce(shape, [strides]);
  if (copyWords(ctx, op, x, out, c, base)) return out;
  runMap(
    ctx,
    op,
    [{ name: 'x', t: x }],
    [out],
    'return vec4<f32>(ld_x(pu(4u) + offs(e).x));',
    new Params().u(4, base).arr(8, c.shape).arr(16, c.strides[0]!),
    offsetsWgsl('offs', c.shape.length, 8, [16]),
  );
  return out;
}

/**
 * gatherCopy in 16-byte words (4 f32 or 8 f16 a thread) where the innermost run is contiguous
 * in x and every offset falls on a word: attention's [B, T, H, D] <-> [B, H, T, D] permutes.
 * One thread an element decomposed its index over every dim per element (the division chain,
 * not the bytes, set the per-element kernel's time). False where the layout does not qualify.
 */
function copyWords(
  ctx: WebGpuContext,
  op: string,
  x: Tensor,
  out: Tensor,
  c: { shape: number[]; strides: number[][] },
  base: number,
): boolean {
  const per = x.dtype === 'f16' ? 8 : x.dtype === 'f32' || x.dtype === 'i32' ? 4 : 0;
  const st = c.strides[0]!;
  const nd = c.shape.length;
  if (per === 0 || out.size === 0 || st[nd - 1] !== 1 || base % per !== 0) return false;
  if (c.shape[nd - 1]! % per !== 0 || st.some((v, d) => d < nd - 1 && v % per !== 0)) return false;
  const shape = c.shape.map((v, d) => (d === nd - 1 ? v / per : v));
  const strides = st.map((v, d) => (d === nd - 1 ? 1 : v / per));
  const words = out.size / per;
  const p = new Params()
    .u(0, words)
    .u(4, base / per)
    .arr(8, shape)
    .arr(16, strides);
  const program = memoProgram(`copyWords|${op}|${nd}`, () => ({
    code: `${PRELUDE}
@group(0) @binding(1) var<storage, read> x: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> o0: array<vec4<u32>>;
${offsetsWgsl('offs', nd, 8, [16])}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = (wid.y * pu(1u) + wid.x) * ${WG}u + li;
  if (t >= pu(0u)) { return; }
  o0[t] = x[pu(4u) + offs(t).x];
}`,
    bindings: ['uniform', 'read', 'storage'],
    label: `nn ${op} words`,
  }));
  const wg = grid(Math.ceil(words / WG), p);
  queueOf(ctx).pass(
    program,
    p.words,
    [x, out].map((t) => t.storage as WebGpuStorage),
    wg,
    [out.storage as WebGpuStorage],
  );
  return true;
}

export function permute(x: Tensor, dims: readonly number[]): Tensor {
  // Moving only dims of size 1 keeps the elements' order: a view, as reshape, and no pass
  // (decoding one token permutes [B, 1, H, D] <-> [B, H, 1, D] four times a layer).
  const moved = dims.filter((d) => x.shape[d]! !== 1);
  if (moved.every((d, i) => i === 0 || moved[i - 1]! < d))
    return reshape(
      x,
      dims.map((d) => x.shape[d]!),
    );
  const xs = stridesOf(x.shape);
  return gatherCopy(
    'permute',
    x,
    dims.map((d) => x.shape[d]!),
    dims.map((d) => xs[d]!),
    0,
  );
}

export function slice(x: Tensor, dim: number, start: number, end: number): Tensor {
  const shape = [...x.shape];
  shape[dim] = end - start;
  const xs = stridesOf(x.shape);
  return gatherCopy('slice', x, shape, xs, start * xs[dim]!);
}

export function sliceBackward(
  dy: Tensor,
  shape: readonly number[],
  dim: number,
  start: number,
): Tensor {
  const ctx = gpuContext('slice');
  storageOf(dy, 'slice', 'dy', ctx);
  const out = output(ctx, shape, dy.dtype);
  const inner = numel(shape.slice(dim + 1));
  runMap(
    ctx,
    'slice backward',
    [{ name: 'dy', t: dy }],
    [out],
    `let inner = pu(4u);
  let len = pu(5u);
  let c = (e / inner) % len;
  let o = e / (inner * len);
  let start = pu(6u);
  let n = pu(7u);
  if (c < start || c >= start + n) { return vec4<f32>(0.0); }
  return vec4<f32>(ld_dy((o * n + c - start) * inner + e % inner));`,
    new Params().u(4, inner).u(5, shape[dim]!).u(6, start).u(7, dy.shape[dim]!),
  );
  return out;
}

/** Inputs per concat kernel (the rest are joined by another), under 8 storage buffers. */
const CONCAT_INPUTS = 6;

export function concat(xs: readonly Tensor[], dim: number): Tensor {
  const ctx = gpuContext('concat');
  const first = xs[0]!;
  if (xs.length > CONCAT_INPUTS) {
    const head = concat(xs.slice(0, CONCAT_INPUTS), dim);
    const out = concat([head, ...xs.slice(CONCAT_INPUTS)], dim);
    head.dispose();
    return out;
  }
  const shape = concatShape(xs, dim);
  for (const [i, x] of xs.entries()) storageOf(x, 'concat', `xs[${i}]`, ctx);
  const out = output(ctx, shape, first.dtype);
  const inner = numel(shape.slice(dim + 1));
  const p = new Params().u(4, inner).u(5, shape[dim]!);
  let at = 0;
  const branches = xs.map((x, k) => {
    const n = x.shape[dim]!;
    p.u(8 + k, at).u(16 + k, n);
    at += n;
    return `if (c < pu(${8 + k}u) + pu(${16 + k}u)) { return vec4<f32>(ld_x${k}((o * pu(${16 + k}u) + c - pu(${8 + k}u)) * inner + e % inner)); }`;
  });
  runMap(
    ctx,
    'concat',
    xs.map((t, k) => ({ name: `x${k}`, t })),
    [out],
    `let inner = pu(4u);
  let c = (e / inner) % pu(5u);
  let o = e / (inner * pu(5u));
  ${branches.join('\n  ')}
  return vec4<f32>(0.0);`,
    p,
  );
  return out;
}

export function gather(w: Tensor, ids: Tensor): Tensor {
  if (w.ndim !== 2)
    throw new ShapeError(
      `embedding: weight expected [rows, dim], got ${formatShape(w.shape)}`,
      'weight',
    );
  const ctx = gpuContext('embedding');
  storageOf(w, 'embedding', 'weight', ctx);
  storageOf(ids, 'embedding', 'ids', ctx, 'int');
  const [rows, dim] = w.shape as [number, number];
  const out = output(ctx, [...ids.shape, dim], w.dtype);
  // An id outside [0, rows) gives a row of NaN (ts: a ValueError; the GPU cannot throw).
  runMap(
    ctx,
    'embedding',
    [
      { name: 'w', t: w },
      { name: 'ids', t: ids },
    ],
    [out],
    `let dim = pu(4u);
  let id = ld_ids(e / dim);
  if (id < 0 || u32(id) >= pu(5u)) { return vec4<f32>(nan()); }
  return vec4<f32>(ld_w(u32(id) * dim + e % dim));`,
    new Params().u(4, dim).u(5, rows),
  );
  return out;
}

/**
 * dweight of embedding: f32 atomic adds (a compare-exchange loop on the bits), one thread per
 * (token, channel). Rows hit by several tokens sum in an order that may vary from run to run
 * (f32 rounding differs in the last bits); the alternative, a sort of the ids, costs more
 * than the whole embedding backward.
 */
export function scatterAdd(ids: Tensor, dy: Tensor, rows: number): Tensor {
  const ctx = gpuContext('embedding');
  storageOf(ids, 'embedding', 'ids', ctx, 'int');
  storageOf(dy, 'embedding', 'dy', ctx);
  const dim = dy.shape[dy.ndim - 1]!;
  const acc = output(ctx, [rows, dim], 'f32');
  runMap(ctx, 'zeros', [], [acc], 'return vec4<f32>(0.0);', new Params());
  const n = ids.size * dim;
  if (n > 0) {
    const p = new Params().u(0, n).u(4, dim).u(5, rows);
    const dyDt = dy.dtype as GpuFloat;
    const code = () => `${PRELUDE}
${readDecl('ids', 1, 'i32')}
${readDecl('dy', 2, dyDt)}
${writeDecl('acc', 3, 'f32', true)}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = (wid.y * pu(1u) + wid.x) * ${WG}u + li;
  if (t >= pu(0u)) { return; }
  let dim = pu(4u);
  let id = ld_ids(t / dim);
  if (id < 0 || u32(id) >= pu(5u)) { return; }
  let at = u32(id) * dim + t % dim;
  let v = ld_dy(t);
  var old = atomicLoad(&acc[at]);
  loop {
    let r = atomicCompareExchangeWeak(&acc[at], old, bitcast<u32>(bitcast<f32>(old) + v));
    if (r.exchanged) { break; }
    old = r.old_value;
  }
}`;
    const wg = grid(Math.ceil(n / WG), p);
    queueOf(ctx).pass(
      memoProgram(`embedding backward|${dyDt}`, () => ({
        code: code(),
        bindings: ['uniform', 'read', 'read', 'storage'],
        label: 'nn embedding backward',
      })),
      p.words,
      [ids, dy, acc].map((t) => t.storage as WebGpuStorage),
      wg,
      [acc.storage as WebGpuStorage],
    );
  }
  if (dy.dtype === 'f32') return acc;
  const out = cast(acc, 'f16');
  acc.dispose();
  return out;
}

/**
 * Rotary tables per context: cos and the signed sin of every (token, channel), computed in f64
 * on the host, and each channel's partner offset, uploaded once per distinct sections / base
 * (the positions of a training step repeat every step).
 */
interface RopeEntry {
  tab: Tensor;
  part: Tensor;
  /** The sections' positions the table was built from (a key match is checked against them). */
  positions: Float64Array[];
}
const ropeTables = new WeakMap<WebGpuContext, Map<string, RopeEntry>>();
const ROPE_CACHE = 16;

/**
 * A short key for a positions array: an arithmetic run (a training step's 0..T-1, a decoding
 * step's one position) by its start and step, else a 32-bit FNV-1a hash of the values' bits,
 * which ropeTable confirms against the entry's own copy. The table key used to spell every
 * position out (Array.join of 1,024 numbers: ~0.3 ms of host time per TransformerBlock step's
 * four rope calls on a 2-core machine, session 15).
 */
export function positionsKey(positions: ArrayLike<number>): string {
  const n = positions.length;
  if (n === 0) return 'n0';
  const p0 = positions[0]!;
  const step = n > 1 ? positions[1]! - p0 : 0;
  let run = true;
  for (let i = 1; i < n && run; i++) run = positions[i] === p0 + i * step;
  if (run) return `a${n}:${p0}:${step}`;
  const bits = new Uint32Array(Float64Array.from(positions).buffer);
  let h = 0x811c9dc5;
  for (let i = 0; i < bits.length; i++) h = Math.imul(h ^ bits[i]!, 0x01000193) >>> 0;
  return `h${n}:${h.toString(16)}`;
}

const samePositions = (a: Float64Array, b: ArrayLike<number>) => {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
};

function ropeTable(
  ctx: WebGpuContext,
  sections: readonly RopeSection[],
  base: number,
  inverse: boolean,
  d: number,
  tokens: number,
) {
  const key = `${base}|${inverse}|${d}|${tokens}|${sections.map((s) => `${s.dim}:${positionsKey(s.positions)}`).join('|')}`;
  let cache = ropeTables.get(ctx);
  if (!cache) ropeTables.set(ctx, (cache = new Map()));
  const hit = cache.get(key);
  if (
    hit &&
    !(hit.tab.storage as WebGpuStorage).isDisposed &&
    !(hit.part.storage as WebGpuStorage).isDisposed &&
    hit.positions.length === sections.length &&
    sections.every((s, i) => samePositions(hit.positions[i]!, s.positions))
  )
    return hit;
  const tab = new Float32Array(tokens * d * 2);
  const part = new Int32Array(d);
  const sign = inverse ? -1 : 1;
  for (let tok = 0; tok < tokens; tok++) for (let j = 0; j < d; j++) tab[(tok * d + j) * 2] = 1;
  let c0 = 0;
  for (const s of sections) {
    const half = s.dim / 2;
    for (let i = 0; i < half; i++) {
      part[c0 + i] = half;
      part[c0 + half + i] = -half;
      const f = base ** ((-2 * i) / s.dim);
      for (let tok = 0; tok < tokens; tok++) {
        // Rotate-half (RoFormer eq. 15, GPT-NeoX layout): (a, b) -> (a cos - b sin, b cos + a sin).
        const theta = s.positions[tok]! * f;
        const cos = Math.cos(theta);
        const sin = sign * Math.sin(theta);
        tab[(tok * d + c0 + i) * 2] = cos;
        tab[(tok * d + c0 + i) * 2 + 1] = -sin;
        tab[(tok * d + c0 + half + i) * 2] = cos;
        tab[(tok * d + c0 + half + i) * 2 + 1] = sin;
      }
    }
    c0 += s.dim;
  }
  const upload = (t: Tensor) =>
    new Tensor(
      new WebGpuStorage(ctx, t.dtype, t.size, ctx.createFromData(t.data(), 'nn rope table')),
      t.shape,
    );
  const entry: RopeEntry = {
    tab: upload(Tensor.from(tab, [tokens, d, 2])),
    part: upload(Tensor.from(part, [d])),
    positions: sections.map((s) => Float64Array.from(s.positions)),
  };
  if (hit) {
    hit.tab.dispose();
    hit.part.dispose();
  }
  cache.set(key, entry);
  if (cache.size > ROPE_CACHE) {
    const [oldest, old] = cache.entries().next().value!;
    cache.delete(oldest);
    old.tab.dispose();
    old.part.dispose();
  }
  return entry;
}

export function rope(
  x: Tensor,
  sections: readonly RopeSection[],
  base: number,
  inverse: boolean,
): Tensor {
  const ctx = gpuContext('rope');
  storageOf(x, 'rope', 'x', ctx);
  const d = x.shape[x.ndim - 1]!;
  const tokens = x.shape[x.ndim - 2]!;
  const { tab, part } = ropeTable(ctx, sections, base, inverse, d, tokens);
  const out = output(ctx, x.shape, x.dtype);
  runMap(
    ctx,
    'rope',
    [
      { name: 'x', t: x },
      { name: 'tab', t: tab },
      { name: 'part', t: part },
    ],
    [out],
    `let d = pu(4u);
  let j = e % d;
  let tj = ((e / d) % pu(5u)) * d + j;
  let partner = u32(i32(e) + ld_part(j));
  return vec4<f32>(ld_x(e) * ld_tab(2u * tj) + ld_x(partner) * ld_tab(2u * tj + 1u));`,
    new Params().u(4, d).u(5, tokens),
  );
  return out;
}

/**
 * 0 or 1 / (1 - p) per element from a counter-based hash (PCG) of the element's index and a
 * seed drawn from rng: seeded and reproducible, but not the ts backend's mask (the ts kernel
 * draws one rng.uniform() per element in order, which a GPU cannot do in parallel).
 */
export function dropoutMask(shape: readonly number[], p: number, rng: Rng, dtype: string): Tensor {
  const ctx = gpuContext('dropout');
  const out = output(ctx, shape, floatDtype('dropout', dtype));
  const seed = Math.floor(rng.uniform() * 4294967296) >>> 0;
  runMap(
    ctx,
    'dropout',
    [],
    [out],
    `let u = f32(pcg(e ^ pcg(pu(4u))) >> 8u) / 16777216.0;
  return vec4<f32>(select(0.0, pf(6u), u >= pf(5u)));`,
    new Params()
      .u(4, seed)
      .fl(5, p)
      .fl(6, 1 / (1 - p)),
    `fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}`,
  );
  return out;
}
