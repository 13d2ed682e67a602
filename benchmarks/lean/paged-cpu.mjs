// LeanAttention decode through a paged KV cache against contiguous K/V on the CPU (native
// engine): what reading K and V through a block table costs. Hq 32, D 128, Nq 1, causal, f32.
// Contiguous: BHND [B, Hkv, Nk, D] (what cpu.mjs times) and THD [B x Nk, Hkv, D] (a token's
// heads together, as in a page; cu_seqlens); paged: pools [numPages, pageSize, Hkv, D] with each sequence's
// pages in a shuffled order (a cache after many appends and frees), page sizes 16 and 64.
// Every variant is checked against the BHND result first (same keys, so the same o within f32
// rounding), then timed: best and median of --reps calls, 50 ms apart, in interleaved rounds.
//
//   pnpm build && node benchmarks/lean/paged-cpu.mjs [--nk 8192,32768] [--batch 1,8] [--hkv 32,8]
//       [--partition streamK] [--reps 7] [--out benchmarks/lean/results/<date>-paged.json]
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
const { Rng, Tensor } = await dist('tensor');
const { leanAttention } = await dist('lean-attention');

const { values: a } = parseArgs({
  options: {
    nk: { type: 'string' },
    batch: { type: 'string' },
    hkv: { type: 'string' },
    partition: { type: 'string' },
    reps: { type: 'string' },
    out: { type: 'string' },
  },
});
const list = (s, dflt) => (s ?? dflt).split(',').map(Number);
const NKS = list(a.nk, '8192,32768');
const BATCHES = list(a.batch, '1,8');
const HKVS = list(a.hkv, '32,8');
const PARTITION = a.partition ?? 'streamK';
const REPS = Number(a.reps ?? 7);
const HQ = 32;
const D = 128;
const PAGES = [16, 64];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((x, y) => x - y)[xs.length >> 1];

/**
 * Pages handed out in a shuffled order (a cache after many appends and frees): sequence b's
 * page p is pool page order[b * perSeq + p]; K and V share it (one block table).
 */
