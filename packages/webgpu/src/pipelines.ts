import { describe, ValueError } from '@attnkit/tensor';
import {
  fromGpuError,
  GpuDeviceLostError,
  GpuValidationError,
  PipelineFallbackError,
  PipelineTimeoutError,
  WebGpuError,
} from './errors.js';
import { loopVarsWithoutInitializer } from './wgsl.js';

/**
 * Default time limit of one compute pipeline's creation. Every subgroup-matrix variant that
 * compiled on the H200 did so within 11 s (../shared/gpu/README.md section 2), and attnkit's
 * SIMT kernels compile in well under a second on llvmpipe; 20 s leaves room for a loaded machine.
 */
export const DEFAULT_PIPELINE_TIMEOUT_MS = 20_000;

/** setTimeout's largest delay; a longer one (or Infinity) would fire at once, so it means "no limit". */
const MAX_TIMER_MS = 2 ** 31 - 1;

function checkTimeout(ms: unknown, argument: string): number {
  if (typeof ms !== 'number' || !(ms > 0)) {
    throw new ValueError(
      `${argument}: expected a positive number of milliseconds, got ${describe(ms)}`,
      argument,
    );
  }
  return ms;
}

/**
 * A tile config as it appears in error messages: `br=64 bc=64 subgroups=4` for a flat object
 * of numbers, strings and booleans, JSON otherwise, `(none)` when there is none.
 */
export function describeConfig(config: unknown): string {
  if (config === undefined) return '(none)';
  if (config !== null && typeof config === 'object' && !Array.isArray(config)) {
    const entries = Object.entries(config);
    if (entries.every(([, v]) => ['number', 'string', 'boolean'].includes(typeof v))) {
      return entries.map(([k, v]) => `${k}=${v}`).join(' ') || '{}';
    }
  }
  try {
    return JSON.stringify(config) ?? String(config);
  } catch {
    return String(config);
  }
}

/**
 * `start()`'s promise, or a rejection with `onTimeout()` once `timeoutMs` passed. The clock
 * starts when `start` has returned: a call that blocks the thread (a synchronous compile) cannot
 * be interrupted by a timer, and counting its time would reject work that already finished.
 * The work is not cancelled (WebGPU cannot cancel a compile); its late result is dropped.
 */
export function withTimeLimit<T>(
  start: () => Promise<T>,
  timeoutMs: number,
  onTimeout: () => Error,
): Promise<T> {
  let work: Promise<T>;
  try {
    work = Promise.resolve(start());
  } catch (e) {
    return Promise.reject(e);
  }
  if (!Number.isFinite(timeoutMs) || timeoutMs > MAX_TIMER_MS) return work;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), timeoutMs);
    work.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/** The PipelineTimeoutError of `kernel` with tile config `config` after `timeoutMs`. */
export function pipelineTimeout(
  kernel: string,
  config: unknown,
  timeoutMs: number,
): PipelineTimeoutError {
  return new PipelineTimeoutError(
    `${kernel}: compute pipeline not created within ${timeoutMs} ms (tile config ${describeConfig(config)}); ` +
      'a smaller tile config compiles faster (or raise pipelineTimeoutMs)',
    kernel,
    config,
    timeoutMs,
  );
}

export interface PipelineTimeLimit {
  /** The kernel's name in the error (default: the descriptor's label, else 'pipeline'). */
  kernel?: string;
  /** Its tile config, named in the error. */
  config?: unknown;
  /** Default DEFAULT_PIPELINE_TIMEOUT_MS; Infinity for none. */
  timeoutMs?: number;
}

/**
 * `device.createComputePipelineAsync(descriptor)` under a time limit: rejects with
 * PipelineTimeoutError naming the kernel and its tile config when the pipeline does not come
 * back in time. Never the synchronous createComputePipeline: on the H200 it blocked the event
 * loop for 100-150 s on some subgroup-matrix shaders, where no timer can fire.
 */
export function createComputePipelineInTime(
  device: GPUDevice,
  descriptor: GPUComputePipelineDescriptor,
  limit: PipelineTimeLimit = {},
): Promise<GPUComputePipeline> {
  const timeoutMs = checkTimeout(limit.timeoutMs ?? DEFAULT_PIPELINE_TIMEOUT_MS, 'timeoutMs');
  const kernel = limit.kernel ?? descriptor.label ?? 'pipeline';
  return withTimeLimit(
    () => device.createComputePipelineAsync(descriptor),
    timeoutMs,
    () => pipelineTimeout(kernel, limit.config, timeoutMs),
  );
}

export interface FallbackResult<C, T> {
  /** The first config (in the given order) whose build came back in time. */
  config: C;
  /** What its build returned (a pipeline, a CompiledProgram, ...). */
  value: T;
  /** The configs tried before it, each with its error (PipelineTimeoutError, GpuValidationError, ...). */
  failures: { config: C; error: Error }[];
}

