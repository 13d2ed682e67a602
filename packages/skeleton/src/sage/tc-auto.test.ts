import { Rng } from '@attnkit/tensor';
import { interceptPipelines, lateCompile, webGpuTestContext } from '@attnkit/testing';
import { PipelineFallbackError, type WebGpuContext } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { quantizeSageTs } from './quantize.js';
import { SAGE_TC_AUTO_MIN_ROWS, sageTcAutoSelect } from './tc-auto.js';
import {
  disposeSageCodecGpu,
  type SageCodecGpu,
  sageAutoTensorCores,
  sageCodecToGpu,
  sageForwardWebGpu,
} from './webgpu.js';

/**
 * The automatic choice of Sage's f16 tensor-core engine (tensorCores unset): the pure rule
 * (measured shapes only) and, on stand-in contexts, what the adapter and codec must also offer.
 * The engine itself runs in ./tensor-cores-f16.test.ts (emulated) and on the H200 (BENCHMARKS.md).
 */
const MEASURED = { d: 128, dv: 128, nq: 4096, nk: 4096, pvBits: 8 };

describe('sageTcAutoSelect', () => {
  test('takes the measured shape on NVIDIA (any case of the vendor name), longer sequences too', () => {
    expect(sageTcAutoSelect(MEASURED, 'nvidia')).toBe(true);
    expect(sageTcAutoSelect(MEASURED, 'NVIDIA')).toBe(true);
    expect(sageTcAutoSelect({ ...MEASURED, nq: 8192, nk: 16384 }, 'nvidia')).toBe(true);
  });

  test('declines other vendors, head dims, 32-bit P V and shorter sequences', () => {
    for (const vendor of ['mesa', 'amd', 'intel', 'apple', ''])
      expect(sageTcAutoSelect(MEASURED, vendor), vendor).toBe(false);
    expect(sageTcAutoSelect({ ...MEASURED, d: 64, dv: 64 }, 'nvidia')).toBe(false);
    expect(sageTcAutoSelect({ ...MEASURED, dv: 64 }, 'nvidia')).toBe(false);
    expect(sageTcAutoSelect({ ...MEASURED, pvBits: 32 }, 'nvidia')).toBe(false);
    expect(sageTcAutoSelect({ ...MEASURED, nq: SAGE_TC_AUTO_MIN_ROWS - 1 }, 'nvidia')).toBe(false);
    expect(sageTcAutoSelect({ ...MEASURED, nk: SAGE_TC_AUTO_MIN_ROWS - 1 }, 'nvidia')).toBe(false);
    expect(sageTcAutoSelect({ ...MEASURED, nq: 1 }, 'nvidia')).toBe(false);
  });

  test('bad input: a ValueError naming the argument', () => {
    const bad = (p: unknown, vendor: unknown, argument: string) =>
      expect(() => sageTcAutoSelect(p as typeof MEASURED, vendor as string)).toThrow(
        expect.objectContaining({ name: 'ValueError', argument }),
      );
    bad(null, 'nvidia', 'problem');
    bad({ ...MEASURED, d: 127.5 }, 'nvidia', 'problem.d');
    bad({ ...MEASURED, nk: -1 }, 'nvidia', 'problem.nk');
    bad({ ...MEASURED, pvBits: undefined }, 'nvidia', 'problem.pvBits');
    bad(MEASURED, undefined, 'vendor');
  });
});

// The H200's adapter as the engine sees it (session 25's context: 16 storage buffers asked for).
const H200 = {
  adapterInfo: { vendor: 'nvidia', architecture: 'hopper', device: '', description: '' },
  features: {
    subgroups: true,
    shaderF16: true,
    timestampQuery: true,
    subgroupMatrix: true,
    subgroupMinSize: 32,
    subgroupMaxSize: 32,
    subgroupMatrixConfigs: [{ M: 16, N: 16, K: 16, component: 'f16', result: 'f32' }],
  },
  limits: {
    maxComputeWorkgroupStorageSize: 49152,
    maxComputeInvocationsPerWorkgroup: 1024,
    maxComputeWorkgroupSizeX: 1024,
    maxComputeWorkgroupsPerDimension: 65535,
    maxStorageBuffersPerShaderStage: 16,
    maxStorageBufferBindingSize: 2 ** 31,
    maxBufferSize: 2 ** 31,
  },
};
type Stand = typeof H200;
const ctxOf = (c: Stand) => c as unknown as WebGpuContext;
const with_ = <K extends 'features' | 'limits' | 'adapterInfo'>(k: K, x: Partial<Stand[K]>) =>
  ctxOf({ ...H200, [k]: { ...H200[k], ...x } });

function codec(over: Partial<SageCodecGpu['dims']> = {}, pvBits: 8 | 32 = 8): SageCodecGpu {
  const none = {} as GPUBuffer;
  return {
    dims: { batch: 4, hq: 32, hkv: 32, nq: 4096, nk: 4096, d: 128, dv: 128, ...over },
    granularity: 'warp',
    pvBits,
    qCodes: none,
    qScale: none,
    kCodes: none,
    kScale: none,
    ...(pvBits === 8 ? { vCodes: none, vScale: none } : { v: none }),
    bias: none,
  };
}

