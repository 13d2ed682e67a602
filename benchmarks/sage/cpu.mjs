// SageAttention2 on the CPU (issue 11 item 7, the CPU half), in one run: the native INT8 forward
// (@attnkit/skeleton quantizeSageNative + sageForwardNative: smoothK, smoothQ, INT8 Q.K at warp
// granularity, 8-bit P~.V; the pre-pass timed on its own and included in the total), beside our
// native f32 FlashAttention-2 (flashAttention with backend 'native') and onnxruntime-node's
// MultiHeadAttention (com.microsoft), at (1, 8, 2048, 64) and (1, 16, 4096, 128), causal and not.
// TOPS = 4 B H Nq Nk D / time (halved causal), the same count for every contender; Sage's
// "total" includes its pre-pass. Accuracy: cosine, relative L1 and L2 of each contender's O
// against the float64 softmax reference on a sample of query rows (every head; the full
// reference at (1, 16, 4096, 128) would take minutes in JS).
//
//   pnpm --filter @attnkit/native build:addon && pnpm build
//   node benchmarks/sage/cpu.mjs [--reps 7] [--rows 96] [--quick] [--no-ort] [--avx2]
//       [--out benchmarks/sage/results/<date>-cpu.json]
//
// Timing: a warm-up of every contender, then `reps` rounds calling each once (order flipped
// every other round, a 50 ms pause before each so the previous pool's spinning threads sleep),
// best and median per contender: other processes on the shared 2-core machine slow the
// contenders alike.
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { multiHeadAttentionModel } from '../native/onnx.mjs';
import { sageCase } from './case.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
const { Rng, Tensor } = await dist('tensor');
const { flashAttention } = await dist('flash-attention');
const { loadNative } = await dist('native');
const { quantizeSageNative, sageForwardNative } = await dist('skeleton');
// onnxruntime-node is a dev dependency of packages/native (benchmarks/ is no workspace package).
const ort = createRequire(join(repo, 'packages', 'native', 'package.json'))('onnxruntime-node');

