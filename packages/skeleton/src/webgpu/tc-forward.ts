import { ValueError } from '@attnkit/tensor';
import type { WgslBinding } from '@attnkit/webgpu';
import { declareBindings } from '@attnkit/webgpu';
import { paramsStruct } from './params.js';
import type { WgslKernel } from './shaders.js';

/**
 * The tensor-core FlashAttention-2 forward (issue 20 item 2), softmax, f16 q/k/v/o, f32
 * accumulation, on WGSL subgroup matrices (chromium_experimental_subgroup_matrix, f16 x f16 ->
 * f32, 16x16x16). One workgroup per (query tile of BR = 16 * subgroups rows, head, batch), as
 * the SIMT kernel; each subgroup owns 16 query rows against the whole key tile, so the online
 * softmax never crosses subgroups (FA2 Sec. 3.3).
 *
 * Staging: the workgroup's Q block (once, into `qs`) and each K and V tile (BC keys, into `kv`)
 * are copied into workgroup memory with 16-byte loads (rows past the sequence filled with zeros) and shared
 * by the subgroups. A first version read the matrices straight from storage: every K/V matrix
 * then fed one multiply per subgroup (14.9 TFLOP/s on the H200, like the GEMM probe's 1x1
 * 14.3), and a load straddling the end of a buffer was clamped by Tint's robustness to a shifted
 * position (wrong keys at the tails of unpadded tensors). Staging fixes both.
 *
 * Per key tile:
 * 1. S = Q K^T: Q's left matrices from `qs`, K's right matrices from `kv`
 *    (column-major: keys are the columns of K^T). Offsets derive from @builtin(subgroup_id):
 *    subgroup-matrix loads and stores need subgroup-uniform arguments, and Tint does not see
 *    lid / 32 as one (rejected on the H200).
 * 2. S leaves the matrices through per-subgroup scratch (WGSL has no per-element access to
 *    subgroup matrices); two lanes per row scale it to log2 units, mask it (causal / window,
 *    keys past the sequence), take the row max (exchanged through workgroup memory: subgroup
 *    arithmetic is avoided beside subgroup matrices, which crashed NVIDIA's pipeline creation
 *    elsewhere), and write P = 2^(S - m) as f16. V is staged into `kv` meanwhile.
 * 3. Lazy rescaling (FlashAttention-4's trick): a row's max moves only when the tile's max
 *    exceeds it by more than `lazy` (log2 units; 0 = every increase), so P <= 2^lazy (within
 *    f16's range) and O, in result matrices, makes its round trip through scratch (in chunks
 *    of BC columns) only when some row of the workgroup moved: a workgroup-uniform flag. On the
 *    H200 rescaling at every increase ran at 2/3 of the lazy kernel's speed.
 * 4. O += P V with P's left matrices from scratch and V's right matrices from `kv`.
 * Epilogue: O / l (0 for a row with no allowed key), stored as packed f16; LSE = m ln 2 + ln l.
 *
 * Head dims D and Dv are compile-time constants (multiples of 16: the matrices are unrolled per
 * 16 columns into named variables, no arrays of matrices); strides, lengths and the mask are the
 * SIMT kernels' uniforms (params.ts), so the host's buffers and grid serve both.
 */
export interface TcForwardConfig {
  /** Head dims (multiples of 16). */
  d: number;
  dv: number;
  /** Subgroups (of 32 invocations) per workgroup: BR = 16 * subgroups query rows. */
  subgroups: number;
  /** Key matrices per tile: BC = 16 * keyMatrices keys. */
  keyMatrices: number;
  /** Lazy-rescale threshold in log2 units (0: rescale on every increase of a row's max). */
  lazy: number;
  /** Staging converts through unpack2x16float instead of bitcast<vec2<f16>> (an A/B of the two). */
  unpack?: boolean;
  /** Debug: read these operands straight from storage instead of staging them ('q', 'k', 'v'). */
  direct?: string;
  /**
   * Where K and V tiles are staged (default 'parity'): 'parity' alternates two halves of the
   * buffer by tile (K and V of a tile share one half); 'split' keeps K in one half and V in the
   * other; 'single' uses one half for both (wrong on the H200: see the comment in the loop).
   */
  kvLayout?: 'parity' | 'split' | 'single';
}

/** The subgroup size the kernel assumes (NVIDIA's warp; the planner requires it). */
export const TC_SUBGROUP_SIZE = 32;

function rep(n: number, f: (i: number) => string, sep = '\n'): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

