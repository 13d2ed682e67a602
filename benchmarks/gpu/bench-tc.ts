/**
 * The tensor-core FlashAttention-2 forward (issue 20; packages/skeleton/src/webgpu/tc-forward.ts)
 * on the device: verification first, then tile variants, then the table. Bundled with build.mjs
 * (dist/bench-tc.mjs); runs from .gpu/ via run.sh on the H200 (CI has no subgroup matrices).
 *
 *   node bench-tc.mjs [--out tc.json] [--repeats 10] [--skip-variants] [--skip-table]
 *                     [--variants '[{"subgroups":4,"keyMatrices":4,"lazy":8}]']
 *
 * 1. Verification (outputs poisoned: the context fills them with NaN before each kernel): random
 *    shapes with odd lengths, Nq != Nk, GQA, causal, window, varlen (THD), D != Dv, f16 inputs,
 *    o and LSE against the float64 reference (softmaxAttentionReference on the f16 values) at
 *    KERNELS.md's f16 tolerance; each case also beside the SIMT f16 kernel. Every case prints
 *    its errors; a failure is reported and the run goes on (exit code 1 at the end).
 * 2. Variants at (4, 16, 4096, 128) non-causal: subgroups x key matrices x lazy threshold, each
 *    with its first-call time (pipeline creation), its agreement with the SIMT f16 output, and
 *    its GPU time (timestamp queries, median) — the variant log of issue 20 item 7.
 * 3. Table: the shapes, causal and not: tensor cores (default config), SIMT f16, SIMT f32.
 */
import { writeFileSync } from 'node:fs';
import {
  type AttentionOptions,
  accuracy,
  resolveAttentionProblem,
  softmaxAttentionReference,
  toleranceFor,
} from '@attnkit/attention';
import {
  SOFTMAX_HOOKS,
  type TcForwardConfig,
  tiledForwardWebGpu,
  type WebGpuTileOptions,
} from '@attnkit/skeleton';
import { Rng, Tensor } from '@attnkit/tensor';
import { createWebGpuContext, type GpuProfiler, toWebGpu } from '@attnkit/webgpu';
import { median, tensor, timeCall } from './common.js';

const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const flag = (name: string) => args.includes(`--${name}`);
const REPEATS = Number(value('repeats') ?? 10);
const ctx = await createWebGpuContext();
console.log(
  `adapter ${JSON.stringify(ctx.adapterInfo)} backend=${ctx.backend} features=${JSON.stringify(ctx.features)} toggles=${ctx.dawnToggles.join(',')}`,
);
const out: Record<string, unknown> = { adapter: ctx.adapterInfo, features: ctx.features };
let failures = 0;

type TcOpt = WebGpuTileOptions['tensorCores'];

async function forward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  attn: AttentionOptions,
  tc: TcOpt,
  profiler?: GpuProfiler,
) {
  const p = resolveAttentionProblem(q, k, v, attn);
  return tiledForwardWebGpu(p, SOFTMAX_HOOKS, q, k, v, {
    ...(tc ? { tensorCores: tc } : {}),
    ...(profiler ? { profiler } : {}),
  });
}

interface Case {
  name: string;
  b: number;
  hq: number;
  hkv: number;
  nq: number;
  nk: number;
  d: number;
  dv: number;
  attn?: AttentionOptions;
  varlen?: [number[], number[]];
}

const ALL_CASES: Case[] = [
  { name: 'square', b: 2, hq: 2, hkv: 2, nq: 128, nk: 128, d: 64, dv: 64 },
  { name: 'odd lengths, Nq != Nk', b: 1, hq: 3, hkv: 3, nq: 77, nk: 205, d: 64, dv: 64 },
  { name: 'causal odd', b: 2, hq: 2, hkv: 2, nq: 131, nk: 131, d: 128, dv: 128 },
  {
    name: 'causal Nq < Nk (bottom-right)',
    b: 1,
    hq: 2,
    hkv: 2,
    nq: 45,
    nk: 300,
    d: 64,
    dv: 64,
    attn: { causal: true },
  },
  { name: 'GQA 8/2', b: 1, hq: 8, hkv: 2, nq: 96, nk: 150, d: 128, dv: 128 },
  {
    name: 'window (33, 7)',
    b: 1,
    hq: 2,
    hkv: 1,
    nq: 200,
    nk: 200,
    d: 64,
    dv: 64,
    attn: { window: [33, 7] },
  },
  { name: 'D != Dv (64, 32)', b: 1, hq: 2, hkv: 2, nq: 90, nk: 110, d: 64, dv: 32 },
  { name: 'D 16, Dv 48', b: 1, hq: 1, hkv: 1, nq: 33, nk: 47, d: 16, dv: 48 },
  {
    name: 'varlen THD causal',
    b: 3,
    hq: 2,
    hkv: 2,
    nq: 0,
    nk: 0,
    d: 64,
    dv: 64,
    attn: { causal: true },
    varlen: [
      [17, 64, 100],
      [17, 90, 100],
    ],
  },
  {
    name: 'large N 2048 causal',
    b: 1,
    hq: 2,
    hkv: 2,
    nq: 2048,
    nk: 2048,
    d: 128,
    dv: 128,
    attn: { causal: true },
  },
];

