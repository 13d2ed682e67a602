import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { calibrate, type SageCalibration, sageAttention } from './index.js';

/**
 * calibrate(): per-head INT4/INT8 decisions against the float64 reference. Head 0's queries
 * share a per-channel mean (as trained models' do: smoothQ takes it out exactly, so INT4 codes
 * only carry the residual and INT4 stays accurate), head 1 is plain random normal (INT4 measures
 * cos ~0.98 there): with threshold 0.99 head 0 gets 4 bits and head 1 8.
 */

function sample(rng: Rng, n: number, d: number) {
  const mu = new Float32Array(d);
  rng.fillNormal(mu, 0, 8);
  const q = rng.randn([1, 2, n, d]).toFloat32Array();
  for (let e = 0; e < n * d; e++) q[e] = q[e]! + mu[e % d]!; // head 0 only
  return {
    q: Tensor.from(q, [1, 2, n, d]),
    k: rng.randn([1, 2, n, d]),
    v: rng.randn([1, 2, n, d]),
  };
}

describe('calibrate', () => {
  const rng = new Rng(Date.now() % 100000);
  const samples = [sample(rng, 96, 64), sample(rng, 130, 64)];

  test('per head: INT4 where its cosine similarity meets the threshold; plain JSON that sageAttention takes', async () => {
    const cal = await calibrate(samples, { threshold: 0.99, backend: 'ts', causal: true });
    expect(cal.version).toBe(1);
    expect(cal.heads).toBe(2);
    expect(cal.samples).toBe(2);
    expect(cal.metrics.cosInt4[0]).toBeGreaterThanOrEqual(0.99);
    expect(cal.metrics.cosInt4[1]).toBeLessThan(0.99);
    expect(cal.metrics.cosInt8.every((c) => c >= 0.999)).toBe(true);
    expect(cal.metrics.relL1Int8.every((c) => c <= 0.03)).toBe(true);
    expect(cal.qkBits).toEqual([4, 8]);
    // A JSON round trip, then as `calibration` and as `qkBits`: the same as the bits by hand.
    const json = JSON.parse(JSON.stringify(cal)) as SageCalibration;
    const s = samples[0]!;
    const byHand = await sageAttention(s.q, s.k, s.v, { qkBits: [4, 8], backend: 'ts' });
    const viaCal = await sageAttention(s.q, s.k, s.v, { calibration: json, backend: 'ts' });
    const viaBits = await sageAttention(s.q, s.k, s.v, { qkBits: json, backend: 'ts' });
    expect(viaCal.o.toFloat32Array()).toEqual(byHand.o.toFloat32Array());
    expect(viaBits.o.toFloat32Array()).toEqual(byHand.o.toFloat32Array());
  });

  test('default threshold 0.999 (INT8 bar): 8 bits for the random head; per layer: one decision', async () => {
    const strict = await calibrate(samples, { backend: 'ts' });
    expect(strict.threshold).toBe(0.999);
    // Head 1 (plain random, INT4 ~0.98) keeps 8 bits; head 0 is near the line (~0.998-0.9995).
    expect(strict.qkBits).toEqual(strict.metrics.cosInt4.map((c) => (c >= 0.999 ? 4 : 8)));
    expect(strict.qkBits[1]).toBe(8);
    const layer = await calibrate(samples, { threshold: 0.9, per: 'layer', backend: 'ts' });
    expect(layer.qkBits).toEqual([4, 4]);
    const layer2 = await calibrate(samples, { threshold: 0.9999, per: 'layer', backend: 'ts' });
    expect(layer2.qkBits).toEqual([8, 8]);
  });

  test('a calibration for another head count is rejected by sageAttention', async () => {
    const cal = await calibrate([samples[0]!], { threshold: 0.99, backend: 'ts' });
    const r = new Rng(1);
    const q3 = r.randn([1, 3, 10, 64]);
    const kv = r.randn([1, 3, 10, 64]);
    await expect(sageAttention(q3, kv, kv, { calibration: cal })).rejects.toMatchObject({
      name: 'ValueError',
      argument: 'calibration',
    });
  });

  test("a calibration's quantization settings are the call's defaults; another explicit one is refused", async () => {
    const cal = await calibrate([samples[0]!], {
      threshold: 0.99,
      backend: 'ts',
      granularity: 'thread',
      smoothK: false,
    });
    expect([cal.granularity, cal.smoothK]).toEqual(['thread', false]);
    const s = samples[0]!;
    const bits = [...cal.qkBits];
    const byHand = await sageAttention(s.q, s.k, s.v, {
      qkBits: bits,
      granularity: 'thread',
      smoothK: false,
      backend: 'ts',
    });
    const viaCal = await sageAttention(s.q, s.k, s.v, { calibration: cal, backend: 'ts' });
    const viaBits = await sageAttention(s.q, s.k, s.v, { qkBits: cal, backend: 'ts' });
    expect(viaCal.o.toFloat32Array()).toEqual(byHand.o.toFloat32Array());
    expect(viaBits.o.toFloat32Array()).toEqual(byHand.o.toFloat32Array());
    // Stated again, the same settings pass; another value names its option.
    await sageAttention(s.q, s.k, s.v, { calibration: cal, granularity: 'thread', backend: 'ts' });
    for (const [key, value] of [
      ['granularity', 'block'],
      ['smoothK', true],
      ['pvBits', 32],
    ] as const)
      await expect(
        sageAttention(s.q, s.k, s.v, { calibration: cal, [key]: value, backend: 'ts' }),
      ).rejects.toMatchObject({ name: 'ValueError', argument: key });
    // A recorded setting that is null counts as not recorded; a malformed one names the calibration.
    const noQ = { ...cal, smoothQ: null } as unknown as SageCalibration;
    await sageAttention(s.q, s.k, s.v, { calibration: noQ, backend: 'ts' });
    const bad = { ...cal, granularity: 'row' } as unknown as SageCalibration;
    await expect(
      sageAttention(s.q, s.k, s.v, { calibration: bad, backend: 'ts' }),
    ).rejects.toMatchObject({
      name: 'ValueError',
      argument: 'calibration.granularity',
    });
    await expect(
      sageAttention(s.q, s.k, s.v, { qkBits: { ...cal, pvBits: '8' } as never, backend: 'ts' }),
    ).rejects.toMatchObject({
      name: 'ValueError',
      argument: 'qkBits.pvBits',
    });
  });

  test('typed errors: samples, threshold, per, mixed head counts', async () => {
    const arg = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (e) {
        expect(e).toBeInstanceOf(ValueError);
        return (e as ValueError).argument;
      }
      return undefined;
    };
    expect(await arg(calibrate([]))).toBe('samples');
    expect(await arg(calibrate(samples, { threshold: 2 }))).toBe('threshold');
    expect(await arg(calibrate(samples, { per: 'model' as 'head' }))).toBe('per');
    const r = new Rng(2);
    const other = {
      q: r.randn([1, 4, 8, 64]),
      k: r.randn([1, 2, 8, 64]),
      v: r.randn([1, 2, 8, 64]),
    };
    expect(await arg(calibrate([samples[0]!, other]))).toBe('samples');
    expect(await arg(calibrate(samples, { granularity: 'row' as 'warp' }))).toBe('granularity');
  });
});
