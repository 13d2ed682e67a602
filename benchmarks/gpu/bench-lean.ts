/**
 * LeanAttention decode on WebGPU (issue 12 item 7): the three partitions' latency and effective
 * bandwidth beside the device's own memory ceiling, measured in one run. Bundled with build.mjs
 * (dist/bench-lean.mjs); on the H200 h200-lean.sh runs it through .gpu/run.sh.
 *
 *   node bench-lean.mjs [--quick] [--out lean.json] [--repeats 10] [--nk 8192,32768]
 *                       [--batch 1,8] [--hkv 32,8] [--torch torch-decode.json]
 *                       [--skip-verify] [--no-flush] [--ceiling-mib 1024]
 *                       [--partitions fa2,splitK,streamK] [--workers 264,528,1056]
 *                       [--splits 4,16] [--tunings default,t128u8,r2]
 *                       [--binding-limit BYTES]
 *
 * Sweeps (each value one row of the table, so one device run finds the best):
 * - --workers a,b,c: stream-K's worker counts (default: defaultLeanWorkers('webgpu', .));
 * - --splits a,b: split-K's key ranges per unit (default: defaultLeanSplits('webgpu', B));
 * - --tunings x,y: layouts of the decode kernel (skeleton webgpu/decode.ts setDecodeTuning),
 *   crossed with every partition and worker / split count: 'default' (the kernel's own), else
 *   letters with powers of two: t threads per workgroup, l lanes per key, r query rows per
 *   thread, u keys per key group per pass, w (workgroup-memory lane sums instead of
 *   subgroup shuffles) and p (the next pass's K / V prefetched during the math); e.g. t128u8,
 *   r2, l8w, t512u2p. Every tuning is verified first like the default.
 * The summary table shows each partition's best row per shape; every row is printed as it is
 * measured ("row ...") and kept in the JSON (table[], with workers / splits / tuning).
 *
 * 1. Verification first (outputs poisoned: NaN-filled before each kernel): every partition on
 *    small random f16 shapes (odd Nk, GQA, MQA, B > 1) against the float64 reference
 *    (softmaxAttentionReference on the f16 values), o and LSE at KERNELS.md's f16 tolerance.
 *    A failure is reported and the run goes on; the exit code is 1 at the end.
 * 2. Ceiling: two WGSL probes over a buffer of >= 1 GiB (--ceiling-mib), vec4<u32> per thread,
 *    grid-stride, the best of a few grid sizes:
 *    - read: a sum reduction (one u32 out per workgroup), bandwidth = bytes read / time;
 *    - copy: src -> dst, bandwidth = (bytes read + bytes written) / time, and its read half.
 *    THE CEILING IS THE READ PROBE: decode reads K and V and writes almost nothing, and the
 *    issue's bandwidth counts K/V bytes read per time, so a read-only probe is the like-for-like
 *    bound (a copy's read+write figure mixes in write traffic decode does not have). The copy
 *    kernel's figures are printed beside it (fractionOfCopy in the JSON).
 * 3. Table: B x Hkv x Nk x partition x sweep value (Hq 32, D 128, Nq 1, f16 q/K/V), median ms from timestamp queries (timeCall: the sum of the call's kernel passes),
 *    GB/s = 2 * B*Hkv*Nk*D*2 bytes (K and V) / time. A K or V larger than the device's
 *    maxStorageBufferBindingSize (2 GiB - 4 on the H200) runs in binding chunks (the skeleton's
 *    chunkedForward: launches over kv-head or batch ranges, K/V bound where they lie); its row
 *    also records spanMs (first pass start to last pass end, the gaps between launches in it).
 *    Only a K or V past maxBufferSize is skipped, said so.
 *    Before each timed call a 256 MiB fill (not timed) evicts the L2 (50 MB on the H200), so small
 *    shapes are not measured out of cache (--no-flush turns it off; without timestamp queries,
 *    e.g. llvmpipe, there is no flush since wall time would count it); torch_decode.py does the same.
 * --torch FILE merges torch_decode.py's rows (same shapes) and adds leanStreamK / torch ratios.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import {
  type AttentionProblem,
  accuracy,
  softmaxAttentionReference,
  toleranceFor,
} from '@attnkit/attention';
import {
  defaultLeanSplits,
  defaultLeanWorkers,
  type LeanPartition,
  leanAttention,
} from '@attnkit/lean-attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import {
  BufferPool,
  createWebGpuContext,
  emptyWebGpu,
  GpuProfiler,
  toWebGpu,
  webGpuStorageOf,
} from '@attnkit/webgpu';
import {
  type DecodeTuning,
  decodeLayout,
  decodeSpecFor,
  setDecodeTuning,
} from '../../packages/skeleton/src/webgpu/decode.js';
import { benchDisabledToggles, benchToggles, median, timeCall } from './common.js';

const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const flag = (name: string) => args.includes(`--${name}`);
const list = (name: string, dflt: number[]) =>
  value(name) ? value(name)!.split(',').map(Number) : dflt;

const QUICK = flag('quick');
const REPEATS = Number(value('repeats') ?? (QUICK ? 3 : 10));
const HQ = QUICK ? 8 : 32;
const D = QUICK ? 64 : 128;
const BATCHES = list('batch', QUICK ? [1, 2] : [1, 8]);
const HKVS = list('hkv', QUICK ? [8, 2] : [32, 8]);
const NKS = list('nk', QUICK ? [512, 2048] : [8192, 32768, 131072, 262144]);
const CEILING_BYTES = Number(value('ceiling-mib') ?? (QUICK ? 32 : 1024)) * 2 ** 20;
const FLUSH = !flag('no-flush');
const FLUSH_BYTES = (QUICK ? 8 : 256) * 2 ** 20;
const PARTITIONS = (value('partitions')?.split(',') ?? [
  'fa2',
  'splitK',
  'streamK',
]) as LeanPartition[];
for (const p of PARTITIONS)
  if (p !== 'fa2' && p !== 'splitK' && p !== 'streamK')
    throw new Error(`--partitions: expected fa2, splitK or streamK, got ${p}`);
const WORKERS = value('workers') ? list('workers', []) : undefined;
const SPLITS = value('splits') ? list('splits', []) : undefined;

/** A --tunings entry: 'default', or letters t/l/r/u with a number, w and p (see the header). */
function parseTuning(text: string): DecodeTuning | undefined {
  if (text === 'default') return undefined;
  const t: DecodeTuning = {};
  const keys = { t: 'threads', l: 'lanes', r: 'rowsPerThread', u: 'unroll' } as const;
  const rest = text.replace(/([tlru])(\d+)|w|p/g, (m, k: keyof typeof keys | undefined, n) => {
    if (k) t[keys[k]] = Number(n);
    else if (m === 'p') t.prefetch = true;
    else t.reduce = 'workgroup';
    return '';
  });
  if (rest !== '' || Object.keys(t).length === 0)
    throw new Error(
      `--tunings: expected 'default' or letters t/l/r/u with numbers, w and p, got ${text}`,
    );
  return t;
}
const TUNINGS = (value('tunings')?.split(',') ?? ['default']).map((name) => ({
  name,
  tuning: parseTuning(name),
}));

