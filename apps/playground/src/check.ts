import { accuracy } from '@attnkit/attention';
import type { WebGpuContext } from '@attnkit/webgpu';
import { FAMILIES, type Outcome, type RunSpec, timedKernel } from './families.js';
import { offThread } from './offthread.js';
import { guarded } from './ui.js';

/**
 * Runs `spec` and checks it against the float64 reference. The ts kernel and the reference run
 * in a worker (stopped on cancel / after `timeoutMs`); a webgpu kernel runs here, raced against
 * the same limits (work already queued on the GPU finishes in the background).
 */
export async function runAndCheck(
  spec: RunSpec,
  ctx: WebGpuContext | undefined,
  signal: AbortSignal,
  timeoutMs: number,
  step: (what: string) => void = () => {},
): Promise<Outcome> {
  const f = FAMILIES[spec.family];
  step(`${spec.backend} kernel`);
  let o: ArrayLike<number>;
  let ms: number;
  if (spec.backend === 'webgpu') {
    const x = f.inputs(spec);
    const what = `${spec.family} on webgpu`;
    const r = await guarded(timedKernel(f, x, spec, ctx), timeoutMs, what, signal);
    o = r.o.toFloat32Array();
    ms = r.ms;
  } else {
    ({ data: o, ms } = await offThread({ spec, want: 'ts' }, timeoutMs, signal));
  }
  step('float64 reference');
  const { data: ref } = await offThread({ spec, want: 'reference' }, timeoutMs, signal);
  const acc = accuracy(o, ref);
  return { spec, ms, gflops: f.flops(spec) / (ms * 1e6), acc, verdict: f.judge(acc, spec) };
}
