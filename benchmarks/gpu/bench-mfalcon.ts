/**
 * M-FALCON cached candidate scoring (issue 10 item 4): one hstuCachedAttention call scoring
 * every candidate of a user against the cached history, beside scoring the candidates one by
 * one, on one backend. Bundled with build.mjs (dist/bench-mfalcon.mjs): the same file runs on
 * the CPU (`--backend native` with ATTNKIT_NATIVE_ADDON pointing at the addon, or `ts`) and on
 * the H200 (`--backend webgpu`, from .gpu/ via run.sh).
 *
 *   node bench-mfalcon.mjs [--backend webgpu|native|ts] [--history 2048] [--candidates 512]
 *       [--heads 4] [--dim 128] [--repeats 5] [--nocache-sample 8] [--out mfalcon.json]
 *
 * Contenders, all f32, alpha 1/D, maxSeqLen = history + candidates:
 *  - batched:   one call, deltaQ = the C candidates' queries, k/v = history + all C candidates
 *               (numTargets = C: each candidate sees the history and itself only).
 *  - one-by-one (cached): C calls, each one candidate's query against the cached history's k, v
 *               plus its own k, v written into the cache's next slot (a real KV cache's append:
 *               H (D + Dv) floats per call; on webgpu a queue.writeBuffer, no readback between
 *               calls, one wait at the end). The same FLOPs as batched: the difference is what
 *               batching buys.
 *  - one-by-one (no cache): the model without M-FALCON's cache recomputes the whole sequence
 *               (history + that candidate, every row) per candidate: timed on `--nocache-sample`
 *               candidates and scaled to C (said so in the output).
 * Timing: wall clock from the first call to the results being ready (webgpu: queue drained),
 * after a warm-up, median of the repeats. Correctness first: every contender's outputs for a
 * few candidates equal the batched call's, and the batched call equals the float64 reference
 * (hstuCachedReference) on a small problem; the run stops on a mismatch.
 */
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { accuracy, hstuCachedReference, toleranceFor } from '@attnkit/attention';
import { hstuAttention, hstuCachedAttention } from '@attnkit/hstu-attention';
import { type CpuStorage, Tensor } from '@attnkit/tensor';
import {
  createWebGpuContext,
  toWebGpu,
  type WebGpuContext,
  webGpuStorageOf,
} from '@attnkit/webgpu';
import { benchDisabledToggles, benchToggles, median, randomData } from './common.js';

const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const num = (name: string, dflt: number) => Number(value(name) ?? dflt);
const BACKEND = (value('backend') ?? 'webgpu') as 'webgpu' | 'native' | 'ts';
const NH = num('history', 2048);
const C = num('candidates', 512);
const H = num('heads', 4);
const D = num('dim', 128);
const REPEATS = num('repeats', 5);
const SAMPLE = Math.min(C, num('nocache-sample', 8));
const ALPHA = 1 / D;
const N = NH + C;

const ctx: WebGpuContext | undefined =
  BACKEND === 'webgpu'
    ? await createWebGpuContext({
        dawnToggles: benchToggles(),
        disabledDawnToggles: benchDisabledToggles(),
      })
    : undefined;
const dev = (t: Tensor) => (ctx ? toWebGpu(t, ctx) : t);
const host = async (t: Tensor) => (t.device === 'cpu' ? t : t.toCpu());
const done = async () => ctx?.sync();
const data = (n: number, seed: number) => randomData(n, seed);

// The user's sequence: history then candidates, q/k/v of every token (what the model's
// projections made), rows of H x D.
const row = H * D;
const Q = data(N * row, 11);
const K = data(N * row, 12);
const Vv = data(N * row, 13);
const candQ = Q.slice(NH * row);

