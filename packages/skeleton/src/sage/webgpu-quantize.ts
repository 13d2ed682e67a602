import {
  declareBindings,
  halfCodec,
  type UniformField,
  uniformStruct,
  type WgslBinding,
} from '@attnkit/webgpu';
import type { WgslKernel } from '../webgpu/shaders.js';
import type { SageGranularity } from './codec.js';
import { sageGroupFns } from './webgpu-forward.js';

/**
 * SageAttention2's pre-pass on WebGPU (the `operands` codec, ARITHMETIC.md "Pre-pass"): f32,
 * f16 or bf16 inputs (16-bit ones packed two to a u32 and widened exactly: unpack2x16float for
 * f16, a shift for bf16, core WGSL, so no shader-f16 is needed; read four channels at a time)
 * -> int8 codes packed 4 to a u32 (channel 4w + m at byte m: the bytes of the CPU codec's
 * Int8Array) and f32 scales, in passes queued in one command buffer:
 *
 *   kpart    K's column sums over chunks of keys, many workgroups per head   (smoothK)
 *   vpart    V's column max |V| over chunks of keys (and V's non-finite flag) (pvBits 8)
 *   colfinal km[c] = f32(sum_j K[j,c] / Nk) from kpart's partial sums;
 *            sV = f32(max|V| / 127), 1 / sV, dV = f32(sV / 255) from vpart's maxima
 *   qblock   one workgroup per 128-row Q block: qm (smoothQ), the block's groups' amax,
 *            sQ = f32(amax / qmax), codes (Q's non-finite flag)
 *   kcode    one workgroup per 64-key tile: its groups' amax, sK, codes (K's flag)
 *   bias     dS[a,j] = qm[a] . Ks[j], a register-tiled f32 product (smoothQ)
 *   vcode    V codes (pvBits 8) | vcopy: V widened to f32 (pvBits 32, V's flag)
 *
 * Every pass reads whole rows with coalesced 4-channel loads; no thread walks a long axis alone
 * (the column reductions over keys split Nk over workgroups and lanes and combine the partial
 * sums in a second pass), so the pre-pass runs at the speed of its memory traffic:
 * Q, K and V read about twice each (kpart/kcode/bias read K, mostly from cache after the first)
 * and the codes and bias written once.
 *
 * Arithmetic against ARITHMETIC.md (WGSL has no f64; "WebGPU" bounds there):
 *  - km and qm: the sums in double-float (f32 pairs, Knuth's two-sum; the partial sums of a
 *    column combine in a fixed order), divided with one correction step: the f32 of the binary64
 *    mean except where that mean lies within ~2^-40 relative of an f32 rounding tie.
 *  - amax is exact (a max); s = f32(amax / qmax) with the corrected division; each group also
 *    keeps inv = f32(1 / s) (corrected division).
 *  - codes: q = f32(x inv) is within 3 ulp of x / s, so round(q) is rint(x / s) unless q lies
 *    within 4 ulp (4.8e-7 relative) of a .5 boundary h; there the sign of the exact residual
 *    x - h s (integer partial products, `residual`) decides, as the binary64 quotient would.
 *    So codes equal the binary64 codes wherever the smoothed value and the scale are equal.
 *  - bias: dS[a,j] is an f32 dot product (channels in order, each product and sum rounded),
 *    NOT the binary64 sum: |dS_gpu - dS| <= (D + 1) 2^-24 sum_c |qm[a,c] Ks[j,c]| (the usual
 *    bound of recursive summation; typically a few 2^-24 of that sum). Where the sum cancels far
 *    below its terms, dS_gpu is not within 2 ulp of dS; the kernel adds it to t_ij = f32(dot)
 *    f32(sQ sK), whose own rounding is of the same absolute order, so the scores move by about
 *    an ulp of their terms (the previous, emulated-binary64 bias took ~40 integer operations per
 *    product: 2.1e9 products at (4, 32, 4096, 128), most of the pre-pass's time).
 * Double-float and the residual are written so that neither algebraic rewrites nor fma
 * contraction change them (DF below). Non-finite inputs set a flag per tensor (q, k, v) that
 * the host reads back.
 */

export type SageQuantPass =
  | 'kpart'
  | 'vpart'
  | 'colfinal'
  | 'qblock'
  | 'kcode'
  | 'bias'
  | 'vcode'
  | 'vcopy';

export interface SageQuantSpec {
  dtype: 'f32' | 'f16' | 'bf16';
  d: number;
  dv: number;
  granularity: SageGranularity;
  smoothK: boolean;
  smoothQ: boolean;
  pvBits: 8 | 32;
  /** bias: rows (query heads of a kv head x 128-row Q blocks) per workgroup: 4, 8, 16 or 32. */
  biasRows: number;
}