function check(c: TcForwardConfig): void {
  for (const [name, v, step] of [
    ['d', c.d, 16],
    ['dv', c.dv, 16],
  ] as const) {
    if (!Number.isInteger(v) || v < step || v % step !== 0)
      throw new ValueError(`${name}: expected a positive multiple of ${step}, got ${v}`, name);
  }
  if (!Number.isInteger(c.subgroups) || c.subgroups < 1 || c.subgroups > 16)
    throw new ValueError(
      `subgroups: expected an integer in [1, 16], got ${c.subgroups}`,
      'subgroups',
    );
  if (!Number.isInteger(c.keyMatrices) || c.keyMatrices < 1 || c.keyMatrices > 8)
    throw new ValueError(
      `keyMatrices: expected an integer in [1, 8], got ${c.keyMatrices}`,
      'keyMatrices',
    );
  if (!(Number.isFinite(c.lazy) && c.lazy >= 0 && c.lazy <= 12))
    throw new ValueError(`lazy: expected a number in [0, 12], got ${c.lazy}`, 'lazy');
}

/** Workgroup memory of the kernel, bytes: Q block, K/V staging, S scratch, P, the row exchange, alphas, flag. */
export function tcForwardWorkgroupBytes(c: TcForwardConfig): number {
  const bc = 16 * c.keyMatrices;
  const halves = c.kvLayout === 'single' ? 1 : 2;
  const stage = halves * bc * Math.max(c.d, c.dv) * 2 + 16 * c.subgroups * c.d * 2;
  return stage + c.subgroups * (16 * bc * 4 + 16 * bc * 2 + TC_SUBGROUP_SIZE * 4 + 16 * 4) + 4;
}

