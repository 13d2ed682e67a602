/**
 * Gated linear attention (issue 13) on WebGPU: chunkGla's WGSL passes
 * (packages/linear-attention/src/gla/webgpu) timed forward and forward + backward, beside our
 * causal FA2 forward at the same (B, H, T, D = K). Bundled with build.mjs (dist/bench-gla.mjs).
 *
 *   node bench-gla.mjs [--shapes 4,16,2048,128,128;4,16,8192,128,128] [--dtype f16|f32|bf16]
 *                      [--chunk 64] [--repeats 10] [--out gla.json] [--skip-verify] [--no-fa2]
 *                      [--tc off|on|both]
 *                      [--order simt|tc] [--warmup-ms 500] [--diag "parts;parts;..."]
 *                      [--diag-backward]
 *
 * --tc: the chunk products as SIMT tile loops (off), on f16 subgroup matrices (on: the state
 * passes h / dh, the o / dv passes, dA and dq / dk's inter products, kernels.ts `tc`), or both, one row each (default both
 * where the adapter has f16 16x16x16 subgroup matrices with 32-wide subgroups, else off). Each
 * variant is verified before it is timed; the tensor-core one on f32 storage against the f16
 * tolerance (its operands are f16 whatever the storage). With timestamp queries each row also
 * has forward_passes_ms / backward_passes_ms: GPU ms per pass label (tensor-core passes end in
 * ' tc'), to see which products the variant sped up and where the time goes.
 *
 * Shapes are B,H,T,K,V (layout BTHK). 1. Verification first (unless --skip-verify): a small
 * problem (odd T, K != V, h0, dht) and one at K = V = 128 (T 300), on f32 and the chosen dtype
 * against the float64 recurrence,
 * outputs poisoned, KERNELS.md's tolerances; a failure exits 1 after the table. 2. Table: GPU
 * time of one call (the sum of its passes from timestamp queries, else wall time between queue
 * waits), median of --repeats after >= 0.5 s of warm-up; forward (o and hT) and forward +
 * backward (the backward recomputes G, the scores and the chunk states, as fla's); GFLOP/s of
 * glaFlops (the chunk form's own products); FA2: tiledForwardWebGpu causal on [B, H, T, K]
 * tensor-core f16 where the adapter has subgroup matrices, else SIMT.
 */
import { writeFileSync } from 'node:fs';
import { accuracy, resolveAttentionProblem, toleranceFor } from '@attnkit/attention';
import {
  glaFlops,
  glaReference,
  glaReferenceBackward,
  resolveGla,
} from '@attnkit/linear-attention';
import { SOFTMAX_HOOKS, tiledForwardWebGpu } from '@attnkit/skeleton';
import { Rng, Tensor } from '@attnkit/tensor';
import { createWebGpuContext, GpuProfiler, toWebGpu } from '@attnkit/webgpu';
import {
  glaBackwardWebGpu,
  glaForwardWebGpu,
  glaTcAdapterQualifies,
} from '../../packages/linear-attention/src/gla/webgpu/host.js';
import { GLA_DEBUG_SKIP } from '../../packages/linear-attention/src/gla/webgpu/kernels.js';
import { benchDisabledToggles, benchToggles, randomData, timeCall } from './common.js';

const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const flag = (name: string) => args.includes(`--${name}`);
const REPEATS = Number(value('repeats') ?? 10);
const DTYPE = (value('dtype') ?? 'f16') as 'f32' | 'f16' | 'bf16';
const CHUNK = Number(value('chunk') ?? 64);
const SHAPES = (value('shapes') ?? '4,16,2048,128,128;4,16,8192,128,128')
  .split(';')
  .map((s) => s.split(',').map(Number) as [number, number, number, number, number]);

