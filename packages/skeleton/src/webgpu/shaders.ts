import { paramsStruct } from './params.js';
import type { WebGpuFlashPlan } from './plan.js';

/**
 * WGSL sources of the FlashAttention-2 kernels, generated from a tile plan. Register tiles are
 * unrolled here (one named vec4 per 4 rows x 4 columns), so they stay in registers whatever the
 * WGSL compiler does with loops; head dims, strides, masks and sequence lengths are runtime
 * uniforms, so one pipeline serves every shape with the same plan and storage dtype.
 *
 * Numerics: scores are kept in the log2 domain (S log2(e), exp2), as FlashAttention's kernels
 * do. Masked scores become NEG = -3e38 and the running max starts at M0 = -1e38, so
 * exp2(NEG - m) underflows to exactly 0 for every m >= M0: fully masked rows end with l = 0
 * (O = 0, LSE = -inf) without infinities or NaN anywhere in the arithmetic.
 */

export type StorageDType = 'f32' | 'f16' | 'bf16';

export interface ShaderSpec {
  plan: WebGpuFlashPlan;
  dtype: StorageDType;
  /** D % 4 == 0: rows of q/k (and dq/dk) are read and written as vec4. */
  vecD: boolean;
  /** Dv % 4 == 0: rows of v/o/dO (and dv) likewise. */
  vecV: boolean;
  blockSparse: boolean;
}

const E = ['x', 'y', 'z', 'w'];

function rep(n: number, f: (i: number) => string, sep = '\n'): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

/** All (i, u) pairs of a (4 rv)-row x `n`-group register tile. */
function tile(
  p: WebGpuFlashPlan,
  n: number,
  f: (i: number, u: number) => string,
  sep = '\n',
): string {
  const out: string[] = [];
  for (let i = 0; i < 4 * p.rv; i++) for (let u = 0; u < n; u++) out.push(f(i, u));
  return out.join(sep);
}

/** Row i of a thread's register tile within the workgroup's tile: vec4 group ty + (i / 4) TY, lane i % 4. */
function rowOf(p: WebGpuFlashPlan, i: number): string {
  return `ty * 4u + ${Math.floor(i / 4) * 4 * p.ty + (i % 4)}u`;
}

/** Row i's component of the per-row-group vec4s `${name}0`, `${name}1`, ... */
function rowVec(name: string, i: number): string {
  return `${name}${Math.floor(i / 4)}.${E[i % 4]}`;
}

function halfCodec(dtype: StorageDType): string {
  if (dtype === 'f32') return '';
  if (dtype === 'f16') {
    return `fn h2f(w: u32) -> vec2<f32> { return unpack2x16float(w); }
fn f2h(v: vec2<f32>) -> u32 { return pack2x16float(v); }`;
  }
  // bf16 is the top half of an f32; encoding rounds to nearest even on the dropped 16 bits.
  return `fn h2f(w: u32) -> vec2<f32> { return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u)); }
fn bf1(x: f32) -> u32 { let u = bitcast<u32>(x); return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u; }
fn f2h(v: vec2<f32>) -> u32 { return bf1(v.x) | (bf1(v.y) << 16u); }`;
}

/** A read-only tensor binding with loaders ld_NAME(e) and (vec) ld4_NAME(e) for 4 aligned elements. */
function inputDecl(name: string, binding: number, dtype: StorageDType, vec: boolean): string {
  const head = `@group(0) @binding(${binding}) var<storage, read> ${name}: `;
  if (dtype === 'f32') {
    return vec
      ? `${head}array<vec4<f32>>;
fn ld4_${name}(e: u32) -> vec4<f32> { return ${name}[e >> 2u]; }
fn ld_${name}(e: u32) -> f32 { return ${name}[e >> 2u][e & 3u]; }`
      : `${head}array<f32>;
fn ld_${name}(e: u32) -> f32 { return ${name}[e]; }`;
  }
  return vec
    ? `${head}array<vec2<u32>>;
fn ld4_${name}(e: u32) -> vec4<f32> { let w = ${name}[e >> 2u]; return vec4<f32>(h2f(w.x), h2f(w.y)); }
fn ld_${name}(e: u32) -> f32 { return h2f(${name}[e >> 2u][(e >> 1u) & 1u])[e & 1u]; }`
    : `${head}array<u32>;
fn ld_${name}(e: u32) -> f32 { return h2f(${name}[e >> 1u])[e & 1u]; }`;
}

