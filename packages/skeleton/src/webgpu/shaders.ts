import { ValueError } from '@attnkit/tensor';
import {
  declareBindings,
  halfCodec,
  type StorageDType,
  type UniformField,
  type WgslBinding,
} from '@attnkit/webgpu';
import {
  hookFunctions,
  modsHaveGrad,
  pointwiseFn,
  pointwiseOut,
  pointwisePrelude,
  type WgslHooks,
} from './hooks.js';
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
 *
 * Hooks (../hooks.ts, ./hooks.ts): one template per pass; score mods run on S in natural units
 * after the scale and before the conversion to log2 units, the mask mod where the mask rule
 * needs it per element, and the normalisation (softmax or sigmoid) picks the weights. Without
 * hooks the generated code is the plain FlashAttention-2 kernel, unchanged.
 *
 * Permuted tiles (hooks.permute): tiles are of tiled rows; every row load and store of q, dO,
 * o, lse, dq (index `permq`, the LSE layout) and of k, v, dk, dv (`permk`) maps tiled row r to
 * its stored row through the index, while the mask rule, block sparsity and the score mods see
 * the tiled positions. Split-K's partials and the backward's (lse2, D) rows stay in the tiled
 * order. Without the hook no index is declared or read.
 */

export type { StorageDType };

export interface ShaderSpec {
  plan: WebGpuFlashPlan;
  dtype: StorageDType;
  /** D % 4 == 0: rows of q/k (and dq/dk) are read and written as vec4. */
  vecD: boolean;
  /** Dv % 4 == 0: rows of v/o/dO (and dv) likewise. */
  vecV: boolean;
  blockSparse: boolean;
  hooks: WgslHooks;
  /**
   * The forward's tile schedule: absent (or 'band') is FA2's one workgroup per query tile;
   * 'splitK' (FlashDecoding) splits each query tile's visited key tiles among P.splits
   * workgroups, which write partials that `combineShader` merges.
   * 'streamK' (LeanAttention) runs one workgroup per stream-K worker over its pieces of the
   * host's plan (host.ts streamKForward, aux.ts buildStreamK), writing partials in the split-K
   * layout that `combineShader` (the fix-up) merges; no block sparsity.
   */
  schedule?: 'band' | 'splitK' | 'streamK';
  /**
   * Paged K/V (AttentionProblem.paged; the forward only): k and v are page pools and key row t
   * of batch entry b is pool row `pg_row(b, t)` = pagetab[b P.pgPages + t / P.pgSize] P.pgSize
   * + t % P.pgSize, read per key through the block table (the u32 binding `pagetab` and the
   * uniforms pgSize, pgPages, which host.ts adds to the hooks' resources).
   */
  paged?: boolean;
  /**
   * The forward as split-f16's range guard (host.ts forwardLaunch): a read-only binding `guard`
   * whose word 0 the split pass sets when q, k or v hold a value split-f16 cannot take (|x| >=
   * 32768, an infinity, a NaN); every workgroup returns at once unless it is set, so the kernel,
   * queued after the tensor-core one, overwrites o and lse only then. The word is read from a
   * read-only buffer at a constant index, so the return is uniform control flow and the barriers
   * after it stay legal. The band schedule only.
   */
  guard?: boolean;
}

/** The uniform field a split-K forward and its combine add after the hooks' (the split count). */
export const SPLITS_FIELD: UniformField = ['splits', 'u32'];

/**
 * The uniform fields a stream-K forward and its fix-up add after the hooks': `splits` (partial
 * slots per row: the most pieces any unit has), then the offsets in aux of the plan's tables
 * (aux.ts buildStreamK): skWorkers (worker w's pieces are records aux[skWorkers + w] up to
 * aux[skWorkers + w + 1]), skRecords (6 u32 per piece: b, h, query tile, first and end key tile,
 * slot), skUnits (per (b, h): its first unit), skCounts (per unit: its pieces), and skHeads (Hq).
 */
export const STREAMK_FIELDS: readonly UniformField[] = [
  SPLITS_FIELD,
  ['skWorkers', 'u32'],
  ['skRecords', 'u32'],
  ['skUnits', 'u32'],
  ['skCounts', 'u32'],
  ['skHeads', 'u32'],
];

/** Paged K/V (ShaderSpec.paged): the pool row of key t of batch entry b, through the block table. */
const PAGED_ROW = `
fn pg_row(b: u32, t: u32) -> u32 {
  let slot = t / P.pgSize;
  return pagetab[b * P.pgPages + slot] * P.pgSize + (t - slot * P.pgSize);
}`;

/** The forward's schedule as the generators read it (absent = 'band'). */
type Schedule = NonNullable<ShaderSpec['schedule']>;

/** A generated kernel: its WGSL and the bindings it declares (host buffers bind by their names). */
export interface WgslKernel {
  code: string;
  bindings: readonly WgslBinding[];
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
  /** Tiled row -> stored row (hooks.permute's index); absent = the identity. */
  perm?: ((row: string) => string) | undefined;
}

/**
 * hooks.permute: the stored row of tiled query row `row` (`permq` read at `pqB`, the LSE offset
 * of the (b, h) slice), or undefined without a query permutation.
 */
function permQ(spec: ShaderSpec): ((row: string) => string) | undefined {
  return spec.hooks.permute?.q ? (row) => `permq[pqB + ${row}]` : undefined;
}

/** hooks.permute: the stored row of tiled key row `row` (`permk` at `pkB`), or undefined. */
function permK(spec: ShaderSpec): ((row: string) => string) | undefined {
  return spec.hooks.permute?.k ? (row) => `permk[pkB + ${row}]` : undefined;
}

/** `row` through `perm` (the plain row expression without one). */
function through(perm: ((row: string) => string) | undefined, row: string): string {
  return perm ? perm(row) : row;
}

/** The index bases a kernel's permuted rows read (empty without hooks.permute). */
function permBases(spec: ShaderSpec, q: boolean, k: boolean, indent = '\n  '): string {
  const pm = spec.hooks.permute;
  return `${q && pm?.q ? `${indent}let pqB = b * P.lBatch + h * P.lHead + startQ;` : ''}${
    k && pm?.k ? `${indent}let pkB = b * P.pkBatch + hk * P.pkHead + startK;` : ''
  }`;
}

/** The binding of the query index (hooks.permute.q) for the kernels outside the hook template. */
const PERMQ: WgslBinding = { name: 'permq', kind: 'read', type: 'array<u32>' };

