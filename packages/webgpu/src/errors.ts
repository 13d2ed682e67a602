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

/** Maps an error popped from a scope of `filter` to its typed error; `what` names the operation. */
export function fromGpuError(filter: GPUErrorFilter, error: GPUError, what: string): WebGpuError {
  const text = `${what}: ${error.message}`;
  if (filter === 'out-of-memory') return new GpuOutOfMemoryError(text, what);
  if (filter === 'internal') return new GpuInternalError(text, what);
  return new GpuValidationError(text, what);
}
