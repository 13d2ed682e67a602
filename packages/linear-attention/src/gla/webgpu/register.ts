import { type KernelRequest, registerKernel, UnsupportedError } from '@attnkit/attention';
import type { Tensor } from '@attnkit/tensor';
import { GLA_BACKWARD_OUTPUTS, GLA_FAMILY, GLA_FORWARD_OUTPUTS, glaProblem } from '../register.js';
import { type GlaWebGpuRunOptions, glaBackwardWebGpu, glaForwardWebGpu } from './host.js';
import { GLA_WEBGPU_CHUNK_SIZES } from './kernels.js';

/**
 * GLA on WebGPU in the family x backend registry: family 'gla', backend 'webgpu' (priority 30,
 * webgpu tensors), the chunk form forward and backward (./host.ts, ./kernels.ts).
 *
 * Option `tensorCores` (true | false | 'auto', default 'auto'; host.ts glaTcFor): the chunk
 * products on f16 subgroup matrices. chunkGla's option check (options.ts) lets it through for
 * the chunk form; it is taken off the options here before glaProblem resolves the rest.
 */

/** `tensorCores` from the registry options, and the options without it. */
function tcOption(options: Record<string, unknown>): {
  rest: Record<string, unknown>;
  run: GlaWebGpuRunOptions;
} {
  const { tensorCores, ...rest } = options;
  return {
    rest,
    run: tensorCores === undefined ? {} : { tensorCores: tensorCores as boolean | 'auto' },
  };
}

/** Why the WebGPU kernels cannot run a request, else true. */
export function glaWebGpuSupports(req: KernelRequest): true | string {
  const o = req.options;
  if (o.form === 'recurrent')
    return 'the WebGPU GLA kernels run the chunk form only (chunkGla); fusedRecurrentGla runs on ts and native';
  const C = o.chunkSize ?? 64;
  if (!(GLA_WEBGPU_CHUNK_SIZES as readonly unknown[]).includes(C))
    return `the WebGPU GLA kernels take chunk sizes ${GLA_WEBGPU_CHUNK_SIZES.join(', ')} (16 x 16 thread grids over the chunk's rows, tiles within workgroup memory), got ${String(C)}`;
  if (!['f32', 'f16', 'bf16'].includes(req.dtype))
    return `WGSL has no ${req.dtype}: the WebGPU GLA kernels read f32, f16 or bf16`;
  return true;
}

/** run() called directly (not through selectKernel) still refuses what supports() declines. */
function refuse(
  pass: 'forward' | 'backward',
  t: Record<string, Tensor>,
  options: Record<string, unknown>,
) {
  const why = glaWebGpuSupports({
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
    refuse('forward', t, rest);
    return {
      ...(await glaForwardWebGpu(p, t as { q: Tensor; k: Tensor; v: Tensor; gk: Tensor }, run)),
    };
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
    refuse('backward', t, rest);
    return {
      ...(await glaBackwardWebGpu(
        p,
        t as { q: Tensor; k: Tensor; v: Tensor; gk: Tensor; do: Tensor; dht?: Tensor },
        run,
      )),
    };
  },
});