/** Threads per workgroup of the pre-pass kernels (bias: SAGE_BIAS_THREADS). */
export const SAGE_QUANT_THREADS = 256;
/** Threads of a bias workgroup: 16 key quads x 4 row groups (64 keys x biasRows rows). */
export const SAGE_BIAS_THREADS = 64;
/** Keys per bias workgroup. */
export const SAGE_BIAS_KEYS = 64;

export const SAGE_QUANT_FIELDS: readonly UniformField[] = [
  ['hq', 'u32'],
  ['hkv', 'u32'],
  ['group', 'u32'],
  ['nq', 'u32'],
  ['nk', 'u32'],
  ['nQG', 'u32'],
  ['nKG', 'u32'],
  ['nQB', 'u32'],
  // 0, for opq (below).
  ['zero', 'u32'],
  // Chunks of keys of kpart / vpart (sageColumnChunkRows keys each).
  ['kch', 'u32'],
  ['vch', 'u32'],
  // bias: row tiles per kv head (ceil(group nQB / biasRows)).
  ['mTiles', 'u32'],
];

/** The non-finite flags' slots (one u32 each in the `flags` binding). */
export const SAGE_FLAG = { q: 0, k: 1, v: 2 } as const;

function rep(n: number, f: (i: number) => string, sep = '\n'): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}
const XYZW = ['x', 'y', 'z', 'w'] as const;
const rep4 = (f: (i: number) => string, sep = '\n        ') => rep(4, f, sep);

/** Lanes over rows of a column reduction of `width` channels (4 per thread, TH threads). */
function columnLanes(width: number): number {
  return Math.floor(SAGE_QUANT_THREADS / (width / 4));
}

/** Keys per kpart / vpart workgroup for `width` channels: 32 rows per lane. */
export function sageColumnChunkRows(width: number): number {
  return 32 * columnLanes(width);
}

/** The bias pass's rows per workgroup for `rows` rows per kv head (group x nQB). */
export function sageBiasRows(rows: number): number {
  return rows <= 4 ? 4 : rows <= 8 ? 8 : rows <= 16 ? 16 : 32;
}

/**
 * Double-float helpers and the exact residual (see the file comment). Compilers rewrite
 * non-`precise` float expressions, and on Mesa llvmpipe both rewrites below were seen to break
 * the textbook forms:
 *  - (a + b) - a -> b zeroed two-sum's error term: `opq(x)` XORs the bits with the uniform
 *    P.zero (0, unknown to the compiler), an integer step no float pattern sees through
 *    (multiplying by a uniform 1.0 was not enough: the compiler factored it out of
 *    (a + b) 1 - a 1 and cancelled again);
 *  - Dekker's two-product with a bit-mask split (a = hi + lo): hi b_hi + hi b_lo was factored
 *    into hi (b_hi + b_lo) = hi b, and the error terms vanished. So exact products are formed
 *    in integers instead (`prod4`: the 24-bit significands, read from the bits, split in 12-bit
 *    halves, partial products in i32, each exact in f32 and scaled by ldexp), which no float
 *    rewrite can see through; a compiler that fuses one of them into an add (fma) changes
 *    nothing either.
 */
