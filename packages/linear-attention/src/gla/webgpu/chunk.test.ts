import { accuracy, toleranceFor } from '@attnkit/attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { chunkGla, chunkGlaBackward, glaReference, glaReferenceBackward } from '../../index.js';
import { makeProblem, type ProblemSpec } from './testing.js';

/**
 * chunkGla / chunkGlaBackward on webgpu tensors (Dawn; llvmpipe in CI) against the float64
 * recurrence: odd T, T not a multiple of C, K != V, varlen with an empty sequence, h0 / hT,
 * dht / dh0, scale, every supported chunk size, f32 / f16 / bf16 storage, gates of -20 per
 * step, on outputs poisoned with NaN (webGpuTestContext). A missing adapter fails unless
 * ATTNKIT_ALLOW_NO_WEBGPU=1.
 */
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

const seed = Date.now() % 100000;

async function check(spec: ProblemSpec, label: string) {
  const rng = new Rng(seed + label.length);
  const pr = makeProblem(rng, spec);
  const { q, k, v, gk, dO, dht, options } = pr;
  const ref = glaReference(q, k, v, gk, { ...options, outputFinalState: true });
  const refB = glaReferenceBackward(q, k, v, gk, dO, { ...options, dht });
  const up = (t: Tensor) => toWebGpu(t, ctx!);
  const gpuOpts = {
    ...options,
    ...(options.initialState ? { initialState: up(options.initialState) } : {}),
    outputFinalState: true,
    backend: 'webgpu',
    ...(spec.C ? { chunkSize: spec.C } : {}),
  };
  const [gq, gk_, gv, ggk, gdo, gdht] = [q, k, v, gk, dO, dht].map(up) as Tensor[];
  const fwd = await chunkGla(gq!, gk_!, gv!, ggk!, gpuOpts);
  expect(fwd.o.device).toBe('webgpu');
  expect(fwd.o.dtype).toBe(q.dtype);
  const grads = await chunkGlaBackward(gq!, gk_!, gv!, ggk!, gdo!, { ...gpuOpts, dht: gdht });
  const tol = toleranceFor({ dtype: q.dtype, maxSeqLen: q.shape[1]!, chunked: true });
  const got: Record<string, Tensor | undefined> = {
    o: fwd.o,
    ht: fwd.finalState,
    dq: grads.dq,
    dk: grads.dk,
    dv: grads.dv,
    dgk: grads.dgk,
    dh0: grads.dh0,
  };
  const want: Record<string, Tensor | undefined> = {
    o: ref.o,
    ht: ref.finalState,
    ...refB,
  };
  const report: string[] = [];
  for (const [name, w] of Object.entries(want)) {
    if (!w) continue;
    const g = got[name];
    expect(g, `${label}: ${name} produced`).toBeDefined();
    expect(g!.shape, name).toEqual(w.shape);
    const a = accuracy(await g!.toCpu(), w);
    report.push(`${name} ${a.relL2.toExponential(2)}`);
    expect(a.nonFinite, `${label} ${name} non-finite`).toBe(0);
    expect(a.relL2, `${label} ${name} (${report.join(', ')})`).toBeLessThanOrEqual(tol);
  }
  for (const t of [gq, gk_, gv, ggk, gdo, gdht, ...Object.values(got)]) t?.dispose();
  if (options.initialState) (gpuOpts.initialState as Tensor).dispose();
}

