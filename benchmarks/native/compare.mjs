// attnkit's native FlashAttention-2 vs onnxruntime-node's MultiHeadAttention (com.microsoft) vs
// the pure-TS backend, in one run, on the engine's threads; plus the engine's f32 GEMM rate as
// the machine's practical ceiling. Prints a table and writes JSON.
// Native is timed twice: the engine call on Float32Arrays ("engine"), and the public API
// (flashAttention / flashAttentionBackward with backend 'native' on f32 Tensors: validation,
// problem resolution, output allocation and Tensor wrapping included: "API").
//
//   pnpm --filter @attnkit/native build && pnpm --filter @attnkit/flash-attention build
//   node benchmarks/native/compare.mjs [--reps 5] [--no-ts] [--out file.json]
//
// The workspace packages (native, tensor, and flash-attention for the TS backend) are loaded from
// their dist/ by path: benchmarks/native/ is no workspace package. onnxruntime-node, a
// devDependency of @attnkit/native, is resolved from packages/native.
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadNative } from '../../packages/native/dist/index.js';
import { Rng, Tensor } from '../../packages/tensor/dist/index.js';
import { denseProblem } from './addon-api.mjs';
import { multiHeadAttentionModel } from './onnx.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const ort = createRequire(join(repo, 'packages', 'native', 'package.json'))('onnxruntime-node');
const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '5' },
    'no-ts': { type: 'boolean', default: false },
    out: { type: 'string', default: join(here, 'results', 'compare.json') },
  },
});
const reps = Number(args.reps);

const engine = loadNative();
if (!engine) throw new Error('the native addon did not load (see the warning above)');
const threads = engine.threads;
const flash = await import('../../packages/flash-attention/dist/index.js');

// Best time of each contender over `reps` rounds, the contenders interleaved within a round:
// other processes sharing the cores then slow every contender alike, and the best round of
// each is the one least disturbed.
// A pause before each run lets the previous contender's pool threads, which spin for a while
// after a call (ORT's and ours), go to sleep instead of competing with the next one.
async function interleaved(fns, n = reps) {
  const best = fns.map(() => Number.POSITIVE_INFINITY);
  for (const fn of fns) await fn();
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < fns.length; i++) {
      await setTimeout(50);
      const t0 = process.hrtime.bigint();
      await fns[i]();
      best[i] = Math.min(best[i], Number(process.hrtime.bigint() - t0) / 1e9);
    }
  }
  return best;
}

function relL2(a, b) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

// [B, H, N, D] <-> [B, N, H * D] (ORT's layout).
function toBNHD(x, [B, H, N, D]) {
  const out = new Float32Array(x.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let n = 0; n < N; n++)
        out.set(
          x.subarray(((b * H + h) * N + n) * D, ((b * H + h) * N + n + 1) * D),
          ((b * N + n) * H + h) * D,
        );
  return out;
}
function toBHND(x, [B, H, N, D]) {
  const out = new Float32Array(x.length);
  for (let b = 0; b < B; b++)
    for (let n = 0; n < N; n++)
      for (let h = 0; h < H; h++)
        out.set(
          x.subarray(((b * N + n) * H + h) * D, ((b * N + n) * H + h + 1) * D),
          ((b * H + h) * N + n) * D,
        );
  return out;
}

const gflops = (flops, s) => flops / s / 1e9;

// GEMM ceiling: 2048^3, C = A B.
const G = 2048;
const rng = new Rng(1);
const ga = new Float32Array(G * G);
const gb = new Float32Array(G * G);
rng.fillNormal(ga);
rng.fillNormal(gb);
const gc = new Float32Array(G * G);
const gemm = () => engine.gemm({ m: G, n: G, k: G, a: ga, b: gb, c: gc });
let [gemmSeconds] = await interleaved([gemm]);

