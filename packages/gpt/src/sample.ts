import { describe, Rng, ValueError } from '@attnkit/tensor';

export interface SampleOptions {
  /** Divides the logits (default 1); 0 takes the most likely token (greedy). */
  temperature?: number;
  /** Keep only the k most likely tokens before sampling (default: all). */
  topK?: number;
  /** Seeds the draws (default 0): the same seed gives the same text. */
  seed?: number;
}

export function samplingRng(options: SampleOptions): Rng {
  const { temperature = 1, topK, seed = 0 } = options;
  if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature))
    throw new ValueError(
      `generate: temperature expected a finite number >= 0, got ${describe(temperature)}`,
      'temperature',
    );
  if (topK !== undefined && (!Number.isInteger(topK) || topK < 1))
    throw new ValueError(
      `generate: topK expected a positive integer, got ${describe(topK)}`,
      'topK',
    );
  return new Rng(seed);
}

/** One token from a row of logits: greedy at temperature 0, else softmax(logits / T) over the top k. */
export function sampleToken(logits: Float32Array, options: SampleOptions, rng: Rng): number {
  const { temperature = 1, topK } = options;
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  if (temperature === 0) return best;
  // Logits below the k-th largest drop out (nanoGPT's top-k: ties at the threshold stay).
  const threshold =
    topK !== undefined && topK < logits.length
      ? Float32Array.from(logits).sort().reverse()[topK - 1]!
      : -Infinity;
  const max = logits[best]!;
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i]! < threshold) continue;
    p[i] = Math.exp((logits[i]! - max) / temperature);
    sum += p[i]!;
  }
  let u = rng.uniform() * sum;
  for (let i = 0; i < p.length; i++) {
    u -= p[i]!;
    if (u < 0) return i;
  }
  return best;
}
