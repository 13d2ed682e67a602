import { type Rng, Tensor } from '@attnkit/tensor';

/** A random GLA problem for the WebGPU tests (BTHK; fla's log-sigmoid gates or -20 ones). */
export interface ProblemSpec {
  B: number;
  T: number;
  H: number;
  K: number;
  V: number;
  dtype?: 'f32' | 'f16' | 'bf16';
  h0?: boolean;
  /** Sequence lengths packed along T (B must be 1; T their sum). */
  lengths?: number[];
  scale?: number;
  C?: number;
  /** 'strong': half of the channels at -20 per step. */
  gates?: 'logsigmoid' | 'strong';
}

export function makeProblem(rng: Rng, s: ProblemSpec) {
  const dtype = s.dtype ?? 'f32';
  const { B, T, H, K, V } = s;
  const n = B * T * H * K;
  const z = rng.randn([n], 'f64').toFloat64Array();
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const ls = -Math.log1p(Math.exp(-z[i]!));
    g[i] = s.gates === 'strong' && i % 2 === 0 ? -20 * (0.5 + 0.5 * rng.uniform()) : ls;
  }
  const N = s.lengths ? s.lengths.length : B;
  const options: {
    scale?: number;
    initialState?: Tensor;
    cuSeqlens?: Int32Array;
  } = {};
  if (s.scale !== undefined) options.scale = s.scale;
  if (s.h0) options.initialState = rng.randn([N, H, K, V], dtype);
  if (s.lengths) {
    const cu = [0];
    for (const l of s.lengths) cu.push(cu[cu.length - 1]! + l);
    options.cuSeqlens = Int32Array.from(cu);
  }
  return {
    q: rng.randn([B, T, H, K], dtype),
    k: rng.randn([B, T, H, K], dtype),
    v: rng.randn([B, T, H, V], dtype),
    gk: Tensor.from(g, [B, T, H, K]).astype(dtype),
    dO: rng.randn([B, T, H, V], dtype),
    dht: rng.randn([N, H, K, V], dtype),
    options,
  };
}
