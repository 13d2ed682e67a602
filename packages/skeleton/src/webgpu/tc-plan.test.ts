import { ValueError } from '@attnkit/tensor';
import type { SubgroupMatrixComponent, SubgroupMatrixConfig } from '@attnkit/webgpu';
import { describe, expect, test } from 'vitest';
import {
  describeTcPlan,
  planTensorCoreTiles,
  TC_MAX_MATRICES_PER_SIDE,
  TC_REGISTER_BUDGET_FLOATS,
  type TcPass,
  type TcPlanInput,
  tcQDirectFits,
} from './tc-plan.js';

const cfg = (
  component: SubgroupMatrixComponent,
  result: SubgroupMatrixComponent,
  M: number,
  N: number,
  K: number,
): SubgroupMatrixConfig => ({ component, result, M, N, K });

/** The H200's Vulkan adapter with Dawn's toggles (../shared/gpu/README.md section 2, 2026-12-02). */
const H200_CONFIGS: SubgroupMatrixConfig[] = [
  cfg('f16', 'f16', 16, 16, 16),
  cfg('f16', 'f16', 16, 8, 16),
  cfg('f16', 'f16', 16, 8, 8),
  cfg('f16', 'f32', 16, 16, 16),
  cfg('f16', 'f32', 16, 8, 16),
  cfg('f16', 'f32', 16, 8, 8),
  cfg('u8', 'u32', 16, 16, 32),
  cfg('u8', 'u32', 16, 8, 32),
  cfg('i8', 'i32', 16, 16, 32),
  cfg('i8', 'i32', 16, 8, 32),
];

const H200: Omit<TcPlanInput, 'pass' | 'd' | 'dv'> = {
  subgroupMatrixConfigs: H200_CONFIGS,
  subgroupMinSize: 32,
  subgroupMaxSize: 32,
  maxComputeWorkgroupStorageSize: 49152,
  maxComputeInvocationsPerWorkgroup: 1024,
};

const plan = (pass: TcPass, d: number, dv = d, over: Partial<TcPlanInput> = {}) =>
  planTensorCoreTiles({ ...H200, pass, d, dv, ...over });

