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
 * Per key tile of BC = 16 * keyMatrices keys:
 * 1. S = Q K^T: Q's D/16 left matrices are loaded once (registers); K is read straight from
 *    storage as right matrices (column-major: key rows are the columns of K^T). The H200 probes
 *    (../shared/gpu/README.md section 2) ran direct storage loads fastest (55 TFLOP/s GEMM) and
 *    naive workgroup staging 4-5x slower, so nothing is staged.
 * 2. S leaves the matrices through per-subgroup workgroup scratch (WGSL has no per-element access
 *    to subgroup matrices); two lanes per row scale it to log2 units, mask it (causal / window,
 *    keys past the sequence), take the row max (exchanged through workgroup memory: subgroup
 *    arithmetic is avoided beside subgroup matrices, which crashed NVIDIA's pipeline creation
 *    elsewhere), and write P = 2^(S - m) as f16 for the next multiply.
 * 3. Lazy rescaling (FlashAttention-4's trick): a row's max moves only when the tile's max
 *    exceeds it by more than `lazy` (log2 units; 0 = every increase), so P <= 2^lazy (exact in
 *    f16's range) and O, in result matrices, needs its round trip through scratch for the
 *    rescale only when some row of the workgroup moved — a workgroup-uniform flag. The final
 *    O / l and LSE use the kept max, so the result is the same softmax.
 * 4. O += P V with P's left matrices from scratch and V's right matrices from storage.
 * Epilogue: O / l (0 for a row with no allowed key), stored as f16; LSE = m ln 2 + ln l.
 *
 * Head dims D and Dv are compile-time constants (multiples of 16: the matrices are unrolled per
 * 16 columns, named variables, no arrays of matrices); the rest (strides, lengths, mask) are the
 * SIMT kernels' uniforms (params.ts), so the host's buffers and grid serve both. Rows and keys
 * past a sequence's end are read (the loads are clamped to the buffer, not to the sequence) and
 * masked: their scores get NEG, their P is exactly 0.
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

/** Workgroup memory of the kernel, bytes (S / O scratch f32, P f16, the row exchange, the flag). */
export function tcForwardWorkgroupBytes(c: TcForwardConfig): number {
  const bc = 16 * c.keyMatrices;
  const sw = Math.max(bc, c.dv);
  return c.subgroups * (16 * sw * 4 + 16 * bc * 2 + TC_SUBGROUP_SIZE * 4) + 16 * c.subgroups * 4 + 4;
}

export function tcForwardShader(c: TcForwardConfig): WgslKernel {
  check(c);
  const KD = c.d / 16;
  const KV = c.dv / 16;
  const NC = c.keyMatrices;
  const BC = 16 * NC;
  const SW = Math.max(BC, c.dv);
  const HALF = BC / 2;
  const DVH = c.dv / 2;
  const L = 'subgroup_matrix_left<f16, 16, 16>';
  const R = 'subgroup_matrix_right<f16, 16, 16>';
  const A = 'subgroup_matrix_result<f32, 16, 16>';
  const bindings: WgslBinding[] = [
    { name: 'P', kind: 'uniform', type: 'Params' },
    { name: 'q', kind: 'read', type: 'array<f16>' },
    { name: 'k', kind: 'read', type: 'array<f16>' },
    { name: 'v', kind: 'read', type: 'array<f16>' },
    { name: 'aux', kind: 'read', type: 'array<u32>' },
    { name: 'o', kind: 'storage', type: 'array<f16>' },
    { name: 'lse', kind: 'storage', type: 'array<f32>' },
  ];
  const moved = c.lazy > 0 ? `tmax > m + ${c.lazy.toFixed(1)}` : 'tmax > m';
  const code = `enable f16;
enable chromium_experimental_subgroup_matrix;
${paramsStruct()}
const SG = ${c.subgroups}u;
const BR = ${16 * c.subgroups}u;
const BC = ${BC}u;
const SW = ${SW}u;
const NEG = -3.0e38;
const M0 = -1.0e38;
const LN2 = 0.6931471805599453;
var<workgroup> sc: array<f32, ${c.subgroups * 16 * SW}>;
var<workgroup> sp: array<f16, ${c.subgroups * 16 * BC}>;
var<workgroup> sx: array<f32, ${c.subgroups * TC_SUBGROUP_SIZE}>;
var<workgroup> salpha: array<f32, ${c.subgroups * 16}>;
var<workgroup> sflag: u32;
${declareBindings(bindings)}
fn key_lo(r: i32, off: i32, ncols: i32) -> i32 { if (P.left < 0) { return 0; } return max(r + off - P.left, 0); }
fn key_hi(r: i32, off: i32, ncols: i32) -> i32 { if (P.right < 0) { return ncols; } return clamp(r + off + P.right + 1, 0, ncols); }

@compute @workgroup_size(${c.subgroups * TC_SUBGROUP_SIZE})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wg.z;
  let startQ = aux[4u * b];
  let startK = aux[4u * b + 1u];
  let nq = aux[4u * b + 2u];
  let nk = aux[4u * b + 3u];
  let off = i32(nk) - i32(nq);
  let h = wg.y;
  let r0 = wg.x * BR;
  if (r0 >= nq) { return; }
  let hk = h / P.group;
  let sg = lid / ${TC_SUBGROUP_SIZE}u;
  let lane = lid % ${TC_SUBGROUP_SIZE}u;
  let rr = lane / 2u;
  let hh = lane % 2u;
  let qB = b * P.qBatch + h * P.qHead + startQ * P.qRow;
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  let oB = b * P.oBatch + h * P.oHead + startQ * P.oRow;
  let rs = r0 + sg * 16u;
  let scB = sg * 16u * SW;
  let spB = sg * 16u * BC;
  let row = i32(rs + rr);
  let ncols = i32(nk);
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + BR, nq)) - 1;
  let rowLo = key_lo(row, off, ncols);
  let rowHi = key_hi(row, off, ncols);
  ${rep(KD, (i) => `let qa${i} = subgroupMatrixLoad<${L}>(&q, qB + rs * P.qRow + ${16 * i}u, false, P.qRow);`, '\n  ')}
  ${rep(KV, (j) => `var o${j} = ${A}();`, '\n  ')}
  var m = M0;
  var l = 0.0;
  let loFirst = key_lo(rFirst, off, ncols);
  let hiLast = max(key_hi(rLast, off, ncols), 0);
  for (var ct = u32(loFirst) / BC; ct < (u32(hiLast) + BC - 1u) / BC; ct++) {
    let c0 = ct * BC;
    ${rep(NC, (n) => `var s${n} = ${A}();`, '\n    ')}
    ${rep(KD, (i) => rep(NC, (n) => `s${n} = subgroupMatrixMultiplyAccumulate(qa${i}, subgroupMatrixLoad<${R}>(&k, kB + (c0 + ${16 * n}u) * P.kRow + ${16 * i}u, true, P.kRow), s${n});`, '\n    '), '\n    ')}
    workgroupBarrier();
    if (lid == 0u) { sflag = 0u; }
    ${rep(NC, (n) => `subgroupMatrixStore(&sc, scB + ${16 * n}u, s${n}, false, SW);`, '\n    ')}
    workgroupBarrier();
    var tmax = NEG;
    for (var c = 0u; c < ${HALF}u; c++) {
      let col = hh * ${HALF}u + c;
      let j = i32(c0 + col);
      let e = scB + rr * SW + col;
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
      let p = exp2(sc[scB + rr * SW + col] - mn);
      sp[spB + rr * BC + col] = f16(p);
      ps += p;
    }
    l = l * alpha + ps;
    if (hh == 0u) { salpha[sg * 16u + rr] = alpha; }
    if (alpha != 1.0) { sflag = 1u; }
    if (workgroupUniformLoad(&sflag) != 0u) {
      ${rep(KV, (j) => `subgroupMatrixStore(&sc, scB + ${16 * j}u, o${j}, false, SW);`, '\n      ')}
      workgroupBarrier();
      for (var c = 0u; c < ${DVH}u; c++) {
        let e = scB + rr * SW + hh * ${DVH}u + c;
        sc[e] = sc[e] * salpha[sg * 16u + rr];
      }
      workgroupBarrier();
      ${rep(KV, (j) => `o${j} = subgroupMatrixLoad<${A}>(&sc, scB + ${16 * j}u, false, SW);`, '\n      ')}
    }
    ${rep(NC, (n) => `{
      let pa = subgroupMatrixLoad<${L}>(&sp, spB + ${16 * n}u, false, BC);
      ${rep(KV, (j) => `o${j} = subgroupMatrixMultiplyAccumulate(pa, subgroupMatrixLoad<${R}>(&v, vB + (c0 + ${16 * n}u) * P.vRow + ${16 * j}u, false, P.vRow), o${j});`, '\n      ')}
    }`, '\n    ')}
  }
  // Both lanes of a row hold partial sums of l: add the partner's.
  workgroupBarrier();
  sx[sg * ${TC_SUBGROUP_SIZE}u + lane] = l;
  ${rep(KV, (j) => `subgroupMatrixStore(&sc, scB + ${16 * j}u, o${j}, false, SW);`, '\n  ')}
  workgroupBarrier();
  l = l + sx[sg * ${TC_SUBGROUP_SIZE}u + (lane ^ 1u)];
  let inv = select(1.0 / l, 0.0, l == 0.0);
  if (u32(row) < nq) {
    for (var c = 0u; c < ${DVH}u; c++) {
      let col = hh * ${DVH}u + c;
      o[oB + u32(row) * P.oRow + col] = f16(sc[scB + rr * SW + col] * inv);
    }
    if (hh == 0u) {
      let lB = b * P.lBatch + h * P.lHead + startQ;
      lse[lB + u32(row)] = select(bitcast<f32>(bitcast<u32>(m * LN2) ^ (P.negInf ^ 0xff800000u)) + log(l), bitcast<f32>(P.negInf), l == 0.0);
    }
  }
}
`;
  return { code, bindings };
}
