import {
  declareBindings,
  halfCodec,
  type UniformField,
  uniformStruct,
  type WgslBinding,
} from '@attnkit/webgpu';
import type { WgslKernel } from '../webgpu/shaders.js';
import { SAGE_KEY_TILE, type SageGranularity } from './codec.js';

/**
 * SageAttention2's forward on WebGPU, portable path (no subgroups, no subgroup matrices: runs on
 * Mesa llvmpipe and in every browser): the integer products through the WGSL core builtins
 * dot4I8Packed (Q.K, i8 x i8) and dot4U8Packed (P~.V, u8 x u8 with V offset by 128), the
 * arithmetic of packages/sage-attention/ARITHMETIC.md step by step.
 *
 * Why a dedicated kernel and not an `operands` variant of ../webgpu/shaders.ts: that generator's
 * register tiles, staging (ntGemm / nnGemm) and P hand-off (writeZ) are vec4<f32> throughout,
 * its softmax runs in log2 units with exp2 (ARITHMETIC.md fixes natural exp, the f32 product
 * order of the dequantisation and P's quantization per 64-key tile with the tile's running
 * max), and its tiles are planned (bc 16..64) where Sage needs exactly 64 keys. An integer
 * variant would replace the GEMMs, the score code, the softmax and the P store: every part but
 * the band loop. So this file follows ../webgpu/decode.ts (a compact dedicated kernel) and shares
 * the mask rule's WGSL form (key_lo / key_hi of shaders.ts rangeFns, the normative spec.ts
 * keyRange) and the skeleton's masked-row numerics (NEG scores, running max from M0, so a row
 * without keys ends with l = 0: O = 0, LSE = -inf, no NaN).
 *
 * One workgroup per (BR query rows, query head, batch entry), T = 4 BR threads, over the 64-key
 * tiles of the rows' band (tile skipping: [key_lo(first row) / 64, ceil(key_hi(last row) / 64))).
 * Per tile:
 *  1. stage the tile's K codes (vec4<u32> = 16 i8 codes; layout [w16][key j = 16 q + jj] at
 *     w16 * 64 + jj * 4 + q, so the 4 threads of a row read 4 consecutive vec4) and their scales;
 *  2. thread (row r = lid / 4, quarter q = lid % 4) holds its Q row's codes in registers and
 *     computes dot_ij for keys 16 q .. 16 q + 15 (exact i32), then t = f32(dot) * f32(sQ sK)
 *     (+ bias), s = t * scale, masked by the band; the row max over the 4 quarters through
 *     workgroup memory;
 *  3. p = exp(s - m_new) (sage_exp: within 1 ulp everywhere), pCode = round(f32(p * 255)) (WGSL round: half to even), packed 4 u8 per
 *     u32 (key 4w + m at byte m: the word w = j / 4 of the row), the row's pCode sum, the thread's
 *     share of l; the V tile is staged transposed for the product (below);
 *  4. thread (row group g = lid / 16: rows 4g..4g+3, lane u = lid % 16: channels u + 16 k) sums
 *     pv = sum_j pCode (vCode + 128) with dot4U8Packed over key-packed words and subtracts
 *     128 sum_j pCode: the integers of ARITHMETIC.md's pv exactly; acc = acc alpha + f32(pv) dV.
 * pvBits 32 keeps p in f32 (workgroup memory) and V in f32 (read from the codec's `v`).
 * l is kept as four partial sums per row (one per quarter thread, each rescaled by the same
 * alpha): sum_q l_q is l up to f32 rounding order, which ARITHMETIC.md leaves open.
 *
 * Buffers (the codec's layout, ARITHMETIC.md "Storage", byte for byte): qCodes i8 [B, Hq, Nq, D]
 * read as vec4<u32> (16 codes; D is a multiple of 16), kCodes [B, Hkv, Nk, D] likewise, vCodes
 * i8 [B, Hkv, Nk, Dv] as u32 (4 channels of one key), scales f32; o f32 [B, Hq, Nq, Dv], lse f32
 * [B, Hq, Nq].
 */