/** Correctness on a small problem: batched vs float64, one-by-one vs batched. */
async function check(): Promise<void> {
  const nh = 45;
  const c = 9;
  const q = Tensor.from(data((nh + c) * 2 * 16, 1), [nh + c, 2, 16]);
  const k = Tensor.from(data((nh + c) * 2 * 16, 2), [nh + c, 2, 16]);
  const v = Tensor.from(data((nh + c) * 2 * 16, 3), [nh + c, 2, 16]);
  const dq = Tensor.from(q.toFloat32Array().slice(nh * 32), [c, 2, 16]);
  const o = {
    seqOffsets: [0, nh + c],
    deltaOffsets: [0, c],
    maxSeqLen: nh + c,
    alpha: 0.3,
  };
  const inputs = [dq, k, v].map(dev) as [Tensor, Tensor, Tensor];
  const out = (await hstuCachedAttention(...inputs, { ...o, backend: BACKEND })).o;
  const got = await host(out);
  for (const t of [...inputs, out]) if (t.device !== 'cpu') t.dispose();
  const e = accuracy(got, hstuCachedReference(dq, k, v, o).o).relL2;
  if (!(e <= toleranceFor({ dtype: 'f32' }))) throw new Error(`batched vs float64: rel_l2 ${e}`);
  console.log(`check batched ${BACKEND} vs float64: rel_l2 ${e.toExponential(2)}`);
}

