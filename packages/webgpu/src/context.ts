import { AttnkitError, describe, Tensor, ValueError } from '@attnkit/tensor';
import {
  type AdapterRequest,
  DISABLE_ROBUSTNESS_TOGGLE,
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
import { type CompiledProgram, DEFAULT_PIPELINE_TIMEOUT_MS, PipelineCache } from './pipelines.js';
import { BufferPool } from './pool.js';
import type { GpuProfiler } from './profiler.js';
import type { WebGpuStorage } from './storage.js';
import { parseSubgroupMatrixConfigs, type SubgroupMatrixConfig } from './subgroup-matrix.js';

/** What the device offers attnkit's kernels, detected once. */
export interface WebGpuFeatures {
  subgroups: boolean;
  shaderF16: boolean;
  timestampQuery: boolean;
  subgroupMatrix: boolean;
  /** Subgroup sizes the adapter reports (0 when unknown or without subgroups). */
  subgroupMinSize: number;
  subgroupMaxSize: number;
  /**
   * The adapter's subgroup-matrix configs (empty without `chromium-experimental-subgroup-matrix`
   * on the device), e.g. `{ M: 16, N: 16, K: 16, component: 'f16', result: 'f32' }`.
   */
  subgroupMatrixConfigs: readonly SubgroupMatrixConfig[];
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
  /**
   * Warn (once per context) when webgpu tensors are garbage-collected without dispose() or a
   * scope. Default: true unless `process.env.NODE_ENV === 'production'`.
   */
  warnLeaks?: boolean;
  /**
   * Time limit of one compute pipeline's creation, in ms (default 20 s): a pipeline that does
   * not come back in time rejects with PipelineTimeoutError (see PipelineCache).
   */
  pipelineTimeoutMs?: number;
  /**
   * `'adapter'` (default): the adapter's own limits, as large as it allows. `'default'`:
   * WebGPU's core default limits (`CORE_DEFAULT_LIMITS`: 16 KiB of workgroup storage, 256
   * invocations, 8 storage buffers, 128 MiB bindings), or the adapter's where lower — what the
   * smallest devices give, to develop and test for them on a larger one (with `features: []`,
   * no optional feature either). Kernels plan their tiles for `ctx.limits`.
   */
  limits?: 'adapter' | 'default';
}

/** WebGPU's core default limits (the spec's `GPUSupportedLimits` defaults) the kernels read. */
export const CORE_DEFAULT_LIMITS: Readonly<WebGpuLimits> = Object.freeze({
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBuffersPerShaderStage: 8,
  maxStorageBufferBindingSize: 134217728,
  maxBufferSize: 268435456,
});

/**
 * Part of a buffer bound as one storage binding: `size` bytes from `offset` (a multiple of
 * BINDING_OFFSET_ALIGNMENT; `size` a multiple of 4). What a kernel binds when the whole buffer
 * would pass the device's maxStorageBufferBindingSize (a tensor cut into pieces, each bound
 * where it lies, instead of copied out).
 */
export interface BufferRange {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** What a step binds: a whole buffer, or a range of one. */
export type BindingResource = GPUBuffer | BufferRange;

/**
 * Byte alignment of a BufferRange's offset. WebGPU's minStorageBufferOffsetAlignment is a power
 * of two of at most 256 on every device (the spec's bound), so 256 is valid everywhere.
 */
export const BINDING_OFFSET_ALIGNMENT = 256;

/** True for a BufferRange (GPUBuffer has neither `buffer` nor `offset`). */
export function isBufferRange(b: BindingResource): b is BufferRange {
  return typeof (b as BufferRange).offset === 'number' && (b as BufferRange).buffer !== undefined;
}

/** The buffer a binding resource binds (all of it or part). */
export function bindingBuffer(b: BindingResource): GPUBuffer {
  return isBufferRange(b) ? b.buffer : b;
}

/** Bytes a binding resource exposes to the kernel. */
export function bindingSize(b: BindingResource): number {
  return b.size;
}

/**
 * The bind-group entry of `b` at `binding`. A whole buffer is bound whole: one larger than a
 * binding stays WebGPU's validation error (BufferPool never hands out such a buffer for a
 * request that fits: sizeClass's cap).
 */
export function bindGroupEntry(b: BindingResource, binding: number): GPUBindGroupEntry {
  if (isBufferRange(b))
    return { binding, resource: { buffer: b.buffer, offset: b.offset, size: b.size } };
  return { binding, resource: { buffer: b } };
}

export interface ComputeStep {
  program: CompiledProgram;
  /** One buffer (or range of one) per binding of the program, in order. */
  buffers: readonly BindingResource[];
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

/** The storages a scope created, and the scope that was current when it began. */
interface TensorScope {
  readonly storages: Set<WebGpuStorage>;
  readonly parent: TensorScope | undefined;
  ended: boolean;
}

/** `scope` or, once it has ended (scopes that interleaved), its nearest live ancestor. */
function liveScope(scope: TensorScope | undefined): TensorScope | undefined {
  while (scope?.ended) scope = scope.parent;
  return scope;
}

/** What the safety net needs once a storage is garbage-collected (never the storage itself). */
export interface CollectedStorage {
  readonly ctx: WebGpuContext;
  readonly buffer: GPUBuffer;
}

/**
 * The safety net's callback: a webgpu storage was garbage-collected without dispose(). Its
 * buffer goes back to the pool and the context counts the leak (and warns once, when
 * `warnLeaks`). Exported for tests; the FinalizationRegistry calls it.
 */
export function releaseCollected(held: CollectedStorage): void {
  held.ctx.collected(held.buffer);
}

const finalizer: FinalizationRegistry<CollectedStorage> | undefined =
  typeof FinalizationRegistry === 'function'
    ? new FinalizationRegistry(releaseCollected)
    : undefined;

function defaultWarnLeaks(): boolean {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
    ?.env;
  return env?.NODE_ENV !== 'production';
}

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
  /**
   * WGSL language features of the GPU object the adapter came from (e.g.
   * `packed_4x8_integer_dot_product`, which dot4I8Packed needs), or undefined where the
   * implementation does not report them (then a shader that needs one fails to compile).
   */
  wgslLanguageFeatures: ReadonlySet<string> | undefined = undefined;
  /**
   * Warn once when webgpu tensors of this context are garbage-collected without dispose()
   * (default: true unless NODE_ENV is 'production'). Their buffers are released either way.
   */
  warnLeaks = defaultWarnLeaks();
  /** Webgpu tensor storages created on this context and not yet disposed or collected. */
  liveTensors = 0;
  /** Storages the garbage collector reclaimed without dispose() (the safety net released them). */
  leakedTensors = 0;
  private lostError: GpuDeviceLostError | undefined;
  private currentScope: TensorScope | undefined;
  private leakWarningQueued = false;

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
    /** The Dawn toggles the adapter was created with ([] in browsers). */
    readonly dawnToggles: readonly string[] = [],
    pipelineTimeoutMs = DEFAULT_PIPELINE_TIMEOUT_MS,
  ) {
    this.pool = new BufferPool(device);
    this.pipelines = new PipelineCache(device, { timeoutMs: pipelineTimeoutMs });
    device.lost.then((info) => {
      this.lostError = new GpuDeviceLostError(
        `webgpu: device lost (${info.reason}): ${info.message}`,
        info.reason ?? 'unknown',
      );
    });
  }

  /** True once the device is lost or destroyed. */
  /**
   * Whether the device's shaders clamp out-of-bounds accesses (WebGPU's default; false when
   * created with `robustness: false` or the `disable_robustness` Dawn toggle).
   */
  get robustAccess(): boolean {
    return !this.dawnToggles.includes(DISABLE_ROBUSTNESS_TOGGLE);
  }

  get lost(): boolean {
    return this.lostError !== undefined;
  }

  /** GPU buffers of this context's pool handed out and not yet released (tensors, uniforms, staging). */
  get liveBuffers(): number {
    return this.pool.live;
  }

  /**
   * Runs `fn` and then disposes every webgpu tensor created on this context inside it that it
   * does not return. The returned value is walked (a Tensor, arrays, plain objects, Maps and
   * Sets of them): tensors found there survive and belong to the enclosing scope, if any.
   * Scopes nest; when `fn` throws or rejects, everything it created is released and the error
   * propagates. Await a scope before starting another one beside it: scopes of one context
   * that run concurrently (interleaved awaits) cannot tell whose tensors are whose.
   */
  async scope<T>(fn: () => T | Promise<T>): Promise<T> {
    if (typeof fn !== 'function') {
      throw new ValueError(`fn: expected a function, got ${describe(fn)}`, 'fn');
    }
    const scope: TensorScope = {
      storages: new Set(),
      parent: liveScope(this.currentScope),
      ended: false,
    };
    this.currentScope = scope;
    let result: T;
    try {
      result = await fn();
    } catch (e) {
      this.endScope(scope, new Set());
      throw e;
    }
    this.endScope(scope, storagesIn(result));
    return result;
  }

  /**
   * Called by WebGpuStorage's constructor: registers the storage with the current scope and with
   * the garbage-collection safety net.
   */
  track(storage: WebGpuStorage): void {
    this.liveTensors++;
    finalizer?.register(storage, { ctx: this, buffer: storage.buffer }, storage);
    this.currentScope = liveScope(this.currentScope);
    if (this.currentScope) {
      this.currentScope.storages.add(storage);
      storage.scope = this.currentScope.storages;
    }
  }

  /** Called by WebGpuStorage.dispose(): the storage leaves its scope and the safety net. */
  untrack(storage: WebGpuStorage): void {
    this.liveTensors--;
    finalizer?.unregister(storage);
    storage.scope?.delete(storage);
    storage.scope = undefined;
  }

  /** The safety net (see releaseCollected): a storage was collected without dispose(). */
  collected(buffer: GPUBuffer): void {
    this.liveTensors--;
    this.leakedTensors++;
    if (!this.lost) this.pool.release(buffer);
    if (this.warnLeaks && !this.leakWarningQueued) {
      this.leakWarningQueued = true;
      // Let the rest of this collection's callbacks run first, so the count covers them.
      setTimeout(() => {
        console.warn(
          `@attnkit/webgpu: ${this.leakedTensors} webgpu tensor(s) were garbage-collected without dispose(); ` +
            'the safety net released their GPU buffers late, after the garbage collector ran, so ' +
            'memory grows until then. Call tensor.dispose() when done, or run the work inside ' +
            '`await ctx.scope(async () => ...)`, which releases what the block created and did ' +
            'not return. (Warned once per context; set warnLeaks: false to silence.)',
        );
      }, 0);
    }
  }

  private endScope(scope: TensorScope, keep: Set<WebGpuStorage>): void {
    // Normally `scope` is current; when scopes interleaved, ended ones are skipped later.
    scope.ended = true;
    this.currentScope = liveScope(this.currentScope);
    const parent = liveScope(scope.parent);
    for (const storage of [...scope.storages]) {
      if (keep.has(storage) && !storage.isDisposed) {
        scope.storages.delete(storage);
        storage.scope = parent?.storages;
        parent?.storages.add(storage);
      } else {
        storage.dispose();
      }
    }
    scope.storages.clear();
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
    const sink = this.dispatchErrorSink;
    if (!sink) {
      await this.scoped('dispatch', () => this.encodeAndSubmit(steps, profiler));
      return;
    }
    // Deferred: the scopes' outcome goes to the sink; no round trip to the device here.
    for (const f of SCOPE_FILTERS) this.device.pushErrorScope(f);
    let threw = false;
    try {
      this.encodeAndSubmit(steps, profiler);
    } catch (e) {
      threw = true;
      throw e;
    } finally {
      const check = this.popScopes('dispatch');
      if (threw) check.catch(() => undefined);
      else sink(check);
    }
  }

  /**
   * Set by code that runs a family's kernels inside its own queue (@attnkit/nn's webgpu queue,
   * around each attention call): while set, dispatch() submits and hands its error scopes'
   * outcome (a typed error, or undefined; a rejection when the device was lost) to this function
   * instead of awaiting it, and resolves at once. Awaiting the scopes costs an event-loop turn per
   * dispatch for Dawn to deliver them, a stall in the queue per attention call (12 a generated
   * token of GPT-2 small). The setter must surface what it receives (nn's queue fails the work
   * and rejects its next await). While it is set, every dispatch on the context reports there,
   * other callers' too. Left undefined by everything else.
   */
  dispatchErrorSink: ((check: Promise<WebGpuError | undefined>) => void) | undefined = undefined;

  /**
   * ValueError naming `workgroups` unless every step's grid is integers within this device's
   * maxComputeWorkgroupsPerDimension: dispatch() checks before encoding, and code that encodes
   * steps into its own encoder (the skeleton's encode path) before handing them over.
   */
  checkSteps(steps: readonly ComputeStep[]): void {
    const maxGroups = this.limits.maxComputeWorkgroupsPerDimension;
    for (const step of steps) {
      const [x, y = 1, z = 1] = step.workgroups;
      if ([x, y, z].some((n) => !Number.isInteger(n) || n < 0 || n > maxGroups))
        throw new ValueError(
          `workgroups: expected integers in [0, ${maxGroups}], got ${describe([x, y, z])} (${step.label ?? 'step'})`,
          'workgroups',
        );
    }
  }

  private encodeAndSubmit(steps: readonly ComputeStep[], profiler?: GpuProfiler): void {
    const device = this.device;
    this.checkSteps(steps);
    const encoder = device.createCommandEncoder();
    for (const step of steps) {
      const [x, y = 1, z = 1] = step.workgroups;
      if (x * y * z === 0) continue;
      const bindGroup = device.createBindGroup({
        layout: step.program.layout,
        entries: step.buffers.map(bindGroupEntry),
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
  }

  /** Runs `fn` inside validation / out-of-memory / internal error scopes; rejects with the first error. */
  async scoped<T>(what: string, fn: () => T): Promise<T> {
    this.checkAlive();
    for (const f of SCOPE_FILTERS) this.device.pushErrorScope(f);
    let result: T;
    try {
      result = fn();
    } finally {
      const err = await this.popScopes(what);
      // biome-ignore lint/correctness/noUnsafeFinally: the GPU error is the cause the caller needs.
      if (err) throw err;
    }
    return result;
  }

  /**
   * Pops the three scopes pushed last (popErrorScope pops synchronously, in LIFO order) and
   * resolves with the first error as a typed one, or undefined: one round trip to the device for
   * all three. Rejects when the device was lost meanwhile.
   */
  private popScopes(what: string): Promise<WebGpuError | undefined> {
    const order = [...SCOPE_FILTERS].reverse();
    const popped = Promise.all(order.map(() => this.device.popErrorScope()));
    return popped.then((errors) => {
      this.checkAlive();
      const i = errors.findIndex((e) => e !== null);
      return i >= 0 ? fromGpuError(order[i]!, errors[i]!, what) : undefined;
    });
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

/** The webgpu storages a scope's result holds: Tensors in arrays, plain objects, Maps and Sets. */
function storagesIn(value: unknown): Set<WebGpuStorage> {
  const found = new Set<WebGpuStorage>();
  const seen = new Set<object>();
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object' || seen.has(v)) continue;
    seen.add(v);
    if (v instanceof Tensor) {
      if (v.device === 'webgpu') found.add(v.storage as WebGpuStorage);
    } else if ((v as { device?: unknown }).device === 'webgpu' && 'buffer' in v) {
      found.add(v as WebGpuStorage);
    } else if (Array.isArray(v)) {
      stack.push(...v);
    } else if (v instanceof Map) {
      stack.push(...v.keys(), ...v.values());
    } else if (v instanceof Set) {
      stack.push(...v);
    } else {
      const proto = Object.getPrototypeOf(v);
      if (proto === Object.prototype || proto === null) stack.push(...Object.values(v));
    }
  }
  return found;
}

/** `ctx.scope(fn)` as a function: see WebGpuContext.scope. */
export function webgpuScope<T>(ctx: WebGpuContext, fn: () => T | Promise<T>): Promise<T> {
  if (!(ctx instanceof WebGpuContext)) {
    throw new ValueError(`ctx: expected a WebGpuContext, got ${describe(ctx)}`, 'ctx');
  }
  return ctx.scope(fn);
}

/** The error scopes every checked submit runs inside, pushed in this order. */
const SCOPE_FILTERS: readonly GPUErrorFilter[] = ['internal', 'out-of-memory', 'validation'];

function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/**
 * The whole 4-byte words of `bytes` bytes, in bytes. Not `bytes & ~3`: JS bit operations work on
 * int32, so from 2 GiB up that was negative (an upload of 2^31 bytes threw a RangeError).
 */
export function wholeWordBytes(bytes: number): number {
  if (!Number.isSafeInteger(bytes) || bytes < 0)
    throw new ValueError(`bytes: expected a non-negative integer, got ${describe(bytes)}`, 'bytes');
  return bytes - (bytes % 4);
}

function writePadded(device: GPUDevice, buffer: GPUBuffer, data: ArrayBufferView): void {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const whole = wholeWordBytes(bytes.byteLength);
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
  if (options.warnLeaks !== undefined && typeof options.warnLeaks !== 'boolean') {
    throw new ValueError(
      `warnLeaks: expected a boolean, got ${describe(options.warnLeaks)}`,
      'warnLeaks',
    );
  }
  if (
    options.pipelineTimeoutMs !== undefined &&
    !(typeof options.pipelineTimeoutMs === 'number' && options.pipelineTimeoutMs > 0)
  ) {
    throw new ValueError(
      `pipelineTimeoutMs: expected a positive number of milliseconds, got ${describe(options.pipelineTimeoutMs)}`,
      'pipelineTimeoutMs',
    );
  }
  if (
    options.limits !== undefined &&
    options.limits !== 'adapter' &&
    options.limits !== 'default'
  ) {
    throw new ValueError(
      `limits: expected 'adapter' or 'default', got ${describe(options.limits)}`,
      'limits',
    );
  }
  const { adapter, backend, keepAlive, dawnToggles, wgslLanguageFeatures } =
    await findAdapter(options);
  const requiredFeatures = wanted.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
  const requiredLimits: Record<string, number> = {};
  // Dawn's OpenGL ES path (llvmpipe) makes a compatibility-mode adapter whose own defaults are
  // lower still (128 invocations, 4 storage buffers): 'default' asks for the core values
  // explicitly, capped by what the adapter has.
  for (const name of LIMIT_NAMES) {
    const most = adapter.limits[name] as number;
    requiredLimits[name] =
      options.limits === 'default' ? Math.min(most, CORE_DEFAULT_LIMITS[name]) : most;
  }
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
    // Configs are only usable with the feature enabled on the device (features: [] turns it off).
    subgroupMatrixConfigs: has('chromium-experimental-subgroup-matrix')
      ? parseSubgroupMatrixConfigs(info)
      : [],
  };
  const limits = {} as WebGpuLimits;
  for (const name of LIMIT_NAMES) limits[name] = device.limits[name] as number;
  const ctx = new WebGpuContext(
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
    dawnToggles,
    options.pipelineTimeoutMs,
  );
  if (options.warnLeaks !== undefined) ctx.warnLeaks = options.warnLeaks;
  ctx.wgslLanguageFeatures = wgslLanguageFeatures;
  return ctx;
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
