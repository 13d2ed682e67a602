import {
  accuracy,
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
  toleranceFor,
} from '@attnkit/attention';
import { DeviceError, DTypeError, Rng, ShapeError, Tensor, type ValueError } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type HstuAttentionOptions, hstuAttention, hstuAttentionBackward } from './index.js';

// The dense relative attention bias through the public functions on each backend: o and drab
// against the float64 reference (which is finite-difference tested), drab's zeros, a
// finite-difference check of drab on the ts backend, and rab's typed errors. The conformance
// suite runs the hstu_rab goldens and random rab grids through the registrations.
const rng = new Rng(23);
// Odd lengths, an empty sequence, maxSeqLen above the longest (padding rows / columns of rab).
const seqOffsets = Int32Array.of(0, 13, 13, 40, 47);
const lens = [13, 0, 27, 7];
const B = 4;
const H = 2;
const N = 30;
const base: HstuAttentionOptions = { seqOffsets, maxSeqLen: N, alpha: 0.3 };
const q = rng.randn([47, H, 16]);
const k = rng.randn([47, H, 16]);
const v = rng.randn([47, H, 12]);
const dO = rng.randn([47, H, 12]);

const SHAPES: Record<string, [number, number, number, number]> = {
  full: [B, H, N, N],
  'broadcast over the batch': [1, H, N, N],
  'broadcast over the heads': [B, 1, N, N],
  shared: [1, 1, N, N],
};

let ctx: WebGpuContext | undefined;
beforeAll(async () => {
  ctx = await webGpuTestContext();
});
afterAll(() => ctx?.destroy());

const onDevice = (t: Tensor, backend: string) => (backend === 'webgpu' ? toWebGpu(t, ctx!) : t);
const toCpu = async (t: Tensor) => (t.device === 'cpu' ? t : t.toCpu());

describe('rab and drab on every backend', () => {
  for (const backend of ['ts', 'native', 'webgpu'] as const) {
    for (const [name, shape] of Object.entries(SHAPES)) {
      for (const dtype of ['f32', 'f16', 'bf16'] as const) {
        test(`${backend}: rab ${name} [${shape}], ${dtype} inputs`, async (c) => {
          if (backend === 'webgpu' && !ctx) c.skip('no WebGPU adapter');
          const rab = rng.randn(shape);
          const cast = (t: Tensor) => onDevice(t.astype(dtype), backend);
          const o: HstuAttentionOptions = { ...base, rab: onDevice(rab, backend), backend };
          const fwd = await hstuAttention(cast(q), cast(k), cast(v), o);
          const g = await hstuAttentionBackward(cast(q), cast(k), cast(v), cast(dO), o);
          const h = (t: Tensor) => t.astype(dtype);
          const ref = { ...base, rab };
          const rf = hstuAttentionReference(h(q), h(k), h(v), ref);
          const rg = hstuAttentionReferenceBackward(h(q), h(k), h(v), h(dO), ref);
          const t = toleranceFor({ dtype, maxSeqLen: N });
          expect(accuracy(await toCpu(fwd.o), rf.o).relL2).toBeLessThanOrEqual(t);
          for (const n of ['dq', 'dk', 'dv', 'drab'] as const) {
            const got = await toCpu(g[n]!);
            expect(got.shape, n).toEqual(rg[n]!.shape);
            expect(accuracy(got, rg[n]!).relL2, n).toBeLessThanOrEqual(t);
          }
          expect(g.drab!.dtype).toBe('f32');
        });
      }
    }
  }
});

