// SageAttention2 accuracy table (issue 11 item 6): cosine similarity, relative L1 and relative
// L2 of Sage's output against the float64 softmax reference, for INT8 and INT4 Q·K (8-bit P·V),
// smoothing (K and Q) on and off, causal and not, on
//   (a) random normal q, k, v,
//   (b) the same with a few K channels offset by ~10 sigma (the case smoothing exists for),
//   (c) the inputs of the shared softmax goldens (BHND ones; varlen and block-sparse are not
//       Sage problems; a golden's own mask is used, so its causal column is the golden's),
//   (d) random normal with every query of a head sharing a per-channel mean (the structure of
//       trained models' queries that smoothQ takes out exactly; INT4 is accurate there).
// Runs on the TS backend by default (the specification; --backend native / webgpu once built).
//
//   pnpm build && node benchmarks/sage/accuracy.mjs [--n 512] [--d 128] [--heads 4] [--pv32]
//       [--backend ts] [--quick] [--out benchmarks/sage/results/<date>-accuracy.json]
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
const { Rng, Tensor } = await dist('tensor');
const { accuracy, goldenAttentionOptions, parseGolden, softmaxAttentionReference } =
  await dist('attention');
const { sageAttention } = await dist('sage-attention');

const { values: a } = parseArgs({
  options: {
    n: { type: 'string' },
    d: { type: 'string' },
    heads: { type: 'string' },
    pv32: { type: 'boolean', default: false },
    backend: { type: 'string', default: 'ts' },
    quick: { type: 'boolean', default: false },
    goldens: { type: 'string' },
    out: { type: 'string' },
  },
});
const N = Number(a.n ?? (a.quick ? 128 : 512));
const D = Number(a.d ?? (a.quick ? 64 : 128));
const HQ = Number(a.heads ?? 4);
const goldensDir =
  a.goldens ?? process.env.ATTNKIT_GOLDENS ?? join(repo, '..', 'shared', 'goldens');

/** (b): channels 3, 17, 40 (mod D) of K shifted by +10, -10, +10 (K is standard normal). */
function offsetK(k) {
  const data = k.toFloat32Array();
  const d = k.shape[3];
  const shifts = [
    [3 % d, 10],
    [17 % d, -10],
    [40 % d, 10],
  ];
  for (let e = 0; e < data.length; e += d) for (const [c, s] of shifts) data[e + c] += s;
  return Tensor.from(data, k.shape);
}

const rng = new Rng(20261202);
const q0 = rng.randn([1, HQ, N, D]);
const k0 = rng.randn([1, HQ / 2, N, D]);
const v0 = rng.randn([1, HQ / 2, N, D]);
/** (d): every query of a head shares a per-channel mean (N(0, 8^2) per channel), as trained
 * models' queries do; smoothQ moves it into the exact bias, so INT4 codes carry the residual. */
function meanQ(q) {
  const data = q.toFloat32Array();
  const d = q.shape[3];
  const mu = new Float32Array(d);
  new Rng(7).fillNormal(mu, 0, 8);
  for (let e = 0; e < data.length; e++) data[e] += mu[e % d];
  return Tensor.from(data, q.shape);
}
const inputs = [
  { input: '(a) random', q: q0, k: k0, v: v0, options: {}, causals: [false, true] },
  { input: '(b) K offset 10σ', q: q0, k: offsetK(k0), v: v0, options: {}, causals: [false, true] },
  {
    input: '(d) Q channel mean σ8',
    q: meanQ(q0),
    k: k0,
    v: v0,
    options: {},
    causals: [false, true],
  },
];
for (const f of readdirSync(goldensDir)
  .filter((f) => /^softmax.*\.safetensors$/.test(f))
  .sort()) {
  const buf = readFileSync(join(goldensDir, f));
  const g = parseGolden(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), f);
  const o = goldenAttentionOptions(g);
  if (g.kind !== 'softmax' || o.layout === 'THD' || o.blockSparse) continue;
  const { layout: _l, ...options } = o;
  inputs.push({
    input: `(c) ${f.replace('.safetensors', '')}`,
    q: g.tensors.q,
    k: g.tensors.k,
    v: g.tensors.v,
    options,
    causals: [undefined],
  });
}

const rows = [];
const t0 = performance.now();
for (const inp of inputs) {
  for (const causal of inp.causals) {
    const mask = causal === undefined ? inp.options : { ...inp.options, causal };
    const ref = softmaxAttentionReference(inp.q, inp.k, inp.v, mask).o;
    const variants = [];
    for (const bits of [8, 4])
      for (const smooth of [true, false]) variants.push({ bits, smooth, pvBits: 8 });
    if (a.pv32)
      variants.push({ bits: 8, smooth: true, pvBits: 32 }, { bits: 4, smooth: true, pvBits: 32 });
    for (const { bits, smooth, pvBits } of variants) {
      const { o } = await sageAttention(inp.q, inp.k, inp.v, {
        ...mask,
        qkBits: bits,
        smoothK: smooth,
        smoothQ: smooth,
        pvBits,
        backend: a.backend,
      });
      const acc = accuracy(await o.toCpu(), ref);
      rows.push({
        input: inp.input,
        shape: `${inp.q.shape.join('x')}`,
        causal: Boolean(mask.causal),
        window: mask.window ?? null,
        qkBits: bits,
        pvBits,
        smoothing: smooth,
        cos: acc.cosine,
        relL1: acc.relL1,
        relL2: acc.relL2,
        nonFinite: acc.nonFinite,
      });
    }
  }
}
const seconds = (performance.now() - t0) / 1000;

// Bars of KERNELS.md "SageAttention2" (random normal inputs): INT8 + 8-bit P·V cos >= 0.999 and
// relL1 <= 0.03; INT4 cos >= 0.99.
const bar = (r) => (r.qkBits === 8 ? r.cos >= 0.999 && r.relL1 <= 0.03 : r.cos >= 0.99);
const pad = (s, n) => String(s).padEnd(n);
const head = `${pad('input', 40)}${pad('shape', 16)}${pad('causal', 8)}${pad('QK', 6)}${pad('PV', 5)}${pad('smooth', 8)}${pad('cos', 10)}${pad('relL1', 9)}${pad('relL2', 9)}bar`;
console.log(head);
for (const r of rows)
  console.log(
    `${pad(r.input, 40)}${pad(r.shape, 16)}${pad(r.causal ? 'yes' : 'no', 8)}${pad(`int${r.qkBits}`, 6)}${pad(r.pvBits, 5)}${pad(r.smoothing ? 'on' : 'off', 8)}${pad(r.cos.toFixed(5), 10)}${pad(r.relL1.toFixed(4), 9)}${pad(r.relL2.toFixed(4), 9)}${bar(r) ? 'meets' : 'MISSES'}`,
  );
console.log(
  `\n${rows.length} rows in ${seconds.toFixed(1)} s on ${a.backend} (${cpus()[0]?.model ?? 'cpu'})`,
);

const date = new Date().toISOString().slice(0, 10);
const out = a.out ?? join(here, 'results', `${date}-accuracy${a.quick ? '-quick' : ''}.json`);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  `${JSON.stringify(
    {
      date,
      command: `node benchmarks/sage/accuracy.mjs ${process.argv.slice(2).join(' ')}`.trim(),
      backend: a.backend,
      machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version },
      random: { n: N, d: D, hq: HQ, hkv: HQ / 2, seed: 20261202 },
      bars: 'INT8 + 8-bit PV: cos >= 0.999 and relL1 <= 0.03; INT4: cos >= 0.99',
      rows,
      seconds,
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote ${out}`);