const DF = `fn opq(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) ^ P.zero); }
// a = M 2^e with M a signed 24-bit integer, from the bits (subnormals included).
fn mant(a: f32) -> vec2<i32> {
  let u = bitcast<u32>(a);
  let e = i32((u >> 23u) & 0xffu);
  var m = i32(u & 0x7fffffu);
  if (e != 0) { m = m | 0x800000; }
  if ((u >> 31u) != 0u) { m = -m; }
  return vec2<i32>(m, max(e, 1) - 150);
}
// a b exactly, as four f32 terms (largest first): residuals need only the leading one exact.
fn prod4(a: f32, b: f32) -> vec4<f32> {
  let x = mant(a);
  let y = mant(b);
  let xh = x.x >> 12u;
  let xl = x.x - (xh << 12u);
  let yh = y.x >> 12u;
  let yl = y.x - (yh << 12u);
  let e = x.y + y.y;
  return vec4<f32>(ldexp(f32(xh * yh), e + 24), ldexp(f32(xh * yl), e + 12), ldexp(f32(xl * yh), e + 12), ldexp(f32(xl * yl), e));
}
// x - a b where a b is within a factor 2 of x: the leading term's difference is exact
// (Sterbenz), the others are ~2^-12 relative and add one rounding.
fn residual(x: f32, a: f32, b: f32) -> f32 {
  let p = prod4(a, b);
  return ((x - p.x) - (p.y + p.z)) - p.w;
}
fn two_sum(a: f32, b: f32) -> vec2<f32> {
  let s = opq(a + b);
  let bb = opq(s - a);
  return vec2<f32>(s, (a - opq(s - bb)) + (b - bb));
}
// The double-float acc plus the f32 b (normalised: |lo| <= ulp(hi) / 2).
fn df_add1(acc: vec2<f32>, b: f32) -> vec2<f32> {
  let s = two_sum(acc.x, b);
  let e = s.y + acc.y;
  let t = opq(s.x + e);
  return vec2<f32>(t, e - opq(t - s.x));
}
// The double-float sum of two double-floats.
fn df_add2(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let s = two_sum(a.x, b.x);
  let e = s.y + (a.y + b.y);
  let t = opq(s.x + e);
  return vec2<f32>(t, e - opq(t - s.x));
}
// f32((hi + lo) / b), one correction step on WGSL's division (up to 2.5 ulp off).
fn div_df(hi: f32, lo: f32, b: f32) -> f32 {
  let q = opq(hi / b);
  return q + (residual(hi, q, b) + lo) / b;
}
fn div(a: f32, b: f32) -> f32 { return div_df(a, 0.0, b); }
fn finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }
fn finite4(x: vec4<f32>) -> bool { return all((bitcast<vec4<u32>>(x) & vec4<u32>(0x7f800000u)) != vec4<u32>(0x7f800000u)); }
fn amax4(x: vec4<f32>) -> f32 { let a = abs(x); return max(max(a.x, a.y), max(a.z, a.w)); }
// clamp(rint(x / s), -qmax, qmax), sc = (s, f32(1 / s)): q = x inv is within 3 ulp of x / s,
// so round(q) is right unless q lies within 4 ulp of a .5 boundary h; there the sign of the
// residual x - h s (h has at most 9 significant bits, so h s is exactly its two leading terms
// and x - h s rounds once) says on which side the binary64 quotient lies.
fn code(x: f32, sc: vec2<f32>, qmax: f32) -> i32 {
  if (sc.x == 0.0) { return 0; }
  var q = x * sc.y;
  // s so small that 1 / s overflows: the quotient itself.
  if (!finite(sc.y)) { q = div(x, sc.x); }
  let h = opq(floor(q) + 0.5);
  var c = round(q);
  if (abs(q - h) <= abs(q) * 4.8e-7) {
    let rr = residual(x, h, sc.x);
    c = select(select(round(h), h - 0.5, rr < 0.0), h + 0.5, rr > 0.0);
  }
  return i32(clamp(c, -qmax, qmax));
}
fn pack4(a: i32, b: i32, c: i32, d: i32) -> u32 {
  return (bitcast<u32>(a) & 0xffu) | ((bitcast<u32>(b) & 0xffu) << 8u) | ((bitcast<u32>(c) & 0xffu) << 16u) | (bitcast<u32>(d) << 24u);
}
fn code4(x: vec4<f32>, sc: vec2<f32>, qmax: f32) -> u32 {
  return pack4(code(x.x, sc, qmax), code(x.y, sc, qmax), code(x.z, sc, qmax), code(x.w, sc, qmax));
}
// Per-channel scales: s4 and inv4 the scales and inverses of channels 0..3.
fn code4c(x: vec4<f32>, s4: vec4<f32>, inv4: vec4<f32>, qmax: f32) -> u32 {
  return pack4(code(x.x, vec2<f32>(s4.x, inv4.x), qmax), code(x.y, vec2<f32>(s4.y, inv4.y), qmax), code(x.z, vec2<f32>(s4.z, inv4.z), qmax), code(x.w, vec2<f32>(s4.w, inv4.w), qmax));
}`;

const UNIFORMS: WgslBinding = { name: 'P', kind: 'uniform', type: 'Params' };
const V4 = 'array<vec4<f32>>';

function input(name: 'q' | 'k' | 'v', spec: SageQuantSpec): WgslBinding {
  return { name, kind: 'read', type: { dtype: spec.dtype, vec: true } };
}
const read = (name: string, type = V4): WgslBinding => ({ name, kind: 'read', type });
const out = (name: string, type = V4): WgslBinding => ({ name, kind: 'storage', type });
const FLAGS = out('flags', 'array<atomic<u32>, 4>');
const QMAX = read('qmax', 'array<u32>');

/** Q rows / K keys of a scale group (ARITHMETIC.md "Configuration"): count and e-th member. */
function members(
  side: 'q' | 'k',
  g: SageGranularity,
): { count: number; perTile: number; fn: string } {
  if (side === 'q') {
    // Groups per 128-row block: block 1, warp 8 (16 rows), thread 64 (2 rows: i, i + 8).
    const [count, perTile, row] =
      g === 'block'
        ? [128, 1, '128u * g + e']
        : g === 'warp'
          ? [16, 8, '16u * g + e']
          : [2, 64, '16u * (g >> 3u) + (g & 7u) + 8u * e'];
    return { count, perTile, fn: `fn member(g: u32, e: u32) -> u32 { return ${row}; }` };
  }
  // Groups per 64-key tile: block / warp 1, thread 4 (16 keys each).
  const [count, perTile, row] =
    g === 'thread'
      ? [16, 4, '64u * (g >> 2u) + 8u * (e >> 1u) + 2u * (g & 3u) + (e & 1u)']
      : [64, 1, '64u * g + e'];
  return { count, perTile, fn: `fn member(g: u32, e: u32) -> u32 { return ${row}; }` };
}

