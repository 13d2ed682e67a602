import { ValueError } from '@attnkit/tensor';
import {
  bindBuffers,
  bindingKinds,
  declareBindings,
  type GpuProfiler,
  packUniform,
  type UniformField,
  uniformStruct,
  type WebGpuContext,
  type WgslBinding,
} from '@attnkit/webgpu';
import type { WgslKernel } from '../webgpu/shaders.js';
import { partsArray } from '../webgpu/tc-forward.js';
import {
  SAGE_KEY_TILE,
  type SageDims,
  type SageGranularity,
  type SageKernelOptions,
  sageGroupCounts,
} from './codec.js';
import { SAGE_EXP_WGSL } from './webgpu-forward.js';

/**
 * SageAttention2's forward on the int8 tensor cores of WebGPU (issue 11 item 5): Q·K^T on
 * i8 x i8 -> i32 subgroup matrices (16x16x32) and P~·V on u8 x u8 -> u32 ones, reading the
 * codec of ARITHMETIC.md (quantizeSageWebGpu's buffers: codes packed four per 32-bit word, row
 * major [B, H, N, D]). One workgroup owns 16 x `subgroups` query rows of one (b, h) and walks the
 * 64-key tiles of ARITHMETIC.md (fixed: P~'s quantization depends on the running max).
 *
 * Per tile: the K tile's codes and the V tile's codes (each byte XOR 0x80, i.e. vCode + 128 as
 * u8: the adapters have no mixed u8 x i8 config) are staged in workgroup memory; each subgroup
 * multiplies its Q left matrices (loaded once from storage) with the K tile into four 16x16 i32
 * score matrices, stored to its scratch (WGSL gives no per-element access to matrices); two
 * lanes per row then dequantise (f32(dot) * f32(sQ sK) [+ bias] * scale), mask, run the online
 * softmax in f32 (exp: SAGE_EXP_WGSL, the portable kernel's) and write P~'s u8 codes, packed, to the subgroup's P scratch, with the row's
 * sum of codes; P~ V then runs in chunks of 32 output columns (two u32 result matrices, stored
 * to scratch), and each lane folds its 16 columns into its f32 accumulators:
 *     acc = acc * alpha + f32(pv - 128 sum(pCode)) * dV[c],
 * the integer pv of ARITHMETIC.md exactly (the offset's 128 sum(pCode) subtracted in int32).
 * O leaves as f32 [B, Hq, Nq, Dv], LSE as f32 [B, Hq, Nq].
 *
 * `emulate` (test aid): the two products computed by plain WGSL loops into the same scratch
 * arrays, so llvmpipe (no subgroup matrices) runs everything else of the kernel — staging, the
 * dequantisation, masks, softmax, the code packing, the offset correction and the epilogue —
 * against the TypeScript spec. What the emulation cannot show (the builtins' layouts) the
 * device run checks before it times (benchmarks/gpu/bench-sage.ts).
 */
export interface SageTcConfig {
  d: number;
  dv: number;
  granularity: SageGranularity;
  /** Subgroups (of 32 invocations) per workgroup: 16 query rows each. */
  subgroups: number;
  /** A smoothing bias dS [B, Hq, nQB, Nk] is bound and added (smoothQ). */
  bias: boolean;
  /**
   * How i8/u8 matrix offsets and strides count: 'elems' (bytes of the packed array, the
   * extension's documented reading) or 'words' (32-bit words). The device probe decides.
   */
  units?: 'elems' | 'words';
  /**
   * Declare the per-subgroup scratch (ss, pv, pc) as arrays of per-subgroup arrays
   * (`array<array<i32, 16 * 64>, SG>`) and address every subgroup-matrix load and store on
   * workgroup memory through the subgroup's element (`&ss[sg]`) or the single K / V tile at a
   * literal constant offset and stride (with 'words', divided by 4 here). Tint's robustness
   * transform then proves each access in bounds at compile time and emits the bare builtin;
   * with a dynamic offset (the flat layout, the default) it wraps every load and store in
   * `if (in bounds)` and moves the matrix through a function variable (on the H200 8 loads + 8
   * MMAs ran 3.7x slower so; tc-forward.ts constOffsets). Same bytes, same layout per subgroup.
   */
  constOffsets?: boolean;
  emulate?: boolean;
}

