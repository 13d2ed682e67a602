import { AttnkitError } from '@attnkit/tensor';

/**
 * GPU failures as typed errors. WebGPU reports validation errors, out-of-memory and internal
 * errors asynchronously through error scopes, and device loss through `device.lost`; attnkit
 * turns each into a rejected promise carrying one of these, so callers catch them like any
 * other AttnkitError.
 */
export class WebGpuError extends AttnkitError {
  override name = 'WebGpuError';
}

/** A command or shader the implementation rejected (the message carries WebGPU's own text). */
export class GpuValidationError extends WebGpuError {
  override name = 'GpuValidationError';
}

/** An allocation the device could not satisfy. */
export class GpuOutOfMemoryError extends WebGpuError {
  override name = 'GpuOutOfMemoryError';
}

/** The implementation failed for a reason of its own (e.g. a shader too large to compile). */
export class GpuInternalError extends WebGpuError {
  override name = 'GpuInternalError';
}

/** The device was lost (driver reset, destroy(), process-wide failure); it cannot be used again. */
export class GpuDeviceLostError extends WebGpuError {
  override name = 'GpuDeviceLostError';
  constructor(
    message: string,
    /** WebGPU's GPUDeviceLostReason: 'destroyed' or 'unknown'. */
    readonly reason: string,
  ) {
    super(message, 'device');
  }
}

/**
 * A compute pipeline that did not come back within its time limit. NVIDIA's Vulkan compiler
 * took 5-11 s on large subgroup-matrix tiles and never returned on some when the pipeline was
 * created synchronously (../shared/gpu/README.md section 2); the message names the kernel and
 * its tile config so the planner (or the user) can pick a smaller one.
 */
export class PipelineTimeoutError extends WebGpuError {
  override name = 'PipelineTimeoutError';
  constructor(
    message: string,
    /** The kernel's label. */
    readonly kernel: string,
    /** Its tile config as given (undefined when none was). */
    readonly config: unknown,
    /** The time limit that passed, in ms. */
    readonly timeoutMs: number,
  ) {
    super(message, 'pipeline');
  }
}

/** Every candidate config of a kernel failed to compile (in time); `failures` says why, in order. */
export class PipelineFallbackError extends WebGpuError {
  override name = 'PipelineFallbackError';
  constructor(
    message: string,
    readonly kernel: string,
    readonly failures: readonly { config: unknown; error: Error }[],
  ) {
    super(message, 'configs');
  }
}

/** Maps an error popped from a scope of `filter` to its typed error; `what` names the operation. */
export function fromGpuError(filter: GPUErrorFilter, error: GPUError, what: string): WebGpuError {
  const text = `${what}: ${error.message}`;
  if (filter === 'out-of-memory') return new GpuOutOfMemoryError(text, what);
  if (filter === 'internal') return new GpuInternalError(text, what);
  return new GpuValidationError(text, what);
}