/**
 * A column reduction over a chunk of rows (kpart: double-float sums; vpart: max |x|): thread
 * (lane, quad) reads channels 4 quad .. 4 quad + 3 of rows lane, lane + LN, ... (a warp reads
 * whole rows: coalesced); the lanes' partials meet in workgroup memory and the first W4 threads
 * combine them in lane order and store the chunk's partial.
 */
function columnBody(kind: 'sum' | 'max', name: 'k' | 'v', width: number): string {
  const w4 = width / 4;
  const lanes = columnLanes(width);
  const rows = sageColumnChunkRows(width);
  const chunks = kind === 'sum' ? 'P.kch' : 'P.vch';
  const accInit =
    kind === 'sum'
      ? 'var a0 = vec2<f32>(0.0);\n    var a1 = vec2<f32>(0.0);\n    var a2 = vec2<f32>(0.0);\n    var a3 = vec2<f32>(0.0);'
      : 'var mx = vec4<f32>(0.0);\n    var bad = false;';
  const accStep = (x: string) =>
    kind === 'sum'
      ? `a0 = df_add1(a0, ${x}.x);\n        a1 = df_add1(a1, ${x}.y);\n        a2 = df_add1(a2, ${x}.z);\n        a3 = df_add1(a3, ${x}.w);`
      : `bad = bad || !finite4(${x});\n        mx = max(mx, abs(${x}));`;
  const share =
    kind === 'sum'
      ? 'rh[lid] = vec4<f32>(a0.x, a1.x, a2.x, a3.x);\n    rl[lid] = vec4<f32>(a0.y, a1.y, a2.y, a3.y);'
      : `rh[lid] = mx;\n    if (bad) { atomicOr(&flags[${SAGE_FLAG.v}], 1u); }`;
  const combine =
    kind === 'sum'
      ? `var s0 = vec2<f32>(0.0);
      var s1 = vec2<f32>(0.0);
      var s2 = vec2<f32>(0.0);
      var s3 = vec2<f32>(0.0);
      for (var l = 0u; l < LN; l++) {
        let hi = rh[l * W4 + lid];
        let lo = rl[l * W4 + lid];
        s0 = df_add2(s0, vec2<f32>(hi.x, lo.x));
        s1 = df_add2(s1, vec2<f32>(hi.y, lo.y));
        s2 = df_add2(s2, vec2<f32>(hi.z, lo.z));
        s3 = df_add2(s3, vec2<f32>(hi.w, lo.w));
      }
      let o = 2u * (((b * P.hkv + hh) * ${chunks} + ch) * W4 + lid);
      kp[o] = vec4<f32>(s0.x, s1.x, s2.x, s3.x);
      kp[o + 1u] = vec4<f32>(s0.y, s1.y, s2.y, s3.y);`
      : `var m = vec4<f32>(0.0);
      for (var l = 0u; l < LN; l++) { m = max(m, rh[l * W4 + lid]); }
      vp[((b * P.hkv + hh) * ${chunks} + ch) * W4 + lid] = m;`;
  return `
const W4 = ${w4}u;
const LN = ${lanes}u;
const CH = ${rows}u;
var<workgroup> rh: array<vec4<f32>, TH>;
${kind === 'sum' ? 'var<workgroup> rl: array<vec4<f32>, TH>;' : ''}

@compute @workgroup_size(TH)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wg.z;
  let hh = wg.y;
  let quad = lid % W4;
  let lane = lid / W4;
  let base = (b * P.hkv + hh) * P.nk;
  for (var ch = wg.x; ch < ${chunks}; ch += nwg.x) {
    let r1 = min(ch * CH + CH, P.nk);
    ${accInit}
    if (lane < LN) {
      // Four rows' loads issued before their sums (one load in flight per thread would leave
      // the memory system idle); rows past the chunk read as 0 (exact for sums and maxima).
      for (var r = ch * CH + lane; r < r1; r += 4u * LN) {
        ${rep4((u) => `var x${u} = vec4<f32>(0.0);\n        if (r + ${u}u * LN < r1) { x${u} = ld4_${name}((base + r + ${u}u * LN) * ${width}u + 4u * quad); }`)}
        ${rep4((u) => accStep(`x${u}`))}
      }
    }
    ${share}
    workgroupBarrier();
    if (lid < W4) {
      ${combine}
    }
    workgroupBarrier();
  }
}`;
}

