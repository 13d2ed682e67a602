/**
 * FastAttention's CPU-GPU cooperative long context on WebGPU (issue 15 part 3): K/V in host
 * memory streamed to the GPU under a budget smaller than K/V (streamingAttention), beside the
 * resident kernel (the skeleton's FA2 forward with K/V on the GPU) at the same shape. Bundled by
 * build.mjs (dist/bench-stream.mjs); on the H200 h200-stream.sh runs it through .gpu/run.sh.
 *
 *   node bench-stream.mjs [--shape B,H,N,D] [--modes prefill,decode] [--budget-frac 0.25]
 *                         [--budget-mib M] [--repeats 1] [--decode-repeats 5] [--out stream.json]
 *                         [--skip-verify]
 *
 * 1. Verification (outputs poisoned): streamingAttention on small f16 shapes (causal prefill with
 *    GQA and odd N, decode Nq 1) under budgets that force several query and key chunks, against
 *    the float64 reference at KERNELS.md's f16 tolerance; a failure sets the exit code 1.
 * 2. Per mode, f16, q / K / V / o on the host (the 256K shape's q and o are 2 GiB each, more than
 *    the 1 GiB budget, so they stream too; o's read-back is inside the streaming time):
 *    - resident: tiledForwardWebGpu with q, K, V uploaded (upload not timed), in head groups
 *      whose tensors fit one binding (maxStorageBufferBindingSize is 2 GiB - 4 on the H200: at
 *      B 1, H 32, N 256K, D 128 one f16 tensor is 2 GiB, so two groups of 16 heads; their times
 *      add up to the whole problem's);
 *    - streaming: streamingAttention wall time (uploads, kernels, merges, o read back);
 *    - compute alone: the same schedule without the uploads (runStreaming(..., false));
 *    - copy alone: the same writeBuffer calls into two chunk buffers with the same pacing, no
 *      kernels; host-to-device GB/s = bytes uploaded / that time;
 *    - overhead = streaming / resident; hidden fraction of the copy time =
 *      (copy + compute - streaming) / copy, clamped to [0, 1];
 *    - streaming o vs resident o: relative L2 over every 97th row.
 *    Wall times with a queue wait before and after (the streaming time has host work in it, so
 *    the resident one is timed the same way); the first call of each kind at a small N warms the
 *    pipelines up; median of --repeats (default 1 for prefill: ~20-40 s a call at 256K on the
 *    H200's SIMT FA2, and --decode-repeats for decode).
 * JSON (--out) and a table on stdout.
 */
