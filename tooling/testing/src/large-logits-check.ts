import {
  type AttentionOptions,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';

/**
 * The backward at large logits (issue 9 item 2): q scaled so that max |scale q.k| over the
 * allowed pairs is `maxLogit`, swept over 1e1..1e6 on every backend against float64.
 *
 * What f32 can reach there: a score s is stored with a relative error of 2^-24 (and LSE too,
 * an f32 output), so P = e^(s - LSE) carries an error of about |s| 2^-24 whatever the kernel
 * does; 440 gives 2.6e-5, above KERNELS.md's 1e-5. The gradients are held to
 * `largeLogitTolerance` (that bound with a factor 4 for the score's accumulation, at least
 * 1e-5, at most 5e-3) relative to the reference, plus an absolute allowance of 2^-20 times the
 * size a gradient has when P is spread out (`gradientFloors`): at 1e5 and beyond rows are
 * one-hot, the reference dq and dk are ~0 (1e-40), and what is left is the f32 rounding of
 * dP - D in dS = P (dP - D), times |q| or |k|, which are huge there. Where rows are one-hot
 * (maxLogit >= 1e5), P of the row's max must come back as exactly 1: the backward recomputes S
 * as its forward did, so dv = P^T dO is exact to f32 rounding (1e-6).
 */
export const LARGE_LOGITS = [1e1, 1e2, 4.4e2, 1e3, 1e4, 1e5, 1e6] as const;

export function largeLogitTolerance(maxLogit: number): number {
  return Math.min(Math.max(1e-5, 4 * maxLogit * 2 ** -24), 5e-3);
}

export interface LargeLogitCase {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  dO: Tensor;
  options: AttentionOptions;
  maxLogit: number;
}

/** Seeded [1, hq, nq, d] q, [1, hkv, nk, d] k / v, dO, with q scaled to max |logit| = maxLogit. */
export function largeLogitCase(
  seed: number,
  dims: { hq: number; hkv: number; nq: number; nk: number; d: number },
  maxLogit: number,
  options: AttentionOptions = {},
): LargeLogitCase {
  const { hq, hkv, nq, nk, d } = dims;
  const rng = new Rng(seed);
  const q0 = rng.randn([1, hq, nq, d]).toFloat32Array();
  const k = rng.randn([1, hkv, nk, d]);
  const v = rng.randn([1, hkv, nk, d]);
  const dO = rng.randn([1, hq, nq, d]);
  // The largest |logit| is the largest |scale q.k| over the pairs the mask allows: the
  // reference's LSE bounds it from above only, so it is found from the scores themselves (the
  // allowed set through the float64 reference of a one-hot probe would cost more).
  const kd = k.toFloat32Array();
  const scale = 1 / Math.sqrt(d);
  const group = hq / hkv;
  let top = 0;
  const causal = options.causal === true;
  for (let h = 0; h < hq; h++) {
    const kh = Math.floor(h / group);
    for (let i = 0; i < nq; i++) {
      const last = causal ? i + nk - nq : nk - 1;
      for (let j = 0; j <= last && j < nk; j++) {
        let s = 0;
        for (let c = 0; c < d; c++) s += q0[(h * nq + i) * d + c]! * kd[(kh * nk + j) * d + c]!;
        top = Math.max(top, Math.abs(s * scale));
      }
    }
  }
  const q = Tensor.from(
    q0.map((x) => (x * maxLogit) / top),
    [1, hq, nq, d],
    'f32',
  );
  return { q, k, v, dO, options, maxLogit };
}

function norm(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return Math.sqrt(s);
}

function maxRowNorm(t: Tensor): number {
  const x = t.toFloat64Array();
  const d = t.shape[t.shape.length - 1]!;
  let m = 0;
  for (let r = 0; r < x.length / d; r++) m = Math.max(m, norm(x.subarray(r * d, (r + 1) * d)));
  return m;
}

/**
 * The size each gradient has when P is spread out: dq ~ scale |dO| |v| |k|, dk ~ scale |dO|
 * |v| |q| (summed over a GQA group), dv ~ |dO|.
 */
export function gradientFloors(c: LargeLogitCase): { dq: number; dk: number; dv: number } {
  const d = c.q.shape[3]!;
  const scale = 1 / Math.sqrt(d);
  const dO = norm(c.dO.toFloat64Array());
  const v = maxRowNorm(c.v);
  return {
    dq: scale * dO * v * maxRowNorm(c.k),
    dk: scale * dO * v * maxRowNorm(c.q),
    dv: dO,
  };
}

/** Float64 forward and gradients of the case. */
export function largeLogitReference(
  c: LargeLogitCase,
): Record<'o' | 'lse' | 'dq' | 'dk' | 'dv', Tensor> {
  return {
    ...softmaxAttentionReference(c.q, c.k, c.v, c.options),
    ...softmaxAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.options),
  };
}

/** One gradient's check: its error, the allowance and the count of non-finite values. */
export interface LargeLogitCheck {
  name: 'dq' | 'dk' | 'dv';
  err: number;
  allowed: number;
  tol: number;
  nonFinite: number;
  refNorm: number;
  floor: number;
}

/**
 * The gradients of a backend against the reference: every value finite, and
 * ||g - ref|| <= tol ||ref|| + 2^-20 floor per gradient (dv: 1e-6 where rows are one-hot).
 * Free of vitest, so the GPU benchmark bundle checks the same before it times anything.
 */
export function checkLargeLogitGrads(
  c: LargeLogitCase,
  got: Record<'dq' | 'dk' | 'dv', Tensor>,
  ref: Record<'dq' | 'dk' | 'dv', Tensor>,
): LargeLogitCheck[] {
  const floors = gradientFloors(c);
  const tol = largeLogitTolerance(c.maxLogit);
  return (['dq', 'dk', 'dv'] as const).map((name) => {
    const g = got[name].toFloat64Array();
    const r = ref[name].toFloat64Array();
    if (g.length !== r.length) throw new Error(`${name}: ${g.length} values, expected ${r.length}`);
    let nonFinite = 0;
    let err = 0;
    for (let i = 0; i < g.length; i++) {
      if (!Number.isFinite(g[i]!)) nonFinite++;
      else err += (g[i]! - r[i]!) ** 2;
    }
    const t = name === 'dv' && c.maxLogit >= 1e5 ? 1e-6 : tol;
    const refNorm = norm(r);
    return {
      name,
      err: Math.sqrt(err),
      allowed: t * refNorm + 2 ** -20 * floors[name],
      tol: t,
      nonFinite,
      refNorm,
      floor: floors[name],
    };
  });
}