describe('tensor-core tile planner on the H200', () => {
  test.each([
    ['forward', 64, 64],
    ['forward', 128, 128],
    ['forward', 64, 128],
    ['forward', 80, 80],
    ['dq', 64, 64],
    ['dq', 128, 128],
    ['dkdv', 64, 64],
  ] as const)('%s D=%i Dv=%i: every candidate fits the limits and the model', (pass, d, dv) => {
    const plans = plan(pass, d, dv);
    expect(plans.length).toBeGreaterThan(0);
    for (const p of plans) {
      const where = describeTcPlan(p);
      // f16 x f16 -> f32 only: the f16-accumulating and integer configs are never used.
      expect(p.config.component, where).toBe('f16');
      expect(p.config.result, where).toBe('f32');
      expect(p.workgroupBytes, where).toBeLessThanOrEqual(49152);
      expect(p.workgroupBytes, where).toBe(p.buffers * p.stageBytes + p.scratchBytes);
      expect(p.threads, where).toBe(p.subgroups * 32);
      expect(p.threads % 32, where).toBe(0);
      expect(p.threads, where).toBeLessThanOrEqual(1024);
      expect(p.matrices.rows, where).toBeLessThanOrEqual(TC_MAX_MATRICES_PER_SIDE);
      expect(p.matrices.cols, where).toBeLessThanOrEqual(TC_MAX_MATRICES_PER_SIDE);
      expect(p.registerFloats, where).toBeLessThanOrEqual(TC_REGISTER_BUDGET_FLOATS);
      expect(p.registerFloats, where).toBe((p.accumulatorMatrices * p.config.M * p.config.N) / 32);
      expect(p.br, where).toBe(p.subgroups * p.rowsPerSubgroup);
      expect(p.rowsPerSubgroup, where).toBe(p.matrices.rows * p.config.M);
      expect(p.bc, where).toBe(p.matrices.cols * p.config.N);
      expect(p.bc % p.config.K, where).toBe(0);
      expect(p.dPad % p.config.K, where).toBe(0);
      expect(p.dPad % p.config.N, where).toBe(0);
      expect(p.dPad, where).toBeGreaterThanOrEqual(d);
      expect(p.dvPad, where).toBeGreaterThanOrEqual(dv);
      expect(p.pass).toBe(pass);
    }
    // No duplicates.
    expect(new Set(plans.map(describeTcPlan)).size).toBe(plans.length);
  });

  test('forward D=128: 16x16x16, 4 subgroups (128 threads), 1x2 matrices, double-buffered', () => {
    const [best] = plan('forward', 128);
    expect(best).toMatchObject({
      config: { M: 16, N: 16, K: 16, component: 'f16', result: 'f32' },
      subgroups: 4,
      threads: 128,
      matrices: { rows: 1, cols: 2 },
      br: 64,
      bc: 32,
      buffers: 2,
      // K and V tiles of 32 keys x (128 + 128) f16.
      stageBytes: 32 * 256 * 2,
      // S f32 + P f16 for 16 rows x 32 keys, plus max and sum per row, per subgroup.
      scratchBytes: 4 * (16 * 32 * 6 + 16 * 8),
      // S 1x2 and O 1x8 matrices of 16x16 f32 over 32 lanes.
      accumulatorMatrices: 10,
      registerFloats: 80,
    });
  });

  test('forward D=64: a square 2x2 tile per subgroup comes first', () => {
    const [best] = plan('forward', 64);
    expect(best).toMatchObject({
      config: { M: 16, N: 16, K: 16 },
      subgroups: 4,
      matrices: { rows: 2, cols: 2 },
      br: 128,
      bc: 32,
      buffers: 2,
    });
  });

  test('ordered by the documented keys: 16x16x16 first, then 128-256 threads, then tile size', () => {
    const plans = plan('forward', 64);
    const volume = plans.map((p) => p.config.M * p.config.N * p.config.K);
    expect(volume).toEqual([...volume].sort((a, b) => b - a));
    const first = plans.filter((p) => p.config.N === 16 && p.config.K === 16);
    const inWindow = first.map((p) => p.threads >= 128 && p.threads <= 256);
    // All candidates of 128-256 threads come before the others of the same shape.
    expect(inWindow.indexOf(false)).toBeGreaterThan(inWindow.lastIndexOf(true));
    const windowed = first.filter((p) => p.threads >= 128 && p.threads <= 256);
    const counts = windowed.map((p) => p.matrices.rows * p.matrices.cols);
    expect(counts).toEqual([...counts].sort((a, b) => b - a));
    // The smaller shapes are there as fallbacks.
    expect(plans.some((p) => p.config.N === 8 && p.config.K === 8)).toBe(true);
  });

  test('the register budget drops tiles that spilled (4x8 and larger never; 4x4 only when O fits)', () => {
    for (const p of [...plan('forward', 32), ...plan('forward', 128)]) {
      expect(p.matrices.rows * p.matrices.cols).toBeLessThanOrEqual(16);
    }
    // D=32 on 16x16x16: S 4x4 plus O 4x2 = 24 matrices = 192 floats: over the budget. On
    // 16x8x8 (half the values per matrix) S 4x4 plus O 4x4 = 32 matrices = 128 floats fits.
    const at32 = plan('forward', 32).filter((p) => p.matrices.rows === 4 && p.matrices.cols === 4);
    expect(at32.length).toBeGreaterThan(0);
    expect(at32.every((p) => p.config.N === 8 && p.registerFloats === 128)).toBe(true);
    // D=16 on 16x8x8: S 2x2 (BC = 16) plus O 2x2 = 8 matrices of 16x8 = 32 floats.
    expect(plan('forward', 16).length).toBeGreaterThan(0);
  });

  test('head dims that are not multiples of 16 are padded', () => {
    const [best] = plan('forward', 72, 40);
    expect(best!.dPad).toBe(80);
    expect(best!.dvPad).toBe(48);
  });

  test('double buffering only when both buffers fit; single otherwise', () => {
    const roomy = plan('forward', 128, 128, { maxComputeWorkgroupStorageSize: 1 << 20 });
    expect(roomy.every((p) => p.buffers === 2)).toBe(true);
    const tight = plan('forward', 128, 128, { maxComputeWorkgroupStorageSize: 16384 });
    expect(tight.length).toBeGreaterThan(0);
    for (const p of tight) {
      expect(p.workgroupBytes).toBeLessThanOrEqual(16384);
      if (p.buffers === 1) expect(2 * p.stageBytes + p.scratchBytes).toBeGreaterThan(16384);
    }
  });

  test('the invocation limit caps the subgroups', () => {
    const plans = plan('forward', 64, 64, { maxComputeInvocationsPerWorkgroup: 128 });
    expect(Math.max(...plans.map((p) => p.threads))).toBe(128);
  });

  test('dK/dV at D = Dv = 128 has no candidate: both accumulators alone fill the budget', () => {
    // dK 1x8 + dV 1x8 matrices = 128 floats per invocation before any score tile.
    expect(plan('dkdv', 128)).toEqual([]);
    expect(plan('dkdv', 64).length).toBeGreaterThan(0);
  });

  test('subgroup size 64 halves the registers per invocation', () => {
    const at64 = plan('forward', 128, 128, { subgroupMinSize: 64, subgroupMaxSize: 64 });
    expect(at64[0]!.registerFloats).toBe((at64[0]!.accumulatorMatrices * 256) / 64);
    expect(at64.every((p) => p.threads % 64 === 0)).toBe(true);
  });
});