import { writeFileSync } from 'node:fs';
import {
  accuracy,
  resolveAttentionProblem,
  softmaxAttentionReference,
  toleranceFor,
} from '@attnkit/attention';
import { streamingAttention, streamSchedule } from '@attnkit/fast-attention';
import { SOFTMAX_HOOKS, tiledForwardWebGpu } from '@attnkit/skeleton';
import { decodeHalfArray, encodeHalfArray, Rng, Tensor } from '@attnkit/tensor';
import { createWebGpuContext, toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { runStreaming } from '../../packages/fast-attention/src/streaming/stream.js';
import { benchDisabledToggles, benchToggles, median, randomData } from './common.js';

const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const flag = (name: string) => args.includes(`--${name}`);
const [B, H, N, D] = (value('shape') ?? '1,32,262144,128').split(',').map(Number) as [
  number,
  number,
  number,
  number,
];
for (const [name, x] of Object.entries({ B, H, N, D }))
  if (!Number.isSafeInteger(x) || x < 1)
    throw new Error(`--shape: ${name} must be a positive integer, got ${x}`);
const MODES = (value('modes') ?? 'prefill,decode').split(',');
for (const m of MODES)
  if (m !== 'prefill' && m !== 'decode')
    throw new Error(`--modes: expected prefill and/or decode, got ${m}`);
const KV_BYTES = 2 * B * H * N * D * 2;
const BUDGET = value('budget-mib')
  ? Math.round(Number(value('budget-mib')) * 2 ** 20)
  : Math.round(Number(value('budget-frac') ?? 0.25) * KV_BYTES);
const REPEATS = Number(value('repeats') ?? 1);
const DECODE_REPEATS = Number(value('decode-repeats') ?? 5);

const ctx = await createWebGpuContext({
  dawnToggles: benchToggles(),
  disabledDawnToggles: benchDisabledToggles(),
});
console.log(
  `adapter ${JSON.stringify(ctx.adapterInfo)} backend=${ctx.backend} limits maxStorageBufferBindingSize=${ctx.limits.maxStorageBufferBindingSize} maxBufferSize=${ctx.limits.maxBufferSize}`,
);
console.log(
  `shape B ${B} H ${H} N ${N} D ${D} f16; K+V ${(KV_BYTES / 2 ** 30).toFixed(3)} GiB; GPU budget ${(BUDGET / 2 ** 30).toFixed(3)} GiB (${((100 * BUDGET) / KV_BYTES).toFixed(1)}% of K+V)`,
);
const out: Record<string, unknown> = {
  adapter: ctx.adapterInfo,
  limits: ctx.limits,
  config: { B, H, N, D, dtype: 'f16', budgetBytes: BUDGET, kvBytes: KV_BYTES, modes: MODES },
};
const save = (partial: boolean) => {
  if (value('out'))
    writeFileSync(value('out')!, `${JSON.stringify({ ...out, partial }, null, 2)}\n`);
};
let failures = 0;

/** A host f16 tensor of random values (one 2^20-value block repeated with a shift: fast at 10^9 values). */
function hostF16(shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, x) => a * x, 1);
  const block = encodeHalfArray(
    'f16',
    randomData(Math.min(n, 2 ** 20) + 4096, seed),
  ) as Uint16Array;
  const data = new Uint16Array(n);
  const w = block.length - 4096;
  for (let at = 0, i = 0; at < n; at += w, i++) {
    const shift = (i * 131) % 4096;
    data.set(block.subarray(shift, shift + Math.min(w, n - at)), at);
  }
  return Tensor.from(data, shape, 'f16');
}

/** Elements [h0, h1) of dim 1 of a [1, H, ...] host tensor (B = 1: contiguous) or a copy. */
function heads(t: Tensor, h0: number, h1: number): Tensor {
  const [b, h, ...rest] = t.shape as number[];
  const per = rest.reduce((a, x) => a * x, 1);
  const data = t.data() as Uint16Array;
  if (b === 1) return Tensor.from(data.subarray(h0 * per, h1 * per), [1, h1 - h0, ...rest], 'f16');
  const outData = new Uint16Array(b! * (h1 - h0) * per);
  for (let i = 0; i < b!; i++)
    outData.set(data.subarray((i * h! + h0) * per, (i * h! + h1) * per), i * (h1 - h0) * per);
  return Tensor.from(outData, [b!, h1 - h0, ...rest], 'f16');
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  await ctx.sync();
  const t0 = performance.now();
  const v = await fn();
  await ctx.sync();
  return { ms: performance.now() - t0, value: v };
}

/** The resident kernel over head groups whose tensors fit one binding; o (host) and the summed time. */
async function resident(q: Tensor, k: Tensor, v: Tensor, causal: boolean, keep: boolean) {
  const limit = ctx.limits.maxStorageBufferBindingSize;
  const nq = q.shape[2]!;
  let hg = H;
  while (hg > 1 && (H % hg !== 0 || B * hg * Math.max(nq, N) * D * 2 > limit)) hg--;
  let ms = 0;
  const parts: Tensor[] = [];
  for (let h0 = 0; h0 < H; h0 += hg) {
    const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(heads(t, h0, h0 + hg), ctx)) as Tensor[];
    const p = resolveAttentionProblem(gq!, gk!, gv!, causal ? { causal } : {});
    const r = await timed(() =>
      tiledForwardWebGpu(p, SOFTMAX_HOOKS, gq!, gk!, gv!, { tensorCores: false }),
    );
    ms += r.ms;
    if (keep) parts.push(await r.value.o.toCpu());
    for (const t of [gq, gk, gv, r.value.o, r.value.lse!]) t!.dispose();
  }
  return { ms, headGroup: hg, parts };
}