/**
 * x_i_u += A B^T over the contraction `width`: A rows are the tile's rows, B rows its columns.
 * Chunks of KC are staged transposed (vec4 over rows / columns), so the inner loop reads one
 * vec4 per row group of A and CU vec4 of B per step for 16 rv CU multiply-adds.
 *
 * Staging order (`rowWalk`): with it, consecutive threads walk one row's KC/4 vec4 first, so a
 * subgroup's global loads cover whole KC-float row segments (8 rows per 32 threads instead of
 * 32 rows x 16 bytes) at the price of 4 threads per bank in the transposing scalar stores. On
 * the H100 (2026-11-22, benchmarks/gpu/results) it made the forward 7% faster (24.1 -> 25.9
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
        let e = ${o.base} + ${o.perm ? o.perm(`${o.first} + r`) : `(${o.first} + r)`} * ${o.stride} + kk;
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
        let e = ${m.base} + ${through(m.perm, 'row')} * ${m.stride} + w;
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
 * `key_lo`/`key_hi` are spec.ts `keyRange` (the normative rule); `query_lo`/`query_hi` are its
 * transpose (the queries that see key r), for the kernel whose rows are keys.
 */
function rangeFns(rowsAreKeys: boolean): string {
  if (!rowsAreKeys) {
    // spec.ts keyRange(p, i, nq, nk) = [key_lo, key_hi): the normative mask rule (with `allowed`).
    return `fn key_lo(r: i32, off: i32, ncols: i32) -> i32 { if (P.left < 0) { return 0; } return max(r + off - P.left, 0); }
fn key_hi(r: i32, off: i32, ncols: i32) -> i32 { if (P.right < 0) { return ncols; } return clamp(r + off + P.right + 1, 0, ncols); }`;
  }
  // The transpose of spec.ts keyRange: key r is in keyRange(i) iff query_lo(r) <= i < query_hi(r).
  return `fn query_lo(r: i32, off: i32, ncols: i32) -> i32 { if (P.right < 0) { return 0; } return max(r - off - P.right, 0); }
fn query_hi(r: i32, off: i32, ncols: i32) -> i32 { if (P.left < 0) { return ncols; } return clamp(r - off + P.left + 1, 0, ncols); }`;
}

/** The WGSL names of the partner range of a row: keys of a query row, or queries of a key row. */
function rangeNames(rowsAreKeys: boolean): [lo: string, hi: string] {
  return rowsAreKeys ? ['query_lo', 'query_hi'] : ['key_lo', 'key_hi'];
}

/**
 * The column-tile loop header shared by the three tiled kernels: the range of column tiles any
 * row of this tile can see, skipping tiles with no allowed pair and marking those where every
 * pair is allowed (`full`: the mask-free path). With block sparsity, the host's per-tile
 * summary (0 skip, 1 mixed, 2 all kept) refines both.
 */
function tileLoop(
  spec: ShaderSpec,
  rowsAreKeys: boolean,
  stateIndex: string,
  body: string,
  schedule: Schedule = 'band',
): string {
  const splitK = schedule === 'splitK';
  const [lo, hi] = rangeNames(rowsAreKeys);
  const stateOf = `aux[P.tsOff + slice * P.ntq * P.ntk + ${stateIndex}]`;
  // Split-K with block sparsity: shares are of the visited tiles (state != 0), counted first.
  const share =
    splitK && spec.blockSparse
      ? `
      let vi = vis;
      vis++;
      if (vi < va || vi >= vb) { continue; }`
      : '';
  const bs = spec.blockSparse
    ? `let state = ${stateOf};
      if (state == 0u) { continue; }${share}
      let mixed = state == 1u;
      full = full && !mixed;`
    : '';
  // Split-K: this workgroup's contiguous share of the visited tiles, balanced to one tile.
  // Stream-K: the piece's key tiles [ctBegin, ctEnd), a sub-range of the band's (the host
  // counts the band's tiles exactly as the range below does).
  const range = !splitK
    ? schedule === 'streamK'
      ? 'var ct = ctBegin; ct < ctEnd; ct++'
      : 'var ct = u32(loFirst) / BC; ct < (u32(hiLast) + BC - 1u) / BC; ct++'
    : spec.blockSparse
      ? 'var ct = ctLo; ct < ctHi; ct++'
      : 'var ct = ctLo + nvis * split / P.splits; ct < ctLo + nvis * (split + 1u) / P.splits; ct++';
  const bounds = !splitK
    ? ''
    : `
  let ctLo = u32(loFirst) / BC;
  let ctHi = max((u32(hiLast) + BC - 1u) / BC, ctLo);${
    spec.blockSparse
      ? `
  var nvis = 0u;
  for (var ct = ctLo; ct < ctHi; ct++) { if (${stateOf} != 0u) { nvis++; } }
  let va = nvis * split / P.splits;
  let vb = nvis * (split + 1u) / P.splits;
  var vis = 0u;`
      : `
  let nvis = ctHi - ctLo;`
  }`;
  return `
  let loFirst = ${lo}(rFirst, off, ncols);
  let hiLast = max(${hi}(rLast, off, ncols), 0);
  let loLast = ${lo}(rLast, off, ncols);
  let hiFirst = ${hi}(rFirst, off, ncols);${bounds}
  for (${range}) {
    let c0 = ct * BC;
    if (i32(c0) >= hiLast || i32(c0 + BC) <= loFirst) { continue; }
    var full = i32(c0) >= loLast && i32(c0 + BC) <= hiFirst;
    ${bs}
    ${body}
  }`;
}

/**
 * Masks x_i_u (scores in log2 units) to NEG outside the partner ranges and, in mixed tiles,
 * outside kept blocks. With a mask mod the blocks are its block mask (0 none, 1 some, 2 all
 * pairs pass), and the mod runs per element only in blocks marked 1.
 */
function maskCode(spec: ShaderSpec, rowsAreKeys: boolean): string {
  const p = spec.plan;
  const ranges = `${rowRanges(p, rowsAreKeys)}\n${tile(
    p,
    p.cu,
    (i, u) => `{
      let cols = vec4<i32>(i32(c0 + (tx + ${u * p.tx}u) * 4u)) + vec4<i32>(0, 1, 2, 3);
      let ok = (cols >= vec4<i32>(lo${i})) & (cols < vec4<i32>(hi${i}));
      x_${i}_${u} = select(vec4<f32>(NEG), x_${i}_${u}, ok);
    }`,
  )}`;
  const q = rowsAreKeys ? 'col' : 'row';
  const k = rowsAreKeys ? 'row' : 'col';
  // The HSTU mask hook (../hooks.ts HstuMaskHook): every visited tile, full or not, tests each
  // pair; query row i is position i + nk - nq of the sequence (the queries are its last nq
  // tokens: M-FALCON's candidates when nq < nk). Kernels without it are unchanged.
  const hstu = spec.hooks.hstu
    ? `\n${tile(p, p.cu, (i, u) =>
        rep(
          4,
          (e) => `{
      let row = r0 + ${rowOf(p, i)};
      let col = c0 + (tx + ${u * p.tx}u) * 4u + ${e}u;
      if (!hk_hstu(b, i32(${q}) + i32(nk) - i32(nq), i32(${k}), i32(nk))) { x_${i}_${u}.${E[e]} = NEG; }
    }`,
        ),
      )}`
    : '';
  if (!spec.blockSparse) return `if (!full) {\n${ranges}\n  }${hstu}`;
  const block = `aux[P.bsOff + slice * P.nbq * P.nbk + (${q} / P.bsQ) * P.nbk + ${k} / P.bsK]`;
  const mm = spec.hooks.maskMod;
  const test = (x: string) =>
    mm
      ? `let blk = ${block};
      if (blk == 0u || (blk == 1u && !${mm.name}(b, h, ${q}, ${k}))) { ${x} = NEG; }`
      : `if (${block} == 0u) { ${x} = NEG; }`;
  const blocks = tile(p, p.cu, (i, u) =>
    rep(
      4,
      (e) => `{
      let row = r0 + ${rowOf(p, i)};
      let col = c0 + (tx + ${u * p.tx}u) * 4u + ${e}u;
      ${test(`x_${i}_${u}.${E[e]}`)}
    }`,
    ),
  );
  return `if (!full) {\n${ranges}\n    if (mixed) {\n${blocks}\n    }\n  }${hstu}`;
}