/** The 32-lane subgroups the kernel's row split (two lanes per row of 16) assumes. */
export const SAGE_TC_SUBGROUP = 32;
/** Output columns per P~·V chunk (two 16-wide result matrices). */
const CHUNK = 32;

export const SAGE_TC_UNIFORMS: readonly UniformField[] = [
  ['hq', 'u32'],
  ['hkv', 'u32'],
  ['group', 'u32'],
  ['nq', 'u32'],
  ['nk', 'u32'],
  ['nQG', 'u32'],
  ['nKG', 'u32'],
  ['nQB', 'u32'],
  ['left', 'i32'],
  ['right', 'i32'],
  ['scale', 'f32'],
];

function check(c: SageTcConfig): void {
  for (const [name, v] of [
    ['d', c.d],
    ['dv', c.dv],
  ] as const)
    if (!Number.isInteger(v) || v < 32 || v > 256 || v % 32 !== 0)
      throw new ValueError(
        `${name}: expected a multiple of 32 in [32, 256] for the int8 tensor cores (K = 32 per product), got ${v}`,
        name,
      );
  if (!Number.isInteger(c.subgroups) || c.subgroups < 1 || c.subgroups > 8)
    throw new ValueError(
      `subgroups: expected an integer in [1, 8], got ${c.subgroups}`,
      'subgroups',
    );
}

/** Workgroup memory of the kernel, bytes. */
export function sageTcWorkgroupBytes(c: Pick<SageTcConfig, 'd' | 'dv' | 'subgroups'>): number {
  const BK = SAGE_KEY_TILE;
  const perSg = 16 * BK * 4 + 16 * CHUNK * 4 + 16 * (BK / 4) * 4 + 2 * SAGE_TC_SUBGROUP * 4;
  return BK * c.d + BK * c.dv + c.subgroups * perSg;
}

/**
 * WGSL copying `rows` rows of `width` codes (bytes; a multiple of 16) from the storage array of
 * 16-byte words `src` (row r of the slice at (base + first + r) * width / 16) to the workgroup
 * word array `dst` at `at`, rows at or past `limit` as zeros (then `xor`), spread over `threads`
 * invocations (index `idx`), unrolled with every load of an invocation issued before its
 * stores: a loop of load-then-store keeps one load in flight per invocation.
 */
function stage4(a: {
  src: string;
  dst: string;
  at: string;
  base: string;
  first: string;
  rows: number;
  width: number;
  limit: string;
  idx: string;
  threads: number;
  type: 'i32' | 'u32';
  xor: string;
  tag: string;
}): string {
  const per = a.width / 16;
  const nv = a.rows * per;
  const u = Math.ceil(nv / a.threads);
  const guard = (i: number) => ((i + 1) * a.threads > nv ? `e${a.tag}${i} < ${nv}u && ` : '');
  const loads = rep(
    u,
    (i) => `let e${a.tag}${i} = ${a.idx} + ${i * a.threads}u;
    let r${a.tag}${i} = ${a.first} + e${a.tag}${i} / ${per}u;
    var w${a.tag}${i} = vec4<${a.type}>();
    if (${guard(i)}r${a.tag}${i} < ${a.limit}) { w${a.tag}${i} = ${a.src}[(${a.base} + r${a.tag}${i}) * ${per}u + e${a.tag}${i} % ${per}u]; }`,
    '\n    ',
  );
  const stores = rep(
    u,
    (i) => {
      const body = ['x', 'y', 'z', 'w']
        .map(
          (c, k) => `${a.dst}[${a.at} + e${a.tag}${i} * 4u + ${k}u] = w${a.tag}${i}.${c}${a.xor};`,
        )
        .join(' ');
      return (i + 1) * a.threads > nv ? `if (e${a.tag}${i} < ${nv}u) { ${body} }` : `{ ${body} }`;
    },
    '\n    ',
  );
  return `{
    ${loads}
    ${stores}
    }`;
}

