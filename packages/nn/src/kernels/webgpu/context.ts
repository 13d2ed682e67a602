import { DeviceError } from '@attnkit/tensor';
import type { WebGpuContext } from '@attnkit/webgpu';

let bound: WebGpuContext | undefined;

/** The context registerWebGpuKernels bound the backend to (kernels without inputs allocate there). */
export function gpuContext(op: string): WebGpuContext {
  if (!bound)
    throw new DeviceError(
      `${op}: the webgpu kernels are not bound to a context (call registerWebGpuKernels(ctx))`,
      'ctx',
    );
  return bound;
}

export function bindContext(ctx: WebGpuContext): void {
  bound = ctx;
}