/**
 * Scores x_i_u = Q K^T (rows i, columns u) to log2 units: scaled, through the score mods in
 * natural units (with `grad`, their derivative product into g_i_u), plus sigmoid's bias.
 * Query positions are the rows (keys in the dK/dV kernel, `rowsAreKeys`).
 */
function scoreCode(spec: ShaderSpec, rowsAreKeys: boolean, grad: boolean): string {
  const p = spec.plan;
  const bias = spec.hooks.normalize === 'sigmoid' ? ' + vec4<f32>(sb)' : '';
  // HSTU's bucketed rab joins the scaled score first, before the mods (hooks.rab).
  const rab = spec.hooks.rab !== undefined;
  const where = (i: number, u: number) => {
    const rows = `vec4<u32>(r0 + ${rowOf(p, i)})`;
    const cols = `vec4<u32>(c0 + (tx + ${u * p.tx}u) * 4u) + vec4<u32>(0u, 1u, 2u, 3u)`;
    return rowsAreKeys ? [cols, rows] : [rows, cols];
  };
  const scaled = (i: number, u: number) => {
    if (!rab) return `x_${i}_${u} * P.scale`;
    const [qi, kj] = where(i, u);
    return `hk_rab(x_${i}_${u} * P.scale, h, ${qi}, ${kj}, nq, nk, startK)`;
  };
  if (spec.hooks.mods.length === 0 && rab)
    return tile(p, p.cu, (i, u) => `x_${i}_${u} = ${scaled(i, u)} * LOG2E${bias};`);
  if (spec.hooks.mods.length === 0) {
    return bias
      ? tile(p, p.cu, (i, u) => `x_${i}_${u} = x_${i}_${u} * P.scaleLog2${bias};`)
      : tile(p, p.cu, (i, u) => `x_${i}_${u} *= P.scaleLog2;`);
  }
  return tile(p, p.cu, (i, u) => {
    const [qi, kj] = where(i, u);
    const args = `${scaled(i, u)}, b, h, ${qi}, ${kj}, nq, nk`;
    return grad
      ? `{
      let md = hk_score_bwd(${args});
      x_${i}_${u} = md.s * LOG2E${bias};
      g_${i}_${u} = md.g;
    }`
      : `x_${i}_${u} = hk_score(${args}) * LOG2E${bias};`;
  });
}

function header(
  spec: ShaderSpec,
  bindings: readonly WgslBinding[],
  backward: boolean,
  subgroups: boolean,
): string {
  const hooks = hookFunctions(spec.hooks, backward);
  return `${subgroups ? 'enable subgroups;\n' : ''}${paramsStruct(spec.hooks.uniforms)}
${halfCodec(spec.dtype)}
${constants(spec.plan)}
${declareBindings(bindings)}${hooks ? `\n${hooks}` : ''}`;
}

const UNIFORMS: WgslBinding = { name: 'P', kind: 'uniform', type: 'Params' };
const AUX: WgslBinding = { name: 'aux', kind: 'read', type: 'array<u32>' };
/** The backward's (LSE log2(e), D) per query row (softmax only). */
const STATS: WgslBinding = { name: 'stats', kind: 'read', type: 'array<vec2<f32>>' };

function tensorBinding(kind: 'read' | 'storage', name: string, dtype: StorageDType, vec: boolean) {
  return { name, kind, type: { dtype, vec } } satisfies WgslBinding;
}

