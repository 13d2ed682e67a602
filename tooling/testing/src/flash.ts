import type { AttentionOptions } from '@attnkit/attention';
import { type DType, type Rng, Tensor } from '@attnkit/tensor';

/**
 * Seeded random softmax-attention problems covering the options of KERNELS.md "Common" (moved
 * from @attnkit/flash-attention's src/cpu/testing.ts), for the pure-TS and WGSL kernel tests.
 */

/** The options a case sets: KERNELS.md "Common" plus the FlashAttention tile sizes. */
export interface FlashCaseOptions extends AttentionOptions {
  blockQ?: number;
  blockK?: number;
}

export interface Case {
  name: string;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  dO: Tensor;
  options: FlashCaseOptions;
}

/** Features a case must exercise; the dimensions around them are drawn at random. */
export type Flavor =
  | 'plain'
  | 'nq<nk causal'
  | 'nq>nk causal'
  | 'gqa'
  | 'mqa'
  | 'window'
  | 'window causal'
  | 'varlen'
  | 'sparse shared'
  | 'sparse per-head'
  | 'dv!=d';

export const FLAVORS: readonly Flavor[] = [
  'plain',
  'nq<nk causal',
  'nq>nk causal',
  'gqa',
  'mqa',
  'window',
  'window causal',
  'varlen',
  'sparse shared',
  'sparse per-head',
  'dv!=d',
];

const DS = [16, 40, 64, 80, 128];
const ODD_TILES = [3, 5, 7, 11, 13, 17, 24, 33];

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(0, xs.length)]!;
}

/** A random problem of `flavor` with small sizes (N <= ~100, B <= 2). */
export function randomCase(rng: Rng, flavor: Flavor, dtype: DType = 'f32'): Case {
  const batch = rng.int(1, 3);
  let hkv = pick(rng, [1, 2]);
  let group = pick(rng, [1, 2]);
  if (flavor === 'gqa') group = pick(rng, [2, 4, 8]);
  if (flavor === 'mqa') {
    hkv = 1;
    group = pick(rng, [4, 8]);
  }
  const hq = hkv * group;
  // Small heads keep the 8-head cases fast.
  const d = hq > 4 ? pick(rng, [16, 40, 64]) : pick(rng, DS);
  const dv =
    flavor === 'dv!=d'
      ? pick(
          rng,
          DS.filter((x) => x !== d),
        )
      : rng.uniform() < 0.2
        ? pick(rng, DS)
        : d;
  let nq = rng.int(1, 101);
  let nk = rng.int(1, 101);
  const options: FlashCaseOptions = {};
  switch (flavor) {
    case 'plain':
      nk = nq;
      break;
    case 'nq<nk causal':
      nq = rng.int(1, 60);
      nk = nq + rng.int(1, 41);
      options.causal = true;
      break;
    case 'nq>nk causal':
      nk = rng.int(1, 60);
      nq = nk + rng.int(1, 41);
      options.causal = true;
      break;
    case 'window':
      options.window = [rng.int(0, 30), rng.int(0, 30)];
      break;
    case 'window causal':
      options.causal = true;
      options.window = [rng.int(0, 30), pick(rng, [-1, 0, 5])];
      break;
    case 'sparse shared':
    case 'sparse per-head':
      options.causal = rng.uniform() < 0.5;
      break;
    default:
      options.causal = rng.uniform() < 0.3;
  }
  if (flavor !== 'sparse shared' && flavor !== 'sparse per-head' && rng.uniform() < 0.5) {
    options.blockQ = pick(rng, ODD_TILES);
    options.blockK = pick(rng, ODD_TILES);
  }
  let q: Tensor;
  let k: Tensor;
  let v: Tensor;
  let dO: Tensor;
  if (flavor === 'varlen') {
    // One sequence is empty: its rows exist nowhere and nothing may break.
    // The middle sequence lacks queries, keys or both; the others are ordinary.
    const lensQ = [rng.int(1, 50), 0, rng.int(1, 50)];
    const lensK = [rng.int(1, 50), 0, rng.int(1, 50)];
    const empty = pick(rng, ['both', 'queries', 'keys']);
    if (empty === 'queries') lensK[1] = rng.int(1, 20);
    if (empty === 'keys') lensQ[1] = rng.int(1, 20);
    const cu = (lens: number[]) => {
      const offsets = [0];
      for (const n of lens) offsets.push(offsets[offsets.length - 1]! + n);
      return offsets;
    };
    options.layout = 'THD';
    options.cuSeqlensQ = cu(lensQ);
    options.cuSeqlensK = Int32Array.from(cu(lensK));
    const tq = options.cuSeqlensQ[3]!;
    const tk = options.cuSeqlensK[3]!;
    q = rng.randn([tq, hq, d], dtype);
    k = rng.randn([tk, hkv, d], dtype);
    v = rng.randn([tk, hkv, dv], dtype);
    dO = rng.randn([tq, hq, dv], dtype);
  } else {
    q = rng.randn([batch, hq, nq, d], dtype);
    k = rng.randn([batch, hkv, nk, d], dtype);
    v = rng.randn([batch, hkv, nk, dv], dtype);
    dO = rng.randn([batch, hq, nq, dv], dtype);
    if (flavor === 'sparse shared' || flavor === 'sparse per-head') {
      const blockQ = pick(rng, [8, 12, 16, 32]);
      const blockK = pick(rng, [8, 10, 16, 32]);
      const nbq = Math.ceil(nq / blockQ);
      const nbk = Math.ceil(nk / blockK);
      // Per-head masks come as [Hq, nbq, nbk] or [B, Hq, nbq, nbk].
      const shape =
        flavor === 'sparse shared'
          ? [nbq, nbk]
          : rng.uniform() < 0.5
            ? [hq, nbq, nbk]
            : [batch, hq, nbq, nbk];
      const mask = Uint8Array.from({ length: shape.reduce((a, x) => a * x, 1) }, () =>
        rng.uniform() < 0.6 ? 1 : 0,
      );
      options.blockSparse = { blockQ, blockK, mask: Tensor.from(mask, shape) };
      // A tile that is a proper divisor of the mask block (or the planner's choice).
      if (rng.uniform() < 0.5) {
        options.blockQ = blockQ / pick(rng, [1, 2, 4]);
        options.blockK = blockK / pick(rng, [1, 2]);
      }
    }
  }
  // Scores of a few units, as trained models have: exercises the online max shifts.
  options.scale = (rng.uniform() * 2 + 0.5) / Math.sqrt(d);
  const name = `${flavor} ${describeCase(q, k, v, options)}`;
  return { name, q, k, v, dO, options };
}

function describeCase(q: Tensor, k: Tensor, v: Tensor, o: FlashCaseOptions): string {
  const parts = [`q[${q.shape}] k[${k.shape}] v[${v.shape}]`];
  if (o.causal) parts.push('causal');
  if (o.window) parts.push(`window[${o.window}]`);
  if (o.blockSparse) {
    parts.push(
      `sparse ${o.blockSparse.blockQ}x${o.blockSparse.blockK} mask[${o.blockSparse.mask.shape}]`,
    );
  }
  if (o.blockQ) parts.push(`tiles ${o.blockQ}x${o.blockK}`);
  return parts.join(' ');
}