const only = value('cases');
const CASES = only
  ? ALL_CASES.filter((_, i) => only.split(',').map(Number).includes(i))
  : ALL_CASES;

function inputs(c: Case, seed: number) {
  const rng = new Rng(seed);
  if (c.varlen) {
    const [lq, lk] = c.varlen;
    const tq = lq.reduce((a, x) => a + x, 0);
    const tk = lk.reduce((a, x) => a + x, 0);
    const cu = (ls: number[]) =>
      Int32Array.from([0, ...ls.map((_, i) => ls.slice(0, i + 1).reduce((a, x) => a + x, 0))]);
    return {
      q: rng.randn([tq, c.hq, c.d]).astype('f16'),
      k: rng.randn([tk, c.hkv, c.d]).astype('f16'),
      v: rng.randn([tk, c.hkv, c.dv]).astype('f16'),
      attn: { ...c.attn, layout: 'THD' as const, cuSeqlensQ: cu(lq), cuSeqlensK: cu(lk) },
    };
  }
  return {
    q: rng.randn([c.b, c.hq, c.nq, c.d]).astype('f16'),
    k: rng.randn([c.b, c.hkv, c.nk, c.d]).astype('f16'),
    v: rng.randn([c.b, c.hkv, c.nk, c.dv]).astype('f16'),
    attn: c.attn ?? {},
  };
}

async function verify(tc: TcOpt, label: string) {
  const rows: unknown[] = [];
  const tol = toleranceFor({ dtype: 'f16' });
  for (const c of CASES) {
    const n = ALL_CASES.indexOf(c);
    const x = inputs(c, 100 + n);
    const g = [x.q, x.k, x.v].map((t) => toWebGpu(t, ctx));
    ctx.poisonOutputs = true;
    let line: string;
    try {
      const t0 = performance.now();
      const r = await forward(g[0]!, g[1]!, g[2]!, x.attn, tc);
      const o = await r.o.toCpu();
      const lse = await r.lse!.toCpu();
      const ms = performance.now() - t0;
      const simt = await forward(g[0]!, g[1]!, g[2]!, x.attn, undefined);
      const so = await simt.o.toCpu();
      const ref = softmaxAttentionReference(x.q, x.k, x.v, x.attn);
      const eo = accuracy(o, ref.o);
      const el = accuracy(lse, ref.lse);
      const es = accuracy(so, ref.o);
      const ok = eo.relL2 <= tol && el.relL2 <= tol && eo.nonFinite === 0 && el.nonFinite === 0;
      // --dump DIR: a failing case's inputs and outputs, to study offline.
      if (!ok && value('dump')) {
        const arr = (t: Tensor) => Array.from(t.toFloat32Array());
        writeFileSync(
          `${value('dump')}/case${n}.json`,
          JSON.stringify({
            case: c,
            attn: x.attn,
            shapes: [x.q.shape, x.k.shape, x.v.shape],
            q: arr(x.q),
            k: arr(x.k),
            v: arr(x.v),
            o: arr(o),
            lse: arr(lse),
            refO: arr(ref.o),
            refLse: arr(ref.lse as Tensor),
          }),
        );
      }
      if (!ok) failures++;
      line = `${ok ? 'ok  ' : 'FAIL'} ${label} ${c.name}: o ${eo.relL2.toExponential(2)} (nonfinite ${eo.nonFinite}), lse ${el.relL2.toExponential(2)} (nonfinite ${el.nonFinite}); SIMT f16 o ${es.relL2.toExponential(2)}; tol ${tol}; first call ${ms.toFixed(0)} ms`;
      rows.push({
        case: c.name,
        ok,
        o: eo.relL2,
        lse: el.relL2,
        simt: es.relL2,
        nonFinite: eo.nonFinite + el.nonFinite,
        firstCallMs: ms,
      });
      for (const t of [r.o, r.lse!, simt.o, simt.lse!]) t.dispose();
    } catch (e) {
      failures++;
      line = `FAIL ${label} ${c.name}: ${(e as Error).message}`;
      rows.push({ case: c.name, ok: false, error: (e as Error).message });
    } finally {
      ctx.poisonOutputs = false;
      for (const t of g) t.dispose();
    }
    console.log(line);
  }
  return rows;
}

const flopsOf = (s: number[], causal: boolean) =>
  (4 * s[0]! * s[1]! * s[2]! * s[2]! * s[3]!) / (causal ? 2 : 1);

