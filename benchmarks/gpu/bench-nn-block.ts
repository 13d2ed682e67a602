/**
 * Issue 16 item 7: one TransformerBlock training step of @attnkit/nn on webgpu (forward +
 * backward + AdamW), f32 and f16 storage, at B 8, T 1024, C 768, H 12 (pre-norm: LayerNorm,
 * RoPE, causal FlashAttention-2, GELU MLP 4C). Before timing, the same block at a small shape
 * is checked against the ts backend (forward output and every parameter's gradient). Each
 * timed step is wall time from the first op to the GPU finishing AdamW (syncWebGpu), the JS
 * that records and encodes the step included; median of --steps after --warmup steps.
 *
 *   node bench-nn-block.mjs [--shape 8,1024,768,12] [--dtypes f32,f16,f16-simt] [--steps 10]
 *                           [--warmup 3] [--warmup-ms 1500] [--out nn-block.json] [--profile]
 *
 * --profile: one more step with every queued pass timed (timestamp queries), summed per kernel
 * label; attention (FA2 submits on its own) is the step's GPU time minus their sum.
 *
 * PyTorch's peer (eager fp32 and bf16 autocast of the same block + AdamW): torch_nn_block.py.
 */
import { writeFileSync } from 'node:fs';
import {
  AdamW,
  registerWebGpuKernels,
  scope,
  setWebGpuProfiler,
  syncWebGpu,
  TransformerBlock,
  webGpuQueueStats,
} from '@attnkit/nn';
import { Rng, Tensor } from '@attnkit/tensor';
import { createWebGpuContext, GpuProfiler, toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
// The submit schedule's knob is internal to nn (not exported): the bench imports its source.
import { setFirstSubmitBatch } from '../../packages/nn/src/kernels/webgpu/queue.js';
import {
  benchDisabledToggles,
  benchToggles,
  byLabel,
  median,
  randomData,
  timeline,
} from './common.js';

const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const [B, T, C, H] = (value('shape') ?? '8,1024,768,12').split(',').map(Number) as [
  number,
  number,
  number,
  number,
];
// f16-simt: f16 storage with the tensor-core matmul turned off (registerWebGpuKernels option).
// Suffixes turn kernel options off for A/B runs: -nosplit (splitK), -queued (encodeEagerly),
// -nocache (reuseBindings), -async (recordAttention), -direct (stageTensorCores), -late
// (earlySubmit), -staged (stageTensorCores true: split-K products staged too; the default
// 'unsplit' loads them from storage), -wdirect (the default, named), -first2 / -first4 /
// -first8 / -first16 (passes in the first command buffer of a step; 2 by default).

const VARIANTS = (value('dtypes') ?? 'f32,f16,f16-simt').split(',');
const SUFFIXES = [
  'simt',
  'nosplit',
  'queued',
  'nocache',
  'async',
  'direct',
  'late',
  'wdirect',
  'staged',
  'first2',
  'first4',
  'first8',
  'first16',
];
const parseVariant = (v: string) => {
  const [dtype, ...flags] = v.split('-');
  if ((dtype !== 'f32' && dtype !== 'f16') || flags.some((f) => !SUFFIXES.includes(f)))
    return undefined;
  if (dtype === 'f32' && flags.includes('simt')) return undefined;
  return {
    dtype: dtype as 'f32' | 'f16',
    options: {
      tensorCores: !flags.includes('simt'),
      splitK: !flags.includes('nosplit'),
      encodeEagerly: !flags.includes('queued'),
      reuseBindings: !flags.includes('nocache'),
      recordAttention: !flags.includes('async'),
      stageTensorCores: flags.includes('direct')
        ? false
        : flags.includes('staged')
          ? true
          : ('unsplit' as const),
      earlySubmit: !flags.includes('late'),
    },
  };
};
if (VARIANTS.some((v) => parseVariant(v) === undefined)) {
  console.error(
    `--dtypes: expected a list of f32 or f16 with suffixes -simt (f16), -nosplit, -queued, -nocache, -async, -direct, -late, -wdirect, -staged, -first2, -first4, -first8, -first16, got ${VARIANTS.join(',')}`,
  );
  process.exit(2);
}
const STEPS = Number(value('steps') ?? 10);
const WARMUP = Number(value('warmup') ?? 3);
// The H200's SM clock drops to 345-600 MHz while the GPU idles (the ts verification before each
// variant) and took up to ~1 s of steps to come back to 1980 MHz (session 14, nvidia-smi
// sampled beside the steps): warm up for --warmup steps and at least this long.
const WARMUP_MS = Number(value('warmup-ms') ?? 1500);
// Steps that must agree (within 10%) before timing starts, and the most extra warm-up for it.
const STEADY = 5;
const STEADY_MS = Number(value('steady-ms') ?? 8000);
for (const [name, v] of Object.entries({ B, T, C, H, STEPS, WARMUP }))
  if (!Number.isInteger(v) || v < (name === 'WARMUP' ? 0 : 1) || (name === 'C' && C % H !== 0)) {
    console.error(`bad --shape/--steps/--warmup: ${name} = ${v} (shape is B,T,C,H with H | C)`);
    process.exit(2);
  }

const ctx = await createWebGpuContext({
  dawnToggles: benchToggles(),
  disabledDawnToggles: benchDisabledToggles(),
});
registerWebGpuKernels(ctx);
console.log(
  `adapter ${JSON.stringify(ctx.adapterInfo)} backend=${ctx.backend} robust=${ctx.robustAccess}`,
);

const up = (t: Tensor, dtype: 'f32' | 'f16') =>
  toWebGpu(dtype === 'f32' ? t : t.astype('f16'), ctx);

function makeBlock(c: number, h: number, dtype: 'f32' | 'f16', onGpu: boolean) {
  const block = new TransformerBlock(c, h, { rng: new Rng(1) });
  if (onGpu) for (const p of block.parameters()) p.data = up(p.data, dtype);
  return block;
}

/** One step: zeroGrad, forward, backward with upstream gradient dy, AdamW; the scope frees the rest. */
function step(block: TransformerBlock, opt: AdamW, x: Tensor, dy: Tensor): void {
  scope(() => {
    opt.zeroGrad();
    block.forward(x).backward(dy);
    opt.step();
  });
}

/**
 * The webgpu block against the ts block at a small shape: output and gradients, max |diff| / (1
 * + |ref|). Shapes are multiples of 16, so that f16 runs the tensor-core matmuls where the
 * adapter has them; the second (2,048 tokens) splits K in the weight gradients' matmuls.
 */
const VERIFY_SHAPES: [number, number, number, number][] = [
  [2, 32, 64, 4],
  [4, 512, 128, 2],
];
async function verify(
  dtype: 'f32' | 'f16',
  [b, t, c, h]: [number, number, number, number],
): Promise<number> {
  const x = Tensor.from(randomData(b * t * c, 7), [b, t, c]);
  const dy = Tensor.from(randomData(b * t * c, 8), [b, t, c]);
  const ref = makeBlock(c, h, 'f32', false);
  const yRef = ref.forward(x);
  yRef.backward(dy);
  const gpu = makeBlock(c, h, dtype, true);
  const [xg, dyg] = [up(x, dtype), up(dy, dtype)];
  const y = scope(() => {
    const out = gpu.forward(xg);
    out.backward(dyg);
    return out.data;
  });
  let worst = 0;
  const compare = async (got: Tensor, want: Tensor) => {
    const g = (await got.toCpu()).toFloat64Array();
    const w = want.toFloat64Array();
    for (let i = 0; i < w.length; i++) {
      const d = Math.abs(g[i]! - w[i]!) / (1 + Math.abs(w[i]!));
      worst = Number.isNaN(d) ? Number.POSITIVE_INFINITY : Math.max(worst, d);
    }
  };
  await compare(y, yRef.data);
  const refParams = ref.namedParameters();
  for (const [i, [, p]] of gpu.namedParameters().entries())
    await compare(p.grad!, refParams[i]![1].grad!);
  for (const t of [y, xg, dyg, ...gpu.parameters().flatMap((p) => [p.data, p.grad!])]) t.dispose();
  return worst;
}

async function timeSteps(dtype: 'f32' | 'f16', c: WebGpuContext) {
  const block = makeBlock(C, H, dtype, true);
  const opt = new AdamW(block.parameters(), { lr: 1e-4 });
  const x = up(Tensor.from(randomData(B * T * C, 1), [B, T, C]), dtype);
  const dy = up(Tensor.from(randomData(B * T * C, 2), [B, T, C]), dtype);
  const t0 = performance.now();
  // Then until steady: the last STEADY steps within 10% of their median (session 15's run 4
  // saw a process's first variant run 30-40 ms steps for 7 steps after a 3.7 s warm-up), at
  // most STEADY_MS more.
  const recent: number[] = [];
  const steady = () =>
    recent.length >= STEADY &&
    recent.slice(-STEADY).every((v) => Math.abs(v - median(recent.slice(-STEADY))) <= 0.1 * v);
  for (
    let i = 0;
    i < WARMUP ||
    performance.now() - t0 < WARMUP_MS ||
    (!steady() && performance.now() - t0 < WARMUP_MS + STEADY_MS);
    i++
  ) {
    const s = performance.now();
    step(block, opt, x, dy);
    await syncWebGpu(c);
    recent.push(performance.now() - s);
  }
  const warmupMs = performance.now() - t0;
  const before = webGpuQueueStats(c);
  const ms: number[] = [];
  // The synchronous part of a step (autograd records, kernels allocate and queue their work):
  // host time the queue's encoding and the GPU come after.
  const recordMs: number[] = [];
  // Per step: wall-clock start (to line up with nvidia-smi's clock samples) and buffers the
  // pool had to create (a steady step creates none).
  const startEpochMs: number[] = [];
  const created: number[] = [];
  let peak = 0;
  // Monotonic microseconds (V8's profile clock) around the timed steps: the window of a
  // --cpu-prof profile that holds them alone (cpuprof-top.mjs --from-us / --to-us).
  const from = process.hrtime.bigint() / 1000n;
  for (let i = 0; i < STEPS; i++) {
    startEpochMs.push(Date.now());
    const made = c.pool.created;
    const s = performance.now();
    step(block, opt, x, dy);
    recordMs.push(performance.now() - s);
    peak = Math.max(peak, c.pool.liveBytes);
    await syncWebGpu(c);
    ms.push(performance.now() - s);
    created.push(c.pool.created - made);
  }
  const after = webGpuQueueStats(c);
  console.log(`window ${dtype}: --from-us ${from} --to-us ${process.hrtime.bigint() / 1000n}`);
  let profile: { label: string; ms: number; count: number }[] | undefined;
  let gpuTimeline: ReturnType<typeof timeline> | undefined;
  if (args.includes('--profile') && c.features.timestampQuery) {
    const profiler = new GpuProfiler(c.device, 2048);
    setWebGpuProfiler(c, profiler);
    step(block, opt, x, dy);
    await syncWebGpu(c);
    setWebGpuProfiler(c, undefined);
    const timings = await profiler.read();
    profile = byLabel(timings);
    gpuTimeline = timeline(timings);
    profiler.destroy();
  }
  for (const p of block.parameters()) p.data.dispose();
  opt.zeroGrad();
  x.dispose();
  dy.dispose();
  return {
    ms,
    recordMs,
    startEpochMs,
    created,
    warmupMs,
    passesPerStep: (after.passes - before.passes) / STEPS,
    submitsPerStep: (after.submits - before.submits) / STEPS,
    peakLiveBytes: peak,
    profile,
    gpuTimeline,
  };
}

// Matmul FLOPs 3 x 2 x tokens x 12 C^2 (forward, dX, dW); causal attention 4 B T^2 C / 2
// forward and 2.5x that backward, as FlashAttention's benchmarks count.
const flops = 6 * B * T * 12 * C * C + 3.5 * 2 * B * T * T * C;
const rows: Record<string, unknown>[] = [];
const out = {
  shape: { B, T, C, H },
  steps: STEPS,
  warmup: WARMUP,
  warmupMs: WARMUP_MS,
  flopsPerStep: flops,
  adapter: ctx.adapterInfo,
  rows,
};
const save = () => value('out') && writeFileSync(value('out')!, JSON.stringify(out, null, 2));
for (const variant of VARIANTS) {
  const { dtype, options } = parseVariant(variant)!;
  registerWebGpuKernels(ctx, options);
  const first = ['first2', 'first4', 'first8', 'first16'].find((f) =>
    variant.split('-').includes(f),
  );
  setFirstSubmitBatch(first ? Number(first.slice(5)) : undefined);
  const row: Record<string, unknown> = { impl: `attnkit webgpu ${variant}`, dtype };
  rows.push(row);
  try {
    const errors = [];
    // Twice: the first call of a shape compiles the pipelines (attention runs the families'
    // async path), the second finds them (attention is recorded with the passes around it).
    for (const [n, shape] of [...VERIFY_SHAPES, ...VERIFY_SHAPES].entries()) {
      const e = await verify(dtype, shape);
      errors.push(e);
      const when = n < VERIFY_SHAPES.length ? 'first call' : 'again';
      console.log(`verify ${variant} [${shape}] ${when}: max error vs ts ${e.toExponential(2)}`);
    }
    row.verifyErrors = errors;
    row.verifyError = Math.max(...errors);
    const r = await timeSteps(dtype, ctx);
    const med = median(r.ms);
    Object.assign(row, {
      medianMs: med,
      minMs: Math.min(...r.ms),
      ms: r.ms,
      recordMedianMs: median(r.recordMs),
      recordMs: r.recordMs,
      startEpochMs: r.startEpochMs,
      created: r.created,
      tflops: flops / med / 1e9,
      tokensPerS: (B * T) / (med / 1e3),
      warmupMs: r.warmupMs,
      passesPerStep: r.passesPerStep,
      submitsPerStep: r.submitsPerStep,
      peakLiveMiB: r.peakLiveBytes / 2 ** 20,
      profile: r.profile,
      gpuTimeline: r.gpuTimeline,
    });
    if (r.profile) {
      const queued = r.profile.reduce((a, p) => a + p.ms, 0);
      console.log(
        `${variant} profile: queued passes ${queued.toFixed(2)} ms of ${med.toFixed(2)} ms`,
      );
      for (const p of r.profile.slice(0, 16))
        console.log(`  ${p.ms.toFixed(3).padStart(8)} ms  x${p.count}  ${p.label}`);
      const tl = r.gpuTimeline;
      if (tl) {
        const idle = tl.spanMs - tl.busyMs;
        console.log(
          `${variant} GPU timeline: first pass start to last end ${tl.spanMs.toFixed(2)} ms, in passes ${tl.busyMs.toFixed(2)}, between passes ${idle.toFixed(2)}; largest gaps:`,
        );
        for (const g of tl.gaps)
          console.log(`  ${g.ms.toFixed(3).padStart(8)} ms  after ${g.after} -> ${g.before}`);
      }
    }
  } catch (e) {
    row.error = String(e).slice(0, 600);
    console.error(`${variant}: ${row.error}`);
  }
  save();
}
console.log(`\nTransformerBlock training step (fwd + bwd + AdamW), B ${B} T ${T} C ${C} H ${H}`);
console.log(
  '| impl | median ms | min ms | record ms | TFLOP/s | tokens/s | passes/step | verify err |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  const f = (v: unknown, d = 2) => (typeof v === 'number' ? v.toFixed(d) : '-');
  console.log(
    `| ${r.impl} | ${f(r.medianMs)} | ${f(r.minMs)} | ${f(r.recordMedianMs)} | ${f(r.tflops)} | ${f(r.tokensPerS, 0)} | ${f(r.passesPerStep, 0)} | ${typeof r.verifyError === 'number' ? r.verifyError.toExponential(1) : (r.error ?? '-')} |`,
  );
}
save();
ctx.destroy();
