import { type KernelRequest, registerKernel, UnsupportedError } from '@attnkit/attention';
import type { Tensor } from '@attnkit/tensor';
import type { GlaProblem } from '../options.js';
import {
  GLA_BACKWARD_OUTPUTS,
  GLA_FAMILY,
  GLA_FORWARD_OUTPUTS,
  glaFormOf,
  glaProblem,
} from '../register.js';
import { type GlaWebGpuRunOptions, glaBackwardWebGpu, glaForwardWebGpu } from './host.js';
import { GLA_WEBGPU_CHUNK_SIZES } from './kernels.js';
import { glaRecurrentBackwardWebGpu, glaRecurrentForwardWebGpu } from './recurrent-host.js';
import { recUnsupportedK } from './recurrent-kernels.js';

/**
 * GLA on WebGPU in the family x backend registry: family 'gla', backend 'webgpu' (priority 30,
 * webgpu tensors), both forms forward and backward: the chunk form (./host.ts, ./kernels.ts)
 * and the recurrent form (form 'recurrent', fusedRecurrentGla: ./recurrent-host.ts,
 * ./recurrent-kernels.ts).
 *
 * Option `tensorCores` (true | false | 'auto', default 'auto'; host.ts glaTcFor): the chunk
 * products on f16 subgroup matrices. chunkGla's option check (options.ts) lets it through for
 * the chunk form; it is taken off the options here before glaProblem resolves the rest.
 */

/**
 * `tensorCores` from the registry options, and the options without it. The recurrent form keeps
 * it in its options: glaProblem then refuses it (a ValueError naming options.tensorCores).
 */
function tcOption(options: Record<string, unknown>): {
  rest: Record<string, unknown>;
  run: GlaWebGpuRunOptions;
} {
  if (glaFormOf(options) === 'recurrent') return { rest: options, run: {} };
  const { tensorCores, ...rest } = options;
  return {
    rest,
    run: tensorCores === undefined ? {} : { tensorCores: tensorCores as boolean | 'auto' },
  };
}

/** Why the WebGPU kernels cannot run a request, else true. */
export function glaWebGpuSupports(req: KernelRequest): true | string {
  const o = req.options;
  const C = o.chunkSize ?? 64;
  if (o.form !== 'recurrent' && !(GLA_WEBGPU_CHUNK_SIZES as readonly unknown[]).includes(C))
    return `the WebGPU GLA kernels take chunk sizes ${GLA_WEBGPU_CHUNK_SIZES.join(', ')} (thread layouts and tiles sized for them), got ${String(C)}`;
  if (!['f32', 'f16', 'bf16'].includes(req.dtype))
    return `WGSL has no ${req.dtype}: the WebGPU GLA kernels read f32, f16 or bf16`;
  return true;
}

/**
 * run() called directly (not through selectKernel) still refuses what supports() declines, and
 * the recurrent form refuses a K whose kernels would not fit the workgroup memory (supports()
 * sees no shapes).
 */
function refuse(
  pass: 'forward' | 'backward',
  t: Record<string, Tensor>,
  options: Record<string, unknown>,
  p: GlaProblem,
) {
  const why =
    (p.form === 'recurrent' ? recUnsupportedK(p.K, p.V) : undefined) ??
    glaWebGpuSupports({
      family: GLA_FAMILY,
      pass,
      device: 'webgpu',
      dtype: t.q?.dtype ?? 'f32',
      options,
    });
  if (why !== true)
    throw new UnsupportedError(`backend: webgpu declines this gla ${pass}: ${why}`, 'backend', {
      webgpu: why,
    });
}

registerKernel({
  family: GLA_FAMILY,
  pass: 'forward',
  backend: 'webgpu',
  priority: 30,
  devices: ['webgpu'],
  supports: glaWebGpuSupports,
  outputs: GLA_FORWARD_OUTPUTS,
  run: async (t, options) => {
    const { rest, run } = tcOption(options);
    const p = glaProblem('forward', t, rest);
    refuse('forward', t, rest, p);
    const inputs = t as { q: Tensor; k: Tensor; v: Tensor; gk: Tensor };
    if (p.form === 'recurrent') return { ...(await glaRecurrentForwardWebGpu(p, inputs)) };
    return { ...(await glaForwardWebGpu(p, inputs, run)) };
  },
});

registerKernel({
  family: GLA_FAMILY,
  pass: 'backward',
  backend: 'webgpu',
  priority: 30,
  devices: ['webgpu'],
  supports: glaWebGpuSupports,
  outputs: GLA_BACKWARD_OUTPUTS,
  run: async (t, options) => {
    const { rest, run } = tcOption(options);
    const p = glaProblem('backward', t, rest);
    refuse('backward', t, rest, p);
    const inputs = t as { q: Tensor; k: Tensor; v: Tensor; gk: Tensor; do: Tensor; dht?: Tensor };
    if (p.form === 'recurrent') return { ...(await glaRecurrentBackwardWebGpu(p, inputs)) };
    return { ...(await glaBackwardWebGpu(p, inputs, run)) };
  },
});
