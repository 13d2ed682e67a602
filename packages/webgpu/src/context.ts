import { AttnkitError, describe, ValueError } from '@attnkit/tensor';
import {
  type AdapterRequest,
  findAdapter,
  OPTIONAL_FEATURES,
  type OptionalFeature,
} from './adapter.js';
import {
  fromGpuError,
  GpuDeviceLostError,
  GpuValidationError,
  type WebGpuError,
} from './errors.js';
import { type CompiledProgram, PipelineCache } from './pipelines.js';
import { BufferPool } from './pool.js';
import type { GpuProfiler } from './profiler.js';

/** What the device offers attnkit's kernels, detected once. */
export interface WebGpuFeatures {
  subgroups: boolean;
  shaderF16: boolean;
  timestampQuery: boolean;
  subgroupMatrix: boolean;
  /** Subgroup sizes the adapter reports (0 when unknown or without subgroups). */
  subgroupMinSize: number;
  subgroupMaxSize: number;
}

/** The limits the kernels plan against (the adapter's real ones, requested on the device). */
export interface WebGpuLimits {
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupsPerDimension: number;
  maxStorageBuffersPerShaderStage: number;
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
}

export interface WebGpuContextOptions extends AdapterRequest {
  /**
   * Optional features to enable when the adapter has them (default: all of OPTIONAL_FEATURES).
   * Pass [] to force the portable kernels.
   */
  features?: readonly OptionalFeature[];
}

export interface ComputeStep {
  program: CompiledProgram;
  /** One buffer per binding of the program, in order. */
  buffers: readonly GPUBuffer[];
  workgroups: readonly [number, number?, number?];
  label?: string;
}

const LIMIT_NAMES: readonly (keyof WebGpuLimits)[] = [
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxStorageBufferBindingSize',
  'maxBufferSize',
];

const STORAGE_USAGE = () =>
  GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/**
 * One WebGPU device with what attnkit keeps beside it: detected features and limits, a buffer
 * pool, a pipeline cache, and error handling that turns validation errors, out-of-memory and
 * device loss into typed errors (rejected promises).
 */
export class WebGpuContext {
  readonly pool: BufferPool;
  readonly pipelines: PipelineCache;
  /** Tests set this: every output buffer from `createOutput` starts as NaN (all bits set). */
  poisonOutputs = false;
  private lostError: GpuDeviceLostError | undefined;

  constructor(
    readonly device: GPUDevice,
    readonly features: WebGpuFeatures,
    readonly limits: WebGpuLimits,
    /** 'browser' or the Dawn backend name. */
    readonly backend: string,
    readonly adapterInfo: {
      vendor: string;
      architecture: string;
      device: string;
      description: string;
    },
    private readonly keepAlive: unknown[] = [],
  ) {
    this.pool = new BufferPool(device);
    this.pipelines = new PipelineCache(device);
    device.lost.then((info) => {
      this.lostError = new GpuDeviceLostError(
        `webgpu: device lost (${info.reason}): ${info.message}`,
        info.reason ?? 'unknown',
      );
    });
  }

  /** True once the device is lost or destroyed. */
  get lost(): boolean {
    return this.lostError !== undefined;
  }

  /** Throws GpuDeviceLostError if the device is gone. */
  checkAlive(): void {
    if (this.lostError) throw this.lostError;
  }

  /** A pooled storage buffer (copyable both ways) of at least `bytes` bytes. */
  createStorageBuffer(bytes: number, label?: string): GPUBuffer {
    this.checkAlive();
    return this.pool.acquire(bytes, STORAGE_USAGE(), label);
  }

  /** A storage buffer for kernel outputs: NaN-filled when `poisonOutputs` is set. */
  createOutput(bytes: number, label?: string): GPUBuffer {
    const buffer = this.createStorageBuffer(bytes, label);
    if (this.poisonOutputs) {
      this.device.queue.writeBuffer(buffer, 0, new Uint8Array(buffer.size).fill(0xff));
    }
    return buffer;
  }