describe.skipIf(!ctx)('chunkGla on webgpu vs the float64 reference', () => {
  // WebGPU's default limits (16 KiB of workgroup memory, 8 storage buffers a stage): the forward
  // at chunk sizes up to 32 runs there (the backward's dq / dk / dgk pass binds 10 buffers).
  test('C 16 and 32 forward under limits: default; what does not fit is refused up front', async () => {
    const small = await webGpuTestContext({ limits: 'default', features: [] });
    try {
      for (const C of [16, 32]) {
        const pr = makeProblem(new Rng(seed + C), { B: 1, T: 70, H: 1, K: 20, V: 12, h0: true });
        const ref = glaReference(pr.q, pr.k, pr.v, pr.gk, {
          ...pr.options,
          outputFinalState: true,
        });
        const up = (t: Tensor) => toWebGpu(t, small!);
        const [q, k, v, gk] = [pr.q, pr.k, pr.v, pr.gk].map(up) as Tensor[];
        const f = await chunkGla(q!, k!, v!, gk!, {
          initialState: up(pr.options.initialState!),
          outputFinalState: true,
          backend: 'webgpu',
          chunkSize: C,
        });
        const tol = toleranceFor({ dtype: 'f32', maxSeqLen: 70, chunked: true });
        expect(accuracy(await f.o.toCpu(), ref.o).relL2, `C ${C} o`).toBeLessThanOrEqual(tol);
        expect(
          accuracy(await f.finalState!.toCpu(), ref.finalState!).relL2,
          `C ${C} ht`,
        ).toBeLessThanOrEqual(tol);
      }
      // What does not fit is an UnsupportedError before anything runs: C 64's scores pass
      // (21760 bytes of workgroup memory), the backward's dq / dk / dgk pass (10 buffers > 8).
      const pr = makeProblem(new Rng(seed), { B: 1, T: 70, H: 1, K: 20, V: 12 });
      const [q, k, v, gk, dO] = [pr.q, pr.k, pr.v, pr.gk, pr.dO].map((t) =>
        toWebGpu(t, small!),
      ) as Tensor[];
      const opts = { backend: 'webgpu', chunkSize: 64 };
      await expect(chunkGla(q!, k!, v!, gk!, opts)).rejects.toMatchObject({
        name: 'UnsupportedError',
        argument: 'chunkSize',
        message: expect.stringMatching(
          /'gla scores' pass at chunkSize 64 needs \d+ bytes of workgroup memory, this context grants 16384/,
        ),
      });
      await expect(
        chunkGlaBackward(q!, k!, v!, gk!, dO!, { ...opts, chunkSize: 16 }),
      ).rejects.toMatchObject({
        name: 'UnsupportedError',
        message: expect.stringMatching(/binds 10 storage buffers, this context grants 8/),
      });
    } finally {
      small?.destroy();
    }
  });

  test.each<[string, ProblemSpec]>([
    ['B 2, T 37 (odd, < C), K 8, V 8', { B: 2, T: 37, H: 2, K: 8, V: 8 }],
    [
      'B 1, T 130 (not a multiple of 64), K 16, V 24, h0',
      { B: 1, T: 130, H: 2, K: 16, V: 24, h0: true },
    ],
    ['K 24 != V 12, h0, dht, scale 0.3', { B: 2, T: 77, H: 1, K: 24, V: 12, h0: true, scale: 0.3 }],
    [
      'varlen with an empty sequence, h0, C 32',
      { B: 1, T: 100, H: 2, K: 8, V: 16, lengths: [33, 0, 50, 17], h0: true, C: 32 },
    ],
    [
      'gk = -20 per step on half the channels, h0',
      { B: 1, T: 90, H: 2, K: 16, V: 8, gates: 'strong', h0: true },
    ],
    ['C 16, T 50', { B: 1, T: 50, H: 1, K: 8, V: 8, C: 16, h0: true }],
    [
      'K 10, V 6 (not multiples of 4: element-wise loads), h0',
      { B: 1, T: 75, H: 2, K: 10, V: 6, h0: true },
    ],
    ['K 12, V 20, T 150, C 128 (vec4 loads)', { B: 1, T: 150, H: 1, K: 12, V: 20, C: 128 }],
    [
      'K 130, V 70, C 32 (element-wise loads, two 64-wide blocks of the state and of o), h0',
      { B: 1, T: 70, H: 1, K: 130, V: 70, C: 32, h0: true },
    ],
    [
      'K 68, V 132, C 128, f16 (vec4 loads, several 64-wide blocks)',
      { B: 1, T: 140, H: 1, K: 68, V: 132, C: 128, dtype: 'f16' },
    ],
    [
      'K 6, V 10, C 16, bf16 (element-wise loads)',
      { B: 1, T: 41, H: 2, K: 6, V: 10, C: 16, dtype: 'bf16' },
    ],
    ['C 128, T 200', { B: 1, T: 200, H: 1, K: 8, V: 8, C: 128 }],
    ['f16 storage, h0 f16, T 70', { B: 1, T: 70, H: 2, K: 16, V: 8, dtype: 'f16', h0: true }],
    [
      'bf16 storage, -20 gates',
      { B: 1, T: 45, H: 1, K: 8, V: 16, dtype: 'bf16', gates: 'strong', h0: true },
    ],
    ['T 1024 (16 chunks), K 32, V 32', { B: 1, T: 1024, H: 1, K: 32, V: 32, h0: true }],
    // The state walk computes each chunk's rows from the sequence's first row and last chunk's
    // length (no table load a step): varlen at C 64 (two register sets) and C 128 (slices
    // wrapping into the next chunk), empty sequences first, between and last, strong gates.
    [
      'varlen at C 64 with empty sequences (last one too), -20 gates, h0',
      {
        B: 1,
        T: 200,
        H: 2,
        K: 16,
        V: 12,
        lengths: [70, 0, 129, 1, 0],
        C: 64,
        gates: 'strong',
        h0: true,
      },
    ],
    [
      'varlen at C 128, f16, an empty first sequence',
      { B: 1, T: 300, H: 1, K: 20, V: 36, lengths: [0, 140, 33, 127], C: 128, dtype: 'f16' },
    ],
  ])('%s', async (label, spec) => check(spec, label));
});