/**
 * An output tensor binding with st_NAME(e, v, n): stores the first n of 4 consecutive elements
 * starting at e (e % 4 == 0 in the row). Packed halves store whole u32 words: n is even there
 * (the host requires even head dims for f16/bf16 outputs), so no two threads share a word.
 */
function outputDecl(name: string, binding: number, dtype: StorageDType, vec: boolean): string {
  const head = `@group(0) @binding(${binding}) var<storage, read_write> ${name}: `;
  if (dtype === 'f32') {
    return vec
      ? `${head}array<vec4<f32>>;
fn st_${name}(e: u32, v: vec4<f32>, n: u32) { ${name}[e >> 2u] = v; }`
      : `${head}array<f32>;
fn st_${name}(e: u32, v: vec4<f32>, n: u32) { for (var t = 0u; t < n; t++) { ${name}[e + t] = v[t]; } }`;
  }
  return vec
    ? `${head}array<vec2<u32>>;
fn st_${name}(e: u32, v: vec4<f32>, n: u32) { ${name}[e >> 2u] = vec2<u32>(f2h(v.xy), f2h(v.zw)); }`
    : `${head}array<u32>;
fn st_${name}(e: u32, v: vec4<f32>, n: u32) {
  ${name}[e >> 1u] = f2h(v.xy);
  if (n > 2u) { ${name}[(e >> 1u) + 1u] = f2h(v.zw); }
}`;
}

/**
 * XOR mask of zt's row-group index: writeZ stores 4 consecutive rows of P^T per thread, rows
 * 4 R4 vec4 apart, so without the swizzle the TX threads of a row group hit one bank group.
 * The mask is below the largest power of two (at most 8 vec4, a full bank sweep) dividing R4,
 * so swizzled indices stay in their row.
 */
function zSwizzle(p: WebGpuFlashPlan): number {
  const r4 = p.br / 4;
  let m = 1;
  while (m < 8 && r4 % (2 * m) === 0) m *= 2;
  return m - 1;
}

function constants(p: WebGpuFlashPlan): string {
  return `const TX = ${p.tx}u;
const T = ${p.threads}u;
const BR = ${p.br}u;
const BC = ${p.bc}u;
const R4 = ${p.br / 4}u;
const C4 = ${p.bc / 4}u;
const KC = ${p.kc}u;
const MC = ${p.mc}u;
const SB = ${(p.kc * p.br) / 4}u;
const ZM = ${zSwizzle(p)}u;
const NEG = -3.0e38;
const M0 = -1.0e38;
const LOG2E = 1.4426950408889634;
const LN2 = 0.6931471805599453;
var<workgroup> stage: array<vec4<f32>, ${p.stageFloats / 4}>;
var<workgroup> zt: array<vec4<f32>, ${p.zFloats / 4}>;`;
}

/** Code loading 4 consecutive elements of row data at e (columns kk..kk+3 of width W) into `dst`. */
function load4(
  dst: string,
  name: string,
  e: string,
  kk: string,
  width: string,
  vec: boolean,
): string {
  return vec
    ? `if (${kk} < ${width}) { ${dst} = ld4_${name}(${e}); }`
    : `for (var t = 0u; t < 4u; t++) { if (${kk} + t < ${width}) { ${dst}[t] = ld_${name}(${e} + t); } }`;
}

interface Operand {
  name: string;
  /** Element offset of row 0 (u32 expression). */
  base: string;
  /** Elements between rows. */
  stride: string;
  /** First row of the tile, relative to the sequence. */
  first: string;
  /** Rows in the sequence (rows at or past it load as zeros). */
  rows: string;
  vec: boolean;
}

/**
 * x_i_u += A B^T over the contraction `width`: A rows are the tile's rows, B rows its columns.
 * Chunks of KC are staged transposed (vec4 over rows / columns), so the inner loop reads one
 * vec4 per row group of A and CU vec4 of B per step for 16 rv CU multiply-adds.
 *
 * Staging order (`rowWalk`): with it, consecutive threads walk one row's KC/4 vec4 first, so a
 * subgroup's global loads cover whole KC-float row segments (8 rows per 32 threads instead of
 * 32 rows x 16 bytes) at the price of 4 threads per bank in the transposing scalar stores. On
 * the H100 (2026-11-22, tooling/gpu/results) it made the forward 7% faster (24.1 -> 25.9
 * TFLOP/s at B4 H16 N4096 D128 f32); the backward kernels keep consecutive rows per thread
 * (conflict-free stores) until it is timed there. Padding the k-major rows by a vec4 (against
 * those conflicts) cost 29% instead (17.2 TFLOP/s, unaligned rows for the inner loop's reads).
 */
