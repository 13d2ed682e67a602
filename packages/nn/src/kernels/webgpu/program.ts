import { DTypeError, type Tensor } from '@attnkit/tensor';
import type { ComputeProgram, WebGpuContext, WebGpuStorage } from '@attnkit/webgpu';
import { queueOf } from './queue.js';

/**
 * The three kernel shapes every nn webgpu kernel is one of (tfjs pairs each op's shader with
 * its dispatch shape the same way): a map (one value per output element from a flat index), a
 * row kernel (one workgroup per row of the last axis, workgroup reductions) and the matmul. A
 * uniform of 64 words at binding 0 carries sizes and scalars (`pu(i)` / `pf(i)` read word i;
 * words 0-3 and 63 are the runner's), so one pipeline serves every shape; tensors bind from 1.
 */

/** A tensor binding: f32, f16 (packed two per u32, decoded to f32), i32 indices. */
export type Dt = 'f32' | 'f16' | 'i32';

export interface Binding {
  name: string;
  dt: Dt;
  storage: WebGpuStorage;
}

export const WG = 256;
const UNIFORM_WORDS = 64;

export const PRELUDE = `@group(0) @binding(0) var<uniform> U: array<vec4<u32>, ${UNIFORM_WORDS / 4}>;
fn pu(i: u32) -> u32 { return U[i >> 2u][i & 3u]; }
fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }
fn ninf() -> f32 { return pf(3u); }
fn nan() -> f32 { return pf(${UNIFORM_WORDS - 1}u); }`;

/** Read-only binding `name` with ld_name(e) (f32 value, or i32 for indices). */
export function readDecl(name: string, binding: number, dt: Dt): string {
  const head = `@group(0) @binding(${binding}) var<storage, read> ${name}`;
  if (dt === 'f32')
    return `${head}: array<f32>;\nfn ld_${name}(e: u32) -> f32 { return ${name}[e]; }`;
  if (dt === 'i32')
    return `${head}: array<i32>;\nfn ld_${name}(e: u32) -> i32 { return ${name}[e]; }`;
  return `${head}: array<u32>;\nfn ld_${name}(e: u32) -> f32 { return unpack2x16float(${name}[e >> 1u])[e & 1u]; }`;
}

/** Writable raw binding: array<f32> or array<u32> (f16 pairs, or atomics with `atomic`). */
export function writeDecl(name: string, binding: number, dt: Dt, atomic = false): string {
  const elem = atomic ? 'atomic<u32>' : dt === 'f32' ? 'f32' : dt === 'i32' ? 'i32' : 'u32';
  return `@group(0) @binding(${binding}) var<storage, read_write> ${name}: array<${elem}>;`;
}

/** Uniform words: u32, i32 and f32 values at fixed slots (4.. for the kernel's parameters). */
export class Params {
  readonly words = new Uint32Array(UNIFORM_WORDS);
  private readonly f = new Float32Array(this.words.buffer);
  private readonly i = new Int32Array(this.words.buffer);
  constructor() {
    // -Infinity and NaN come from the uniform: WGSL rejects them as constants.
    this.words[3] = 0xff800000;
    this.words[UNIFORM_WORDS - 1] = 0x7fc00000;
  }
  u(at: number, v: number): this {
    this.words[at] = v >>> 0;
    return this;
  }
  s(at: number, v: number): this {
    this.i[at] = v;
    return this;
  }
  fl(at: number, v: number): this {
    this.f[at] = v;
    return this;
  }
  arr(at: number, vs: readonly number[]): this {
    vs.forEach((v, k) => {
      this.words[at + k] = v >>> 0;
    });
    return this;
  }
}

/** 2D grid of `groups` workgroups (x at most 65535); word 1 holds x. */
export function grid(groups: number, p: Params): [number, number, number] {
  const x = Math.max(1, Math.min(groups, 65535));
  p.u(1, x);
  return [x, Math.ceil(groups / x), 1];
}

const dtOf = (t: Tensor): Dt => t.dtype as Dt;

export interface MapInput {
  name: string;
  t: Tensor;
}

/**
 * out_k[e] = value(e)[k] for every element e of the outputs (at most 4, all of n elements).
 * `body` is the body of `fn value(e: u32) -> vec4<f32>`, reading inputs with ld_NAME(e) and
 * parameters with pu / pf from word 4. With an f16 output each thread writes one whole u32
 * word (elements 2t and 2t + 1), so no two threads share a word.
 */
export function runMap(
  ctx: WebGpuContext,
  label: string,
  inputs: readonly MapInput[],
  outputs: readonly Tensor[],
  body: string,
  p: Params,
  helpers = '',
): void {
  const n = outputs[0]!.size;
  if (n === 0) return;
  const pair = outputs.some((o) => o.dtype === 'f16');
  const key = `map|${label}|${inputs.map((b) => `${b.name}:${dtOf(b.t)}`).join(',')}|${outputs.map(dtOf).join(',')}|${helpers}|${body}`;
  const program = memoProgram(key, () => mapProgram(label, inputs, outputs, body, helpers, pair));
  p.u(0, n);
  const threads = pair ? Math.ceil(n / 2) : n;
  const wg = grid(Math.ceil(threads / WG), p);
  const storages = [...inputs.map((b) => b.t), ...outputs].map((t) => t.storage as WebGpuStorage);
  queueOf(ctx).pass(
    program,
    p.words,
    storages,
    wg,
    outputs.map((o) => o.storage as WebGpuStorage),
  );
}

