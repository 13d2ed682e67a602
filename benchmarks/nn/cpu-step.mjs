// One TransformerBlock training step (forward + backward + AdamW) of @attnkit/nn on the cpu
// backends, native (the C++ engine of @attnkit/native) beside ts (the pure-TypeScript kernels),
// in one process on the same model, seed and inputs: prints a table and writes JSON.
// Issue 16, item 7: B 4, T 256, C 384, H 6 (the defaults); target native >= 20x ts.
//
//   pnpm --filter @attnkit/native build:addon && pnpm --filter @attnkit/nn... build
//   node benchmarks/nn/cpu-step.mjs [--batch 4 --seq 256 --dim 384 --heads 6]
//        [--native-steps 10] [--ts-steps 2] [--profile] [--out benchmarks/nn/results/<file>.json]
//
// The packages are imported from their dist/ by path (benchmarks/ is no workspace package).
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadNative } from '../../packages/native/dist/index.js';
import {
  AdamW,
  deviceBackendOf,
  mean,
  mul,
  nativeKernels,
  registerKernel,
  setDeviceBackend,
  sub,
  TransformerBlock,
} from '../../packages/nn/dist/index.js';
import { Rng } from '../../packages/tensor/dist/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values: argv } = parseArgs({
  options: {
    batch: { type: 'string', default: '4' },
    seq: { type: 'string', default: '256' },
    dim: { type: 'string', default: '384' },
    heads: { type: 'string', default: '6' },
    'native-steps': { type: 'string', default: '10' },
    'ts-steps': { type: 'string', default: '2' },
    out: { type: 'string' },
    // Also time each native kernel (a wrapper per kernel, in a separate pass after the
    // measured steps, so the step times above stay unwrapped).
    profile: { type: 'boolean', default: false },
  },
});
const [B, T, C, H] = [argv.batch, argv.seq, argv.dim, argv.heads].map(Number);

const engine = loadNative();
if (!engine)
  throw new Error(
    'the native engine did not load (build it: pnpm --filter @attnkit/native build:addon)',
  );

/** A fresh block, optimizer and batch from seed 0, the step run on `backend`. */
function makeStep(backend) {
  setDeviceBackend('cpu', backend);
  const rng = new Rng(0);
  // GPT's block: pre-norm, causal FlashAttention-2 with RoPE, a GELU MLP of 4C.
  const block = new TransformerBlock(C, H, { rng, causal: true, rope: true });
  const opt = new AdamW(block.parameters(), { lr: 1e-3, weightDecay: 0.01 });
  const x = rng.randn([B, T, C]);
  const target = rng.randn([B, T, C]);
  return (enter = () => {}) => {
    enter('forward');
    const t0 = performance.now();
    opt.zeroGrad();
    const d = sub(block.forward(x), target);
    const loss = mean(mul(d, d));
    const t1 = performance.now();
    enter('backward');
    loss.backward();
    const t2 = performance.now();
    enter('adamw');
    opt.step();
    const t3 = performance.now();
    return {
      forward: t1 - t0,
      backward: t2 - t1,
      adamw: t3 - t2,
      step: t3 - t0,
      loss: loss.item(),
    };
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function measure(backend, steps) {
  const step = makeStep(backend);
  if (deviceBackendOf('cpu') !== backend) throw new Error(`cpu runs on ${deviceBackendOf('cpu')}`);
  const warm = step(); // compiles (JIT), sizes the pools
  const runs = Array.from({ length: steps }, () => step());
  const pick = (k) => median(runs.map((r) => r[k]));
  return {
    backend,
    steps,
    warmupMs: warm.step,
    forwardMs: pick('forward'),
    backwardMs: pick('backward'),
    adamwMs: pick('adamw'),
    stepMs: pick('step'),
    stepsMs: runs.map((r) => r.step),
    losses: [warm.loss, ...runs.map((r) => r.loss)],
  };
}

/** Median time per step of each native kernel, by phase (forward / backward / adamw). */
function profileNative(steps) {
  const totals = new Map();
  let phase = 'forward';
  for (const [name, fn] of Object.entries(nativeKernels)) {
    registerKernel(name, 'native', (...args) => {
      const t = performance.now();
      const r = fn(...args);
      const key = `${phase} ${name}`;
      totals.set(key, (totals.get(key) ?? 0) + performance.now() - t);
      return r;
    });
  }
  const step = makeStep('native');
  for (let s = 0; s < steps + 3; s++) {
    if (s === 3) totals.clear(); // after the first steps' fresh pages
    step((p) => {
      phase = p;
    });
  }
  for (const [name, fn] of Object.entries(nativeKernels)) registerKernel(name, 'native', fn);
  return Object.fromEntries(
    [...totals].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, Number((v / steps).toFixed(2))]),
  );
}

const load0 = loadavg()[0];
const native = measure('native', Number(argv['native-steps']));
const ts = measure('ts', Number(argv['ts-steps']));
const load1 = loadavg()[0];
const profile = argv.profile ? profileNative(Number(argv['native-steps'])) : undefined;
if (profile) {
  console.log('native kernels, ms per step:');
  console.table(Object.entries(profile).map(([kernel, ms]) => ({ kernel, ms })));
}

// FLOPs of the step's matmuls (qkv, proj, the MLP's two: 12 C^2 per token, x2 multiply-add,
// x3 forward + two backward products) and attention (FlashAttention's count, causal halved).
const linear = 3 * 2 * 12 * C * C * B * T;
const attn = (4 * B * H * T * T * (C / H) * (1 + 2.5)) / 2;
const gflops = (ms) => (linear + attn) / ms / 1e6;

const rows = [native, ts].map((r) => ({
  backend: r.backend,
  steps: r.steps,
  'forward ms': r.forwardMs.toFixed(1),
  'backward ms': r.backwardMs.toFixed(1),
  'adamw ms': r.adamwMs.toFixed(1),
  'step ms': r.stepMs.toFixed(1),
  'GFLOP/s': gflops(r.stepMs).toFixed(2),
  'first loss': r.losses[0].toFixed(6),
}));
console.table(rows);
const ratio = ts.stepMs / native.stepMs;
console.log(`native / ts step: ${ratio.toFixed(1)}x (target >= 20x)`);

const now = new Date();
const result = {
  benchmark: 'nn TransformerBlock training step (forward + backward + AdamW), cpu',
  date: now.toISOString(),
  shape: { batch: B, seq: T, dim: C, heads: H, causal: true, rope: true, mlp: 'gelu 4C' },
  device: {
    cpu: cpus()[0]?.model,
    cpus: cpus().length,
    engineThreads: engine.threads,
    isa: engine.isa,
    node: process.version,
    loadavg1: [load0, load1],
  },
  flopsPerStep: linear + attn,
  native,
  ts,
  ratio,
  profile,
};
const out =
  argv.out ??
  join(here, 'results', `${now.toISOString().slice(0, 10)}-cpu-step-${B}-${T}-${C}-${H}.json`);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
console.log(`wrote ${out}`);