function ntGemm(
  p: WebGpuFlashPlan,
  x: string,
  a: Operand,
  b: Operand,
  width: string,
  rowWalk = false,
): string {
  const order = (rowsPerTile: string) =>
    rowWalk
      ? `let r = s / (KC / 4u);
      let kq = s % (KC / 4u);`
      : `let r = s % ${rowsPerTile};
      let kq = s / ${rowsPerTile};`;
  const stageSide = (o: Operand, rowsPerTile: string, quarter: string, offset: string) => `
    for (var s = lid; s < (KC / 4u) * ${rowsPerTile}; s += T) {
      ${order(rowsPerTile)}
      let kk = k0 + kq * 4u;
      var val = vec4<f32>(0.0);
      if (${o.first} + r < ${o.rows}) {
        let e = ${o.base} + (${o.first} + r) * ${o.stride} + kk;
        ${load4('val', o.name, 'e', 'kk', width, o.vec)}
      }
      let dst = ${offset}kq * 4u * ${quarter} + r / 4u;
      let comp = r % 4u;
      stage[dst][comp] = val.x;
      stage[dst + ${quarter}][comp] = val.y;
      stage[dst + 2u * ${quarter}][comp] = val.z;
      stage[dst + 3u * ${quarter}][comp] = val.w;
    }`;
  return `
  ${tile(p, p.cu, (i, u) => `${x}_${i}_${u} = vec4<f32>(0.0);`)}
  for (var k0 = 0u; k0 < ${width}; k0 += KC) {
    ${stageSide(a, 'BR', 'R4', '')}
    ${stageSide(b, 'BC', 'C4', 'SB + ')}
    workgroupBarrier();
    for (var kk = 0u; kk < KC; kk++) {
      ${rep(p.rv, (g) => `let a${g} = stage[kk * R4 + ty + ${g * p.ty}u];`)}
      ${rep(p.cu, (u) => `let b${u} = stage[SB + kk * C4 + tx + ${u * p.tx}u];`)}
      ${tile(p, p.cu, (i, u) => `${x}_${i}_${u} += ${rowVec('a', i)} * b${u};`)}
    }
    workgroupBarrier();
  }`;
}

/**
 * acc_i_u += Z M over the tile's columns, Z read transposed from zt (written by writeZ) and M
 * (rows = the tile's columns, `wu` vec4 groups of width per thread) staged MC rows at a time.
 */
function nnGemm(p: WebGpuFlashPlan, acc: string, m: Operand, width: string, wu: number): string {
  const wq = p.tx * wu;
  return `
  for (var c0m = 0u; c0m < BC; c0m += MC) {
    for (var s = lid; s < MC * ${wq}u; s += T) {
      let w = (s % ${wq}u) * 4u;
      let row = ${m.first} + c0m + s / ${wq}u;
      var val = vec4<f32>(0.0);
      if (row < ${m.rows}) {
        let e = ${m.base} + row * ${m.stride} + w;
        ${load4('val', m.name, 'e', 'w', width, m.vec)}
      }
      stage[s] = val;
    }
    workgroupBarrier();
    for (var c = 0u; c < MC; c++) {
      ${rep(p.rv, (g) => `let z${g} = zt[(c0m + c) * R4 + ((ty + ${g * p.ty}u) ^ (((c0m + c) >> 2u) & ZM))];`)}
      ${rep(wu, (u) => `let m${u} = stage[c * ${wq}u + tx + ${u * p.tx}u];`)}
      ${tile(p, wu, (i, u) => `${acc}_${i}_${u} += ${rowVec('z', i)} * m${u};`)}
    }
    workgroupBarrier();
  }`;
}

/** Writes the register tile t_i_u transposed into zt (vec4 over each group of 4 rows, swizzled by ZM). */
function writeZ(p: WebGpuFlashPlan, t: string): string {
  const out: string[] = [];
  for (let g = 0; g < p.rv; g++) {
    for (let u = 0; u < p.cu; u++) {
      for (let e = 0; e < 4; e++) {
        out.push(
          `zt[((tx + ${u * p.tx}u) * 4u + ${e}u) * R4 + ((ty + ${g * p.ty}u) ^ ((tx + ${u * p.tx}u) & ZM))] = vec4<f32>(${rep(4, (i) => `${t}_${4 * g + i}_${u}.${E[e]}`, ', ')});`,
        );
      }
    }
  }
  return out.join('\n  ');
}

