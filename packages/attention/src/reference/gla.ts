import {
  DTypeError,
  formatShape,
  isFloatDType,
  ShapeError,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';
import { checkOptions, checkRank, checkScalar, f64, fail, readF64 } from './util.js';

/**
 * Float64 gated linear attention in its recurrent form (KERNELS.md "Gated linear attention",
 * Yang et al. 2024), layout BTHK. Per batch and head the state S is K x V:
 *   S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t,   o_t = (scale q_t) S_t.
 * The chunkwise kernels must equal this within tolerance.
 */
export interface GlaOptions {
  /** Default K^-0.5. */
  scale?: number;
  /** h0 [B, H, K, V]; zero when absent. */
  initialState?: Tensor;
  /** Also return S_T as `finalState` [B, H, K, V]. */
  outputFinalState?: boolean;
}

interface GlaProblem {
  B: number;
  T: number;
  H: number;
  K: number;
  V: number;
  scale: number;
}

function resolve(q: Tensor, k: Tensor, v: Tensor, gk: Tensor, options: GlaOptions): GlaProblem {
  checkOptions(options);
  const qs = checkRank(q, 'q', 4, '[B, T, H, K]');
  const [B, T, H, K] = qs as [number, number, number, number];
  const inputs = [
    [k, 'k'],
    [v, 'v'],
    [gk, 'gk'],
  ] as const;
  for (const [t, name] of inputs)
    checkRank(t, name, 4, name === 'v' ? '[B, T, H, V]' : '[B, T, H, K]');
  for (const [t, name] of [[q, 'q'], ...inputs] as const) {
    if (!isFloatDType(t.dtype))
      fail(DTypeError, name, 'a float dtype (f32, f64, f16, bf16)', t.dtype);
  }
  const want = formatShape(qs);
  if (k.shape.some((x, i) => x !== qs[i]))
    fail(ShapeError, 'k', `shape ${want} (as q)`, `shape ${formatShape(k.shape)}`);
  if (gk.shape.some((x, i) => x !== qs[i]))
    fail(ShapeError, 'gk', `shape ${want} (as q)`, `shape ${formatShape(gk.shape)}`);
  if (v.shape[0] !== B || v.shape[1] !== T || v.shape[2] !== H) {
    fail(ShapeError, 'v', `shape [${B}, ${T}, ${H}, V]`, `shape ${formatShape(v.shape)}`);
  }
  const V = v.shape[3]!;
  const scale =
    options.scale === undefined ? 1 / Math.sqrt(K) : checkScalar(options.scale, 'scale');
  if (options.outputFinalState !== undefined && typeof options.outputFinalState !== 'boolean') {
    fail(ValueError, 'outputFinalState', 'a boolean', options.outputFinalState);
  }
  return { B, T, H, K, V, scale };
}

/**
 * Runs the recurrence for (b, h), calling visit(t, S_t) after each step with S_t as a K x V
 * row-major array; returns S_T. `states`, when given, receives S_0..S_T (S_0 = h0) for the backward.
 */
function recur(
  p: GlaProblem,
  Kt: Float64Array,
  Vt: Float64Array,
  Gk: Float64Array,
  H0: Float64Array | undefined,
  b: number,
  h: number,
  visit: (t: number, S: Float64Array) => void,
  states?: Float64Array[],
): Float64Array {
  const { K, V } = p;
  const S = H0
    ? H0.slice((b * p.H + h) * K * V, (b * p.H + h + 1) * K * V)
    : new Float64Array(K * V);
  states?.push(S.slice());
  for (let t = 0; t < p.T; t++) {
    const kk = ((b * p.T + t) * p.H + h) * K;
    const vv = ((b * p.T + t) * p.H + h) * V;
    for (let x = 0; x < K; x++) {
      const decay = Math.exp(Gk[kk + x]!);
      for (let y = 0; y < V; y++) S[x * V + y] = decay * S[x * V + y]! + Kt[kk + x]! * Vt[vv + y]!;
    }
    states?.push(S.slice());
    visit(t, S);
  }
  return S;
}

function readState(t: Tensor | undefined, name: string, p: GlaProblem): Float64Array | undefined {
  return t === undefined ? undefined : readF64(t, name, [p.B, p.H, p.K, p.V]);
}

export function glaRecurrentReference(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  options: GlaOptions = {},
): { o: Tensor; finalState?: Tensor } {
  const p = resolve(q, k, v, gk, options);
  const { B, T, H, K, V } = p;
  const Q = readF64(q, 'q');
  const Kt = readF64(k, 'k');
  const Vt = readF64(v, 'v');
  const Gk = readF64(gk, 'gk');
  const H0 = readState(options.initialState, 'initialState', p);
  const O = new Float64Array(B * T * H * V);
  const HT = new Float64Array(B * H * K * V);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const last = recur(p, Kt, Vt, Gk, H0, b, h, (t, S) => {
        const qo = ((b * T + t) * H + h) * K;
        const oo = ((b * T + t) * H + h) * V;
        for (let x = 0; x < K; x++) {
          const qx = p.scale * Q[qo + x]!;
          for (let y = 0; y < V; y++) O[oo + y] = O[oo + y]! + qx * S[x * V + y]!;
        }
      });
      HT.set(last, (b * H + h) * K * V);
    }
  }
  const out: { o: Tensor; finalState?: Tensor } = { o: f64(O, [B, T, H, V]) };
  if (options.outputFinalState) out.finalState = f64(HT, [B, H, K, V]);
  return out;
}