async function main() {
  await check();
  const seq = { seqOffsets: [0, N], maxSeqLen: N, alpha: ALPHA, backend: BACKEND };
  // Batched: one call.
  const bq = dev(Tensor.from(candQ, [C, H, D]));
  const bk = dev(Tensor.from(K, [N, H, D]));
  const bv = dev(Tensor.from(Vv, [N, H, D]));
  const batched = async () => {
    const { o } = await hstuCachedAttention(bq, bk, bv, { ...seq, deltaOffsets: [0, C] });
    await done();
    return o;
  };
  // One by one with the cache: a [NH + 1] k/v cache whose last slot takes each candidate.
  const ck = dev(Tensor.from(K.slice(0, (NH + 1) * row), [NH + 1, H, D]));
  const cv = dev(Tensor.from(Vv.slice(0, (NH + 1) * row), [NH + 1, H, D]));
  const cq = Array.from({ length: C }, (_, c) =>
    dev(Tensor.from(candQ.slice(c * row, (c + 1) * row), [1, H, D])),
  );
  const append = (c: number) => {
    const kc = K.subarray((NH + c) * row, (NH + c + 1) * row);
    const vc = Vv.subarray((NH + c) * row, (NH + c + 1) * row);
    if (ctx) {
      ctx.device.queue.writeBuffer(webGpuStorageOf(ck, 'k').buffer, NH * row * 4, kc);
      ctx.device.queue.writeBuffer(webGpuStorageOf(cv, 'v').buffer, NH * row * 4, vc);
    } else {
      ((ck.storage as CpuStorage).data as Float32Array).set(kc, NH * row);
      ((cv.storage as CpuStorage).data as Float32Array).set(vc, NH * row);
    }
  };
  const one = { seqOffsets: [0, NH + 1], deltaOffsets: [0, 1], maxSeqLen: N, alpha: ALPHA };
  const oneByOne = async (keep?: Tensor[]) => {
    for (let c = 0; c < C; c++) {
      append(c);
      const { o } = await hstuCachedAttention(cq[c]!, ck, cv, { ...one, backend: BACKEND });
      if (keep && c < 4) keep.push(await host(o));
      else if (o.device !== 'cpu') o.dispose();
    }
    await done();
  };
  // No cache: the whole sequence (history + candidate c) through the model's attention.
  const nq = dev(Tensor.from(Q.slice(0, (NH + 1) * row), [NH + 1, H, D]));
  const noCache = async (c: number) => {
    append(c);
    if (ctx)
      ctx.device.queue.writeBuffer(
        webGpuStorageOf(nq, 'q').buffer,
        NH * row * 4,
        candQ.subarray(c * row, (c + 1) * row),
      );
    else
      ((nq.storage as CpuStorage).data as Float32Array).set(
        candQ.subarray(c * row, (c + 1) * row),
        NH * row,
      );
    const { o } = await hstuAttention(nq, ck, cv, {
      seqOffsets: [0, NH + 1],
      maxSeqLen: N,
      alpha: ALPHA,
      numTargets: [1],
      backend: BACKEND,
    });
    await done();
    return o;
  };

  // The contenders agree (first candidates): batched rows vs each alone, cached and not.
  const all = (await host(await batched())).toFloat32Array();
  const firsts: Tensor[] = [];
  await oneByOne(firsts);
  for (let c = 0; c < 4; c++) {
    const ref = all.subarray(c * row, (c + 1) * row);
    const e1 = accuracy(firsts[c]!, ref).relL2;
    const full = (await host(await noCache(c))).toFloat32Array();
    const e2 = accuracy(full.subarray(NH * row, (NH + 1) * row), ref).relL2;
    if (!(e1 <= 1e-5 && e2 <= 1e-5))
      throw new Error(`candidate ${c}: one-by-one ${e1}, no-cache ${e2} vs batched`);
  }
  console.log('check one-by-one (cached, no cache) == batched rows: ok');

  const time = async (f: () => Promise<unknown>, repeats: number) => {
    const warm = performance.now();
    for (let i = 0; i < 2 || performance.now() - warm < 500; i++) {
      const r = await f();
      if (r instanceof Tensor && r.device !== 'cpu') r.dispose();
    }
    const ms: number[] = [];
    for (let i = 0; i < repeats; i++) {
      const t0 = performance.now();
      const r = await f();
      ms.push(performance.now() - t0);
      if (r instanceof Tensor && r.device !== 'cpu') r.dispose();
    }
    return { ms: median(ms), min: Math.min(...ms) };
  };
  const tb = await time(batched, REPEATS);
  const to = await time(() => oneByOne(), Math.max(1, Math.ceil(REPEATS / 2)));
  const tn = await time(async () => {
    for (let c = 0; c < SAMPLE; c++) {
      const o = await noCache(c);
      if (o.device !== 'cpu') o.dispose();
    }
  }, 1);
  const noCacheMs = (tn.ms * C) / SAMPLE;
  // FLOPs of the candidates' work (the same for batched and one-by-one cached): each
  // candidate's row against NH + 1 keys, 2 (D + Dv) per pair and head.
  const flops = C * (NH + 1) * H * 2 * (D + D);
  const rows = [
    { impl: 'mfalcon_batched', ms: tb.ms, min_ms: tb.min, calls: 1 },
    { impl: 'one_by_one_cached', ms: to.ms, min_ms: to.min, calls: C },
    {
      impl: 'one_by_one_no_cache',
      ms: noCacheMs,
      min_ms: noCacheMs,
      calls: C,
      note: `timed on ${SAMPLE} candidates, scaled x${C / SAMPLE}`,
    },
  ].map((r) => ({
    ...r,
    speedup_of_batched: r.ms / tb.ms,
    gflops_cached_work: flops / (r.ms * 1e6),
  }));
  const device = ctx
    ? `WebGPU ${ctx.adapterInfo?.vendor ?? ''} ${ctx.adapterInfo?.architecture ?? ''} ${ctx.adapterInfo?.device ?? ''}`.trim()
    : `${cpus()[0]?.model ?? 'cpu'} x${cpus().length}`;
  console.log(
    `\nM-FALCON, ${BACKEND} (${device}): ${C} candidates, history ${NH}, H ${H}, D ${D}, f32`,
  );
  console.log('impl                  calls   ms (median)  batched speedup');
  for (const r of rows)
    console.log(
      `${r.impl.padEnd(22)}${String(r.calls).padStart(5)} ${r.ms.toFixed(2).padStart(12)} ${r.speedup_of_batched.toFixed(1).padStart(10)}x${'note' in r ? `  (${r.note})` : ''}`,
    );
  const out = value('out');
  if (out)
    writeFileSync(
      out,
      `${JSON.stringify({ backend: BACKEND, device, history: NH, candidates: C, heads: H, dim: D, alpha: ALPHA, rows }, null, 2)}\n`,
    );
  ctx?.destroy();
}

await main();