/**
 * One workgroup per tile of rows (Q: a 128-row block; K: a 64-key tile), grid-stride over the
 * head's tiles: (Q, smoothQ) the block's mean qm; each row's max |x| (4 threads per row,
 * interleaved quads, so a warp reads 8 rows' consecutive 32-64 bytes); each group's amax (one
 * thread per group over its members), s and 1 / s; then the codes, one u32 (4 channels) per
 * thread and step, rows in order (coalesced loads and stores).
 */
function tileBody(side: 'q' | 'k', spec: SageQuantSpec): string {
  const q = side === 'q';
  const { d } = spec;
  const rowsPerTile = q ? 128 : 64;
  const m = members(side, spec.granularity);
  const smooth = q ? spec.smoothQ : spec.smoothK;
  const n = q ? 'P.nq' : 'P.nk';
  const head = q ? '(b * P.hq + hh)' : '(b * P.hkv + hh)';
  const groups = q ? 'P.nQG' : 'P.nKG';
  const qmax = q ? 'qmax[hh]' : 'qmax[P.hq + hh]';
  const grp = q ? 'qgroup' : 'kgroup';
  const tiles = q ? 'P.nQB' : `((P.nk + 63u) / 64u)`;
  const ld = q ? 'ld4_q' : 'ld4_k';
  const sub = smooth ? ' - mw[w]' : '';
  const lanes = columnLanes(d);
  // qm of the block (double-float column sums, lanes combined in order).
  const mean =
    q && smooth
      ? `
    {
      let quad = lid % Q4;
      let lane = lid / Q4;
      var a0 = vec2<f32>(0.0);
      var a1 = vec2<f32>(0.0);
      var a2 = vec2<f32>(0.0);
      var a3 = vec2<f32>(0.0);
      if (lane < LQ) {
        for (var r = lane; r < nt; r += 4u * LQ) {
          ${rep4((u) => `var x${u} = vec4<f32>(0.0);\n          if (r + ${u}u * LQ < nt) { x${u} = ld4_q(rowB + (r + ${u}u * LQ) * D + 4u * quad); }`, '\n          ')}
          ${rep4((u) => `a0 = df_add1(a0, x${u}.x);\n          a1 = df_add1(a1, x${u}.y);\n          a2 = df_add1(a2, x${u}.z);\n          a3 = df_add1(a3, x${u}.w);`, '\n          ')}
        }
      }
      rh[lid] = vec4<f32>(a0.x, a1.x, a2.x, a3.x);
      rl[lid] = vec4<f32>(a0.y, a1.y, a2.y, a3.y);
      workgroupBarrier();
      if (lid < Q4) {
        var s0 = vec2<f32>(0.0);
        var s1 = vec2<f32>(0.0);
        var s2 = vec2<f32>(0.0);
        var s3 = vec2<f32>(0.0);
        for (var l = 0u; l < LQ; l++) {
          let hi = rh[l * Q4 + lid];
          let lo = rl[l * Q4 + lid];
          s0 = df_add2(s0, vec2<f32>(hi.x, lo.x));
          s1 = df_add2(s1, vec2<f32>(hi.y, lo.y));
          s2 = df_add2(s2, vec2<f32>(hi.z, lo.z));
          s3 = df_add2(s3, vec2<f32>(hi.w, lo.w));
        }
        let nf = f32(nt);
        let mean = vec4<f32>(div_df(s0.x, s0.y, nf), div_df(s1.x, s1.y, nf), div_df(s2.x, s2.y, nf), div_df(s3.x, s3.y, nf));
        mw[lid] = mean;
        qm[(${head} * P.nQB + t) * Q4 + lid] = mean;
      }
      workgroupBarrier();
    }`
      : '';
  // K's mean is the head's: loaded once.
  const kmLoad =
    !q && smooth
      ? `
  for (var w = lid; w < Q4; w += TH) { mw[w] = km[${head} * Q4 + w]; }
  workgroupBarrier();`
      : '';
  return `
const Q4 = ${d / 4}u;
const LQ = ${lanes}u;
const RT = ${rowsPerTile}u;
const GT = ${m.perTile}u;
const GC = ${m.count}u;
${q && smooth ? 'var<workgroup> rh: array<vec4<f32>, TH>;\nvar<workgroup> rl: array<vec4<f32>, TH>;' : ''}
${smooth ? 'var<workgroup> mw: array<vec4<f32>, Q4>;' : ''}
var<workgroup> pm: array<f32, TH>;
var<workgroup> rowm: array<f32, RT>;
var<workgroup> gsc: array<vec2<f32>, GT>;
${m.fn}

@compute @workgroup_size(TH)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wg.z;
  let hh = wg.y;
  let qmx = f32(${qmax});${kmLoad}
  for (var t = wg.x; t < ${tiles}; t += nwg.x) {
    let i0 = t * RT;
    let nt = min(RT, ${n} - i0);
    let rowB = (${head} * ${n} + i0) * D;${mean}
    // Each row's max |x|: 4 threads per row, quads p, p + 4, ...
    for (var r0 = 0u; r0 < RT; r0 += TH / 4u) {
      let r = r0 + lid / 4u;
      let p = lid % 4u;
      var mx = 0.0;
      var bad = false;
      if (r < nt) {
        ${rep(d / 16, (u) => `let x${u} = ${ld}(rowB + r * D + 4u * (p + ${4 * u}u))${sub.replace('w]', `p + ${4 * u}u]`)};`, '\n        ')}
        ${rep(d / 16, (u) => `bad = bad || !finite4(x${u});\n        mx = max(mx, amax4(x${u}));`, '\n        ')}
      }
      if (bad) { atomicOr(&flags[${q ? SAGE_FLAG.q : SAGE_FLAG.k}], 1u); }
      pm[lid] = mx;
      workgroupBarrier();
      if (p == 0u && r < RT) { rowm[r] = max(max(pm[lid], pm[lid + 1u]), max(pm[lid + 2u], pm[lid + 3u])); }
      workgroupBarrier();
    }
    // The tile's groups: amax over the members, s = f32(amax / qmax), f32(1 / s).
    if (lid < GT) {
      let g = ${grp}(i0) + lid;
      var mx = 0.0;
      for (var e = 0u; e < GC; e++) {
        let i = member(g, e);
        if (i < ${n}) { mx = max(mx, rowm[i - i0]); }
      }
      var sc = vec2<f32>(0.0);
      if (mx > 0.0) {
        let s = div(mx, qmx);
        sc = vec2<f32>(s, div(1.0, s));
      }
      gsc[lid] = sc;
      if (g < ${groups}) { ${q ? 'qs' : 'ks'}[${head} * ${groups} + g] = sc.x; }
    }
    workgroupBarrier();
    let g0 = ${grp}(i0);
    let ne = nt * Q4;
    for (var e = lid; e < ne; e += 4u * TH) {
      ${rep4((u) => `let e${u} = min(e + ${u}u * TH, ne - 1u);\n      let x${u} = ${ld}(rowB + e${u} * 4u)${sub.replace('w]', `e${u} % Q4]`)};`, '\n      ')}
      ${rep4((u) => `if (e + ${u}u * TH < ne) { ${q ? 'qc' : 'kc'}[(${head} * ${n} + i0) * Q4 + e${u}] = code4(x${u}, gsc[${grp}(i0 + e${u} / Q4) - g0], qmx); }`, '\n      ')}
    }
    // The next tile overwrites the workgroup arrays.
    workgroupBarrier();
  }
}`;
}

