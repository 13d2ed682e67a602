import type * as NodeFs from 'node:fs';
import type * as NodeUrl from 'node:url';
import type * as NodeWorkerThreads from 'node:worker_threads';
import type { Worker } from 'node:worker_threads';
import { resolveAttentionProblem } from '@attnkit/attention';
import {
  AllocationError,
  type AttnkitError,
  BackendUnavailableError,
  DeviceError,
  DTypeError,
  describe,
  ShapeError,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { DeviceWorkerError } from './errors.js';
import { type AllReducePlan, planTiledAllReduce } from './plan.js';
import {
  ABORT,
  type AllReduceFault,
  type AllReduceJob,
  controlLength,
  EPOCH,
  type FromWorker,
  T_COMPUTE_END,
  T_COMPUTE_MS,
  T_END,
  T_REDUCE_MS,
  T_REDUCE_OVERLAPPED_MS,
  T_SETUP_MS,
  T_START,
  TIMING_FIELDS,
  type ToWorker,
  type WorkerErrorInfo,
} from './protocol.js';

/**
 * FastAttention's tiling-AllReduce on one host: P device workers (worker_threads, one per
 * device) and SharedArrayBuffers between them and the caller. Node only; the Node modules are
 * fetched when a group is created (process.getBuiltinModule), so the package's entry point stays
 * browser-safe.
 */

/**
 * What each device computes with: 'native', the C++ engine (cpu); 'webgpu', its own WebGPU
 * device (Dawn) on the first adapter — P workers on one GPU simulate P GPUs.
 */
export type AllReduceBackend = 'native' | 'webgpu';

export interface AllReduceGroupOptions {
  /** Devices (one worker each), >= 1. */
  devices: number;
  /** What each device computes with (default 'native'). */
  backend?: AllReduceBackend;
  /** Milliseconds a worker may take to start and load its backend (default 30000). */
  startTimeoutMs?: number;
  /** The worker script (default: the package's dist/allreduce-worker.js). @internal */
  workerUrl?: URL;
}

interface RunHandlers {
  message(device: number, msg: FromWorker): void;
  fail(err: AttnkitError): void;
}

const rethrowable = { ValueError, ShapeError, DTypeError, DeviceError, BackendUnavailableError };

/** A worker's error as the caller's typed error: the same class for argument errors, else DeviceWorkerError. */
function fromWorker(info: WorkerErrorInfo, device: number): AttnkitError {
  const Type = rethrowable[info.name as keyof typeof rethrowable];
  if (Type) return new Type(info.message, info.argument);
  if (info.name === 'StalledRun')
    return new DeviceWorkerError(`device ${device}: ${info.message}`, device, 'timeout');
  return new DeviceWorkerError(
    `device ${device} failed: ${info.name}: ${info.message}`,
    device,
    'error',
  );
}

// Not literals in `new URL(...)`: bundlers would copy the Node-only worker into browser builds.
const WORKER_BESIDE_INDEX = './allreduce-worker.js';
// Tests bundle it here (test/build-worker.ts), not into dist/: the package's own build cleans
// dist/ and can run beside its tests.
const WORKER_FROM_SOURCES = '../../test/dist/allreduce-worker.js';

function defaultWorkerUrl(): URL {
  // Bundled, this module is dist/index.js beside dist/allreduce-worker.js; from the sources
  // (tests), the worker is the one the tests bundled.
  const here = import.meta.url;
  return new URL(/\.ts$/.test(here) ? WORKER_FROM_SOURCES : WORKER_BESIDE_INDEX, here);
}

type GetBuiltin = (id: string) => unknown;

/** A Node built-in module fetched at run time (no import a browser bundler would follow). */
function nodeBuiltin<T>(id: string): T {
  const get = (globalThis as { process?: { getBuiltinModule?: GetBuiltin } }).process
    ?.getBuiltinModule;
  if (typeof get !== 'function') {
    throw new BackendUnavailableError(
      'devices: the tiling-AllReduce runs its devices in Node worker threads (Node >= 20.16 only)',
      'devices',
    );
  }
  return get(id) as T;
}

/**
 * P device workers kept for several runs (tiledAllReduceAttention with `group`). A run that
 * fails (a worker exits, throws or stalls) closes the group: every worker is ended. close()
 * when done (after the runs in flight); idle workers do not keep the process alive.
 */
export class AllReduceGroup {
  readonly devices: number;
  readonly backend: AllReduceBackend;
  private readonly workers: Worker[] = [];
  private readonly live = new Set<Worker>();
  private handlers: RunHandlers | undefined;
  private closing = false;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(devices: number, backend: AllReduceBackend) {
    this.devices = devices;
    this.backend = backend;
  }

  /** Spawns the workers and loads each one's backend. BackendUnavailableError if it does not load. */
  static async create(options: AllReduceGroupOptions): Promise<AllReduceGroup> {
    if (options === null || typeof options !== 'object') {
      throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
    }
    const { devices, backend = 'native', startTimeoutMs = 30000 } = options;
    if (typeof devices !== 'number' || !Number.isSafeInteger(devices) || devices < 1) {
      throw new ValueError(
        `devices: expected an integer >= 1, got ${describe(devices)}`,
        'devices',
      );
    }
    if (backend !== 'native' && backend !== 'webgpu') {
      throw new ValueError(
        `backend: expected "native" or "webgpu", got ${describe(backend)}`,
        'backend',
      );
    }
    if (!(startTimeoutMs > 0)) {
      throw new ValueError(
        `startTimeoutMs: expected a positive number, got ${describe(startTimeoutMs)}`,
        'startTimeoutMs',
      );
    }
    const { existsSync } = nodeBuiltin<typeof NodeFs>('node:fs');
    const { fileURLToPath } = nodeBuiltin<typeof NodeUrl>('node:url');
    const { Worker } = nodeBuiltin<typeof NodeWorkerThreads>('node:worker_threads');
    const url = options.workerUrl ?? defaultWorkerUrl();
    if (!existsSync(fileURLToPath(url))) {
      throw new BackendUnavailableError(
        `devices: expected the device worker script at ${fileURLToPath(url)}, but it does not exist (build @attnkit/fast-attention: pnpm build)`,
        'devices',
      );
    }
    if (backend === 'webgpu') {
      // Mesa's EGL reads EGL_PLATFORM from the process environment, which a worker thread
      // cannot set (its process.env is a copy): as @attnkit/webgpu does on the main thread,
      // surfaceless (no display server needed) unless the caller chose.
      const proc = (globalThis as { process?: { platform?: string; env?: Record<string, string> } })
        .process;
      if (proc?.platform === 'linux' && proc.env) proc.env.EGL_PLATFORM ??= 'surfaceless';
    }
    const group = new AllReduceGroup(devices, backend);
    try {
      await group.start(Worker, url, startTimeoutMs);
    } catch (e) {
      await group.shutdown();
      throw e;
    }
    return group;
  }

  /** Whether the group was closed (by close() or by a failed run). */
  get closed(): boolean {
    return this.closing;
  }

  /** Worker threads not yet exited (0 once closed). */
  get liveWorkers(): number {
    return this.live.size;
  }

  private async start(WorkerClass: typeof Worker, url: URL, startTimeoutMs: number): Promise<void> {
    const ready = new Array<boolean>(this.devices).fill(false);
    const started = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new DeviceWorkerError(
              `devices: ${ready.filter((r) => !r).length} of ${this.devices} device workers did not start within ${startTimeoutMs} ms (startTimeoutMs)`,
              ready.indexOf(false),
              'timeout',
            ),
          ),
        startTimeoutMs,
      );
      this.handlers = {
        message: (device, msg) => {
          if (msg.kind === 'failed') {
            clearTimeout(timer);
            reject(fromWorker(msg.error, device));
          } else if (msg.kind === 'ready') {
            ready[device] = true;
            if (ready.every(Boolean)) {
              clearTimeout(timer);
              resolve();
            }
          }
        },
        fail: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
    });
    for (let p = 0; p < this.devices; p++) {
      const w = new WorkerClass(url);
      this.workers.push(w);
      this.live.add(w);
      w.on('message', (msg: FromWorker) => this.handlers?.message(p, msg));
      w.on('error', (e: Error) =>
        this.failRun(
          new DeviceWorkerError(
            `device ${p}: its worker threw ${e?.name ?? 'Error'}: ${e?.message ?? String(e)}`,
            p,
            'error',
          ),
        ),
      );
      w.on('exit', (code: number) => {
        this.live.delete(w);
        if (!this.closing) {
          this.failRun(
            new DeviceWorkerError(
              `device ${p}: its worker thread exited (code ${code}); the group is closed and its other workers terminated`,
              p,
              'exit',
            ),
          );
        }
      });
      w.postMessage({ kind: 'init', device: p, backend: this.backend } satisfies ToWorker);
    }
    try {
      await started;
    } finally {
      this.handlers = undefined;
    }
    for (const w of this.workers) w.unref();
  }

  /** A worker failed: the run in flight (if any) rejects; the group closes either way. */
  private failRun(err: AttnkitError): void {
    if (this.handlers) this.handlers.fail(err);
    else if (!this.closing) void this.shutdown();
  }

  /**
   * Ends every worker and waits for them to exit: each is asked to release its device and exit
   * (terminating a thread that holds a Dawn device crashes the process), and terminated if it
   * has not within 5 s (a worker stuck outside its engine).
   */
  async close(): Promise<void> {
    // After the runs in flight or queued (a worker is only ended between engine calls).
    await this.queue;
    await this.shutdown();
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    this.handlers = undefined;
    // One at a time: two Dawn instances torn down at once crashed the process.
    for (const w of this.workers) {
      if (!this.live.has(w)) continue;
      const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
      try {
        w.postMessage({ kind: 'close' } satisfies ToWorker);
      } catch {
        // Already gone.
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), 5000);
      });
      if (await Promise.race([exited.then(() => false), late])) await w.terminate();
      clearTimeout(timer);
      await exited;
    }
  }

  /** One run at a time: runs queue behind each other. @internal */
  run(job: AllReduceJob): Promise<void> {
    const next = this.queue.then(() => this.runNow(job));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async runNow(job: AllReduceJob): Promise<void> {
    if (this.closing) throw closedError();
    const ctl = new Int32Array(job.control);
    // Devices whose worker has answered done / failed / stopped, or exited.
    const settled = new Array<boolean>(this.devices).fill(false);
    let onSettled: (() => void) | undefined;
    const settle = (device: number) => {
      settled[device] = true;
      onSettled?.();
    };
    const exits = this.workers.map((w, p) => {
      const f = () => settle(p);
      w.once('exit', f);
      return () => w.off('exit', f);
    });
    let watchdog: ReturnType<typeof setInterval> | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        let done = 0;
        this.handlers = {
          message: (device, msg) => {
            if (msg.kind === 'done' || msg.kind === 'failed' || msg.kind === 'stopped')
              settle(device);
            if (msg.kind === 'failed') this.failRun(fromWorker(msg.error, device));
            else if (msg.kind === 'done' && ++done === this.devices) resolve();
          },
          fail: reject,
        };
        // The caller's own check: the epoch must move within timeoutMs (a worker that hangs
        // in a way its peers cannot see still ends the run).
        let epoch = Atomics.load(ctl, EPOCH);
        let moved = performance.now();
        watchdog = setInterval(
          () => {
            const e = Atomics.load(ctl, EPOCH);
            if (e !== epoch) {
              epoch = e;
              moved = performance.now();
            } else if (performance.now() - moved > job.timeoutMs * 1.5) {
              this.failRun(
                new DeviceWorkerError(
                  `devices: no device made progress for ${Math.round(job.timeoutMs * 1.5)} ms (timeoutMs ${job.timeoutMs})`,
                  -1,
                  'timeout',
                ),
              );
            }
          },
          Math.max(10, Math.min(1000, job.timeoutMs / 4)),
        );
        for (const w of this.workers) {
          w.ref();
          w.postMessage({ kind: 'run', job } satisfies ToWorker);
        }
      });
    } catch (e) {
      // Stop every device: each sees ABORT at its next wait, after its engine call in flight
      // settles (terminating a thread inside a native call would take the process down), and
      // says so; one that does not within the grace period (hung outside the engine) is
      // terminated anyway. Then every thread ends.
      this.closing = true;
      Atomics.store(ctl, ABORT, 1);
      Atomics.add(ctl, EPOCH, 1);
      Atomics.notify(ctl, EPOCH);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1000, job.timeoutMs));
        onSettled = () => {
          if (settled.every(Boolean)) {
            clearTimeout(timer);
            resolve();
          }
        };
        onSettled();
      });
      await this.shutdown();
      throw e;
    } finally {
      clearInterval(watchdog);
      this.handlers = undefined;
      for (const off of exits) off();
      if (!this.closing) for (const w of this.workers) w.unref();
    }
  }
}