function rep(n: number, f: (i: number) => string, sep = '\n'): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

export function sageTcShader(c: SageTcConfig): WgslKernel {
  check(c);
  const { d: D, dv: DV } = c;
  const BK = SAGE_KEY_TILE;
  const SG = c.subgroups;
  const T = SG * SAGE_TC_SUBGROUP;
  const emu = c.emulate ?? false;
  const words = (c.units ?? 'elems') === 'words';
  // An offset / stride in bytes of a packed array, as the builtins read it.
  const u = (x: string) => (words ? `(${x}) / 4u` : `${x}`);
  const nest = c.constOffsets ?? false;
  // A constant offset / stride in bytes as the builtins read it: nest folds it to a literal.
  const cu = (n: number) => (nest ? `${words ? n / 4 : n}u` : u(`${n}u`));
  // Element x (WGSL) of the subgroup's part of a per-subgroup array (`base` its flat start).
  const el = (a: string, base: string, x: string) =>
    nest ? `${a}[sg][${x}]` : `${a}[${base} + ${x}]`;
  // A subgroup matrix of a per-subgroup array at `off` within the subgroup's part: the
  // builtin's pointer and offset (`flat` the flat layout's offset).
  const at = (a: string, off: number, flat: string) =>
    nest ? `&${a}[sg], ${off}u` : `&${a}, ${flat}`;
  const arr = (t: string, size: number, n: number) => partsArray(t, size, n, nest);
  const bindings: WgslBinding[] = [
    { name: 'P', kind: 'uniform', type: 'Params' },
    // 16-byte words: each staging load moves 16 codes (D, Dv are multiples of 32).
    { name: 'qc', kind: 'read', type: 'array<vec4<i32>>' },
    { name: 'kc', kind: 'read', type: 'array<vec4<i32>>' },
    { name: 'vc', kind: 'read', type: 'array<vec4<u32>>' },
    { name: 'qsc', kind: 'read', type: 'array<f32>' },
    { name: 'ksc', kind: 'read', type: 'array<f32>' },
    { name: 'vsc', kind: 'read', type: 'array<f32>' },
    ...(c.bias ? [{ name: 'dsb', kind: 'read' as const, type: 'array<f32>' }] : []),
    { name: 'o', kind: 'storage', type: 'array<f32>' },
    { name: 'lse', kind: 'storage', type: 'array<f32>' },
  ];
  const qg =
    c.granularity === 'block'
      ? 'i >> 7u'
      : c.granularity === 'warp'
        ? 'i >> 4u'
        : '(i >> 4u) * 8u + (i & 7u)';
  const kg = c.granularity === 'thread' ? '(j >> 6u) * 4u + ((j & 7u) >> 1u)' : 'j >> 6u';
  const KD = D / 32;
  const NCH = DV / CHUNK;
  const HALF = BK / 2;
  // S = Q K^T of the tile into ss (row-major 16 x 64 per subgroup).
  const scores = emu
    ? `
    for (var c = 0u; c < ${HALF}u; c++) {
      let cl = hh * ${HALF}u + c;
      var dot = 0i;
      for (var w = 0u; w < ${D / 4}u; w++) {
        let qi = qRow * ${D / 4}u + w;
        let qw = qc[qi / 4u][qi % 4u];
        let kw = kt[cl * ${D / 4}u + w];
        for (var t = 0u; t < 4u; t++) {
          dot += extractBits(qw, 8u * t, 8u) * extractBits(kw, 8u * t, 8u);
        }
      }
      ${el('ss', 'ssB', `rr * ${BK}u + cl`)} = dot;
    }`
    : `
    ${rep(4, (n) => `var s${n} = subgroup_matrix_result<i32, 16, 16>();`, '\n    ')}
    ${rep(
      KD,
      (i) => `{
      ${rep(4, (n) => `s${n} = subgroupMatrixMultiplyAccumulate(qa${i}, subgroupMatrixLoad<subgroup_matrix_right<i8, 16, 32>>(&kt, ${cu(n * 16 * D + i * 32)}, true, ${cu(D)}), s${n});`, '\n      ')}
    }`,
      '\n    ',
    )}
    ${rep(4, (n) => `subgroupMatrixStore(${at('ss', n * 16, `ssB + ${n * 16}u`)}, s${n}, false, ${BK}u);`, '\n    ')}`;
  // P~ V for output columns [ch * 32, ch * 32 + 32) into pv (row-major 16 x 32 per subgroup).
  const products = (ch: number) =>
    emu
      ? `
    for (var t = 0u; t < 16u; t++) {
      let cc = ${ch * CHUNK}u + hh * 16u + t;
      var acc32 = 0u;
      for (var key = 0u; key < ${BK}u; key++) {
        let pw = ${el('pc', 'pcB', `rr * ${BK / 4}u + key / 4u`)};
        let vw = vt[key * ${DV / 4}u + cc / 4u];
        acc32 += extractBits(pw, 8u * (key % 4u), 8u) * extractBits(vw, 8u * (cc % 4u), 8u);
      }
      ${el('pv', 'pvB', `rr * ${CHUNK}u + hh * 16u + t`)} = acc32;
    }`
      : `
    {
      var r0 = subgroup_matrix_result<u32, 16, 16>();
      var r1 = subgroup_matrix_result<u32, 16, 16>();
      ${rep(
        2,
        (kk) => `{
        let pa = subgroupMatrixLoad<subgroup_matrix_left<u8, 32, 16>>(${nest ? `&pc[sg], ${cu(kk * 32)}` : `&pc, ${u(`pcB * 4u + ${kk * 32}u`)}`}, false, ${cu(BK)});
        ${rep(2, (m) => `r${m} = subgroupMatrixMultiplyAccumulate(pa, subgroupMatrixLoad<subgroup_matrix_right<u8, 16, 32>>(&vt, ${cu(kk * 32 * DV + ch * CHUNK + m * 16)}, false, ${cu(DV)}), r${m});`, '\n        ')}
      }`,
        '\n      ',
      )}
      subgroupMatrixStore(${at('pv', 0, 'pvB')}, r0, false, ${CHUNK}u);
      subgroupMatrixStore(${at('pv', 16, 'pvB + 16u')}, r1, false, ${CHUNK}u);
    }`;
  const fold = (ch: number) =>
    rep(
      16,
      (t) => `{
      let x = f32(bitcast<i32>(${el('pv', 'pvB', `rr * ${CHUNK}u + hh * 16u + ${t}u`)}) - 128i * csum);
      acc[${ch * 16 + t}] = acc[${ch * 16 + t}] * alpha + x * vsc[vsB + ${ch * CHUNK}u + hh * 16u + ${t}u];
    }`,
      '\n    ',
    );
  const code = `${emu ? '' : 'enable chromium_experimental_subgroup_matrix;\n'}${uniformStruct('Params', SAGE_TC_UNIFORMS)}
${declareBindings(bindings)}
const NEG = -3.0e38;
// The small per-lane exchanges first (tc-forward.ts smallFirst: the H200 misplaced small
// variables declared among arrays that subgroup-matrix loads read).
var<workgroup> sxf: array<f32, ${SG * SAGE_TC_SUBGROUP}>;
var<workgroup> sxu: array<i32, ${SG * SAGE_TC_SUBGROUP}>;
var<workgroup> kt: array<i32, ${(BK * D) / 4}>;
var<workgroup> vt: array<u32, ${(BK * DV) / 4}>;
var<workgroup> ss: ${arr('i32', 16 * BK, SG)};
var<workgroup> pv: ${arr('u32', 16 * CHUNK, SG)};
var<workgroup> pc: ${arr('u32', 16 * (BK / 4), SG)};
fn key_lo(r: i32, off: i32) -> i32 { if (P.left < 0) { return 0; } return max(r + off - P.left, 0); }
fn key_hi(r: i32, off: i32, ncols: i32) -> i32 { if (P.right < 0) { return ncols; } return clamp(r + off + P.right + 1, 0, ncols); }
fn qgroup(i: u32) -> u32 { return ${qg}; }
fn kgroup(j: u32) -> u32 { return ${kg}; }
${SAGE_EXP_WGSL}

@compute @workgroup_size(${T})
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  ${emu ? '' : '@builtin(subgroup_id) sgId: u32,\n  @builtin(subgroup_invocation_id) laneId: u32,'}
) {
  ${emu ? `let sg = lid / ${SAGE_TC_SUBGROUP}u;\n  let lane = lid % ${SAGE_TC_SUBGROUP}u;` : 'let sg = sgId;\n  let lane = laneId;'}
  let b = wg.z;
  let h = wg.y;
  let r0 = wg.x * ${16 * SG}u;
  let nq = P.nq;
  let nk = P.nk;
  let hk = h / P.group;
  let off = i32(nk) - i32(nq);
  let rr = lane / 2u;
  let hh = lane % 2u;
  let i = r0 + sg * 16u + rr;
  let live = i < nq;
  let qRow = (b * P.hq + h) * nq + min(i, nq - 1u);
  let kRow0 = (b * P.hkv + hk) * nk;
  ${nest ? '' : `let ssB = sg * ${16 * BK}u;\n  `}let xs = sg * ${SAGE_TC_SUBGROUP}u;
  ${nest ? '' : `let pvB = sg * ${16 * CHUNK}u;\n  let pcB = sg * ${16 * (BK / 4)}u;\n  `}let vsB = (b * P.hkv + hk) * ${DV}u;
  let ksB = (b * P.hkv + hk) * P.nKG;
  let qsv = select(0.0, qsc[(b * P.hq + h) * P.nQG + qgroup(min(i, nq - 1u))], live);
  let rowLo = key_lo(i32(i), off);
  let rowHi = select(0, key_hi(i32(i), off, i32(nk)), live);
  ${c.bias ? `let dsB = ((b * P.hq + h) * P.nQB + (min(i, nq - 1u) >> 7u)) * nk;` : ''}
  ${
    emu
      ? ''
      : `// The subgroup's 16 Q rows through its scratch (rows past the sequence as zeros): a
  // matrix load straight from storage could run past the buffer's end on the last head, and
  // robust access may then clamp the whole load, shifting the valid rows too.
  ${stage4({ src: 'qc', dst: nest ? 'ss[sg]' : 'ss', at: nest ? '0u' : 'ssB', base: '(b * P.hq + h) * nq', first: '(r0 + sg * 16u)', rows: 16, width: D, limit: 'nq', idx: 'lane', threads: SAGE_TC_SUBGROUP, type: 'i32', xor: '', tag: 'q' })}
  workgroupBarrier();
  ${rep(
    KD,
    (k) =>
      `let qa${k} = subgroupMatrixLoad<subgroup_matrix_left<i8, 32, 16>>(${nest ? `&ss[sg], ${cu(k * 32)}` : `&ss, ${u(`ssB * 4u + ${k * 32}u`)}`}, false, ${cu(D)});`,
    '\n  ',
  )}
  workgroupBarrier();`
  }
  var acc: array<f32, ${DV / 2}>;
  var m = NEG;
  var l = 0.0;
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + ${16 * SG}u, nq)) - 1;
  let loFirst = key_lo(rFirst, off);
  let hiLast = max(key_hi(rLast, off, i32(nk)), 0);
  for (var ct = u32(loFirst) / ${BK}u; ct < (u32(hiLast) + ${BK - 1}u) / ${BK}u; ct++) {
    let c0 = ct * ${BK}u;
    workgroupBarrier();
    // The tile's K codes, and its V codes as u8 (vCode + 128 = the byte XOR 0x80); keys past
    // the sequence as zeros (their P~ is 0).
    ${stage4({ src: 'kc', dst: 'kt', at: '0u', base: 'kRow0', first: 'c0', rows: BK, width: D, limit: 'nk', idx: 'lid', threads: T, type: 'i32', xor: '', tag: 'k' })}
    ${stage4({ src: 'vc', dst: 'vt', at: '0u', base: 'kRow0', first: 'c0', rows: BK, width: DV, limit: 'nk', idx: 'lid', threads: T, type: 'u32', xor: ' ^ 0x80808080u', tag: 'v' })}
    workgroupBarrier();${scores}
    workgroupBarrier();
    // Dequantise, mask, the row's max over the tile (two lanes per row, 32 columns each).
    var tmax = NEG;
    for (var c = 0u; c < ${HALF}u; c++) {
      let cl = hh * ${HALF}u + c;
      let j = c0 + cl;
      var s = NEG;
      if (i32(j) >= rowLo && i32(j) < rowHi) {
        var t = f32(${el('ss', 'ssB', `rr * ${BK}u + cl`)}) * (qsv * ksc[ksB + kgroup(j)]);
        ${c.bias ? 't = t + dsb[dsB + j];' : ''}
        s = t * P.scale;
      }
      ${el('ss', 'ssB', `rr * ${BK}u + cl`)} = bitcast<i32>(s);
      tmax = max(tmax, s);
    }
    sxf[xs + lane] = tmax;
    workgroupBarrier();
    tmax = max(tmax, sxf[xs + (lane ^ 1u)]);
    let mNew = max(m, tmax);
    // exp(NEG - x) = 0 before the first allowed key; a tile without one leaves alpha = 1.
    // sage_exp (the portable kernel's, within 1 ulp): P~'s codes agree with the TS kernel's
    // (Math.exp) as often as the portable kernel's do.
    let alpha = sage_exp(m - mNew);
    m = mNew;
    var ps = 0.0;
    var cs = 0i;
    for (var w = 0u; w < ${HALF / 4}u; w++) {
      var word = 0u;
      for (var t = 0u; t < 4u; t++) {
        let cl = hh * ${HALF}u + w * 4u + t;
        let s = bitcast<f32>(${el('ss', 'ssB', `rr * ${BK}u + cl`)});
        var p = 0.0;
        if (s > NEG) { p = sage_exp(s - mNew); }
        // ARITHMETIC.md: pCode = rint(f32(p * 255)); WGSL's round() is half to even.
        let code = u32(round(p * 255.0));
        ps += p;
        cs += i32(code);
        word |= code << (8u * t);
      }
      ${el('pc', 'pcB', `rr * ${BK / 4}u + hh * ${HALF / 4}u + w`)} = word;
    }
    l = l * alpha + ps;
    sxu[xs + lane] = cs;
    workgroupBarrier();
    let csum = cs + sxu[xs + (lane ^ 1u)];
    ${rep(NCH, (ch) => `${products(ch)}\n    workgroupBarrier();\n    ${fold(ch)}\n    workgroupBarrier();`, '\n    ')}
  }
  sxf[xs + lane] = l;
  workgroupBarrier();
  let lt = l + sxf[xs + (lane ^ 1u)];
  let inv = select(1.0 / lt, 0.0, lt == 0.0);
  if (live) {
    let oB = ((b * P.hq + h) * nq + i) * ${DV}u;
    ${rep(
      NCH,
      (ch) =>
        rep(
          16,
          (t) => `o[oB + ${ch * CHUNK}u + hh * 16u + ${t}u] = acc[${ch * 16 + t}] * inv;`,
          '\n    ',
        ),
      '\n    ',
    )}
    if (hh == 0u) {
      lse[(b * P.hq + h) * nq + i] = select(m + log(lt), bitcast<f32>(0xff800000u | (P.nq & 0u)), lt == 0.0);
    }
  }
}
`;
  return { code, bindings };
}