export interface FallbackOptions {
  /** The kernel's name in errors. */
  kernel: string;
  /** Time limit of each config's build (default DEFAULT_PIPELINE_TIMEOUT_MS; Infinity for none). */
  timeoutMs?: number;
}

/**
 * Tries `configs` in order (best first) until `build(config)` comes back within the time limit,
 * and returns that config with what the build returned and why the ones before it failed. A
 * config falls back to the next on a GPU error (PipelineTimeoutError, a shader or pipeline the
 * implementation rejected, an internal compiler error, out-of-memory); a lost device or any
 * other error (a bug in `build`) propagates at once. When every config fails it rejects with
 * PipelineFallbackError listing them. Configs are tried one after the other, never together:
 * compiles that hang would otherwise pile up on the driver.
 */
export async function compileFirstInTime<C, T>(
  configs: readonly C[],
  build: (config: C) => Promise<T>,
  options: FallbackOptions,
): Promise<FallbackResult<C, T>> {
  if (!Array.isArray(configs) || configs.length === 0) {
    throw new ValueError(
      `configs: expected a non-empty array of tile configs, got ${describe(configs)}`,
      'configs',
    );
  }
  if (typeof build !== 'function') {
    throw new ValueError(`build: expected a function, got ${describe(build)}`, 'build');
  }
  if (options === null || typeof options !== 'object' || typeof options.kernel !== 'string') {
    throw new ValueError(
      `options.kernel: expected the kernel's name, got ${describe(options?.kernel)}`,
      'options.kernel',
    );
  }
  const { kernel } = options;
  const timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_PIPELINE_TIMEOUT_MS, 'timeoutMs');
  const failures: { config: C; error: Error }[] = [];
  for (const config of configs) {
    try {
      const value = await withTimeLimit(
        () => build(config),
        timeoutMs,
        () => pipelineTimeout(kernel, config, timeoutMs),
      );
      return { config, value, failures };
    } catch (e) {
      if (!(e instanceof WebGpuError) || e instanceof GpuDeviceLostError) throw e;
      failures.push({ config, error: e });
    }
  }
  throw new PipelineFallbackError(
    `${kernel}: no tile config compiled in time (${failures.length} tried):\n${failures
      .map((f) => `  ${describeConfig(f.config)}: ${f.error.name}: ${f.error.message}`)
      .join('\n')}`,
    kernel,
    failures,
  );
}

/** How a shader binds one resource, in binding order (group 0). */
export type BindingKind = 'uniform' | 'read' | 'storage';

export interface ComputeProgram {
  /** WGSL source. */
  code: string;
  entryPoint?: string;
  /** Pipeline-overridable constants (`override` declarations). */
  constants?: Record<string, number>;
  /** Binding kinds for @group(0) @binding(0..n-1). */
  bindings: readonly BindingKind[];
  label?: string;
  /** The kernel's tile config, named in a PipelineTimeoutError (not part of the cache key). */
  config?: unknown;
}

export interface CompiledProgram {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  bindings: readonly BindingKind[];
}

const BUFFER_TYPE: Record<BindingKind, GPUBufferBindingType> = {
  uniform: 'uniform',
  read: 'read-only-storage',
  storage: 'storage',
};

export interface PipelineCacheOptions {
  /** Time limit of each pipeline's creation in ms (default DEFAULT_PIPELINE_TIMEOUT_MS; Infinity for none). */
  timeoutMs?: number;
}

/** ATTNKIT_WGSL_LINT=1 in the environment (Node; never set in a browser). */
function wgslLintOn(): boolean {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
    ?.env;
  return env?.ATTNKIT_WGSL_LINT === '1';
}

/**
 * Compute pipelines keyed by WGSL source, entry point, constants and binding layout, as
 * tfjs-backend-webgpu caches its programs: compiling WGSL costs milliseconds to seconds,
 * a lookup costs a hash. Layouts are explicit (not 'auto'), so a binding the shader happens
 * not to read still binds. Pipelines are created with createComputePipelineAsync under a time
 * limit (`timeoutMs`); one that does not come back in time rejects with PipelineTimeoutError,
 * and the cache remembers that: the same program rejects at once afterwards instead of
 * starting another compile that would hang too (`forget(program)` allows a retry).
 */
export class PipelineCache {
  private readonly cache = new Map<string, Promise<CompiledProgram>>();
  private readonly failed = new Map<string, PipelineTimeoutError>();
  /**
   * The same program object asked for again skips validation and the key (its WGSL source,
   * kilobytes to hash): kernels that build their program once and reuse it (nn's) are looked up
   * per pass. Program objects are taken as immutable.
   */
  private readonly byProgram = new WeakMap<ComputeProgram, Promise<CompiledProgram>>();
  /** Programs whose compile has succeeded, by object: ready() answers without a promise. */
  private readonly done = new WeakMap<ComputeProgram, CompiledProgram>();
  compiled = 0;
  /** Time limit of each pipeline's creation, in ms. */
  readonly timeoutMs: number;

