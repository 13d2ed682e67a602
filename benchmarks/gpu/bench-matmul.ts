/**
 * nn's webgpu matmul kernels alone, per shape and path (issue 16's open item: the f16 SIMT
 * matmul ran ~10x slower than the f32 one on the H200, and the GPT-2 small LM head, N = 50257,
 * takes that path under f16 storage). For each shape: f32 (SIMT), f16 with the tensor cores off
 * (SIMT, f16 loads), f16 on tensor cores where the shape tiles by 32 (loading straight from
 * storage, then staged through workgroup memory: the default); GPU ms per call from
 * timestamp queries (the span of --reps calls after one warm-up), TFLOP/s, and each result
 * against the f32 one on the same (f16-rounded) inputs, relative max error, before timing.
 *
 *   node bench-matmul.mjs [--reps 10] [--warm-ms 400] [--out matmul.json] [--small]
 */
import { writeFileSync } from 'node:fs';
import {
  matmul,
  noGrad,
  registerWebGpuKernels,
  setWebGpuProfiler,
  syncWebGpu,
  type Var,
} from '@attnkit/nn';
import { Tensor } from '@attnkit/tensor';
import { createWebGpuContext, GpuProfiler, toWebGpu } from '@attnkit/webgpu';
import { benchDisabledToggles, benchToggles, byLabel, randomData, timeline } from './common.js';

const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const REPS = Number(value('reps') ?? 10);
const WARM_MS = Number(value('warm-ms') ?? 400);

const ctx = await createWebGpuContext({
  dawnToggles: benchToggles(),
  disabledDawnToggles: benchDisabledToggles(),
});
console.log(
  `adapter ${JSON.stringify(ctx.adapterInfo)} backend=${ctx.backend} robust=${ctx.robustAccess}`,
);

// [M, K, N, transA, transB, what]: the TransformerBlock's at B 8, T 1024, C 768 and the LM head.
const SMALL = args.includes('--small'); // llvmpipe: the same transposes at small sizes
const FULL: [number, number, number, boolean, boolean, string][] = [
  [8192, 768, 768, false, true, 'attn proj forward (x W^T)'],
  [8192, 768, 3072, false, true, 'fc forward'],
  [8192, 3072, 768, false, true, 'fc2 forward'],
  [8192, 3072, 768, false, false, 'fc dX (dY W)'],
  [8192, 768, 3072, false, false, 'fc2 dX (dY W)'],
  [768, 8192, 3072, true, false, 'fc dW (dY^T X), K split'],
  [8192, 768, 50257, false, true, 'LM head forward, N = 50257'],
];
const SHAPES = SMALL
  ? FULL.map(
      ([m, k, n, ta, tb, w]) =>
        [m / 64, k / 16, Math.ceil(n / 64), ta, tb, w] as (typeof FULL)[number],
    )
  : FULL;
const PATHS = [
  { name: 'f32', dtype: 'f32' as const, tensorCores: true, stage: true },
  { name: 'f16 SIMT', dtype: 'f16' as const, tensorCores: false, stage: true },
  { name: 'f16 tensor cores direct', dtype: 'f16' as const, tensorCores: true, stage: false },
  { name: 'f16 tensor cores staged', dtype: 'f16' as const, tensorCores: true, stage: true },
];

const rows: Record<string, unknown>[] = [];
const save = () =>
  value('out') &&
  writeFileSync(value('out')!, JSON.stringify({ adapter: ctx.adapterInfo, rows }, null, 2));
console.log('| shape (M x K x N) | what | path | kernel | GPU ms | TFLOP/s | max rel err vs f32 |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const [m, k, n, ta, tb, what] of SHAPES) {
  // f16-representable values, so that every path multiplies the same numbers.
  const a16 = Tensor.from(randomData(m * k, 1), ta ? [k, m] : [m, k]).astype('f16');
  const b16 = Tensor.from(randomData(k * n, 2), tb ? [n, k] : [k, n]).astype('f16');
  let ref: Float32Array | undefined;
  for (const path of PATHS) {
    registerWebGpuKernels(ctx, { tensorCores: path.tensorCores, stageTensorCores: path.stage });
    const a = toWebGpu(a16.astype(path.dtype), ctx);
    const b = toWebGpu(b16.astype(path.dtype), ctx);
    const row: Record<string, unknown> = { m, k, n, ta, tb, what, path: path.name };
    rows.push(row);
    try {
      const run = () => noGrad(() => (matmul(a, b, { transA: ta, transB: tb }) as Var).data);
      const first = run();
      const got = (await first.toCpu()).astype('f32').toFloat32Array();
      first.dispose();
      if (!ref) ref = got;
      let err = 0;
      for (let i = 0; i < got.length; i += 7)
        err = Math.max(err, Math.abs(got[i]! - ref[i]!) / (1 + Math.abs(ref[i]!)));
      row.maxRelErr = err;
      let labels: { label: string; ms: number; count: number }[];
      let ms: number;
      // The SM clock drops while the GPU idles (this row's upload and error check on the CPU)
      // and takes hundreds of ms of work to come back (session 14): run the product for at
      // least WARM_MS before timing it.
      const warm = performance.now();
      while (performance.now() - warm < WARM_MS) {
        run().dispose();
        await syncWebGpu(ctx);
      }
      if (ctx.features.timestampQuery) {
        const profiler = new GpuProfiler(ctx.device, 256);
        setWebGpuProfiler(ctx, profiler);
        for (let r = 0; r < REPS; r++) run().dispose();
        await syncWebGpu(ctx);
        setWebGpuProfiler(ctx, undefined);
        const timings = await profiler.read();
        labels = byLabel(timings);
        profiler.destroy();
        // The span from the first pass's start to the last one's end, per call: the calls'
        // passes may overlap on the GPU (nothing orders independent outputs), and then the
        // sum of their durations counts the same time several times.
        ms = timeline(timings).spanMs / REPS;
        row.sumMs = labels.reduce((x, l) => x + l.ms, 0) / REPS;
      } else {
        // No timestamp queries (llvmpipe): wall time to the GPU's finish.
        const t0 = performance.now();
        for (let r = 0; r < REPS; r++) run().dispose();
        await syncWebGpu(ctx);
        ms = (performance.now() - t0) / REPS;
        labels = [{ label: 'wall', ms, count: REPS }];
      }
      row.gpuMs = ms;
      row.labels = labels;
      row.tflops = (2 * m * k * n) / ms / 1e9;
      const kernel = labels.map((l) => l.label).join(' + ');
      console.log(
        `| ${m} x ${k} x ${n} | ${what} | ${path.name} | ${kernel} | ${ms.toFixed(3)} | ${(row.tflops as number).toFixed(1)} | ${err.toExponential(1)} |`,
      );
    } catch (e) {
      row.error = String(e).slice(0, 300);
      console.log(`| ${m} x ${k} x ${n} | ${what} | ${path.name} | failed: ${row.error} | | | |`);
    }
    a.dispose();
    b.dispose();
    save();
  }
}
ctx.destroy();