/** The sequence of this workgroup; split-K's batch axis interleaves (batch, split). */
const seq = (splitK: boolean) => `
  ${splitK ? 'let b = wg.z / P.splits;\n  let split = wg.z % P.splits;' : 'let b = wg.z;'}
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
function rowRanges(p: WebGpuFlashPlan, rowsAreKeys: boolean): string {
  const [lo, hi] = rangeNames(rowsAreKeys);
  return rep(
    4 * p.rv,
    (i) => `let lo${i} = ${lo}(i32(r0 + ${rowOf(p, i)}), off, ncols);
  let hi${i} = ${hi}(i32(r0 + ${rowOf(p, i)}), off, ncols);`,
    '\n  ',
  );
}

/**
 * FA2 forward (Dao 2023, Algorithm 1): one workgroup per (query tile, head, batch). Softmax
 * keeps the online row max and sum (sinks join the sum at the end); the pointwise ones need no
 * row statistics: O = sum_j w(S_ij) v_j, w = sigmoid(S + bias) or c silu(S) (`pointwiseFn`).
 */
export function forwardShader(input: ShaderSpec): WgslKernel {
  const schedule = input.schedule ?? 'band';
  const streamK = schedule === 'streamK';
  if (input.guard && schedule !== 'band')
    throw new ValueError(`guard: expected the band schedule beside it, got ${schedule}`, 'guard');
  // The host declines it first (host.ts streamKForward); the per-tile summary would have to be
  // counted into the plan's pieces, which the plan does not do.
  if (streamK && input.blockSparse)
    throw new ValueError(
      'schedule: expected no block-sparse mask with the stream-K forward, got one',
      'schedule',
    );
  // Split-K and stream-K write partials (m, l, acc) per (row, slot) instead of o and lse.
  const splitK = schedule === 'splitK' || streamK;
  const spec = splitK ? splitSpec(input, streamK) : input;
  const p = spec.plan;
  const softmax = spec.hooks.normalize === 'softmax';
  const sub = softmax && p.subgroupReduce;
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
    perm: permQ(spec),
    base: 'qB',
    stride: 'P.qRow',
    first: 'r0',
    rows: 'nq',
    vec: spec.vecD,
  };
  // Paged K/V: each key row through the block table (pg_row), else through the key permutation.
  const keyRows = spec.paged ? (row: string) => `pg_row(b, ${row})` : permK(spec);
  const k: Operand = {
    name: 'k',
    perm: keyRows,
    base: 'kB',
    stride: 'P.kRow',
    first: 'c0',
    rows: 'nk',
    vec: spec.vecD,
  };
  const v: Operand = {
    name: 'v',
    perm: keyRows,
    base: 'vB',
    stride: 'P.vRow',
    first: 'c0',
    rows: 'nk',
    vec: spec.vecV,
  };
  const maxOf = (xs: string[]): string =>
    xs.length === 1 ? xs[0]! : `max(${xs[0]}, ${maxOf(xs.slice(1))})`;
  const rowMax = (i: number) => maxOf(Array.from({ length: p.cu }, (_, u) => hmax(`x_${i}_${u}`)));
  const weights = softmax
    ? `
    ${perGroup((g) => `var mt${g} = vec4<f32>(${rep(4, (i) => rowMax(4 * g + i), ', ')});`)}
    ${reduce('mt', 'max')}
    ${perGroup((g) => `let mn${g} = max(m${g}, mt${g});\n    let alpha${g} = exp2(m${g} - mn${g});\n    m${g} = mn${g};`)}
    ${tile(p, p.cu, (i, u) => `x_${i}_${u} = exp2(x_${i}_${u} - vec4<f32>(${rowVec('mn', i)}));`)}
    ${perGroup((g) => `l${g} = l${g} * alpha${g} + vec4<f32>(${rep(4, (i) => rep(p.cu, (u) => hsum(`x_${4 * g + i}_${u}`), ' + '), ', ')});`)}
    ${tile(p, p.wuV, (i, u) => `acc_${i}_${u} *= ${rowVec('alpha', i)};`)}`
    : `
    ${tile(p, p.cu, (i, u) => `x_${i}_${u} = ${pointwiseFn(spec.hooks)}(x_${i}_${u}).w;`)}`;
  const body = `
    ${ntGemm(p, 'x', q, k, 'P.d', true)}
    ${scoreCode(spec, false, false)}
    ${maskCode(spec, false)}${weights}
    ${writeZ(p, 'x')}
    workgroupBarrier();
    ${nnGemm(p, 'acc', v, 'P.dv', p.wuV)}`;
  const store = tile(p, p.wuV, (i, u) => {
    const value = softmax
      ? `acc_${i}_${u} * ${rowVec('inv', i)}`
      : `acc_${i}_${u}${pointwiseOut(spec.hooks)}`;
    return `{
    let row = r0 + ${rowOf(p, i)};
    let w = (tx + ${u * p.tx}u) * 4u;
    if (row < nq && w < P.dv) { st_o(oB + ${through(permQ(spec), 'row')} * P.oRow + w, ${value}, min(4u, P.dv - w)); }
  }`;
  });
  // Sinks join l as e^(sink - m) with a zero value vector: m = max(m, sink), in log2 units.
  const sinks = spec.hooks.sinks
    ? `
  let sink = sinks[h] * LOG2E;
  ${perGroup(
    (g) => `let ms${g} = max(m${g}, vec4<f32>(sink));
  let sa${g} = exp2(m${g} - ms${g});
  l${g} = l${g} * sa${g} + exp2(vec4<f32>(sink) - ms${g});
  m${g} = ms${g};`,
    '\n  ',
  )}`
    : '';
  const epilogue = softmax
    ? `${reduce('l', '+')}${sinks}
  ${perGroup((g) => `let inv${g} = select(${spec.hooks.sinks ? `sa${g}` : 'vec4<f32>(1.0)'} / l${g}, vec4<f32>(0.0), l${g} == vec4<f32>(0.0));`, '\n  ')}
  ${store}
  if (tx == 0u) {
    let lB = b * P.lBatch + h * P.lHead + startQ;
    ${rep(4 * p.rv, (i) => `if (r0 + ${rowOf(p, i)} < nq) { lse[lB + ${through(permQ(spec), `r0 + ${rowOf(p, i)}`)}] = select(${LSE_OF(rowVec('m', i), rowVec('l', i))}, bitcast<f32>(P.negInf), ${rowVec('l', i)} == 0.0); }`, '\n    ')}
  }`
    : store;
  // Split-K: the unnormalised partial (m, l, acc) of each row instead of o and lse.
  const partial = `
  let lB = b * P.lBatch + h * P.lHead + startQ;
  ${tile(
    p,
    p.wuV,
    (i, u) => `{
    let row = r0 + ${rowOf(p, i)};
    let w = (tx + ${u * p.tx}u) * 4u;
    if (row < nq && w < P.dv) { st_pacc(((lB + row) * P.splits + split) * P.dv + w, acc_${i}_${u}${softmax ? '' : pointwiseOut(spec.hooks)}, min(4u, P.dv - w)); }
  }`,
  )}`;
  const splitEpilogue = softmax
    ? `${reduce('l', '+')}${partial}
  if (tx == 0u) {
    ${rep(4 * p.rv, (i) => `if (r0 + ${rowOf(p, i)} < nq) { pstat[(lB + r0 + ${rowOf(p, i)}) * P.splits + split] = vec2<f32>(${rowVec('m', i)}, ${rowVec('l', i)}); }`, '\n    ')}
  }`
    : partial;
  const bindings: WgslBinding[] = [
    UNIFORMS,
    tensorBinding('read', 'q', spec.dtype, spec.vecD),
    tensorBinding('read', 'k', spec.dtype, spec.vecD),
    tensorBinding('read', 'v', spec.dtype, spec.vecV),
    AUX,
    ...(splitK ? partials(softmax, spec.vecV, 'storage') : []),
    ...(splitK ? [] : [tensorBinding('storage', 'o', spec.dtype, spec.vecV)]),
    ...(softmax && !splitK ? [{ name: 'lse', kind: 'storage', type: 'array<f32>' } as const] : []),
    ...spec.hooks.bindings,
    ...(spec.guard ? [{ name: 'guard', kind: 'read', type: 'array<u32>' } as const] : []),
  ];
  // One (query tile, head, batch): the workgroup's, or a stream-K piece's.
  const work = `
  let hk = h / P.group;
  let slice = b * P.bsBatch + h * P.bsHead;
  let qB = b * P.qBatch + h * P.qHead + startQ * P.qRow;
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  let oB = b * P.oBatch + h * P.oHead + startQ * P.oRow;${permBases(spec, true, true)}
  let ncols = i32(nk);
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + BR, nq)) - 1;
  ${softmax ? perGroup((g) => `var m${g} = vec4<f32>(M0);\n  var l${g} = vec4<f32>(0.0);`, '\n  ') : pointwisePrelude(spec.hooks)}
  ${declare(p, 'x', p.cu)}
  ${declare(p, 'acc', p.wuV)}
  ${tileLoop(spec, false, 'wg.x * P.ntk + ct', body, schedule)}
  ${splitK ? splitEpilogue : epilogue}`;
  // Stream-K: workgroup wg.x is one worker; it runs its pieces in turn (records in aux, see
  // STREAMK_FIELDS), each a (b, h, query tile) over a key-tile range into partial slot `split`.
  // Every piece has rows (the host plans units of r0 < nq only). The loop bounds come from aux
  // at the workgroup's index, so they are uniform and the barriers inside stay legal; the
  // closing barrier keeps the next piece's first writes to workgroup memory after this
  // piece's last reads of it.
  const main = streamK
    ? `
  let pcEnd = aux[P.skWorkers + wg.x + 1u];
  for (var pc = aux[P.skWorkers + wg.x]; pc < pcEnd; pc++) {
  let pe = P.skRecords + 6u * pc;
  let b = aux[pe];
  let h = aux[pe + 1u];
  let r0 = aux[pe + 2u] * BR;
  let ctBegin = aux[pe + 3u];
  let ctEnd = aux[pe + 4u];
  let split = aux[pe + 5u];
  let startQ = aux[4u * b];
  let startK = aux[4u * b + 1u];
  let nq = aux[4u * b + 2u];
  let nk = aux[4u * b + 3u];
  let off = i32(nk) - i32(nq);
  let tx = lid % TX;
  let ty = lid / TX;${work}
  workgroupBarrier();
  }`
    : `${spec.guard ? '\n  if (guard[0] == 0u) { return; }' : ''}
  ${seq(splitK)}
  let h = wg.y;
  let r0 = wg.x * BR;
  if (r0 >= nq) { return; }${work}`;
  const code = `${header(spec, bindings, false, sub)}