export function tcForwardShader(c: TcForwardConfig): WgslKernel {
  check(c);
  const KD = c.d / 16;
  const KV = c.dv / 16;
  const NC = c.keyMatrices;
  const BC = 16 * NC;
  const BR = 16 * c.subgroups;
  const T = c.subgroups * TC_SUBGROUP_SIZE;
  const HALF = BC / 2;
  const CH = Math.ceil(c.dv / BC); // O round-trip chunks of BC columns
  const STAGE = BC * Math.max(c.d, c.dv);
  const layout = c.kvLayout ?? 'parity';
  // Where this tile's K and V go in kv (see TcForwardConfig.kvLayout).
  const kvBases =
    layout === 'parity'
      ? `let kvK = (ct & 1u) * ${STAGE}u;\n    let kvV = kvK;`
      : layout === 'split'
        ? `let kvK = 0u;\n    let kvV = ${STAGE}u;`
        : `let kvK = 0u;\n    let kvV = 0u;`;
  const dq = c.direct?.includes('q') ?? false;
  const dk = c.direct?.includes('k') ?? false;
  const dv = c.direct?.includes('v') ?? false;
  const L = 'subgroup_matrix_left<f16, 16, 16>';
  const R = 'subgroup_matrix_right<f16, 16, 16>';
  const A = 'subgroup_matrix_result<f32, 16, 16>';
  const bindings: WgslBinding[] = [
    { name: 'P', kind: 'uniform', type: 'Params' },
    { name: 'q', kind: 'read', type: dq ? 'array<f16>' : 'array<vec4<u32>>' },
    { name: 'k', kind: 'read', type: dk ? 'array<f16>' : 'array<vec4<u32>>' },
    { name: 'v', kind: 'read', type: dv ? 'array<f16>' : 'array<vec4<u32>>' },
    { name: 'aux', kind: 'read', type: 'array<u32>' },
    { name: 'o', kind: 'storage', type: 'array<vec4<u32>>' },
    { name: 'lse', kind: 'storage', type: 'array<f32>' },
  ];
  const moved = c.lazy > 0 ? `tmax > m + ${c.lazy.toFixed(1)}` : 'tmax > m';
  // Copies `rows` rows of width W (halves) from `src` (base in halves, row stride in halves)
  // into kv (row-major, stride W), rows at or past `limit` as zeros; 8 halves per load.
  const stage = (
    src: string,
    base: string,
    stride: string,
    first: string,
    rows: number,
    limit: string,
    W: number,
    dst = 'kv',
    at = '',
  ) => `
    for (var e = lid; e < ${(rows * W) / 8}u; e += ${T}u) {
      let r = e / ${W / 8}u;
      let c8 = e % ${W / 8}u;
      var w = vec4<u32>(0u);
      if (${first} + r < ${limit}) { w = ${src}[(${base} + (${first} + r) * ${stride}) / 8u + c8]; }
      let d = r * ${W}u + c8 * 8u;
      ${[0, 1, 2, 3]
        .map(
          (
            i,
          ) => `let h${i} = ${c.unpack ? `vec2<f16>(unpack2x16float(w[${i}]))` : `bitcast<vec2<f16>>(w[${i}])`};
      ${dst}[${at}d + ${2 * i}u] = h${i}.x;
      ${dst}[${at}d + ${2 * i + 1}u] = h${i}.y;`,
        )
        .join('\n      ')}
    }`;
  const code = `enable f16;
enable chromium_experimental_subgroup_matrix;
${paramsStruct()}
const BC = ${BC}u;
const NEG = -3.0e38;
const M0 = -1.0e38;
const LN2 = 0.6931471805599453;
var<workgroup> kv: array<f16, ${layout === 'single' ? STAGE : 2 * STAGE}>;
var<workgroup> qs: array<f16, ${BR * c.d}>;
var<workgroup> sc: array<f32, ${c.subgroups * 16 * BC}>;
var<workgroup> sp: array<f16, ${c.subgroups * 16 * BC}>;
var<workgroup> sx: array<f32, ${c.subgroups * TC_SUBGROUP_SIZE}>;
var<workgroup> salpha: array<f32, ${c.subgroups * 16}>;
var<workgroup> sflag: u32;
${declareBindings(bindings)}
fn key_lo(r: i32, off: i32, ncols: i32) -> i32 { if (P.left < 0) { return 0; } return max(r + off - P.left, 0); }
fn key_hi(r: i32, off: i32, ncols: i32) -> i32 { if (P.right < 0) { return ncols; } return clamp(r + off + P.right + 1, 0, ncols); }

@compute @workgroup_size(${T})
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_id) sg: u32,
  @builtin(subgroup_invocation_id) lane: u32,
) {
  let b = wg.z;
  let startQ = aux[4u * b];
  let startK = aux[4u * b + 1u];
  let nq = aux[4u * b + 2u];
  let nk = aux[4u * b + 3u];
  let off = i32(nk) - i32(nq);
  let h = wg.y;
  let r0 = wg.x * ${BR}u;
  if (r0 >= nq) { return; }
  let hk = h / P.group;
  let rr = lane / 2u;
  let hh = lane % 2u;
  let qB = b * P.qBatch + h * P.qHead + startQ * P.qRow;
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  let oB = b * P.oBatch + h * P.oHead + startQ * P.oRow;
  let scB = sg * ${16 * BC}u;
  let row = i32(r0 + sg * 16u + rr);
  let ncols = i32(nk);
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + ${BR}u, nq)) - 1;
  let rowLo = key_lo(row, off, ncols);
  let rowHi = key_hi(row, off, ncols);
  // Q's block into its own region qs (rows past the sequence as zeros); the loop reloads its
  // matrices per tile rather than holding 2 D / 16 of them in registers across the loop.
  ${dq ? '' : stage('q', 'qB', 'P.qRow', 'r0', BR, 'nq', c.d, 'qs')}
  ${rep(KV, (j) => `var o${j} = ${A}();`, '\n  ')}
  var m = M0;
  var l = 0.0;
  let loFirst = key_lo(rFirst, off, ncols);
  let hiLast = max(key_hi(rLast, off, ncols), 0);
  for (var ct = u32(loFirst) / BC; ct < (u32(hiLast) + BC - 1u) / BC; ct++) {
    let c0 = ct * BC;
    // K and V tiles by kvLayout (default: alternating halves by tile). With one constant-address
    // buffer ('single') the H200 computed wrong scores while Q, staged once in its own buffer,
    // was read correctly: read as NVIDIA's compiler hoisting the loop-invariant matrix loads
    // past the barriers. 'parity' makes the addresses vary per tile; 'split' tests the other
    // reading (V overwriting K). Neither has run on the device yet.
    ${kvBases}
    workgroupBarrier();
    if (lid == 0u) { sflag = 0u; }
    ${dk ? '' : stage('k', 'kB', 'P.kRow', 'c0', BC, 'nk', c.d, 'kv', 'kvK + ')}
    workgroupBarrier();
    ${rep(NC, (n) => `var s${n} = ${A}();`, '\n    ')}
    ${rep(
      KD,
      (i) => `{
      let qa = subgroupMatrixLoad<${L}>(${dq ? `&q, qB + (r0 + sg * 16u) * P.qRow + ${16 * i}u, false, P.qRow` : `&qs, sg * ${16 * c.d}u + ${16 * i}u, false, ${c.d}u`});
      ${rep(NC, (n) => `s${n} = subgroupMatrixMultiplyAccumulate(qa, subgroupMatrixLoad<${R}>(${dk ? `&k, kB + (c0 + ${16 * n}u) * P.kRow + ${16 * i}u, true, P.kRow` : `&kv, kvK + ${16 * n * c.d + 16 * i}u, true, ${c.d}u`}), s${n});`, '\n      ')}
    }`,
      '\n    ',
    )}
    ${rep(NC, (n) => `subgroupMatrixStore(&sc, scB + ${16 * n}u, s${n}, false, BC);`, '\n    ')}
    workgroupBarrier();
    ${dv ? '' : stage('v', 'vB', 'P.vRow', 'c0', BC, 'nk', c.dv, 'kv', 'kvV + ')}
    var tmax = NEG;
    for (var c = 0u; c < ${HALF}u; c++) {
      let col = hh * ${HALF}u + c;
      let j = i32(c0 + col);
      let e = scB + rr * BC + col;
      let x = select(NEG, sc[e] * P.scaleLog2, j >= rowLo && j < rowHi);
      sc[e] = x;
      tmax = max(tmax, x);
    }
    sx[sg * ${TC_SUBGROUP_SIZE}u + lane] = tmax;
    workgroupBarrier();
    tmax = max(tmax, sx[sg * ${TC_SUBGROUP_SIZE}u + (lane ^ 1u)]);
    var mn = m;
    if (${moved}) { mn = tmax; }
    let alpha = exp2(m - mn);
    m = mn;
    var ps = 0.0;
    for (var c = 0u; c < ${HALF}u; c++) {
      let col = hh * ${HALF}u + c;
      let p = exp2(sc[scB + rr * BC + col] - mn);
      sp[scB + rr * BC + col] = f16(p);
      ps += p;
    }
    l = l * alpha + ps;
    if (hh == 0u) { salpha[sg * 16u + rr] = alpha; }
    if (alpha != 1.0) { sflag = 1u; }
    if (workgroupUniformLoad(&sflag) != 0u) {
      ${rep(
        CH,
        (ch) => {
          const js = Array.from({ length: KV }, (_, j) => j).filter(
            (j) => Math.floor((16 * j) / BC) === ch,
          );
          return `${js.map((j) => `subgroupMatrixStore(&sc, scB + ${16 * j - ch * BC}u, o${j}, false, BC);`).join('\n      ')}
      workgroupBarrier();
      for (var c = 0u; c < ${HALF}u; c++) {
        let e = scB + rr * BC + hh * ${HALF}u + c;
        sc[e] = sc[e] * salpha[sg * 16u + rr];
      }
      workgroupBarrier();
      ${js.map((j) => `o${j} = subgroupMatrixLoad<${A}>(&sc, scB + ${16 * j - ch * BC}u, false, BC);`).join('\n      ')}`;
        },
        '\n      workgroupBarrier();\n      ',
      )}
    }
    ${rep(
      NC,
      (n) => `{
      let pa = subgroupMatrixLoad<${L}>(&sp, scB + ${16 * n}u, false, BC);
      ${rep(KV, (j) => `o${j} = subgroupMatrixMultiplyAccumulate(pa, subgroupMatrixLoad<${R}>(${dv ? `&v, vB + (c0 + ${16 * n}u) * P.vRow + ${16 * j}u, false, P.vRow` : `&kv, kvV + ${16 * n * c.dv + 16 * j}u, false, ${c.dv}u`}), o${j});`, '\n      ')}
    }`,
      '\n    ',
    )}
  }
  // Both lanes of a row hold partial sums of l: add the partner's; O leaves through scratch in
  // chunks of BC columns, each lane writing 8 halves at a time.
  workgroupBarrier();
  sx[sg * ${TC_SUBGROUP_SIZE}u + lane] = l;
  workgroupBarrier();
  l = l + sx[sg * ${TC_SUBGROUP_SIZE}u + (lane ^ 1u)];
  let inv = select(1.0 / l, 0.0, l == 0.0);
  ${rep(
    CH,
    (ch) => {
      const js = Array.from({ length: KV }, (_, j) => j).filter(
        (j) => Math.floor((16 * j) / BC) === ch,
      );
      const width = Math.min(BC, c.dv - ch * BC);
      return `${js.map((j) => `subgroupMatrixStore(&sc, scB + ${16 * j - ch * BC}u, o${j}, false, BC);`).join('\n  ')}
  workgroupBarrier();
  if (u32(row) < nq) {
    for (var c8 = hh; c8 < ${width / 8}u; c8 += 2u) {
      let e = scB + rr * BC + c8 * 8u;
      let x = array<f32, 8>(${[0, 1, 2, 3, 4, 5, 6, 7].map((t) => `sc[e + ${t}u] * inv`).join(', ')});
      o[(oB + u32(row) * P.oRow + ${ch * BC}u) / 8u + c8] = vec4<u32>(pack2x16float(vec2<f32>(x[0], x[1])), pack2x16float(vec2<f32>(x[2], x[3])), pack2x16float(vec2<f32>(x[4], x[5])), pack2x16float(vec2<f32>(x[6], x[7])));
    }
  }
  workgroupBarrier();`;
    },
    '\n  ',
  )}
  if (u32(row) < nq && hh == 0u) {
    let lB = b * P.lBatch + h * P.lHead + startQ;
    lse[lB + u32(row)] = select(bitcast<f32>(bitcast<u32>(m * LN2) ^ (P.negInf ^ 0xff800000u)) + log(l), bitcast<f32>(P.negInf), l == 0.0);
  }
}
`;
  return { code, bindings };
}
