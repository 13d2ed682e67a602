import { fa2IO, simulate, tileFootprint } from '@attnkit/io-complexity';
import { Rng, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import {
  CPU_L2_1M,
  CPU_L2_256K,
  CPU_L2_512K_NEON,
  DEVICE_CLASSES,
  type DeviceClass,
  WEBGPU_DEFAULT,
  WEBGPU_DESKTOP,
  WEBGPU_H200,
} from './devices.js';
import {
  type FastProblem,
  invocationRegisters,
  planTwoLevel,
  simdRegisterBlock,
} from './planner.js';

const SEED = Number(process.env.ATTNKIT_TEST_SEED ?? Date.now() % 1_000_000);

/** Asserts the plan fits the class: every WebGPU kernel's storage, invocations and registers; the CPU tile's working set in L2. */
function expectFits(dev: DeviceClass, pr: FastProblem) {
  const plan = planTwoLevel(dev, pr);
  const label = `${dev.name} ${JSON.stringify(pr)}`;
  if (dev.kind === 'webgpu') {
    expect(plan.kind).toBe('webgpu');
    for (const k of ['forward', 'dq', 'dkdv'] as const) {
      const p = plan.webgpu!.plans[k];
      expect(p.workgroupBytes, `${label} ${k} storage`).toBeLessThanOrEqual(
        dev.maxComputeWorkgroupStorageSize,
      );
      expect(p.threads, `${label} ${k} invocations`).toBeLessThanOrEqual(
        dev.maxComputeInvocationsPerWorkgroup,
      );
      expect(invocationRegisters(p), `${label} ${k} registers`).toBeLessThanOrEqual(
        dev.registerFloats,
      );
      // No subgroup reduction without subgroups.
      if (!dev.subgroups) expect(p.subgroupReduce).toBe(false);
    }
    expect(plan.outer.fastBytes).toBe(plan.webgpu!.plans.forward.workgroupBytes);
    expect(plan.inner.rows * plan.inner.cols).toBeGreaterThan(0);
  } else {
    expect(plan.kind).toBe('cpu');
    const fp = tileFootprint({
      algo: 'fa2',
      headDim: pr.headDim,
      headDimV: pr.headDimV ?? pr.headDim,
      dtype: 'f32',
      blockQ: plan.outer.blockQ,
      blockK: plan.outer.blockK,
    });
    expect(fp.bytes, label).toBeLessThanOrEqual(dev.l2Bytes);
    expect(plan.outer.fastBytes).toBe(fp.bytes);
    expect(plan.inner.registers).toBeLessThanOrEqual(dev.vectorRegisters);
    expect(plan.outer.blockQ).toBeLessThanOrEqual(pr.seqQ);
    expect(plan.outer.blockK).toBeLessThanOrEqual(pr.seqK);
  }
  if (plan.defaultPlan) {
    expect(plan.predictedIO, `${label} vs default`).toBeLessThanOrEqual(
      plan.defaultPlan.predictedIO,
    );
  }
  return plan;
}

describe('planTwoLevel: documented device classes', () => {
  test('every class has a name in DEVICE_CLASSES', () => {
    for (const d of [
      WEBGPU_DEFAULT,
      WEBGPU_DESKTOP,
      WEBGPU_H200,
      CPU_L2_256K,
      CPU_L2_512K_NEON,
      CPU_L2_1M,
    ])
      expect(DEVICE_CLASSES[d.name]).toBe(d);
  });

  test("WebGPU default limits (16 KiB, 256 invocations): D = 64 and D = 128 fit, beating the skeleton's default tile on traffic", () => {
    for (const d of [32, 64, 128]) {
      const plan = expectFits(WEBGPU_DEFAULT, { seqQ: 4096, seqK: 4096, headDim: d });
      expect(plan.outer.fastBytes).toBeLessThanOrEqual(16384);
      expect(plan.defaultPlan).toBeDefined();
      expect(plan.predictedIO).toBeLessThan(plan.defaultPlan!.predictedIO);
    }
  });

  test('WebGPU plans stream tiles of 32 or more where one fits (not the I/O-optimal 128 x 16 at D = 64)', () => {
    for (const dev of [WEBGPU_DEFAULT, WEBGPU_H200])
      for (const d of [32, 64, 128]) {
        const plan = planTwoLevel(dev, { seqQ: 4096, seqK: 4096, headDim: d });
        const { forward, dq, dkdv } = plan.webgpu!.plans;
        expect(forward.bc, `${dev.name} D ${d} forward`).toBeGreaterThanOrEqual(32);
        expect(dq.bc, `${dev.name} D ${d} dq`).toBeGreaterThanOrEqual(32);
        expect(dkdv.br, `${dev.name} D ${d} dkdv`).toBeGreaterThanOrEqual(32);
      }
    // The H200's measured winner under the default limits at D = 64.
    const d64 = planTwoLevel(WEBGPU_DEFAULT, { seqQ: 4096, seqK: 4096, headDim: 64 });
    expect(d64.webgpu!.tiles.forward).toEqual({ tx: 8, ty: 16, rv: 1, cu: 1, kc: 16, mc: 16 });
  });

  test('a dense plan predicts exactly the I/O model closed form (FA2 forward, Nq = Nk)', () => {
    for (const dev of [WEBGPU_DEFAULT, WEBGPU_H200, CPU_L2_256K, CPU_L2_1M]) {
      const plan = planTwoLevel(dev, { seqQ: 1000, seqK: 1000, headDim: 64 });
      const io = fa2IO({ N: 1000, d: 64, M: 1 << 30 }, plan.outer);
      expect(plan.predictedIO, dev.name).toBe(io.total);
    }
  });

  test("a causal / window plan predicts the I/O simulator's count with the same tiles", () => {
    for (const dev of [WEBGPU_DEFAULT, CPU_L2_256K]) {
      for (const band of [
        { causal: true },
        { window: [40, 0] as const },
        { window: [16, 16] as const },
      ]) {
        const plan = planTwoLevel(dev, { seqQ: 300, seqK: 300, headDim: 32, ...band });
        const sim = simulate('fa2', { N: 300, d: 32, M: 1 << 30, ...band }, { blocks: plan.outer });
        // The simulator's tiles are clipped at N like the TS kernel's; on WebGPU the ragged
        // edge is masked but loads the same rows.
        expect(plan.predictedIO, `${dev.name} ${JSON.stringify(band)}`).toBe(sim.total);
      }
    }
  });

  test(`random problems fit every class and never predict more traffic than the default tile (seed ${SEED})`, () => {
    const rng = new Rng(SEED);
    const classes = Object.values(DEVICE_CLASSES);
    for (let n = 0; n < 24; n++) {
      const d = [16, 32, 64, 80, 128][rng.int(0, 5)]!;
      const pr: FastProblem = {
        seqQ: rng.int(1, 3000),
        seqK: rng.int(1, 3000),
        headDim: d,
        headDimV: rng.uniform() < 0.3 ? [32, 64][rng.int(0, 2)]! : d,
        ...(rng.uniform() < 0.4 ? { causal: true } : {}),
        ...(rng.uniform() < 0.3
          ? { window: [rng.int(-1, 300), rng.int(-1, 300)] as [number, number] }
          : {}),
      };
      expectFits(classes[n % classes.length]!, pr);
    }
  });

  test('the inner tile: 4 x 4 (rv = cu = 1) on WebGPU default limits; SIMD register blocks per ISA', () => {
    const plan = planTwoLevel('webgpu-default', { seqQ: 2048, seqK: 2048, headDim: 64 });
    expect(plan.inner.rows % 4).toBe(0);
    expect(plan.inner.cols % 4).toBe(0);
    // AVX2 16 registers: 4 x 3 vectors; AVX-512 / NEON 32 registers: 5 x 5.
    expect(simdRegisterBlock(16)).toEqual({ rows: 4, vectors: 3, registers: 16 });
    expect(simdRegisterBlock(32)).toEqual({ rows: 5, vectors: 5, registers: 31 });
    const cpu = planTwoLevel('cpu-1m', { seqQ: 2048, seqK: 2048, headDim: 64 });
    expect(cpu.inner).toEqual({ rows: 5, cols: 80, registers: 31 });
  });

  test('larger fast memory never predicts more traffic (same problem)', () => {
    const pr = { seqQ: 2048, seqK: 2048, headDim: 64, causal: true };
    const gpu = [WEBGPU_DEFAULT, WEBGPU_DESKTOP, WEBGPU_H200].map(
      (d) => planTwoLevel(d, pr).predictedIO,
    );
    expect(gpu[1]).toBeLessThanOrEqual(gpu[0]!);
    expect(gpu[2]).toBeLessThanOrEqual(gpu[1]!);
    const cpu = [CPU_L2_256K, CPU_L2_512K_NEON, CPU_L2_1M].map(
      (d) => planTwoLevel(d, pr).predictedIO,
    );
    expect(cpu[1]).toBeLessThanOrEqual(cpu[0]!);
    expect(cpu[2]).toBeLessThanOrEqual(cpu[1]!);
  });
});

describe('planTwoLevel: bad input', () => {
  test('typed errors naming the argument', () => {
    const pr = { seqQ: 8, seqK: 8, headDim: 8 };
    expect(() => planTwoLevel('tpu', pr)).toThrow(/device: expected one of webgpu-default/);
    expect(() =>
      planTwoLevel({ ...WEBGPU_DEFAULT, maxComputeWorkgroupStorageSize: 0 }, pr),
    ).toThrow(/device.maxComputeWorkgroupStorageSize/);
    expect(() => planTwoLevel({ kind: 'npu' } as never, pr)).toThrow(/device.kind/);
    expect(() => planTwoLevel('cpu-256k', { ...pr, seqQ: 0 })).toThrow(/seqQ/);
    expect(() => planTwoLevel('cpu-256k', { ...pr, headDim: 1.5 })).toThrow(/headDim/);
    expect(() => planTwoLevel('cpu-256k', { ...pr, dtype: 'f8' as never })).toThrow(/dtype/);
    expect(() => planTwoLevel('cpu-256k', { ...pr, window: [-2, 0] })).toThrow(ValueError);
    // Head dims no workgroup tile holds within 16 KiB and 128 registers.
    expect(() => planTwoLevel('webgpu-default', { ...pr, headDim: 4096 })).toThrow(
      /device: head dims/,
    );
    expect(() => planTwoLevel({ ...CPU_L2_256K, l2Bytes: 64 }, pr)).toThrow(/device: D = 8/);
  });
});