function declare(p: WebGpuFlashPlan, prefix: string, n: number): string {
  return tile(p, n, (i, u) => `var ${prefix}_${i}_${u} = vec4<f32>(0.0);`);
}

/**
 * Partner ranges: for a row (query i, or key j in the dK/dV kernel) the half-open range of
 * columns it may pair with under causal + window (KERNELS.md "Common", bottom-right aligned:
 * query i sees key j iff i + off - left <= j <= i + off + right, off = Nk - Nq).
 */
function rangeFns(rowsAreKeys: boolean): string {
  if (!rowsAreKeys) {
    return `fn plo(r: i32, off: i32, ncols: i32) -> i32 { if (P.left < 0) { return 0; } return max(r + off - P.left, 0); }
fn phi(r: i32, off: i32, ncols: i32) -> i32 { if (P.right < 0) { return ncols; } return clamp(r + off + P.right + 1, 0, ncols); }`;
  }
  return `fn plo(r: i32, off: i32, ncols: i32) -> i32 { if (P.right < 0) { return 0; } return max(r - off - P.right, 0); }
fn phi(r: i32, off: i32, ncols: i32) -> i32 { if (P.left < 0) { return ncols; } return clamp(r - off + P.left + 1, 0, ncols); }`;
}

/**
 * The column-tile loop header shared by the three tiled kernels: the range of column tiles any
 * row of this tile can see, skipping tiles with no allowed pair and marking those where every
 * pair is allowed (`full`: the mask-free path). With block sparsity, the host's per-tile
 * summary (0 skip, 1 mixed, 2 all kept) refines both.
 */
function tileLoop(spec: ShaderSpec, stateIndex: string, body: string): string {
  const bs = spec.blockSparse
    ? `let state = aux[P.tsOff + slice * P.ntq * P.ntk + ${stateIndex}];
      if (state == 0u) { continue; }
      let mixed = state == 1u;
      full = full && !mixed;`
    : '';
  return `
  let loFirst = plo(rFirst, off, ncols);
  let hiLast = max(phi(rLast, off, ncols), 0);
  let loLast = plo(rLast, off, ncols);
  let hiFirst = phi(rFirst, off, ncols);
  for (var ct = u32(loFirst) / BC; ct < (u32(hiLast) + BC - 1u) / BC; ct++) {
    let c0 = ct * BC;
    if (i32(c0) >= hiLast || i32(c0 + BC) <= loFirst) { continue; }
    var full = i32(c0) >= loLast && i32(c0 + BC) <= hiFirst;
    ${bs}
    ${body}
  }`;
}

/** Masks x_i_u (scaled scores) to NEG outside the partner ranges and, in mixed tiles, outside kept blocks. */
function maskCode(spec: ShaderSpec, rowsAreKeys: boolean): string {
  const p = spec.plan;
  const ranges = `${rowRanges(p)}\n${tile(
    p,
    p.cu,
    (i, u) => `{
      let cols = vec4<i32>(i32(c0 + (tx + ${u * p.tx}u) * 4u)) + vec4<i32>(0, 1, 2, 3);
      let ok = (cols >= vec4<i32>(lo${i})) & (cols < vec4<i32>(hi${i}));
      x_${i}_${u} = select(vec4<f32>(NEG), x_${i}_${u}, ok);
    }`,
  )}`;
  if (!spec.blockSparse) return `if (!full) {\n${ranges}\n  }`;
  const q = rowsAreKeys ? 'col' : 'row';
  const k = rowsAreKeys ? 'row' : 'col';
  const blocks = tile(p, p.cu, (i, u) =>
    rep(
      4,
      (e) => `{
      let row = r0 + ${rowOf(p, i)};
      let col = c0 + (tx + ${u * p.tx}u) * 4u + ${e}u;
      if (aux[P.bsOff + slice * P.nbq * P.nbk + (${q} / P.bsQ) * P.nbk + ${k} / P.bsK] == 0u) { x_${i}_${u}.${E[e]} = NEG; }
    }`,
    ),
  );
  return `if (!full) {\n${ranges}\n    if (mixed) {\n${blocks}\n    }\n  }`;
}

function header(spec: ShaderSpec, subgroups: boolean): string {
  return `${subgroups ? 'enable subgroups;\n' : ''}${paramsStruct()}
@group(0) @binding(0) var<uniform> P: Params;
${halfCodec(spec.dtype)}
${constants(spec.plan)}`;
}