const ctx = await createWebGpuContext({
  dawnToggles: benchToggles(),
  disabledDawnToggles: benchDisabledToggles(),
});
console.log(`adapter ${JSON.stringify(ctx.adapterInfo)} backend=${ctx.backend}`);
const TC_QUALIFIES = glaTcAdapterQualifies(ctx);
const TC_FLAG = value('tc') ?? (TC_QUALIFIES ? 'both' : 'off');
if (!['off', 'on', 'both'].includes(TC_FLAG)) {
  console.error(`--tc: expected off, on or both, got ${TC_FLAG}`);
  process.exit(2);
}
if (TC_FLAG !== 'off' && !TC_QUALIFIES) {
  console.error(
    '--tc: the adapter has no f16 x f16 -> f32 16x16x16 subgroup matrices with 32-wide subgroups',
  );
  process.exit(2);
}
type Variant = 'simt' | 'tc';
// --order tc: the tensor-core variant first in each shape (2026-12-03 run 3: whichever ran first
// had whole-call medians far above its per-pass sums; --warmup-ms lengthens the untimed calls).
const VARIANTS: Variant[] =
  TC_FLAG === 'both'
    ? value('order') === 'tc'
      ? ['tc', 'simt']
      : ['simt', 'tc']
    : TC_FLAG === 'on'
      ? ['tc']
      : ['simt'];
const WARMUP_MS = Number(value('warmup-ms') ?? 500);
const runOpts = (variant: Variant, profiler?: GpuProfiler) => ({
  tensorCores: variant === 'tc',
  ...(profiler ? { profiler } : {}),
});
const out: Record<string, unknown> = {
  adapter: ctx.adapterInfo,
  date: new Date().toISOString(),
  dtype: DTYPE,
  chunkSize: CHUNK,
  repeats: REPEATS,
  variants: VARIANTS,
};
const save = () => value('out') && writeFileSync(value('out')!, JSON.stringify(out, null, 2));
let failures = 0;

/** fla's gates: log sigmoid of normal-ish data (mostly in [-3, 0]). */
function gates(n: number, seed: number): Float32Array {
  const z = randomData(n, seed);
  return Float32Array.from(z, (x) => -Math.log1p(Math.exp(-x)));
}

function cpu(shape: number[], data: Float32Array, dtype: 'f32' | 'f16' | 'bf16'): Tensor {
  const t = Tensor.from(data, shape);
  return dtype === 'f32' ? t : t.astype(dtype);
}

/**
 * GPU ms per pass label (summed within a call, median over 5 calls) from timestamp queries, or
 * undefined without them: where the time goes, SIMT beside tensor cores (labels end in ' tc').
 */
async function passTimes(
  run: (profiler: GpuProfiler) => Promise<Record<string, Tensor>>,
): Promise<Record<string, number> | undefined> {
  if (!ctx.features.timestampQuery) return undefined;
  const profiler = new GpuProfiler(ctx.device, 32);
  const per: Record<string, number[]> = {};
  for (let i = 0; i < 5; i++) {
    const r = await run(profiler);
    await ctx.sync();
    for (const t of Object.values(r)) t.dispose();
    const sums: Record<string, number> = {};
    for (const p of await profiler.read()) sums[p.label] = (sums[p.label] ?? 0) + p.ns / 1e6;
    for (const [k, v] of Object.entries(sums)) (per[k] ??= []).push(v);
  }
  profiler.destroy();
  const med = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1]!;
  return Object.fromEntries(Object.entries(per).map(([k, v]) => [k, Number(med(v).toFixed(4))]));
}

/** A call's outputs as passTimes / timeCall take them. */
const asRecord = (r: object) => r as Record<string, Tensor>;

