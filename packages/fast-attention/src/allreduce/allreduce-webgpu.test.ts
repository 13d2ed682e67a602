import { accuracy, softmaxAttentionReference } from '@attnkit/attention';
import { BackendUnavailableError, Rng, type Tensor } from '@attnkit/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildWorkerForTests } from '../../test/build-worker.js';
import { DeviceWorkerError } from './errors.js';
import { AllReduceGroup, tiledAllReduceAttention } from './group.js';

// P WebGPU devices: P workers, each with its own Dawn device on the one adapter (llvmpipe here),
// small shapes. ATTNKIT_ALLOW_NO_WEBGPU=1 skips where no adapter is found.
beforeAll(buildWorkerForTests, 60000);

async function group(devices: number): Promise<AllReduceGroup | undefined> {
  try {
    return await AllReduceGroup.create({ devices, backend: 'webgpu' });
  } catch (e) {
    if (e instanceof BackendUnavailableError && process.env.ATTNKIT_ALLOW_NO_WEBGPU === '1')
      return undefined;
    throw e;
  }
}

function reference(q: Tensor, k: Tensor, v: Tensor, wo: Tensor, causal: boolean): Float64Array {
  const o = softmaxAttentionReference(q, k, v, { causal }).o.toFloat64Array();
  const [batch, hq, seqQ] = q.shape as [number, number, number, number];
  const dv = v.shape[3]!;
  const dModel = wo.shape[1]!;
  const W = wo.toFloat64Array();
  const y = new Float64Array(batch * seqQ * dModel);
  for (let b = 0; b < batch; b++)
    for (let i = 0; i < seqQ; i++)
      for (let h = 0; h < hq; h++)
        for (let c = 0; c < dv; c++) {
          const x = o[((b * hq + h) * seqQ + i) * dv + c]!;
          for (let j = 0; j < dModel; j++)
            y[(b * seqQ + i) * dModel + j]! += x * W[(h * dv + c) * dModel + j]!;
        }
  return y;
}

const groups: AllReduceGroup[] = [];
afterAll(async () => {
  for (const g of groups) await g.close();
});

describe('tiledAllReduceAttention (webgpu devices)', () => {
  // Odd N, H not divisible by P, GQA, causal with Nq = Nk and Nq > Nk.
  for (const [devices, batch, hq, hkv, seqQ, seqK, d, dv, dModel, causal, tileRows] of [
    [1, 1, 3, 3, 13, 13, 16, 16, 8, false, 8],
    [2, 1, 5, 5, 21, 21, 16, 8, 12, true, 8],
    [3, 2, 6, 3, 11, 17, 8, 8, 10, true, 4],
    [2, 1, 4, 2, 15, 6, 16, 16, 16, true, 4],
  ] as const) {
    it(`P = ${devices}: B ${batch}, Hq ${hq}, Hkv ${hkv}, Nq ${seqQ}, Nk ${seqK}, D ${d}, Dv ${dv}, causal ${causal}`, async () => {
      const g = await group(devices);
      if (!g) return;
      groups.push(g);
      const rng = new Rng(devices * 31 + seqQ);
      const q = rng.randn([batch, hq, seqQ, d]);
      const k = rng.randn([batch, hkv, seqK, d]);
      const v = rng.randn([batch, hkv, seqK, dv]);
      const wo = rng.randn([hq * dv, dModel], 'f32', 1 / Math.sqrt(hq * dv));
      const ref = reference(q, k, v, wo, causal);
      for (const overlap of [true, false]) {
        const r = await tiledAllReduceAttention(q, k, v, wo, {
          group: g,
          causal,
          tileRows,
          overlap,
        });
        expect(r.y.shape).toEqual([batch, seqQ, dModel]);
        expect(accuracy(r.y, ref).relL2).toBeLessThan(1e-5);
      }
    });
  }

  it('a device that exits mid-run rejects with DeviceWorkerError and leaves no worker', async () => {
    const g = await group(2);
    if (!g) return;
    const rng = new Rng(3);
    const q = rng.randn([1, 2, 16, 8]);
    const k = rng.randn([1, 2, 16, 8]);
    const v = rng.randn([1, 2, 16, 8]);
    const wo = rng.randn([16, 8]);
    await expect(
      tiledAllReduceAttention(q, k, v, wo, {
        group: g,
        tileRows: 4,
        fault: { device: 0, tile: 2, kind: 'exit' },
      }),
    ).rejects.toThrow(DeviceWorkerError);
    expect(g.closed).toBe(true);
    expect(g.liveWorkers).toBe(0);
  });
});