/** The streaming call's uploads alone: the same writeBuffer calls and pacing, no kernels. */
async function copyOnly(
  k: Tensor,
  v: Tensor,
  plan: { hkvGroup: number; queryChunk: number; keyChunk: number },
  nq: number,
  causal: boolean,
) {
  const dev = ctx.device;
  const { hkvGroup: g, queryChunk: Qc, keyChunk: Kc } = plan;
  const bufs = [0, 1].map(() => [
    ctx.createStorageBuffer(g * Kc * D * 2),
    ctx.createStorageBuffer(g * Kc * D * 2),
  ]);
  const kd = k.data() as Uint16Array;
  const vd = v.data() as Uint16Array;
  let bytes = 0;
  const r = await timed(async () => {
    for (let b = 0; b < B; b++)
      for (let h0 = 0; h0 < H; h0 += g)
        for (let q0 = 0; q0 < nq; q0 += Qc) {
          const chunks = streamSchedule(
            { nq, nk: N, left: -1, right: causal ? 0 : -1 },
            q0,
            Math.min(nq, q0 + Qc),
            Kc,
          );
          const done: Promise<unknown>[] = [];
          for (const [i, c] of chunks.entries()) {
            if (i >= 2) await done[i - 2];
            const [kb, vb] = bufs[i % 2]!;
            const kl = c.k1 - c.k0;
            for (let h = 0; h < g; h++) {
              const row = (b * H + h0 + h) * N + c.k0;
              dev.queue.writeBuffer(kb!, h * kl * D * 2, kd, row * D, kl * D);
              dev.queue.writeBuffer(vb!, h * kl * D * 2, vd, row * D, kl * D);
            }
            bytes += 2 * g * kl * D * 2;
            done[i] = dev.queue.onSubmittedWorkDone();
          }
        }
  });
  for (const pair of bufs) for (const b of pair) ctx.pool.release(b);
  return { ms: r.ms, bytes };
}

/** Relative L2 of streaming o against the resident parts over every 97th row. */
function sampledRelL2(o: Tensor, parts: Tensor[], headGroup: number, nq: number): number {
  const a = o.data() as Uint16Array;
  const x = new Float32Array(D);
  const y = new Float32Array(D);
  let num = 0;
  let den = 0;
  for (const [g, part] of parts.entries()) {
    const pd = part.data() as Uint16Array;
    for (let b = 0; b < B; b++)
      for (let h = 0; h < headGroup; h++)
        for (let i = 0; i < nq; i += nq > 97 ? 97 : 1) {
          const ra = ((b * H + g * headGroup + h) * nq + i) * D;
          const rb = ((b * headGroup + h) * nq + i) * D;
          decodeHalfArray('f16', a.subarray(ra, ra + D), x);
          decodeHalfArray('f16', pd.subarray(rb, rb + D), y);
          for (let j = 0; j < D; j++) {
            num += (x[j]! - y[j]!) ** 2;
            den += y[j]! ** 2;
          }
        }
  }
  return Math.sqrt(num / den);
}

