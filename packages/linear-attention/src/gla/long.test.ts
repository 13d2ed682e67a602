import { toleranceFor } from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { relL2 } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import {
  chunkGla,
  chunkGlaBackward,
  fusedRecurrentGla,
  fusedRecurrentGlaBackward,
  glaReference,
  glaReferenceBackward,
} from '../index.js';

/**
 * KERNELS.md "Gated linear attention" numerics: strongly negative gates (gk = -20 per step,
 * e^-20 = 2e-9, where the first-level chunk factorisation overflows and the textbook dgk cancels)
 * and a long sequence (T = 16K), both forms against the float64 recurrent reference, f32 inputs.
 */

const rng = new Rng(0x10f6);

function problem(
  T: number,
  H: number,
  K: number,
  V: number,
  gate: (x: number, c: number) => number,
) {
  const z = rng.randn([1, T, H, K], 'f64').toFloat64Array();
  const g = Float32Array.from(z, (x, i) => gate(x, i % K));
  return {
    q: rng.randn([1, T, H, K]),
    k: rng.randn([1, T, H, K]),
    v: rng.randn([1, T, H, V]),
    gk: Tensor.from(g, [1, T, H, K]),
    h0: rng.randn([1, H, K, V]),
    dO: rng.randn([1, T, H, V]),
    dht: rng.randn([1, H, K, V]),
  };
}

const logsigmoid = (x: number) => -Math.log1p(Math.exp(-x));

async function compare(
  x: ReturnType<typeof problem>,
  tol: number,
  strongChannels?: (c: number) => boolean,
) {
  const options = { initialState: x.h0, outputFinalState: true };
  const ref = glaReference(x.q, x.k, x.v, x.gk, options);
  const refB = glaReferenceBackward(x.q, x.k, x.v, x.gk, x.dO, { ...options, dht: x.dht });
  const forms = [
    ['chunk', chunkGla, chunkGlaBackward],
    ['recurrent', fusedRecurrentGla, fusedRecurrentGlaBackward],
  ] as const;
  for (const [name, fwd, bwd] of forms) {
    const r = await fwd(x.q, x.k, x.v, x.gk, options);
    const g = await bwd(x.q, x.k, x.v, x.gk, x.dO, { ...options, dht: x.dht });
    const got = { o: r.o, ht: r.finalState!, ...g } as Record<string, Tensor>;
    const want = { o: ref.o, ht: ref.finalState!, ...refB } as Record<string, Tensor>;
    for (const n of ['o', 'ht', 'dq', 'dk', 'dv', 'dgk', 'dh0']) {
      const a = got[n]!.toFloat64Array();
      expect(a.every(Number.isFinite), `${name} ${n} finite`).toBe(true);
      expect(relL2(a, want[n]!.toFloat64Array()), `${name} ${n}`).toBeLessThan(tol);
    }
    if (strongChannels) {
      // dgk of the -20 channels alone (~1e-9 against O(1) elsewhere): relative precision kept,
      // not the absolute error of a sum that cancels.
      const K = x.gk.shape[3]!;
      const pick = (t: Tensor) => t.toFloat64Array().filter((_, i) => strongChannels(i % K));
      const a = pick(g.dgk);
      const b = pick(refB.dgk);
      expect(Math.max(...b.map(Math.abs))).toBeLessThan(1e-6);
      expect(relL2(a, b), `${name} dgk of the gk = -20 channels`).toBeLessThan(1e-5);
    }
  }
}

describe('numerics against the float64 recurrent reference', () => {
  test('gk = -20 per step in half the key channels (T 300, C 64: chunk G down to -1280)', async () => {
    const strong = (c: number) => c % 2 === 0;
    const x = problem(300, 2, 16, 16, (z, c) => (strong(c) ? -20 : logsigmoid(z)));
    await compare(x, toleranceFor({ chunked: true }), strong);
  });

  test('gates drawn in [-20, 0] everywhere', async () => {
    const x = problem(200, 1, 8, 12, () => -20 * rng.uniform());
    await compare(x, toleranceFor({ chunked: true }));
  });

  // T = 16K at H 2, K = V = 16 takes ~2.5 s alone for the reference and both forms, forward and
  // backward; CI runs every package's tests at once on two cores, where it once took over 20 s
  // (stop 25), so the limit only has to catch a hang.
  test('T = 16384: both forms, every output and gradient', { timeout: 180_000 }, async () => {
    // Slow decays (fla's logsigmoid / 16: a memory of hundreds of tokens) and a few fast ones.
    const x = problem(16384, 2, 16, 16, (z, c) => (c === 3 ? -20 : logsigmoid(z) / 16));
    await compare(x, toleranceFor({ chunked: true, maxSeqLen: 16384 }));
  });
});