/** runMap's program (built once per distinct source, see memoProgram). */
function mapProgram(
  label: string,
  inputs: readonly MapInput[],
  outputs: readonly Tensor[],
  body: string,
  helpers: string,
  pair: boolean,
): ComputeProgram {
  const decls = [
    ...inputs.map((b, i) => readDecl(b.name, i + 1, dtOf(b.t))),
    ...outputs.map((o, k) => writeDecl(`o${k}`, inputs.length + 1 + k, dtOf(o))),
  ];
  const store = (e: string, v: string) =>
    outputs
      .map((o, k) => (o.dtype === 'f16' ? '' : `o${k}[${e}] = ${v}[${k}];`))
      .filter(Boolean)
      .join(' ');
  const main = pair
    ? `let e0 = 2u * t;
  if (e0 >= n) { return; }
  let v0 = value(e0);
  var v1 = vec4<f32>();
  if (e0 + 1u < n) { v1 = value(e0 + 1u); }
  ${store('e0', 'v0')}
  if (e0 + 1u < n) { ${store('e0 + 1u', 'v1')} }
  ${outputs.map((o, k) => (o.dtype === 'f16' ? `o${k}[t] = pack2x16float(vec2<f32>(v0[${k}], v1[${k}]));` : '')).join('\n  ')}`
    : `if (t >= n) { return; }
  let v0 = value(t);
  ${store('t', 'v0')}`;
  const code = `${PRELUDE}
${decls.join('\n')}
${helpers}
fn value(e: u32) -> vec4<f32> {
${body}
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = (wid.y * pu(1u) + wid.x) * ${WG}u + li;
  let n = pu(0u);
  ${main}
}`;
  return {
    code,
    bindings: [
      'uniform',
      ...inputs.map(() => 'read' as const),
      ...outputs.map(() => 'storage' as const),
    ],
    label: `nn ${label}`,
  };
}

/**
 * The program built for `key` (everything its WGSL depends on), made once and reused: a pass
 * then costs no WGSL assembly, and the pipeline cache finds the same object without hashing
 * its source (GPT decoding queues ~160 passes a token, each paid both). Bounded; starts over
 * when full.
 */
const programs = new Map<string, ComputeProgram>();
export function memoProgram(key: string, make: () => ComputeProgram): ComputeProgram {
  let program = programs.get(key);
  if (!program) {
    if (programs.size >= 1024) programs.clear();
    programs.set(key, (program = make()));
  }
  return program;
}

/**
 * One workgroup of WG threads per row of `rows` x `cols`: `body` runs in main with `row`,
 * `cols`, `o` (the row's first element) and `li` in scope, and wsum(li, v) / wmax(li, v)
 * (workgroup reductions; call them from every thread). Outputs are raw f32 arrays o0.. that
 * the body writes (per-row statistics). Parameters from word 4.
 */
export function runRows(
  ctx: WebGpuContext,
  label: string,
  inputs: readonly MapInput[],
  outputs: readonly Tensor[],
  rows: number,
  cols: number,
  body: string,
  p: Params,
): void {
  if (rows === 0) return;
  for (const o of outputs)
    if (o.dtype !== 'f32' && o.dtype !== 'i32')
      throw new DTypeError(
        `${label}: row statistics are f32 (or i32 indices), got an output in ${o.dtype}`,
        'outputs',
      );
  const dts = outputs.map((o) => o.dtype as 'f32' | 'i32');
  const key = `rows|${label}|${inputs.map((b) => `${b.name}:${dtOf(b.t)}`).join(',')}|${dts.join(',')}|${body}`;
  const program = memoProgram(key, () => rowsProgram(label, inputs, dts, body));
  p.u(0, rows).u(2, cols);
  const wg = grid(rows, p);
  queueOf(ctx).pass(
    program,
    p.words,
    [...inputs.map((b) => b.t), ...outputs].map((t) => t.storage as WebGpuStorage),
    wg,
    outputs.map((o) => o.storage as WebGpuStorage),
  );
}

