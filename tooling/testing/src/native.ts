import {
  type AttentionOptions,
  type AttentionProblem,
  resolveAttentionProblem,
} from '@attnkit/attention';
import { loadNative, type NativeEngine, nativeLoadError } from '@attnkit/native';
import { type Rng, Tensor } from '@attnkit/tensor';
import { test } from 'vitest';

/**
 * Support of @attnkit/native's own tests (moved from its src/testing.ts): the engine (or a
 * failing test saying why it is missing) and seeded random attention problems over KERNELS.md
 * "Common" with the engine's tile hints.
 */

/**
 * The default engine. Without it the suite fails, unless ATTNKIT_ALLOW_NO_NATIVE=1, where each
 * file registers one visibly skipped test naming the reason instead.
 */
export function engineOrSkip(): NativeEngine | undefined {
  const engine = loadNative();
  if (engine) return engine;
  const why = nativeLoadError() ?? 'unknown reason';
  if (process.env.ATTNKIT_ALLOW_NO_NATIVE === '1') {
    test.skip(`native addon unavailable (ATTNKIT_ALLOW_NO_NATIVE=1): ${why}`, () => {});
    return undefined;
  }
  test('native addon loads', () => {
    throw new Error(`@attnkit/native did not load: ${why} (set ATTNKIT_ALLOW_NO_NATIVE=1 to skip)`);
  });
  return undefined;
}

export interface NativeCase {
  name: string;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  dO: Tensor;
  options: AttentionOptions;
  problem: AttentionProblem;
}

export type NativeFlavor =
  | 'plain'
  | 'nq<nk causal'
  | 'nq>nk causal'
  | 'gqa'
  | 'window'
  | 'window causal'
  | 'varlen'
  | 'sparse'
  | 'dv!=d';

export const NATIVE_FLAVORS: readonly NativeFlavor[] = [
  'plain',
  'nq<nk causal',
  'nq>nk causal',
  'gqa',
  'window',
  'window causal',
  'varlen',
  'sparse',
  'dv!=d',
];

const DS = [16, 40, 64, 80, 128];

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(0, xs.length)]!;
}

function cumulative(lens: number[]): number[] {
  const out = [0];
  for (const n of lens) out.push(out[out.length - 1]! + n);
  return out;
}

/** A random f32 problem of `flavor`: odd sizes up to ~150 tokens, GQA groups 1..8. */
export function randomNativeCase(rng: Rng, flavor: NativeFlavor): NativeCase {
  const batch = rng.int(1, 3);
  const hkv = pick(rng, [1, 2]);
  const group = flavor === 'gqa' ? pick(rng, [2, 4, 8]) : pick(rng, [1, 2]);
  const hq = hkv * group;
  const d = hq > 4 ? pick(rng, [16, 40, 64]) : pick(rng, DS);
  const dv =
    flavor === 'dv!=d'
      ? pick(
          rng,
          DS.filter((x) => x !== d),
        )
      : d;
  let nq = rng.int(1, 150);
  let nk = rng.int(1, 150);
  const options: AttentionOptions = { scale: (rng.uniform() * 2 + 0.5) / Math.sqrt(d) };
  if (flavor === 'plain') nk = nq;
  if (flavor === 'nq<nk causal') {
    nq = rng.int(1, 90);
    nk = nq + rng.int(1, 70);
    options.causal = true;
  }
  if (flavor === 'nq>nk causal') {
    nk = rng.int(1, 70);
    nq = nk + rng.int(1, 70);
    options.causal = true;
  }
  // left >= 1: a one-key window makes dQ exactly 0 in exact arithmetic (P = 1, dS = 0), and a
  // relative error against 0 is meaningless.
  if (flavor === 'window') options.window = [rng.int(1, 40), rng.int(0, 40)];
  if (flavor === 'window causal') {
    options.causal = true;
    options.window = [rng.int(1, 40), pick(rng, [-1, 0, 7])];
  }
  if (flavor === 'sparse' || flavor === 'dv!=d' || flavor === 'gqa') {
    options.causal = rng.uniform() < 0.5;
  }
  let shapes: number[][];
  if (flavor === 'varlen') {
    // The middle sequence is empty on one or both sides: it must not disturb the others.
    const lensQ = [rng.int(1, 90), 0, rng.int(1, 90)];
    const lensK = [rng.int(1, 90), 0, rng.int(1, 90)];
    const empty = pick(rng, ['both', 'queries', 'keys']);
    if (empty === 'queries') lensK[1] = rng.int(1, 30);
    if (empty === 'keys') lensQ[1] = rng.int(1, 30);
    options.layout = 'THD';
    options.cuSeqlensQ = cumulative(lensQ);
    options.cuSeqlensK = Int32Array.from(cumulative(lensK));
    options.causal = rng.uniform() < 0.5;
    const tq = options.cuSeqlensQ[3]!;
    const tk = options.cuSeqlensK[3]!;
    shapes = [
      [tq, hq, d],
      [tk, hkv, d],
      [tk, hkv, dv],
      [tq, hq, dv],
    ];
  } else {
    shapes = [
      [batch, hq, nq, d],
      [batch, hkv, nk, d],
      [batch, hkv, nk, dv],
      [batch, hq, nq, dv],
    ];
  }
  const [q, k, v, dO] = shapes.map((s) => rng.randn(s)) as [Tensor, Tensor, Tensor, Tensor];
  if (flavor === 'sparse') {
    const blockQ = pick(rng, [8, 16, 24, 64, 80]);
    const blockK = pick(rng, [8, 10, 16, 48, 64, 96]);
    const nbq = Math.ceil(nq / blockQ);
    const nbk = Math.ceil(nk / blockK);
    const shape = pick(rng, [
      [nbq, nbk],
      [hq, nbq, nbk],
      [batch, hq, nbq, nbk],
    ]);
    const mask = Uint8Array.from({ length: shape.reduce((a, x) => a * x, 1) }, () =>
      rng.uniform() < 0.6 ? 1 : 0,
    );
    options.blockSparse = { blockQ, blockK, mask: Tensor.from(mask, shape) };
  }
  const problem: AttentionProblem & { blockQ?: number; blockK?: number } = resolveAttentionProblem(
    q,
    k,
    v,
    options,
  );
  // Odd kernel tiles: the backward's query rows per block and the forward's keys per tile.
  const hint = rng.uniform() < 0.4;
  if (hint) {
    problem.blockQ = pick(rng, [1, 7, 16, 33, 100]);
    problem.blockK = pick(rng, [1, 5, 16, 37, 200]);
  }
  const parts = [`q[${q.shape}] k[${k.shape}] v[${v.shape}]`];
  if (options.causal) parts.push('causal');
  if (options.window) parts.push(`window[${options.window}]`);
  if (options.blockSparse) {
    const bs = options.blockSparse;
    parts.push(`sparse ${bs.blockQ}x${bs.blockK} mask[${bs.mask.shape}]`);
  }
  if (hint) parts.push(`tiles ${problem.blockQ}/${problem.blockK}`);
  return { name: `${flavor} ${parts.join(' ')}`, q, k, v, dO, options, problem };
}