function closedError(): ValueError {
  return new ValueError(
    'group: expected an open AllReduceGroup, got a closed one (a failed run closes it; create another)',
    'group',
  );
}

export interface TiledAllReduceOptions {
  /** Devices P (1..Hkv): heads split in whole GQA groups. Default: the group's. */
  devices?: number;
  /** Workers to reuse (AllReduceGroup.create); default: a group created and closed for this call. */
  group?: AllReduceGroup;
  backend?: AllReduceBackend;
  causal?: boolean;
  /** Default 1/sqrt(D). */
  scale?: number;
  /** Query rows per tile (default 64). */
  tileRows?: number;
  /** Partial-tile buffers per device (default 4). */
  slots?: number;
  /** Reduce tile t while tile t+1 computes (default true); false: reduce after all compute. */
  overlap?: boolean;
  /** A run with no progress on any device for this long rejects (default 60000). */
  timeoutMs?: number;
  /** @internal Failure injection for tests. */
  fault?: AllReduceFault;
}

export interface AllReduceTimings {
  /** The whole call on the caller's side (inputs copied in, output copied out). */
  wallMs: number;
  /** First device's first tile to the last tile reduced. */
  loopMs: number;
  /** Every partial written to every tile reduced: with overlap off, the reduction alone. */
  reducePhaseMs: number;
  /**
   * Per device: gathering its heads; its tiles' compute (attention + projection, each from
   * submit to done); the sums of its column chunk of every tile, and the part of those done
   * while one of its own tiles was computing (the schedule's overlap; 0 with overlap off).
   */
  devices: { setupMs: number; computeMs: number; reduceMs: number; reduceOverlappedMs: number }[];
}