${rangeFns(false)}${spec.paged ? PAGED_ROW : ''}

@compute @workgroup_size(${p.threads})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {${main}
}
`;
  return { code, bindings };
}

/**
 * The split-K (stream-K) forward's hooks: sinks join in the combine (fix-up); the uniforms gain
 * the split count (stream-K's fields, STREAMK_FIELDS).
 */
function splitSpec(spec: ShaderSpec, streamK = false): ShaderSpec {
  const h = spec.hooks;
  return {
    ...spec,
    hooks: {
      ...h,
      sinks: false,
      bindings: h.bindings.filter((b) => b.name !== 'sinks'),
      uniforms: [...h.uniforms, ...(streamK ? STREAMK_FIELDS : [SPLITS_FIELD])],
    },
  };
}

/**
 * Split-K's scratch: per (row, split) the row's (m, l) in log2 units (softmax) and its
 * unnormalised accumulator (Dv f32), at (row index of lse) * splits + split.
 */
function partials(softmax: boolean, vecV: boolean, kind: 'read' | 'storage'): WgslBinding[] {
  return [
    ...(softmax ? [{ name: 'pstat', kind, type: 'array<vec2<f32>>' } as const] : []),
    tensorBinding(kind, 'pacc', 'f32', vecV),
  ];
}

/**
 * The combine (split-K) / fix-up (stream-K) layout: a workgroup of 64 threads merges
 * COMBINE_ROWS query rows, COMBINE_LANES threads a row, each thread a vec4 of every
 * 4 x COMBINE_LANES columns. One thread a row (before session 31) looped over Dv / 4 x slots
 * loads one after another: at decode (one row a head, 16-18 slots a row, ~550 loads in a chain
 * with the slots' (m, l) reads) that was half of the 0.12-0.15 ms every split-K / stream-K
 * decode call on the H100 spent beyond streaming K and V at the read ceiling: the lanes cut it
 * to 0.06-0.08 ms (A/B on the H100, BENCHMARKS.md "LeanAttention decode, session 32").
 * Lanes along the columns also make a slot's row one coalesced read.
 */
export const COMBINE_LANES = 16;
export const COMBINE_ROWS = 64 / COMBINE_LANES;

/**
 * Split-K's combine (FlashDecoding): COMBINE_LANES threads a query row merge its P.splits partials with
 * the associative rule, in log2 units: m = max m_s, l = sum l_s 2^(m_s - m), acc likewise; the
 * sinks join once here; the pointwise ones' partials are plain sums. Writes o (the storage dtype) and lse;
 * rows without keys get O = 0 and LSE = -inf (or the sink). Bindings and uniforms as the split-K
 * forward of the same spec (one uniform buffer serves both).
 *
 * With schedule 'streamK' it is stream-K's fix-up: the same merge over the pieces of the row's
 * unit (its query tile), whose count the plan's tables give (a unit may have fewer pieces than
 * P.splits slots; a unit without tiles has none: O = 0, LSE = -inf or the sink).
 */
export function combineShader(input: ShaderSpec): WgslKernel {
  const streamK = input.schedule === 'streamK';
  const spec = splitSpec(input, streamK);
  const n = streamK ? 'n' : 'P.splits';
  const softmax = spec.hooks.normalize === 'softmax';
  const sinks = softmax && input.hooks.sinks;
  // hooks.permute.q: partials are in the tiled order; o and lse rows go through the index.
  const permute = input.hooks.permute?.q === true;
  const row = permute ? 'pi' : 'i';
  const bindings: WgslBinding[] = [
    UNIFORMS,
    AUX,
    ...partials(softmax, spec.vecV, 'read'),
    tensorBinding('storage', 'o', spec.dtype, spec.vecV),
    ...(softmax ? [{ name: 'lse', kind: 'storage', type: 'array<f32>' } as const] : []),
    ...(sinks ? [{ name: 'sinks', kind: 'read', type: 'array<f32>' } as const] : []),
    ...(permute ? [PERMQ] : []),
  ];
  const weight = softmax ? ' * exp2(pstat[pB + s].x - m)' : '';
  const stats = softmax
    ? `
  var m = M0;
  for (var s = 0u; s < ${n}; s++) { m = max(m, pstat[pB + s].x); }
  var l = 0.0;
  for (var s = 0u; s < ${n}; s++) { l += pstat[pB + s].y * exp2(pstat[pB + s].x - m); }${
    sinks
      ? `
  let sink = sinks[h] * LOG2E;
  let ms = max(m, sink);
  let sa = exp2(m - ms);
  l = l * sa + exp2(sink - ms);
  let inv = select(sa / l, 0.0, l == 0.0);`
      : `
  let ms = m;
  let inv = select(1.0 / l, 0.0, l == 0.0);`
  }`
    : '';
  const code = `${paramsStruct(spec.hooks.uniforms)}
