// The host's share of a TransformerBlock training step on WebGPU, without a GPU (issue 16 item
// 7): Dawn's null backend validates and encodes every pass and runs none, so a step's wall time
// here is what autograd's tape, nn's queue and Dawn's API cost. On the H200 the f32 step took
// 25.4 ms with 18.2 ms of queued GPU passes; this measures the rest without device time.
//
//   pnpm build   (tensor, webgpu, nn and their dependencies)
//   node benchmarks/gpu/host-step.mjs [--shape 8,1024,768,12] [--steps 20] [--warmup 3]
//
// Prints per step: the record time (the synchronous forward + backward + AdamW that builds the
// tape and queues the passes) and the time until the queue is idle (every pass encoded and
// submitted), medians and minima. Values on the null backend are meaningless; only times are.
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { bindingStats, nullWebGpuContext } from './null-context.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
const { AdamW, TransformerBlock, registerWebGpuKernels, scope, syncWebGpu, webGpuQueueStats } =
  await dist('nn');
const { Rng } = await dist('tensor');
const { createWebGpuContext, toWebGpu } = await dist('webgpu');

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: '8,1024,768,12' },
    steps: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    // 'adapter': the machine's own adapter (llvmpipe here, a GPU elsewhere) instead of null.
    backend: { type: 'string', default: 'null' },
    queued: { type: 'boolean', default: false },
    // --async: attention as a queued async task (kernel option recordAttention: false), for A/B.
    async: { type: 'boolean', default: false },
    // --late: submits at 64 passes and when the recording yields (earlySubmit: false).
    late: { type: 'boolean', default: false },
    'log-creates': { type: 'boolean', default: false },
  },
});
const [B, T, C, H] = values.shape.split(',').map(Number);

const ctx = values.backend === 'null' ? await nullWebGpuContext() : await createWebGpuContext();
// --queued: without eager encoding (kernel option encodeEagerly: false), for A/B.
registerWebGpuKernels(ctx, {
  encodeEagerly: !values.queued,
  recordAttention: !values.async,
  earlySubmit: !values.late,
});

// --log-creates: the pool's buffer creations during the last step (a steady step makes none).
let logCreates = false;
if (values['log-creates']) {
  const create = ctx.device.createBuffer.bind(ctx.device);
  ctx.device.createBuffer = (d) => {
    if (logCreates) console.log(`  created ${d.label} (${d.size} B, usage ${d.usage})`);
    const b = create(d);
    const destroy = b.destroy.bind(b);
    b.destroy = () => {
      if (logCreates) console.log(`  destroyed ${d.label} (${d.size} B, usage ${d.usage})`);
      destroy();
    };
    return b;
  };
}
const block = new TransformerBlock(C, H, { rng: new Rng(1) });
for (const p of block.parameters()) p.data = toWebGpu(p.data, ctx);
const opt = new AdamW(block.parameters(), { lr: 1e-4 });
const rng = new Rng(2);
const x = toWebGpu(rng.randn([B, T, C], 'f32'), ctx);
const dy = toWebGpu(rng.randn([B, T, C], 'f32'), ctx);
const record = [];
const total = [];
let passes = 0;
let immediate = 0;
let submits = 0;
let recorded = 0;
let created = 0;
let from = 0n;
for (let i = 0; i < Number(values.warmup) + Number(values.steps); i++) {
  // Monotonic microseconds (V8's profile clock) from the first timed step: the window of a
  // --cpu-prof profile that holds the timed steps alone (cpuprof-top.mjs --from-us / --to-us).
  if (i === Number(values.warmup)) from = process.hrtime.bigint() / 1000n;
  logCreates = i === Number(values.warmup) + Number(values.steps) - 1;
  const before = webGpuQueueStats(ctx);
  const made = ctx.pool.created;
  const t0 = performance.now();
  scope(() => {
    opt.zeroGrad();
    block.forward(x).backward(dy);
    opt.step();
  });
  const t1 = performance.now();
  await syncWebGpu(ctx);
  const t2 = performance.now();
  const after = webGpuQueueStats(ctx);
  passes = after.passes - before.passes;
  immediate = after.immediate - before.immediate;
  submits = after.submits - before.submits;
  recorded = after.recorded - before.recorded;
  created = ctx.pool.created - made;
  if (i >= Number(values.warmup)) {
    record.push(t1 - t0);
    total.push(t2 - t0);
  }
}
const stat = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return `median ${s[s.length >> 1].toFixed(2)} ms, min ${s[0].toFixed(2)} ms`;
};
console.log(
  `${values.backend} backend, block B ${B} T ${T} C ${C} H ${H}, ${record.length} steps, ${passes} passes a step (${immediate} encoded at once), ${submits} submits, ${recorded} attention calls recorded, ${created} buffers created in the last: record ${stat(record)}; to idle ${stat(total)}`,
);
console.log(`${bindingStats(webGpuQueueStats(ctx))}`);
console.log(`window: --from-us ${from} --to-us ${process.hrtime.bigint() / 1000n}`);
process.exit(0);
