import { softmaxAttentionReference } from '@attnkit/attention';
import { describe, type Tensor, ValueError } from '@attnkit/tensor';
import { sageAttention } from './attention.js';
import {
  resolveSage,
  type SageAttentionOptions,
  type SageBits,
  type SageCalibration,
} from './options.js';

/** calibrate()'s options: the quantization settings to calibrate (as sageAttention's) and the rule. */
export interface CalibrateOptions
  extends Omit<SageAttentionOptions, 'qkBits' | 'calibration' | 'returnLse'> {
  /**
   * A head (or the layer) uses INT4 when INT4's output cosine similarity to the float64
   * reference, over all samples, is at least this (default 0.999: KERNELS.md's INT8 bar, so the
   * calibrated call meets INT8's accuracy on the calibration data).
   */
  threshold?: number;
  /** 'head' (default): a decision per query head; 'layer': one for all heads. */
  per?: 'head' | 'layer';
}

export interface CalibrationSample {
  q: Tensor;
  k: Tensor;
  v: Tensor;
}

/** Per-head sums of a cosine similarity and a relative L1 (over samples). */
class HeadSums {
  cross: Float64Array;
  a2: Float64Array;
  r2: Float64Array;
  d1: Float64Array;
  r1: Float64Array;
  constructor(heads: number) {
    this.cross = new Float64Array(heads);
    this.a2 = new Float64Array(heads);
    this.r2 = new Float64Array(heads);
    this.d1 = new Float64Array(heads);
    this.r1 = new Float64Array(heads);
  }
  /** o (BHND f32) vs ref (BHND f64) of one sample; rows without keys (0 vs 0) add nothing. */
  add(o: Float32Array, ref: Float64Array, batch: number, heads: number, per: number): void {
    for (let b = 0; b < batch; b++)
      for (let h = 0; h < heads; h++) {
        const base = (b * heads + h) * per;
        for (let e = base; e < base + per; e++) {
          const x = o[e]!;
          const y = ref[e]!;
          this.cross[h] += x * y;
          this.a2[h] += x * x;
          this.r2[h] += y * y;
          this.d1[h] += Math.abs(x - y);
          this.r1[h] += Math.abs(y);
        }
      }
  }
  cos(h: number | undefined): number {
    const pick = (a: Float64Array) => (h === undefined ? a.reduce((s, x) => s + x, 0) : a[h]!);
    const a2 = pick(this.a2);
    const r2 = pick(this.r2);
    if (a2 === 0 && r2 === 0) return 1;
    if (a2 === 0 || r2 === 0) return 0;
    return Math.min(1, pick(this.cross) / Math.sqrt(a2 * r2));
  }
  relL1(h: number): number {
    return this.r1[h] === 0
      ? this.d1[h] === 0
        ? 0
        : Number.POSITIVE_INFINITY
      : this.d1[h]! / this.r1[h]!;
  }
}

/**
 * Adaptive quantization (SageAttention2 Sec. 4.5): runs each sample (q, k, v of one attention
 * layer, every sample with the same query head count) through Sage with INT4 and with INT8 Q·K,
 * compares each query head's output with the float64 softmax reference (cosine similarity and
 * relative L1 over all samples) and keeps INT4 for the heads (or the layer) whose INT4
 * similarity meets `threshold`, INT8 for the rest. Returns plain JSON (SageCalibration) that
 * sageAttention takes as `calibration` (or `qkBits`). ValueError naming samples / threshold /
 * per; the options are checked as sageAttention's.
 */
export async function calibrate(
  samples: readonly CalibrationSample[],
  options: CalibrateOptions = {},
): Promise<SageCalibration> {
  if (!Array.isArray(samples) || samples.length === 0)
    throw new ValueError(
      `samples: expected a non-empty array of { q, k, v }, got ${describe(samples)}`,
      'samples',
    );
  if (options === null || typeof options !== 'object')
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  const { threshold = 0.999, per = 'head', ...sage } = options;
  if (typeof threshold !== 'number' || !(threshold >= -1 && threshold <= 1))
    throw new ValueError(
      `threshold: expected a number in [-1, 1], got ${describe(threshold)}`,
      'threshold',
    );
  if (per !== 'head' && per !== 'layer')
    throw new ValueError(`per: expected "head" or "layer", got ${describe(per)}`, 'per');
  let heads = -1;
  let sums4: HeadSums | undefined;
  let sums8: HeadSums | undefined;
  let config: ReturnType<typeof resolveSage>['config'] | undefined;
  for (const [n, s] of samples.entries()) {
    if (s === null || typeof s !== 'object')
      throw new ValueError(`samples[${n}]: expected { q, k, v }, got ${describe(s)}`, 'samples');
    const r = resolveSage(s.q, s.k, s.v, sage);
    if (heads < 0) {
      heads = r.dims.hq;
      sums4 = new HeadSums(heads);
      sums8 = new HeadSums(heads);
      config = r.config;
    } else if (r.dims.hq !== heads) {
      throw new ValueError(
        `samples[${n}]: expected ${heads} query heads (as samples[0]), got ${r.dims.hq}`,
        'samples',
      );
    }
    // The reference reads BHND; BSHD samples are transposed views.
    const bhnd = (t: Tensor) => (r.layout === 'BSHD' ? t.permute([0, 2, 1, 3]) : t);
    const cpu = async (t: Tensor) => (t.device === 'cpu' ? t : t.toCpu());
    const [q, k, v] = await Promise.all([cpu(s.q), cpu(s.k), cpu(s.v)]);
    const ref = softmaxAttentionReference(bhnd(q), bhnd(k), bhnd(v), {
      scale: r.kernel.scale,
      causal: r.kernel.causal,
      window: r.kernel.window as [number, number] | undefined,
    }).o.toFloat64Array();
    for (const [bits, sums] of [
      [4, sums4!],
      [8, sums8!],
    ] as const) {
      const { o } = await sageAttention(s.q, s.k, s.v, { ...sage, qkBits: bits });
      const oc = await cpu(o);
      sums.add(bhnd(oc).toFloat32Array(), ref, r.dims.batch, heads, r.dims.nq * r.dims.dv);
      if (o !== oc) o.dispose();
    }
  }
  const idx = Array.from({ length: heads }, (_, h) => h);
  const cosInt4 = idx.map((h) => sums4!.cos(h));
  const layerOk = sums4!.cos(undefined) >= threshold;
  const qkBits: SageBits[] = idx.map((h) =>
    (per === 'layer' ? layerOk : cosInt4[h]! >= threshold) ? 4 : 8,
  );
  return {
    version: 1,
    kind: 'sage-calibration',
    heads,
    qkBits,
    threshold,
    per,
    samples: samples.length,
    granularity: config!.granularity,
    smoothK: config!.smoothK,
    smoothQ: config!.smoothQ,
    pvBits: config!.pvBits,
    metrics: {
      cosInt4,
      relL1Int4: idx.map((h) => sums4!.relL1(h)),
      cosInt8: idx.map((h) => sums8!.cos(h)),
      relL1Int8: idx.map((h) => sums8!.relL1(h)),
    },
  };
}