const rows = [];
for (const [B, H, N, D] of [
  [1, 8, 512, 64],
  [1, 8, 2048, 64],
  [1, 16, 4096, 128],
]) {
  for (const causal of [false, true]) {
    const shape = [B, H, N, D];
    const size = B * H * N * D;
    const [q, k, v, dO] = [0, 1, 2, 3].map(() => {
      const x = new Float32Array(size);
      rng.fillNormal(x);
      return x;
    });
    const p = denseProblem(B, H, N, D, causal);
    // FlashAttention's count: 4 B H N^2 D forward (halved when causal), backward 2.5x.
    const fwdFlops = (4 * B * H * N * N * D) / (causal ? 2 : 1);
    const o = new Float32Array(size);
    const lse = new Float32Array(B * H * N);
    const [dq, dk, dv] = [0, 1, 2].map(() => new Float32Array(size));
    const session = await ort.InferenceSession.create(
      multiHeadAttentionModel({ batch: B, seq: N, heads: H, headDim: D, causal }),
      { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential' },
    );
    const dims = [B, N, H * D];
    const feeds = {
      query: new ort.Tensor('float32', toBNHD(q, shape), dims),
      key: new ort.Tensor('float32', toBNHD(k, shape), dims),
      value: new ort.Tensor('float32', toBNHD(v, shape), dims),
    };
    let ortOut;
    const t = (x) => Tensor.from(x, shape);
    const [tq, tk, tv, tdO] = [t(q), t(k), t(v), t(dO)];
    const api = { backend: 'native', causal };
    const apiOut = await flash.flashAttention(tq, tk, tv, api);
    const [fwdSeconds, ortSeconds, bwdSeconds, apiFwdSeconds, apiBwdSeconds] = await interleaved([
      () => engine.flashForward(p, q, k, v, o, lse),
      async () => {
        ortOut = (await session.run(feeds)).y.data;
      },
      () => engine.flashBackward(p, q, k, v, o, lse, dO, dq, dk, dv),
      () => flash.flashAttention(tq, tk, tv, api),
      () => flash.flashAttentionBackward(tq, tk, tv, apiOut.o, apiOut.lse, tdO, api),
    ]);
    await session.release();
    const ortVsNative = relL2(toBHND(ortOut, shape), o);

    let ts;
    if (!args['no-ts']) {
      const t0 = process.hrtime.bigint();
      const r = flash.flashAttentionTs(tq, tk, tv, { causal });
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      ts = { seconds: s, gflops: gflops(fwdFlops, s), relL2: relL2(r.o.toFloat32Array(), o) };
    }

    const row = {
      shape,
      causal,
      native: {
        fwdSeconds,
        fwdGflops: gflops(fwdFlops, fwdSeconds),
        bwdSeconds,
        bwdGflops: gflops(2.5 * fwdFlops, bwdSeconds),
      },
      nativeApi: {
        fwdSeconds: apiFwdSeconds,
        fwdGflops: gflops(fwdFlops, apiFwdSeconds),
        bwdSeconds: apiBwdSeconds,
        bwdGflops: gflops(2.5 * fwdFlops, apiBwdSeconds),
      },
      ort: {
        seconds: ortSeconds,
        gflops: gflops(fwdFlops, ortSeconds),
        relL2VsNative: ortVsNative,
      },
      ts,
    };
    rows.push(row);
    const f = (x, n = 1) => x.toFixed(n);
    console.error(
      `(${shape}) ${causal ? 'causal' : 'full'}: native ${f(row.native.fwdGflops)} (API ${f(row.nativeApi.fwdGflops)}) / ORT ${f(row.ort.gflops)} GFLOP/s` +
        `, backward ${f(row.native.bwdGflops)} (API ${f(row.nativeApi.bwdGflops)})${ts ? `, TS ${f(ts.gflops, 2)}` : ''}`,
    );
  }
}

// The ceiling again after the attention runs; the better of the two is kept.
gemmSeconds = Math.min(gemmSeconds, (await interleaved([gemm]))[0]);
const gemmRate = gflops(2 * G ** 3, gemmSeconds);
const pct = (x) => `${((100 * x) / gemmRate).toFixed(0)}%`;
const lines = [
  `| shape (B,H,N,D) | mask | engine fwd ms | engine fwd GFLOP/s (of GEMM) | API fwd ms | ORT MHA ms | ORT GFLOP/s (of GEMM) | engine / ORT | API / ORT | engine bwd GFLOP/s (of GEMM) | API bwd ms | engine bwd / fwd | TS fwd GFLOP/s | engine / TS | relL2 ORT vs native |`,
  `|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|`,
];
for (const r of rows) {
  const n = r.native;
  const a = r.nativeApi;
  lines.push(
    `| (${r.shape.join(', ')}) | ${r.causal ? 'causal' : 'none'} | ${(n.fwdSeconds * 1e3).toFixed(1)} | ${n.fwdGflops.toFixed(1)} (${pct(n.fwdGflops)}) | ${(a.fwdSeconds * 1e3).toFixed(1)} | ` +
      `${(r.ort.seconds * 1e3).toFixed(1)} | ${r.ort.gflops.toFixed(1)} (${pct(r.ort.gflops)}) | ${(n.fwdGflops / r.ort.gflops).toFixed(2)}x | ${(a.fwdGflops / r.ort.gflops).toFixed(2)}x | ` +
      `${n.bwdGflops.toFixed(1)} (${pct(n.bwdGflops)}) | ${(a.bwdSeconds * 1e3).toFixed(1)} | ${(100 * (n.bwdGflops / n.fwdGflops)).toFixed(0)}% | ` +
      `${r.ts ? r.ts.gflops.toFixed(2) : '-'} | ${r.ts ? `${(n.fwdGflops / r.ts.gflops).toFixed(0)}x` : '-'} | ${r.ort.relL2VsNative.toExponential(1)} |`,
  );
}
const header = [
  `attnkit native (${engine.isa}, ${threads} threads) vs onnxruntime-node ${ort.env.versions?.common ?? ''} MultiHeadAttention (intraOpNumThreads ${threads}) vs pure TS (1 thread)`,
  `CPU: ${cpus()[0]?.model ?? 'unknown'} x ${cpus().length}; ${new Date().toISOString().slice(0, 10)}; f32, best of ${reps}`,
  `engine f32 GEMM 2048^3: ${gemmRate.toFixed(1)} GFLOP/s (the ceiling)`,
];
console.log([...header, '', ...lines].join('\n'));
mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(
  args.out,
  `${JSON.stringify({ date: new Date().toISOString(), cpu: cpus()[0]?.model, cpus: cpus().length, isa: engine.isa, threads, reps, gemm: { n: G, gflops: gemmRate }, rows }, null, 2)}\n`,
);
console.log(`\nJSON: ${args.out}`);
