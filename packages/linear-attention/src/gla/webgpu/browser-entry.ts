import { accuracy } from '@attnkit/attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import { createWebGpuContext, toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import {
  chunkGla,
  chunkGlaBackward,
  fusedRecurrentGlaBackward,
  glaReference,
  glaReferenceBackward,
} from '../../index.js';
import { makeProblem, type ProblemSpec } from './testing.js';

/**
 * The page side of browser.test.ts: chunkGla forward and backward on navigator.gpu (Chromium's
 * SwiftShader: Dawn's Vulkan backend, so the WGSL goes through Tint's SPIR-V writer as on the
 * H200, where Node's Dawn on llvmpipe goes through GLSL) against the float64 recurrence, on
 * poisoned outputs. Returns the relative L2 error and the non-finite count of every output.
 */
let shared: Promise<WebGpuContext> | undefined;

async function runGla(spec: ProblemSpec, seed: number, tensorCores: boolean) {
  // SwiftShader compiles on the CPU that CI's other tests share: no 20 s pipeline limit.
  shared ??= createWebGpuContext({ pipelineTimeoutMs: 150_000 });
  const ctx = await shared;
  ctx.poisonOutputs = true;
  const { q, k, v, gk, dO, dht, options } = makeProblem(new Rng(seed), spec);
  const ref = glaReference(q, k, v, gk, { ...options, outputFinalState: true });
  const refB = glaReferenceBackward(q, k, v, gk, dO, { ...options, dht });
  const up = (t: Tensor) => toWebGpu(t, ctx);
  const opts = {
    ...options,
    ...(options.initialState ? { initialState: up(options.initialState) } : {}),
    outputFinalState: true,
    backend: 'webgpu',
    tensorCores,
    ...(spec.C ? { chunkSize: spec.C } : {}),
  };
  const [gq, gk_, gv, ggk, gdo, gdht] = [q, k, v, gk, dO, dht].map(up) as Tensor[];
  const f = await chunkGla(gq!, gk_!, gv!, ggk!, opts);
  const b = await chunkGlaBackward(gq!, gk_!, gv!, ggk!, gdo!, { ...opts, dht: gdht });
  const got: Record<string, Tensor | undefined> = { o: f.o, ht: f.finalState, ...b };
  const want: Record<string, Tensor | undefined> = { o: ref.o, ht: ref.finalState, ...refB };
  const errors: Record<string, { relL2: number; nonFinite: number }> = {};
  for (const [name, w] of Object.entries(want)) {
    if (!w || !got[name]) continue;
    const a = accuracy(await got[name]!.toCpu(), w);
    errors[name] = { relL2: a.relL2, nonFinite: a.nonFinite };
  }
  // The recurrent backward needs 15 storage buffers: under that, a typed error up front.
  let recurrentBackward = 'ran';
  try {
    await fusedRecurrentGlaBackward(gq!, gk_!, gv!, ggk!, gdo!, { backend: 'webgpu' });
  } catch (e) {
    recurrentBackward = `${(e as Error).name}: ${(e as Error).message}`;
  }
  return { adapter: ctx.adapterInfo, limits: ctx.limits, errors, recurrentBackward };
}

(globalThis as { attnkitRunGla?: typeof runGla }).attnkitRunGla = runGla;
