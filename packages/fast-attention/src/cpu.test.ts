import {
  registeredKernels,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
} from '@attnkit/attention';
import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { expectClose } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { fastAttention, fastAttentionBackward } from './index.js';

const SEED = Number(process.env.ATTNKIT_TEST_SEED ?? Date.now() % 1_000_000);
const TOL = 1e-5;

describe(`fast-attention on the TS kernel with the CPU plan (seed ${SEED})`, () => {
  test("registers the 'fast' family: forward and backward on webgpu and ts", () => {
    const regs = registeredKernels({ family: 'fast' });
    expect(regs.map((r) => `${r.pass}:${r.backend}`).sort()).toEqual([
      'backward:ts',
      'backward:webgpu',
      'forward:ts',
      'forward:webgpu',
    ]);
  });

  test('forward and backward equal the float64 reference on every CPU class', async () => {
    const rng = new Rng(SEED);
    for (const device of ['cpu-256k', 'cpu-512k-neon', 'cpu-1m']) {
      const hkv = rng.int(1, 3);
      const hq = hkv * rng.int(1, 3);
      const nq = 2 * rng.int(20, 150) + 1;
      const nk = 2 * rng.int(20, 150) + 1;
      const d = [16, 48, 64][rng.int(0, 3)]!;
      const opts =
        device === 'cpu-1m'
          ? { window: [rng.int(0, 50), rng.int(0, 50)] as [number, number] }
          : { causal: device === 'cpu-256k' };
      const q = rng.randn([1, hq, nq, d], 'f32');
      const k = rng.randn([1, hkv, nk, d], 'f32');
      const v = rng.randn([1, hkv, nk, d], 'f32');
      const dO = rng.randn([1, hq, nq, d], 'f32');
      const label = JSON.stringify({ device, hq, hkv, nq, nk, d, ...opts });
      const { o, lse, plan } = await fastAttention(q, k, v, { ...opts, device });
      expect(plan.device).toBe(device);
      const ref = softmaxAttentionReference(q, k, v, opts);
      expectClose(o, ref.o, TOL, `${label} o`);
      expectClose(lse, ref.lse, TOL, `${label} lse`);
      const g = await fastAttentionBackward({ q, k, v, o, lse, dO }, { ...opts, device });
      const want = softmaxAttentionReferenceBackward(q, k, v, dO, opts);
      expectClose(g.dq, want.dq, TOL, `${label} dq`);
      expectClose(g.dk, want.dk, TOL, `${label} dk`);
      expectClose(g.dv, want.dv, TOL, `${label} dv`);
    }
  });

  test('block-sparse: the plan tile cut to divisors of the mask blocks', async () => {
    const rng = new Rng(SEED + 1);
    const nq = 97;
    const nk = 131;
    const blockQ = 24;
    const blockK = 40;
    const mask = Tensor.from(
      Uint8Array.from({ length: 5 * 4 }, () => (rng.uniform() < 0.5 ? 1 : 0)),
      [5, 4],
    );
    const opts = { causal: true, blockSparse: { blockQ, blockK, mask } };
    const q = rng.randn([1, 2, nq, 32], 'f32');
    const k = rng.randn([1, 2, nk, 32], 'f32');
    const v = rng.randn([1, 2, nk, 32], 'f32');
    const { o, lse } = await fastAttention(q, k, v, opts);
    const ref = softmaxAttentionReference(q, k, v, opts);
    expectClose(o, ref.o, TOL, 'o');
    expectClose(lse, ref.lse, TOL, 'lse');
  });

  test('bad input: typed errors', async () => {
    const q = Tensor.from(new Float32Array(16), [1, 1, 2, 8]);
    await expect(fastAttention(q, q, q, { device: 'webgpu-default' })).rejects.toThrow(
      /device: expected a cpu device class for cpu tensors/,
    );
    await expect(fastAttention(q, q, q, { backend: 'cuda' as never })).rejects.toThrow(ValueError);
    const q64 = q.astype('f64');
    await expect(fastAttention(q64, q64, q64, { backend: 'ts' })).rejects.toThrow(/f64/);
    await expect(fastAttention(q64, q64, q64)).rejects.toThrow(/f64/);
  });
});
