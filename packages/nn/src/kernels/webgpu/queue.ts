import {
  AttnkitError,
  bytesPerElement,
  DeviceError,
  type DType,
  DTypeError,
  numel,
  Tensor,
  type TypedArray,
} from '@attnkit/tensor';
import {
  type CompiledProgram,
  type ComputeProgram,
  type ComputeStep,
  fromGpuError,
  GpuDeviceLostError,
  type GpuProfiler,
  GpuValidationError,
  type WebGpuContext,
  WebGpuError,
  WebGpuStorage,
} from '@attnkit/webgpu';
import { BindingCache, createBindGroup } from './bindings.js';
import { kernelOptions } from './context.js';

/**
 * nn's kernels are synchronous (tensors in, tensors out: autograd records as it goes), WebGPU's
 * compilation, error scopes and readback are not. As tfjs-backend-webgpu does, a webgpu kernel
 * returns its outputs at once (buffers taken from the context's pool synchronously) and appends
 * its GPU work to this per-context queue, which runs in call order: compile (cached) -> encode
 * into the open command encoder -> submit (when the queue runs dry, after FIRST_BATCH passes and
 * then doubling to every BATCH passes, and before work that submits on its own, such as
 * attention). A pass with nothing queued before it whose pipeline is compiled skips the queue
 * and is encoded as it is called. Reading a queued tensor (`toCpu`)
 * waits for the queue first. An error inside a task (a shader rejected, a family's typed error)
 * fails its outputs and everything computed from them; an error a submit reports (validation,
 * out-of-memory, a lost device; its error scopes are read without stalling the queue) fails
 * that batch and all work after it. Either rejects the next `await` on the queue (syncWebGpu,
 * any toCpu) once, and every read of a failed tensor. A buffer released while work is queued (dispose, a
 * scope ending) returns to the pool only after that work has been submitted
 * (BufferPool.releaseFence), after which WebGPU's queue order makes its reuse safe.
 */
export class GpuQueue {
  private tail: Promise<void> = Promise.resolve();
  private pending = 0;
  private encoder: GPUCommandEncoder | null = null;
  /** The open encoder's open compute pass (sharePasses): ended before a copy and at submit. */
  private computePass: GPUComputePassEncoder | null = null;
  /** Pooled uniforms of the open encoder's passes (reuseBindings: false). */
  private uniforms: GPUBuffer[] = [];
  private passes = 0;
  private batchOutputs: QueuedStorage[] = [];
  private surfaced: Error | undefined;
  /** Submitted batches whose error scopes have not reported, in order. */
  private unchecked: { outputs: QueuedStorage[]; done: boolean }[] = [];
  private checks: Promise<void>[] = [];
  /** An error a submit reported: every task after it fails with it until an await surfaces it. */
  private broken: Error | undefined;
  /**
   * Compute passes encoded (`immediate` of them at once, as pass() or external() was called),
   * command buffers submitted, external() calls encoded synchronously (`recorded`: attention
   * on compiled pipelines) and buffer copies encoded (`copies`: copyIntoWebGpu), for tests and
   * profiles.
   */
  readonly stats = { passes: 0, immediate: 0, submits: 0, recorded: 0, copies: 0 };
  private readonly warned = new Set<string | undefined>();
  /** When set, every pass the queue encodes is timed (timestamp queries). */
  profiler: GpuProfiler | undefined = undefined;

  /**
   * Passes after which a queued task submits the open encoder: FIRST_BATCH after the queue was
   * idle, then doubling up to BATCH, so that the GPU starts on a step's first passes while the
   * host still encodes the rest (a step of ~75 passes waited for 64 of them before).
   */
  private nextFlush = firstBatch();
  private flushScheduled = false;

  /** Resolved by the next flush: fences waiting for the open encoder's submit. */
  private submitWaiters: (() => void)[] = [];

  /** Uniforms and bind groups reused across passes (the host's cost of a pass, mostly). */
  readonly bindings: BindingCache;