describe('drab', () => {
  test('is 0 at masked pairs (j > i) and past each sequence, on every backend', async (c) => {
    const rab = rng.randn([B, H, N, N]);
    for (const backend of ['ts', 'native', 'webgpu'] as const) {
      if (backend === 'webgpu' && !ctx) c.skip('no WebGPU adapter');
      const o: HstuAttentionOptions = { ...base, rab: onDevice(rab, backend), backend };
      const g = await hstuAttentionBackward(
        onDevice(q, backend),
        onDevice(k, backend),
        onDevice(v, backend),
        onDevice(dO, backend),
        o,
      );
      const d = (await toCpu(g.drab!)).toFloat32Array();
      let nonzero = 0;
      for (let b = 0; b < B; b++)
        for (let h = 0; h < H; h++)
          for (let i = 0; i < N; i++)
            for (let j = 0; j < N; j++) {
              const x = d[((b * H + h) * N + i) * N + j]!;
              if (j > i || i >= lens[b]!)
                expect(Math.abs(x), `${backend} (${b}, ${h}, ${i}, ${j})`).toBe(0);
              else if (x !== 0) nonzero++;
            }
      expect(nonzero, backend).toBeGreaterThan(0);
    }
  });

  test('matches central finite differences of sum(o * dO) (ts)', async () => {
    const rab = rng.randn([1, H, N, N]);
    const o: HstuAttentionOptions = { ...base, rab, backend: 'ts' };
    const g = await hstuAttentionBackward(q, k, v, dO, o);
    const drab = g.drab!.toFloat32Array();
    const G = dO.toFloat32Array();
    const loss = async (r: Tensor) => {
      const out = (await hstuAttention(q, k, v, { ...o, rab: r })).o.toFloat32Array();
      let s = 0;
      for (let e = 0; e < out.length; e++) s += out[e]! * G[e]!;
      return s;
    };
    const eps = 1e-2;
    // A few allowed pairs of both heads (i >= j, inside the longest sequence).
    for (const [h, i, j] of [
      [0, 0, 0],
      [0, 5, 2],
      [1, 12, 12],
      [1, 20, 3],
      [0, 26, 25],
    ] as const) {
      const at = (h * N + i) * N + j;
      const up = rab.toFloat32Array().slice();
      const dn = up.slice();
      up[at] = up[at]! + eps;
      dn[at] = dn[at]! - eps;
      const fd =
        ((await loss(Tensor.from(up, rab.shape))) - (await loss(Tensor.from(dn, rab.shape)))) /
        (2 * eps);
      expect(Math.abs(drab[at]! - fd), `(${h}, ${i}, ${j})`).toBeLessThanOrEqual(
        2e-3 * Math.max(1, Math.abs(fd)),
      );
    }
  });

  test('absent without rab', async () => {
    const g = await hstuAttentionBackward(q, k, v, dO, { ...base, backend: 'ts' });
    expect(g.drab).toBeUndefined();
  });
});

describe('rab errors', () => {
  const bad = async (rab: unknown, error: typeof ValueError | typeof ShapeError) => {
    const o = { ...base, rab: rab as Tensor, backend: 'ts' as const };
    await expect(hstuAttention(q, k, v, o)).rejects.toThrow(error);
    await expect(hstuAttention(q, k, v, o)).rejects.toMatchObject({ argument: 'rab' });
  };
  test('wrong shape: ShapeError naming rab', async () => {
    await bad(rng.randn([B, H, N - 1, N - 1]), ShapeError);
    await bad(rng.randn([H, N, N]), ShapeError);
    await bad(rng.randn([2, H, N, N]), ShapeError);
    await bad(rng.randn([B, 3, N, N]), ShapeError);
    await bad([1, 2, 3], ShapeError);
  });
  test('f16 rab: DTypeError naming rab (f32 only)', async () => {
    await bad(rng.randn([B, H, N, N]).astype('f16'), DTypeError);
  });
  test('rab on another device than q: DeviceError naming rab', async (c) => {
    if (!ctx) c.skip('no WebGPU adapter');
    await bad(toWebGpu(rng.randn([B, H, N, N]), ctx!), DeviceError);
  });
  test('a scoreMod after rab is applied after it; a bias with grad after a softcap is refused', async () => {
    const { scoreBias, softcap } = await import('@attnkit/attention');
    const rab = rng.randn([B, H, N, N]);
    // rab first, then the user's softcap: d loss / d rab carries the softcap's derivative.
    const o = { ...base, rab, scoreMod: softcap(2), backend: 'ts' as const };
    const g = await hstuAttentionBackward(q, k, v, dO, o);
    expect(g.drab?.shape).toEqual([B, H, N, N]);
    // A second bias with grad: at most one per call.
    const b2 = rng.randn([H, 27, 27]);
    await expect(
      hstuAttentionBackward(q, k, v, dO, {
        ...base,
        rab,
        scoreMod: scoreBias(b2, { grad: true }),
        backend: 'ts',
      }),
    ).rejects.toMatchObject({ name: 'ValueError', argument: 'scoreMod[1].grad' });
  });
});
