// FastAttention (issue 15 part 1 target): the WGSL FA2 under WebGPU's *default* limits (16 KiB
// workgroup storage, 256 invocations, no subgroups, no f16: a low-end / mobile GPU), with the
// two-level planner's tiles (fastAttention), against the tuned kernels (flashAttention with the
// skeleton's tiles and every feature the adapter has) on the same adapter, in one process.
// Forward and forward + backward, f32, wall ms (GPU finished: ctx.sync()), medians; the ratio
// default / tuned is the target's (<= 2x). Outputs checked against each other first.
//
//   pnpm build   (tensor, attention, webgpu, skeleton, flash-attention, fast-attention)
//   EGL_PLATFORM=surfaceless node benchmarks/fast/webgpu-limits.mjs [--n 512,1024] [--d 64,128]
//       [--heads 4] [--reps 5] [--out file.json]
// On the device machine: benchmarks/gpu/build.mjs bundles it (dist/bench-limits.mjs), and
// benchmarks/gpu/pack-queue.sh packs it.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
const { Rng } = await dist('tensor');
const { accuracy } = await dist('attention');
const { createWebGpuContext, toWebGpu } = await dist('webgpu');
const { flashAttention, flashAttentionBackward } = await dist('flash-attention');
const { fastAttention, fastAttentionBackward } = await dist('fast-attention');

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '512,1024' },
    d: { type: 'string', default: '64,128' },
    heads: { type: 'string', default: '4' },
    reps: { type: 'string', default: '5' },
    out: { type: 'string' },
    // Forward tile configs (tx,ty,rv,cu,kc,mc; ';'-separated) also timed on the default-limits
    // device beside the planner's, to check the planner's pick: 'none' skips them.
    'alt-tiles': {
      type: 'string',
      default: '8,16,1,1,16,16;8,16,1,1,8,16;16,8,1,1,16,16;8,8,1,1,16,16;4,16,1,1,16,16',
    },
  },
});
const altTiles =
  values['alt-tiles'] === 'none'
    ? []
    : values['alt-tiles'].split(';').map((c) => {
        const [tx, ty, rv, cu, kc, mc] = c.split(',').map(Number);
        return { tx, ty, rv, cu, kc, mc };
      });
const list = (s) => s.split(',').map(Number);
const H = Number(values.heads);
const REPS = Number(values.reps);

const tuned = await createWebGpuContext();
const small = await createWebGpuContext({ limits: 'default', features: [] });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function time(ctx, fn) {
  const ms = [];
  for (let i = 0; i <= REPS; i++) {
    const t = performance.now();
    const outs = await fn();
    await ctx.sync();
    if (i > 0) ms.push(performance.now() - t); // the first call compiles
    for (const o of outs) o.dispose();
  }
  return median(ms);
}

const relL2 = async (a, b) => accuracy(await a.toCpu(), await b.toCpu()).relL2;