  constructor(readonly ctx: WebGpuContext) {
    ctx.pool.releaseFence = () => this.fence();
    this.bindings = new BindingCache(ctx.device, (buffer) => {
      // An evicted uniform may be bound by passes encoded and not yet submitted.
      const fence = this.fence();
      const destroy = () => buffer.destroy();
      if (fence) fence.then(destroy, destroy);
      else destroy();
    });
    ctx.pool.onDestroy = (buffer) => this.bindings.forget(buffer);
  }

  /**
   * Settles once the work queued now is submitted; undefined when none is queued or encoded.
   * The tail alone is not enough: when it settles, the tasks queued so far have *encoded* their
   * passes, but while later tasks are pending the encoder stays open, and a buffer destroyed
   * then (the pool over its cache limit) fails the submit ("used in submit while destroyed").
   */
  private fence(): Promise<void> | undefined {
    if (this.pending === 0 && !this.encoder) return undefined;
    // Runs before any task queued after this call (callbacks on one promise run in order), so
    // the encoder seen here holds exactly the work queued so far, or is already submitted.
    return this.tail.then(() =>
      this.encoder ? new Promise<void>((resolve) => this.submitWaiters.push(resolve)) : undefined,
    );
  }

  /**
   * Queues one compute pass: `storages` bind at 1.. in order (a uniform with `params` at 0).
   * When nothing is queued before it and its pipeline is compiled, the pass is encoded at once
   * (no task, no microtask): the forward pass of a step then reaches the GPU while autograd is
   * still recording, instead of after the whole tape is built.
   */
  pass(
    program: ComputeProgram,
    params: Uint32Array,
    storages: readonly WebGpuStorage[],
    grid: readonly [number, number, number],
    outputs: readonly WebGpuStorage[],
    /** What runs instead when `program` does not compile (same bindings and uniform). */
    fallback?: { program: ComputeProgram; workgroups: readonly [number, number, number] },
  ): void {
    const inputs = storages.filter((s) => !outputs.includes(s));
    const eager = this.pending === 0 && !this.broken && kernelOptions().encodeEagerly;
    const ready = eager ? this.ctx.pipelines.ready(program) : undefined;
    if (ready && !inputs.some((s) => s instanceof QueuedStorage && s.failure)) {
      try {
        this.encodePass(ready, program.label, params, storages, grid, outputs);
        this.stats.immediate++;
      } catch (e) {
        const err = asTyped(e, program.label ?? 'nn webgpu');
        markFailed(outputs, err);
        this.surfaced ??= err;
      }
      this.afterEager();
      return;
    }
    let workgroups = grid;
    this.enqueue(program.label ?? 'nn webgpu', inputs, outputs, async () => {
      let compiled: CompiledProgram;
      try {
        compiled = await this.ctx.pipelines.get(program);
      } catch (e) {
        if (!fallback || !(e instanceof WebGpuError) || e instanceof GpuDeviceLostError) throw e;
        if (!this.warned.has(program.label)) {
          this.warned.add(program.label);
          console.warn(`${e.message.slice(0, 300)}; running ${fallback.program.label} instead`);
        }
        compiled = await this.ctx.pipelines.get(fallback.program);
        workgroups = fallback.workgroups;
      }
      this.encodePass(compiled, program.label, params, storages, workgroups, outputs);
      if (this.passes >= this.nextFlush) await this.flush();
    });
  }

  private encodePass(
    compiled: CompiledProgram,
    label: string | undefined,
    params: Uint32Array,
    storages: readonly WebGpuStorage[],
    workgroups: readonly [number, number, number],
    outputs: readonly WebGpuStorage[],
  ): void {
    const enc = this.open();
    this.ctx.checkAlive();
    const buffers = storages.map((s) => s.buffer);
    let bindGroup: GPUBindGroup;
    if (kernelOptions().reuseBindings) {
      bindGroup = this.bindings.bindGroup(compiled.layout, [
        this.bindings.uniform(params),
        ...buffers,
      ]);
    } else {
      const uniform = this.ctx.createUniform(params);
      this.uniforms.push(uniform);
      bindGroup = createBindGroup(this.ctx.device, compiled.layout, [uniform, ...buffers]);
    }
    this.dispatchPass(enc, label, compiled.pipeline, bindGroup, workgroups);
    for (const o of outputs) if (o instanceof QueuedStorage) this.batchOutputs.push(o);
  }

