import { accuracy, selectKernel, toleranceFor } from '@attnkit/attention';
import { Rng, type Tensor, ValueError } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import {
  chunkGla,
  GLA_FAMILY,
  glaReference,
  glaReferenceBackward,
  resolveGla,
} from '../../index.js';
import {
  GLA_TC_FASTER_ON_DEVICE,
  GLA_TC_VERIFIED_ON_DEVICE,
  glaBackwardWebGpu,
  glaForwardWebGpu,
  glaTcAuto,
  glaTcFor,
} from './host.js';
import { outputShader, qkGradShader, scoreGradShader, stateShader } from './kernels.js';
import { makeProblem, type ProblemSpec } from './testing.js';

/**
 * The tensor-core variant of the chunk products (state passes h / dh, o / dv, dA, the inter
 * products of dq / dk; at C 64 emulated, dq / dk run SIMT: host.ts) with its
 * subgroup matrices emulated in plain WGSL (llvmpipe has none): forward and backward against
 * the float64 recurrence with the f16 tolerance of KERNELS.md (the operands are f16 whatever
 * the storage), on fresh random shapes: T not a multiple of C, K != V (multiples of 16), varlen
 * with an empty sequence, h0 on / off, the final state, outputs poisoned with NaN
 * (webGpuTestContext). The emulation is slow: small shapes, C 16 / 32. The real kernels differ
 * only in the enables and the builtins (checked on the text below) and run on the H200 alone.
 */
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

const seed = Date.now() % 100000;

async function check(spec: ProblemSpec, label: string, backward: boolean) {
  const rng = new Rng(seed + label.length);
  const { q, k, v, gk, dO, dht, options } = makeProblem(rng, spec);
  const up = (t: Tensor) => toWebGpu(t, ctx!);
  const g = { q: up(q), k: up(k), v: up(v), gk: up(gk), do: up(dO), dht: up(dht) };
  const h0 = options.initialState ? up(options.initialState) : undefined;
  const gpuOpts = {
    ...options,
    ...(h0 ? { initialState: h0 } : {}),
    outputFinalState: true,
    chunkSize: spec.C ?? 16,
  };
  const p = resolveGla(g.q, g.k, g.v, g.gk, gpuOpts, 'chunk', { dO: g.do, dht: g.dht });
  const got: Record<string, Tensor | undefined> = {};
  const f = await glaForwardWebGpu(p, g, { emulateTensorCores: true });
  got.o = f.o;
  got.ht = f.ht;
  const ref = glaReference(q, k, v, gk, { ...options, outputFinalState: true });
  const want: Record<string, Tensor | undefined> = { o: ref.o, ht: ref.finalState };
  if (backward) {
    Object.assign(got, await glaBackwardWebGpu(p, g, { emulateTensorCores: true }));
    Object.assign(want, glaReferenceBackward(q, k, v, gk, dO, { ...options, dht }));
  }
  const tol = toleranceFor({ dtype: q.dtype === 'bf16' ? 'bf16' : 'f16', chunked: true });
  const report: string[] = [];
  for (const [name, w] of Object.entries(want)) {
    if (!w) continue;
    const t = got[name];
    expect(t, `${label}: ${name} produced`).toBeDefined();
    expect(t!.shape, name).toEqual(w.shape);
    const a = accuracy(await t!.toCpu(), w);
    report.push(`${name} ${a.relL2.toExponential(2)}`);
    expect(a.nonFinite, `${label} ${name} non-finite`).toBe(0);
    expect(a.relL2, `${label} ${name} (${report.join(', ')})`).toBeLessThanOrEqual(tol);
  }
  for (const t of [...Object.values(g), h0, ...Object.values(got)]) t?.dispose();
}