export interface TiledAllReduceResult {
  /** [B, Nq, dModel] f32: concat_h(attention_h) W_o, the heads' outputs in head order. */
  y: Tensor;
  plan: AllReducePlan;
  timings: AllReduceTimings;
}

const OPTION_KEYS = new Set([
  'devices',
  'group',
  'backend',
  'causal',
  'scale',
  'tileRows',
  'slots',
  'overlap',
  'timeoutMs',
  'fault',
]);

/** A SharedArrayBuffer of `shape` f32 (or `bytesPer`-byte) elements; AllocationError naming `argument`. */
function sharedBuffer(shape: readonly number[], argument: string, bytesPer = 4): SharedArrayBuffer {
  const bytes = shape.reduce((a, x) => a * x, bytesPer);
  try {
    return new SharedArrayBuffer(bytes);
  } catch (e) {
    throw new AllocationError(
      shape,
      bytesPer === 4 ? 'f32' : 'f64',
      bytes,
      (e as Error).message,
      argument,
    );
  }
}

function shared(t: Tensor, argument: string): SharedArrayBuffer {
  // data(): a view of a contiguous f32 tensor (offset included), else a gathered copy.
  const src = t.dtype === 'f32' ? t.data<'f32'>() : t.toFloat32Array();
  const sab = sharedBuffer(t.shape, argument);
  new Float32Array(sab).set(src);
  return sab;
}

