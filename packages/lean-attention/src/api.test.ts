import { softmaxAttentionReference, toleranceFor } from '@attnkit/attention';
import { DTypeError, Rng, Tensor, ValueError } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { describe, expect, test } from 'vitest';
import {
  DEFAULT_SPLITS,
  defaultLeanSplits,
  defaultLeanWorkers,
  type LeanAttentionOptions,
  leanAttention,
  leanTiledOptions,
  WEBGPU_ASSUMED_COMPUTE_UNITS,
  WEBGPU_DEFAULT_SPLITS,
  WORKERS_PER_UNIT,
} from './index.js';

const PARTITIONS: LeanAttentionOptions[] = [
  { partition: 'fa2' },
  { partition: 'splitK' },
  { partition: 'splitK', splits: 3 },
  {}, // streamK with the backend's default workers
  { partition: 'streamK', workers: 5 },
];

describe('leanAttention (the public function)', () => {
  test.each(['ts', 'native'] as const)(
    '%s: every partition equals the float64 reference (GQA 8/2, causal, f16)',
    async (backend) => {
      const rng = new Rng(7 + backend.length);
      const nk = 257; // not a multiple of any tile
      const q = rng.randn([2, 8, 3, 40], 'f16');
      const k = rng.randn([2, 2, nk, 40], 'f16');
      const v = rng.randn([2, 2, nk, 24], 'f16');
      const ref = softmaxAttentionReference(q, k, v, { causal: true });
      const tol = toleranceFor({ dtype: 'f16', maxSeqLen: nk });
      for (const p of PARTITIONS) {
        const { o, lse } = await leanAttention(q, k, v, { ...p, causal: true, backend });
        expect(o.dtype).toBe('f16');
        expect(o.shape).toEqual([2, 8, 3, 24]);
        expectClose(o, ref.o, tol, `${JSON.stringify(p)} o`);
        expectClose(lse, ref.lse, tol, `${JSON.stringify(p)} lse`);
      }
    },
  );

  test('webgpu: every partition equals the float64 reference (THD, an empty sequence)', async () => {
    const ctx = await webGpuTestContext();
    if (!ctx) return; // no adapter (ATTNKIT_ALLOW_NO_WEBGPU=1)
    try {
      const rng = new Rng(11);
      const cuSeqlensQ = Int32Array.from([0, 1, 2, 2, 4]);
      const cuSeqlensK = Int32Array.from([0, 300, 300, 301, 420]);
      const q = rng.randn([4, 4, 32]);
      const k = rng.randn([420, 1, 32]);
      const v = rng.randn([420, 1, 32]);
      const common = {
        layout: 'THD' as const,
        cuSeqlensQ,
        cuSeqlensK,
        window: [64, 0] as [number, number],
      };
      const ref = softmaxAttentionReference(q, k, v, common);
      const lseRef = ref.lse.toFloat32Array();
      // lse is [Hq, totalQ]: query token 1 (sequence 1) has no keys in every head.
      for (let h = 0; h < 4; h++) expect(lseRef[h * 4 + 1]).toBe(Number.NEGATIVE_INFINITY);
      const tol = toleranceFor({ dtype: 'f32', maxSeqLen: 300 });
      for (const p of PARTITIONS) {
        const [qg, kg, vg] = [q, k, v].map((x) => toWebGpu(x, ctx));
        const r = await leanAttention(qg!, kg!, vg!, { ...p, ...common });
        const o = await r.o.toCpu();
        const lse = await r.lse.toCpu();
        expectClose(o, ref.o, tol, `${JSON.stringify(p)} o`);
        expect(Array.from(lse.toFloat32Array())).toEqual(
          expect.arrayContaining([Number.NEGATIVE_INFINITY]),
        );
        expectClose(lse, ref.lse, tol, `${JSON.stringify(p)} lse`);
        for (const x of [qg, kg, vg, r.o, r.lse]) x!.dispose();
      }
    } finally {
      ctx.destroy();
    }
  });

  test('typed errors name the option', async () => {
    const rng = new Rng(3);
    const q = rng.randn([1, 2, 1, 16]);
    const k = rng.randn([1, 2, 9, 16]);
    const call = (o: unknown) => leanAttention(q, k, k, o as LeanAttentionOptions);
    const named = async (o: unknown, argument: string, cls: unknown = ValueError) => {
      const e = await call(o).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(cls as never);
      expect((e as { argument?: string }).argument).toBe(argument);
    };
    await named({ partition: 'leanK' }, 'partition');
    await named({ partition: 'fa2', workers: 2 }, 'workers');
    await named({ partition: 'splitK', workers: 2 }, 'workers');
    await named({ splits: 2 }, 'splits');
    await named({ partition: 'fa2', splits: 2 }, 'splits');
    await named({ workers: -1 }, 'workers');
    await named({ workers: 1.5 }, 'workers');
    await named({ partition: 'splitK', splits: 0 }, 'splits');
    await named({ numSplits: 2 }, 'numSplits');
    await named({ algorithm: 'fa1' }, 'algorithm');
    const q64 = Tensor.from(new Float64Array(32), [1, 2, 1, 16], 'f64');
    const e = await leanAttention(q64, k, k).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(DTypeError);
  });

  test("each partition becomes the skeleton's schedule option, and nothing else", () => {
    const q = new Rng(1).randn([3, 4, 1, 16]);
    const cu = Int32Array.of(0, 1, 1, 3);
    const qt = new Rng(2).randn([3, 6, 16]);
    const thdBase = { layout: 'THD', cuSeqlensQ: cu, cuSeqlensK: cu } as const;
    expect(leanTiledOptions({ partition: 'fa2', causal: true }, q)).toEqual({ causal: true });
    // Default splits: 4 on ts / native (q is a CPU tensor here), 16 on webgpu.
    expect(leanTiledOptions({ partition: 'splitK', backend: 'ts' }, q)).toEqual({
      backend: 'ts',
      numSplits: DEFAULT_SPLITS,
    });
    expect(leanTiledOptions({ partition: 'splitK', backend: 'webgpu' }, q).numSplits).toBe(16);
    // The batch counts: 3 BHND sequences -> 16; THD's 3 sequences likewise; B 32 -> 2.
    const q32 = new Rng(3).randn([32, 2, 1, 8]);
    expect(leanTiledOptions({ partition: 'splitK', backend: 'webgpu' }, q32).numSplits).toBe(2);
    expect(
      leanTiledOptions({ ...thdBase, partition: 'splitK', backend: 'webgpu' }, qt).numSplits,
    ).toBe(16);
    expect(leanTiledOptions({ partition: 'splitK', splits: 7 }, q)).toEqual({ numSplits: 7 });
    expect(leanTiledOptions({ workers: 9 }, q)).toEqual({ streamKWorkers: 9 });
    // Default workers: ts one per (batch, query head): 3 x 4 BHND; THD 3 sequences x 6 heads.
    expect(leanTiledOptions({ backend: 'ts' }, q)).toEqual({ backend: 'ts', streamKWorkers: 12 });
    const thd = { ...thdBase, backend: 'ts' } as const;
    expect(leanTiledOptions(thd, qt).streamKWorkers).toBe(18);
    expect(leanTiledOptions({ backend: 'webgpu' }, q).streamKWorkers).toBe(
      WEBGPU_ASSUMED_COMPUTE_UNITS,
    );
  });

  test('default workers and splits follow the documented rule', () => {
    expect(DEFAULT_SPLITS).toBe(4);
    expect(defaultLeanSplits('ts')).toBe(4);
    expect(defaultLeanSplits('native')).toBe(4);
    expect(defaultLeanSplits('webgpu')).toBe(WEBGPU_DEFAULT_SPLITS);
    expect(WEBGPU_DEFAULT_SPLITS).toBe(16);
    // webgpu: batch x splits <= 64, at least one split (partials and the z dispatch bounded).
    expect(defaultLeanSplits('webgpu', 4)).toBe(16);
    expect(defaultLeanSplits('webgpu', 5)).toBe(12);
    expect(defaultLeanSplits('webgpu', 8)).toBe(8);
    expect(defaultLeanSplits('webgpu', 64)).toBe(1);
    expect(defaultLeanSplits('webgpu', 70000)).toBe(1);
    expect(defaultLeanSplits('webgpu', 0)).toBe(16);
    expect(defaultLeanSplits('native', 64)).toBe(4);
    // Bad arguments: typed errors naming them.
    for (const batch of [-1, 1.5, Number.NaN])
      expect(() => defaultLeanSplits('webgpu', batch)).toThrow(
        expect.objectContaining({ name: 'ValueError', argument: 'batch' }),
      );
    expect(() => defaultLeanSplits('cuda' as 'ts')).toThrow(
      /backend: expected "ts", "native" or "webgpu", got "cuda"/,
    );
    expect(defaultLeanWorkers('ts', 6)).toBe(6);
    // webgpu: one 512-thread decode workgroup per assumed SM (README; measured best on the
    // H200), whatever the units.
    expect(defaultLeanWorkers('webgpu', 6)).toBe(132);
    expect(defaultLeanWorkers('webgpu', 6000)).toBe(WEBGPU_ASSUMED_COMPUTE_UNITS);
    expect(defaultLeanWorkers('native', 6) % WORKERS_PER_UNIT).toBe(0);
    expect(defaultLeanWorkers('native', 6)).toBeGreaterThanOrEqual(WORKERS_PER_UNIT);
  });
});
