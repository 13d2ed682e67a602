import { keyRange } from '@attnkit/attention';
import { Rng, ValueError } from '@attnkit/tensor';
import { BufferPool } from '@attnkit/webgpu';
import { describe, expect, test } from 'vitest';
import {
  GpuBudgetError,
  planStreaming,
  type StreamProblem,
  streamBuffers,
  streamSchedule,
  totalOf,
} from './plan.js';

const H200 = {
  queryTile: 64,
  keyTile: 32,
  maxStorageBufferBindingSize: 2 ** 31 - 4,
  maxBufferSize: 2 ** 31 - 4,
};

const LONG: StreamProblem = {
  batch: 1,
  hq: 32,
  hkv: 32,
  nq: 262144,
  nk: 262144,
  d: 128,
  dv: 128,
  dtype: 'f16',
  left: -1,
  right: 0,
  outputOnGpu: false,
};

const GiB = 2 ** 30;

describe('planStreaming', () => {
  test('256K tokens, H 32, D 128, f16 under 1 GiB (a quarter of K/V): fits, chunks are whole tiles', () => {
    const plan = planStreaming(LONG, GiB, H200);
    expect(plan.totalBytes).toBeLessThanOrEqual(GiB);
    expect(plan.chunkBuffers).toBe(2);
    expect(plan.hkvGroup).toBe(32);
    expect(plan.keyChunk % H200.keyTile).toBe(0);
    expect(plan.queryChunk % H200.queryTile).toBe(0);
    // The query chunk gets what the K/V double buffers leave: a few hundred MiB of K/V chunks.
    expect(plan.queryChunk).toBeGreaterThanOrEqual(8192);
    expect(plan.groups).toBe(Math.ceil(LONG.nq / plan.queryChunk));
    expect(totalOf(plan.buffers)).toBe(plan.totalBytes);
    // Every buffer is what the pool hands out for its role.
    expect(plan.buffers.k).toBe(BufferPool.sizeClass(32 * plan.keyChunk * 128 * 2));
    expect(plan.buffers.acc).toBe(BufferPool.sizeClass(32 * plan.queryChunk * 128 * 4));
  });

  test('decode (Nq 1) holds all heads and large key chunks; o on the GPU counts', () => {
    const plan = planStreaming({ ...LONG, nq: 1, outputOnGpu: true }, 256 * 2 ** 20, H200);
    expect(plan.queryChunk).toBe(1);
    expect(plan.keyChunk).toBe(4096);
    expect(plan.buffers.output).toBe(
      BufferPool.sizeClass(32 * 128 * 2) + BufferPool.sizeClass(32 * 4),
    );
    expect(plan.buffers.staging).toBe(0);
  });

  test('smaller budgets shrink the key chunk, then the head group; never a buffer over the binding limit', () => {
    const rng = new Rng(5);
    for (let n = 0; n < 200; n++) {
      const hkv = rng.int(1, 8);
      const p: StreamProblem = {
        batch: rng.int(1, 3),
        hkv,
        hq: hkv * rng.int(1, 4),
        nq: rng.int(0, 5000),
        nk: rng.int(0, 5000),
        d: 2 * rng.int(4, 64),
        dv: 2 * rng.int(4, 64),
        dtype: (['f32', 'f16', 'bf16'] as const)[rng.int(0, 2)]!,
        left: rng.int(-1, 300),
        right: rng.int(-1, 300),
        outputOnGpu: rng.int(0, 1) === 1,
      };
      const limits = {
        queryTile: 2 ** rng.int(3, 6),
        keyTile: 2 ** rng.int(3, 6),
        maxStorageBufferBindingSize: 2 ** rng.int(18, 27),
        maxBufferSize: 2 ** 28,
      };
      const budget = 2 ** rng.int(16, 28);
      let plan: ReturnType<typeof planStreaming>;
      try {
        plan = planStreaming(p, budget, limits);
      } catch (e) {
        expect(e).toBeInstanceOf(GpuBudgetError);
        const err = e as GpuBudgetError;
        expect(err.argument).toBe('gpuBudgetBytes');
        expect(err.budgetBytes).toBe(budget);
        continue;
      }
      expect(plan.totalBytes).toBeLessThanOrEqual(budget);
      const b = plan.buffers;
      for (const x of [b.q, b.acc, b.k, b.v, b.chunkO, b.groupO])
        expect(x).toBeLessThanOrEqual(limits.maxStorageBufferBindingSize);
      const nq = Math.max(1, p.nq);
      const nk = Math.max(1, p.nk);
      expect(
        plan.queryChunk === nq ||
          plan.queryChunk % limits.queryTile === 0 ||
          (p.left >= 0 && plan.queryChunk === plan.keyChunk),
      ).toBe(true);
      expect(plan.keyChunk === nk || plan.keyChunk % limits.keyTile === 0).toBe(true);
      expect(p.hkv % plan.hkvGroup).toBe(0);
      // The schedule of every query chunk is expressible (no ValueError) under the plan.
      for (let q0 = 0; q0 < p.nq; q0 += plan.queryChunk)
        streamSchedule(p, q0, Math.min(p.nq, q0 + plan.queryChunk), plan.keyChunk);
    }
  });

  test('a budget below one tile pair plus the resident part is a GpuBudgetError saying the least', () => {
    const least = totalOf(streamBuffers(LONG, 1, 64, 32));
    expect(() => planStreaming(LONG, least - 1, H200)).toThrow(GpuBudgetError);
    try {
      planStreaming(LONG, 1000, H200);
    } catch (e) {
      expect(e).toBeInstanceOf(ValueError);
      expect((e as GpuBudgetError).requiredBytes).toBe(least);
      expect(String(e)).toMatch(/gpuBudgetBytes: expected at least \d+ bytes .*got 1000/);
    }
    expect(planStreaming(LONG, least, H200).queryChunk).toBe(64);
    // o and lse of the whole problem on the GPU are part of the least budget.
    const onGpu = { ...LONG, outputOnGpu: true };
    expect(() => planStreaming(onGpu, GiB, H200)).toThrow(/with o and lse on the GPU/);
  });

  test('bad arguments are ValueErrors naming them', () => {
    expect(() => planStreaming(LONG, 0, H200)).toThrow(
      /gpuBudgetBytes: expected a positive integer/,
    );
    expect(() => planStreaming(LONG, 1.5, H200)).toThrow(/gpuBudgetBytes/);
    expect(() => planStreaming({ ...LONG, hq: 33 }, GiB, H200)).toThrow(
      /hq: expected a multiple of hkv/,
    );
    expect(() => planStreaming({ ...LONG, nq: -1 }, GiB, H200)).toThrow(
      /nq: expected an integer >= 0/,
    );
    expect(() => planStreaming(LONG, GiB, { ...H200, keyTile: 0 })).toThrow(/limits.keyTile/);
  });
});