/** The partition's sweep: its options and what the row records (workers / splits). */
function variants(
  partition: LeanPartition,
  batch: number,
  units: number,
): { workers?: number; splits?: number }[] {
  if (partition === 'splitK')
    return (SPLITS ?? [defaultLeanSplits('webgpu', batch)]).map((splits) => ({ splits }));
  if (partition === 'streamK')
    return (WORKERS ?? [defaultLeanWorkers('webgpu', units)]).map((workers) => ({ workers }));
  return [{}];
}

const ctx = await createWebGpuContext({
  dawnToggles: benchToggles(),
  disabledDawnToggles: benchDisabledToggles(),
});
// --binding-limit BYTES: plan against a lower binding limit than the device's (the kernels plan
// from ctx.limits), so small shapes take the binding-chunk path (a check of it on llvmpipe).
const bindingLimit = value('binding-limit');
if (bindingLimit !== undefined)
  (ctx as unknown as { limits: object }).limits = {
    ...ctx.limits,
    maxStorageBufferBindingSize: Number(bindingLimit),
  };
console.log(
  `adapter ${JSON.stringify(ctx.adapterInfo)} backend=${ctx.backend} features=${JSON.stringify(ctx.features)}`,
);
console.log(
  `limits maxStorageBufferBindingSize=${ctx.limits.maxStorageBufferBindingSize} maxBufferSize=${ctx.limits.maxBufferSize}`,
);
const out: Record<string, unknown> = {
  adapter: ctx.adapterInfo,
  features: ctx.features,
  limits: ctx.limits,
  config: {
    quick: QUICK,
    repeats: REPEATS,
    hq: HQ,
    d: D,
    nq: 1,
    dtype: 'f16',
    flushL2: FLUSH,
    partitions: PARTITIONS,
    workers: WORKERS ?? null,
    splits: SPLITS ?? null,
    tunings: TUNINGS.map((t) => t.name),
  },
};
let failures = 0;
const save = (partial: boolean) => {
  if (value('out'))
    writeFileSync(value('out')!, `${JSON.stringify({ ...out, partial }, null, 2)}\n`);
};