/**
 * Multi-head attention and its output projection, tensor parallel over P devices with
 * FastAttention's tiling-AllReduce: y = concat_h(softmax attention_h(q, k, v)) W_o, with
 * q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (BHND, GQA), wo [Hq Dv, dModel],
 * all cpu tensors; y [B, Nq, dModel] f32. Device p computes its heads' attention and
 * O_p W_o[p rows] per row tile; the P partials of each tile are summed, device p its chunk p
 * of the tile's columns, while the next tiles compute (`overlap: false`: after all of them).
 * Validation is done before any worker starts: ValueError / ShapeError / DTypeError /
 * DeviceError naming the argument. A worker that exits, throws or stalls rejects the call with
 * DeviceWorkerError and closes the group (every worker ended, every shared buffer dropped).
 */
export async function tiledAllReduceAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  wo: Tensor,
  options: TiledAllReduceOptions = {},
): Promise<TiledAllReduceResult> {
  const t0 = performance.now();
  if (options === null || typeof options !== 'object') {
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  }
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.has(key)) {
      throw new ValueError(
        `${key}: expected one of the options ${[...OPTION_KEYS].filter((o) => o !== 'fault').join(', ')} (tiledAllReduceAttention runs causal or full softmax attention, BHND), got ${key}`,
        key,
      );
    }
  }
  const { group: given, causal = false, scale, timeoutMs = 60000 } = options;
  if (typeof causal !== 'boolean')
    throw new ValueError(`causal: expected a boolean, got ${describe(causal)}`, 'causal');
  const p = resolveAttentionProblem(q, k, v, { causal, scale });
  if (q.dtype === 'f64') {
    throw new DTypeError(
      'q: expected f32, f16 or bf16 (the devices compute in f32), got f64; for float64 results use softmaxAttentionReference from @attnkit/attention',
      'q',
    );
  }
  if (q.device !== 'cpu') {
    throw new DeviceError(
      `q: expected cpu tensors (each device worker takes its heads from host memory), got device ${q.device}`,
      'q',
    );
  }
  if (!(wo instanceof Tensor))
    throw new ValueError(`wo: expected a Tensor, got ${describe(wo)}`, 'wo');
  if (wo.ndim !== 2 || wo.shape[0] !== p.hq * p.dv || !(wo.shape[1]! >= 1)) {
    throw new ShapeError(
      `wo: expected [Hq * Dv, dModel] = [${p.hq * p.dv}, dModel >= 1] (the output projection, rows in head order), got [${wo.shape.join(', ')}]`,
      'wo',
    );
  }
  if (wo.dtype === 'f64' || wo.dtype !== q.dtype) {
    throw new DTypeError(`wo: expected dtype ${q.dtype} (same as q), got ${wo.dtype}`, 'wo');
  }
  if (wo.device !== 'cpu') {
    throw new DeviceError(`wo: expected device cpu (same as q), got ${wo.device}`, 'wo');
  }
  if (given !== undefined && !(given instanceof AllReduceGroup)) {
    throw new ValueError(`group: expected an AllReduceGroup, got ${describe(given)}`, 'group');
  }
  if (given?.closed) throw closedError();
  const devices = options.devices ?? given?.devices;
  if (devices === undefined) {
    throw new ValueError(
      'devices: expected an integer >= 1 (or a group), got undefined',
      'devices',
    );
  }
  if (given && devices !== given.devices) {
    throw new ValueError(
      `devices: expected ${given.devices} (the group's devices), got ${describe(devices)}`,
      'devices',
    );
  }
  const backend = options.backend ?? given?.backend ?? 'native';
  if ((backend !== 'native' && backend !== 'webgpu') || (given && given.backend !== backend)) {
    throw new ValueError(
      `backend: expected ${given ? `"${given.backend}" (the group's)` : '"native" or "webgpu"'}, got ${describe(backend)}`,
      'backend',
    );
  }
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0)) {
    throw new ValueError(
      `timeoutMs: expected a positive number, got ${describe(timeoutMs)}`,
      'timeoutMs',
    );
  }
  const plan = planTiledAllReduce({
    batch: p.batch,
    hq: p.hq,
    hkv: p.hkv,
    seqQ: p.maxSeqQ,
    dModel: wo.shape[1]!,
    devices,
    tileRows: options.tileRows,
    slots: options.slots,
    overlap: options.overlap,
  });
  const dModel = wo.shape[1]!;
  const T = plan.tiles.length;
  const job: AllReduceJob = {
    plan,
    dims: {
      batch: p.batch,
      hq: p.hq,
      hkv: p.hkv,
      seqQ: p.maxSeqQ,
      seqK: p.maxSeqK,
      d: p.d,
      dv: p.dv,
      dModel,
      scale: p.scale,
      causal,
    },
    q: shared(q, 'q'),
    k: shared(k, 'k'),
    v: shared(v, 'v'),
    wo: shared(wo, 'wo'),
    // The partial slots: [P, slots, tileRows, dModel] (with overlap off, P x the output).
    partials: sharedBuffer([devices, plan.slots, plan.tileRows, dModel], 'slots'),
    output: sharedBuffer([p.batch, p.maxSeqQ, dModel], 'wo'),
    control: new SharedArrayBuffer(controlLength(T) * 4),
    timings: sharedBuffer([devices, TIMING_FIELDS], 'devices', 8),
    timeoutMs,
    fault: options.fault,
  };
  const group = given ?? (await AllReduceGroup.create({ devices, backend }));
  try {
    await group.run(job);
  } finally {
    if (!given) await group.close();
  }
  const y = Tensor.from(new Float32Array(job.output).slice(), [p.batch, p.maxSeqQ, dModel]);
  const tm = new Float64Array(job.timings);
  const field = (d: number, f: number) => tm[d * TIMING_FIELDS + f]!;
  const all = (f: number) => Array.from({ length: devices }, (_, d) => field(d, f));
  return {
    y,
    plan,
    timings: {
      wallMs: performance.now() - t0,
      loopMs: Math.max(...all(T_END)) - Math.min(...all(T_START)),
      reducePhaseMs: Math.max(...all(T_END)) - Math.max(...all(T_COMPUTE_END)),
      devices: Array.from({ length: devices }, (_, d) => ({
        setupMs: field(d, T_SETUP_MS),
        computeMs: field(d, T_COMPUTE_MS),
        reduceMs: field(d, T_REDUCE_MS),
        reduceOverlappedMs: field(d, T_REDUCE_OVERLAPPED_MS),
      })),
    },
  };
}
