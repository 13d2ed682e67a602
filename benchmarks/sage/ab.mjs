// A/B of native addon builds on Sage's INT8 forward and the f32 FA2 forward (issue 11's CPU
// target shape by default), CPU time per call so other processes on the shared cores matter
// less: each addon (ATTNKIT_NATIVE_ADDON) runs in its own child process, the children alternate
// `--rounds` times, each child timing `--reps` calls of each contender after a warm-up.
//
//   node benchmarks/sage/ab.mjs --addon A.node --addon B.node [--threads 1] [--rounds 4]
//       [--reps 15] [--shape 1,8,2048,64] [--causal]
//
// Prints per addon the min and median CPU ms (and wall ms: with 2+ threads the pool's waiting
// counts as CPU time) of each contender over all its rounds and Sage's ratio to FA2; --out
// writes the JSON.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { sageCase } from './case.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const { values: a } = parseArgs({
  options: {
    addon: { type: 'string', multiple: true },
    threads: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '4' },
    reps: { type: 'string', default: '15' },
    shape: { type: 'string', default: '1,8,2048,64' },
    causal: { type: 'boolean', default: false },
    child: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const med = (xs) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

if (a.child) {
  const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
  const { Rng, Tensor } = await dist('tensor');
  const { flashAttention } = await dist('flash-attention');
  const { quantizeSageNative, sageForwardNative } = await dist('skeleton');
  const shape = a.shape.split(',').map(Number);
  const D = shape[3];
  const { q, k, v, dims, config } = sageCase(new Rng(11), shape);
  const codec = await quantizeSageNative(q, k, v, dims, config);
  const kernel = { scale: 1 / Math.sqrt(D), causal: a.causal, returnLse: false };
  const [tq, tk, tv] = [q, k, v].map((x) => Tensor.from(x, shape));
  let sageO;
  const fns = {
    sage: async () => {
      sageO = (await sageForwardNative(codec, kernel)).o;
    },
    prepass: async () => {
      await quantizeSageNative(q, k, v, dims, config);
    },
    fa2: async () => {
      await flashAttention(tq, tk, tv, { causal: a.causal, backend: 'native' });
    },
  };
  const cpu = {};
  const wall = {};
  for (const [name, fn] of Object.entries(fns)) {
    await fn();
    cpu[name] = [];
    wall[name] = [];
  }
  for (let r = 0; r < Number(a.reps); r++)
    for (const [name, fn] of Object.entries(fns)) {
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      await fn();
      wall[name].push(Number(process.hrtime.bigint() - t0) / 1e6);
      const c = process.cpuUsage(c0);
      cpu[name].push((c.user + c.system) / 1e3);
    }
  // A checksum of Sage's output so builds that change results show it.
  let sum = 0;
  for (let i = 0; i < sageO.length; i += 7) sum += sageO[i];
  process.stdout.write(JSON.stringify({ cpu, wall, checksum: sum }));
  process.exit(0);
}

const addons = a.addon ?? [];
if (addons.length === 0) throw new Error('--addon: give one or more attnkit_native.node paths');
const runs = addons.map(() => []);
for (let r = 0; r < Number(a.rounds); r++) {
  const order = addons.map((_, i) => i);
  if (r % 2) order.reverse();
  for (const i of order) {
    const out = execFileSync(
      process.execPath,
      [
        fileURLToPath(import.meta.url),
        '--child',
        '--reps',
        a.reps,
        '--shape',
        a.shape,
        ...(a.causal ? ['--causal'] : []),
      ],
      { env: { ...process.env, ATTNKIT_NATIVE_ADDON: addons[i], ATTNKIT_NUM_THREADS: a.threads } },
    );
    runs[i].push(JSON.parse(out.toString()));
  }
}
const rows = addons.map((addon, i) => {
  const all = (name, kind) => runs[i].flatMap((x) => x[kind][name]);
  const row = { addon, checksum: runs[i][0].checksum };
  for (const name of ['sage', 'prepass', 'fa2']) {
    row[name] = { min: Math.min(...all(name, 'cpu')), median: med(all(name, 'cpu')) };
    row[`${name}Wall`] = { min: Math.min(...all(name, 'wall')), median: med(all(name, 'wall')) };
  }
  row.ratioMin = row.fa2.min / row.sage.min;
  row.ratioMedian = row.fa2.median / row.sage.median;
  row.wallRatioMin = row.fa2Wall.min / row.sageWall.min;
  row.wallRatioMedian = row.fa2Wall.median / row.sageWall.median;
  return row;
});
console.log(
  `shape ${a.shape}${a.causal ? ' causal' : ''}, ${a.threads} thread(s), ${a.rounds} rounds x ${a.reps} reps, CPU ms`,
);
console.log(
  '| addon | sage min / median | pre-pass min / median | FA2 f32 min / median | FA2 / sage (min, median) | wall ms: sage, FA2 (min / median) | wall FA2 / sage (min, median) | checksum |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
const f2 = (x) => x.toFixed(2);
for (const r of rows)
  console.log(
    `| ${r.addon} | ${f2(r.sage.min)} / ${f2(r.sage.median)} | ${f2(r.prepass.min)} / ${f2(r.prepass.median)} | ${f2(r.fa2.min)} / ${f2(r.fa2.median)} | ${f2(r.ratioMin)}x, ${f2(r.ratioMedian)}x | ${f2(r.sageWall.min)} / ${f2(r.sageWall.median)}, ${f2(r.fa2Wall.min)} / ${f2(r.fa2Wall.median)} | ${f2(r.wallRatioMin)}x, ${f2(r.wallRatioMedian)}x | ${r.checksum} |`,
  );
if (a.out) writeFileSync(a.out, `${JSON.stringify({ args: a, rows, runs }, null, 1)}\n`);