// ---------------------------------------------------------------------------------------------
// 1. Verification.

async function verify() {
  const rows: unknown[] = [];
  const tol = toleranceFor({ dtype: 'f16' });
  // Odd Nk (not a multiple of any key tile), GQA 4:1, MQA, Hq == Hkv, B > 1, and one long enough
  // that stream-K's ranges cross head boundaries with the default 528 workers.
  const cases = [
    { b: 1, hq: 4, hkv: 4, nk: 77, d: 64 },
    { b: 2, hq: 8, hkv: 2, nk: 1001, d: 128 },
    { b: 3, hq: 4, hkv: 1, nk: 333, d: 128 },
    { b: 1, hq: 32, hkv: 8, nk: QUICK ? 2049 : 8191, d: 128 },
  ];
  for (const [n, c] of cases.entries()) {
    const rng = new Rng(500 + n);
    const q = rng.randn([c.b, c.hq, 1, c.d]).astype('f16');
    const k = rng.randn([c.b, c.hkv, c.nk, c.d]).astype('f16');
    const v = rng.randn([c.b, c.hkv, c.nk, c.d]).astype('f16');
    const ref = softmaxAttentionReference(q, k, v);
    const g = [q, k, v].map((t) => toWebGpu(t, ctx));
    for (const { name: tname, tuning } of TUNINGS)
      for (const partition of PARTITIONS)
        for (const used of variants(partition, c.b, c.b * c.hq)) {
          const name = `B${c.b} Hq${c.hq} Hkv${c.hkv} Nk${c.nk} D${c.d} ${JSON.stringify(used)} tuning ${tname}`;
          ctx.poisonOutputs = true;
          setDecodeTuning(tuning);
          try {
            const r = await leanAttention(g[0]!, g[1]!, g[2]!, { partition, ...used });
            const eo = accuracy(await r.o.toCpu(), ref.o);
            const el = accuracy(await r.lse.toCpu(), ref.lse as Tensor);
            r.o.dispose();
            r.lse.dispose();
            const ok = eo.relL2 <= tol && el.relL2 <= tol && eo.nonFinite + el.nonFinite === 0;
            if (!ok) failures++;
            console.log(
              `${ok ? 'ok  ' : 'FAIL'} verify ${partition} ${name}: o ${eo.relL2.toExponential(2)} lse ${el.relL2.toExponential(2)} (nonfinite ${eo.nonFinite + el.nonFinite}); tol ${tol}`,
            );
            rows.push({ partition, ...c, ...used, tuning: tname, ok, o: eo.relL2, lse: el.relL2 });
          } catch (e) {
            failures++;
            const msg = (e as Error).message.slice(0, 300);
            console.log(`FAIL verify ${partition} ${name}: ${msg}`);
            rows.push({ partition, ...c, ...used, tuning: tname, ok: false, error: msg });
          } finally {
            ctx.poisonOutputs = false;
            setDecodeTuning(undefined);
          }
        }
    for (const t of g) t.dispose();
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// 2. The bandwidth probes (WGSL, outside the kernel library: raw pipelines on ctx.device).

const WG = 256;
const COPY_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = arrayLength(&src);
  let stride = nwg.x * ${WG}u;
  for (var i = gid.x; i < n; i += stride) { dst[i] = src[i]; }
}`;
// Sum of every u32 (integer adds: no float work in the way), a workgroup tree, one u32 out per
// workgroup (a few KiB against >= 1 GiB read).
const READ_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
var<workgroup> part: array<u32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = arrayLength(&src);
  let stride = nwg.x * ${WG}u;
  var acc = vec4<u32>(0u);
  for (var i = gid.x; i < n; i += stride) { acc += src[i]; }
  part[li] = acc.x + acc.y + acc.z + acc.w;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (li < s) { part[li] += part[li + s]; }
    workgroupBarrier();
  }
  if (li == 0u) { dst[wid.x] = part[0]; }
}`;
// Overwrites a buffer larger than the L2 between timed calls.
const FILL_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> dst: array<vec4<u32>>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = arrayLength(&dst);
  for (var i = gid.x; i < n; i += nwg.x * ${WG}u) { dst[i] = vec4<u32>(i); }
}`;

const device = ctx.device;
function pipeline(code: string) {
  return device.createComputePipeline({
    layout: 'auto',
    compute: { module: device.createShaderModule({ code }), entryPoint: 'main' },
  });
}
const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

/** Runs one dispatch of `pipe` over `buffers`, timed by a timestamp query when the device has them. */
async function runProbe(
  pipe: GPUComputePipeline,
  buffers: GPUBuffer[],
  groups: number,
  profiler?: GpuProfiler,
): Promise<number> {
  const bind = device.createBindGroup({
    layout: pipe.getBindGroupLayout(0),
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const t0 = performance.now();
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass(
    profiler ? { timestampWrites: profiler.passTimestamps('probe') } : {},
  );
  pass.setPipeline(pipe);
  pass.setBindGroup(0, bind);
  pass.dispatchWorkgroups(groups);
  pass.end();
  profiler?.resolve(enc);
  device.queue.submit([enc.finish()]);
  await device.queue.onSubmittedWorkDone();
  const wall = performance.now() - t0;
  if (!profiler) return wall;
  const t = await profiler.read();
  return t.reduce((a, p) => a + p.ns, 0) / 1e6;
}

let fillPipe: GPUComputePipeline | undefined;
let fillBuf: GPUBuffer | undefined;
/**
 * Evicts the L2 before a timed call (its pass gets no timestamps, so it is not counted). Without
 * timestamp queries the wall time would include it, so then there is no flush.
 */
async function flushL2() {
  if (!FLUSH || !ctx.features.timestampQuery) return;
  fillPipe ??= pipeline(FILL_WGSL);
  fillBuf ??= device.createBuffer({ size: FLUSH_BYTES, usage: STORAGE });
  const bind = device.createBindGroup({
    layout: fillPipe.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer: fillBuf } }],
  });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(fillPipe);
  pass.setBindGroup(0, bind);
  pass.dispatchWorkgroups(Math.min(4096, FLUSH_BYTES / 16 / WG));
  pass.end();
  device.queue.submit([enc.finish()]);
}

async function ceiling() {
  const limit = Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize);
  const bytes = Math.floor(Math.min(CEILING_BYTES, limit) / 16) * 16;
  const profiler = ctx.features.timestampQuery ? new GpuProfiler(device, 4) : undefined;
  const src = device.createBuffer({ size: bytes, usage: STORAGE });
  const dst = device.createBuffer({ size: bytes, usage: STORAGE });
  const maxGroups = ctx.limits.maxComputeWorkgroupsPerDimension;
  const grids = (QUICK ? [64, 256] : [1056, 4224, 16896, 65535]).filter((g) => g <= maxGroups);
  const red = device.createBuffer({ size: Math.max(...grids) * 4, usage: STORAGE });
  const copyPipe = pipeline(COPY_WGSL);
  const readPipe = pipeline(READ_WGSL);
  // Contents do not matter for bandwidth; fill once so the reads see written pages.
  await runProbe(pipeline(FILL_WGSL), [src], Math.min(4096, maxGroups));
  const measure = async (pipe: GPUComputePipeline, bufs: GPUBuffer[], groups: number) => {
    const warm = performance.now();
    for (let i = 0; i < 3 || performance.now() - warm < (QUICK ? 50 : 300); i++)
      await runProbe(pipe, bufs, groups);
    const ms: number[] = [];
    for (let i = 0; i < REPEATS; i++) ms.push(await runProbe(pipe, bufs, groups, profiler));
    return median(ms);
  };
  const best = { read: { ms: Infinity, groups: 0 }, copy: { ms: Infinity, groups: 0 } };
  for (const groups of grids) {
    const r = await measure(readPipe, [src, red], groups);
    const c = await measure(copyPipe, [src, dst], groups);
    console.log(
      `ceiling grid ${groups}x${WG}: read ${((bytes / r) * 1e-6).toFixed(1)} GB/s (${r.toFixed(3)} ms), copy ${(((2 * bytes) / c) * 1e-6).toFixed(1)} GB/s read+write (${c.toFixed(3)} ms)`,
    );
    if (r < best.read.ms) best.read = { ms: r, groups };
    if (c < best.copy.ms) best.copy = { ms: c, groups };
  }
  for (const b of [src, dst, red]) b.destroy();
  profiler?.destroy();
  const res = {
    bytes,
    timing: profiler ? 'timestamp' : 'wall',
    readGbps: (bytes / best.read.ms) * 1e-6,
    readMs: best.read.ms,
    readGrid: best.read.groups,
    copyGbps: ((2 * bytes) / best.copy.ms) * 1e-6,
    copyReadGbps: (bytes / best.copy.ms) * 1e-6,
    copyMs: best.copy.ms,
    copyGrid: best.copy.groups,
    ceiling: 'read' as const,
  };
  console.log(
    `ceiling (${(bytes / 2 ** 20).toFixed(0)} MiB, ${res.timing}): read-only ${res.readGbps.toFixed(1)} GB/s [THE CEILING]; copy ${res.copyGbps.toFixed(1)} GB/s read+write (${res.copyReadGbps.toFixed(1)} GB/s of it read)`,
  );
  return res;
}

// ---------------------------------------------------------------------------------------------
// 3. The table.

// Every element of K and V its own value (uniform in [-1, 1)): a hash of its index and a seed, so
// every kv head differs (checkChunked would not see a chunk bound at the wrong head otherwise).
const HASH_FILL_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> dst: array<u32>;
@group(0) @binding(1) var<uniform> P: vec4<u32>; // first word (global), seed, words
fn mix(x: u32) -> u32 {
  var h = x * 0x9E3779B1u;
  h ^= h >> 16u; h *= 0x85EBCA6Bu; h ^= h >> 13u; h *= 0xC2B2AE35u; h ^= h >> 16u;
  return h;
}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  for (var i = gid.x; i < P.z; i += nwg.x * ${WG}u) {
    let h = mix((P.x + i) ^ mix(P.y));
    let lo = f32(h & 0xffffu) / 32768.0 - 1.0;
    let hi = f32(h >> 16u) / 32768.0 - 1.0;
    dst[i] = pack2x16float(vec2<f32>(lo, hi));
  }
}`;
let hashPipe: GPUComputePipeline | undefined;