const { values: a } = parseArgs({
  options: {
    reps: { type: 'string' },
    rows: { type: 'string' },
    quick: { type: 'boolean', default: false },
    'no-ort': { type: 'boolean', default: false },
    avx2: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const REPS = Number(a.reps ?? (a.quick ? 3 : 7));
const ROWS = Number(a.rows ?? 96); // sampled query rows per head for the accuracy columns
const SHAPES = a.quick
  ? [[1, 8, 2048, 64]]
  : [
      [1, 8, 2048, 64],
      [1, 16, 4096, 128],
    ];

const engine = loadNative();
if (!engine) throw new Error('the native addon did not load (see the warning above)');
if (typeof quantizeSageNative !== 'function')
  throw new Error('packages/skeleton/dist has no quantizeSageNative: run `pnpm build` first');
const T = engine.threads;
const sageIsa = engine.ops()['sage.forward'].chosen;

async function interleaved(fns) {
  const ms = fns.map(() => []);
  for (const fn of fns) await fn();
  for (let r = 0; r < REPS; r++) {
    const order = fns.map((_, i) => i);
    if (r % 2) order.reverse();
    for (const i of order) {
      await setTimeout(50);
      const t0 = process.hrtime.bigint();
      await fns[i]();
      ms[i].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  const med = (xs) => {
    const s = [...xs].sort((x, y) => x - y);
    return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  return ms.map((xs) => ({ bestMs: Math.min(...xs), medianMs: med(xs), ms: xs }));
}

// [B, H, N, D] <-> [B, N, H * D] (ORT's packed-heads layout).
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

// float64 softmax attention of the sampled rows (BHND, B = 1 per shape here, Hkv = Hq).
function referenceRows(q, k, v, [, H, N, D], causal, rows) {
  const out = new Float64Array(rows.length * D);
  const s = new Float64Array(N);
  const scale = 1 / Math.sqrt(D);
  rows.forEach(([b, h, i], r) => {
    const qi = ((b * H + h) * N + i) * D;
    const kb = (b * H + h) * N * D;
    const hi = causal ? i + 1 : N;
    let m = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < hi; j++) {
      let x = 0;
      for (let c = 0; c < D; c++) x += q[qi + c] * k[kb + j * D + c];
      s[j] = x * scale;
      if (s[j] > m) m = s[j];
    }
    let l = 0;
    for (let j = 0; j < hi; j++) {
      s[j] = Math.exp(s[j] - m);
      l += s[j];
    }
    for (let c = 0; c < D; c++) {
      let x = 0;
      for (let j = 0; j < hi; j++) x += s[j] * v[kb + j * D + c];
      out[r * D + c] = x / l;
    }
  });
  return out;
}

function accuracyRows(o, ref, [, H, N, D], rows) {
  let dot = 0;
  let oo = 0;
  let rr = 0;
  let d1 = 0;
  let r1 = 0;
  let d2 = 0;
  rows.forEach(([b, h, i], r) => {
    const base = ((b * H + h) * N + i) * D;
    for (let c = 0; c < D; c++) {
      const x = o[base + c];
      const y = ref[r * D + c];
      dot += x * y;
      oo += x * x;
      rr += y * y;
      d1 += Math.abs(x - y);
      r1 += Math.abs(y);
      d2 += (x - y) ** 2;
    }
  });
  return { cosine: dot / Math.sqrt(oo * rr), relL1: d1 / r1, relL2: Math.sqrt(d2 / rr) };
}

const rng = new Rng(11);
const results = [];
for (const shape of SHAPES) {
  const [B, H, N, D] = shape;
  const { q, k, v, dims, config } = sageCase(rng, shape);
  const rowRng = new Rng(N + D);
  const rows = [];
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let r = 0; r < ROWS; r++) rows.push([b, h, Math.floor(rowRng.uniform() * N)]);
  const tq = Tensor.from(q, shape);
  const tk = Tensor.from(k, shape);
  const tv = Tensor.from(v, shape);
  for (const causal of [false, true]) {
    const ops = (4 * B * H * N * N * D) / (causal ? 2 : 1);
    const kernel = { scale: 1 / Math.sqrt(D), causal, returnLse: false };
    let codec = await quantizeSageNative(q, k, v, dims, config);
    let sageO;
    let sageAvx2O;
    let faO;
    let ortO;
    const contenders = [
      {
        name: `sage INT8 pre-pass (${sageIsa})`,
        fn: async () => {
          codec = await quantizeSageNative(q, k, v, dims, config);
        },
      },
      {
        name: `sage INT8 forward (${sageIsa})`,
        fn: async () => {
          sageO = (await sageForwardNative(codec, kernel)).o;
        },
      },
      {
        name: `sage INT8 pre-pass + forward (${sageIsa})`,
        fn: async () => {
          const c = await quantizeSageNative(q, k, v, dims, config);
          sageO = (await sageForwardNative(c, kernel)).o;
        },
      },
      {
        name: 'native f32 FA2 (flashAttention backend native)',
        fn: async () => {
          faO = (await flashAttention(tq, tk, tv, { causal, backend: 'native' })).o;
        },
      },
    ];
    if (a.avx2)
      contenders.push({
        name: 'sage INT8 pre-pass + forward (avx2)',
        fn: async () => {
          const c = await quantizeSageNative(q, k, v, dims, config, { isa: 'avx2' });
          sageAvx2O = (await sageForwardNative(c, { ...kernel, isa: 'avx2' })).o;
        },
      });
    let session;
    if (!a['no-ort']) {
      session = await ort.InferenceSession.create(
        multiHeadAttentionModel({ batch: B, seq: N, heads: H, headDim: D, causal }),
        { intraOpNumThreads: T, interOpNumThreads: 1, executionMode: 'sequential' },
      );
      const packed = [B, N, H * D];
      const feeds = {
        query: new ort.Tensor('float32', toBNHD(q, shape), packed),
        key: new ort.Tensor('float32', toBNHD(k, shape), packed),
        value: new ort.Tensor('float32', toBNHD(v, shape), packed),
      };
      contenders.push({
        name: 'onnxruntime-node MultiHeadAttention f32',
        fn: async () => {
          ortO = (await session.run(feeds)).y.data;
        },
      });
    }
    const times = await interleaved(contenders.map((c) => c.fn));
    if (session) await session.release();
    const ref = referenceRows(q, k, v, shape, causal, rows);
    const acc = (o) => (o ? accuracyRows(o, ref, shape, rows) : undefined);
    const outputs = [sageO, sageO, sageO, faO.toFloat32Array()];
    if (a.avx2) outputs.push(sageAvx2O);
    if (!a['no-ort']) outputs.push(toBHND(ortO, shape));
    contenders.forEach((c, i) => {
      const t = times[i];
      const row = {
        shape,
        causal,
        contender: c.name,
        bestMs: t.bestMs,
        medianMs: t.medianMs,
        ms: t.ms,
        // The pre-pass alone does none of the attention's operations: no TOPS.
        tops: c.name.includes('pre-pass (') ? undefined : ops / (t.bestMs * 1e-3) / 1e12,
        accuracy: i === 0 ? undefined : acc(outputs[i]),
      };
      results.push(row);
    });
    const by = (name) =>
      results.find((r) => r.shape === shape && r.causal === causal && r.contender.startsWith(name));
    const fa = by('native f32 FA2');
    const total = by('sage INT8 pre-pass + forward');
    const fwd = by('sage INT8 forward');
    console.log(
      `(${shape.join(', ')}) ${causal ? 'causal' : 'full'}: sage fwd ${fwd.bestMs.toFixed(1)} ms, ` +
        `pre-pass + fwd ${total.bestMs.toFixed(1)} ms; FA2 f32 ${fa.bestMs.toFixed(1)} ms: ` +
        `${(fa.bestMs / fwd.bestMs).toFixed(2)}x (forward), ${(fa.bestMs / total.bestMs).toFixed(2)}x (with the pre-pass)`,
    );
  }
}

const f = (x, n = 2) => (x === undefined ? '' : x.toFixed(n));
console.log(
  `\nattnkit native (${T} threads, sage on ${sageIsa}) vs onnxruntime-node ${ort.env?.versions?.common ?? ''} (intraOpNumThreads ${T}); ${cpus()[0]?.model ?? ''}; load ${loadavg()
    .map((x) => x.toFixed(1))
    .join(' ')}`,
);
console.log(
  '| shape (B,H,N,D) | mask | contender | best ms | median ms | TOPS (best) | vs FA2 f32 | cos | relL1 | relL2 |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of results) {
  const fa = results.find(
    (x) => x.shape === r.shape && x.causal === r.causal && x.contender.startsWith('native f32 FA2'),
  );
  const speed = r.contender.includes('pre-pass (') ? '' : `${(fa.bestMs / r.bestMs).toFixed(2)}x`;
  console.log(
    `| (${r.shape.join(', ')}) | ${r.causal ? 'causal' : 'none'} | ${r.contender} | ${f(r.bestMs, 1)} | ${f(r.medianMs, 1)} | ${r.contender.includes('pre-pass (') ? '' : f(r.tops, 3)} | ${speed} | ${f(r.accuracy?.cosine, 6)} | ${f(r.accuracy?.relL1, 4)} | ${f(r.accuracy?.relL2, 4)} |`,
  );
}

const date = new Date().toISOString().slice(0, 10);
const out = a.out ?? join(here, 'results', `${date}-cpu.json`);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  `${JSON.stringify(
    {
      date: new Date().toISOString(),
      command: `node benchmarks/sage/cpu.mjs ${process.argv.slice(2).join(' ')}`.trim(),
      machine: { cpu: cpus()[0]?.model, cores: cpus().length, threads: T, loadavg: loadavg() },
      sageIsa,
      reps: REPS,
      sampledRowsPerHead: ROWS,
      opsCount: '4 B H Nq Nk D, halved causal; Sage totals include the pre-pass',
      results: results.map((r) => ({ ...r, shape: r.shape })),
    },
    null,
    2,
  )}\n`,
);
console.log(`\nwrote ${out}`);
