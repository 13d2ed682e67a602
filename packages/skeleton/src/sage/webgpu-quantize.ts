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
 * f16, a shift for bf16, core WGSL, so no shader-f16 is needed) -> int8 codes packed 4 to a u32 (channel 4w + m at byte m: the bytes of
 * the CPU codec's Int8Array) and f32 scales, in passes queued in one command buffer:
 *
 *   kmean  km[c] = f32(sum_j K[j,c] / Nk)                       (smoothK)
 *   qmean  qm[a,c] = f32(sum_{i in block a} Q[i,c] / n_a)        (smoothQ)
 *   bias   dS[a,j] = f32(sum_c qm[a,c] Ks[j,c])                  (smoothQ)
 *   qcode  per Q group: amax, sQ = f32(amax / qmax), codes       (one workgroup per group)
 *   kcode  per K group: likewise
 *   vstats per V channel: sV = f32(max|V| / 127), dV = f32(sV / 255)   (pvBits 8)
 *   vcode  V codes                                               (pvBits 8)
 *   vcopy  V widened to f32                                      (pvBits 32)
 *
 * WGSL has no f64, so the binary64 sums and quotients of ARITHMETIC.md are emulated: sums in
 * double-float (f32 pairs, Knuth's two-sum), products as sums of exact partial products
 * formed in integers, quotients corrected by one residual step (WGSL's f32 division may be 2.5 ulp
 * off); written so that neither algebraic rewrites nor fma contraction change them (DF below). Codes round the quotient half to even (WGSL
 * round), and when it lies within a few ulp of a .5 boundary the sign of the exact residual
 * x - (k + 1/2) s decides, as the binary64 quotient would. So GPU codes and scales equal the TS
 * pre-pass's except where an f32 rounding of a sum or mean sits within ~2^-44 of a tie.
 * Non-finite inputs set a flag per tensor (q, k, v) that the host reads back.
 */

export type SageQuantPass =
  | 'kmean'
  | 'qmean'
  | 'bias'
  | 'qcode'
  | 'kcode'
  | 'vstats'
  | 'vcode'
  | 'vcopy';

export interface SageQuantSpec {
  dtype: 'f32' | 'f16' | 'bf16';
  d: number;
  dv: number;
  granularity: SageGranularity;
  smoothK: boolean;
  smoothQ: boolean;
}

/** Threads per workgroup of every pre-pass kernel. */
export const SAGE_QUANT_THREADS = 64;

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
];

/** The non-finite flags' slots (one u32 each in the `flags` binding). */
export const SAGE_FLAG = { q: 0, k: 1, v: 2 } as const;

/**
 * Double-float helpers (see the file comment). Compilers rewrite non-`precise` float
 * expressions, and on Mesa llvmpipe both rewrites below were seen to break the textbook forms:
 *  - (a + b) - a -> b zeroed two-sum's error term: `opq(x)` XORs the bits with the uniform
 *    P.zero (0, unknown to the compiler), an integer step no float pattern sees through
 *    (multiplying by a uniform 1.0 was not enough: the compiler factored it out of
 *    (a + b) 1 - a 1 and cancelled again);
 *  - Dekker's two-product with a bit-mask split (a = hi + lo): hi b_hi + hi b_lo was factored
 *    into hi (b_hi + b_lo) = hi b, and the error terms vanished. So exact products are formed
 *    in integers instead (`prod4` / `prod2`: the 24-bit significands, read from the bits,
 *    split in 12-bit halves, partial products in i32 / u32, each exact in f32 and scaled by
 *    ldexp), which no float rewrite can see through; a compiler that fuses one of them into an
 *    add (fma) changes nothing either.
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
// a b exactly as hi + lo: the 48-bit product of the significands as two 24-bit integers
// (h 2^24 + l, carries propagated in u32), each exact in f32.
fn prod2(a: f32, b: f32) -> vec2<f32> {
  let x = mant(a);
  let y = mant(b);
  let ma = u32(abs(x.x));
  let mb = u32(abs(y.x));
  let ah = ma >> 12u;
  let al = ma & 0xfffu;
  let bh = mb >> 12u;
  let bl = mb & 0xfffu;
  let mid = ah * bl + al * bh;
  let l0 = al * bl + ((mid & 0xfffu) << 12u);
  let h = ah * bh + (mid >> 12u) + (l0 >> 24u);
  let e = x.y + y.y;
  let sg = select(1.0, -1.0, (x.x < 0) != (y.x < 0));
  return vec2<f32>(sg * ldexp(f32(h), e + 24), sg * ldexp(f32(l0 & 0xffffffu), e));
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
// acc + a b (to double-float precision): the product's high word through two-sum, its low
// word (under 2^-24 of it) into acc's low word (one rounding, ~2^-48 of the product: sums
// that cancel to far below their terms, as the bias can, still round right).
fn df_add_prod(acc: vec2<f32>, a: f32, b: f32) -> vec2<f32> {
  let p = prod2(a, b);
  return df_add1(vec2<f32>(acc.x, acc.y + p.y), p.x);
}
// f32((hi + lo) / b), one correction step on WGSL's division (up to 2.5 ulp off).
fn div_df(hi: f32, lo: f32, b: f32) -> f32 {
  let q = opq(hi / b);
  return q + (residual(hi, q, b) + lo) / b;
}
fn div(a: f32, b: f32) -> f32 { return div_df(a, 0.0, b); }
fn finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }
// clamp(rint(x / s), -qmax, qmax) with the quotient's rounding decided as in binary64: near a
// .5 boundary h the sign of the residual x - h s (h has at most 9 significant bits, so h s is
// exactly its two leading terms and x - h s rounds once) says on which side the quotient lies.
fn code(x: f32, s: f32, qmax: f32) -> i32 {
  if (s == 0.0) { return 0; }
  let q = div(x, s);
  let h = opq(floor(q) + 0.5);
  var c = round(q);
  if (abs(q - h) <= abs(q) * 4.8e-7) {
    let rr = residual(x, h, s);
    c = select(select(round(h), h - 0.5, rr < 0.0), h + 0.5, rr > 0.0);
  }
  return i32(clamp(c, -qmax, qmax));
}
fn pack4(a: i32, b: i32, c: i32, d: i32) -> u32 {
  return (bitcast<u32>(a) & 0xffu) | ((bitcast<u32>(b) & 0xffu) << 8u) | ((bitcast<u32>(c) & 0xffu) << 16u) | (bitcast<u32>(d) << 24u);
}`;

const UNIFORMS: WgslBinding = { name: 'P', kind: 'uniform', type: 'Params' };
const F32S = 'array<f32>';

function input(name: 'q' | 'k' | 'v', spec: SageQuantSpec): WgslBinding {
  return { name, kind: 'read', type: { dtype: spec.dtype, vec: false } };
}
const read = (name: string, type = F32S): WgslBinding => ({ name, kind: 'read', type });
const out = (name: string, type = F32S): WgslBinding => ({ name, kind: 'storage', type });
const FLAGS = out('flags', 'array<atomic<u32>, 4>');
const QMAX = read('qmax', 'array<u32>');

/** Q rows / K keys of a scale group (ARITHMETIC.md "Configuration"): count and e-th member. */
function members(side: 'q' | 'k', g: SageGranularity): { count: number; fn: string } {
  if (side === 'q') {
    const [count, row] =
      g === 'block'
        ? [128, '128u * g + e']
        : g === 'warp'
          ? [16, '16u * g + e']
          : [2, '16u * (g >> 3u) + (g & 7u) + 8u * e'];
    return { count, fn: `fn member(g: u32, e: u32) -> u32 { return ${row}; }` };
  }
  const [count, row] =
    g === 'thread'
      ? [16, '64u * (g >> 2u) + 8u * (e >> 1u) + 2u * (g & 3u) + (e & 1u)']
      : [64, '64u * g + e'];
  return { count, fn: `fn member(g: u32, e: u32) -> u32 { return ${row}; }` };
}

/** Smoothed values: Qs = f32(Q - qm[block]) and Ks = f32(K - km) (or the input unsmoothed). */
function smoothFns(spec: SageQuantSpec, q: boolean, k: boolean): string {
  const fns: string[] = [];
  if (q)
    fns.push(`fn qs_val(b: u32, h: u32, i: u32, c: u32) -> f32 {
  let x = ld_q(((b * P.hq + h) * P.nq + i) * D + c);
  ${spec.smoothQ ? 'return x - qm[((b * P.hq + h) * P.nQB + (i >> 7u)) * D + c];' : 'return x;'}
}`);
  if (k)
    fns.push(`fn ks_val(b: u32, hk: u32, j: u32, c: u32) -> f32 {
  let x = ld_k(((b * P.hkv + hk) * P.nk + j) * D + c);
  ${spec.smoothK ? 'return x - km[(b * P.hkv + hk) * D + c];' : 'return x;'}
}`);
  return fns.join('\n');
}

/** A grid-stride loop over `n` items of this (head, batch entry). */
function items(n: string, body: string): string {
  return `
  let b = wg.z;
  let hh = wg.y;
  for (var e = wg.x * TH + lid; e < ${n}; e += nwg.x * TH) {${body}
  }`;
}

/**
 * One workgroup per scale group (grid-stride over the head's groups): the group's amax (tree
 * reduction in workgroup memory), its scale, then its codes, one u32 (4 channels of a row) per
 * thread and step.
 */
function groupBody(side: 'q' | 'k', spec: SageQuantSpec): string {
  const { count } = members(side, spec.granularity);
  const q = side === 'q';
  const n = q ? 'P.nq' : 'P.nk';
  const val = q ? 'qs_val(b, hh, i, c' : 'ks_val(b, hh, i, c';
  const head = q ? '(b * P.hq + hh)' : '(b * P.hkv + hh)';
  const groups = q ? 'P.nQG' : 'P.nKG';
  const qmax = q ? 'qmax[hh]' : 'qmax[P.hq + hh]';
  return `
  let b = wg.z;
  let hh = wg.y;
  let qmx = f32(${qmax});
  for (var g = wg.x; g < ${groups}; g += nwg.x) {
    var mx = 0.0;
    var bad = false;
    for (var e = lid; e < ${count}u * D; e += TH) {
      let i = member(g, e / D);
      let c = e % D;
      if (i < ${n}) {
        let x = ${val});
        bad = bad || !finite(x);
        mx = max(mx, abs(x));
      }
    }
    if (bad) { atomicOr(&flags[${q ? SAGE_FLAG.q : SAGE_FLAG.k}], 1u); }
    red[lid] = mx;
    workgroupBarrier();
    for (var st = TH / 2u; st > 0u; st >>= 1u) {
      if (lid < st) { red[lid] = max(red[lid], red[lid + st]); }
      workgroupBarrier();
    }
    let amax = red[0];
    var s = 0.0;
    if (amax > 0.0) { s = div(amax, qmx); }
    if (lid == 0u) { ${q ? 'qs' : 'ks'}[${head} * ${groups} + g] = s; }
    for (var e = lid; e < ${count}u * (D / 4u); e += TH) {
      let i = member(g, e / (D / 4u));
      let c = (e % (D / 4u)) * 4u;
      if (i < ${n}) {
        ${q ? 'qc' : 'kc'}[(${head} * ${n} + i) * (D / 4u) + c / 4u] = pack4(code(${val}), s, qmx), code(${val} + 1u), s, qmx), code(${val} + 2u), s, qmx), code(${val} + 3u), s, qmx));
      }
    }
    // The next group's amax overwrites red.
    workgroupBarrier();
  }`;
}

export function sageQuantShader(pass: SageQuantPass, spec: SageQuantSpec): WgslKernel {
  const { smoothK, smoothQ } = spec;
  let bindings: WgslBinding[];
  let body: string;
  let fns = '';
  switch (pass) {
    case 'kmean':
      bindings = [UNIFORMS, input('k', spec), out('km')];
      body = items(
        'D',
        `
    let base = (b * P.hkv + hh) * P.nk * D + e;
    var acc = vec2<f32>(0.0);
    for (var j = 0u; j < P.nk; j++) { acc = df_add1(acc, ld_k(base + j * D)); }
    var mean = 0.0;
    if (P.nk > 0u) { mean = div_df(acc.x, acc.y, f32(P.nk)); }
    km[(b * P.hkv + hh) * D + e] = mean;`,
      );
      break;
    case 'qmean':
      bindings = [UNIFORMS, input('q', spec), out('qm')];
      body = items(
        'P.nQB * D',
        `
    let a = e / D;
    let c = e % D;
    let i0 = 128u * a;
    let n = min(128u, P.nq - i0);
    let base = ((b * P.hq + hh) * P.nq + i0) * D + c;
    var acc = vec2<f32>(0.0);
    for (var i = 0u; i < n; i++) { acc = df_add1(acc, ld_q(base + i * D)); }
    qm[((b * P.hq + hh) * P.nQB + a) * D + c] = div_df(acc.x, acc.y, f32(n));`,
      );
      break;
    case 'bias':
      bindings = [
        UNIFORMS,
        input('k', spec),
        ...(smoothK ? [read('km')] : []),
        read('qm'),
        out('bias'),
      ];
      fns = smoothFns(spec, false, true);
      body = items(
        'P.nQB * P.nk',
        `
    let a = e / P.nk;
    let j = e % P.nk;
    let hk = hh / P.group;
    let qmB = ((b * P.hq + hh) * P.nQB + a) * D;
    var acc = vec2<f32>(0.0);
    for (var c = 0u; c < D; c++) { acc = df_add_prod(acc, qm[qmB + c], ks_val(b, hk, j, c)); }
    bias[((b * P.hq + hh) * P.nQB + a) * P.nk + j] = acc.x;`,
      );
      break;
    case 'qcode':
      bindings = [
        UNIFORMS,
        input('q', spec),
        ...(smoothQ ? [read('qm')] : []),
        QMAX,
        out('qc', 'array<u32>'),
        out('qs'),
        FLAGS,
      ];
      fns = `${smoothFns(spec, true, false)}\n${members('q', spec.granularity).fn}`;
      body = groupBody('q', spec);
      break;
    case 'kcode':
      bindings = [
        UNIFORMS,
        input('k', spec),
        ...(smoothK ? [read('km')] : []),
        QMAX,
        out('kc', 'array<u32>'),
        out('ks'),
        FLAGS,
      ];
      fns = `${smoothFns(spec, false, true)}\n${members('k', spec.granularity).fn}`;
      body = groupBody('k', spec);
      break;
    case 'vstats':
      bindings = [UNIFORMS, input('v', spec), out('svt'), out('vs'), FLAGS];
      body = items(
        'DV',
        `
    let base = (b * P.hkv + hh) * P.nk * DV + e;
    var mx = 0.0;
    var bad = false;
    for (var j = 0u; j < P.nk; j++) {
      let x = ld_v(base + j * DV);
      bad = bad || !finite(x);
      mx = max(mx, abs(x));
    }
    if (bad) { atomicOr(&flags[${SAGE_FLAG.v}], 1u); }
    var sv = 0.0;
    if (mx > 0.0) { sv = div(mx, 127.0); }
    svt[(b * P.hkv + hh) * DV + e] = sv;
    vs[(b * P.hkv + hh) * DV + e] = div(sv, 255.0);`,
      );
      break;
    case 'vcode':
      bindings = [UNIFORMS, input('v', spec), read('svt'), out('vc', 'array<u32>')];
      body = items(
        'P.nk * (DV / 4u)',
        `
    let j = e / (DV / 4u);
    let c = (e % (DV / 4u)) * 4u;
    let x = ((b * P.hkv + hh) * P.nk + j) * DV + c;
    let sB = (b * P.hkv + hh) * DV + c;
    vc[((b * P.hkv + hh) * P.nk + j) * (DV / 4u) + c / 4u] = pack4(code(ld_v(x), svt[sB], 127.0), code(ld_v(x + 1u), svt[sB + 1u], 127.0), code(ld_v(x + 2u), svt[sB + 2u], 127.0), code(ld_v(x + 3u), svt[sB + 3u], 127.0));`,
      );
      break;
    case 'vcopy':
      bindings = [UNIFORMS, input('v', spec), out('vout'), FLAGS];
      body = items(
        'P.nk * DV',
        `
    let x = ld_v((b * P.hkv + hh) * P.nk * DV + e);
    if (!finite(x)) { atomicOr(&flags[${SAGE_FLAG.v}], 1u); }
    vout[(b * P.hkv + hh) * P.nk * DV + e] = x;`,
      );
      break;
  }
  const group = pass === 'qcode' || pass === 'kcode';
  const code = `${uniformStruct('Params', SAGE_QUANT_FIELDS)}
${halfCodec(spec.dtype)}
${declareBindings(bindings)}
const TH = ${SAGE_QUANT_THREADS}u;
const D = ${spec.d}u;
const DV = ${spec.dv}u;
${group ? `var<workgroup> red: array<f32, ${SAGE_QUANT_THREADS}>;\n` : ''}${DF}
${sageGroupFns(spec.granularity)}
${fns}

@compute @workgroup_size(${SAGE_QUANT_THREADS})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {${body}
}
`;
  return { code, bindings };
}