/** A webgpu f16 tensor of `shape`, filled on the GPU by HASH_FILL_WGSL (1 GiB ranges at a time). */
function bigF16(shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, x) => a * x, 1);
  const t = emptyWebGpu(shape, 'f16', ctx);
  const buf = webGpuStorageOf(t, 'bench').buffer;
  hashPipe ??= pipeline(HASH_FILL_WGSL);
  // K and V reach 16 GiB here: filled 1 GiB (a binding range) at a time.
  const words = Math.ceil(n / 2);
  const step = 2 ** 28;
  const enc = device.createCommandEncoder();
  const uniforms: GPUBuffer[] = [];
  for (let w0 = 0; w0 < words; w0 += step) {
    const m = Math.min(step, words - w0);
    const u = device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(u, 0, new Uint32Array([w0, seed, m, 0]));
    uniforms.push(u);
    const bind = device.createBindGroup({
      layout: hashPipe.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: buf, offset: w0 * 4, size: m * 4 } },
        { binding: 1, resource: { buffer: u } },
      ],
    });
    const pass = enc.beginComputePass();
    pass.setPipeline(hashPipe);
    pass.setBindGroup(0, bind);
    pass.dispatchWorkgroups(Math.min(4096, Math.ceil(m / WG)));
    pass.end();
  }
  device.queue.submit([enc.finish()]);
  void device.queue.onSubmittedWorkDone().then(() => {
    for (const u of uniforms) u.destroy();
  });
  return t;
}