const SEQ = `
  let b = wg.z;
  let startQ = aux[4u * b];
  let startK = aux[4u * b + 1u];
  let nq = aux[4u * b + 2u];
  let nk = aux[4u * b + 3u];
  let off = i32(nk) - i32(nq);
  let tx = lid % TX;
  let ty = lid / TX;`;

/**
 * Per-thread partner ranges of its rows (the mask is per row; columns vary per tile), computed
 * in masked tiles only so they hold no registers across the mask-free tiles.
 */
function rowRanges(p: WebGpuFlashPlan): string {
  return rep(
    4 * p.rv,
    (i) => `let lo${i} = plo(i32(r0 + ${rowOf(p, i)}), off, ncols);
  let hi${i} = phi(i32(r0 + ${rowOf(p, i)}), off, ncols);`,
    '\n  ',
  );
}

/** FA2 forward (Dao 2023, Algorithm 1): one workgroup per (query tile, head, batch). */
export function forwardShader(spec: ShaderSpec): string {
  const p = spec.plan;
  const sub = p.subgroupReduce;
  // Combines the per-thread partial row statistics `${v}0`, `${v}1`, ... over the TX threads
  // of each row.
  const reduce = (v: string, op: 'max' | '+') => {
    const combine = (a: string, b: string) => (op === 'max' ? `max(${a}, ${b})` : `${a} + ${b}`);
    const groups = Array.from({ length: p.rv }, (_, g) => g);
    if (sub) {
      const steps: string[] = [];
      for (let s = 1; s < p.tx; s *= 2) {
        for (const g of groups) {
          steps.push(`${v}${g} = ${combine(`${v}${g}`, `subgroupShuffleXor(${v}${g}, ${s}u)`)};`);
        }
      }
      return steps.join('\n    ');
    }
    // Exchange through the staging area: free between the two GEMMs and after the last one.
    return `${groups.map((g) => `stage[tx * R4 + ty + ${g * p.ty}u] = ${v}${g};`).join('\n    ')}
    workgroupBarrier();
    ${groups.map((g) => `${v}${g} = stage[ty + ${g * p.ty}u];`).join('\n    ')}
    for (var t = 1u; t < TX; t++) {
      ${groups.map((g) => `${v}${g} = ${combine(`${v}${g}`, `stage[t * R4 + ty + ${g * p.ty}u]`)};`).join('\n      ')}
    }`;
  };
  const perGroup = (f: (g: number) => string, sep = '\n    ') =>
    Array.from({ length: p.rv }, (_, g) => f(g)).join(sep);
  const hsum = (v: string) => `dot(${v}, vec4<f32>(1.0))`;
  const hmax = (v: string) => `max(max(${v}.x, ${v}.y), max(${v}.z, ${v}.w))`;
  const q: Operand = {
    name: 'q',
    base: 'qB',
    stride: 'P.qRow',
    first: 'r0',
    rows: 'nq',
    vec: spec.vecD,
  };
  const k: Operand = {
    name: 'k',
    base: 'kB',
    stride: 'P.kRow',
    first: 'c0',
    rows: 'nk',
    vec: spec.vecD,
  };
  const v: Operand = {
    name: 'v',
    base: 'vB',
    stride: 'P.vRow',
    first: 'c0',
    rows: 'nk',
    vec: spec.vecV,
  };
  const maxOf = (xs: string[]): string =>
    xs.length === 1 ? xs[0]! : `max(${xs[0]}, ${maxOf(xs.slice(1))})`;
  const rowMax = (i: number) => maxOf(Array.from({ length: p.cu }, (_, u) => hmax(`x_${i}_${u}`)));
  const body = `
    ${ntGemm(p, 'x', q, k, 'P.d', true)}
    ${tile(p, p.cu, (i, u) => `x_${i}_${u} *= P.scaleLog2;`)}
    ${maskCode(spec, false)}
    ${perGroup((g) => `var mt${g} = vec4<f32>(${rep(4, (i) => rowMax(4 * g + i), ', ')});`)}
    ${reduce('mt', 'max')}
    ${perGroup((g) => `let mn${g} = max(m${g}, mt${g});\n    let alpha${g} = exp2(m${g} - mn${g});\n    m${g} = mn${g};`)}
    ${tile(p, p.cu, (i, u) => `x_${i}_${u} = exp2(x_${i}_${u} - vec4<f32>(${rowVec('mn', i)}));`)}
    ${perGroup((g) => `l${g} = l${g} * alpha${g} + vec4<f32>(${rep(4, (i) => rep(p.cu, (u) => hsum(`x_${4 * g + i}_${u}`), ' + '), ', ')});`)}
    ${tile(p, p.wuV, (i, u) => `acc_${i}_${u} *= ${rowVec('alpha', i)};`)}
    ${writeZ(p, 'x')}
    workgroupBarrier();
    ${nnGemm(p, 'acc', v, 'P.dv', p.wuV)}`;
  const store = tile(p, p.wuV, (i, u) => {
    return `{
    let row = r0 + ${rowOf(p, i)};
    let w = (tx + ${u * p.tx}u) * 4u;
    if (row < nq && w < P.dv) { st_o(oB + row * P.oRow + w, acc_${i}_${u} * ${rowVec('inv', i)}, min(4u, P.dv - w)); }
  }`;
  });
  return `${header(spec, sub)}
${inputDecl('q', 1, spec.dtype, spec.vecD)}
${inputDecl('k', 2, spec.dtype, spec.vecD)}
${inputDecl('v', 3, spec.dtype, spec.vecV)}
@group(0) @binding(4) var<storage, read> aux: array<u32>;
${outputDecl('o', 5, spec.dtype, spec.vecV)}
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;
${rangeFns(false)}

@compute @workgroup_size(${p.threads})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  ${SEQ}
  let h = wg.y;
  let r0 = wg.x * BR;
  if (r0 >= nq) { return; }
  let hk = h / P.group;
  let slice = b * P.bsBatch + h * P.bsHead;
  let qB = b * P.qBatch + h * P.qHead + startQ * P.qRow;
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  let oB = b * P.oBatch + h * P.oHead + startQ * P.oRow;
  let ncols = i32(nk);
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + BR, nq)) - 1;
  ${perGroup((g) => `var m${g} = vec4<f32>(M0);\n  var l${g} = vec4<f32>(0.0);`, '\n  ')}
  ${declare(p, 'x', p.cu)}
  ${declare(p, 'acc', p.wuV)}
  ${tileLoop(spec, 'wg.x * P.ntk + ct', body)}
  ${reduce('l', '+')}
  ${perGroup((g) => `let inv${g} = select(vec4<f32>(1.0) / l${g}, vec4<f32>(0.0), l${g} == vec4<f32>(0.0));`, '\n  ')}
  ${store}
  if (tx == 0u) {
    let lB = b * P.lBatch + h * P.lHead + startQ;
    ${rep(4 * p.rv, (i) => `if (r0 + ${rowOf(p, i)} < nq) { lse[lB + r0 + ${rowOf(p, i)}] = select((${rowVec('m', i)} + log2(${rowVec('l', i)})) * LN2, bitcast<f32>(P.negInf), ${rowVec('l', i)} == 0.0); }`, '\n    ')}
  }
}
`;
}

