import { DeviceError } from '@attnkit/tensor';
import type { WebGpuContext } from '@attnkit/webgpu';

let bound: WebGpuContext | undefined;

export interface WebGpuKernelOptions {
  /**
   * f16 matmuls on subgroup matrices (tensor cores) where the adapter has f16 x f16 -> f32
   * 16 x 16 x 16 and the dims tile by 16 (default true); false keeps the SIMT kernel.
   */
  tensorCores?: boolean;
}

let options: Required<WebGpuKernelOptions> = { tensorCores: true };

export function kernelOptions(): Required<WebGpuKernelOptions> {
  return options;
}

/** The context registerWebGpuKernels bound the backend to (kernels without inputs allocate there). */
export function gpuContext(op: string): WebGpuContext {
  if (!bound)
    throw new DeviceError(
      `${op}: the webgpu kernels are not bound to a context (call registerWebGpuKernels(ctx))`,
      'ctx',
    );
  return bound;
}

export function bindContext(ctx: WebGpuContext, opts: WebGpuKernelOptions = {}): void {
  bound = ctx;
  options = { tensorCores: opts.tensorCores ?? true };
}