interface Row {
  partition: LeanPartition;
  B: number;
  hq: number;
  hkv: number;
  nk: number;
  d: number;
  splits?: number;
  workers?: number;
  tuning?: string;
  ms?: number;
  minMs?: number;
  gbps?: number;
  fractionOfCeiling?: number;
  fractionOfCopy?: number;
  firstCallMs?: number;
  timing?: string;
  /** First pass start to last pass end (several launches: the gaps between them included). */
  spanMs?: number;
  skipped?: string;
  error?: string;
}

async function table(ceil: { readGbps: number; copyGbps: number }) {
  const rows: Row[] = [];
  // Past one binding the forward runs in chunks; past one buffer nothing can hold K.
  const limit = ctx.limits.maxBufferSize;
  for (const B of BATCHES)
    for (const hkv of HKVS)
      for (const nk of NKS) {
        const kvBytes = B * hkv * nk * D * 2; // one of K, V
        const base = { B, hq: HQ, hkv, nk, d: D };
        if (kvBytes > limit) {
          const why = `K and V each ${(kvBytes / 2 ** 30).toFixed(2)} GiB > max buffer ${limit} bytes`;
          console.log(`skip B${B} Hkv${hkv} Nk${nk}: ${why}`);
          for (const partition of PARTITIONS) rows.push({ partition, ...base, skipped: why });
          continue;
        }
        let q: Tensor | undefined;
        let k: Tensor | undefined;
        let v: Tensor | undefined;
        try {
          q = toWebGpu(new Rng(1).randn([B, HQ, 1, D]).astype('f16'), ctx);
          k = bigF16([B, hkv, nk, D], 2);
          v = bigF16([B, hkv, nk, D], 3);
          await ctx.sync();
        } catch (e) {
          const msg = (e as Error).message.slice(0, 300);
          console.log(`skip B${B} Hkv${hkv} Nk${nk}: allocation failed: ${msg}`);
          for (const partition of PARTITIONS) rows.push({ partition, ...base, error: msg });
          for (const t of [q, k, v]) t?.dispose();
          continue;
        }
        for (const { name: tname, tuning } of TUNINGS)
          for (const partition of PARTITIONS)
            for (const used of variants(partition, B, B * HQ)) {
              setDecodeTuning(tuning);
              const label = { ...used, ...(tuning ? { tuning: tname } : {}) };
              try {
                const t0 = performance.now();
                const first = await leanAttention(q, k, v, { partition, ...used });
                await ctx.sync();
                const firstCallMs = performance.now() - t0;
                try {
                  // Chunked, or bound as the prefix of a pooled buffer larger than a binding
                  // (BufferPool's size classes round 1.94-2 GiB up to 2 GiB).
                  const max = ctx.limits.maxStorageBufferBindingSize;
                  if (kvBytes > max || BufferPool.sizeClass(kvBytes) > max)
                    await checkChunked(q, k, v, first, partition, used, label);
                } finally {
                  first.o.dispose();
                  first.lse.dispose();
                }
                const t = await timeCall(
                  ctx,
                  async (profiler) => {
                    await flushL2();
                    const r = await leanAttention(q!, k!, v!, {
                      partition,
                      ...used,
                      ...(profiler ? { profiler } : {}),
                    });
                    return { o: r.o, lse: r.lse };
                  },
                  REPEATS,
                );
                const gbps = ((2 * kvBytes) / t.medianMs) * 1e-6;
                const row: Row = {
                  partition,
                  ...base,
                  ...used,
                  tuning: tname,
                  ms: t.medianMs,
                  minMs: t.minMs,
                  ...(t.spanMs !== undefined ? { spanMs: t.spanMs } : {}),
                  gbps,
                  fractionOfCeiling: gbps / ceil.readGbps,
                  fractionOfCopy: gbps / ceil.copyGbps,
                  firstCallMs,
                  timing: t.timing,
                };
                rows.push(row);
                console.log(
                  `row ${partition.padEnd(7)} B${B} Hq${HQ} Hkv${hkv} Nk${nk} ${JSON.stringify(label)}: ${t.medianMs.toFixed(4)} ms ${gbps.toFixed(1)} GB/s ${(100 * row.fractionOfCeiling!).toFixed(1)}% of read ceiling (${t.timing}${t.spanMs !== undefined ? `, span ${t.spanMs.toFixed(4)} ms` : ''})`,
                );
              } catch (e) {
                const msg = (e as Error).message.slice(0, 300);
                rows.push({ partition, ...base, ...used, tuning: tname, error: msg });
                console.log(
                  `row ${partition} B${B} Hkv${hkv} Nk${nk} ${JSON.stringify(label)}: ERROR ${msg}`,
                );
              } finally {
                setDecodeTuning(undefined);
              }
              out.table = rows;
              save(true);
            }
        for (const t of [q, k, v]) t.dispose();
      }
  return rows;
}