const rows = [];
console.log(
  `adapter ${tuned.adapterInfo.description || tuned.adapterInfo.device} (${tuned.backend}); tuned limits: ${tuned.limits.maxComputeWorkgroupStorageSize} B workgroup storage, ${tuned.limits.maxComputeInvocationsPerWorkgroup} invocations, subgroups ${tuned.features.subgroups}; default: ${small.limits.maxComputeWorkgroupStorageSize} B, ${small.limits.maxComputeInvocationsPerWorkgroup}, subgroups ${small.features.subgroups}`,
);
console.log(
  '| N | D | causal | tuned fwd ms | default fwd ms | ratio | tuned fwd+bwd ms | default fwd+bwd ms | ratio | o relL2 | plan (BR x BC) |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const n of list(values.n))
  for (const d of list(values.d))
    for (const causal of [false, true]) {
      const rng = new Rng(n * 1000 + d);
      const host = ['q', 'k', 'v', 'dO'].map(() => rng.randn([1, H, n, d], 'f32'));
      const on = (ctx) => host.map((t) => toWebGpu(t, ctx));
      const [qt, kt, vt, dOt] = on(tuned);
      const [qs, ks, vs, dOs] = on(small);
      const opts = causal ? { causal: true } : {};
      const ref = await flashAttention(qt, kt, vt, { ...opts, backend: 'webgpu' });
      const got = await fastAttention(qs, ks, vs, opts);
      const err = await relL2(got.o, ref.o);
      const plan = got.plan;
      const fwdT = await time(tuned, async () => {
        const r = await flashAttention(qt, kt, vt, { ...opts, backend: 'webgpu' });
        return [r.o, r.lse];
      });
      const fwdS = await time(small, async () => {
        const r = await fastAttention(qs, ks, vs, opts);
        return [r.o, r.lse];
      });
      const bothT = await time(tuned, async () => {
        const r = await flashAttention(qt, kt, vt, { ...opts, backend: 'webgpu' });
        const g = await flashAttentionBackward(qt, kt, vt, r.o, r.lse, dOt, {
          ...opts,
          backend: 'webgpu',
        });
        return [r.o, r.lse, g.dq, g.dk, g.dv];
      });
      const bothS = await time(small, async () => {
        const r = await fastAttention(qs, ks, vs, opts);
        const g = await fastAttentionBackward(
          { q: qs, k: ks, v: vs, o: r.o, lse: r.lse, dO: dOs },
          opts,
        );
        return [r.o, r.lse, g.dq, g.dk, g.dv];
      });
      const tile = `${plan.outer.blockQ} x ${plan.outer.blockK}`;
      // Other forward tiles on the default-limits device (the skeleton rejects what does not fit).
      const alts = [];
      for (const cfg of altTiles) {
        const name = `${4 * cfg.ty * cfg.rv} x ${4 * cfg.tx * cfg.cu} (${Object.values(cfg).join(',')})`;
        try {
          const args = { ...opts, backend: 'webgpu', tiles: { forward: cfg } };
          const r = await flashAttention(qs, ks, vs, args);
          const e = await relL2(r.o, ref.o);
          r.o.dispose();
          r.lse.dispose();
          const ms = await time(small, async () => {
            const x = await flashAttention(qs, ks, vs, args);
            return [x.o, x.lse];
          });
          alts.push({ tiles: name, fwdMs: ms, relL2: e });
        } catch (e) {
          alts.push({ tiles: name, error: String(e).slice(0, 200) });
        }
      }
      const bestAlt = alts
        .filter((a) => a.fwdMs !== undefined && a.relL2 < 1e-4)
        .sort((a, b) => a.fwdMs - b.fwdMs)[0];
      if (altTiles.length > 0)
        console.log(
          `  alt forward tiles (default limits): ${alts.map((a) => (a.error ? `${a.tiles} rejected` : `${a.tiles} ${a.fwdMs.toFixed(2)} ms`)).join('; ')}`,
        );
      const row = {
        n,
        d,
        heads: H,
        causal,
        fwdT,
        fwdS,
        bothT,
        bothS,
        relL2: err,
        plan,
        alts,
        bestAlt,
      };
      rows.push(row);
      console.log(
        `| ${n} | ${d} | ${causal} | ${fwdT.toFixed(1)} | ${fwdS.toFixed(1)} | ${(fwdS / fwdT).toFixed(2)}x | ${bothT.toFixed(1)} | ${bothS.toFixed(1)} | ${(bothS / bothT).toFixed(2)}x | ${err.toExponential(1)} | ${tile} |`,
      );
      for (const t of [qt, kt, vt, dOt, qs, ks, vs, dOs, ref.o, ref.lse, got.o, got.lse])
        t.dispose();
    }
if (values.out)
  writeFileSync(
    values.out,
    JSON.stringify(
      {
        benchmark: 'fast-attention webgpu default limits vs tuned',
        date: new Date().toISOString(),
        adapter: tuned.adapterInfo,
        backend: tuned.backend,
        tunedLimits: tuned.limits,
        defaultLimits: small.limits,
        reps: REPS,
        rows,
      },
      null,
      2,
    ),
  );
tuned.destroy();
small.destroy();