async function timeIt(shape: number[], causal: boolean, dtype: 'f16' | 'f32', tc: TcOpt) {
  const [b, h, n, d] = shape as [number, number, number, number];
  const q = toWebGpu(tensor([b, h, n, d], dtype, 1), ctx);
  const k = toWebGpu(tensor([b, h, n, d], dtype, 2), ctx);
  const v = toWebGpu(tensor([b, h, n, d], dtype, 3), ctx);
  try {
    const t0 = performance.now();
    const first = await forward(q, k, v, { causal }, tc);
    await ctx.sync();
    const firstMs = performance.now() - t0;
    const o = first.o;
    const t = await timeCall(
      ctx,
      async (profiler) =>
        ({ ...(await forward(q, k, v, { causal }, tc, profiler)) }) as Record<string, Tensor>,
      REPEATS,
    );
    return { firstMs, o, ...t, tflops: flopsOf(shape, causal) / (t.medianMs * 1e9) };
  } finally {
    for (const x of [q, k, v]) x.dispose();
  }
}

async function main() {
  const vv = value('verify-variants');
  if (vv) {
    const rows: unknown[] = [];
    for (const cfg of JSON.parse(vv) as Array<Partial<TcForwardConfig>>)
      rows.push(await verify(cfg, JSON.stringify(cfg)));
    out.verifyVariants = rows;
  } else out.verify = await verify(true, 'tc default');
  if (!flag('skip-variants')) {
    const shape = [4, 16, 4096, 128];
    const simt = await timeIt(shape, false, 'f16', undefined);
    const ref = await simt.o.toCpu();
    console.log(
      `variant SIMT f16 ${shape}: ${simt.medianMs.toFixed(3)} ms ${simt.tflops.toFixed(1)} TFLOP/s`,
    );
    const variants: Array<Partial<TcForwardConfig>> = [];
    const list = value('variants');
    if (list) for (const v of JSON.parse(list) as Array<Partial<TcForwardConfig>>) variants.push(v);
    else
      for (const subgroups of [4, 2])
        for (const keyMatrices of [4, 2])
          for (const lazy of [8, 0]) variants.push({ subgroups, keyMatrices, lazy });
    const rows: unknown[] = [{ variant: 'simt f16', ms: simt.medianMs, tflops: simt.tflops }];
    for (const vt of variants) {
      try {
        const r = await timeIt(shape, false, 'f16', vt);
        const e = accuracy(await r.o.toCpu(), ref);
        r.o.dispose();
        rows.push({
          variant: vt,
          ms: r.medianMs,
          min: r.minMs,
          tflops: r.tflops,
          firstCallMs: r.firstMs,
          vsSimt: e.relL2,
          nonFinite: e.nonFinite,
        });
        console.log(
          `variant ${JSON.stringify(vt)}: ${r.medianMs.toFixed(3)} ms ${r.tflops.toFixed(1)} TFLOP/s, first call ${r.firstMs.toFixed(0)} ms, vs SIMT ${e.relL2.toExponential(2)}`,
        );
      } catch (e) {
        rows.push({ variant: vt, error: (e as Error).message });
        console.log(`variant ${JSON.stringify(vt)}: ${(e as Error).message}`);
      }
      if (value('out'))
        writeFileSync(
          value('out')!,
          `${JSON.stringify({ ...out, variants: rows, partial: true }, null, 2)}\n`,
        );
    }
    simt.o.dispose();
    out.variants = rows;
  }
  if (!flag('skip-table')) {
    const rows: unknown[] = [];
    for (const shape of [
      [16, 16, 1024, 64],
      [4, 16, 4096, 128],
      [2, 16, 8192, 128],
    ])
      for (const causal of [false, true])
        for (const [impl, dtype, tc] of [
          ['tc f16', 'f16', true],
          ['simt f16', 'f16', undefined],
          ['simt f32', 'f32', undefined],
        ] as const) {
          try {
            const r = await timeIt(shape, causal, dtype, tc);
            r.o.dispose();
            rows.push({ impl, shape, causal, ms: r.medianMs, tflops: r.tflops });
            console.log(
              `table ${impl} ${shape} causal=${causal}: ${r.medianMs.toFixed(3)} ms ${r.tflops.toFixed(1)} TFLOP/s`,
            );
          } catch (e) {
            rows.push({ impl, shape, causal, error: (e as Error).message });
            console.log(`table ${impl} ${shape} causal=${causal}: ${(e as Error).message}`);
          }
        }
    out.table = rows;
  }
  out.failures = failures;
  if (value('out')) writeFileSync(value('out')!, `${JSON.stringify(out, null, 2)}\n`);
  console.log(`verification failures: ${failures}`);
  ctx.destroy();
  process.exit(failures > 0 ? 1 : 0);
}

void median;
void Tensor;
await main();
