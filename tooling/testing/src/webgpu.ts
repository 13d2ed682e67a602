import {
  type AttentionOptions,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
} from '@attnkit/attention';
import {
  flashAttentionBackwardWebGpu,
  flashAttentionWebGpu,
  type WebGpuFlashOptions,
} from '@attnkit/flash-attention';
import type { Tensor } from '@attnkit/tensor';
import {
  type CompiledProgram,
  type ComputeProgram,
  createWebGpuContext,
  PipelineTimeoutError,
  toWebGpu,
  type WebGpuContext,
  type WebGpuContextOptions,
} from '@attnkit/webgpu';
import { expect, vi } from 'vitest';
import { expectClose } from './expect.js';

/**
 * WebGPU test support (moved from @attnkit/webgpu's and @attnkit/flash-attention's
 * src/testing.ts): a poisoning context, and a check of the WGSL softmax kernels against the
 * float64 reference (or golden tensors) at a tolerance.
 */

/**
 * Routes `ctx`'s pipeline cache through `intercept`: a promise it returns answers the request
 * (e.g. lateCompile's, to make the host fall back to its next config), undefined hands the
 * request to the real cache. mockRestore() on the result ends it.
 */
export function interceptPipelines(
  ctx: WebGpuContext,
  intercept: (program: ComputeProgram) => Promise<CompiledProgram> | undefined,
) {
  const get = ctx.pipelines.get.bind(ctx.pipelines);
  return vi
    .spyOn(ctx.pipelines, 'get')
    .mockImplementation((program) => intercept(program) ?? get(program));
}

/** The rejection the pipeline cache gives `program` when its compile passes the time limit (injected: 1 ms). */
export function lateCompile(program: ComputeProgram): Promise<never> {
  const label = program.label ?? 'attnkit';
  return Promise.reject(
    new PipelineTimeoutError(
      `${label}: compute pipeline not created within 1 ms (injected)`,
      label,
      program.config,
      1,
    ),
  );
}

/**
 * A context for the test file whose outputs start as NaN (`poisonOutputs`), or a failure when
 * no adapter can be had, unless ATTNKIT_ALLOW_NO_WEBGPU=1 says a machine without WebGPU is
 * expected (then it resolves to undefined and the caller skips). A missing adapter must never
 * pass silently in CI.
 */
export async function webGpuTestContext(
  options: WebGpuContextOptions = {},
): Promise<WebGpuContext | undefined> {
  try {
    const ctx = await createWebGpuContext(options);
    ctx.poisonOutputs = true;
    return ctx;
  } catch (e) {
    if (process.env.ATTNKIT_ALLOW_NO_WEBGPU === '1') return undefined;
    throw e;
  }
}

export interface Expected {
  o: Tensor;
  lse?: Tensor;
  dq?: Tensor;
  dk?: Tensor;
  dv?: Tensor;
}

/** Forward (and backward when dO is given) on WebGPU, checked against `expected` (default: the float64 reference). */
export async function checkOnWebGpu(
  ctx: WebGpuContext,
  inputs: { q: Tensor; k: Tensor; v: Tensor; dO?: Tensor },
  cpuOptions: AttentionOptions & WebGpuFlashOptions,
  tol: number,
  label: string,
  expected?: Expected,
): Promise<void> {
  const { q, k, v, dO } = inputs;
  // The shared random cases carry the cpu backends' tile sizes; WGSL tiles come from `tiles`.
  const { blockQ: _q, blockK: _k, ...options } = cpuOptions;
  const ref: Expected =
    expected ??
    (() => {
      const fwd = softmaxAttentionReference(q, k, v, options);
      return dO ? { ...fwd, ...softmaxAttentionReferenceBackward(q, k, v, dO, options) } : fwd;
    })();
  const [gq, gk, gv] = [toWebGpu(q, ctx), toWebGpu(k, ctx), toWebGpu(v, ctx)];
  const { o, lse } = await flashAttentionWebGpu(gq, gk, gv, options);
  expect(o.dtype).toBe(q.dtype);
  expect(lse.dtype).toBe('f32');
  expectClose(await o.toCpu(), ref.o, tol, `${label} o`);
  // LSE is computed in f32 from f32 scores whatever the storage: it meets the f32 tolerance
  // when the inputs are exact, and the storage tolerance otherwise.
  if (ref.lse) expectClose(await lse.toCpu(), ref.lse, tol, `${label} lse`);
  if (dO) {
    const gdo = toWebGpu(dO, ctx);
    const grads = await flashAttentionBackwardWebGpu(gq, gk, gv, o, lse, gdo, options);
    for (const name of ['dq', 'dk', 'dv'] as const) {
      expect(grads[name].dtype).toBe(q.dtype);
      if (ref[name]) expectClose(await grads[name].toCpu(), ref[name]!, tol, `${label} ${name}`);
      grads[name].dispose();
    }
    gdo.dispose();
  }
  for (const t of [gq, gk, gv, o, lse]) t.dispose();
}
