import {
  type AttnkitError,
  DeviceError,
  DTypeError,
  Rng,
  ShapeError,
  type Storage,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import {
  type FlashAttentionOptions,
  flashAttention,
  flashAttentionBackward,
  flashAttentionBackwardTs,
  flashAttentionTs,
  flashFlops,
} from './index.js';

const rng = new Rng(1);
const q = rng.randn([1, 2, 6, 8]);
const k = rng.randn([1, 1, 5, 8]);
const v = rng.randn([1, 1, 5, 4]);
const { o, lse } = flashAttentionTs(q, k, v);
const dO = rng.randn([1, 2, 6, 4]);

function expectError(call: () => unknown, Err: typeof AttnkitError, argument: string): void {
  expect(call, argument).toThrow(Err);
  expect(call).toThrow(expect.objectContaining({ argument }));
  expect(call).toThrow(new RegExp(`^${argument.replace('.', '\\.')}: expected`));
}

describe('forward argument errors', () => {
  const bad: [string, () => unknown, typeof AttnkitError, string][] = [
    [
      'f64 inputs',
      () => flashAttentionTs(q.astype('f64'), k.astype('f64'), v.astype('f64')),
      DTypeError,
      'q',
    ],
    ['k of another dtype', () => flashAttentionTs(q, k.astype('f16'), v), DTypeError, 'k'],
    ['k with another D', () => flashAttentionTs(q, rng.randn([1, 1, 5, 4]), v), ShapeError, 'k'],
    ['v with another Nk', () => flashAttentionTs(q, k, rng.randn([1, 1, 4, 4])), ShapeError, 'v'],
    [
      'Hkv not dividing Hq',
      () =>
        flashAttentionTs(rng.randn([1, 3, 6, 8]), rng.randn([1, 2, 5, 8]), rng.randn([1, 2, 5, 4])),
      ShapeError,
      'k',
    ],
    [
      'options not an object',
      () => flashAttentionTs(q, k, v, null as never),
      ValueError,
      'options',
    ],
    [
      'unknown algorithm',
      () => flashAttentionTs(q, k, v, { algorithm: 'fa3' as never }),
      ValueError,
      'algorithm',
    ],
    [
      'unknown backend',
      () => flashAttentionTs(q, k, v, { backend: 'cuda' as never }),
      ValueError,
      'backend',
    ],
    ['blockQ 0', () => flashAttentionTs(q, k, v, { blockQ: 0 }), ValueError, 'blockQ'],
    ['blockQ fractional', () => flashAttentionTs(q, k, v, { blockQ: 2.5 }), ValueError, 'blockQ'],
    [
      'blockK a string',
      () => flashAttentionTs(q, k, v, { blockK: '8' as never }),
      ValueError,
      'blockK',
    ],
    ['blockK negative', () => flashAttentionTs(q, k, v, { blockK: -4 }), ValueError, 'blockK'],
    ['bad window', () => flashAttentionTs(q, k, v, { window: [-2, 3] }), ValueError, 'window'],
    ['NaN scale', () => flashAttentionTs(q, k, v, { scale: Number.NaN }), ValueError, 'scale'],
  ];
  test.each(bad)('%s', (_name, call, Err, argument) => expectError(call, Err, argument));

  test('tiles must divide the block-sparse blocks', () => {
    const mask = Tensor.from(new Uint8Array([1, 1, 1, 1]), [2, 2]);
    const blockSparse = { blockQ: 4, blockK: 4, mask };
    expectError(() => flashAttentionTs(q, k, v, { blockSparse, blockQ: 3 }), ValueError, 'blockQ');
    expectError(() => flashAttentionTs(q, k, v, { blockSparse, blockK: 8 }), ValueError, 'blockK');
    expect(() => flashAttentionTs(q, k, v, { blockSparse, blockQ: 2, blockK: 4 })).not.toThrow();
  });

  test('the f64 error points at the float64 reference', () => {
    expect(() => flashAttentionTs(q.astype('f64'), k.astype('f64'), v.astype('f64'))).toThrow(
      /softmaxAttentionReference/,
    );
  });

  test('tensors on another device: DeviceError naming q', () => {
    const elsewhere = (t: Tensor): Tensor => {
      const storage: Storage = { device: 'webgpu', dtype: 'f32', length: t.size, dispose() {} };
      return new Tensor(storage, t.shape);
    };
    expectError(() => flashAttentionTs(elsewhere(q), elsewhere(k), elsewhere(v)), DeviceError, 'q');
  });

  test('the async API rejects with the same typed errors', async () => {
    const options: FlashAttentionOptions = { backend: 'cuda' as never };
    await expect(flashAttention(q, k, v, options)).rejects.toThrow(ValueError);
    await expect(flashAttention(q, k, v, options)).rejects.toMatchObject({ argument: 'backend' });
    await expect(flashAttentionBackward(q, k, v, o, lse, dO, { blockQ: 0 })).rejects.toMatchObject({
      argument: 'blockQ',
    });
  });
});

describe('backward argument errors', () => {
  const bad: [string, () => unknown, typeof AttnkitError, string][] = [
    [
      'o of the wrong shape',
      () => flashAttentionBackwardTs(q, k, v, dO.slice(2, 0, 5), lse, dO),
      ShapeError,
      'o',
    ],
    [
      'o of the wrong dtype',
      () => flashAttentionBackwardTs(q, k, v, o.astype('bf16'), lse, dO),
      DTypeError,
      'o',
    ],
    [
      'o not a tensor',
      () => flashAttentionBackwardTs(q, k, v, [1, 2] as never, lse, dO),
      ShapeError,
      'o',
    ],
    [
      'lse of the wrong shape',
      () => flashAttentionBackwardTs(q, k, v, o, lse.reshape([2, 6]), dO),
      ShapeError,
      'lse',
    ],
    [
      'lse in f64',
      () => flashAttentionBackwardTs(q, k, v, o, lse.astype('f64'), dO),
      DTypeError,
      'lse',
    ],
    [
      'dO of the wrong shape',
      () => flashAttentionBackwardTs(q, k, v, o, lse, rng.randn([1, 2, 6, 8])),
      ShapeError,
      'dO',
    ],
    [
      'dO of the wrong dtype',
      () => flashAttentionBackwardTs(q, k, v, o, lse, dO.astype('f16')),
      DTypeError,
      'dO',
    ],
    [
      'dO missing',
      () => flashAttentionBackwardTs(q, k, v, o, lse, undefined as never),
      ShapeError,
      'dO',
    ],
    [
      'unknown algorithm',
      () => flashAttentionBackwardTs(q, k, v, o, lse, dO, { algorithm: 'fa0' as never }),
      ValueError,
      'algorithm',
    ],
  ];
  test.each(bad)('%s', (_name, call, Err, argument) => expectError(call, Err, argument));
});

describe('flashFlops', () => {
  test('forward 2 B H Nq Nk (D + Dv), backward 2.5x, causal halves', () => {
    const shape = { batch: 1, hq: 8, nq: 1024, nk: 1024, d: 64 };
    expect(flashFlops(shape, 'forward')).toBe(4 * 8 * 1024 * 1024 * 64);
    expect(flashFlops(shape, 'backward')).toBe(2.5 * 4 * 8 * 1024 * 1024 * 64);
    expect(flashFlops({ ...shape, causal: true }, 'forward')).toBe(2 * 8 * 1024 * 1024 * 64);
    expect(flashFlops({ batch: 2, hq: 3, nq: 5, nk: 7, d: 16, dv: 32 }, 'forward')).toBe(
      2 * 2 * 3 * 5 * 7 * 48,
    );
  });

  test('bad arguments throw ValueError naming them', () => {
    const shape = { batch: 1, hq: 8, nq: 16, nk: 16, d: 64 };
    expectError(() => flashFlops({ ...shape, batch: -1 }, 'forward'), ValueError, 'batch');
    expectError(() => flashFlops({ ...shape, nk: 1.5 }, 'forward'), ValueError, 'nk');
    expectError(() => flashFlops({ ...shape, dv: Number.NaN }, 'forward'), ValueError, 'dv');
    expectError(
      () => flashFlops({ ...shape, causal: 1 as never }, 'forward'),
      ValueError,
      'causal',
    );
    expectError(() => flashFlops(shape, 'sideways' as never), ValueError, 'pass');
    expectError(() => flashFlops(null as never, 'forward'), ValueError, 'p');
  });
});

describe('non-finite inputs (checkFinite) and lse', () => {
  const rng = new Rng(99);
  const [q, k, v, dO] = [0, 1, 2, 3].map(() => rng.randn([1, 2, 9, 8]));
  test('an lse with NaN or +Inf is rejected by every cpu backward, naming lse', async () => {
    const { o, lse } = flashAttentionTs(q!, k!, v!);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
      const data = lse.toFloat32Array().slice();
      data[3] = bad;
      const badLse = Tensor.from(data, lse.shape);
      expect(() => flashAttentionBackwardTs(q!, k!, v!, o, badLse, dO!)).toThrow(
        expect.objectContaining({ argument: 'lse' }),
      );
      for (const backend of ['ts', 'native'] as const) {
        await expect(
          flashAttentionBackward(q!, k!, v!, o, badLse, dO!, { backend }),
        ).rejects.toThrow(expect.objectContaining({ argument: 'lse' }));
      }
    }
    // -Infinity (a row without keys) is a valid lse.
    const empty = lse.toFloat32Array().slice();
    empty[0] = Number.NEGATIVE_INFINITY;
    expect(() =>
      flashAttentionBackwardTs(q!, k!, v!, o, Tensor.from(empty, lse.shape), dO!),
    ).not.toThrow();
  });

  test('checkFinite names the tensor holding a NaN; without it nothing is scanned', () => {
    const data = k!.toFloat32Array().slice();
    data[5] = Number.NaN;
    const badK = Tensor.from(data, k!.shape);
    expect(() => flashAttentionTs(q!, badK, v!, { checkFinite: true })).toThrow(
      /k: expected finite values \(checkFinite\), got NaN at flat index 5/,
    );
    expect(() => flashAttentionTs(q!, badK, v!)).not.toThrow();
  });
});