  constructor(
    private readonly device: GPUDevice,
    options: PipelineCacheOptions = {},
  ) {
    this.timeoutMs = checkTimeout(
      options.timeoutMs ?? DEFAULT_PIPELINE_TIMEOUT_MS,
      'pipelineTimeoutMs',
    );
  }

  static key(program: ComputeProgram): string {
    const constants = Object.entries(program.constants ?? {})
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    return `${program.entryPoint ?? 'main'}|${constants}|${program.bindings.join(',')}|${program.code}`;
  }

  get size(): number {
    return this.cache.size;
  }

  /** The compiled pipeline; rejects with GpuValidationError carrying the compiler's messages. */
  get(program: ComputeProgram): Promise<CompiledProgram> {
    const known = typeof program === 'object' && program !== null && this.byProgram.get(program);
    if (known) return known;
    if (program === null || typeof program !== 'object' || typeof program.code !== 'string') {
      throw new ValueError(
        `program: expected { code, bindings }, got ${describe(program)}`,
        'program',
      );
    }
    if (!Array.isArray(program.bindings) || program.bindings.some((b) => !(b in BUFFER_TYPE))) {
      throw new ValueError(
        `program.bindings: expected an array of "uniform" | "read" | "storage", got ${describe(program.bindings)}`,
        'program.bindings',
      );
    }
    const key = PipelineCache.key(program);
    const failure = this.failed.get(key);
    if (failure) return Promise.reject(failure);
    let entry = this.cache.get(key);
    if (!entry) {
      entry = this.compile(program);
      const made = entry;
      made.catch((e: unknown) => {
        // A rejected shader is not cached (the caller may fix the source and retry); a compile
        // that timed out is remembered, as it would hang again.
        if (this.cache.get(key) === made) this.cache.delete(key);
        if (e instanceof PipelineTimeoutError) this.failed.set(key, e);
      });
      this.cache.set(key, made);
    }
    const found = entry;
    this.byProgram.set(program, found);
    // Only successes are kept per object: a failed one goes through the key again next time.
    found.then(
      (c) => {
        if (this.byProgram.get(program) === found) this.done.set(program, c);
      },
      () => {
        if (this.byProgram.get(program) === found) this.byProgram.delete(program);
      },
    );
    return found;
  }

  /**
   * The compiled pipeline of this program object, synchronously, once a get() of the same object
   * has resolved; else undefined (ask get()). Lets a caller that records work synchronously
   * encode it at once instead of waiting a microtask for a cached promise.
   */
  ready(program: ComputeProgram): CompiledProgram | undefined {
    return this.done.get(program);
  }

  /** The PipelineTimeoutError this program's compile ended with, if it did. */
  failure(program: ComputeProgram): PipelineTimeoutError | undefined {
    return this.failed.get(PipelineCache.key(program));
  }

  /** Forgets a remembered timeout of this program, so that the next get() compiles it again. */
  forget(program: ComputeProgram): void {
    this.byProgram.delete(program);
    this.done.delete(program);
    this.failed.delete(PipelineCache.key(program));
  }

  private async compile(program: ComputeProgram): Promise<CompiledProgram> {
    const device = this.device;
    const label = program.label ?? 'attnkit';
    if (wgslLintOn()) {
      // Tests (ATTNKIT_WGSL_LINT=1, set by the shared vitest config) reject what compiles on
      // every adapter but computes wrong on some drivers (wgsl.ts loopVarsWithoutInitializer).
      const bare = loopVarsWithoutInitializer(program.code);
      if (bare.length > 0) {
        throw new GpuValidationError(
          `${label}: WGSL lint: var declared without an initializer inside a loop (${bare.join(', ')}); Dawn's Vulkan path does not re-zero it each iteration: write \`var x = T();\``,
          'program.code',
        );
      }
    }
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code: program.code, label });
    const layout = device.createBindGroupLayout({
      label,
      entries: program.bindings.map((kind, binding) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: BUFFER_TYPE[kind] },
      })),
    });
    const scoped = await device.popErrorScope();
    if (scoped) {
      const info = await module.getCompilationInfo();
      const errors = info.messages
        .filter((m) => m.type === 'error')
        .map((m) => `${m.lineNum}:${m.linePos} ${m.message}`)
        .join('\n');
      throw new GpuValidationError(
        `${label}: shader rejected:\n${errors || scoped.message}`,
        'program.code',
      );
    }
    let pipeline: GPUComputePipeline;
    try {
      pipeline = await createComputePipelineInTime(
        device,
        {
          label,
          layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
          compute: {
            module,
            entryPoint: program.entryPoint ?? 'main',
            constants: program.constants,
          },
        },
        { kernel: label, config: program.config, timeoutMs: this.timeoutMs },
      );
    } catch (e) {
      if (e instanceof WebGpuError) throw e;
      throw fromGpuError('validation', e as GPUError, `${label}: pipeline creation`);
    }
    this.compiled++;
    return { pipeline, layout, bindings: program.bindings };
  }
}