async function verify() {
  const rows: unknown[] = [];
  const tol = toleranceFor({ dtype: 'f16' });
  ctx.poisonOutputs = true;
  const cases = [
    { b: 1, hq: 4, hkv: 2, nq: 777, nk: 777, causal: true, budget: 2 ** 20 },
    { b: 2, hq: 4, hkv: 4, nq: 301, nk: 1001, causal: true, budget: 2 ** 20 },
    { b: 1, hq: 8, hkv: 2, nq: 1, nk: 3001, causal: true, budget: 2 ** 19 },
  ];
  for (const [n, c] of cases.entries()) {
    const rng = new Rng(700 + n);
    const q = rng.randn([c.b, c.hq, c.nq, D]).astype('f16');
    const k = rng.randn([c.b, c.hkv, c.nk, D]).astype('f16');
    const v = rng.randn([c.b, c.hkv, c.nk, D]).astype('f16');
    const ref = softmaxAttentionReference(q, k, v, { causal: c.causal });
    const name = JSON.stringify(c);
    try {
      const r = await streamingAttention(q, k, v, {
        gpuBudgetBytes: c.budget,
        causal: c.causal,
        ctx,
      });
      const eo = accuracy(r.o, ref.o);
      const el = accuracy(r.lse, ref.lse as Tensor);
      const ok = eo.relL2 <= tol && el.relL2 <= tol && eo.nonFinite + el.nonFinite === 0;
      if (!ok) failures++;
      console.log(
        `verify ${name}: o relL2 ${eo.relL2.toExponential(2)} lse relL2 ${el.relL2.toExponential(2)} chunks ${r.stats.chunks} groups ${r.stats.groups} ${ok ? 'ok' : 'FAIL'}`,
      );
      rows.push({ ...c, oRelL2: eo.relL2, lseRelL2: el.relL2, ok, plan: r.plan, stats: r.stats });
    } catch (e) {
      failures++;
      console.log(`verify ${name}: ERROR ${(e as Error).stack}`);
      rows.push({ ...c, error: String(e) });
    }
  }
  ctx.poisonOutputs = false;
  return rows;
}

async function measure(mode: 'prefill' | 'decode') {
  const causal = mode === 'prefill';
  const nq = mode === 'prefill' ? N : 1;
  const reps = mode === 'prefill' ? REPEATS : DECODE_REPEATS;
  console.log(`\n=== ${mode}: Nq ${nq}, Nk ${N}${causal ? ', causal' : ''}`);
  // Warm-up at a small N: pipelines compiled, clocks up.
  {
    const wn = Math.min(N, 4096);
    const wq = hostF16([B, H, Math.min(nq, wn), D], 1);
    const wk = hostF16([B, H, wn, D], 2);
    await resident(wq, wk, wk, causal, false);
    await streamingAttention(wq, wk, wk, {
      gpuBudgetBytes: Math.max(BUDGET >> 4, 2 ** 22),
      causal,
      ctx,
    });
  }
  let t = performance.now();
  const q = hostF16([B, H, nq, D], 11);
  const k = hostF16([B, H, N, D], 12);
  const v = hostF16([B, H, N, D], 13);
  console.log(`host data ${((performance.now() - t) / 1e3).toFixed(1)} s`);
  const row: Record<string, unknown> = { mode, B, H, nq, nk: N, D, causal, budgetBytes: BUDGET };
  const res: number[] = [];
  let parts: Tensor[] = [];
  let headGroup = H;
  for (let i = 0; i < reps; i++) {
    const r = await resident(q, k, v, causal, i === 0);
    res.push(r.ms);
    if (i === 0) {
      parts = r.parts;
      headGroup = r.headGroup;
    }
    console.log(`resident ${r.ms.toFixed(1)} ms (head groups of ${r.headGroup})`);
  }
  row.residentMs = median(res);
  row.residentHeadGroup = headGroup;
  save(true);
  const st: number[] = [];
  let last: Awaited<ReturnType<typeof streamingAttention>> | undefined;
  for (let i = 0; i < reps; i++) {
    t = performance.now();
    const r = await timed(() =>
      streamingAttention(q, k, v, { gpuBudgetBytes: BUDGET, causal, ctx }),
    );
    st.push(r.ms);
    last = r.value;
    console.log(
      `streaming ${r.ms.toFixed(1)} ms; plan ${JSON.stringify({ ...r.value.plan, buffers: undefined })}; stats ${JSON.stringify(r.value.stats)}`,
    );
  }
  row.streamMs = median(st);
  row.plan = last!.plan;
  row.stats = last!.stats;
  row.oRelL2VsResident = sampledRelL2(last!.o, parts, headGroup, nq);
  console.log(
    `streaming o vs resident o (every 97th row): relL2 ${(row.oRelL2VsResident as number).toExponential(2)}`,
  );
  if (!((row.oRelL2VsResident as number) <= toleranceFor({ dtype: 'f16' }))) failures++;
  parts = [];
  save(true);
  const co: number[] = [];
  for (let i = 0; i < reps; i++) {
    const r = await timed(() =>
      runStreaming(q, k, v, { gpuBudgetBytes: BUDGET, causal, ctx }, false),
    );
    co.push(r.ms);
    console.log(`compute alone ${r.ms.toFixed(1)} ms`);
  }
  row.computeOnlyMs = median(co);
  const cp: number[] = [];
  let bytes = 0;
  for (let i = 0; i < Math.max(reps, 3); i++) {
    const r = await copyOnly(k, v, last!.plan, nq, causal);
    cp.push(r.ms);
    bytes = r.bytes;
    console.log(`copy alone ${r.ms.toFixed(1)} ms, ${(r.bytes / 2 ** 30).toFixed(2)} GiB`);
  }
  row.copyOnlyMs = median(cp);
  row.uploadedBytes = bytes;
  row.h2dGBps = bytes / 1e9 / ((row.copyOnlyMs as number) / 1e3);
  row.inRunGBps = bytes / 1e9 / ((row.streamMs as number) / 1e3);
  row.overhead = (row.streamMs as number) / (row.residentMs as number);
  const hidden =
    ((row.copyOnlyMs as number) + (row.computeOnlyMs as number) - (row.streamMs as number)) /
    (row.copyOnlyMs as number);
  row.hiddenFraction = Math.min(1, Math.max(0, hidden));
  row.hiddenFractionRaw = hidden;
  return row;
}