export interface SageForwardSpec {
  d: number;
  dv: number;
  /** Query rows per workgroup (BR): 16, 32 or 64; the workgroup has 4 BR threads. */
  rows: number;
  granularity: SageGranularity;
  pvBits: 8 | 32;
  /** smoothQ's bias [B, Hq, nQB, Nk] is added to the dequantised scores. */
  bias: boolean;
  lse: boolean;
}

/** Keys per tile: fixed by ARITHMETIC.md (P's quantization depends on the tile's running max). */
const BK = SAGE_KEY_TILE;

/** The uniform fields of the forward (after them, no hooks: the struct is the kernel's own). */
export const SAGE_FORWARD_FIELDS: readonly UniformField[] = [
  ['hq', 'u32'],
  ['hkv', 'u32'],
  ['group', 'u32'],
  ['nq', 'u32'],
  ['nk', 'u32'],
  ['nQG', 'u32'],
  ['nKG', 'u32'],
  ['nQB', 'u32'],
  // Causal folded into the window, as FlashAttention (and AttentionProblem) does; -1 = unbounded.
  ['left', 'i32'],
  ['right', 'i32'],
  ['scale', 'f32'],
  // Bits of -Infinity: a runtime value, so no compiler folds an infinity constant.
  ['negInf', 'u32'],
];

/** Workgroup bytes of a forward spec (what the host plans BR against). */
export function sageForwardWorkgroupBytes(
  s: Pick<SageForwardSpec, 'd' | 'dv' | 'rows' | 'pvBits'>,
): number {
  const stage = 16 * 4 * (s.pvBits === 8 ? Math.max(s.d, s.dv) : s.d);
  const p = s.pvBits === 8 ? 16 * 4 * s.rows + 4 * 4 * s.rows : 4 * BK * s.rows;
  return stage + p + 4 * BK + 4 * 4 * s.rows + 4 * s.rows;
}

/** WGSL of the Q and K scale groups (ARITHMETIC.md "Configuration", codec.ts qGroupOf / kGroupOf). */
export function sageGroupFns(g: SageGranularity): string {
  const q = g === 'block' ? 'i >> 7u' : g === 'warp' ? 'i >> 4u' : '(i >> 4u) * 8u + (i & 7u)';
  const k = g === 'thread' ? '(j >> 6u) * 4u + ((j & 7u) >> 1u)' : 'j >> 6u';
  return `fn qgroup(i: u32) -> u32 { return ${q}; }
fn kgroup(j: u32) -> u32 { return ${k}; }`;
}

/**
 * WGSL `sage_exp(x)`: exp(x) for x <= 0 within 1 ulp (shared by the Sage kernels so that P~'s
 * codes agree with the TS kernel's on every implementation; see the comment inside).
 */
export const SAGE_EXP_WGSL = `// exp(x) for x <= 0 within 1 ulp (Cephes' expf: Cody-Waite reduction by ln 2 in two parts,
// the first exact for |k| < 2^8, then a degree-7 polynomial): ARITHMETIC.md's pCode =
// rint(f32(p 255)) flips where p is off by ulps near a .5 boundary, and the builtin exp of
// Mesa llvmpipe is up to 10 ulp off (13% exact; this one 90% exact, 1 ulp at most), so the
// codes match the TS kernel's (Math.exp) far more often on every implementation. x is
// clamped at -104 (e^-104 underflows to 0 in f32; the running max's M0 would overflow k).
fn sage_exp(x0: f32) -> f32 {
  let x = max(x0, -104.0);
  let k = round(x * 1.4426950408889634);
  let r = (x - k * 0.693359375) - k * -2.12194440e-4;
  var p = 1.9875691500e-4;
  p = p * r + 1.3981999507e-3;
  p = p * r + 8.3334519073e-3;
  p = p * r + 4.1665795894e-2;
  p = p * r + 1.6666665459e-1;
  p = p * r + 5.0000001201e-1;
  return ldexp(p * r * r + r + 1.0, i32(k));
}`;