  /**
   * One dispatch, counted: into the open compute pass (sharePasses), else a pass of its own
   * (always when a profiler times the passes: its timestamps are written per pass).
   */
  private dispatchPass(
    enc: GPUCommandEncoder,
    label: string | undefined,
    pipeline: GPUComputePipeline,
    bindGroup: GPUBindGroup,
    workgroups: readonly [number, number, number],
  ): void {
    const own = this.profiler !== undefined || !kernelOptions().sharePasses;
    // A profiler set while a shared pass is open: that pass ends before the timed ones.
    if (own) this.endComputePass();
    let p = own ? null : this.computePass;
    if (!p) {
      p = own
        ? enc.beginComputePass({
            label,
            timestampWrites: this.profiler?.passTimestamps(label ?? 'pass'),
          })
        : enc.beginComputePass();
      if (!own) this.computePass = p;
    }
    p.setPipeline(pipeline);
    p.setBindGroup(0, bindGroup);
    p.dispatchWorkgroups(workgroups[0], workgroups[1], workgroups[2]);
    if (own) p.end();
    this.stats.passes++;
    this.passes++;
  }

  /** Ends the shared compute pass, before the encoder records anything else or is finished. */
  private endComputePass(): void {
    const p = this.computePass;
    if (p) {
      this.computePass = null;
      p.end();
    }
  }

  /**
   * After work encoded at once: submits the open encoder at BATCH passes, or (earlySubmit, off
   * by default) once it holds FIRST_BATCH passes after an idle queue, then twice as many each
   * time up to BATCH, so that the GPU starts on a step while autograd still records the rest (a
   * Vulkan submit costs the host about half a millisecond on the H200). The rest goes when the
   * recording yields.
   */
  private afterEager(): void {
    if (this.passes >= (kernelOptions().earlySubmit ? this.nextFlush : BATCH)) void this.flush();
    else this.flushSoon();
  }

