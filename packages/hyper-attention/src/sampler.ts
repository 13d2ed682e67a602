import { describe, Rng, ValueError } from '@attnkit/tensor';

/**
 * The residual of HyperAttention (Han et al. 2023, Algorithm 2): the attention mass outside the
 * sorted diagonal blocks is estimated from `sampleSize` = m keys drawn uniformly with replacement
 * from all Nk keys. With the importance weight w = Nk / m for every draw, and draws that land in
 * the query's own diagonal block dropped (those keys are already computed exactly), the sums
 *
 *     numerator_i   ~ w sum_{s : s not in block(i)} exp(S_{i,s}) v_s
 *     denominator_i ~ w sum_{s : s not in block(i)} exp(S_{i,s})
 *
 * are unbiased: each draw hits key j with probability 1/Nk, so the expectation is
 * m * (Nk / m) * (1 / Nk) * sum_{j not in block(i)} exp(S_ij) (v_j) — exactly the residual.
 * (The paper's implementation draws and weights the same way; weighting by (Nk - block) / m,
 * or keeping the own-block draws, would be biased.)
 */

function count(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new ValueError(`${name}: expected an integer >= ${min}, got ${describe(value)}`, name);
  }
  return value;
}

/**
 * `sampleSize` key indices drawn uniformly with replacement from [0, numKeys), sorted ascending
 * (attention does not depend on the keys' order; sorted draws make the draws of one key block a
 * contiguous run, see `blockRun`).
 */
export function sampleKeys(numKeys: number, sampleSize: number, rng: Rng): Int32Array {
  count(numKeys, 'numKeys', 1);
  count(sampleSize, 'sampleSize', 0);
  if (!(rng instanceof Rng))
    throw new ValueError(`rng: expected an Rng, got ${describe(rng)}`, 'rng');
  const out = new Int32Array(sampleSize);
  for (let s = 0; s < sampleSize; s++) out[s] = rng.int(0, numKeys);
  return out.sort();
}

/** The importance weight of each draw: Nk / m (see the module comment). */
export function samplingWeight(numKeys: number, sampleSize: number): number {
  count(numKeys, 'numKeys', 0);
  count(sampleSize, 'sampleSize', 1);
  return numKeys / sampleSize;
}

/**
 * The run [first, end) of sorted `samples` that falls in the key block [lo, hi): the draws a
 * query of that block drops (binary searches).
 */
export function blockRun(samples: Int32Array, lo: number, hi: number): [number, number] {
  const lowerBound = (x: number): number => {
    let a = 0;
    let b = samples.length;
    while (a < b) {
      const m = (a + b) >>> 1;
      if (samples[m]! < x) a = m + 1;
      else b = m;
    }
    return a;
  };
  return [lowerBound(lo), lowerBound(hi)];
}