/** The codec's device buffers the kernel reads (ARITHMETIC.md layouts; codes packed 4 per word). */
export interface SageTcBuffers {
  qCodes: GPUBuffer;
  qScale: GPUBuffer;
  kCodes: GPUBuffer;
  kScale: GPUBuffer;
  vCodes: GPUBuffer;
  vScale: GPUBuffer;
  bias?: GPUBuffer | undefined;
}

const PROGRAMS = new Map<string, WgslKernel>();

/**
 * Runs the tensor-core kernel over a codec already on the device: o f32 [B, Hq, Nq, Dv] and
 * lse f32 [B, Hq, Nq] in new buffers (the caller owns them). The window follows KERNELS.md
 * "Common" (causal = [-1, 0], bottom-right).
 */
export async function sageTcForward(
  ctx: WebGpuContext,
  buffers: SageTcBuffers,
  dims: SageDims,
  granularity: SageGranularity,
  opts: Pick<SageKernelOptions, 'scale' | 'causal' | 'window'>,
  tile: Partial<Pick<SageTcConfig, 'subgroups' | 'units' | 'constOffsets' | 'emulate'>> = {},
  profiler?: GpuProfiler,
): Promise<{ o: GPUBuffer; lse: GPUBuffer }> {
  const c: SageTcConfig = {
    d: dims.d,
    dv: dims.dv,
    granularity,
    subgroups: tile.subgroups ?? 4,
    bias: buffers.bias !== undefined,
    units: tile.units ?? 'elems',
    // On unless the caller says false: 13.2 -> 14.2 TOPS at (4, 32, 4096, 128) on the H200,
    // exact against the TS spec there (2026-12-04, BENCHMARKS.md "WebGPU tensor cores,
    // session 18"); off leaves the config (the program cache's key) as before.
    ...((tile.constOffsets ?? true) ? { constOffsets: true } : {}),
    emulate: tile.emulate ?? false,
  };
  check(c);
  const bytes = sageTcWorkgroupBytes(c);
  if (bytes > ctx.limits.maxComputeWorkgroupStorageSize)
    throw new ValueError(
      `subgroups: expected a tile within the device's ${ctx.limits.maxComputeWorkgroupStorageSize} bytes of workgroup memory, got ${c.subgroups} subgroups needing ${bytes}`,
      'subgroups',
    );
  const key = JSON.stringify(c);
  let kernel = PROGRAMS.get(key);
  if (!kernel) PROGRAMS.set(key, (kernel = sageTcShader(c)));
  const program = await ctx.pipelines.get({
    code: kernel.code,
    bindings: bindingKinds(kernel.bindings),
    label: 'sage forward (int8 tensor cores)',
    config: c,
  });
  const g = sageGroupCounts(dims.nq, dims.nk, granularity);
  let [left, right] = opts.window ?? [-1, -1];
  if (opts.causal) right = right < 0 ? 0 : Math.min(right, 0);
  const uniform = ctx.createUniform(
    new Uint8Array(
      packUniform(SAGE_TC_UNIFORMS, {
        hq: dims.hq,
        hkv: dims.hkv,
        group: dims.hq / dims.hkv,
        nq: dims.nq,
        nk: dims.nk,
        nQG: g.nQG,
        nKG: g.nKG,
        nQB: g.nQB,
        left,
        right,
        scale: opts.scale,
      }),
    ),
    'sage tc params',
  );
  const o = ctx.createOutput(Math.max(4, dims.batch * dims.hq * dims.nq * dims.dv * 4), 'sage o');
  const lse = ctx.createOutput(Math.max(4, dims.batch * dims.hq * dims.nq * 4), 'sage lse');
  try {
    if (dims.nq > 0)
      await ctx.dispatch(
        [
          {
            program,
            buffers: bindBuffers(kernel.bindings, {
              P: uniform,
              qc: buffers.qCodes,
              kc: buffers.kCodes,
              vc: buffers.vCodes,
              qsc: buffers.qScale,
              ksc: buffers.kScale,
              vsc: buffers.vScale,
              dsb: buffers.bias,
              o,
              lse,
            }),
            workgroups: [Math.ceil(dims.nq / (16 * c.subgroups)), dims.hq, dims.batch],
            label: 'sage forward (int8 tensor cores)',
          },
        ],
        profiler,
      );
  } catch (e) {
    ctx.pool.release(o);
    ctx.pool.release(lse);
    throw e;
  } finally {
    ctx.pool.release(uniform);
  }
  return { o, lse };
}
