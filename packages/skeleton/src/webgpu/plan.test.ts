import { ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import {
  planWebGpuFlash,
  WEBGPU_TILE_CANDIDATES,
  type WebGpuFlashKernel,
  type WebGpuFlashPlan,
} from './plan.js';

const LLVMPIPE = { maxComputeWorkgroupStorageSize: 32768, maxComputeInvocationsPerWorkgroup: 1024 };
const H100 = {
  maxComputeWorkgroupStorageSize: 49152,
  maxComputeInvocationsPerWorkgroup: 1024,
  subgroupMinSize: 32,
};
const SWIFTSHADER = {
  maxComputeWorkgroupStorageSize: 32768,
  maxComputeInvocationsPerWorkgroup: 256,
  subgroupMinSize: 4,
};
/** Room for both 128-thread shapes (64 x 64 and 32 x 64 tiles) but not for 256 threads. */
const TWO_SHAPES = {
  maxComputeWorkgroupStorageSize: 24576,
  maxComputeInvocationsPerWorkgroup: 128,
};
const KERNELS: WebGpuFlashKernel[] = ['forward', 'dq', 'dkdv'];

describe('planWebGpuFlash', () => {
  test('64x64 tiles of 256 threads with 16-deep chunks for D = 128 on every device', () => {
    for (const limits of [LLVMPIPE, H100, SWIFTSHADER]) {
      for (const kernel of KERNELS) {
        const p = planWebGpuFlash({ kernel, d: 128, dv: 128, ...limits });
        expect([p.br, p.bc, p.threads, p.kc, p.mc]).toEqual([64, 64, 256, 16, 16]);
        expect([p.wuD, p.wuV]).toEqual([2, 2]);
      }
    }
  });

  test('every plan fits its device and is self-consistent', () => {
    for (const limits of [
      LLVMPIPE,
      H100,
      SWIFTSHADER,
      { maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 64 },
    ]) {
      for (const kernel of KERNELS) {
        for (const d of [1, 5, 16, 40, 64, 80, 128, 256]) {
          for (const dv of [d, 16, 96]) {
            const p = planWebGpuFlash({ kernel, d, dv, ...limits });
            expect(p.workgroupBytes).toBeLessThanOrEqual(limits.maxComputeWorkgroupStorageSize);
            expect(p.threads).toBeLessThanOrEqual(limits.maxComputeInvocationsPerWorkgroup);
            expect(p.br).toBe(4 * p.ty);
            expect(p.bc).toBe(4 * p.tx * p.cu);
            expect(p.bc % p.mc).toBe(0);
            expect(p.kc % 4).toBe(0);
            // Accumulators cover the head dims in vec4 groups of the TX threads of a row.
            expect(4 * p.tx * p.wuD).toBeGreaterThanOrEqual(d);
            expect(4 * p.tx * p.wuV).toBeGreaterThanOrEqual(dv);
            const width =
              kernel === 'forward' ? p.wuV : kernel === 'dq' ? p.wuD : Math.max(p.wuD, p.wuV);
            expect(p.stageFloats).toBeGreaterThanOrEqual(p.kc * (p.br + p.bc));
            expect(p.stageFloats).toBeGreaterThanOrEqual(p.mc * 4 * p.tx * width);
            if (kernel === 'forward') expect(p.stageFloats).toBeGreaterThanOrEqual(p.tx * p.br);
            expect(p.zFloats).toBe(p.br * p.bc);
            expect(p.workgroupBytes).toBe(4 * (p.stageFloats + p.zFloats));
          }
        }
      }
    }
  });

  test('predicted I/O: the FA2 closed forms at the tile, and the least among admissible shapes', () => {
    // Large-N rates (elements per N^2), counted independently: FA2's forward streams K and V once
    // per query tile of BR rows; dK/dV streams Q, dO, dQ (and L, D) once per key tile of BR rows.
    const rate = (p: WebGpuFlashPlan, d: number, dv: number) =>
      p.kernel === 'dkdv' ? (3 * d + dv + 2) / p.br : (d + dv) / p.br;
    // The model's working set: inputs, scores and accumulators of one tile, f32.
    const footprint = (p: WebGpuFlashPlan, d: number, dv: number) => {
      if (p.kernel !== 'dkdv') return 4 * (p.br * (d + dv + 2) + p.bc * (d + dv) + p.br * p.bc);
      const [bq, bk] = [p.bc, p.br];
      return (
        4 * Math.max(2 * bq * dv + bq, 2 * bk * (d + dv) + bq * (2 * d + dv + 2) + 2 * bq * bk)
      );
    };
    for (const limits of [
      LLVMPIPE,
      H100,
      SWIFTSHADER,
      { maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 128 },
      { maxComputeWorkgroupStorageSize: 12288, maxComputeInvocationsPerWorkgroup: 1024 },
      TWO_SHAPES,
    ]) {
      for (const kernel of KERNELS) {
        for (const [d, dv] of [
          [64, 64],
          [128, 128],
          [256, 256],
          [40, 96],
        ]) {
          const p = planWebGpuFlash({ kernel, d: d!, dv: dv!, ...limits });
          expect(p.predictedIO).toBeCloseTo(rate(p, d!, dv!), 12);
          expect(p.ioFootprintBytes).toBe(footprint(p, d!, dv!));
          expect(p.workgroupBytes).toBeLessThanOrEqual(limits.maxComputeWorkgroupStorageSize);
          // Admissible: a candidate shape with some chunk depth that fits the device. None has
          // more threads, and none with as many threads is predicted to move less.
          for (const [tx, ty, cu] of WEBGPU_TILE_CANDIDATES) {
            for (const kc of [4, 8, 16, 32]) {
              for (const mc of [4, 8, 16, 32]) {
                let other: WebGpuFlashPlan;
                try {
                  other = planWebGpuFlash({
                    kernel,
                    d: d!,
                    dv: dv!,
                    ...limits,
                    tiles: { tx, ty, cu, kc, mc },
                  });
                } catch {
                  continue;
                }
                expect(other.threads).toBeLessThanOrEqual(p.threads);
                if (other.threads === p.threads) {
                  expect(other.predictedIO).toBeGreaterThanOrEqual(p.predictedIO);
                }
              }
            }
          }
        }
      }
    }
  });

  test('the I/O model decides between 128-thread shapes: 64 x 64 (BR = 64) over 32 x 64', () => {
    for (const kernel of KERNELS) {
      const p = planWebGpuFlash({ kernel, d: 64, dv: 64, ...TWO_SHAPES });
      const narrow = planWebGpuFlash({
        kernel,
        d: 64,
        dv: 64,
        ...TWO_SHAPES,
        tiles: { tx: 16, ty: 8, cu: 1, kc: 4, mc: 4 },
      });
      expect([p.tx, p.ty, p.cu, p.br, p.bc]).toEqual([8, 16, 2, 64, 64]);
      expect(narrow.threads).toBe(p.threads);
      expect(p.predictedIO).toBeLessThan(narrow.predictedIO);
    }
  });

  test('the forward exchanges row statistics through workgroup memory unless subgroups span a row', () => {
    expect(planWebGpuFlash({ kernel: 'forward', d: 64, dv: 64, ...LLVMPIPE }).subgroupReduce).toBe(
      false,
    );
    expect(planWebGpuFlash({ kernel: 'forward', d: 64, dv: 64, ...H100 }).subgroupReduce).toBe(
      true,
    );
    // 16 threads per row, subgroups of 4: the portable path.
    expect(
      planWebGpuFlash({ kernel: 'forward', d: 64, dv: 64, ...SWIFTSHADER }).subgroupReduce,
    ).toBe(false);
    const narrow = planWebGpuFlash({
      kernel: 'forward',
      d: 64,
      dv: 64,
      ...SWIFTSHADER,
      tiles: { tx: 4, ty: 8, cu: 2 },
    });
    expect(narrow.subgroupReduce).toBe(true);
    expect(planWebGpuFlash({ kernel: 'dq', d: 64, dv: 64, ...H100 }).subgroupReduce).toBe(false);
  });

  test('smaller devices get smaller tiles', () => {
    const p = planWebGpuFlash({
      kernel: 'dkdv',
      d: 256,
      dv: 256,
      maxComputeWorkgroupStorageSize: 16384,
      maxComputeInvocationsPerWorkgroup: 128,
    });
    expect(p.threads).toBeLessThanOrEqual(128);
    expect(p.workgroupBytes).toBeLessThanOrEqual(16384);
  });

  test('tile overrides are validated and must fit', () => {
    const base = { kernel: 'forward' as const, d: 64, dv: 64, ...LLVMPIPE };
    expect(planWebGpuFlash({ ...base, tiles: { tx: 8, ty: 8, cu: 1, kc: 8, mc: 8 } }).br).toBe(32);
    expect(() => planWebGpuFlash({ ...base, tiles: { tx: 6, ty: 8 } })).toThrow(
      /tiles.tx: expected a power of two/,
    );
    expect(() => planWebGpuFlash({ ...base, tiles: { tx: 8, ty: 8, kc: 6 } })).toThrow(/tiles.kc/);
    expect(() => planWebGpuFlash({ ...base, tiles: { tx: 8, ty: 8, mc: 12 } })).toThrow(
      /tiles.mc: expected a divisor of BC = 32/,
    );
    expect(() => planWebGpuFlash({ ...base, tiles: { tx: 32, ty: 64 } })).toThrow(
      /needs .* bytes of workgroup memory/,
    );
  });

  test('rejects bad inputs with ValueError naming them', () => {
    expect(() =>
      planWebGpuFlash({ kernel: 'sideways' as never, d: 8, dv: 8, ...LLVMPIPE }),
    ).toThrow(/kernel/);
    expect(() => planWebGpuFlash({ kernel: 'dq', d: 0, dv: 8, ...LLVMPIPE })).toThrow(
      /d: expected an integer >= 1/,
    );
    expect(() =>
      planWebGpuFlash({
        kernel: 'dq',
        d: 8,
        dv: 8,
        maxComputeWorkgroupStorageSize: 512,
        maxComputeInvocationsPerWorkgroup: 1024,
      }),
    ).toThrow(ValueError);
    expect(() => planWebGpuFlash(null as never)).toThrow(/input: expected an object/);
  });
});