async function verify(variant: Variant) {
  const rng = new Rng(5);
  // The small problem, and the benchmark's head dims (K = V = 128: several channel tiles in
  // the scores and o passes, two 64-column blocks of the state).
  for (const [B, T, H, K, V] of [
    [2, 157, 2, 32, 48],
    [1, 300, 2, 128, 128],
  ] as const)
    for (const dtype of [...new Set(['f32', DTYPE] as const)]) {
      const q = rng.randn([B, T, H, K], dtype);
      const k = rng.randn([B, T, H, K], dtype);
      const v = rng.randn([B, T, H, V], dtype);
      const gk = cpu([B, T, H, K], gates(B * T * H * K, 9), dtype);
      const dO = rng.randn([B, T, H, V], dtype);
      const h0 = rng.randn([B, H, K, V], dtype);
      const dht = rng.randn([B, H, K, V], dtype);
      const ref = glaReference(q, k, v, gk, { initialState: h0, outputFinalState: true });
      const refB = glaReferenceBackward(q, k, v, gk, dO, { initialState: h0, dht });
      ctx.poisonOutputs = true;
      const up = (t: Tensor) => toWebGpu(t, ctx);
      const g = { q: up(q), k: up(k), v: up(v), gk: up(gk), do: up(dO), dht: up(dht) };
      const options = { initialState: up(h0), outputFinalState: true, chunkSize: CHUNK };
      const p = resolveGla(g.q, g.k, g.v, g.gk, options, 'chunk', { dO: g.do, dht: g.dht });
      const f = await glaForwardWebGpu(p, g, runOpts(variant));
      const b = await glaBackwardWebGpu(p, g, runOpts(variant));
      ctx.poisonOutputs = false;
      // Tensor cores: f16 operands whatever the storage, so f32 storage meets the f16 tolerance.
      const tolType = variant === 'tc' && dtype === 'f32' ? 'f16' : dtype;
      const tol = toleranceFor({ dtype: tolType, chunked: true });
      const got: Record<string, Tensor | undefined> = { o: f.o, ht: f.ht, ...b };
      const want: Record<string, Tensor | undefined> = { o: ref.o, ht: ref.finalState, ...refB };
      const line: string[] = [];
      for (const [name, w] of Object.entries(want)) {
        const a = accuracy(await got[name]!.toCpu(), w!);
        const ok = a.nonFinite === 0 && a.relL2 <= tol;
        if (!ok) failures++;
        line.push(`${name} ${a.relL2.toExponential(2)}${ok ? '' : ' FAIL'}`);
      }
      console.log(
        `verify ${variant} ${dtype} (${B},${T},${H},${K},${V}) tol ${tol}: ${line.join(', ')}`,
      );
      const shape = [B, T, H, K, V];
      (out.verify as unknown[] | undefined)?.push({ variant, dtype, shape, line }) ??
        (out.verify = [{ variant, dtype, shape, line }]);
      for (const t of [...Object.values(g), options.initialState, ...Object.values(got)])
        t?.dispose();
    }
}