  /** Submits what was encoded at once when the synchronous code that encoded it yields. */
  private flushSoon(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      // Queued tasks submit when the last of them finishes (enqueue).
      if (this.pending === 0) void this.flushIdle();
    });
  }

  /**
   * Queues a buffer copy of `bytes` (a multiple of 4) from `from` at byte `fromByte` into `to`
   * at `toByte`, in order with the passes around it: encoded at once when nothing is queued
   * before it (as pass() does), else as a task. No pass: the command encoder's copy.
   */
  copy(
    from: WebGpuStorage,
    fromByte: number,
    to: WebGpuStorage,
    toByte: number,
    bytes: number,
  ): void {
    const encode = () => {
      // A source whose work failed: dst keeps its old contents, so the failure is reported at
      // the next await even where dst is no queued output that could carry it (a cache's pool).
      const failed = from instanceof QueuedStorage ? from.failure : undefined;
      if (failed) {
        if (to instanceof QueuedStorage) to.failure ??= failed;
        this.surfaced ??= failed;
        return;
      }
      this.ctx.checkAlive();
      const enc = this.open();
      this.endComputePass();
      enc.copyBufferToBuffer(from.buffer, fromByte, to.buffer, toByte, bytes);
      this.stats.copies++;
      if (to instanceof QueuedStorage) this.batchOutputs.push(to);
    };
    if (this.pending === 0 && !this.broken && kernelOptions().encodeEagerly) {
      try {
        encode();
      } catch (e) {
        const err = asTyped(e, 'copy');
        markFailed([to], err);
        this.surfaced ??= err;
      }
      this.afterEager();
      return;
    }
    // No inputs for enqueue to check: encode reports a failed source itself.
    this.enqueue('copy', [], [to], encode);
  }

  /** Inside a queued task only: encodes a copy of `from` into `to` (whole words). */
  copyNow(from: Tensor, to: QueuedStorage): void {
    const bytes = Math.ceil(to.byteLength / 4) * 4;
    if (bytes > 0) {
      const enc = this.open();
      this.endComputePass();
      enc.copyBufferToBuffer((from.storage as WebGpuStorage).buffer, 0, to.buffer, 0, bytes);
    }
    this.batchOutputs.push(to);
  }

  /**
   * Encodes steps a family built (compiled pipelines and their buffers: encodeFlashAttention's
   * sink) into the open encoder, in order with the passes around them.
   */
  private encodeSteps(
    steps: readonly ComputeStep[],
    scratch: readonly GPUBuffer[],
    outputs: readonly WebGpuStorage[],
  ): void {
    const enc = this.open();
    // The launch's uniforms and tables go back to the pool once this encoder is submitted.
    this.uniforms.push(...scratch);
    this.ctx.checkAlive();
    for (const step of steps) {
      const [x, y = 1, z = 1] = step.workgroups;
      if (x * y * z === 0) continue;
      const bindGroup = kernelOptions().reuseBindings
        ? this.bindings.bindGroup(step.program.layout, step.buffers)
        : createBindGroup(this.ctx.device, step.program.layout, step.buffers);
      this.dispatchPass(enc, step.label, step.program.pipeline, bindGroup, [x, y, z]);
    }
    for (const o of outputs) if (o instanceof QueuedStorage) this.batchOutputs.push(o);
    this.stats.recorded++;
  }

  /**
   * Queues work of a family's kernels. `record(sink)` tries the synchronous path: it hands the
   * family's compute steps to `sink` (encoded in order with the passes around them) and returns
   * true, or returns false having done nothing when only the async API can run it. With nothing
   * queued before it, it is tried at once (as pass() encodes at once), so that the work
   * recorded after it is not held back; else, and when it declines, in order as a task. `run`
   * is the async path: work that submits on its own (the open encoder is submitted first).
   */
  external(
    label: string,
    inputs: readonly WebGpuStorage[],
    outputs: readonly WebGpuStorage[],
    run: () => Promise<void>,
    record?: (
      sink: (steps: readonly ComputeStep[], scratch: readonly GPUBuffer[]) => void,
    ) => boolean,
  ): void {
    const sink = (steps: readonly ComputeStep[], scratch: readonly GPUBuffer[]) =>
      this.encodeSteps(steps, scratch, outputs);
    const recording = record !== undefined && kernelOptions().recordAttention;
    const failed = () => inputs.some((s) => s instanceof QueuedStorage && s.failure);
    if (
      recording &&
      this.pending === 0 &&
      !this.broken &&
      kernelOptions().encodeEagerly &&
      !failed()
    ) {
      let done: boolean;
      const passes = this.stats.passes;
      try {
        done = record(sink);
      } catch (e) {
        const err = asTyped(e, label);
        markFailed(outputs, err);
        this.surfaced ??= err;
        done = true;
      }
      if (done) {
        this.stats.immediate += this.stats.passes - passes;
        this.afterEager();
        return;
      }
    }
    this.enqueue(label, inputs, outputs, async () => {
      if (recording && record(sink)) {
        if (this.passes >= this.nextFlush) await this.flush();
        return;
      }
      await this.flush();
      // The family's dispatches hand their error scopes to the queue instead of awaiting them
      // (an event-loop turn each): an error they report fails this work and all after it, as a
      // submit's does, and rejects the next await.
      const batch = { outputs: [...outputs].filter((o) => o instanceof QueuedStorage), done: true };
      this.unchecked.push(batch);
      this.ctx.dispatchErrorSink = (check) => {
        batch.done = false;
        this.track(batch, check);
      };
      try {
        await run();
      } finally {
        this.ctx.dispatchErrorSink = undefined;
      }
    });
  }

  /**
   * Reads `s` back with a copy submitted now, behind the work queued so far and ahead of any
   * queued later (a QueuedStorage's read() waits for the whole queue, later work included).
   * Needs every pass encoded already (no async task queued); else it is read() itself.
   * Rejects with the error of the work that wrote `s`, as read() does.
   */
  readNow(s: WebGpuStorage): Promise<TypedArray> {
    s.checkLive('tensor', 'read');
    if (this.pending > 0 || this.broken) return s.read();
    // flush() submits before its first await: the encoder's passes precede the copy.
    if (this.encoder) void this.flushIdle();
    // Settled checks leave the list (track), so this is the submits still unreported.
    const checks = [...this.checks];
    const data = WebGpuStorage.prototype.read.call(s);
    return Promise.all([data, Promise.all(checks)]).then(([d]) => {
      if (s instanceof QueuedStorage && s.failure) {
        // Reported here: the next await does not report it again.
        if (this.surfaced === s.failure) this.surfaced = undefined;
        throw s.failure;
      }
      return d;
    });
  }

  /**
   * Resolves once every queued task has run and its work is submitted; rejects (once) with the
   * first error raised in the queue since the last await.
   */
  async idle(): Promise<void> {
    // The task that brings `pending` to 0 submits what is encoded (never flush from outside
    // the chain: a task may be encoding).
    for (;;) {
      while (this.pending > 0) await this.tail;
      // Passes encoded at once (pass()) wait for a microtask's flush: submit them now.
      if (this.encoder) await this.flushIdle();
      if (this.checks.length === 0) break;
      const checks = this.checks;
      this.checks = [];
      await Promise.all(checks);
    }
    const e = this.surfaced;
    this.surfaced = undefined;
    this.broken = undefined;
    this.unchecked = [];
    if (e) throw e;
    this.ctx.checkAlive();
  }

  private enqueue(
    label: string,
    inputs: readonly WebGpuStorage[],
    outputs: readonly WebGpuStorage[],
    work: () => Promise<void> | void,
  ): void {
    this.pending++;
    this.tail = this.tail.then(async () => {
      try {
        const failed = inputs.find((s) => s instanceof QueuedStorage && s.failure);
        if (this.broken) markFailed(outputs, this.broken);
        else if (failed) markFailed(outputs, (failed as QueuedStorage).failure!);
        else await work();
      } catch (e) {
        const err = asTyped(e, label);
        markFailed(outputs, err);
        this.surfaced ??= err;
      } finally {
        this.pending--;
        if (this.pending === 0) await this.flushIdle();
      }
    });
  }

  private open(): GPUCommandEncoder {
    if (!this.encoder) {
      this.ctx.checkAlive();
      for (const f of SCOPES) this.ctx.device.pushErrorScope(f);
      this.encoder = this.ctx.device.createCommandEncoder({ label: 'nn webgpu' });
    }
    return this.encoder;
  }

  /** Submits what is encoded because the queue went idle: the next burst starts small again. */
  private flushIdle(): Promise<void> {
    const submitted = this.flush();
    this.nextFlush = firstBatch();
    return submitted;
  }

  /**
   * Submits the open encoder. Its error scopes are not awaited here (that would stall the queue
   * for a round trip per submit): when they report an error, it fails the outputs of this batch
   * and of every batch and task after it until an await surfaces it.
   */
  private async flush(): Promise<void> {
    const encoder = this.encoder;
    if (!encoder) return;
    const batch = { outputs: this.batchOutputs, done: false };
    const uniforms = this.uniforms;
    this.uniforms = [];
    this.encoder = null;
    this.passes = 0;
    this.nextFlush = Math.min(BATCH, this.nextFlush * 2);
    this.batchOutputs = [];
    const device = this.ctx.device;
    let thrown: unknown;
    try {
      // Inside the try: a throw here must not leave the queue holding the old encoder.
      this.endComputePass();
      this.profiler?.resolve(encoder);
      device.queue.submit([encoder.finish()]);
      this.stats.submits++;
    } catch (e) {
      thrown = e;
    }
    const popped = Promise.all(SCOPES.map(() => device.popErrorScope()));
    // Submitted: queue order makes the pooled uniforms, and what the fences hold, reusable now.
    for (const u of uniforms) this.ctx.pool.releaseNow(u);
    const waiters = this.submitWaiters;
    this.submitWaiters = [];
    for (const w of waiters) w();
    this.unchecked.push(batch);
    const order = [...SCOPES].reverse();
    const check = popped.then((errors) => {
      const i = errors.findIndex((e) => e !== null);
      if (i >= 0) return fromGpuError(order[i]!, errors[i]!, 'nn webgpu submit');
      return thrown === undefined ? undefined : asTyped(thrown, 'nn webgpu submit');
    });
    this.track(batch, check);
  }

  /**
   * Surfaces what `check` (a submit's error scopes) reports: an error fails `batch`'s outputs,
   * those of every batch submitted after it and of the work encoded since, and rejects the next
   * await.
   */
  private track(
    batch: { outputs: QueuedStorage[]; done: boolean },
    check: Promise<Error | undefined>,
  ) {
    const settled: Promise<void> = check
      .catch((e: unknown) => asTyped(e, 'nn webgpu submit'))
      .then((found) => {
        const err = this.ctx.lost ? asTyped(undefined, 'nn webgpu submit', this.ctx) : found;
        batch.done = true;
        if (err) {
          const at = this.unchecked.indexOf(batch);
          for (const b of this.unchecked.slice(Math.max(at, 0))) markFailed(b.outputs, err);
          markFailed(this.batchOutputs, err);
          this.broken ??= err;
          this.surfaced ??= err;
        }
        while (this.unchecked[0]?.done && !this.broken) this.unchecked.shift();
      });
    this.checks.push(settled);
    // Off the list once settled: a loop that never awaits idle() (pipelined decoding reads
    // with readNow) would otherwise keep every submit's check.
    void settled.then(() => {
      const i = this.checks.indexOf(settled);
      if (i >= 0) this.checks.splice(i, 1);
    });
  }
}

