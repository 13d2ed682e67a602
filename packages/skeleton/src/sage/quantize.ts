import { describe, ShapeError } from '@attnkit/tensor';
import {
  checkSageConfig,
  checkSageFinite,
  kGroupOf,
  qGroupOf,
  rint,
  SAGE_Q_BLOCK,
  type SageCodecCpu,
  type SageDims,
  type SageQuantConfig,
  sageCodecOf,
  sageGroupCounts,
} from './codec.js';

/**
 * SageAttention2's pre-pass in TypeScript: the specification of ARITHMETIC.md "Pre-pass"
 * (native.ts and webgpu.ts produce the same codes). Inputs BHND f32, contiguous. Per (b, kv
 * head): smooth K, K codes (qmax 127 if any query head of the group uses 8 bits, else 7), V
 * codes per channel (pvBits 8); then per query head of the group: smooth Q per 128-row block,
 * the bias qm . Ks, Q codes. Rounding: sums in binary64 rounded once (Math.fround), quotients
 * x / s in binary64, codes rint (half to even) then clamped.
 * With pvBits 32 the codec's `v` is `v` itself (not copied; kernels only read it).
 */
export function quantizeSageTs(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dims: SageDims,
  config: SageQuantConfig,
): SageCodecCpu {
  checkSageConfig(dims, config);
  const { batch, hq, hkv, nq, nk, d, dv } = dims;
  const g = config.granularity;
  const checkLen = (a: Float32Array, n: number, name: string) => {
    if (!(a instanceof Float32Array) || a.length !== n)
      throw new ShapeError(
        `${name}: expected a Float32Array of ${n} elements (BHND ${name === 'q' ? 'B Hq Nq D' : name === 'k' ? 'B Hkv Nk D' : 'B Hkv Nk Dv'}), got ${describe(a)}`,
        name,
      );
  };
  checkLen(q, batch * hq * nq * d, 'q');
  checkLen(k, batch * hkv * nk * d, 'k');
  checkLen(v, batch * hkv * nk * dv, 'v');
  checkSageFinite(q, 'q');
  checkSageFinite(k, 'k');
  checkSageFinite(v, 'v');
  const { nQG, nKG, nQB } = sageGroupCounts(nq, nk, g);
  const group = hq / hkv;
  const qCodes = new Int8Array(q.length);
  const qScale = new Float32Array(batch * hq * nQG);
  const kCodes = new Int8Array(k.length);
  const kScale = new Float32Array(batch * hkv * nKG);
  const pv8 = config.pvBits === 8;
  const vCodes = pv8 ? new Int8Array(v.length) : undefined;
  const vScale = pv8 ? new Float32Array(batch * hkv * dv) : undefined;
  const bias = config.smoothQ ? new Float32Array(batch * hq * nQB * nk) : undefined;
  // Scratch: smoothed K of one (b, kv head) (read again by its query heads' bias), smoothed Q
  // of one (b, head), means, group maxima.
  const ks = new Float32Array(nk * d);
  const qs = new Float32Array(nq * d);
  const mean = new Float64Array(Math.max(d, dv));
  const qm = new Float32Array(nQB * d);
  const amax = new Float32Array(Math.max(nQG, nKG));

  for (let b = 0; b < batch; b++) {
    for (let hk = 0; hk < hkv; hk++) {
      const kb = (b * hkv + hk) * nk * d;
      // 1. Smooth K: Ks = f32(K - f32(mean over the keys)).
      if (config.smoothK && nk > 0) {
        mean.fill(0, 0, d);
        for (let j = 0; j < nk; j++)
          for (let c = 0; c < d; c++) mean[c] = mean[c]! + k[kb + j * d + c]!;
        for (let c = 0; c < d; c++) mean[c] = Math.fround(mean[c]! / nk);
        for (let j = 0; j < nk; j++)
          for (let c = 0; c < d; c++) ks[j * d + c] = k[kb + j * d + c]! - mean[c]!;
      } else {
        ks.set(k.subarray(kb, kb + nk * d));
      }
      // 3. K codes: qmax 127 when any query head of the group uses 8 bits.
      let kBits = 4;
      for (let h = hk * group; h < (hk + 1) * group; h++) kBits = Math.max(kBits, config.qBits[h]!);
      quantizeGroups(ks, nk, d, nKG, (j) => kGroupOf(j, g), qmaxOf(kBits), amax, kCodes, kb);
      kScale.set(amax.subarray(0, nKG), (b * hkv + hk) * nKG);
      // 4. V per channel over all keys (pvBits 8).
      if (vCodes && vScale) {
        const vb = (b * hkv + hk) * nk * dv;
        const so = (b * hkv + hk) * dv;
        for (let c = 0; c < dv; c++) {
          let m = 0;
          for (let j = 0; j < nk; j++) m = Math.max(m, Math.abs(v[vb + j * dv + c]!));
          const sV = Math.fround(m / 127);
          for (let j = 0; j < nk; j++) {
            const e = vb + j * dv + c;
            vCodes[e] = sV === 0 ? 0 : clamp(rint(v[e]! / sV), 127);
          }
          vScale[so + c] = Math.fround(sV / 255);
        }
      }
      for (let h = hk * group; h < (hk + 1) * group; h++) {
        const qb = (b * hq + h) * nq * d;
        if (config.smoothQ) {
          // 2. Smooth Q per 128-row block a; the bias dS[a, j] = f32(sum64_c qm[a, c] Ks[j, c]).
          for (let a = 0; a < nQB; a++) {
            const i0 = a * SAGE_Q_BLOCK;
            const i1 = Math.min(i0 + SAGE_Q_BLOCK, nq);
            mean.fill(0, 0, d);
            for (let i = i0; i < i1; i++)
              for (let c = 0; c < d; c++) mean[c] = mean[c]! + q[qb + i * d + c]!;
            for (let c = 0; c < d; c++) qm[a * d + c] = mean[c]! / (i1 - i0);
            for (let i = i0; i < i1; i++)
              for (let c = 0; c < d; c++) qs[i * d + c] = q[qb + i * d + c]! - qm[a * d + c]!;
            const bo = ((b * hq + h) * nQB + a) * nk;
            for (let j = 0; j < nk; j++) {
              let t = 0;
              for (let c = 0; c < d; c++) t += qm[a * d + c]! * ks[j * d + c]!;
              bias![bo + j] = t;
            }
          }
        } else {
          qs.set(q.subarray(qb, qb + nq * d));
        }
        const bits = config.qBits[h]!;
        quantizeGroups(qs, nq, d, nQG, (i) => qGroupOf(i, g), qmaxOf(bits), amax, qCodes, qb);
        qScale.set(amax.subarray(0, nQG), (b * hq + h) * nQG);
      }
    }
  }
  return sageCodecOf(dims, g, config.pvBits, {
    qCodes,
    qScale,
    kCodes,
    kScale,
    vCodes,
    vScale,
    v,
    bias,
  });
}