${halfCodec(spec.dtype)}
${declareBindings(bindings)}
const M0 = -1.0e38;
const LOG2E = 1.4426950408889634;
const LN2 = 0.6931471805599453;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let b = wg.z;
  let h = wg.y;
  let startQ = aux[4u * b];
  let nq = aux[4u * b + 2u];
  let c = lid % ${COMBINE_LANES}u;
  // Rows past the grid's (maxComputeWorkgroupsPerDimension x COMBINE_ROWS) loop around.
  for (var i = wg.x * ${COMBINE_ROWS}u + lid / ${COMBINE_LANES}u; i < nq; i += nwg.x * ${COMBINE_ROWS}u) {
  let li = b * P.lBatch + h * P.lHead + startQ + i;${permute ? '\n  let pi = permq[li];' : ''}
  let oE = b * P.oBatch + h * P.oHead + (startQ + ${row}) * P.oRow;
  let pB = li * P.splits;${
    streamK
      ? `
  let n = aux[P.skCounts + aux[P.skUnits + b * P.skHeads + h] + i / ${spec.plan.br}u];`
      : ''
  }${stats}
  for (var w = 4u * c; w < P.dv; w += ${4 * COMBINE_LANES}u) {
    var a = vec4<f32>(0.0);
    for (var s = 0u; s < ${n}; s++) {
      let e = (pB + s) * P.dv + w;
      var val = vec4<f32>(0.0);
      ${load4('val', 'pacc', 'e', 'w', 'P.dv', spec.vecV)}
      a += val${weight};
    }
    st_o(oE + w, a${softmax ? ' * inv' : ''}, min(4u, P.dv - w));
  }${
    softmax
      ? `
  if (c == 0u) { lse[${permute ? 'li - i + pi' : 'li'}] = select(${LSE_OF('ms', 'l')}, bitcast<f32>(P.negInf), l == 0.0); }`
      : ''
  }
  }
}
`;
  return { code, bindings };
}

/**
 * Backward pre-pass (FA2 Algorithm 2, line 4): D_i = rowsum(dO_i * O_i), stored beside
 * LSE_i as (LSE, D) pairs (natural units: prob() takes S ln 2 - LSE, see STAT). Rows without
 * keys get LSE = 0: every score of theirs is
 * masked, so the value is never used, and it keeps exp2 finite. With `permuteQ`
 * (hooks.permute.q) tiled row i reads o, dO and lse at its stored row permq[i] and keeps its
 * pair at the tiled index i, where the dQ and dK/dV passes read it.
 */
export function statsShader(dtype: StorageDType, vecV: boolean, permuteQ = false): WgslKernel {
  const bindings: WgslBinding[] = [
    UNIFORMS,
    tensorBinding('read', 'o', dtype, vecV),
    tensorBinding('read', 'dout', dtype, vecV),
    { name: 'lse', kind: 'read', type: 'array<f32>' },
    AUX,
    { ...STATS, kind: 'storage' },
    ...(permuteQ ? [PERMQ] : []),
  ];
  const row = permuteQ ? 'pi' : 'i';
  const code = `${paramsStruct()}
${halfCodec(dtype)}
${declareBindings(bindings)}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wg.z;
  let h = wg.y;
  let startQ = aux[4u * b];
  let nq = aux[4u * b + 2u];
  let i = wg.x * 64u + lid;
  if (i >= nq) { return; }${permuteQ ? '\n  let pi = permq[b * P.lBatch + h * P.lHead + startQ + i];' : ''}
  let oB = b * P.oBatch + h * P.oHead + (startQ + ${row}) * P.oRow;
  var dd = 0.0;
  ${
    vecV
      ? `for (var w = 0u; w < P.dv; w += 4u) { dd += dot(ld4_o(oB + w), ld4_dout(oB + w)); }`
      : `for (var w = 0u; w < P.dv; w++) { dd += ld_o(oB + w) * ld_dout(oB + w); }`
  }
  let li = b * P.lBatch + h * P.lHead + startQ + i;
  let x = lse[${permuteQ ? 'li - i + pi' : 'li'}];
  stats[li] = vec2<f32>(select(x, 0.0, x < -1.0e38), dd);
}
`;
  return { code, bindings };
}

/**
 * Zero, from a uniform the compiler cannot see through (P.negInf holds the bits of -inf): a
 * product XORed with it is rounded to f32 on its own. WGSL lets a compiler contract a * b + c
 * into an fma, and NVIDIA's does: LSE = fma(m, ln 2, ln l) against P = e^(fma(s, ln 2, -LSE))
 * left the product's rounding in t, P = 0.99 for a one-hot row at logits of 1e5 and dv 7e-4
 * off on the H200 (llvmpipe did not contract). One XOR per score.
 */
const ROUNDED = '(P.negInf ^ 0xff800000u)';

/**
 * Loads (LSE, D) of a query row, zeros past the sequence; and P of scores x (log2 units) of
 * rows with LSE lse: e^t with t = x ln 2 - LSE, the product rounded as LSE_OF rounded the row
 * max's, clamped to t <= 0 so rounding never lifts a probability above 1 (or overflows it at
 * large logits); select keeps a NaN t NaN (WGSL's min need not).
 */
const STAT = `fn stat(li: u32, ok: bool) -> vec2<f32> { if (ok) { return stats[li]; } return vec2<f32>(0.0); }
fn prob(x: vec4<f32>, lse: vec4<f32>) -> vec4<f32> {
  let t = bitcast<vec4<f32>>(bitcast<vec4<u32>>(x * LN2) ^ vec4<u32>(${ROUNDED})) - lse;
  return exp2(select(t, vec4<f32>(0.0), t > vec4<f32>(0.0)) * LOG2E);
}`;

/**
 * LSE (natural units) of a row with max m (scores in log2 units) and sum l = sum 2^(s - m):
 * m ln 2 + ln l, with the product rounded as the backward's prob() rounds it, so a one-hot row
 * (l = 1) gets P = 1 back; ((m + log2 l) ln 2 would not).
 */
function LSE_OF(m: string, l: string): string {
  return `bitcast<f32>(bitcast<u32>(${m} * LN2) ^ ${ROUNDED}) + log(${l})`;
}

/** The gradient of a bias mod with grad (WgslHooks.dbias), written by the dQ pass. */
const DBIAS: WgslBinding = { name: 'dbias', kind: 'storage', type: 'array<f32>' };
/** The bucketed rab's table gradients (WgslHooks.rab.grad): f32 bits, added by compare-exchange. */
const DRABP: WgslBinding = { name: 'drabp', kind: 'storage', type: 'array<atomic<u32>>' };
const DRABT: WgslBinding = { name: 'drabt', kind: 'storage', type: 'array<atomic<u32>>' };

/**
 * dS of the tile (x, natural units, 0 at masked pairs) stored as the bias's gradient: the dQ
 * pass visits each (row, key) of a head once, and the host gives every (b, h) its own elements
 * (WgslHooks.dbias), so plain stores. Padding rows and columns store nothing; pairs of tiles
 * the band skips keep the host's zeros.
 */
function storeDbias(p: WebGpuFlashPlan): string {
  return tile(p, p.cu, (i, u) =>
    rep(
      4,
      (e) => `{
      let row = r0 + ${rowOf(p, i)};
      let col = c0 + (tx + ${u * p.tx}u) * 4u + ${e}u;
      if (row < nq && col < nk) { dbias[b * P.dbBatch + h * P.dbHead + row * P.dbRow + col] = x_${i}_${u}.${E[e]}; }
    }`,
    ),
  );
}

/** Time columns whose gradient the dQ pass sums in workgroup memory (later ones: in global memory). */
export const RAB_TIME_COLS = 128;

/**
 * The bucketed rab's table gradients (WgslHooks.rab.grad) in the dQ pass: each pair's dZ (the
 * tile's dS) joins a per-workgroup partial in workgroup memory, `rabg` (WGSL has no float
 * atomics: a compare-exchange loop on the f32 bits), which is flushed into the storage buffers
 * `drabp` / `drabt` (f32 bits as atomic<u32>, zeros from the host) after every key tile. The
 * position columns a tile touches are BR + BC - 1 consecutive raw columns j - i + (P - 1) / 2
 * (slot c - r + BR - 1 for tile row r, tile column c; clamped to the table at the flush); time
 * columns below RAB_TIME_COLS have a slot each, the rest go to global memory directly.
 */
function rabGradDecls(spec: ShaderSpec): string {
  const r = spec.hooks.rab!;
  const np = r.pos ? spec.plan.br + spec.plan.bc - 1 : 0;
  const tw = r.time ? RAB_TIME_COLS : 0;
  const cas = (name: string, space: string) => `fn ${name}(e: u32, x: f32) {
  var old = atomicLoad(&${space}[e]);
  loop {
    let r = atomicCompareExchangeWeak(&${space}[e], old, bitcast<u32>(bitcast<f32>(old) + x));
    if (r.exchanged) { break; }
    old = r.old_value;
  }
}`;
  return `const RNP = ${np}u;