const SCOPES: GPUErrorFilter[] = ['internal', 'out-of-memory', 'validation'];
/** Passes per command buffer: submitting while the queue still encodes keeps the GPU busy. */
const BATCH = 64;
/**
 * Passes in the first command buffer after the queue was idle (then doubling to BATCH), so the
 * GPU starts on the step's first short passes at once. On the H200's block step 2 ran 0.07-0.25
 * ms faster than 8 in same-process pairs, within the run-to-run noise, and never slower
 * (BENCHMARKS.md, session 15).
 */
const FIRST_BATCH = 2;
let firstBatchSize = FIRST_BATCH;
const firstBatch = () => (kernelOptions().encodeEagerly ? firstBatchSize : BATCH);

/**
 * Benchmarks only (not exported by the package): the first command buffer's passes after an
 * idle queue, for A/B runs of the submit schedule (undefined restores FIRST_BATCH).
 */
export function setFirstSubmitBatch(passes: number | undefined): void {
  if (passes !== undefined && !(Number.isInteger(passes) && passes >= 1 && passes <= BATCH))
    throw new RangeError(`setFirstSubmitBatch: expected an integer in 1..${BATCH}, got ${passes}`);
  firstBatchSize = passes ?? FIRST_BATCH;
}

function markFailed(outputs: readonly WebGpuStorage[], err: Error): void {
  for (const o of outputs) if (o instanceof QueuedStorage) o.failure ??= err;
}