function qmaxOf(bits: number): number {
  return bits === 8 ? 127 : 7;
}

function clamp(x: number, qmax: number): number {
  return Math.min(qmax, Math.max(-qmax, x));
}

/**
 * Symmetric codes of `rows` rows (width d) of x, grouped by groupOf: per group
 * s = f32(max |x| / qmax) (0 when the group is empty or all zero), code = clamp(rint(x / s))
 * with x / s in binary64 (0 when s = 0). Codes to out[base ..]; the scales left in
 * scale[0, nGroups).
 */
function quantizeGroups(
  x: Float32Array,
  rows: number,
  d: number,
  nGroups: number,
  groupOf: (row: number) => number,
  qmax: number,
  scale: Float32Array,
  out: Int8Array,
  base: number,
): void {
  scale.fill(0, 0, nGroups);
  for (let r = 0; r < rows; r++) {
    const G = groupOf(r);
    let m = scale[G]!;
    for (let c = 0; c < d; c++) m = Math.max(m, Math.abs(x[r * d + c]!));
    scale[G] = m;
  }
  for (let G = 0; G < nGroups; G++) scale[G] = Math.fround(scale[G]! / qmax);
  for (let r = 0; r < rows; r++) {
    const s = scale[groupOf(r)]!;
    const o = base + r * d;
    if (s === 0) {
      out.fill(0, o, o + d);
      continue;
    }
    for (let c = 0; c < d; c++) out[o + c] = clamp(rint(x[r * d + c]! / s), qmax);
  }
}

/**
 * The LSE of the original scores from a kernel's LSE of K-smoothed ones (ARITHMETIC.md "LSE"):
 * smoothK shifts row i's scores by -scale q_i . km (km: K's per-channel mean over the keys,
 * constant along the row, so O is unchanged), so lse_i += scale q_i . km. km as the pre-pass's
 * (f32 of the binary64 mean), the dot in binary64, scale as the kernels' (f32), one rounding to
 * f32; rows with lse = -Infinity (no key) stay. q, k: the pre-pass's BHND f32 inputs; lse
 * [B, Hq, Nq], updated in place. Every backend whose kernel saw smoothed K applies this (or
 * an equal computation) after the kernel.
 */
export function sageLseShiftTs(
  lse: Float32Array,
  q: Float32Array,
  k: Float32Array,
  dims: SageDims,
  scale: number,
): void {
  const { batch, hq, hkv, nq, nk, d } = dims;
  if (nk === 0) return;
  const sc = Math.fround(scale);
  const km = new Float64Array(d);
  const group = hq / hkv;
  for (let b = 0; b < batch; b++)
    for (let hk = 0; hk < hkv; hk++) {
      km.fill(0);
      const kb = (b * hkv + hk) * nk * d;
      for (let j = 0; j < nk; j++) for (let c = 0; c < d; c++) km[c] = km[c]! + k[kb + j * d + c]!;
      for (let c = 0; c < d; c++) km[c] = Math.fround(km[c]! / nk);
      for (let h = hk * group; h < (hk + 1) * group; h++)
        for (let i = 0; i < nq; i++) {
          const e = (b * hq + h) * nq + i;
          if (lse[e] === Number.NEGATIVE_INFINITY) continue;
          let t = 0;
          for (let c = 0; c < d; c++) t += q[e * d + c]! * km[c]!;
          lse[e] = lse[e]! + sc * t;
        }
    }
}