/**
 * Backward pre-pass (FA2 Algorithm 2, line 4): D_i = rowsum(dO_i * O_i), stored beside
 * LSE_i log2(e) as (lse2, D) pairs. Rows without keys get lse2 = 0: every score of theirs is
 * masked, so the value is never used, and it keeps exp2 finite.
 */
export function statsShader(dtype: StorageDType, vecV: boolean): string {
  return `${paramsStruct()}
@group(0) @binding(0) var<uniform> P: Params;
${halfCodec(dtype)}
${inputDecl('o', 1, dtype, vecV)}
${inputDecl('dout', 2, dtype, vecV)}
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> aux: array<u32>;
@group(0) @binding(5) var<storage, read_write> stats: array<vec2<f32>>;
const LOG2E = 1.4426950408889634;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wg.z;
  let h = wg.y;
  let startQ = aux[4u * b];
  let nq = aux[4u * b + 2u];
  let i = wg.x * 64u + lid;
  if (i >= nq) { return; }
  let oB = b * P.oBatch + h * P.oHead + (startQ + i) * P.oRow;
  var dd = 0.0;
  ${
    vecV
      ? `for (var w = 0u; w < P.dv; w += 4u) { dd += dot(ld4_o(oB + w), ld4_dout(oB + w)); }`
      : `for (var w = 0u; w < P.dv; w++) { dd += ld_o(oB + w) * ld_dout(oB + w); }`
  }
  let li = b * P.lBatch + h * P.lHead + startQ + i;
  let x = lse[li];
  stats[li] = vec2<f32>(select(x * LOG2E, 0.0, x < -1.0e38), dd);
}
`;
}

/** Loads (lse2, D) of a query row, zeros past the sequence. */
const STAT = `fn stat(li: u32, ok: bool) -> vec2<f32> { if (ok) { return stats[li]; } return vec2<f32>(0.0); }`;