function asTyped(e: unknown, label: string, ctx?: WebGpuContext): Error {
  if (ctx) {
    try {
      ctx.checkAlive();
    } catch (lost) {
      return lost as Error;
    }
  }
  if (e instanceof AttnkitError) return e;
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return new GpuValidationError(`${label}: ${text}`, label);
}

/**
 * A webgpu tensor storage whose contents a queued kernel writes: reading it waits for the
 * queue (and rejects with the error of the work that should have written it, if that failed).
 * `extras` are tensors that live and die with it (crossEntropy's row count).
 */
export class QueuedStorage extends WebGpuStorage {
  failure: Error | undefined = undefined;
  extras: Tensor[] = [];
  override async read() {
    this.checkLive('tensor', 'read');
    await queueOf(this.ctx).idle();
    if (this.failure) throw this.failure;
    return super.read();
  }
  override dispose(): void {
    if (this.isDisposed) return;
    for (const t of this.extras) t.dispose();
    super.dispose();
  }
}

const queues = new WeakMap<WebGpuContext, GpuQueue>();

export function queueOf(ctx: WebGpuContext): GpuQueue {
  let q = queues.get(ctx);
  if (!q) queues.set(ctx, (q = new GpuQueue(ctx)));
  return q;
}

/**
 * A tensor as a family's async kernels see it when the queue reaches an external task
 * (GpuQueue.external): a scope may have disposed it since (its buffer stays fenced until this
 * work is submitted), and the families check liveness, so a disposed one is lent as an
 * untracked storage on the same buffer. Outputs too: a gradient nobody needs is disposed before
 * its task runs. Call it inside the task, not when queueing it.
 */
