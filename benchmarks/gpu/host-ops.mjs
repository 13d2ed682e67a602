// Where a TransformerBlock step's host time goes, pass by pass, without a GPU: Dawn's null
// backend (with f16 and subgroup matrices declared, so the f16 tensor-core path is encoded)
// runs an f16 step 30 times and prints the last one's timeline: the host time at each pipeline
// set (one per pass), each submit, the end of the forward and of the recording.
//
//   pnpm build   (tensor, webgpu, nn and their dependencies)
//   node benchmarks/gpu/host-ops.mjs [B,T,C,H]   (default 2,1024,768,12: the null backend's
//                                                 memory cap refuses B 8)
//
// Session 15 found the rope op's table key this way (BENCHMARKS.md, session 15).
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { nullWebGpuContext } from './null-context.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
const { toWebGpu } = await dist('webgpu');
const { AdamW, TransformerBlock, registerWebGpuKernels, scope, syncWebGpu } = await dist('nn');
const { Rng } = await dist('tensor');
const ctx = await nullWebGpuContext({ tensorCores: true });
const { device } = ctx;
registerWebGpuKernels(ctx);
let log = null;
const proto = Object.getPrototypeOf(device.createCommandEncoder().beginComputePass());
const setPipeline = proto.setPipeline;
proto.setPipeline = function (p) {
  log?.push([performance.now(), p.label]);
  return setPipeline.call(this, p);
};
const qproto = Object.getPrototypeOf(device.queue);
const submit = qproto.submit;
qproto.submit = function (b) {
  const t = performance.now();
  const r = submit.call(this, b);
  log?.push([t, `SUBMIT ${(performance.now() - t).toFixed(3)}`]);
  return r;
};
const [B, T, C, H] = (process.argv[2] ?? '2,1024,768,12').split(',').map(Number);
const block = new TransformerBlock(C, H, { rng: new Rng(1) });
for (const p of block.parameters()) p.data = toWebGpu(p.data.astype('f16'), ctx);
const opt = new AdamW(block.parameters(), { lr: 1e-4 });
const rng = new Rng(2);
const x = toWebGpu(rng.randn([B, T, C], 'f32').astype('f16'), ctx);
const dy = toWebGpu(rng.randn([B, T, C], 'f32').astype('f16'), ctx);
const runs = [];
for (let i = 0; i < 30; i++) {
  log = [];
  const t0 = performance.now();
  log.push([t0, 'START']);
  scope(() => {
    opt.zeroGrad();
    const y = block.forward(x);
    log.push([performance.now(), 'FORWARD DONE']);
    y.backward(dy);
    opt.step();
  });
  log.push([performance.now(), 'RECORDED']);
  await syncWebGpu(ctx);
  runs.push(log);
}
// Medians over the last 20 steps: the forward's and the whole recording's host time, and the
// host time before each pass's pipeline set, summed per label.
const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const tail = runs.slice(-20);
const at = (log, label) => log.find(([, l]) => l === label)[0] - log[0][0];
console.log(
  `steps ${tail.length}: forward recorded in ${med(tail.map((l) => at(l, 'FORWARD DONE'))).toFixed(3)} ms, whole step ${med(tail.map((l) => at(l, 'RECORDED'))).toFixed(3)} ms (medians)`,
);
const per = new Map();
for (const log of tail) {
  const sums = new Map();
  for (let i = 1; i < log.length; i++) {
    const label = log[i][1].startsWith('SUBMIT') ? 'SUBMIT' : log[i][1];
    sums.set(label, (sums.get(label) ?? 0) + (log[i][0] - log[i - 1][0]));
  }
  for (const [label, v] of sums) per.set(label, [...(per.get(label) ?? []), v]);
}
for (const [label, v] of [...per].sort((a, b) => med(b[1]) - med(a[1])).slice(0, 12))
  console.log(
    `${med(v).toFixed(3).padStart(8)} ms  ${label} (median per step, host time before it)`,
  );
console.log('last step:');
const last = runs.at(-1);
const t0 = last[0][0];
let prev = t0;
for (const [t, l] of last) {
  console.log((t - t0).toFixed(3).padStart(8), `+${(t - prev).toFixed(3)}`.padStart(8), l);
  prev = t;
}
process.exit(0);