/**
 * dQ pass (FA2 backward, the dQ half of Algorithm 2 run as its own pass so no two workgroups
 * write one dQ row): per query tile, over key tiles, S = Q K^T and dP = dO V^T recomputed,
 * P = exp2(S log2e - lse2), dS = P (dP - D), dQ += scale dS K.
 */
export function dqShader(spec: ShaderSpec): string {
  const p = spec.plan;
  const q: Operand = {
    name: 'q',
    base: 'qB',
    stride: 'P.qRow',
    first: 'r0',
    rows: 'nq',
    vec: spec.vecD,
  };
  const k: Operand = {
    name: 'k',
    base: 'kB',
    stride: 'P.kRow',
    first: 'c0',
    rows: 'nk',
    vec: spec.vecD,
  };
  const dO: Operand = {
    name: 'dout',
    base: 'oB',
    stride: 'P.oRow',
    first: 'r0',
    rows: 'nq',
    vec: spec.vecV,
  };
  const v: Operand = {
    name: 'v',
    base: 'vB',
    stride: 'P.vRow',
    first: 'c0',
    rows: 'nk',
    vec: spec.vecV,
  };
  const body = `
    ${ntGemm(p, 'x', q, k, 'P.d')}
    ${ntGemm(p, 'y', dO, v, 'P.dv')}
    ${tile(p, p.cu, (i, u) => `x_${i}_${u} *= P.scaleLog2;`)}
    ${maskCode(spec, false)}
    ${tile(p, p.cu, (i, u) => `x_${i}_${u} = exp2(x_${i}_${u} - vec4<f32>(st${i}.x)) * (y_${i}_${u} - vec4<f32>(st${i}.y));`)}
    ${writeZ(p, 'x')}
    workgroupBarrier();
    ${nnGemm(p, 'acc', k, 'P.d', p.wuD)}`;
  const store = tile(
    p,
    p.wuD,
    (i, u) => `{
    let row = r0 + ${rowOf(p, i)};
    let w = (tx + ${u * p.tx}u) * 4u;
    if (row < nq && w < P.d) { st_dq(qB + row * P.qRow + w, acc_${i}_${u} * P.scale, min(4u, P.d - w)); }
  }`,
  );
  return `${header(spec, false)}
${inputDecl('q', 1, spec.dtype, spec.vecD)}
${inputDecl('k', 2, spec.dtype, spec.vecD)}
${inputDecl('v', 3, spec.dtype, spec.vecV)}
${inputDecl('dout', 4, spec.dtype, spec.vecV)}
@group(0) @binding(5) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read> aux: array<u32>;
${outputDecl('dq', 7, spec.dtype, spec.vecD)}
${rangeFns(false)}
${STAT}

@compute @workgroup_size(${p.threads})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  ${SEQ}
  let h = wg.y;
  let r0 = wg.x * BR;
  if (r0 >= nq) { return; }
  let hk = h / P.group;
  let slice = b * P.bsBatch + h * P.bsHead;
  let qB = b * P.qBatch + h * P.qHead + startQ * P.qRow;
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  let oB = b * P.oBatch + h * P.oHead + startQ * P.oRow;
  let lB = b * P.lBatch + h * P.lHead + startQ;
  let ncols = i32(nk);
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + BR, nq)) - 1;
  ${rep(4 * p.rv, (i) => `let st${i} = stat(lB + r0 + ${rowOf(p, i)}, r0 + ${rowOf(p, i)} < nq);`, '\n  ')}
  ${declare(p, 'x', p.cu)}
  ${declare(p, 'y', p.cu)}
  ${declare(p, 'acc', p.wuD)}
  ${tileLoop(spec, 'wg.x * P.ntk + ct', body)}
  ${store}
}
`;
}

/**
 * dK/dV pass (FA2 Algorithm 2, outer loop over key tiles): one workgroup per (key tile, kv
 * head, batch) holds dK and dV in registers while it walks the query tiles of every query head
 * of its GQA group (so the sum over shared heads needs no atomics): S^T = K Q^T, dP^T = V dO^T,
 * P^T = exp2(S^T log2e - lse2), dV += P^T dO, dS^T = P^T (dP^T - D), dK += scale dS^T Q.
 */