/** km, (sV, 1 / sV) and dV from the partials: one thread per 4 channels of K then of V. */
function finalBody(spec: SageQuantSpec): string {
  const { smoothK, pvBits, d, dv } = spec;
  const k = smoothK
    ? `
  if (lid < Q4) {
    var s0 = vec2<f32>(0.0);
    var s1 = vec2<f32>(0.0);
    var s2 = vec2<f32>(0.0);
    var s3 = vec2<f32>(0.0);
    for (var ch = 0u; ch < P.kch; ch++) {
      let o = 2u * ((head * P.kch + ch) * Q4 + lid);
      let hi = kp[o];
      let lo = kp[o + 1u];
      s0 = df_add2(s0, vec2<f32>(hi.x, lo.x));
      s1 = df_add2(s1, vec2<f32>(hi.y, lo.y));
      s2 = df_add2(s2, vec2<f32>(hi.z, lo.z));
      s3 = df_add2(s3, vec2<f32>(hi.w, lo.w));
    }
    var mean = vec4<f32>(0.0);
    if (P.nk > 0u) {
      let nf = f32(P.nk);
      mean = vec4<f32>(div_df(s0.x, s0.y, nf), div_df(s1.x, s1.y, nf), div_df(s2.x, s2.y, nf), div_df(s3.x, s3.y, nf));
    }
    km[head * Q4 + lid] = mean;
  }`
    : '';
  const v =
    pvBits === 8
      ? `
  if (lid >= ${smoothK ? 'Q4' : '0u'} && lid < ${smoothK ? 'Q4 + ' : ''}V4) {
    let w = lid - ${smoothK ? 'Q4' : '0u'};
    var mx = vec4<f32>(0.0);
    for (var ch = 0u; ch < P.vch; ch++) { mx = max(mx, vp[(head * P.vch + ch) * V4 + w]); }
    var s = vec4<f32>(0.0);
    var inv = vec4<f32>(0.0);
    var dq = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
      if (mx[c] > 0.0) {
        s[c] = div(mx[c], 127.0);
        inv[c] = div(1.0, s[c]);
        dq[c] = div(s[c], 255.0);
      }
    }
    svt[2u * (head * V4 + w)] = s;
    svt[2u * (head * V4 + w) + 1u] = inv;
    vs[head * V4 + w] = dq;
  }`
      : '';
  return `
const Q4 = ${d / 4}u;
const V4 = ${dv / 4}u;

@compute @workgroup_size(TH)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let head = wg.z * P.hkv + wg.y;${k}${v}
}`;
}