const RTW = ${tw}u;
var<workgroup> rabg: array<atomic<u32>, ${np + tw}>;
${cas('hk_wadd', 'rabg')}${
  r.pos
    ? `
${cas('hk_gpos', 'drabp')}`
    : ''
}${
  r.time
    ? `
${cas('hk_gtime', 'drabt')}`
    : ''
}`;
}

/** Each in-range pair's dZ (x_i_u after dS) into the workgroup partial (see rabGradDecls). */
function rabGradAdd(spec: ShaderSpec): string {
  const p = spec.plan;
  const r = spec.hooks.rab!;
  return tile(p, p.cu, (i, u) =>
    rep(
      4,
      (e) => `{
      let row = r0 + ${rowOf(p, i)};
      let col = c0 + (tx + ${u * p.tx}u) * 4u + ${e}u;
      let g = x_${i}_${u}.${E[e]};
      if (row < nq && col < nk && g != 0.0) {${
        r.pos
          ? `
        hk_wadd(col - c0 + BR - 1u - (row - r0), g);`
          : ''
      }${
        r.time
          ? `
        let tc = hk_tcol(row + nk - nq, col, startK);
        if (tc < RTW) { hk_wadd(RNP + tc, g); } else { hk_gtime(h * P.rabTH + tc, g); }`
          : ''
      }
      }
    }`,
    ),
  );
}

/** The tile's partials into drabp / drabt, slots reset to 0 (after a barrier past rabGradAdd). */
function rabGradFlush(spec: ShaderSpec): string {
  const r = spec.hooks.rab!;
  const slots = r.pos && r.time ? 'RNP + min(RTW, P.rabT)' : r.pos ? 'RNP' : 'min(RTW, P.rabT)';
  const pos = 'hk_gpos(h * P.rabPH + u32(clamp(pb + i32(s), 0, i32(P.rabP) - 1)), v);';
  const time = 'hk_gtime(h * P.rabTH + s - RNP, v);';
  const flush = r.pos && r.time ? `if (s < RNP) { ${pos} } else { ${time} }` : r.pos ? pos : time;
  return `{${
    r.pos
      ? `
      let pb = i32(c0) - i32(r0) - off + (i32(P.rabP) - 1) / 2 - i32(BR - 1u);`
      : ''
  }
      for (var s = lid; s < ${slots}; s += T) {
        let v = bitcast<f32>(atomicExchange(&rabg[s], 0u));
        if (v != 0.0) { ${flush} }
      }
    }`;
}

/**
 * dQ pass (FA2 backward, the dQ half of Algorithm 2 run as its own pass so no two workgroups
 * write one dQ row): per query tile, over key tiles, S = Q K^T and dP = dO V^T recomputed,
 * P = prob(S, LSE) = e^(S - LSE) clamped to <= 1, dS = P (dP - D), dQ += scale dS K. Pointwise: dS = dP dw/dS
 * (sigmoid: w (1 - w)), no row statistics. Score mods with a derivative multiply dS by it (chain rule per element).
 */
export function dqShader(spec: ShaderSpec): WgslKernel {
  const p = spec.plan;
  const softmax = spec.hooks.normalize === 'softmax';
  const dbias = spec.hooks.dbias === true;
  const rabGrad = spec.hooks.rab?.grad === true;
  const grad = modsHaveGrad(spec.hooks);
  const g = (i: number, u: number) => (grad ? ` * g_${i}_${u}` : '');
  const q: Operand = {
    name: 'q',
    perm: permQ(spec),
    base: 'qB',
    stride: 'P.qRow',
    first: 'r0',
    rows: 'nq',
    vec: spec.vecD,
  };
  const k: Operand = {
    name: 'k',
    perm: permK(spec),
    base: 'kB',
    stride: 'P.kRow',
    first: 'c0',
    rows: 'nk',
    vec: spec.vecD,
  };
  const dO: Operand = {
    name: 'dout',
    perm: permQ(spec),
    base: 'oB',
    stride: 'P.oRow',
    first: 'r0',
    rows: 'nq',
    vec: spec.vecV,
  };
  const v: Operand = {
    name: 'v',
    perm: permK(spec),
    base: 'vB',
    stride: 'P.vRow',
    first: 'c0',
    rows: 'nk',
    vec: spec.vecV,
  };
  const body = `
    ${ntGemm(p, 'x', q, k, 'P.d')}
    ${ntGemm(p, 'y', dO, v, 'P.dv')}
    ${scoreCode(spec, false, grad)}
    ${maskCode(spec, false)}
    ${tile(p, p.cu, (i, u) => (softmax ? `x_${i}_${u} = prob(x_${i}_${u}, vec4<f32>(st${i}.x)) * (y_${i}_${u} - vec4<f32>(st${i}.y))${g(i, u)};` : `x_${i}_${u} = y_${i}_${u} * ${pointwiseFn(spec.hooks)}(x_${i}_${u}).dw${g(i, u)};`))}${
      dbias
        ? `
    ${storeDbias(p)}`
        : ''
    }${
      rabGrad
        ? `
    ${rabGradAdd(spec)}`
        : ''
    }
    ${writeZ(p, 'x')}
    workgroupBarrier();${
      rabGrad
        ? `
    ${rabGradFlush(spec)}`
        : ''
    }
    ${nnGemm(p, 'acc', k, 'P.d', p.wuD)}`;
  const store = tile(
    p,
    p.wuD,
    (i, u) => `{
    let row = r0 + ${rowOf(p, i)};
    let w = (tx + ${u * p.tx}u) * 4u;
    if (row < nq && w < P.d) { st_dq(qB + ${through(permQ(spec), 'row')} * P.qRow + w, acc_${i}_${u} * P.scale, min(4u, P.d - w)); }
  }`,
  );
  const bindings: WgslBinding[] = [
    UNIFORMS,
    tensorBinding('read', 'q', spec.dtype, spec.vecD),
    tensorBinding('read', 'k', spec.dtype, spec.vecD),
    tensorBinding('read', 'v', spec.dtype, spec.vecV),
    tensorBinding('read', 'dout', spec.dtype, spec.vecV),
    ...(softmax ? [STATS] : []),
    AUX,
    tensorBinding('storage', 'dq', spec.dtype, spec.vecD),
    ...spec.hooks.bindings,
    ...(dbias ? [DBIAS] : []),
    ...(rabGrad && spec.hooks.rab?.pos ? [DRABP] : []),
    ...(rabGrad && spec.hooks.rab?.time ? [DRABT] : []),
  ];
  const code = `${header(spec, bindings, true, false)}${rabGrad ? `\n${rabGradDecls(spec)}` : ''}
