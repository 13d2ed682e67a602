import { accuracy, toleranceFor, UnsupportedError } from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import {
  fusedRecurrentGla,
  fusedRecurrentGlaBackward,
  glaReference,
  glaReferenceBackward,
} from '../../index.js';
import { checkGlaGoldenWebGpu } from './golden-check.js';
import { makeProblem, type ProblemSpec } from './testing.js';

/**
 * fusedRecurrentGla / fusedRecurrentGlaBackward on webgpu tensors (Dawn; llvmpipe in CI)
 * against the float64 recurrence: forward and reverse, odd T (not a multiple of the forward's 8
 * tokens per barrier or the backward's 64-step checkpoints), K != V (several V blocks, the
 * backward's parts added up), varlen with an empty sequence, h0 / hT, dht / dh0, scale, f32 /
 * f16 / bf16 storage, gates of -20 per step, on outputs poisoned with NaN (webGpuTestContext).
 * Also the gla goldens (fla's naive GLA) and the K the kernels refuse. A missing adapter fails
 * unless ATTNKIT_ALLOW_NO_WEBGPU=1.
 */
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

const seed = Date.now() % 100000;

type Spec = ProblemSpec & { reverse?: boolean; dht?: boolean };

async function check(spec: Spec, label: string) {
  const rng = new Rng(seed + label.length);
  const { q, k, v, gk, dO, dht, options } = makeProblem(rng, spec);
  const reverse = spec.reverse ?? false;
  const withDht = spec.dht ?? true;
  const ref = glaReference(q, k, v, gk, { ...options, reverse, outputFinalState: true });
  const refB = glaReferenceBackward(q, k, v, gk, dO, {
    ...options,
    reverse,
    ...(withDht ? { dht } : {}),
  });
  const up = (t: Tensor) => toWebGpu(t, ctx!);
  const gpuOpts = {
    ...options,
    ...(options.initialState ? { initialState: up(options.initialState) } : {}),
    outputFinalState: true,
    reverse,
    backend: 'webgpu',
  };
  const [gq, gk_, gv, ggk, gdo, gdht] = [q, k, v, gk, dO, dht].map(up) as Tensor[];
  const fwd = await fusedRecurrentGla(gq!, gk_!, gv!, ggk!, gpuOpts);
  expect(fwd.o.device).toBe('webgpu');
  expect(fwd.o.dtype).toBe(q.dtype);
  const grads = await fusedRecurrentGlaBackward(gq!, gk_!, gv!, ggk!, gdo!, {
    ...gpuOpts,
    ...(withDht ? { dht: gdht } : {}),
  });
  expect(grads.dgk.dtype).toBe(gk.dtype);
  const tol = toleranceFor({ dtype: q.dtype, maxSeqLen: q.shape[1]! });
  const got: Record<string, Tensor | undefined> = {
    o: fwd.o,
    ht: fwd.finalState,
    dq: grads.dq,
    dk: grads.dk,
    dv: grads.dv,
    dgk: grads.dgk,
    dh0: grads.dh0,
  };
  const want: Record<string, Tensor | undefined> = { o: ref.o, ht: ref.finalState, ...refB };
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
  if (!options.initialState) expect(got.dh0).toBeUndefined();
  for (const t of [gq, gk_, gv, ggk, gdo, gdht, ...Object.values(got)]) t?.dispose();
  if (options.initialState) (gpuOpts.initialState as Tensor).dispose();
}

