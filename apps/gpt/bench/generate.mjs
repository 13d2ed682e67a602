// Generation throughput with the paged KV cache vs recomputing the whole context every token
// (issue 17 item 5, at the scale the ts backend allows): one checkpoint, the same prompt,
// greedy, tokens/s of each path; prints a table and writes JSON.
//
//   node apps/gpt/bench/generate.mjs --ckpt tiny.safetensors [--tokens 60] [--out gen.json]
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadCheckpoint } from '@attnkit/gpt';

const { values } = parseArgs({
  options: { ckpt: { type: 'string' }, tokens: { type: 'string' }, out: { type: 'string' } },
});
if (!values.ckpt) {
  console.error(
    'usage: node apps/gpt/bench/generate.mjs --ckpt FILE [--tokens N] [--out file.json]',
  );
  process.exit(2);
}
const { model, tokenizer } = await loadCheckpoint(new Uint8Array(readFileSync(values.ckpt)));
const c = model.config;
// New tokens that, with a one-token prompt, fill the context without passing blockSize.
const tokens = Number(values.tokens ?? c.blockSize - 1);
const prompt = [0];
const rows = [];
for (const cache of [true, false]) {
  model.generate(prompt, { maxNewTokens: 4, temperature: 0, cache }); // warm-up
  const t0 = performance.now();
  const out = model.generate(prompt, { maxNewTokens: tokens, temperature: 0, cache });
  const seconds = (performance.now() - t0) / 1000;
  rows.push({
    path: cache ? 'paged KV cache' : 'recompute',
    tokens: out.length,
    seconds,
    tokensPerSecond: out.length / seconds,
    text: tokenizer.decode(out),
  });
}
const [cached, plain] = rows;
console.log(
  `backend ts, ${model.numParameters()} parameters, context up to ${tokens + 1} of ${c.blockSize}`,
);
console.log('path            tokens  seconds  tokens/s');
for (const r of rows)
  console.log(
    `${r.path.padEnd(16)}${String(r.tokens).padStart(6)}  ${r.seconds.toFixed(3).padStart(7)}  ${r.tokensPerSecond.toFixed(1).padStart(8)}`,
  );
console.log(
  `speed-up ${(cached.tokensPerSecond / plain.tokensPerSecond).toFixed(2)}x; same text: ${cached.text === plain.text}`,
);
const result = {
  backend: 'ts',
  config: c,
  parameters: model.numParameters(),
  rows,
  speedup: cached.tokensPerSecond / plain.tokensPerSecond,
};
if (values.out) writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