  /** A storage buffer holding `data` (padded to 4 bytes). */
  createFromData(data: ArrayBufferView, label?: string): GPUBuffer {
    const buffer = this.createStorageBuffer(data.byteLength, label);
    writePadded(this.device, buffer, data);
    return buffer;
  }

  /** A uniform buffer holding `data` (pooled; release it after the dispatch). */
  createUniform(data: ArrayBufferView, label?: string): GPUBuffer {
    this.checkAlive();
    const buffer = this.pool.acquire(
      data.byteLength,
      GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label,
    );
    writePadded(this.device, buffer, data);
    return buffer;
  }

  /**
   * Encodes the steps into one command buffer (one compute pass each, so a profiler can time
   * them) and submits it. Resolves once WebGPU has validated the work, rejects with a typed
   * error otherwise; it does not wait for the GPU to finish (reads do).
   */
  async dispatch(steps: readonly ComputeStep[], profiler?: GpuProfiler): Promise<void> {
    this.checkAlive();
    const device = this.device;
    const maxGroups = this.limits.maxComputeWorkgroupsPerDimension;
    await this.scoped('dispatch', () => {
      const encoder = device.createCommandEncoder();
      for (const step of steps) {
        const [x, y = 1, z = 1] = step.workgroups;
        for (const n of [x, y, z]) {
          if (!Number.isInteger(n) || n < 0 || n > maxGroups) {
            throw new ValueError(
              `workgroups: expected integers in [0, ${maxGroups}], got ${describe([x, y, z])} (${step.label ?? 'step'})`,
              'workgroups',
            );
          }
        }
        if (x * y * z === 0) continue;
        const bindGroup = device.createBindGroup({
          layout: step.program.layout,
          entries: step.buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
        });
        const pass = encoder.beginComputePass({
          label: step.label,
          timestampWrites: profiler?.passTimestamps(step.label ?? 'pass'),
        });
        pass.setPipeline(step.program.pipeline);
        pass.setBindGroup(0, bindGroup);
        pass.dispatchWorkgroups(x, y, z);
        pass.end();
      }
      profiler?.resolve(encoder);
      device.queue.submit([encoder.finish()]);
    });
  }

  /** Runs `fn` inside validation / out-of-memory / internal error scopes; rejects with the first error. */
  async scoped<T>(what: string, fn: () => T): Promise<T> {
    this.checkAlive();
    const device = this.device;
    const filters: GPUErrorFilter[] = ['internal', 'out-of-memory', 'validation'];
    for (const f of filters) device.pushErrorScope(f);
    let result: T;
    try {
      result = fn();
    } finally {
      const errors: [GPUErrorFilter, GPUError | null][] = [];
      for (const f of [...filters].reverse()) errors.push([f, await device.popErrorScope()]);
      this.checkAlive();
      const first = errors.find(([, e]) => e !== null);
      if (first) {
        const err: WebGpuError = fromGpuError(first[0], first[1]!, what);
        // biome-ignore lint/correctness/noUnsafeFinally: the GPU error is the cause the caller needs.
        throw err;
      }
    }
    return result;
  }

  /** Resolves when the GPU has finished all submitted work. */
  async sync(): Promise<void> {
    this.checkAlive();
    await this.device.queue.onSubmittedWorkDone();
    this.checkAlive();
  }

