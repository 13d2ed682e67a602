import { resolveAttentionProblem } from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { poisonAllocations } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { SOFTMAX_HOOKS } from './hooks.js';
import { nativeAvailable, tiledForwardNative } from './native.js';

/**
 * f16 / bf16 inputs reach the native engine decoded by its nn.decodeHalf op (threads) instead of
 * in JS. Decoding is exact, so the forward must equal the one on the same values handed over
 * as f32, bit for bit: contiguous halves (op), an odd element count (its last half decoded in
 * JS), and a view whose halves start 2 bytes into a 4-byte word (JS fallback).
 */
describe.runIf(nativeAvailable())('native forward of f16 / bf16 inputs', () => {
  poisonAllocations();
  const rng = new Rng(Date.now() % 100000);

  for (const dtype of ['f16', 'bf16'] as const)
    test(`${dtype}: o and lse equal the f32 call on the same values (aligned, odd count, misaligned view)`, async () => {
      const cases: Array<[string, () => [Tensor, Tensor, Tensor]]> = [
        [
          'aligned, even',
          () => [
            rng.randn([2, 4, 3, 16], dtype),
            rng.randn([2, 2, 37, 16], dtype),
            rng.randn([2, 2, 37, 16], dtype),
          ],
        ],
        [
          'odd element count',
          () => [
            rng.randn([1, 1, 3, 15], dtype),
            rng.randn([1, 1, 5, 15], dtype),
            rng.randn([1, 1, 5, 15], dtype),
          ],
        ],
        [
          'view starting 2 bytes into a word',
          () => {
            // A contiguous slice one element in: its Uint16Array starts at byteOffset 2.
            const big = rng.randn([1, 2 * 40 * 16 + 1], dtype);
            const k = Tensor.from(big.data<'f16'>().subarray(1), [1, 2, 40, 16], dtype);
            const v = Tensor.from(big.data<'f16'>().subarray(1), [1, 2, 40, 16], dtype);
            return [rng.randn([1, 4, 2, 16], dtype), k, v];
          },
        ],
      ];
      for (const [name, make] of cases) {
        const [q, k, v] = make();
        const p = resolveAttentionProblem(q, k, v, { causal: true });
        const half = await tiledForwardNative(p, SOFTMAX_HOOKS, q, k, v);
        const [q32, k32, v32] = [q, k, v].map((t) => t.astype('f32'));
        const full = await tiledForwardNative(
          resolveAttentionProblem(q32!, k32!, v32!, { causal: true }),
          SOFTMAX_HOOKS,
          q32!,
          k32!,
          v32!,
        );
        expect([...half.lse!.toFloat32Array()], name).toEqual([...full.lse!.toFloat32Array()]);
        // o comes back in q's dtype: compare with the f32 call's o encoded the same way.
        expect([...half.o.toFloat32Array()], name).toEqual([
          ...full.o.astype(dtype).toFloat32Array(),
        ]);
      }
    });

  test('the decoded copies are reused between calls, never shared by two at once', async () => {
    // Same shapes every call (a decode loop): sequential calls reuse the f32 buffers, two calls
    // in flight each get their own. Every result must be its own inputs' f32 result.
    const draw = () =>
      [
        rng.randn([1, 4, 1, 32], 'f16'),
        rng.randn([1, 2, 300, 32], 'f16'),
        rng.randn([1, 2, 300, 32], 'f16'),
      ] as const;
    const run = (x: readonly [Tensor, Tensor, Tensor]) =>
      tiledForwardNative(
        resolveAttentionProblem(x[0], x[1], x[2], {}),
        SOFTMAX_HOOKS,
        x[0],
        x[1],
        x[2],
      );
    const check = async (x: readonly [Tensor, Tensor, Tensor], got: { o: Tensor }) => {
      const [q32, k32, v32] = x.map((t) => t.astype('f32')) as [Tensor, Tensor, Tensor];
      const want = await run([q32, k32, v32]);
      expect([...got.o.toFloat32Array()]).toEqual([...want.o.astype('f16').toFloat32Array()]);
    };
    for (let i = 0; i < 3; i++) {
      const x = draw();
      await check(x, await run(x));
    }
    const [a, b] = [draw(), draw()];
    const [ra, rb] = await Promise.all([run(a), run(b)]);
    await check(a, ra);
    await check(b, rb);
  });
});
