import { encodeHalfArray, Tensor } from '@attnkit/tensor';
import { DEFAULT_DAWN_TOGGLES, GpuProfiler, type WebGpuContext } from '@attnkit/webgpu';

// What the GPU benches share: seeded input data, the median, and the timing loop.

/** Random normal-ish data fast enough for 10^8 elements (sum of 4 uniforms, variance 1). */
export function randomData(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
  for (let i = 0; i < n; i++) out[i] = (next() + next() + next() + next() - 2) * 1.7320508;
  return out;
}

/** A cpu tensor of randomData, stored f32 or packed f16. */
export function tensor(shape: readonly number[], dtype: 'f32' | 'f16', seed: number): Tensor {
  const data = randomData(
    shape.reduce((a, x) => a * x, 1),
    seed,
  );
  return dtype === 'f32'
    ? Tensor.from(data, [...shape])
    : Tensor.from(encodeHalfArray('f16', data), [...shape], 'f16');
}

/** The median of xs (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Times `run` on the GPU: at least half a second of back-to-back warm-up (an idle GPU runs at
 * lower clocks for a while), then `repeats` calls, each the sum of its kernel passes from
 * timestamp queries when the device has them, else the wall time between queue waits. What a
 * call returns is disposed. `spanMs` (timestamps only): from the first pass's start to the last
 * one's end, gaps between passes included (a call of several submits, e.g. binding chunks).
 */
export async function timeCall(
  ctx: WebGpuContext,
  run: (profiler?: GpuProfiler) => Promise<Record<string, Tensor>>,
  repeats: number,
  /** Untimed calls for at least this long first (and at least 3): clocks and caches settle. */
  warmupMs = 500,
): Promise<{ medianMs: number; minMs: number; spanMs?: number; timing: 'timestamp' | 'wall' }> {
  // One slot more than a call may use: a call that fills it may have had passes left untimed.
  const CAPACITY = 256;
  const profiler = ctx.features.timestampQuery
    ? new GpuProfiler(ctx.device, CAPACITY + 1)
    : undefined;
  const dispose = (r: Record<string, Tensor>) => {
    for (const t of Object.values(r)) t.dispose();
  };
  const warm = performance.now();
  for (let i = 0; i < 3 || performance.now() - warm < warmupMs; i++) {
    dispose(await run());
    await ctx.sync();
  }
  const ms: number[] = [];
  if (profiler) {
    const spans: number[] = [];
    for (let i = 0; i < repeats; i++) {
      const r = await run(profiler);
      await ctx.sync();
      dispose(r);
      const passes = await profiler.read();
      // A full profiler stops timing passes (passTimestamps returns undefined): never undercount.
      if (passes.length > CAPACITY)
        throw new Error(
          `timeCall: a call ran ${passes.length}+ passes, past the profiler's ${CAPACITY}`,
        );
      ms.push(passes.reduce((a, p) => a + p.ns, 0) / 1e6);
      spans.push(Math.max(0, ...passes.map((p) => p.startNs + p.ns)) / 1e6);
    }
    profiler.destroy();
    return {
      medianMs: median(ms),
      minMs: Math.min(...ms),
      spanMs: median(spans),
      timing: 'timestamp',
    };
  }
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    const r = await run();
    await ctx.sync();
    ms.push(performance.now() - t0);
    dispose(r);
  }
  return { medianMs: median(ms), minMs: Math.min(...ms), timing: 'wall' };
}

/**
 * Dawn toggles for a bench's context: the defaults plus a comma-separated list from
 * EXTRA_DAWN_TOGGLES (e.g. disable_robustness, to see what Tint's bounds clamping costs).
 */
export function benchToggles(): string[] {
  const extra = (process.env.EXTRA_DAWN_TOGGLES ?? '').split(',').filter(Boolean);
  return [...DEFAULT_DAWN_TOGGLES, ...extra];
}

/**
 * Dawn toggles a bench's context turns off: DISABLE_DAWN_TOGGLES, comma-separated (e.g.
 * timestamp_quantization, which otherwise rounds every timestamp down to 65.536 us).
 */
export function benchDisabledToggles(): string[] {
  return (process.env.DISABLE_DAWN_TOGGLES ?? '').split(',').filter(Boolean);
}

/** Timestamps a GpuProfiler read back, summed per pass label, largest first. */
export function byLabel(
  timings: readonly { label: string; ns: number }[],
): { label: string; ms: number; count: number }[] {
  const by = new Map<string, { label: string; ms: number; count: number }>();
  for (const t of timings) {
    const e = by.get(t.label) ?? { label: t.label, ms: 0, count: 0 };
    e.ms += t.ns / 1e6;
    e.count++;
    by.set(t.label, e);
  }
  return [...by.values()].sort((a, b) => b.ms - a.ms);
}

/**
 * Where a profiled stretch of GPU work left the GPU idle: the span from the first timed pass's
 * start to the last one's end, the time inside passes, and the largest gaps between one pass's
 * end (the latest so far) and the next one's start, with the labels on either side. Untimed
 * work (another queue's passes: attention kernels submit their own) shows up as gaps too.
 */
export function timeline(
  timings: readonly { label: string; ns: number; startNs: number }[],
  top = 6,
): { spanMs: number; busyMs: number; gaps: { after: string; before: string; ms: number }[] } {
  const sorted = [...timings].sort((a, b) => a.startNs - b.startNs);
  let end = 0;
  let busy = 0;
  let last = '';
  const gaps: { after: string; before: string; ms: number }[] = [];
  for (const t of sorted) {
    if (last !== '' && t.startNs > end)
      gaps.push({ after: last, before: t.label, ms: (t.startNs - end) / 1e6 });
    busy += t.ns;
    if (t.startNs + t.ns >= end) {
      end = t.startNs + t.ns;
      last = t.label;
    }
  }
  gaps.sort((a, b) => b.ms - a.ms);
  return { spanMs: end / 1e6, busyMs: busy / 1e6, gaps: gaps.slice(0, top) };
}
