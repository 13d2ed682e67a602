import {
  deviceBackendOf,
  registerNativeKernels,
  registerWebGpuKernels,
  setDeviceBackend,
} from '@attnkit/nn';
import { BackendUnavailableError, describe, ValueError } from '@attnkit/tensor';
import { createWebGpuContext, type WebGpuContext } from '@attnkit/webgpu';

export const BACKENDS = ['ts', 'native', 'webgpu'] as const;
export type BackendName = (typeof BACKENDS)[number];

export interface Backend {
  name: BackendName;
  /** The GPU context on webgpu (parameters and batches are uploaded to it), else null. */
  ctx: WebGpuContext | null;
  /** How it was chosen, for the progress output: "native (default: the best available)". */
  label: string;
}

/**
 * The backend a command runs on. Unset: the best available on the cpu (nn's native engine when
 * its addon loads, else ts; webgpu is asked for by name). 'ts' / 'native' set nn's cpu backend
 * ('native' without its addon is a BackendUnavailableError saying why); 'webgpu' opens a Dawn
 * context and registers nn's WGSL kernels on it. Anything else is a ValueError naming --backend.
 */
export async function openBackend(name: string | undefined): Promise<Backend> {
  if (name === undefined) {
    const best = registerNativeKernels() === true ? 'native' : 'ts';
    setDeviceBackend('cpu', best);
    return { name: best, ctx: null, label: `${best} (default: the best available)` };
  }
  if (!(BACKENDS as readonly string[]).includes(name))
    throw new ValueError(
      `--backend expected one of ${BACKENDS.join(', ')}, got ${describe(name)}`,
      'backend',
    );
  if (name === 'webgpu') {
    let ctx: WebGpuContext;
    try {
      ctx = await createWebGpuContext();
    } catch (e) {
      throw new BackendUnavailableError(
        `--backend webgpu: no WebGPU device (${(e as Error).message})`,
        'backend',
      );
    }
    registerWebGpuKernels(ctx);
    return {
      name,
      ctx,
      label: `webgpu (${ctx.adapterInfo.description || ctx.adapterInfo.vendor})`,
    };
  }
  setDeviceBackend('cpu', name);
  if (deviceBackendOf('cpu') !== name)
    throw new BackendUnavailableError(`--backend ${name}: nn did not select it`, 'backend');
  return { name: name as BackendName, ctx: null, label: name };
}
