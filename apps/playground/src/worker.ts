/// <reference lib="webworker" />
import { FAMILIES, type RunSpec, timedKernel } from './families.js';

/**
 * The CPU side of a run, off the page's thread: the TypeScript kernel and the float64
 * reference (seconds for a large N). The page stays responsive, and Cancel or a time limit
 * ends the work for real (worker.terminate()). Inputs come from the spec's seed, so this
 * worker and the page build the same tensors.
 */
export type WorkerRequest = {
  spec: RunSpec;
  want: 'ts' | 'reference';
  /** ts: time this many runs after a warm-up one (the JIT's) and reply with the median. */
  reps?: number;
};
export type WorkerReply =
  | { ok: true; data: Float32Array | Float64Array; ms: number }
  | { ok: false; name: string; message: string };

self.onmessage = async (e: MessageEvent<WorkerRequest>) => {
  const { spec, want, reps = 0 } = e.data;
  try {
    const f = FAMILIES[spec.family];
    const x = f.inputs(spec);
    let data: Float32Array | Float64Array;
    let ms = 0;
    if (want === 'ts') {
      const run = () => timedKernel(f, x, { ...spec, backend: 'ts' }, undefined);
      const r = await run();
      data = r.o.toFloat32Array();
      ms = r.ms;
      const times: number[] = [];
      for (let i = 0; i < reps; i++) times.push((await run()).ms);
      if (reps > 0) ms = times.sort((a, b) => a - b)[Math.floor(reps / 2)]!;
    } else {
      data = f.reference(x, spec).toFloat64Array();
    }
    (self as unknown as Worker).postMessage({ ok: true, data, ms } satisfies WorkerReply, [
      data.buffer,
    ]);
  } catch (err) {
    const error = err instanceof Error ? err : new Error(String(err));
    self.postMessage({ ok: false, name: error.name, message: error.message } satisfies WorkerReply);
  }
};
