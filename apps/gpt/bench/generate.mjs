// Generation throughput with the KV cache vs recomputing the whole prefix every token (issue 17
// item 5) on the cpu: at each context of --contexts, a prompt of (context - tokens) ids, then
// greedy tokens; tokens/s counts the tokens after the first (the prefill is reported apart).
// The model is --ckpt's, or with --config a fresh one of that preset whose position table is
// sized to the longest context (weights do not change the time; a trained character model's
// 128-token table could not hold 1K). Prints a table and writes JSON.
//
//   node apps/gpt/bench/generate.mjs [--backend native|ts] [--config small | --ckpt FILE]
//                                    [--attention flash|sigmoid|gla] [--contexts 1024,8192]
//                                    [--gen-tokens 32,4] [--out gen.json] [--gather]
//
// --attention: the fresh model's GptConfig.attention (default flash): sigmoid decodes from the
// same paged KV cache, gla from each layer's recurrent state (no cache that grows).
//
// --gather: the cached path as it was before 2026-12-04, for an A/B in one build: the paged
// cache gathers each row's pages and permutes them to [B, Hkv, L, D] for the layer's attention
// (PagedKvCache.update) instead of attending the pages in place (PagedKvCache.attend).
//
// (after `npx -y pnpm@10.34.8 exec turbo run build --filter @attnkit/gpt-app...`)
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Gpt, loadCheckpoint, PagedKvCache, presetConfig } from '@attnkit/gpt';
import { deviceBackendOf, setDeviceBackend } from '@attnkit/nn';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'native' },
    config: { type: 'string' },
    ckpt: { type: 'string' },
    contexts: { type: 'string' },
    'gen-tokens': { type: 'string', default: '32,4' },
    out: { type: 'string' },
    gather: { type: 'boolean', default: false },
    attention: { type: 'string' },
  },
});
if (values.ckpt && values.attention)
  throw new Error('--attention: the checkpoint fixes the attention; give --config instead');
// The layer calls attend when the hook has it; without it, update (gather + permute).
if (values.gather) PagedKvCache.prototype.attend = undefined;
const ints = (s) => s.split(',').map(Number);
setDeviceBackend('cpu', values.backend);
let model;
if (values.ckpt) ({ model } = await loadCheckpoint(new Uint8Array(readFileSync(values.ckpt))));
const contexts = ints(values.contexts ?? (model ? String(model.config.blockSize) : '1024,8192'));
if (!model) {
  const config = presetConfig(values.config ?? 'small', 65);
  model = new Gpt(
    {
      ...config,
      blockSize: Math.max(...contexts),
      ...(values.attention ? { attention: values.attention } : {}),
    },
    { seed: 0 },
  );
}
const [cachedTokens, recomputeTokens] = ints(values['gen-tokens']);
const c = model.config;

/** Greedy generation of n tokens after a prompt filling the context; times of each token. */
async function time(context, cache, n) {
  let s = context;
  const prompt = Array.from({ length: context - n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % c.vocabSize;
  });
  const stamps = [];
  const t0 = performance.now();
  await model.generate(prompt, {
    maxNewTokens: n,
    temperature: 0,
    cache,
    onToken: () => stamps.push(performance.now()),
  });
  return {
    tokens: n,
    firstTokenMs: stamps[0] - t0,
    tokensPerS: (n - 1) / ((stamps.at(-1) - stamps[0]) / 1e3),
  };
}

await model.generate([0], { maxNewTokens: 2, temperature: 0 }); // load the engine, warm up
const rows = [];
for (const context of contexts) {
  const cached = await time(context, true, cachedTokens);
  const recompute = await time(context, false, recomputeTokens);
  rows.push({ context, cached, recompute, speedup: cached.tokensPerS / recompute.tokensPerS });
}
const backend = deviceBackendOf('cpu');
console.log(
  `backend ${backend}, ${model.numParameters()} parameters (${c.nLayer} layers, ${c.nHead} heads, ${c.nEmbd} wide, position table ${c.blockSize}, ${c.attention} attention), greedy, batch 1`,
);
console.log('| context | KV cache tok/s | recompute tok/s | speed-up | prefill + 1st token ms |');
console.log('| ---: | ---: | ---: | ---: | ---: |');
for (const r of rows)
  console.log(
    `| ${r.context} | ${r.cached.tokensPerS.toFixed(1)} | ${r.recompute.tokensPerS.toFixed(2)} | ${r.speedup.toFixed(1)}x | ${r.cached.firstTokenMs.toFixed(0)} |`,
  );
const result = {
  date: new Date().toISOString(),
  command: `node apps/gpt/bench/generate.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  cachedPath: values.gather
    ? 'gather + permute (PagedKvCache.update)'
    : 'paged in place (PagedKvCache.attend)',
  backend,
  config: c,
  parameters: model.numParameters(),
  rows,
};
if (values.out) writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