/** runRows' program (built once per distinct source, see memoProgram). */
function rowsProgram(
  label: string,
  inputs: readonly MapInput[],
  outputs: readonly ('f32' | 'i32')[],
  body: string,
): ComputeProgram {
  const decls = [
    ...inputs.map((b, i) => readDecl(b.name, i + 1, dtOf(b.t))),
    ...outputs.map((dt, k) => writeDecl(`o${k}`, inputs.length + 1 + k, dt)),
  ];
  const code = `${PRELUDE}
${decls.join('\n')}
// The leading barrier: llvmpipe's GLSL path was seen to load the previous call's red[0] after
// the trailing barrier, where thread 0 of the next call had already overwritten it.
var<workgroup> red: array<f32, ${WG}>;
fn wsum(li: u32, v: f32) -> f32 {
  workgroupBarrier();
  red[li] = v;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s = s >> 1u) {
    if (li < s) { red[li] = red[li] + red[li + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
fn wmax(li: u32, v: f32) -> f32 {
  workgroupBarrier();
  red[li] = v;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s = s >> 1u) {
    if (li < s) { red[li] = max(red[li], red[li + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let row = wid.y * pu(1u) + wid.x;
  if (row >= pu(0u)) { return; }
  let cols = pu(2u);
  let o = row * cols;
${body}
}`;
  return {
    code,
    bindings: [
      'uniform',
      ...inputs.map(() => 'read' as const),
      ...outputs.map(() => 'storage' as const),
    ],
    label: `nn ${label}`,
  };
}

/** Batch dims of the matmul kernels (merged by coalesce, padded in front to this many). */
export const MAX_BATCH_DIMS = 4;

/**
 * The matmul kernels' prologue: M, N, K from words 4-6 and the element offsets aOff, bOff, cOff
 * of batch element `z` (its index decomposed over the batch sizes at words 8.., with A's and B's
 * batch strides at 12.. and 16..). Split K: `z` counts (batch element, K slice) pairs, word 7
 * holding the slices per element and word 2 a slice's length; the kernel sums K from kBegin to
 * kEnd into the partial product at cOff (slices of one element adjacent: [batch, splits, M, N]).
 * Unsplit: word 7 is 1 (or 0) and word 2 is K (or 0).
 */
export function matmulBatchWgsl(z: string): string {
  return `let M = pu(4u);
  let N = pu(5u);
  let K = pu(6u);
  let splits = max(pu(7u), 1u);
  let kLen = select(pu(2u), K, pu(2u) == 0u);
  let kBegin = (${z} % splits) * kLen;
  let kEnd = min(K, kBegin + kLen);
  var rem = ${z} / splits;
  var aOff = 0u;
  var bOff = 0u;
  for (var q = 0u; q < ${MAX_BATCH_DIMS}u; q = q + 1u) {
    let d = ${MAX_BATCH_DIMS - 1}u - q;
    let size = pu(8u + d);
    let c = rem % size;
    rem = rem / size;
    aOff = aOff + c * pu(12u + d);
    bOff = bOff + c * pu(16u + d);
  }
  aOff = aOff * M * K;
  bOff = bOff * K * N;
  let cOff = ${z} * M * N;`;
}

/** WGSL that decomposes flat index `e` over `nd` dims at word `shapeAt` into offsets. */
export function offsetsWgsl(
  name: string,
  nd: number,
  shapeAt: number,
  strideAts: readonly number[],
): string {
  const outs = strideAts.map((_, k) => `var off${k} = 0u;`).join(' ');
  const adds = strideAts.map((at, k) => `off${k} = off${k} + c * pu(${at}u + d);`).join(' ');
  return `fn ${name}(e: u32) -> vec4<u32> {
  var r = e;
  ${outs}
  for (var i = 0u; i < ${nd}u; i = i + 1u) {
    let d = ${nd - 1}u - i;
    let size = pu(${shapeAt}u + d);
    let c = r % size;
    r = r / size;
    ${adds}
  }
  return vec4<u32>(${[0, 1, 2, 3].map((k) => (k < strideAts.length ? `off${k}` : '0u')).join(', ')});
}`;
}

/** Row-major strides of shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= shape[d]!;
  }
  return s;
}

/**
 * Merges adjacent dims that every operand walks contiguously (stride[d] = stride[d+1] *
 * shape[d+1]) and drops size-1 dims: [B, T, C] + [C] becomes [B*T, C] with strides [0, 1].
 */
export function coalesce(
  shape: readonly number[],
  strides: readonly (readonly number[])[],
): { shape: number[]; strides: number[][] } {
  const outShape: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = outShape.length - 1;
    const mergeable =
      last >= 0 && strides.every((s, k) => outStrides[k]![last] === s[d]! * shape[d]!);
    if (mergeable) {
      outShape[last]! *= shape[d]!;
      strides.forEach((s, k) => {
        outStrides[k]![last] = s[d]!;
      });
    } else {
      outShape.push(shape[d]!);
      strides.forEach((s, k) => {
        outStrides[k]!.push(s[d]!);
      });
    }
  }
  if (outShape.length === 0) return { shape: [1], strides: strides.map(() => [0]) };
  return { shape: outShape, strides: outStrides };
}

/** Strides of `small` read as broadcast to `big` (0 on broadcast dims), big's rank. */
export function broadcastStrides(small: readonly number[], big: readonly number[]): number[] {
  const off = big.length - small.length;
  const own = stridesOf(small);
  return big.map((_, d) => {
    const i = d - off;
    return i < 0 || small[i] === 1 ? 0 : own[i]!;
  });
}

/** Max dims a map kernel decomposes (shapes coalesce first, so this is rarely reached). */
export const MAX_DIMS = 8;