describe('streamSchedule', () => {
  test('the chunks cover exactly the keys each row sees, and each sub-band gives the same mask', () => {
    const rng = new Rng(11);
    for (let n = 0; n < 300; n++) {
      const nq = rng.int(1, 200);
      const nk = rng.int(0, 200);
      const left = rng.int(-1, 60);
      const right = rng.int(-1, 60);
      const qc = rng.int(1, 70);
      const kc = left >= 0 ? rng.int(qc, 90) : rng.int(1, 90);
      const q0 = rng.int(0, nq);
      const q1 = Math.min(nq, q0 + qc);
      const chunks = streamSchedule({ nq, nk, left, right }, q0, q1, kc);
      for (let i = q0; i < q1; i++) {
        const [lo, hi] = keyRange({ left, right }, i, nq, nk);
        const seen = new Set<number>();
        for (const c of chunks) {
          expect(c.k1 - c.k0).toBeLessThanOrEqual(kc);
          if (left >= 0) expect(c.left).toBeGreaterThanOrEqual(0);
          if (right >= 0) expect(c.right).toBeGreaterThanOrEqual(0);
          // The sub-problem: rows q0..q1, keys k0..k1, with its own band.
          const [sl, sh] = keyRange(c, i - q0, q1 - q0, c.k1 - c.k0);
          for (let j = sl; j < sh; j++) seen.add(c.k0 + j);
        }
        const want = new Set<number>();
        for (let j = lo; j < hi; j++) want.add(j);
        expect(seen).toEqual(want);
      }
      // No chunk is uploaded that no row of the chunk sees (above the causal diagonal).
      for (const c of chunks) {
        let used = false;
        for (let i = q0; i < q1 && !used; i++) {
          const [lo, hi] = keyRange({ left, right }, i, nq, nk);
          used = lo < c.k1 && hi > c.k0;
        }
        expect(used).toBe(true);
      }
    }
  });

  test('causal prefill: query chunk i visits keys up to its diagonal only', () => {
    const chunks = streamSchedule({ nq: 1000, nk: 1000, left: -1, right: 0 }, 200, 300, 128);
    expect(chunks.map((c) => [c.k0, c.k1])).toEqual([
      [0, 128],
      [128, 256],
      [256, 300],
    ]);
    expect(chunks.map((c) => c.right)).toEqual([172, 44, 0]);
  });

  test('a key chunk smaller than the query chunk with a bounded left window is a ValueError', () => {
    expect(() => streamSchedule({ nq: 500, nk: 500, left: 10, right: 0 }, 100, 300, 50)).toThrow(
      /keyChunk: expected at least the query chunk \(200 rows\)/,
    );
  });
});