/**
 * A call past one binding ran in chunks (K/V bound at offsets, o / lse copied into place): its
 * rows at the batch entries and kv heads either side of the cuts the planner makes here (halves:
 * entries 0, B/2 - 1, B/2, B - 1 and kv heads 0, Hkv/2 - 1, Hkv/2, Hkv - 1), against the same call on that kv head
 * alone (its K, V and query rows copied into tensors of their own: one binding, no chunks).
 * f16 o within 2e-3 relative L2 and lse within 1e-5; a miss counts as a verification failure.
 */
async function checkChunked(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  full: { o: Tensor; lse: Tensor },
  partition: LeanPartition,
  used: Record<string, number>,
  label: unknown,
) {
  const [B, hq, , d] = q.shape as [number, number, number, number];
  const [, hkv, nk] = k.shape as [number, number, number, number];
  const g = hq / hkv;
  const o = (await full.o.toCpu()).toFloat32Array();
  const lse = (await full.lse.toCpu()).toFloat32Array();
  const halves = (n: number) =>
    [...new Set([0, Math.floor(n / 2) - 1, Math.floor(n / 2), n - 1])].filter((x) => x >= 0);
  const heads = halves(hkv);
  const entries = halves(B);
  let worstO = 0;
  let worstL = 0;
  for (const b of entries)
    for (const h of heads) {
      const part = (t: Tensor, shape: number[], at: number, n: number) => {
        const x = emptyWebGpu(shape, 'f16', ctx);
        const enc = device.createCommandEncoder();
        enc.copyBufferToBuffer(
          webGpuStorageOf(t, 'check').buffer,
          at * 2,
          webGpuStorageOf(x, 'check').buffer,
          0,
          n * 2,
        );
        device.queue.submit([enc.finish()]);
        return x;
      };
      const kh = part(k, [1, 1, nk, d], (b * hkv + h) * nk * d, nk * d);
      const vh = part(v, [1, 1, nk, d], (b * hkv + h) * nk * d, nk * d);
      const qh = part(q, [1, g, 1, d], (b * hq + h * g) * d, g * d);
      const r = await leanAttention(qh, kh, vh, { partition, ...used });
      const ro = (await r.o.toCpu()).toFloat32Array();
      const rl = (await r.lse.toCpu()).toFloat32Array();
      let num = 0;
      let den = 0;
      for (let i = 0; i < g * d; i++) {
        const x = o[(b * hq + h * g) * d + i]!;
        num += (x - ro[i]!) ** 2;
        den += ro[i]! ** 2;
        if (!Number.isFinite(x)) num = Number.POSITIVE_INFINITY;
      }
      worstO = Math.max(worstO, Math.sqrt(num / den));
      for (let i = 0; i < g; i++)
        worstL = Math.max(worstL, Math.abs(lse[b * hq + h * g + i]! - rl[i]!) / Math.abs(rl[i]!));
      for (const t of [kh, vh, qh, r.o, r.lse]) t.dispose();
    }
  const ok = worstO <= 2e-3 && worstL <= 1e-5;
  if (!ok) failures++;
  console.log(
    `${ok ? 'ok  ' : 'FAIL'} chunked B${B} Hkv${hkv} Nk${nk} ${partition} ${JSON.stringify(label)}: o vs one-head calls relL2 ${worstO.toExponential(2)}, lse rel ${worstL.toExponential(2)} (batch entries ${entries}, kv heads ${heads})`,
  );
}

