// FastAttention's tiling-AllReduce (issue 15, part 4) with P simulated devices on this CPU: P
// native device workers (worker_threads, one native engine each, sharing the process's thread
// pool) compute their heads' attention and W_o slice per row tile; the P partials of each tile
// are summed by its owner. For each P, the tile loop's time with overlap (tile t reduced while
// tile t+1 computes) and without (every tile computed, then every tile reduced), the reduction
// alone (the no-overlap run's reduce phase: from the last partial written to the last tile
// summed, when nothing else runs) and the hidden fraction
//   hidden = (t_no_overlap - t_overlap) / t_reduce.
// UV_THREADPOOL_SIZE=1 ATTNKIT_NUM_THREADS=1 gives the compute one core and leaves the other
// to the reductions (the JS threads), as a GPU's copy engines sit beside its compute units.
// Runs alternate overlap on / off on the same group of workers (--reps pairs after one warm-up
// pair); times are medians, the saving the median of the paired differences (off - on), and
// hidden = saving / reduce alone. Every result is checked against P = 1 (relative L2).
//
//   pnpm build   (or at least tensor, attention, native, fast-attention)
//   node benchmarks/fast/allreduce.mjs [--p 2,4] [--n 2048] [--h 8] [--hkv 8] [--d 64]
//     [--dmodel 512] [--tile-rows 64] [--causal] [--reps 5] [--json] [--out file.json]
//     [--backend native|webgpu] [--reference-p 1]
// --reference-p R: the result every P is checked against is P = R's (default 1; a larger R where
// one device cannot hold the whole problem, e.g. K past one WebGPU binding).
// ATTNKIT_NUM_THREADS sets the engine's pool (one per process, shared by the P workers).
// --backend webgpu: P webgpu device workers (each its own Dawn device on the one adapter there
// is), the devices' kernels f32 (FastAttention's forward, a WGSL projection); on the lent GPU
// machine through benchmarks/fast/allreduce-gpu-pack.sh (issue 19's stand-in on one GPU).
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
const { Rng } = await dist('tensor');
const { accuracy } = await dist('attention');
const { loadNative } = await dist('native');
const { AllReduceGroup, tiledAllReduceAttention } = await dist('fast-attention');

const { values: a } = parseArgs({
  options: {
    p: { type: 'string', default: '2,4' },
    n: { type: 'string', default: '2048' },
    h: { type: 'string', default: '8' },
    hkv: { type: 'string' },
    d: { type: 'string', default: '64' },
    dmodel: { type: 'string' },
    'tile-rows': { type: 'string', default: '64' },
    causal: { type: 'boolean', default: false },
    reps: { type: 'string', default: '7' },
    json: { type: 'boolean', default: false },
    out: { type: 'string' },
    backend: { type: 'string', default: 'native' },
    'reference-p': { type: 'string', default: '1' },
  },
});
const BACKEND = a.backend;
const REF_P = Number(a['reference-p']);
if (!Number.isInteger(REF_P) || REF_P < 1)
  throw new Error(`--reference-p: expected a positive integer, got ${a['reference-p']}`);
if (BACKEND !== 'native' && BACKEND !== 'webgpu')
  throw new Error(`--backend: expected native or webgpu, got ${BACKEND}`);
const PS = a.p.split(',').map(Number);
const N = Number(a.n);
const H = Number(a.h);
const HKV = Number(a.hkv ?? a.h);
const D = Number(a.d);
const DMODEL = Number(a.dmodel ?? H * D);
const TILE_ROWS = Number(a['tile-rows']);
const REPS = Number(a.reps);
const causal = a.causal;
// libuv's pool (per process) runs the engine's calls: 1 serialises every device's compute.
const { UV_THREADPOOL_SIZE: uvPool } = process.env;

const engine = BACKEND === 'native' ? loadNative() : { isa: 'n/a (webgpu)', threads: 0 };
if (!engine) throw new Error('the native engine is unavailable (build @attnkit/native)');
const rng = new Rng(0);
const q = rng.randn([1, H, N, D]);
const k = rng.randn([1, HKV, N, D]);
const v = rng.randn([1, HKV, N, D]);
const wo = rng.randn([H * D, DMODEL], 'f32', 1 / Math.sqrt(H * D));
const median = (xs) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const opts = { causal, tileRows: TILE_ROWS, backend: BACKEND };