function shuffledPages(rng, numPages) {
  const order = Int32Array.from({ length: numPages }, (_, i) => i);
  for (let i = numPages - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** One tensor's numbers in every layout: BHND, THD and a page pool in `order`. */
function layouts(rng, B, hkv, nk, pageSize, order) {
  const bhnd = new Float32Array(B * hkv * nk * D);
  const block = rng.randn([1 << 16]).data();
  for (let i = 0; i < bhnd.length; i++)
    bhnd[i] = block[(i * 7) % block.length] + ((i >> 16) % 5) * 0.01;
  const thd = new Float32Array(bhnd.length);
  const perSeq = Math.ceil(nk / pageSize);
  const numPages = B * perSeq;
  const pool = new Float32Array(numPages * pageSize * hkv * D);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < nk; t++)
      for (let h = 0; h < hkv; h++) {
        const src = ((b * hkv + h) * nk + t) * D;
        thd.set(bhnd.subarray(src, src + D), ((b * nk + t) * hkv + h) * D);
        const page = order[b * perSeq + Math.floor(t / pageSize)];
        pool.set(bhnd.subarray(src, src + D), ((page * pageSize + (t % pageSize)) * hkv + h) * D);
      }
  return {
    bhnd: Tensor.from(bhnd, [B, hkv, nk, D]),
    thd: Tensor.from(thd, [B * nk, hkv, D]),
    pool: Tensor.from(pool, [numPages, pageSize, hkv, D]),
    blockTable: order,
    lengths: new Int32Array(B).fill(nk),
  };
}

const rows = [];
const rng = new Rng(20261206);
// Every layout of K and V for two page sizes lives at once (6 copies of K + V): keep them small.
const MAX_KV_BYTES = 2 ** 30;
for (const B of BATCHES)
  for (const hkv of HKVS)
    for (const nk of NKS) {
      if (2 * B * hkv * nk * D * 4 > MAX_KV_BYTES) {
        console.log(
          `B${B} Hkv${hkv} Nk${nk}: K + V past ${MAX_KV_BYTES / 2 ** 30} GiB, skipped (memory)`,
        );
        continue;
      }
      const q = rng.randn([B, HQ, 1, D]);
      // THD: q [B, Hq, D] (one token a sequence; the same order as BHND's [B, Hq, 1, D]).
      const qt = q.reshape([B, HQ, D]);
      const cuQ = Int32Array.from({ length: B + 1 }, (_, i) => i);
      const cuK = Int32Array.from({ length: B + 1 }, (_, i) => i * nk);
      const base = { causal: true, backend: 'native', partition: PARTITION };
      const variants = [];
      // Each page size draws its own keys (its pools and their BHND twin hold the same numbers);
      // the contiguous rows use the first page size's.
      for (const pageSize of PAGES) {
        const order = shuffledPages(rng, B * Math.ceil(nk / pageSize));
        const k = layouts(rng, B, hkv, nk, pageSize, order);
        const v = layouts(rng, B, hkv, nk, pageSize, order);
        if (variants.length === 0) {
          variants.push({
            name: 'contiguous BHND',
            k,
            v,
            run: () => leanAttention(q, k.bhnd, v.bhnd, base),
          });
          variants.push({
            name: 'contiguous THD',
            k,
            v,
            run: () =>
              leanAttention(qt, k.thd, v.thd, {
                ...base,
                layout: 'THD',
                cuSeqlensQ: cuQ,
                cuSeqlensK: cuK,
              }),
          });
        }
        variants.push({
          name: `paged ${pageSize}`,
          k,
          v,
          run: () =>
            leanAttention(q, k.pool, v.pool, {
              ...base,
              paged: { pageSize, blockTable: k.blockTable, lengths: k.lengths },
            }),
        });
      }
      // Check: each variant's o against the contiguous BHND call over the same keys.
      const check = {};
      for (const vt of variants) {
        const r = await vt.run();
        const o = r.o.toFloat32Array(); // THD's [B, Hq, D] is BHND's [B, Hq, 1, D] element order
        const ref = (await leanAttention(q, vt.k.bhnd, vt.v.bhnd, base)).o.toFloat32Array();
        let worst = 0;
        for (let i = 0; i < o.length; i++) worst = Math.max(worst, Math.abs(o[i] - ref[i]));
        check[vt.name] = worst;
        if (!(worst < 1e-5)) throw new Error(`${vt.name}: o differs from contiguous by ${worst}`);
      }
      const times = Object.fromEntries(variants.map((vt) => [vt.name, []]));
      for (let r = 0; r < REPS; r++)
        for (const vt of variants) {
          await sleep(50);
          const t0 = performance.now();
          await vt.run();
          times[vt.name].push(performance.now() - t0);
        }
      const bytes = 2 * B * hkv * nk * D * 4;
      const row = {
        B,
        hq: HQ,
        hkv,
        nk,
        d: D,
        partition: PARTITION,
        bytes,
        check,
        load: loadavg()[0],
      };
      console.log(
        `B${B} Hq${HQ} Hkv${hkv} Nk${nk} ${PARTITION} (K+V ${(bytes / 2 ** 20).toFixed(0)} MiB)`,
      );
      for (const vt of variants) {
        const best = Math.min(...times[vt.name]);
        row[vt.name] = {
          best_ms: best,
          median_ms: median(times[vt.name]),
          gbps: bytes / best / 1e6,
        };
        console.log(
          `  ${vt.name.padEnd(16)} ${best.toFixed(2).padStart(8)} ms (median ${median(times[vt.name]).toFixed(2)})  ${(bytes / best / 1e6).toFixed(1)} GB/s  ${(best / row['contiguous BHND'].best_ms).toFixed(2)}x BHND's time  (check ${check[vt.name].toExponential(1)})`,
        );
      }
      rows.push(row);
    }

console.log(
  '\n| B | Hkv | Nk | contiguous BHND ms | contiguous THD ms | paged 16 ms | paged 64 ms | paged 16 / BHND | paged 64 / BHND |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  const f = (n) => r[n].best_ms.toFixed(2);
  const x = (n) => (r[n].best_ms / r['contiguous BHND'].best_ms).toFixed(2);
  console.log(
    `| ${r.B} | ${r.hkv} | ${r.nk} | ${f('contiguous BHND')} | ${f('contiguous THD')} | ${f('paged 16')} | ${f('paged 64')} | ${x('paged 16')}x | ${x('paged 64')}x |`,
  );
}
if (a.out) {
  mkdirSync(dirname(a.out), { recursive: true });
  writeFileSync(
    a.out,
    JSON.stringify({ date: new Date().toISOString(), reps: REPS, rows }, null, 1),
  );
  console.log(`wrote ${a.out}`);
}