export function lent(t: Tensor): Tensor {
  const s = t.storage as WebGpuStorage;
  if (!s.isDisposed) return t;
  const view = new WebGpuStorage(s.ctx, s.dtype, s.length, s.buffer);
  // Never disposed nor collected into the pool: the owner's release covers the buffer.
  s.ctx.untrack(view);
  return new Tensor(view, t.shape, t.strides, t.offset);
}

/** The storages of the tensors given (undefined ones left out), for GpuQueue.external. */
export const storagesOf = (ts: readonly (Tensor | undefined)[]): WebGpuStorage[] =>
  ts.filter((t) => t !== undefined).map((t) => t.storage as WebGpuStorage);

/** A new queued tensor on ctx (NaN-filled when ctx.poisonOutputs is set). */
export function output(ctx: WebGpuContext, shape: readonly number[], dtype: DType): Tensor {
  const n = numel(shape);
  const buffer = ctx.createOutput(Math.max(n * bytesPerElement(dtype), 4), `nn ${dtype}[${shape}]`);
  return new Tensor(new QueuedStorage(ctx, dtype, n, buffer), shape);
}

/** The dtypes the nn webgpu kernels take for floats: f32, or f16 storage with f32 math. */
export type GpuFloat = 'f32' | 'f16';

/**
 * The storage of a webgpu tensor a kernel binds whole, on `ctx`; `floats` checks its dtype is
 * f32 or f16, `ints` i32. Strided views are made contiguous by the caller (kernels only see
 * what ops made, which is contiguous).
 */
export function storageOf(
  t: Tensor,
  op: string,
  argument: string,
  ctx: WebGpuContext,
  kind: 'float' | 'int' = 'float',
): WebGpuStorage {
  const s = t.storage;
  if (!(s instanceof WebGpuStorage))
    throw new DeviceError(
      `${op}: backend 'webgpu' takes webgpu tensors, got ${argument} on ${t.device}`,
      argument,
    );
  if (s.ctx !== ctx)
    throw new DeviceError(
      `${op}: ${argument} lives on another WebGpuContext than the one registered with registerWebGpuKernels`,
      argument,
    );
  if (!t.isContiguous() || t.offset !== 0)
    throw new DeviceError(
      `${op}: ${argument} expected a contiguous webgpu tensor at offset 0, got a strided view`,
      argument,
    );
  s.checkLive(argument, op);
  if (kind === 'float' && s.dtype !== 'f32' && s.dtype !== 'f16')
    throw new DTypeError(
      `${op}: backend 'webgpu' takes f32 or f16 tensors, got ${argument} in ${s.dtype}`,
      argument,
    );
  if (kind === 'int' && s.dtype !== 'i32')
    throw new DTypeError(`${op}: ${argument} expected i32 indices, got ${s.dtype}`, argument);
  return s;
}
