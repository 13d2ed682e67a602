// Decode (Nq = 1 new token, bottom-right causal: every key visible) on the native engine for a
// softmax family (flashAttention) and a pointwise one (sigmoidAttention: FlashSigmoid, no row
// statistics), same shapes and buffers, interleaved: time per call (median of `reps`) and the
// effective bandwidth (bytes of K and V read / time, f32). Until 2026-12-05 the engine's decode
// path (flash_decode.h: GQA heads together, keys in the lanes) took softmax only, and sigmoid
// decode ran the general forward, whose 64-row query tile computes 64 lanes for 1 live row.
//
//   pnpm build && node benchmarks/lean/pointwise-decode.mjs [--reps 9] [--out FILE.json]
//   ATTNKIT_NATIVE_ADDON=other.node node benchmarks/lean/pointwise-decode.mjs   (an A/B build)
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
const { Rng } = await dist('tensor');
const { flashAttention } = await dist('flash-attention');
const { sigmoidAttention } = await dist('sigmoid-attention');
const { loadNative } = await dist('native');

const { values: a } = parseArgs({
  options: { reps: { type: 'string' }, out: { type: 'string' } },
});
const REPS = Number(a.reps ?? 9);
const engine = loadNative();
if (!engine) throw new Error('the native addon did not load');
console.log(
  `native engine: ${engine.threads} threads, attention.forward ISA ${engine.ops()['attention.forward'].chosen}`,
);

const median = (xs) => [...xs].sort((x, y) => x - y)[xs.length >> 1];
const rows = [];
const rng = new Rng(1);
for (const [batch, hkv, nk] of [
  [1, 32, 8192],
  [1, 8, 8192],
  [1, 8, 32768],
  [8, 8, 8192],
]) {
  const hq = 32;
  const d = 128;
  const q = rng.randn([batch, hq, 1, d], 'f32');
  const k = rng.randn([batch, hkv, nk, d], 'f32');
  const v = rng.randn([batch, hkv, nk, d], 'f32');
  const opts = { causal: true, backend: 'native' };
  const fns = {
    softmax: () => flashAttention(q, k, v, opts),
    sigmoid: () => sigmoidAttention(q, k, v, opts),
  };
  const ms = { softmax: [], sigmoid: [] };
  for (const f of Object.values(fns)) await f();
  for (let r = 0; r < REPS; r++) {
    const order = r % 2 ? ['sigmoid', 'softmax'] : ['softmax', 'sigmoid'];
    for (const name of order) {
      await setTimeout(20);
      const t0 = process.hrtime.bigint();
      await fns[name]();
      ms[name].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  const bytes = 2 * batch * hkv * nk * d * 4;
  const row = { batch, hq, hkv, nk, d, bytes };
  for (const name of ['softmax', 'sigmoid']) {
    const m = median(ms[name]);
    row[name] = {
      medianMs: m,
      minMs: Math.min(...ms[name]),
      gbPerS: bytes / m / 1e6,
      ms: ms[name],
    };
  }
  rows.push(row);
  console.log(
    `B ${batch} Hq ${hq} Hkv ${hkv} Nk ${nk}: softmax ${row.softmax.medianMs.toFixed(2)} ms (${row.softmax.gbPerS.toFixed(1)} GB/s), sigmoid ${row.sigmoid.medianMs.toFixed(2)} ms (${row.sigmoid.gbPerS.toFixed(1)} GB/s), sigmoid / softmax time ${(row.sigmoid.medianMs / row.softmax.medianMs).toFixed(2)}`,
  );
}
if (a.out)
  writeFileSync(
    a.out,
    JSON.stringify(
      { date: new Date().toISOString(), threads: engine.threads, reps: REPS, rows },
      null,
      1,
    ),
  );