${rangeFns(false)}${softmax ? `\n${STAT}` : ''}

@compute @workgroup_size(${p.threads})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  ${seq(false)}
  let h = wg.y;
  let r0 = wg.x * BR;
  if (r0 >= nq) { return; }
  let hk = h / P.group;
  let slice = b * P.bsBatch + h * P.bsHead;
  let qB = b * P.qBatch + h * P.qHead + startQ * P.qRow;
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  let oB = b * P.oBatch + h * P.oHead + startQ * P.oRow;
  let lB = b * P.lBatch + h * P.lHead + startQ;${permBases(spec, true, true)}
  let ncols = i32(nk);
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + BR, nq)) - 1;
  ${softmax ? rep(4 * p.rv, (i) => `let st${i} = stat(lB + r0 + ${rowOf(p, i)}, r0 + ${rowOf(p, i)} < nq);`, '\n  ') : pointwisePrelude(spec.hooks)}
  ${declare(p, 'x', p.cu)}
  ${declare(p, 'y', p.cu)}${grad ? `\n  ${declare(p, 'g', p.cu)}` : ''}
  ${declare(p, 'acc', p.wuD)}
  ${tileLoop(spec, false, 'wg.x * P.ntk + ct', body)}
  ${store}
}
`;
  return { code, bindings };
}

/**
 * dK/dV pass (FA2 Algorithm 2, outer loop over key tiles): one workgroup per (key tile, kv
 * head, batch) holds dK and dV in registers while it walks the query tiles of every query head
 * of its GQA group (so the sum over shared heads needs no atomics): S^T = K Q^T, dP^T = V dO^T,
 * P^T = prob(S^T, LSE), dV += P^T dO, dS^T = P^T (dP^T - D), dK += scale dS^T Q.
 * Pointwise: P^T = w, dS^T = dP^T dw/dS (sigmoid: w (1 - w)); score mods as in the dQ pass.
 * hooks.permute: key rows (k, v loads; dk, dv stores) go through permk, query columns through
 * permq. The scatter is race-free: a (b, hk) slice of permk is a permutation, so the tiled rows
 * of distinct key tiles map to distinct stored rows and each stored dK/dV row has exactly one
 * owning workgroup (and thread), which writes it once after its loop over the query heads.
 */
export function dkdvShader(spec: ShaderSpec): WgslKernel {
  const p = spec.plan;
  const softmax = spec.hooks.normalize === 'softmax';
  const grad = modsHaveGrad(spec.hooks);
  const g = (i: number, u: number) => (grad ? ` * g_${i}_${u}` : '');
  const kr: Operand = {
    name: 'k',
    perm: permK(spec),
    base: 'kB',
    stride: 'P.kRow',
    first: 'r0',
    rows: 'nk',
    vec: spec.vecD,
  };
  const qc: Operand = {
    name: 'q',
    perm: permQ(spec),
    base: 'qB',
    stride: 'P.qRow',
    first: 'c0',
    rows: 'nq',
    vec: spec.vecD,
  };
  const vr: Operand = {
    name: 'v',
    perm: permK(spec),
    base: 'vB',
    stride: 'P.vRow',
    first: 'r0',
    rows: 'nk',
    vec: spec.vecV,
  };
  const oc: Operand = {
    name: 'dout',
    perm: permQ(spec),
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
    ${scoreCode(spec, true, grad)}
    ${maskCode(spec, true)}
    ${softmax ? colStats : ''}
    ${tile(p, p.cu, (i, u) => (softmax ? `x_${i}_${u} = prob(x_${i}_${u}, lse${u});\n    y_${i}_${u} = x_${i}_${u} * (y_${i}_${u} - dd${u})${g(i, u)};` : `{\n      let sg = ${pointwiseFn(spec.hooks)}(x_${i}_${u});\n      x_${i}_${u} = sg.w;\n      y_${i}_${u} = y_${i}_${u} * sg.dw${g(i, u)};\n    }`))}
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
    if (row < nk && w < ${width}) { st_${out}(${base} + ${through(permK(spec), 'row')} * ${stride} + w, ${acc}_${i}_${u}${factor}, min(4u, ${width} - w)); }
  }`,
    );
  const bindings: WgslBinding[] = [
    UNIFORMS,
    tensorBinding('read', 'q', spec.dtype, spec.vecD),
    tensorBinding('read', 'k', spec.dtype, spec.vecD),
    tensorBinding('read', 'v', spec.dtype, spec.vecV),
    tensorBinding('read', 'dout', spec.dtype, spec.vecV),
    ...(softmax ? [STATS] : []),
    AUX,
    tensorBinding('storage', 'dk', spec.dtype, spec.vecD),
    tensorBinding('storage', 'dv', spec.dtype, spec.vecV),
    ...spec.hooks.bindings,
  ];
  const code = `${header(spec, bindings, true, false)}
${rangeFns(true)}${softmax ? `\n${STAT}` : ''}

@compute @workgroup_size(${p.threads})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  ${seq(false)}
  let hk = wg.y;
  let r0 = wg.x * BR;
  if (r0 >= nk) { return; }
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;${permBases(spec, false, true)}
  let ncols = i32(nq);
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + BR, nk)) - 1;${pointwisePrelude(spec.hooks) ? `\n  ${pointwisePrelude(spec.hooks)}` : ''}
  ${declare(p, 'x', p.cu)}
  ${declare(p, 'y', p.cu)}${grad ? `\n  ${declare(p, 'g', p.cu)}` : ''}
  ${declare(p, 'acck', p.wuD)}
  ${declare(p, 'accv', p.wuV)}
  for (var g = 0u; g < P.group; g++) {
    let h = hk * P.group + g;
    let slice = b * P.bsBatch + h * P.bsHead;
    let qB = b * P.qBatch + h * P.qHead + startQ * P.qRow;
    let oB = b * P.oBatch + h * P.oHead + startQ * P.oRow;
    let lB = b * P.lBatch + h * P.lHead + startQ;${permBases(spec, true, false, '\n    ')}
    ${tileLoop(spec, true, 'ct * P.ntk + wg.x', body)}
  }
  ${store('acck', p.wuD, 'dk', 'kB', 'P.kRow', 'P.d', ' * P.scale')}
  ${store('accv', p.wuV, 'dv', 'vB', 'P.vRow', 'P.dv', '')}
}
`;
  return { code, bindings };
}