describe('no tensor-core path', () => {
  test('no configs (llvmpipe, SwiftShader, NVIDIA without the Dawn toggles)', () => {
    expect(plan('forward', 64, 64, { subgroupMatrixConfigs: [] })).toEqual([]);
  });

  test('configs, but none f16 x f16 -> f32', () => {
    const noF32 = H200_CONFIGS.filter((c) => c.result !== 'f32');
    expect(plan('forward', 64, 64, { subgroupMatrixConfigs: noF32 })).toEqual([]);
  });

  test('no subgroups', () => {
    expect(plan('forward', 64, 64, { subgroupMinSize: 0, subgroupMaxSize: 0 })).toEqual([]);
  });

  test('nothing fits the workgroup memory', () => {
    expect(plan('forward', 64, 64, { maxComputeWorkgroupStorageSize: 1024 })).toEqual([]);
  });

  test('a head dim too large for the register budget', () => {
    expect(plan('forward', 256, 256)).toEqual([]);
  });
});

describe('argument errors name the argument', () => {
  test.each([
    [{ pass: 'backward' }, /^pass: expected "forward", "dq" or "dkdv"/],
    [{ d: 0 }, /^d: expected an integer >= 1/],
    [{ dv: 1.5 }, /^dv: expected an integer >= 1/],
    [{ maxComputeWorkgroupStorageSize: -1 }, /^maxComputeWorkgroupStorageSize: /],
    [{ maxComputeInvocationsPerWorkgroup: 0 }, /^maxComputeInvocationsPerWorkgroup: /],
    [{ subgroupMinSize: -32 }, /^subgroupMinSize: expected an integer >= 0/],
    [{ subgroupMatrixConfigs: undefined }, /^subgroupMatrixConfigs: expected an array/],
  ])('%o', (over, message) => {
    const input = { ...H200, pass: 'forward', d: 64, dv: 64, ...over } as TcPlanInput;
    expect(() => planTensorCoreTiles(input)).toThrow(ValueError);
    expect(() => planTensorCoreTiles(input)).toThrow(message);
  });

  test('not an object', () => {
    expect(() => planTensorCoreTiles(null as unknown as TcPlanInput)).toThrow(/^input: /);
  });
});

describe('tcQDirectFits: every 16-row block of Q within its buffer', () => {
  const bhnd = (batch: number, hq: number, n: number, d: number) => ({
    layout: 'BHND' as const,
    batch,
    hq,
    d,
    dv: d,
    maxSeqQ: n,
    seqQ: Int32Array.from({ length: batch }, () => n),
    startQ: new Int32Array(batch),
    qRow: d,
    oRow: d,
  });
  test("BHND: rows a multiple of 16 fit exactly; odd rows need the last head's slack", () => {
    expect(tcQDirectFits(bhnd(2, 3, 64, 128), 2 * 3 * 64 * 128)).toBe(true);
    // 37 rows: the last block ends at row 48 of the last head, 11 rows past the tensor.
    const p = bhnd(1, 2, 37, 16);
    expect(tcQDirectFits(p, 2 * 37 * 16)).toBe(false);
    expect(tcQDirectFits(p, 2 * 37 * 16 + 11 * 16 - 1)).toBe(false);
    expect(tcQDirectFits(p, 2 * 37 * 16 + 11 * 16)).toBe(true);
  });
  test('bad arguments are ValueErrors naming them', () => {
    const p = bhnd(1, 1, 16, 16);
    expect(() => tcQDirectFits(p, -1)).toThrow(ValueError);
    expect(() => tcQDirectFits(p, Number.NaN)).toThrow(/^elements: expected a non-negative number/);
    expect(() => tcQDirectFits(p, 256, 'k' as 'q')).toThrow(
      /^tensor: expected "q" or "o", got "k"/,
    );
  });
  test("THD: a short sequence reads the next one; only the buffer's end counts", () => {
    // Sequences of 5, 0 and 32 tokens, 2 heads of 16: the first block of sequence 0 covers
    // tokens 0 .. 15 (in sequence 2), the empty one loads nothing, sequence 2 ends at 37.
    const p = {
      layout: 'THD' as const,
      batch: 3,
      hq: 2,
      d: 16,
      dv: 48,
      maxSeqQ: 32,
      seqQ: Int32Array.from([5, 0, 32]),
      startQ: Int32Array.from([0, 5, 5]),
      qRow: 32,
      oRow: 96,
    };
    expect(tcQDirectFits(p, 37 * 32)).toBe(true);
    // dO (o's layout: Dv 48, rows of 2 x 48): the same rows, three times the elements.
    expect(tcQDirectFits(p, 37 * 96, 'o')).toBe(true);
    expect(tcQDirectFits(p, 37 * 96 - 1, 'o')).toBe(false);
    expect(tcQDirectFits({ ...p, seqQ: Int32Array.from([5, 0, 31]) }, 36 * 32)).toBe(false);
    expect(tcQDirectFits({ ...p, seqQ: Int32Array.from([5, 0, 31]) }, 37 * 32)).toBe(true);
  });
});