/**
 * Reverse-mode through the recurrence with the states kept from a forward pass. With dS the
 * gradient reaching S_t (from o_t, later steps and dFinalState):
 *   dS += scale q_t^T dO_t;  dq_t = scale S_t dO_t^T;  dk_t = dS v_t^T;  dv_t = k_t dS;
 *   dgk_t = exp(gk_t) * rowsum(dS * S_{t-1});  then dS <- diag(exp(gk_t)) dS for step t-1.
 * dh0 is the dS left after step 0 (returned when initialState is given).
 */
export function glaRecurrentReferenceBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  dO: Tensor,
  options: GlaOptions & { dFinalState?: Tensor } = {},
): { dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor; dh0?: Tensor } {
  const p = resolve(q, k, v, gk, options);
  const { B, T, H, K, V, scale } = p;
  const Q = readF64(q, 'q');
  const Kt = readF64(k, 'k');
  const Vt = readF64(v, 'v');
  const Gk = readF64(gk, 'gk');
  const G = readF64(dO, 'dO', [B, T, H, V]);
  const H0 = readState(options.initialState, 'initialState', p);
  const dHT = readState(options.dFinalState, 'dFinalState', p);
  const dQ = new Float64Array(Q.length);
  const dK = new Float64Array(Kt.length);
  const dV = new Float64Array(Vt.length);
  const dG = new Float64Array(Gk.length);
  const dH0 = new Float64Array(B * H * K * V);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const states: Float64Array[] = [];
      recur(p, Kt, Vt, Gk, H0, b, h, () => {}, states);
      const base = (b * H + h) * K * V;
      const dS = dHT ? dHT.slice(base, base + K * V) : new Float64Array(K * V);
      for (let t = T - 1; t >= 0; t--) {
        const S = states[t + 1]!;
        const prev = states[t]!;
        const qk = ((b * T + t) * H + h) * K;
        const vv = ((b * T + t) * H + h) * V;
        for (let x = 0; x < K; x++) {
          let dq = 0;
          for (let y = 0; y < V; y++) {
            dS[x * V + y] = dS[x * V + y]! + scale * Q[qk + x]! * G[vv + y]!;
            dq += S[x * V + y]! * G[vv + y]!;
          }
          dQ[qk + x] = scale * dq;
        }
        for (let x = 0; x < K; x++) {
          const decay = Math.exp(Gk[qk + x]!);
          let dk = 0;
          let dg = 0;
          for (let y = 0; y < V; y++) {
            const g = dS[x * V + y]!;
            dk += g * Vt[vv + y]!;
            dV[vv + y] = dV[vv + y]! + g * Kt[qk + x]!;
            dg += g * prev[x * V + y]!;
            dS[x * V + y] = decay * g;
          }
          dK[qk + x] = dk;
          dG[qk + x] = decay * dg;
        }
      }
      dH0.set(dS, base);
    }
  }
  const out: { dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor; dh0?: Tensor } = {
    dq: f64(dQ, q.shape),
    dk: f64(dK, k.shape),
    dv: f64(dV, v.shape),
    dgk: f64(dG, gk.shape),
  };
  if (options.initialState !== undefined) out.dh0 = f64(dH0, [B, H, K, V]);
  return out;
}