interface TorchRow {
  impl: string;
  B: number;
  hq: number;
  hkv: number;
  nk: number;
  ms?: number;
  gbps?: number;
  error?: string;
}

function ratios(rows: Row[], torch: TorchRow[] | undefined) {
  const key = (r: { B: number; hkv: number; nk: number }) => `${r.B}/${r.hkv}/${r.nk}`;
  const groups = new Map<string, Row[]>();
  for (const r of rows) groups.set(key(r), [...(groups.get(key(r)) ?? []), r]);
  const res: Record<string, unknown>[] = [];
  for (const [, rs] of groups) {
    // A partition's best row of the shape (the sweeps' fastest).
    const by = (p: LeanPartition) =>
      rs.filter((r) => r.partition === p && r.ms !== undefined).sort((a, b) => a.ms! - b.ms!)[0];
    const fa2 = by('fa2');
    const sk = by('streamK');
    const split = by('splitK');
    const r0 = rs[0]!;
    const t = torch
      ?.filter((x) => x.B === r0.B && x.hkv === r0.hkv && x.nk === r0.nk && x.ms !== undefined)
      .sort((a, b) => a.ms! - b.ms!)[0];
    res.push({
      B: r0.B,
      hq: r0.hq,
      hkv: r0.hkv,
      nk: r0.nk,
      streamKOverFa2: sk && fa2 ? fa2.ms! / sk.ms! : null, // speed-up: > 1 means stream-K faster
      streamKOverSplitK: sk && split ? split.ms! / sk.ms! : null,
      streamKFractionOfCeiling: sk?.fractionOfCeiling ?? null,
      bestStreamK: sk ? { workers: sk.workers, tuning: sk.tuning } : null,
      bestSplitK: split ? { splits: split.splits, tuning: split.tuning } : null,
      torchImpl: t?.impl ?? null,
      torchMs: t?.ms ?? null,
      torchGbps: t?.gbps ?? null,
      streamKOverTorch: sk && t ? t.ms! / sk.ms! : null, // > 1: stream-K faster than PyTorch
      skipped: r0.skipped ?? null,
    });
  }
  return res;
}

const f = (x: unknown, d = 2) => (typeof x === 'number' ? x.toFixed(d) : '-');