describe.skipIf(!ctx)('fusedRecurrentGla on webgpu vs the float64 reference', () => {
  test.each<[string, Spec]>([
    ['B 2, T 37 (odd), K 8, V 8, no h0, no dht', { B: 2, T: 37, H: 2, K: 8, V: 8, dht: false }],
    ['reverse, B 2, T 29, h0', { B: 2, T: 29, H: 2, K: 8, V: 8, h0: true, reverse: true }],
    [
      'T 131 (three checkpoints, not a multiple of 8 or 64), K 16, V 24, h0',
      { B: 1, T: 131, H: 2, K: 16, V: 24, h0: true },
    ],
    [
      'K 24 != V 12, h0, scale 0.3, reverse',
      { B: 2, T: 77, H: 1, K: 24, V: 12, h0: true, scale: 0.3, reverse: true },
    ],
    [
      'K 12, V 80 (several V blocks both ways), T 70',
      { B: 1, T: 70, H: 1, K: 12, V: 80, h0: true },
    ],
    [
      'K 160 (several state rows per thread), V 20, T 19',
      { B: 1, T: 19, H: 1, K: 160, V: 20, h0: true },
    ],
    [
      'varlen with an empty sequence, h0',
      { B: 1, T: 100, H: 2, K: 8, V: 16, lengths: [33, 0, 50, 17], h0: true },
    ],
    [
      'varlen reverse, an empty sequence last, no h0',
      { B: 1, T: 90, H: 1, K: 8, V: 8, lengths: [70, 20, 0], reverse: true },
    ],
    [
      'gk = -20 per step on half the channels, h0',
      { B: 1, T: 90, H: 2, K: 16, V: 8, gates: 'strong', h0: true },
    ],
    ['T 1 (a decode step) with h0', { B: 3, T: 1, H: 2, K: 16, V: 16, h0: true }],
    ['f16 storage, h0 f16, T 70', { B: 1, T: 70, H: 2, K: 16, V: 8, dtype: 'f16', h0: true }],
    [
      'f16 storage, V 100 (two V blocks: parts cast after the sum), reverse',
      { B: 1, T: 33, H: 2, K: 8, V: 100, dtype: 'f16', h0: true, reverse: true },
    ],
    ['K 1, V 1, T 23', { B: 2, T: 23, H: 1, K: 1, V: 1, h0: true }],
    [
      'K 520 (4 tokens staged per barrier, 2-column threads backward), V 3, T 13',
      { B: 1, T: 13, H: 1, K: 520, V: 3, h0: true, reverse: true },
    ],
    [
      'T 1000 (16 checkpoints), K 32, V 32, reverse, -20 gates',
      { B: 1, T: 1000, H: 1, K: 32, V: 32, h0: true, reverse: true, gates: 'strong' },
    ],
    [
      'bf16 storage, -20 gates, reverse',
      { B: 1, T: 45, H: 1, K: 8, V: 16, dtype: 'bf16', gates: 'strong', h0: true, reverse: true },
    ],
  ])('%s', async (label, spec) => check(spec, label));

  test("K past the kernels' workgroup memory: UnsupportedError naming backend", async () => {
    const rng = new Rng(3);
    const s = [1, 2, 1, 4096];
    const [q, k, v] = [rng.randn(s), rng.randn(s), rng.randn([1, 2, 1, 32])].map((t) =>
      toWebGpu(t, ctx!),
    );
    const gk = toWebGpu(Tensor.from(new Float32Array(2 * 4096).fill(-0.5), s), ctx!);
    const run = fusedRecurrentGla(q!, k!, v!, gk, { backend: 'webgpu' });
    await expect(run).rejects.toThrow(UnsupportedError);
    await expect(run).rejects.toThrow(/got K 4096, V 32/);
    for (const t of [q, k, v, gk]) t!.dispose();
  });
});

describe.skipIf(!ctx)('gla goldens through fusedRecurrentGla on webgpu', () => {
  const files = goldenFiles('gla');
  test('golden files exist', () => expect(files.length).toBeGreaterThanOrEqual(2));
  test.each(files.map((f) => [goldenLabel(f), f]))(
    '%s: o, ht, dq, dk, dv, dgk, dh0 within the f32 bound',
    (_label, file) =>
      checkGlaGoldenWebGpu(ctx!, file, fusedRecurrentGla, fusedRecurrentGlaBackward, {
        tol: (q) => toleranceFor({ dtype: 'f32', maxSeqLen: q.shape[1]! }),
        inclusive: true,
      }),
  );
});
