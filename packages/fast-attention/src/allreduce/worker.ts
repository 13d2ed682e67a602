import { parentPort } from 'node:worker_threads';
import type { NativeEngine } from '@attnkit/native';
import type { WebGpuContext } from '@attnkit/webgpu';
import { createNativeTileDevice } from './native-device.js';
import {
  type AllReduceJob,
  type FromWorker,
  T_SETUP_MS,
  TIMING_FIELDS,
  type ToWorker,
  type WorkerErrorInfo,
} from './protocol.js';
import { AbortedRun, runTileLoop, type TileDevice } from './tile-loop.js';

/**
 * The device worker of the tiling-AllReduce (built as dist/allreduce-worker.js): one per
 * device, spawned by AllReduceGroup. `init` loads its backend once; each `run` builds its
 * device's tiles from the shared inputs and runs the tile loop; it answers `ready`, `done` or
 * `failed` (with the error's name, message and argument, so the caller rethrows the same type).
 */

const port = parentPort;
if (!port) throw new Error('allreduce-worker: expected to run in a worker thread');

let engine: NativeEngine | undefined;
let gpu: WebGpuContext | undefined;
let device = -1;
const post = (m: FromWorker) => port.postMessage(m);

function errorInfo(e: unknown): WorkerErrorInfo {
  const err = e as { name?: unknown; message?: unknown; argument?: unknown };
  return {
    name: typeof err?.name === 'string' ? err.name : 'Error',
    message: typeof err?.message === 'string' ? err.message : String(e),
    argument: typeof err?.argument === 'string' ? err.argument : undefined,
  };
}

async function init(backend: 'native' | 'webgpu'): Promise<void> {
  if (backend === 'webgpu') {
    // Its own Dawn device: P workers are P devices, on one adapter or several.
    const { createWebGpuContext } = await import('@attnkit/webgpu');
    gpu = await createWebGpuContext();
    return;
  }
  const native = await import('@attnkit/native');
  engine = native.loadNative() ?? undefined;
  if (!engine) {
    throw Object.assign(
      new Error(`backend: the native engine is unavailable: ${native.nativeLoadError()}`),
      { name: 'BackendUnavailableError', argument: 'backend' },
    );
  }
}

async function tileDevice(job: AllReduceJob): Promise<TileDevice & { dispose?(): void }> {
  const shard = job.plan.shards[device]!;
  if (gpu) {
    const { createWebGpuTileDevice } = await import('./webgpu-device.js');
    return createWebGpuTileDevice(gpu, job, shard);
  }
  return createNativeTileDevice(engine!, job, shard);
}

port.on('message', async (msg: ToWorker) => {
  try {
    if (msg.kind === 'close') {
      // Dawn's device must go before the thread: terminating a thread that still holds one
      // crashes the process.
      gpu?.destroy();
      gpu = undefined;
      process.exit(0);
    }
    if (msg.kind === 'init') {
      device = msg.device;
      await init(msg.backend);
      post({ kind: 'ready' });
      return;
    }
    const { job } = msg;
    const t0 = performance.now();
    const dev = await tileDevice(job);
    new Float64Array(job.timings, device * TIMING_FIELDS * 8, TIMING_FIELDS)[T_SETUP_MS] =
      performance.now() - t0;
    const fault = job.fault?.device === device ? job.fault : undefined;
    try {
      await runTileLoop(job, device, dev, {
        beforeTile: fault
          ? (tile) => {
              if (tile.index !== fault.tile) return;
              if (fault.kind === 'exit') process.exit(1);
              if (fault.kind === 'throw') throw new Error(`injected failure at tile ${tile.index}`);
              return new Promise<void>(() => {});
            }
          : undefined,
      });
    } finally {
      dev.dispose?.();
    }
    post({ kind: 'done' });
  } catch (e) {
    // Aborted: the caller failed the run and terminates this worker once it says it stopped.
    if (e instanceof AbortedRun) post({ kind: 'stopped' });
    else post({ kind: 'failed', error: errorInfo(e) });
  }
});
