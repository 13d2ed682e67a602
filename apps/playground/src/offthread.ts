import type { RunSpec } from './families.js';
import { CancelledError, TimeoutError } from './ui.js';
import type { WorkerReply, WorkerRequest } from './worker.js';

/** An error from the worker, with the class name it had there (ValueError, ShapeError, ...). */
class WorkerError extends Error {}

/**
 * One request on a fresh worker, ended (terminated) on cancel or after `ms`: CPU work that
 * would block the page runs here, and stopping it really stops it.
 */
export function offThread(
  request: WorkerRequest,
  ms: number,
  signal?: AbortSignal,
): Promise<{ data: Float32Array | Float64Array; ms: number }> {
  const what = `${request.spec.family} ${request.want === 'ts' ? 'on ts' : 'float64 reference'}`;
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });
    const end = (f: () => void) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      worker.terminate();
      f();
    };
    const onAbort = () => end(() => reject(new CancelledError(`${what}: cancelled`)));
    const timer = setTimeout(
      () =>
        end(() => reject(new TimeoutError(`${what}: no result after ${ms / 1000} s (stopped)`))),
      ms,
    );
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.onmessage = (e: MessageEvent<WorkerReply>) => {
      const r = e.data;
      end(() => {
        if (r.ok) resolve({ data: r.data, ms: r.ms });
        else {
          const err = new WorkerError(r.message);
          err.name = r.name;
          reject(err);
        }
      });
    };
    worker.onerror = (e) =>
      end(() => reject(new Error(`${what}: the worker failed: ${e.message || 'script error'}`)));
    worker.postMessage(request);
  });
}

export type { RunSpec };