async function table() {
  const rows: Record<string, unknown>[] = [];
  for (const [B, H, T, K, V] of SHAPES) {
    const shapeRows: Record<string, unknown>[] = [];
    const nk = B * T * H * K;
    const nv = B * T * H * V;
    const up = (shape: number[], data: Float32Array) => toWebGpu(cpu(shape, data, DTYPE), ctx);
    const g = {
      q: up([B, T, H, K], randomData(nk, 1)),
      k: up([B, T, H, K], randomData(nk, 2)),
      v: up([B, T, H, V], randomData(nv, 3)),
      gk: up([B, T, H, K], gates(nk, 4)),
      do: up([B, T, H, V], randomData(nv, 5)),
    };
    const options = { outputFinalState: true, chunkSize: CHUNK };
    const p = resolveGla(g.q, g.k, g.v, g.gk, options, 'chunk', { dO: g.do });
    const lengths = Array<number>(B).fill(T);
    const flops = {
      forward: glaFlops({ lengths, H, K, V }, 'chunk', 'forward', CHUNK),
      backward: glaFlops({ lengths, H, K, V }, 'chunk', 'backward', CHUNK),
    };
    for (const variant of VARIANTS) {
      const row: Record<string, unknown> = { shape: { B, H, T, K, V }, variant };
      shapeRows.push(row);
      try {
        const fwd = await timeCall(
          ctx,
          async (profiler?: GpuProfiler) =>
            asRecord(await glaForwardWebGpu(p, g, runOpts(variant, profiler))),
          REPEATS,
          WARMUP_MS,
        );
        row.forward_ms = fwd.medianMs;
        row.forward_min_ms = fwd.minMs;
        row.timing = fwd.timing;
        row.forward_gflops = flops.forward / fwd.medianMs / 1e6;
        const both = await timeCall(
          ctx,
          async (profiler?: GpuProfiler) => {
            const o = runOpts(variant, profiler);
            const f = await glaForwardWebGpu(p, g, o);
            const b = await glaBackwardWebGpu(p, g, o);
            return asRecord({ ...f, ...b });
          },
          REPEATS,
          WARMUP_MS,
        );
        row.fwd_bwd_ms = both.medianMs;
        row.fwd_bwd_min_ms = both.minMs;
        row.fwd_bwd_gflops = (flops.forward + flops.backward) / both.medianMs / 1e6;
        row.forward_passes_ms = await passTimes(async (profiler) =>
          asRecord(await glaForwardWebGpu(p, g, runOpts(variant, profiler))),
        );
        row.backward_passes_ms = await passTimes(async (profiler) =>
          asRecord(await glaBackwardWebGpu(p, g, runOpts(variant, profiler))),
        );
        // The forward's summed pass medians: on the H200 the whole-call forward median of
        // whichever variant ran first came out 2-3x above them (2026-12-03 runs 3 and 6), while
        // fwd+bwd agreed with its sums; the table shows both.
        const fp = row.forward_passes_ms as Record<string, number> | undefined;
        if (fp) row.forward_passes_sum_ms = Object.values(fp).reduce((a, x) => a + x, 0);
      } catch (e) {
        row.gla_error = String(e).slice(0, 400);
      }
    }
    for (const t of Object.values(g)) t.dispose();
    if (!flag('no-fa2') && K === V) {
      // Our causal FA2 forward at (B, H, T, D = K), BHND.
      const tc = ctx.features.subgroupMatrix && DTYPE === 'f16';
      const n = B * H * T * K;
      const fa = (seed: number) => toWebGpu(cpu([B, H, T, K], randomData(n, seed), DTYPE), ctx);
      const [q, k, v] = [fa(11), fa(12), fa(13)];
      try {
        const pr = resolveAttentionProblem(q, k, v, { causal: true });
        const r = await timeCall(
          ctx,
          async (profiler?: GpuProfiler) => {
            const x = await tiledForwardWebGpu(pr, SOFTMAX_HOOKS, q, k, v, {
              tensorCores: tc,
              ...(profiler ? { profiler } : {}),
            });
            const out: Record<string, Tensor> = { o: x.o };
            if (x.lse) out.lse = x.lse;
            return out;
          },
          REPEATS,
          WARMUP_MS,
        );
        for (const row of shapeRows) {
          row.fa2_causal_forward_ms = r.medianMs;
          row.fa2_kind = tc ? 'tensor-core f16' : `SIMT ${DTYPE}`;
        }
      } catch (e) {
        for (const row of shapeRows) row.fa2_error = String(e).slice(0, 400);
      }
      for (const t of [q, k, v]) t.dispose();
    }
    for (const row of shapeRows) {
      rows.push(row);
      console.log(`row ${JSON.stringify(row)}`);
    }
    out.table = rows;
    save();
  }
  const f = (x: unknown, d = 3) => (typeof x === 'number' ? x.toFixed(d).padStart(9) : '        -');
  console.log(
    `\nchunkGla on WebGPU, ${DTYPE}, C ${CHUNK} (GPU ms, median of ${REPEATS}; GFLOP/s of glaFlops)`,
  );
  console.log(
    '| B | H | T | K | V | products | fwd ms | fwd passes ms | fwd GFLOP/s | fwd+bwd ms | fwd+bwd GFLOP/s | FA2 causal fwd ms | FA2 / GLA fwd |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    const s = r.shape as Record<string, number>;
    const ratio =
      typeof r.fa2_causal_forward_ms === 'number' && typeof r.forward_ms === 'number'
        ? r.fa2_causal_forward_ms / r.forward_ms
        : undefined;
    console.log(
      `| ${s.B} | ${s.H} | ${s.T} | ${s.K} | ${s.V} | ${r.variant === 'tc' ? 'tensor cores' : 'SIMT'} | ${f(r.forward_ms)} | ${f(r.forward_passes_sum_ms)} | ${f(r.forward_gflops, 1)} | ${f(r.fwd_bwd_ms)} | ${f(r.fwd_bwd_gflops, 1)} | ${f(r.fa2_causal_forward_ms)} | ${f(ratio, 2)} |`,
    );
  }
}