function printTable(rows: Row[], rat: Record<string, unknown>[], torch: TorchRow[] | undefined) {
  console.log('\ntable (Hq %d, D %d, Nq 1, f16; GB/s = K+V bytes read / median time)', HQ, D);
  console.log(
    'B  Hkv      Nk | fa2 ms   GB/s  %ceil | splitK ms GB/s  %ceil | streamK ms GB/s  %ceil | sK/fa2 | torch ms  GB/s  sK/torch',
  );
  for (const r of rat) {
    const cell = (p: LeanPartition) => {
      const x = rows
        .filter((y) => y.partition === p && y.B === r.B && y.hkv === r.hkv && y.nk === r.nk)
        .sort((a, b) => (a.ms ?? Infinity) - (b.ms ?? Infinity))[0];
      if (!x || x.ms === undefined) return `${(x?.skipped ? 'skipped' : 'error').padStart(21)}`;
      return `${f(x.ms, 4).padStart(8)} ${f(x.gbps, 1).padStart(6)} ${f(100 * x.fractionOfCeiling!, 1).padStart(5)}`;
    };
    console.log(
      `${String(r.B).padEnd(2)} ${String(r.hkv).padStart(3)} ${String(r.nk).padStart(7)} | ${cell('fa2')} | ${cell('splitK')}  | ${cell('streamK')}   | ${f(r.streamKOverFa2).padStart(6)} | ${f(r.torchMs, 4).padStart(8)} ${f(r.torchGbps, 1).padStart(5)} ${f(r.streamKOverTorch).padStart(8)}`,
    );
  }
  if (torch)
    console.log(`torch rows: ${torch.length} (best impl per shape shown; all in the JSON)`);
  const swept = (WORKERS?.length ?? 0) > 1 || (SPLITS?.length ?? 0) > 1 || TUNINGS.length > 1;
  if (!swept) return;
  // Every row of the sweeps, per shape, fastest first.
  console.log('\nsweep (per shape, fastest first): partition workers/splits tuning ms GB/s %ceil');
  for (const r of rat) {
    const mine = rows
      .filter((y) => y.B === r.B && y.hkv === r.hkv && y.nk === r.nk && y.ms !== undefined)
      .sort((a, b) => a.ms! - b.ms!);
    console.log(`B${r.B} Hkv${r.hkv} Nk${r.nk}:`);
    for (const x of mine)
      console.log(
        `  ${x.partition.padEnd(7)} ${String(x.workers ?? x.splits ?? '-').padStart(5)} ${(x.tuning ?? 'default').padEnd(10)} ${f(x.ms, 4).padStart(8)} ${f(x.gbps, 1).padStart(7)} ${f(100 * x.fractionOfCeiling!, 1).padStart(5)}`,
      );
  }
}

async function main() {
  console.log(
    `defaults: splitK splits=${defaultLeanSplits('webgpu', 1)} at B 1 (batch x splits <= 64); streamK workers=${defaultLeanWorkers('webgpu', 1)} (same for every shape); fa2: one workgroup per (batch, kv head)`,
  );
  console.log(
    `sweeps: partitions ${PARTITIONS.join(',')}; workers ${WORKERS?.join(',') ?? 'default'}; splits ${SPLITS?.join(',') ?? 'default'}; tunings ${TUNINGS.map((t) => t.name).join(',')}`,
  );
  // The decode kernel's layout for the table's shapes (GQA group Hq / Hkv rows, Nq 1).
  for (const { name, tuning } of TUNINGS)
    for (const hkv of HKVS) {
      setDecodeTuning(tuning);
      try {
        const rows = HQ / hkv;
        const p = { d: D, dv: D, group: rows, maxSeqQ: 1 } as AttentionProblem;
        const spec = decodeSpecFor(
          p,
          'f16',
          'streamK',
          { uniforms: [], bindings: [] },
          ctx.features,
          ctx.limits,
        );
        console.log(
          `decode layout, tuning ${name}, Hkv ${hkv} (${rows} rows): ${JSON.stringify(decodeLayout(spec))}`,
        );
      } catch (e) {
        console.log(`decode layout, tuning ${name}, Hkv ${hkv}: ${(e as Error).message}`);
      } finally {
        setDecodeTuning(undefined);
      }
    }
  if (!flag('skip-verify')) {
    out.verify = await verify();
    console.log(`verification failures: ${failures}`);
    save(true);
  }
  const ceil = await ceiling();
  out.ceiling = ceil;
  save(true);
  const rows = await table(ceil);
  let torch: TorchRow[] | undefined;
  const tf = value('torch');
  if (tf) {
    try {
      const j = JSON.parse(readFileSync(tf, 'utf8')) as { rows: TorchRow[] };
      torch = j.rows;
      out.torch = j;
    } catch (e) {
      console.log(`--torch ${tf}: ${(e as Error).message}`);
    }
  }
  const rat = ratios(rows, torch);
  out.table = rows;
  out.ratios = rat;
  out.failures = failures;
  printTable(rows, rat, torch);
  save(false);
  console.log(`verification failures: ${failures}`);
  ctx.destroy();
  process.exit(failures > 0 ? 1 : 0);
}

await main();