/**
 * dS[a, j] = qm[a] . Ks[j] for the query heads of one kv head (rows m = (h - hk group) nQB + a,
 * qm's own row order) and 64 keys: a register-tiled f32 product, each thread R rows x 4 keys
 * (kq, kq + 16, kq + 32, kq + 48: a warp's stores are runs of 16 consecutive keys),
 * over chunks of CC channels staged (Ks = f32(K - km) as the kcode pass forms it, qm) in
 * workgroup memory, channel-major. Channels are summed in order (ARITHMETIC.md's sum64 is not
 * emulated: see the file comment for the bound).
 */
function biasBody(spec: SageQuantSpec): string {
  const { d, smoothK } = spec;
  const mt = spec.biasRows;
  const r = mt / 4;
  const cc = d % 32 === 0 ? 32 : 16;
  const rows = Array.from({ length: r }, (_, i) => i);
  const load =
    r >= 4
      ? rows
          .filter((i) => i % 4 === 0)
          .map((i) => `let q${i / 4} = qst[c * (MT / 4u) + rg * ${r / 4}u + ${i / 4}u];`)
          .join('\n      ')
      : rows
          .map(
            (i) =>
              `let q${i} = qst[c * (MT / 4u) + (rg * ${r}u + ${i}u) / 4u][(rg * ${r}u + ${i}u) % 4u];`,
          )
          .join('\n      ');
  const fma = rows
    .map((i) => `acc${i} += ${r >= 4 ? `q${Math.floor(i / 4)}[${i % 4}]` : `q${i}`} * kv;`)
    .join('\n      ');
  const store = rows
    .map(
      (i) => `{
    let m = m0 + rg * ${r}u + ${i}u;
    if (m < mRows) {
      let o = (qmB + m) * P.nk + j0 + kq;
      ${rep(4, (t) => `if (j0 + kq + ${16 * t}u < P.nk) { bias[o + ${16 * t}u] = acc${i}.${XYZW[t]}; }`, '\n      ')}
    }
  }`,
    )
    .join('\n  ');
  const T = SAGE_BIAS_THREADS;
  const kItems = (SAGE_BIAS_KEYS * (cc / 4)) / T;
  const kStage = `${rep(
    kItems,
    (u) => `let ke${u} = lid + ${u * T}u;
    var kx${u} = vec4<f32>(0.0);
    if (j0 + ke${u} / (CC / 4u) < P.nk) { kx${u} = ld4_k((kB + j0 + ke${u} / (CC / 4u)) * D + c0 + 4u * (ke${u} % (CC / 4u)))${smoothK ? ` - km[(b * P.hkv + hk) * Q4 + c0 / 4u + ke${u} % (CC / 4u)]` : ''}; }`,
    '\n    ',
  )}
    ${rep(kItems, (u) => rep(4, (t) => `kst[(4u * (ke${u} % (CC / 4u)) + ${t}u) * (BK / 4u) + (ke${u} / (CC / 4u)) % 16u][(ke${u} / (CC / 4u)) / 16u] = kx${u}.${XYZW[t]};`, '\n    '), '\n    ')}`;
  const qItems = Math.ceil((mt * (cc / 4)) / T);
  const qStage = `${rep(
    qItems,
    (u) => `let qe${u} = lid + ${u * T}u;
    var qx${u} = vec4<f32>(0.0);
    if (qe${u} < MT * (CC / 4u) && m0 + qe${u} / (CC / 4u) < mRows) { qx${u} = qm[(qmB + m0 + qe${u} / (CC / 4u)) * Q4 + c0 / 4u + qe${u} % (CC / 4u)]; }`,
    '\n    ',
  )}
    ${rep(qItems, (u) => `if (qe${u} < MT * (CC / 4u)) {\n      ${rep(4, (t) => `qst[(4u * (qe${u} % (CC / 4u)) + ${t}u) * (MT / 4u) + (qe${u} / (CC / 4u)) / 4u][(qe${u} / (CC / 4u)) % 4u] = qx${u}.${XYZW[t]};`, '\n      ')}\n    }`, '\n    ')}`;
  return `
const Q4 = ${d / 4}u;
const MT = ${mt}u;
const CC = ${cc}u;
const BK = ${SAGE_BIAS_KEYS}u;
var<workgroup> kst: array<vec4<f32>, ${cc * (SAGE_BIAS_KEYS / 4)}>;
var<workgroup> qst: array<vec4<f32>, ${(cc * mt) / 4}>;

@compute @workgroup_size(${SAGE_BIAS_THREADS})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wg.z;
  let hk = wg.y / P.mTiles;
  let m0 = (wg.y % P.mTiles) * MT;
  let j0 = wg.x * BK;
  let kq = lid % 16u;
  let rg = lid / 16u;
  let mRows = P.group * P.nQB;
  let kB = (b * P.hkv + hk) * P.nk;
  let qmB = (b * P.hq + hk * P.group) * P.nQB;
  ${rows.map((i) => `var acc${i} = vec4<f32>(0.0);`).join('\n  ')}
  for (var c0 = 0u; c0 < D; c0 += CC) {
    // Every staging load of the thread first, then the transposing stores.
    ${kStage}
    ${qStage}
    workgroupBarrier();
    for (var c = 0u; c < CC; c++) {
      let kv = kst[c * (BK / 4u) + kq];
      ${load}
      ${fma}
    }
    workgroupBarrier();
  }
  ${store}
}`;
}