async function main(c: WebGpuContext) {
  if (!flag('skip-verify')) {
    out.verify = await verify();
    console.log(`verification failures: ${failures}`);
    save(true);
  }
  const rows: Record<string, unknown>[] = [];
  out.table = rows;
  for (const mode of MODES) {
    try {
      rows.push(await measure(mode as 'prefill' | 'decode'));
    } catch (e) {
      failures++;
      console.log(`${mode}: ERROR ${(e as Error).stack}`);
      rows.push({ mode, error: String(e) });
    }
    save(true);
  }
  const f = (x: unknown, d = 1) => (typeof x === 'number' ? x.toFixed(d) : '-');
  const table = [
    '| mode | N | budget MiB | resident ms | streaming ms | overhead | compute alone ms | copy alone ms | H2D GB/s | hidden | uploaded GiB | o relL2 vs resident |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${r.mode} | ${N} | ${f(BUDGET / 2 ** 20, 0)} | ${f(r.residentMs)} | ${f(r.streamMs)} | ${f(r.overhead, 3)}x | ${f(r.computeOnlyMs)} | ${f(r.copyOnlyMs)} | ${f(r.h2dGBps, 2)} | ${f(typeof r.hiddenFraction === 'number' ? 100 * r.hiddenFraction : undefined)}% | ${f(typeof r.uploadedBytes === 'number' ? r.uploadedBytes / 2 ** 30 : undefined, 2)} | ${typeof r.oRelL2VsResident === 'number' ? r.oRelL2VsResident.toExponential(2) : '-'} |`,
    ),
  ].join('\n');
  console.log(`\n${table}`);
  out.markdown = table;
  out.failures = failures;
  save(false);
  if (value('out')) writeFileSync(value('out')!.replace(/\.json$/, '.md'), `${table}\n`);
  console.log(`failures: ${failures}`);
  c.destroy();
  process.exit(failures > 0 ? 1 : 0);
}

await main(ctx);