function rep(n: number, f: (i: number) => string, sep = '\n'): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

export function sageForwardShader(spec: SageForwardSpec): WgslKernel {
  const { d, dv, rows, pvBits } = spec;
  if (d % 16 !== 0 || dv % 16 !== 0 || ![16, 32, 64].includes(rows))
    throw new Error(`sageForwardShader: bad spec ${JSON.stringify(spec)}`);
  const pv8 = pvBits === 8;
  const nc = dv / 16;
  const bindings: WgslBinding[] = [
    { name: 'P', kind: 'uniform', type: 'Params' },
    { name: 'qc', kind: 'read', type: 'array<vec4<u32>>' },
    { name: 'kc', kind: 'read', type: 'array<vec4<u32>>' },
    { name: 'qsc', kind: 'read', type: 'array<f32>' },
    { name: 'ksc', kind: 'read', type: 'array<f32>' },
    ...(pv8
      ? ([
          { name: 'vc', kind: 'read', type: 'array<u32>' },
          { name: 'vsc', kind: 'read', type: 'array<f32>' },
        ] as const)
      : ([{ name: 'v', kind: 'read', type: 'array<f32>' }] as const)),
    ...(spec.bias ? ([{ name: 'bias', kind: 'read', type: 'array<f32>' }] as const) : []),
    { name: 'o', kind: 'storage', type: 'array<f32>' },
    ...(spec.lse ? ([{ name: 'lse', kind: 'storage', type: 'array<f32>' }] as const) : []),
  ];
  const stageVec4 = 4 * (pv8 ? Math.max(d, dv) : d);
  // Per (rr, k): rows 4 g + rr of the thread's row group, channel u + 16 k.
  const acc = (f: (rr: number, k: number) => string, sep = '\n    ') =>
    rep(4, (rr) => rep(nc, (k) => f(rr, k), sep), sep);
  const scoreBias = spec.bias ? `\n        t = t + bias[biasB + j];` : '';
  const pStore = pv8
    ? `let pc = u32(round(p * 255.0));
      words[jj / 4u] = words[jj / 4u] | (pc << (8u * (jj % 4u)));
      csum += pc;`
    : 'pf[r * BK + q * 16u + jj] = p;';
  const pOut = pv8
    ? `pk[lid] = words;
    pcs[lid] = csum;`
    : '';
  // The V tile, transposed for the product: word (key quad w = 4 w4 + n, channel c) holds the
  // codes of keys 4w..4w+3 of channel c at bytes 0..3, each + 128 (XOR 0x80 of an i8 byte is
  // its u8 offset by 128); stored as component n of stage[w4 DV + c].
  const stageV = pv8
    ? `
    for (var e = lid; e < 16u * (DV / 4u); e += T) {
      let w = e / (DV / 4u);
      let cw = e % (DV / 4u);
      var x = array<u32, 4>();
      for (var mm = 0u; mm < 4u; mm++) {
        let j = c0 + 4u * w + mm;
        x[mm] = 0u;
        if (j < nk) { x[mm] = vc[(vB + j) * (DV / 4u) + cw]; }
      }
      for (var kk = 0u; kk < 4u; kk++) {
        let sh = 8u * kk;
        let word = ((x[0] >> sh) & 0xffu) | (((x[1] >> sh) & 0xffu) << 8u) | (((x[2] >> sh) & 0xffu) << 16u) | (((x[3] >> sh) & 0xffu) << 24u);
        stage[(w / 4u) * DV + 4u * cw + kk][w % 4u] = word ^ 0x80808080u;
      }
    }`
    : '';
  const product = pv8
    ? `
    ${rep(
      4,
      (rr) => `let a${rr} = al[4u * g + ${rr}u];
    let cs${rr} = i32(pcs[(4u * g + ${rr}u) * 4u] + pcs[(4u * g + ${rr}u) * 4u + 1u] + pcs[(4u * g + ${rr}u) * 4u + 2u] + pcs[(4u * g + ${rr}u) * 4u + 3u]);`,
    )}
    ${acc((rr, k) => `var ip_${rr}_${k} = 0u;`)}
    for (var w4 = 0u; w4 < 4u; w4++) {
      ${rep(4, (rr) => `let p${rr} = pk[(4u * g + ${rr}u) * 4u + w4];`, '\n      ')}
      ${rep(nc, (k) => `let v${k} = stage[w4 * DV + u + ${16 * k}u];`, '\n      ')}
      ${acc((rr, k) => `ip_${rr}_${k} += dot16u(p${rr}, v${k});`, '\n      ')}
    }
    ${acc((rr, k) => `acc_${rr}_${k} = acc_${rr}_${k} * a${rr} + f32(i32(ip_${rr}_${k}) - 128 * cs${rr}) * dv${k};`)}`
    : `
    ${rep(4, (rr) => `let a${rr} = al[4u * g + ${rr}u];`)}
    ${acc((rr, k) => `var x_${rr}_${k} = 0.0;`)}
    let jEnd = min(BK, nk - c0);
    for (var j = 0u; j < jEnd; j++) {
      ${rep(4, (rr) => `let p${rr} = pf[(4u * g + ${rr}u) * BK + j];`, '\n      ')}
      ${rep(nc, (k) => `let v${k} = v[(vB + c0 + j) * DV + u + ${16 * k}u];`, '\n      ')}
      ${acc((rr, k) => `x_${rr}_${k} += p${rr} * v${k};`, '\n      ')}
    }
    ${acc((rr, k) => `acc_${rr}_${k} = acc_${rr}_${k} * a${rr} + x_${rr}_${k};`)}`;
  const lseStore = spec.lse
    ? `
  if (q == 0u && rowOk) {
    let l = red[lid] + red[lid + 1u] + red[lid + 2u] + red[lid + 3u];
    lse[(b * P.hq + h) * nq + i] = select(m + log(select(l, 1.0, l == 0.0)), bitcast<f32>(P.negInf), l == 0.0);
  }`
    : '';
  const code = `${uniformStruct('Params', SAGE_FORWARD_FIELDS)}
${declareBindings(bindings)}
const BR = ${rows}u;
const T = ${4 * rows}u;
const BK = ${BK}u;
const D16 = ${d / 16}u;
const DV = ${dv}u;
const NEG = -3.0e38;
const M0 = -1.0e38;
var<workgroup> stage: array<vec4<u32>, ${stageVec4}>;
var<workgroup> kscl: array<f32, ${BK}>;
var<workgroup> red: array<f32, ${4 * rows}>;
var<workgroup> al: array<f32, ${rows}>;
${
  pv8
    ? `var<workgroup> pk: array<vec4<u32>, ${4 * rows}>;
var<workgroup> pcs: array<u32, ${4 * rows}>;`
    : `var<workgroup> pf: array<f32, ${BK * rows}>;`
}
${sageGroupFns(spec.granularity)}
fn key_lo(r: i32, off: i32) -> i32 { if (P.left < 0) { return 0; } return max(r + off - P.left, 0); }
fn key_hi(r: i32, off: i32, ncols: i32) -> i32 { if (P.right < 0) { return ncols; } return clamp(r + off + P.right + 1, 0, ncols); }
${SAGE_EXP_WGSL}
fn dot16(a: vec4<u32>, b: vec4<u32>) -> i32 {
  return dot4I8Packed(a.x, b.x) + dot4I8Packed(a.y, b.y) + dot4I8Packed(a.z, b.z) + dot4I8Packed(a.w, b.w);
}
fn dot16u(a: vec4<u32>, b: vec4<u32>) -> u32 {
  return dot4U8Packed(a.x, b.x) + dot4U8Packed(a.y, b.y) + dot4U8Packed(a.z, b.z) + dot4U8Packed(a.w, b.w);
}

@compute @workgroup_size(${4 * rows})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wg.z;
  let h = wg.y;
  let hk = h / P.group;
  let nq = P.nq;
  let nk = P.nk;
  let off = i32(nk) - i32(nq);
  let r0 = wg.x * BR;
  // Scores and softmax: row r, keys 16 q .. 16 q + 15 of each tile.
  let r = lid / 4u;
  let q = lid % 4u;
  let i = r0 + r;
  let rowOk = i < nq;
  var lo = 0;
  var hi = 0;
  var qv: array<vec4<u32>, D16>;
  var sq = 0.0;
  if (rowOk) {
    lo = key_lo(i32(i), off);
    hi = key_hi(i32(i), off, i32(nk));
    let qB = ((b * P.hq + h) * nq + i) * D16;
    for (var w = 0u; w < D16; w++) { qv[w] = qc[qB + w]; }
    sq = qsc[(b * P.hq + h) * P.nQG + qgroup(i)];
  }
  let biasB = ((b * P.hq + h) * P.nQB + (i >> 7u)) * nk;
  // The product: rows 4 g .. 4 g + 3, channels u + 16 k.
  let g = lid / 16u;
  let u = lid % 16u;
  let kB = (b * P.hkv + hk) * nk;
  let vB = kB;
  ${pv8 ? rep(nc, (k) => `let dv${k} = vsc[(b * P.hkv + hk) * DV + u + ${16 * k}u];`, '\n  ') : ''}
  ${acc((rr, k) => `var acc_${rr}_${k} = 0.0;`, '\n  ')}
  var m = M0;
  var lq = 0.0;
  // The band's key tiles for rows r0 .. rLast (key_lo and key_hi grow with the row).
  let rLast = min(r0 + BR, nq) - 1u;
  let ctLo = u32(key_lo(i32(r0), off)) / BK;
  let ctHi = (u32(max(key_hi(i32(rLast), off, i32(nk)), 0)) + BK - 1u) / BK;
  for (var ct = ctLo; ct < ctHi; ct++) {
    let c0 = ct * BK;
    for (var e = lid; e < BK * D16; e += T) {
      let j = e / D16;
      let w = e % D16;
      var val = vec4<u32>(0u);
      if (c0 + j < nk) { val = kc[(kB + c0 + j) * D16 + w]; }
      stage[w * BK + (j % 16u) * 4u + j / 16u] = val;
    }
    if (lid < BK) {
      var sk = 0.0;
      if (c0 + lid < nk) { sk = ksc[(b * P.hkv + hk) * P.nKG + kgroup(c0 + lid)]; }
      kscl[lid] = sk;
    }
    workgroupBarrier();
    var s = array<f32, 16>();
    var okb = 0u;
    var mt = NEG;
    for (var jj = 0u; jj < 16u; jj++) {
      let jt = q * 16u + jj;
      let j = c0 + jt;
      s[jj] = NEG;
      if (i32(j) >= lo && i32(j) < hi) {
        var ds = 0;
        for (var w = 0u; w < D16; w++) { ds += dot16(qv[w], stage[w * BK + jj * 4u + q]); }
        var t = f32(ds) * (sq * kscl[jt]);${scoreBias}
        s[jj] = t * P.scale;
        okb = okb | (1u << jj);
        mt = max(mt, s[jj]);
      }
    }
    red[lid] = mt;
    workgroupBarrier();
    let mn = max(m, max(max(red[4u * r], red[4u * r + 1u]), max(red[4u * r + 2u], red[4u * r + 3u])));
    let alpha = sage_exp(m - mn);
    m = mn;
    var words = vec4<u32>(0u);
    var csum = 0u;
    var psum = 0.0;
    for (var jj = 0u; jj < 16u; jj++) {
      var p = 0.0;
      if ((okb & (1u << jj)) != 0u) { p = sage_exp(s[jj] - mn); }
      psum += p;
      ${pStore}
    }
    lq = lq * alpha + psum;
    ${pOut}
    if (q == 0u) { al[r] = alpha; }${stageV}
    workgroupBarrier();${product}
    workgroupBarrier();
  }
  red[lid] = lq;
  workgroupBarrier();${lseStore}
  ${rep(
    4,
    (rr) => `{
    let row = r0 + 4u * g + ${rr}u;
    if (row < nq) {
      let lr = 4u * (4u * g + ${rr}u);
      let l = red[lr] + red[lr + 1u] + red[lr + 2u] + red[lr + 3u];
      let ls = select(l, 1.0, l == 0.0);
      let oB = ((b * P.hq + h) * nq + row) * DV + u;
      ${rep(nc, (k) => `o[oB + ${16 * k}u] = select(acc_${rr}_${k} / ls, 0.0, l == 0.0);`, '\n      ')}
    }
  }`,
    '\n  ',
  )}
}
`;
  return { code, bindings };
}

