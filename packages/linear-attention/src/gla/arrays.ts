import type { GlaSequence } from './plan.js';

/**
 * The array-level contract of the TS kernels (chunk.ts, recurrent.ts): row-major BTHK data
 * decoded to f32 or f64, element (b, t, h, x) of a [B, T, H, K] array at ((b*T + t)*H + h)*K + x,
 * states [N, H, K, V] at ((n*H + h)*K + x)*V + y. Outputs are written, every element once, never
 * read (they may hold anything on entry: the tests poison them with NaN).
 */
export type Arr = Float32Array | Float64Array;

export interface GlaDims {
  T: number;
  H: number;
  K: number;
  V: number;
  scale: number;
  seqs: readonly GlaSequence[];
}

export interface GlaForwardIo {
  q: Arr;
  k: Arr;
  v: Arr;
  gk: Arr;
  h0?: Arr | undefined;
  o: Arr;
  ht?: Arr | undefined;
}

export interface GlaBackwardIo {
  q: Arr;
  k: Arr;
  v: Arr;
  gk: Arr;
  h0?: Arr | undefined;
  dO: Arr;
  dht?: Arr | undefined;
  dq: Arr;
  dk: Arr;
  dv: Arr;
  dgk: Arr;
  dh0?: Arr | undefined;
}

/** Copies block `block` = n*H + h (sequence n, head h) of a [N, H, K, V] array (zeros when absent) into `S`. */
export function loadState(
  src: Arr | undefined,
  block: number,
  dims: GlaDims,
  S: Float64Array,
): void {
  const size = dims.K * dims.V;
  if (!src) {
    S.fill(0);
    return;
  }
  const base = block * size;
  for (let i = 0; i < size; i++) S[i] = src[base + i]!;
}

/** Writes `S` as block `block` = n*H + h of a [N, H, K, V] array (nothing when absent). */
export function storeState(
  dst: Arr | undefined,
  block: number,
  dims: GlaDims,
  S: Float64Array,
): void {
  if (!dst) return;
  const size = dims.K * dims.V;
  const base = block * size;
  for (let i = 0; i < size; i++) dst[base + i] = S[i]!;
}