describe('sageAutoTensorCores (stand-in contexts, nothing runs)', () => {
  test("the H200 at the measured shape: the f16 engine; GQA and causal's shape alike", () => {
    expect(sageAutoTensorCores(ctxOf(H200), codec())).toEqual({ engine: 'f16' });
    expect(sageAutoTensorCores(ctxOf(H200), codec({ hkv: 8 }))).toEqual({ engine: 'f16' });
  });

  test('the portable kernel where the rule or the adapter says no', () => {
    expect(sageAutoTensorCores(with_('adapterInfo', { vendor: 'mesa' }), codec())).toBeUndefined();
    expect(sageAutoTensorCores(ctxOf(H200), codec({ nq: 16 }))).toBeUndefined();
    expect(sageAutoTensorCores(ctxOf(H200), codec({ d: 64, dv: 64 }))).toBeUndefined();
    expect(sageAutoTensorCores(ctxOf(H200), codec({}, 32))).toBeUndefined();
    // No f16 matrices, other subgroup widths, no shader-f16.
    expect(
      sageAutoTensorCores(with_('features', { subgroupMatrixConfigs: [] }), codec()),
    ).toBeUndefined();
    expect(
      sageAutoTensorCores(with_('features', { subgroupMinSize: 16, subgroupMaxSize: 64 }), codec()),
    ).toBeUndefined();
    expect(sageAutoTensorCores(with_('features', { shaderF16: false }), codec())).toBeUndefined();
    // WebGPU's default of 8 storage buffers a stage (the engine binds more).
    expect(
      sageAutoTensorCores(with_('limits', { maxStorageBuffersPerShaderStage: 8 }), codec()),
    ).toBeUndefined();
    // Too little workgroup memory for any tile.
    expect(
      sageAutoTensorCores(with_('limits', { maxComputeWorkgroupStorageSize: 16384 }), codec()),
    ).toBeUndefined();
    // K's codes as halves past one binding (4 x 32 x 4096 x 128 x 2 bytes = 128 MiB).
    expect(
      sageAutoTensorCores(with_('limits', { maxStorageBufferBindingSize: 2 ** 26 }), codec()),
    ).toBeUndefined();
  });
});

// The fallback of an automatic choice: llvmpipe dressed as the H200 (vendor and features; its
// own limits fit the engine's 2- and 1-subgroup tiles), so an unset tensorCores picks the f16
// engine at the measured shape, and every tile's pipeline is refused as a compile past its time
// limit (injected, as the pipeline cache reports one). Unset: the portable kernel runs, the same
// bits as tensorCores: false. Asked for by name: PipelineFallbackError. A window of 16 keys keeps
// llvmpipe's work small at Nq = Nk = 4096.
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

describe.skipIf(!ctx)(
  'an automatic choice whose tiles all fail to compile: the portable kernel',
  () => {
    test('unset: the portable kernel, bit for bit; named: PipelineFallbackError', async () => {
      const g = ctx!;
      const n = SAGE_TC_AUTO_MIN_ROWS;
      const dims = { batch: 1, hq: 1, hkv: 1, nq: n, nk: n, d: 128, dv: 128 };
      const rng = new Rng(4242);
      const x = () => rng.randn([n * 128]).toFloat32Array();
      const config = {
        qBits: Uint8Array.of(8),
        granularity: 'warp' as const,
        smoothK: true,
        smoothQ: true,
        pvBits: 8 as const,
      };
      const codec = sageCodecToGpu(g, quantizeSageTs(x(), x(), x(), dims, config));
      const opts = {
        scale: 1 / Math.sqrt(128),
        causal: true,
        window: [16, 0] as [number, number],
        returnLse: false,
      };
      const read = async (r: { o: GPUBuffer; lse?: GPUBuffer }) => {
        const o = new Float32Array(await g.readBuffer(r.o, n * 128 * 4));
        g.pool.release(r.o);
        if (r.lse) g.pool.release(r.lse);
        return o;
      };
      const real = { adapterInfo: g.adapterInfo, features: g.features };
      const tried: string[] = [];
      const spy = interceptPipelines(g, (program) => {
        if (!program.label?.includes('tensor cores')) return undefined;
        tried.push(program.label);
        return lateCompile(program);
      });
      g.poisonOutputs = true;
      try {
        Object.defineProperty(g, 'adapterInfo', {
          value: { ...real.adapterInfo, vendor: 'nvidia' },
        });
        Object.defineProperty(g, 'features', {
          value: {
            ...real.features,
            shaderF16: true,
            subgroupMinSize: 32,
            subgroupMaxSize: 32,
            subgroupMatrixConfigs: H200.features.subgroupMatrixConfigs,
          },
        });
        expect(sageAutoTensorCores(g, codec)).toEqual({ engine: 'f16' });
        const auto = await read(await sageForwardWebGpu(g, codec, opts));
        // Both tiles that fit llvmpipe's 32 KiB were tried, then the portable kernel ran.
        expect(tried.length).toBe(2);
        const portable = await read(
          await sageForwardWebGpu(g, codec, { ...opts, tensorCores: false }),
        );
        expect(auto.every(Number.isFinite)).toBe(true);
        expect(Array.from(auto)).toEqual(Array.from(portable));
        await expect(
          sageForwardWebGpu(g, codec, { ...opts, tensorCores: { engine: 'f16' } }),
        ).rejects.toBeInstanceOf(PipelineFallbackError);
      } finally {
        spy.mockRestore();
        g.poisonOutputs = false;
        Object.defineProperty(g, 'adapterInfo', { value: real.adapterInfo });
        Object.defineProperty(g, 'features', { value: real.features });
        disposeSageCodecGpu(g, codec);
      }
    });
  },
);
