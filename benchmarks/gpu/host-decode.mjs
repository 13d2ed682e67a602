// The host's share of GPT decoding on WebGPU, without a GPU: Dawn's null backend validates and
// encodes every pass and runs none, so a decoded token's wall time here is what JS, nn's queue
// and Dawn's API cost (on the H200 a token was host-bound: 3.8 ms of GPU time in 18-37 ms).
// Use it to measure host-side changes (fewer passes, cheaper encoding) without device time.
//
//   pnpm build   (tensor, webgpu, nn, gpt and their dependencies)
//   node benchmarks/gpu/host-decode.mjs [--layers 12] [--tokens 200] [--warmup 50] [--reps 3]
//                                       [--cache-ab] [--option-ab NAME]
//
// --cache-ab: the reps alternate the paged device cache (DevicePagedKvCache, the default) and
// DeviceKvCache (a concat per token).
// --option-ab NAME: the reps alternate nn's kernel options as default and with NAME false
// (registerWebGpuKernels' boolean options, e.g. sharePasses, reuseBindings).
//
// Prints the median and minimum ms per decoded token after --warmup tokens, and the queued
// passes per token. The model is GPT-2 small's depth (12 layers, 12 heads) at width 96 and a
// 65-token vocabulary: the pass count depends on depth, not width. Logits on the null backend
// are meaningless (greedy decoding picks a fixed token); only the time is.
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { bindingStats, nullWebGpuContext } from './null-context.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
const { DeviceKvCache, Gpt } = await dist('gpt');
const { registerWebGpuKernels, webGpuQueueStats } = await dist('nn');

const { values } = parseArgs({
  options: {
    layers: { type: 'string', default: '12' },
    tokens: { type: 'string', default: '200' },
    warmup: { type: 'string', default: '50' },
    reps: { type: 'string', default: '3' },
    'cache-ab': { type: 'boolean', default: false },
    'option-ab': { type: 'string' },
  },
});
const layers = Number(values.layers);
const tokens = Number(values.tokens);
const warmup = Number(values.warmup);

const ctx = await nullWebGpuContext();
registerWebGpuKernels(ctx);

const config = { nLayer: layers, nHead: 12, nKvHead: 12, nEmbd: 96, blockSize: 512, vocabSize: 65 };
const model = new Gpt(config, { seed: 1 }).toWebGpu(ctx);
const prompt = Array.from({ length: 100 }, (_, i) => i % 65);
const paged = model.newKvCaches;
for (let rep = 0; rep < Number(values.reps); rep++) {
  const concat = values['cache-ab'] && rep % 2 === 1;
  const off = values['option-ab'] !== undefined && rep % 2 === 1;
  if (values['option-ab'] !== undefined)
    registerWebGpuKernels(ctx, off ? { [values['option-ab']]: false } : {});
  model.newKvCaches = concat
    ? (batch = 1) =>
        paged.call(model, batch).map((c) => {
          c.dispose();
          return new DeviceKvCache();
        })
    : paged;
  const stamps = [];
  let cpu0;
  let passes = 0;
  let before = 0;
  await model.generate(prompt, {
    maxNewTokens: tokens,
    temperature: 0,
    onToken: () => {
      stamps.push(performance.now());
      // Passes queued from the warm-up's last token on.
      if (stamps.length === warmup + 1) {
        before = webGpuQueueStats(ctx).passes;
        cpu0 = process.cpuUsage();
      }
      passes = webGpuQueueStats(ctx).passes - before;
    },
  });
  // Greedy decoding is pipelined (token t is read back while t + 1 is recorded), so onToken
  // comes in pairs at times: the mean over the window, and the median of 10-token spans.
  const per = [];
  for (let i = warmup + 10; i < stamps.length; i += 10) per.push((stamps[i] - stamps[i - 10]) / 10);
  per.sort((a, b) => a - b);
  const n = stamps.length - 1 - warmup;
  if (per.length === 0)
    throw new Error(`--tokens ${tokens}: expected at least --warmup + 11 (${warmup + 11})`);
  const mean = (stamps.at(-1) - stamps[warmup]) / n;
  // The process's CPU time (all threads, user + system) a token: less sensitive than wall
  // time to a shared VM's stolen cycles.
  const used = process.cpuUsage(cpu0);
  const cpu = (used.user + used.system) / 1000 / n;
  console.log(`  ${bindingStats(webGpuQueueStats(ctx))}`);
  console.log(
    `null backend, ${concat ? 'DeviceKvCache' : 'paged'}${off ? `, ${values['option-ab']} false` : ''}, ${layers} layers, ${n} tokens: mean ${mean.toFixed(2)} ms, median of 10-token spans ${per[per.length >> 1].toFixed(2)}, min ${per[0].toFixed(2)} ms a token, cpu ${cpu.toFixed(2)} ms a token, ${(passes / n).toFixed(1)} queued passes a token`,
  );
}
process.exit(0);