/** An elementwise pass over the head's Nk x Dv values, 4 channels per thread and step. */
function itemsBody(inner: string): string {
  return `
const V4 = DV / 4u;

@compute @workgroup_size(TH)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let head = wg.z * P.hkv + wg.y;
  for (var e = wg.x * TH + lid; e < P.nk * V4; e += nwg.x * TH) {${inner}
  }
}`;
}

export function sageQuantShader(pass: SageQuantPass, spec: SageQuantSpec): WgslKernel {
  const { smoothK, smoothQ, pvBits } = spec;
  let bindings: WgslBinding[];
  let body: string;
  let fns = '';
  switch (pass) {
    case 'kpart':
      bindings = [UNIFORMS, input('k', spec), out('kp')];
      body = columnBody('sum', 'k', spec.d);
      break;
    case 'vpart':
      bindings = [UNIFORMS, input('v', spec), out('vp'), FLAGS];
      body = columnBody('max', 'v', spec.dv);
      break;
    case 'colfinal':
      bindings = [
        UNIFORMS,
        ...(smoothK ? [read('kp'), out('km')] : []),
        ...(pvBits === 8 ? [read('vp'), out('svt'), out('vs')] : []),
      ];
      body = finalBody(spec);
      break;
    case 'qblock':
      bindings = [
        UNIFORMS,
        input('q', spec),
        ...(smoothQ ? [out('qm')] : []),
        QMAX,
        out('qc', 'array<u32>'),
        out('qs', 'array<f32>'),
        FLAGS,
      ];
      body = tileBody('q', spec);
      break;
    case 'kcode':
      bindings = [
        UNIFORMS,
        input('k', spec),
        ...(smoothK ? [read('km')] : []),
        QMAX,
        out('kc', 'array<u32>'),
        out('ks', 'array<f32>'),
        FLAGS,
      ];
      body = tileBody('k', spec);
      break;
    case 'bias':
      bindings = [
        UNIFORMS,
        input('k', spec),
        ...(smoothK ? [read('km')] : []),
        read('qm'),
        out('bias', 'array<f32>'),
      ];
      body = biasBody(spec);
      break;
    case 'vcode':
      bindings = [UNIFORMS, input('v', spec), read('svt'), out('vc', 'array<u32>')];
      body = itemsBody(`
    let w = e % V4;
    let x = ld4_v(head * P.nk * DV + 4u * e);
    let o = 2u * (head * V4 + w);
    vc[head * P.nk * V4 + e] = code4c(x, svt[o], svt[o + 1u], 127.0);`);
      break;
    case 'vcopy':
      bindings = [UNIFORMS, input('v', spec), out('vout'), FLAGS];
      body = itemsBody(`
    let x = ld4_v(head * P.nk * DV + 4u * e);
    if (!finite4(x)) { atomicOr(&flags[${SAGE_FLAG.v}], 1u); }
    vout[head * P.nk * V4 + e] = x;`);
      break;
  }
  if (pass === 'qblock' || pass === 'kcode') fns = sageGroupFns(spec.granularity);
  const code = `${uniformStruct('Params', SAGE_QUANT_FIELDS)}
${halfCodec(spec.dtype)}
${declareBindings(bindings)}
const TH = ${SAGE_QUANT_THREADS}u;
const D = ${spec.d}u;
const DV = ${spec.dv}u;
${DF}
${fns}
${body}
`;
  return { code, bindings };
}