export function dkdvShader(spec: ShaderSpec): string {
  const p = spec.plan;
  const kr: Operand = {
    name: 'k',
    base: 'kB',
    stride: 'P.kRow',
    first: 'r0',
    rows: 'nk',
    vec: spec.vecD,
  };
  const qc: Operand = {
    name: 'q',
    base: 'qB',
    stride: 'P.qRow',
    first: 'c0',
    rows: 'nq',
    vec: spec.vecD,
  };
  const vr: Operand = {
    name: 'v',
    base: 'vB',
    stride: 'P.vRow',
    first: 'r0',
    rows: 'nk',
    vec: spec.vecV,
  };
  const oc: Operand = {
    name: 'dout',
    base: 'oB',
    stride: 'P.oRow',
    first: 'c0',
    rows: 'nq',
    vec: spec.vecV,
  };
  const colStats = rep(
    p.cu,
    (u) => `let cs${u} = c0 + (tx + ${u * p.tx}u) * 4u;
    let sa${u} = stat(lB + cs${u}, cs${u} < nq);
    let sb${u} = stat(lB + cs${u} + 1u, cs${u} + 1u < nq);
    let sc${u} = stat(lB + cs${u} + 2u, cs${u} + 2u < nq);
    let sd${u} = stat(lB + cs${u} + 3u, cs${u} + 3u < nq);
    let lse${u} = vec4<f32>(sa${u}.x, sb${u}.x, sc${u}.x, sd${u}.x);
    let dd${u} = vec4<f32>(sa${u}.y, sb${u}.y, sc${u}.y, sd${u}.y);`,
    '\n    ',
  );
  const body = `
    ${ntGemm(p, 'x', kr, qc, 'P.d')}
    ${ntGemm(p, 'y', vr, oc, 'P.dv')}
    ${tile(p, p.cu, (i, u) => `x_${i}_${u} *= P.scaleLog2;`)}
    ${maskCode(spec, true)}
    ${colStats}
    ${tile(p, p.cu, (i, u) => `x_${i}_${u} = exp2(x_${i}_${u} - lse${u});\n    y_${i}_${u} = x_${i}_${u} * (y_${i}_${u} - dd${u});`)}
    ${writeZ(p, 'x')}
    workgroupBarrier();
    ${nnGemm(p, 'accv', oc, 'P.dv', p.wuV)}
    ${writeZ(p, 'y')}
    workgroupBarrier();
    ${nnGemm(p, 'acck', qc, 'P.d', p.wuD)}`;
  const store = (
    acc: string,
    wu: number,
    out: string,
    base: string,
    stride: string,
    width: string,
    factor: string,
  ) =>
    tile(
      p,
      wu,
      (i, u) => `{
    let row = r0 + ${rowOf(p, i)};
    let w = (tx + ${u * p.tx}u) * 4u;
    if (row < nk && w < ${width}) { st_${out}(${base} + row * ${stride} + w, ${acc}_${i}_${u}${factor}, min(4u, ${width} - w)); }
  }`,
    );
  return `${header(spec, false)}
${inputDecl('q', 1, spec.dtype, spec.vecD)}
${inputDecl('k', 2, spec.dtype, spec.vecD)}
${inputDecl('v', 3, spec.dtype, spec.vecV)}
${inputDecl('dout', 4, spec.dtype, spec.vecV)}
@group(0) @binding(5) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read> aux: array<u32>;
${outputDecl('dk', 7, spec.dtype, spec.vecD)}
${outputDecl('dv', 8, spec.dtype, spec.vecV)}
${rangeFns(true)}
${STAT}

@compute @workgroup_size(${p.threads})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  ${SEQ}
  let hk = wg.y;
  let r0 = wg.x * BR;
  if (r0 >= nk) { return; }
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  let ncols = i32(nq);
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + BR, nk)) - 1;
  ${declare(p, 'x', p.cu)}
  ${declare(p, 'y', p.cu)}
  ${declare(p, 'acck', p.wuD)}
  ${declare(p, 'accv', p.wuV)}
  for (var g = 0u; g < P.group; g++) {
    let h = hk * P.group + g;
    let slice = b * P.bsBatch + h * P.bsHead;
    let qB = b * P.qBatch + h * P.qHead + startQ * P.qRow;
    let oB = b * P.oBatch + h * P.oHead + startQ * P.oRow;
    let lB = b * P.lBatch + h * P.lHead + startQ;
    ${tileLoop(spec, 'ct * P.ntk + wg.x', body)}
  }
  ${store('acck', p.wuD, 'dk', 'kB', 'P.kRow', 'P.d', ' * P.scale')}
  ${store('accv', p.wuV, 'dv', 'vB', 'P.vRow', 'P.dv', '')}
}
`;
}
