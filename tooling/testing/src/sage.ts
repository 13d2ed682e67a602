import {
  quantizeSageTs,
  type SageCodecCpu,
  type SageDims,
  type SageGranularity,
  type SageKernelOptions,
} from '@attnkit/skeleton';
import { Rng } from '@attnkit/tensor';

/** A SageAttention2 kernel test case: random normal Q, K, V quantized by the TS spec. */
export interface SageKernelCase {
  name: string;
  dims: SageDims;
  g: SageGranularity;
  bits: 4 | 8;
  smoothQ: boolean;
  opts: Omit<SageKernelOptions, 'returnLse'>;
  /** A per-channel offset of 10 in K's channel 3 (the case smoothing exists for). */
  offset?: boolean;
}

/**
 * The case's codec (quantizeSageTs, smoothK on, pvBits 8, every head at `bits`) from random
 * normal inputs of `seed`: what the WebGPU kernels' tests feed both the kernel and the spec.
 */
export function sageCaseCodec(c: SageKernelCase, seed: number): SageCodecCpu {
  const rng = new Rng(seed);
  const { batch, hq, hkv, nq, nk, d, dv } = c.dims;
  const data = (n: number) => Float32Array.from(rng.randn([n]).toFloat32Array());
  const q = data(batch * hq * nq * d);
  const k = data(batch * hkv * nk * d);
  const v = data(batch * hkv * nk * dv);
  if (c.offset) for (let i = 0; i < k.length; i += d) k[i + 3] = k[i + 3]! + 10;
  return quantizeSageTs(q, k, v, c.dims, {
    qBits: new Uint8Array(hq).fill(c.bits),
    granularity: c.g,
    smoothK: true,
    smoothQ: c.smoothQ,
    pvBits: 8,
  });
}