/**
 * --diag "set;set;...": where the SIMT forward's time goes. Each set (comma-separated
 * GLA_DEBUG_SKIP parts, '-' for none) regenerates the kernels without those parts and prints
 * the forward's per-pass GPU ms at every shape (results wrong while parts are left out); with
 * --diag-backward the backward's too (the dq / dk / dgk pass's parts: qkg:intra, qkg:cross,
 * qkg:prefix).
 */
const DIAG_BACKWARD = flag('diag-backward');
async function diag(sets: string[]) {
  const rows: unknown[] = [];
  out.diag = rows;
  for (const [B, H, T, K, V] of SHAPES) {
    const up = (shape: number[], data: Float32Array) => toWebGpu(cpu(shape, data, DTYPE), ctx);
    const g = {
      q: up([B, T, H, K], randomData(B * T * H * K, 1)),
      k: up([B, T, H, K], randomData(B * T * H * K, 2)),
      v: up([B, T, H, V], randomData(B * T * H * V, 3)),
      gk: up([B, T, H, K], gates(B * T * H * K, 4)),
      do: up([B, T, H, V], randomData(B * T * H * V, 5)),
    };
    const p = resolveGla(
      g.q,
      g.k,
      g.v,
      g.gk,
      { outputFinalState: true, chunkSize: CHUNK },
      'chunk',
    );
    for (const set of sets) {
      GLA_DEBUG_SKIP.clear();
      for (const part of set.split(',')) if (part && part !== '-') GLA_DEBUG_SKIP.add(part);
      // Warm-up (compiles and clocks), then the passes. The first set at least 2.5 s: the H200
      // idles at 345-525 MHz for ~0.5 s after the first dispatch (run 2's first set: 4x slow).
      const t0 = performance.now();
      const warm = set === sets[0] && T === SHAPES[0]![2] ? Math.max(2500, WARMUP_MS) : WARMUP_MS;
      while (performance.now() - t0 < warm) {
        const r = await glaForwardWebGpu(p, g, runOpts('simt'));
        await ctx.sync();
        r.o.dispose();
        r.ht?.dispose();
      }
      const passes = await passTimes(async (profiler) =>
        asRecord(await glaForwardWebGpu(p, g, runOpts('simt', profiler))),
      );
      const backward = DIAG_BACKWARD
        ? await passTimes(async (profiler) =>
            asRecord(await glaBackwardWebGpu(p, g, runOpts('simt', profiler))),
          )
        : undefined;
      rows.push({ shape: { B, H, T, K, V }, skip: set, passes, backward });
      console.log(`diag T ${T} skip ${set}: ${JSON.stringify(passes)}`);
      if (backward) console.log(`diag T ${T} skip ${set} backward: ${JSON.stringify(backward)}`);
    }
    GLA_DEBUG_SKIP.clear();
    for (const t of Object.values(g)) t.dispose();
  }
}

if (value('diag') !== undefined) {
  await diag(value('diag')!.split(';'));
  save();
  process.exit(0);
}
if (!flag('skip-verify')) for (const variant of VARIANTS) await verify(variant);
await table();
save();
console.log(`failures ${failures}`);
process.exit(failures > 0 ? 1 : 0);