describe.skipIf(!ctx)('GLA tensor-core chunk products (emulated) vs the float64 reference', () => {
  test.each<[string, ProblemSpec, boolean]>([
    [
      'f16, T 45 (not a multiple of C 16), K 32 != V 16, h0, fwd + bwd',
      { B: 1, T: 45, H: 2, K: 32, V: 16, dtype: 'f16', h0: true, C: 16 },
      true,
    ],
    [
      'f16, varlen with an empty sequence, C 32, K 16, V 48, h0, fwd + bwd',
      { B: 1, T: 70, H: 1, K: 16, V: 48, dtype: 'f16', lengths: [37, 0, 33], h0: true, C: 32 },
      true,
    ],
    [
      'f16, B 2, T 40, no h0, C 16, K 16, V 32, -20 gates',
      { B: 2, T: 40, H: 1, K: 16, V: 32, dtype: 'f16', gates: 'strong', C: 16 },
      false,
    ],
    [
      'f16, C 64 (two result matrices per subgroup), T 100, K 32, V 64, h0, fwd + bwd',
      { B: 1, T: 100, H: 1, K: 32, V: 64, dtype: 'f16', h0: true, C: 64 },
      true,
    ],
    [
      'f32 forced onto f16 operands, C 32, T 50, K 48, V 16, h0',
      { B: 1, T: 50, H: 1, K: 48, V: 16, h0: true, C: 32 },
      false,
    ],
  ])('%s', async (label, spec, backward) => check(spec, label, backward));

  test('a random shape (seeded by the run): T, K, V, C, dtype f16 / bf16, h0, varlen', async () => {
    const rng = new Rng(seed * 7 + 3);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(rng.uniform() * xs.length) % xs.length]!;
    const C = pick([16, 32] as const);
    const varlen = rng.uniform() < 0.5;
    const lengths = varlen
      ? Array.from({ length: 3 }, () => Math.floor(rng.uniform() * 2.5 * C))
      : undefined;
    const T = lengths ? lengths.reduce((a, x) => a + x, 0) : 1 + Math.floor(rng.uniform() * 3 * C);
    const spec: ProblemSpec = {
      B: lengths ? 1 : pick([1, 2]),
      T: Math.max(T, 1),
      H: pick([1, 2]),
      K: pick([16, 32, 48]),
      V: pick([16, 32, 48]),
      dtype: pick(['f16', 'bf16'] as const),
      h0: rng.uniform() < 0.5,
      C,
      ...(lengths && T > 0 ? { lengths } : {}),
    };
    await check(spec, `random ${JSON.stringify(spec)}`, true);
  });

  test('auto picks SIMT where the adapter has no subgroup matrices (llvmpipe)', () => {
    const p = { K: 64, V: 64 };
    expect(glaTcFor(ctx!, p, 'f16', {})).toBeUndefined();
    expect(glaTcFor(ctx!, p, 'f16', { tensorCores: 'auto' })).toBeUndefined();
    expect(glaTcFor(ctx!, p, 'f16', { tensorCores: false })).toBeUndefined();
    if (!ctx!.features.subgroupMatrix)
      expect(() => glaTcFor(ctx!, p, 'f16', { tensorCores: true })).toThrow(/tensorCores/);
    expect(() => glaTcFor(ctx!, { K: 24, V: 64 }, 'f16', { emulateTensorCores: true })).toThrow(
      ValueError,
    );
  });

  test('the registry entry takes tensorCores off the options (false runs SIMT; a bad value is a ValueError)', async () => {
    const rng = new Rng(seed);
    const { q, k, v, gk } = makeProblem(rng, { B: 1, T: 20, H: 1, K: 16, V: 16, dtype: 'f16' });
    const up = (t: Tensor) => toWebGpu(t, ctx!);
    const t = { q: up(q), k: up(k), v: up(v), gk: up(gk) };
    const reg = selectKernel(
      { family: GLA_FAMILY, pass: 'forward', device: 'webgpu', dtype: 'f16', options: {} },
      'webgpu',
    );
    const ref = glaReference(q, k, v, gk, {});
    for (const tensorCores of [false, 'auto']) {
      const out = await reg.run(t, { form: 'chunk', chunkSize: 16, tensorCores });
      const a = accuracy(await out.o!.toCpu(), ref.o);
      expect(a.relL2).toBeLessThanOrEqual(toleranceFor({ dtype: 'f16', chunked: true }));
      out.o!.dispose();
    }
    await expect(reg.run(t, { form: 'chunk', tensorCores: 'yes' })).rejects.toThrow(
      /tensorCores: expected true, false or 'auto'/,
    );
    // Through the public function: chunkGla passes it on (false: SIMT), and names a bad value.
    const viaApi = await chunkGla(t.q, t.k, t.v, t.gk, { chunkSize: 16, tensorCores: false });
    expect(accuracy(await viaApi.o.toCpu(), ref.o).relL2).toBeLessThanOrEqual(
      toleranceFor({ dtype: 'f16', chunked: true }),
    );
    viaApi.o.dispose();
    const bad = await chunkGla(t.q, t.k, t.v, t.gk, {
      tensorCores: 'yes' as unknown as boolean,
    }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(ValueError);
    expect((bad as ValueError).argument).toBe('tensorCores');
    for (const x of Object.values(t)) x.dispose();
  });
});