  /**
   * Copies `bytes` bytes of `buffer` from `offset` back to the CPU. Failures reject with typed
   * errors: GpuDeviceLostError when the device is gone, GpuValidationError for a copy or map
   * WebGPU refuses (never the DOMException mapAsync rejects with).
   */
  async readBuffer(buffer: GPUBuffer, bytes: number, offset = 0): Promise<ArrayBuffer> {
    this.checkAlive();
    for (const [name, value] of [
      ['bytes', bytes],
      ['offset', offset],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < 0) {
        throw new ValueError(
          `${name}: expected a non-negative integer, got ${describe(value)}`,
          name,
        );
      }
    }
    // WebGPU refuses to map an empty range (OperationError); an empty tensor has nothing to copy.
    if (bytes === 0) return new ArrayBuffer(0);
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.pool.acquire(size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    try {
      await this.scoped('read', () => {
        const encoder = this.device.createCommandEncoder();
        encoder.copyBufferToBuffer(buffer, offset, staging, 0, size);
        this.device.queue.submit([encoder.finish()]);
      });
      await staging.mapAsync(GPUMapMode.READ, 0, size);
      const out = staging.getMappedRange(0, size).slice(0, bytes);
      staging.unmap();
      return out;
    } catch (e) {
      this.checkAlive();
      if (e instanceof AttnkitError) throw e;
      // mapAsync and getMappedRange reject with bare DOMExceptions (OperationError, AbortError).
      throw new GpuValidationError(`read: ${errorText(e)}`, 'read');
    } finally {
      if (staging.mapState === 'unmapped') this.pool.release(staging);
    }
  }

  /** Destroys the device (pending reads reject with GpuDeviceLostError). */
  destroy(): void {
    this.pool.trim();
    this.device.destroy();
    this.keepAlive.length = 0;
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

function writePadded(device: GPUDevice, buffer: GPUBuffer, data: ArrayBufferView): void {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const whole = bytes.byteLength & ~3;
  if (whole > 0) device.queue.writeBuffer(buffer, 0, bytes, 0, whole);
  if (whole < bytes.byteLength) {
    const tail = new Uint8Array(4);
    tail.set(bytes.subarray(whole));
    device.queue.writeBuffer(buffer, whole, tail);
  }
}

/** Acquires an adapter and a device with every optional feature wanted and the adapter's real limits. */
export async function createWebGpuContext(
  options: WebGpuContextOptions = {},
): Promise<WebGpuContext> {
  if (options === null || typeof options !== 'object') {
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  }
  const wanted = options.features ?? OPTIONAL_FEATURES;
  if (!Array.isArray(wanted) || wanted.some((f) => !OPTIONAL_FEATURES.includes(f))) {
    throw new ValueError(
      `features: expected a subset of ${OPTIONAL_FEATURES.join(', ')}, got ${describe(wanted)}`,
      'features',
    );
  }
  const { adapter, backend, keepAlive } = await findAdapter(options);
  const requiredFeatures = wanted.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
  const requiredLimits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) requiredLimits[name] = adapter.limits[name] as number;
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  const info = adapter.info as GPUAdapterInfo & {
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
  };
  const has = (f: string) => device.features.has(f);
  const features: WebGpuFeatures = {
    subgroups: has('subgroups'),
    shaderF16: has('shader-f16'),
    timestampQuery: has('timestamp-query'),
    subgroupMatrix: has('chromium-experimental-subgroup-matrix'),
    subgroupMinSize: has('subgroups') ? (info.subgroupMinSize ?? 0) : 0,
    subgroupMaxSize: has('subgroups') ? (info.subgroupMaxSize ?? 0) : 0,
  };
  const limits = {} as WebGpuLimits;
  for (const name of LIMIT_NAMES) limits[name] = device.limits[name] as number;
  return new WebGpuContext(
    device,
    features,
    limits,
    backend,
    {
      vendor: info.vendor ?? '',
      architecture: info.architecture ?? '',
      device: info.device ?? '',
      description: info.description ?? '',
    },
    keepAlive,
  );
}

let shared: Promise<WebGpuContext> | undefined;

/**
 * The process-wide default context, created on first use with default options. Kernels that
 * receive webgpu tensors use the context their storage belongs to; this one is for uploads.
 */
export function getWebGpuContext(): Promise<WebGpuContext> {
  if (!shared) {
    shared = createWebGpuContext();
    shared.catch(() => {
      shared = undefined;
    });
  }
  return shared;
}

/** Replaces the default context (e.g. one created with other options); undefined forgets it. */
export function setWebGpuContext(ctx: WebGpuContext | undefined): void {
  if (ctx !== undefined && !(ctx instanceof WebGpuContext)) {
    throw new ValueError(`ctx: expected a WebGpuContext, got ${describe(ctx)}`, 'ctx');
  }
  shared = ctx ? Promise.resolve(ctx) : undefined;
}