const single = await tiledAllReduceAttention(q, k, v, wo, { ...opts, devices: REF_P });
const rows = [];
for (const P of PS) {
  const group = await AllReduceGroup.create({ devices: P, backend: BACKEND });
  try {
    const runs = { on: [], off: [] };
    let relL2 = 0;
    for (let rep = -1; rep < REPS; rep++) {
      for (const overlap of rep % 2 === 0 ? [true, false] : [false, true]) {
        const r = await tiledAllReduceAttention(q, k, v, wo, { ...opts, group, overlap });
        relL2 = Math.max(relL2, accuracy(r.y, single.y).relL2);
        if (rep >= 0) runs[overlap ? 'on' : 'off'].push(r.timings);
      }
    }
    const tOn = median(runs.on.map((t) => t.loopMs));
    const tOff = median(runs.off.map((t) => t.loopMs));
    const tReduce = median(runs.off.map((t) => t.reducePhaseMs));
    // Paired: each rep ran on and off back to back, so drift of the machine's load cancels.
    const saved = runs.on.map((t, i) => runs.off[i].loopMs - t.loopMs);
    const reduceCpu = median(runs.off.map((t) => t.devices.reduce((s, d) => s + d.reduceMs, 0)));
    const tiles = Math.ceil(N / TILE_ROWS);
    // The schedule's own account (overlap runs): the share of the reduce work done while the
    // reducing device's next tile was computing (1 = only what follows the last tile exposed).
    const sum = (ts, f) => ts.reduce((s, t) => s + t.devices.reduce((x, d) => x + d[f], 0), 0);
    const overlappedShare = sum(runs.on, 'reduceOverlappedMs') / sum(runs.on, 'reduceMs');
    rows.push({
      devices: P,
      tiles,
      overlapMs: tOn,
      noOverlapMs: tOff,
      reduceMs: tReduce,
      reduceCpuMs: reduceCpu,
      savedMs: median(saved),
      savedRunsMs: saved,
      hiddenFraction: median(saved) / tReduce,
      reduceOverlappedShare: overlappedShare,
      overlapRunsMs: runs.on.map((t) => t.loopMs),
      noOverlapRunsMs: runs.off.map((t) => t.loopMs),
      reduceRunsMs: runs.off.map((t) => t.reducePhaseMs),
      relL2VsP1: relL2,
    });
  } finally {
    await group.close();
  }
}

const result = {
  benchmark: `fast-attention tiling-AllReduce, P simulated ${BACKEND} devices`,
  backend: BACKEND,
  date: new Date().toISOString(),
  device: `${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores, Node ${process.version}`,
  engine: {
    isa: engine.isa,
    poolThreads: engine.threads,
    uvThreadpool: uvPool ?? '4 (default)',
  },
  loadAverage: loadavg(),
  shape: { B: 1, Hq: H, Hkv: HKV, N, D, dModel: DMODEL, causal, tileRows: TILE_ROWS },
  reps: REPS,
  timing:
    'tile-loop wall time (first device starts its first tile -> last tile reduced; inputs copied and heads gathered before, not counted), median',
  referenceDevices: REF_P,
  // The reference run's tile loop (P = referenceDevices; 1 unless --reference-p).
  singleDeviceLoopMs: single.timings.loopMs,
  rows,
};
if (a.json) console.log(JSON.stringify(result, null, 2));
else {
  console.log(
    `tiling-AllReduce (${BACKEND} devices): B 1, Hq ${H}, Hkv ${HKV}, N ${N}, D ${D}, dModel ${DMODEL}, causal ${causal}, tile ${TILE_ROWS} rows; ${result.device}; pool ${engine.threads} threads (${engine.isa}), UV_THREADPOOL_SIZE ${result.engine.uvThreadpool}; load ${result.loadAverage.map((x) => x.toFixed(1)).join(' ')}; ${REPS} pairs`,
  );
  console.log(`reference P = ${REF_P}: tile loop ${single.timings.loopMs.toFixed(1)} ms`);
  console.log(
    `| P | tiles | overlap ms | no overlap ms | saved ms (paired) | reduce alone ms | hidden | reduce done during compute | rel L2 vs P=${REF_P} |`,
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.devices} | ${r.tiles} | ${r.overlapMs.toFixed(1)} | ${r.noOverlapMs.toFixed(1)} | ${r.savedMs.toFixed(1)} | ${r.reduceMs.toFixed(2)} | ${(100 * r.hiddenFraction).toFixed(0)}% | ${(100 * r.reduceOverlappedShare).toFixed(0)}% | ${r.relL2VsP1.toExponential(1)} |`,
    );
  }
}
const out =
  a.out ??
  join(
    here,
    'results',
    `${new Date().toISOString().slice(0, 10)}-allreduce-n${N}-h${H}-d${D}-m${DMODEL}${causal ? '-causal' : ''}-t${engine.threads}${uvPool ? `-uv${uvPool}` : ''}.json`,
  );
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
if (!a.json) console.log(`JSON: ${out}`);