/** The uniform fields of the LSE shift pass. */
export const SAGE_LSE_FIELDS: readonly UniformField[] = [
  ['hq', 'u32'],
  ['hkv', 'u32'],
  ['group', 'u32'],
  ['nq', 'u32'],
  // B Hq Nq: the LSE entries.
  ['rows', 'u32'],
  ['scale', 'f32'],
];

/** Rows of the LSE shift pass per workgroup (4 threads each). */
export const SAGE_LSE_ROWS = 64;

/**
 * The LSE of the unsmoothed scores from the kernels' (ARITHMETIC.md "Equality across backends",
 * LSE): smoothK shifted every score of row i by -scale q_i . km (km: K's mean, constant along
 * the row, so O is unchanged), so lse_i += scale q_i . km puts it back; -Infinity entries (rows
 * without keys) stay. q is the original Q [B, Hq, Nq, D] of `dtype` (as the pre-pass read it),
 * km the codec's kMean [B, Hkv, D]. 4 threads per row (quads p, p + 4, ...: a warp reads 8
 * rows' consecutive bytes), their partial dot products summed in a fixed order in f32.
 */
export function sageLseShiftShader(dtype: 'f32' | 'f16' | 'bf16', d: number): WgslKernel {
  const bindings: WgslBinding[] = [
    { name: 'P', kind: 'uniform', type: 'Params' },
    { name: 'q', kind: 'read', type: { dtype, vec: true } },
    { name: 'km', kind: 'read', type: 'array<vec4<f32>>' },
    { name: 'lse', kind: 'storage', type: 'array<f32>' },
  ];
  const code = `${uniformStruct('Params', SAGE_LSE_FIELDS)}
${halfCodec(dtype)}
${declareBindings(bindings)}
const Q4 = ${d / 4}u;
const RW = ${SAGE_LSE_ROWS}u;
var<workgroup> part: array<f32, ${4 * SAGE_LSE_ROWS}>;

@compute @workgroup_size(${4 * SAGE_LSE_ROWS})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let p = lid % 4u;
  for (var r0 = wg.x * RW; r0 < P.rows; r0 += nwg.x * RW) {
    let row = r0 + lid / 4u;
    var s = 0.0;
    if (row < P.rows) {
      let bh = row / P.nq;
      let kmB = ((bh / P.hq) * P.hkv + (bh % P.hq) / P.group) * Q4;
      ${rep(d / 16, (u) => `let x${u} = ld4_q(row * ${d}u + 4u * (p + ${4 * u}u));`, '\n      ')}
      ${rep(d / 16, (u) => `s += dot(x${u}, km[kmB + p + ${4 * u}u]);`, '\n      ')}
    }
    part[lid] = s;
    workgroupBarrier();
    if (p == 0u && row < P.rows) {
      let l = lse[row];
      // -Infinity by its bits (compilers may assume no infinities in float compares).
      if (bitcast<u32>(l) != 0xff800000u) {
        lse[row] = l + P.scale * ((part[lid] + part[lid + 1u]) + (part[lid + 2u] + part[lid + 3u]));
      }
    }
    workgroupBarrier();
  }
}
`;
  return { code, bindings };
}