describe('glaTcAuto (pure)', () => {
  test('once enabled: NVIDIA, a qualifying adapter, f16 storage, K and V multiples of 16', () => {
    expect(glaTcAuto({ K: 128, V: 128, dtype: 'f16' }, 'nvidia', true, true)).toBe(true);
    expect(glaTcAuto({ K: 64, V: 32, dtype: 'f16' }, 'NVIDIA', true, true)).toBe(true);
    expect(glaTcAuto({ K: 64, V: 32, dtype: 'bf16' }, 'NVIDIA', true, true)).toBe(false);
    expect(glaTcAuto({ K: 128, V: 128, dtype: 'f32' }, 'nvidia', true, true)).toBe(false);
    expect(glaTcAuto({ K: 128, V: 128, dtype: 'f16' }, 'nvidia', false, true)).toBe(false);
    expect(glaTcAuto({ K: 128, V: 128, dtype: 'f16' }, 'apple', true, true)).toBe(false);
    expect(glaTcAuto({ K: 120, V: 128, dtype: 'f16' }, 'nvidia', true, true)).toBe(false);
  });

  test('verified on the H200 but not faster there (2026-12-03): auto stays SIMT everywhere', () => {
    expect(GLA_TC_VERIFIED_ON_DEVICE).toBe(true);
    expect(GLA_TC_FASTER_ON_DEVICE).toBe(false);
    expect(glaTcAuto({ K: 128, V: 128, dtype: 'f16' }, 'nvidia', true)).toBe(false);
  });

  test('the real kernels enable f16 and subgroup matrices and take subgroup_id; SIMT unchanged', () => {
    for (const k of [
      stateShader('h', 64, 'f16', 'f32', { emulate: false }),
      stateShader('dh', 64, 'f16', 'f16', { emulate: false }),
      outputShader('o', 64, 128, 'f16', { emulate: false }),
      outputShader('dv', 128, 128, 'bf16', { emulate: false }),
      scoreGradShader(64, 'f16', { emulate: false }),
      qkGradShader(128, 'f16', { emulate: false }),
    ]) {
      expect(k.code.startsWith('enable f16;\nenable chromium_experimental_subgroup_matrix;')).toBe(
        true,
      );
      expect(k.code).toContain('@builtin(subgroup_id) sg: u32');
      expect(k.code).toContain('subgroupMatrixMultiplyAccumulate');
      expect(k.code).toContain('subgroupMatrixStore');
      expect(k.code).not.toContain('e_mma');
    }
    const simt = stateShader('h', 64, 'f16', 'f32').code + outputShader('o', 64, 128, 'f16').code;
    expect(simt).not.toContain('subgroup');
    expect(simt).not.toContain('enable');
  });
});
