/**
 * Issue 20 micro-probe (device machine): what one subgroup-matrix operation costs on this
 * driver, so the tensor-core FA2's time can be split into its parts. Each variant is a tiny
 * kernel whose loop does one kind of work many times; the GPU time per loop iteration per
 * subgroup, in SM cycles at the H200's max clock (the clocks sampled beside it say whether it
 * ran there), is the cost. Pipelines through @attnkit/webgpu's cache (async, time-limited),
 * timing through its profiler: the path the FA2 benches run on.
 *   node bench-tc-micro.mjs [--variants a,b,...] [--out micro.json] [--print VARIANT]
 * Run on the H200 by benchmarks/gpu/h200-tc-micro.sh.
 */
import { writeFileSync } from 'node:fs';
import { createWebGpuContext, GpuProfiler } from '@attnkit/webgpu';
import { benchToggles } from './common.js';

/**
 * name -> { acc, body, note }. Per iteration every subgroup does `body`; `mmas` counts the
 * 16x16x16 multiply-accumulates it issues (2 * 16^3 FLOPs each). Addresses depend on `it` so
 * that no load is loop-invariant (the driver hoisted such loads out of loops before, run 11).
 */
const R = 8; // independent accumulators: enough to cover the MMA latency
const VARIANTS: Record<string, { acc: 'f32' | 'f16'; mmas: number; body: string; nest?: boolean }> =
  {
    // MMA throughput alone: operands in registers, R independent accumulators.
    'mma-f32': { acc: 'f32', mmas: R, body: mmaAll('a0', 'b0') },
    'mma-f16': { acc: 'f16', mmas: R, body: mmaAll('a0', 'b0') },
    // One workgroup-memory load (left, row-major) feeding R MMAs / 1 MMA.
    'wgL-1:8': {
      acc: 'f32',
      mmas: R,
      body: `let a = ${loadL('W', wOff(), 'PAD')};\n${mmaAll('a', 'b0')}`,
    },
    'wgL-1:1': {
      acc: 'f32',
      mmas: 1,
      body: `let a = ${loadL('W', wOff(), 'PAD')};\nc0 = subgroupMatrixMultiplyAccumulate(a, b0, c0);`,
    },
    // Right matrix, column-major (how K^T and V are read): one load per MMA.
    'wgR-1:1': {
      acc: 'f32',
      mmas: 1,
      body: `let b = ${loadR('W', wOff(), 'PAD', true)};\nc0 = subgroupMatrixMultiplyAccumulate(a0, b, c0);`,
    },
    'wgRrow-1:1': {
      acc: 'f32',
      mmas: 1,
      body: `let b = ${loadR('W', wOff(), 'PAD', false)};\nc0 = subgroupMatrixMultiplyAccumulate(a0, b, c0);`,
    },
    // Eight independent left loads, eight MMAs (the attention kernel's ratio, loads in flight).
    'wgL-8:8': { acc: 'f32', mmas: R, body: eightLoads('W', 'PAD') },
    // Eight column-major right loads (K^T / V tiles), eight MMAs.
    'wgR-8:8': { acc: 'f32', mmas: R, body: eightLoads('W', 'PAD', true) },
    // wgL-8:8 with every offset masked to a multiple of 8 halves (16 bytes), in case the driver
    // needs to see the alignment to use wide shared-memory loads.
    'wgL-8:8-al': { acc: 'f32', mmas: R, body: eightLoads('W', 'PAD', false, true) },
    // wgL-8:8 with W declared as 8 blocks of 16 rows (array<array<f16, 16 * PAD>, 8>) and each
    // load addressing its block &W[i] at a constant offset: Tint's robustness can then prove the
    // load in bounds at compile time and leave out the `if (in bounds)` it puts around a load at
    // a dynamic offset (the tensor-core kernels' constOffsets).
    'wgL-8:8-const': {
      acc: 'f32',
      mmas: R,
      body: eightLoads('W', 'PAD', false, false, true),
      nest: true,
    },
    'wgR-8:8-const': {
      acc: 'f32',
      mmas: R,
      body: eightLoads('W', 'PAD', true, false, true),
      nest: true,
    },
    // Unpadded rows (stride 128 halves = 256 bytes: the bank-conflict case of run 12).
    'wgL-8:8-nopad': { acc: 'f32', mmas: R, body: eightLoads('W', '128u') },
    // The same from a storage buffer (L1/L2 hits: a 64 KiB region).
    'stL-8:8': { acc: 'f32', mmas: R, body: eightLoads('A', '128u') },
    // The S round trip: store an f32 result to workgroup memory, convert the subgroup's 16x16
    // to f16 with scalar code (8 elements per lane), load it back as a left matrix, 1 MMA.
    rt: {
      acc: 'f32',
      mmas: 1,
      body: `subgroupMatrixStore(&Wf, sg * 256u, c1, false, 16u);
workgroupBarrier();
for (var e = 0u; e < 8u; e++) { let i = sg * 256u + lane * 8u + e; Wh[i] = f16(Wf[i]); }
workgroupBarrier();
let p = ${loadL('Wh', 'sg * 256u', '16u')};
c1 = subgroupMatrixMultiplyAccumulate(p, b0, c1);`,
    },
    // Only the barriers of the round trip (what two workgroupBarriers cost per iteration).
    barriers: {
      acc: 'f32',
      mmas: 1,
      body: `workgroupBarrier();\nworkgroupBarrier();\nc0 = subgroupMatrixMultiplyAccumulate(a0, b0, c0);`,
    },
    // Staging: every lane copies 16 bytes storage -> workgroup as 8 scalar f16 stores (how the
    // kernels stage K/V tiles), 1 MMA beside it.
    stage8: {
      acc: 'f32',
      mmas: 1,
      body: `let v = A4[(it * 128u + lid) & 4095u];
let base = ((it & 7u) * 128u + lid) * 8u;
let h0 = bitcast<vec2<f16>>(v.x); let h1 = bitcast<vec2<f16>>(v.y);
let h2 = bitcast<vec2<f16>>(v.z); let h3 = bitcast<vec2<f16>>(v.w);
W[base] = h0.x; W[base + 1u] = h0.y; W[base + 2u] = h1.x; W[base + 3u] = h1.y;
W[base + 4u] = h2.x; W[base + 5u] = h2.y; W[base + 6u] = h3.x; W[base + 7u] = h3.y;
workgroupBarrier();
c0 = subgroupMatrixMultiplyAccumulate(a0, b0, c0);`,
    },
    // Staging through the matrix unit: a storage matrix load + a workgroup matrix store per lane
    // group (16x16 halves per subgroup), 1 MMA beside it.
    stageMat: {
      acc: 'f32',
      mmas: 1,
      body: `let t = ${loadL('A', '((it * 4u + sg) & 127u) * 256u', '16u')};
subgroupMatrixStore(&W, ((it & 7u) * 4u + sg) * 256u, t, false, 16u);
workgroupBarrier();
c0 = subgroupMatrixMultiplyAccumulate(a0, b0, c0);`,
    },
  };

function mmaAll(a: string, b: string): string {
  return Array.from(
    { length: R },
    (_, r) => `c${r} = subgroupMatrixMultiplyAccumulate(${a}, ${b}, c${r});`,
  ).join('\n');
}
function loadL(src: string, off: string, stride: string): string {
  return `subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&${src}, ${off}, false, ${stride})`;
}
function loadR(src: string, off: string, stride: string, colMajor: boolean): string {
  return `subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&${src}, ${off}, ${colMajor}, ${stride})`;
}
/** A 16-row block of the 128-wide, PAD-strided workgroup tile, varying with it and sg. */
function wOff(): string {
  return '(((it + sg) & 7u) * 16u) * PAD + ((it >> 3u) & 7u) * 16u';
}
/**
 * Eight loads (left, or right column-major) then eight MMAs. `nested`: W is 8 blocks of 16
 * rows and each load addresses its block &W[i] at a constant offset (the others compute a
 * dynamic offset into a flat array).
 */
function eightLoads(
  src: string,
  stride: string,
  right = false,
  align = false,
  nested = false,
): string {
  const lines: string[] = [];
  for (let r = 0; r < R; r++) {
    const at = `(((it + sg + ${r}u) & 7u) * 16u) * ${stride} + ${r * 16}u`;
    const [from, off] = nested
      ? [`${src}[(it + sg + ${r}u) & 7u]`, `${r * 16}u`]
      : [src, align ? `((${at}) & 0xfffffff8u)` : at];
    lines.push(
      `let a${r}x = ${right ? loadR(from, off, stride, true) : loadL(from, off, stride)};`,
    );
  }
  for (let r = 0; r < R; r++)
    lines.push(
      right
        ? `c${r} = subgroupMatrixMultiplyAccumulate(a0, a${r}x, c${r});`
        : `c${r} = subgroupMatrixMultiplyAccumulate(a${r}x, b0, c${r});`,
    );
  return lines.join('\n');
}

function shader(v: { acc: string; body: string; nest?: boolean }): string {
  const acc = v.acc;
  return `enable f16;
enable chromium_experimental_subgroup_matrix;
const PAD = 136u;
@group(0) @binding(0) var<storage, read> A: array<f16>;
@group(0) @binding(1) var<storage, read> A4: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> C: array<${acc}>;
@group(0) @binding(3) var<uniform> U: vec4<u32>;
var<workgroup> W: ${v.nest ? `array<array<f16, ${136 * 16}>, 8>` : `array<f16, ${136 * 128}>`};
var<workgroup> Wf: array<f32, 1024>;
var<workgroup> Wh: array<f16, 1024>;
@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(local_invocation_index) lid: u32) {
  for (var e = lid; e < ${136 * 128}u; e += 128u) { ${v.nest ? `W[e / ${136 * 16}u][e % ${136 * 16}u]` : 'W[e]'} = A[e & 32767u]; }
  for (var e = lid; e < 1024u; e += 128u) { Wf[e] = 0.0; Wh[e] = A[e]; }
  workgroupBarrier();
  let a0 = ${loadL('A', 'sg * 256u', '16u')};
  let b0 = ${loadR('A', '4096u + sg * 256u', '16u', true)};
  ${Array.from({ length: R }, (_, r) => `var c${r} = subgroup_matrix_result<${acc}, 16, 16>();`).join('\n  ')}
  let iters = U.x;
  for (var it = 0u; it < iters; it++) {
    ${v.body.split('\n').join('\n    ')}
  }
  let o = (wg.x * 4u + sg) * ${R * 256}u;
  ${Array.from({ length: R }, (_, r) => `subgroupMatrixStore(&C, o + ${r * 256}u, c${r}, false, 16u);`).join('\n  ')}
}`;
}

const argv = process.argv.slice(2);
const value = (name: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const printOne = value('print');
if (printOne) {
  console.log(shader(VARIANTS[printOne]!));
  process.exit(0);
}
const names = (value('variants') ?? Object.keys(VARIANTS).join(',')).split(',');
for (const n of names) {
  if (!VARIANTS[n]) {
    console.error(`--variants: expected names from ${Object.keys(VARIANTS).join(', ')}, got ${n}`);
    process.exit(2);
  }
}
const t0 = performance.now();
const log = (...a: unknown[]) =>
  console.log(`[${((performance.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const ctx = await createWebGpuContext({ pipelineTimeoutMs: 30_000, dawnToggles: benchToggles() });
log(`adapter ${JSON.stringify(ctx.adapterInfo)} toggles=${ctx.dawnToggles.join(',')}`);
const device = ctx.device;
// Random f16 operands (never zeros): uniform(-0.5, 0.5) halves.
const halves = new Uint16Array(65536);
{
  let seed = 12345;
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < halves.length; i++) {
    seed = (seed * 1664525 + 1013904223) >>> 0;
    f[0] = seed / 2 ** 32 - 0.5;
    const e = ((u[0]! >>> 23) & 0xff) - 112;
    halves[i] = ((u[0]! >>> 16) & 0x8000) | (e <= 0 ? 0 : (e << 10) | ((u[0]! >>> 13) & 0x3ff));
  }
}
const SMS = 132;
const WGS = SMS * 16;
const bA = ctx.createFromData(halves, 'micro A');
const bC = ctx.createStorageBuffer(WGS * 4 * R * 256 * 4, 'micro C');
const profiler = new GpuProfiler(device, 16);
const rows: unknown[] = [];
for (const name of names) {
  const v = VARIANTS[name]!;
  const iters =
    name.endsWith('1:1') || ['rt', 'barriers', 'stage8', 'stageMat'].includes(name) ? 1024 : 4096;
  const bU = ctx.createUniform(new Uint32Array([iters, 0, 0, 0]), 'micro U');
  try {
    const tc = performance.now();
    const program = await ctx.pipelines.get({
      code: shader(v),
      bindings: ['read', 'read', 'storage', 'uniform'],
      label: `micro ${name}`,
    });
    const compileS = (performance.now() - tc) / 1000;
    const step = { program, buffers: [bA, bA, bC, bU], workgroups: [WGS] as [number] };
    const warm = performance.now();
    while (performance.now() - warm < 800) {
      await ctx.dispatch([step]);
      await ctx.sync();
    }
    const ms: number[] = [];
    for (let i = 0; i < 9; i++) {
      await ctx.dispatch([step], profiler);
      await ctx.sync();
      ms.push((await profiler.read()).reduce((a, p) => a + p.ns, 0) / 1e6);
    }
    ms.sort((a, b) => a - b);
    const med = ms[4]!;
    const subgroupIters = WGS * 4 * iters;
    const cyc = (med * 1e-3 * 1.98e9 * SMS) / subgroupIters;
    const tflops = (subgroupIters * v.mmas * 2 * 16 ** 3) / (med * 1e-3) / 1e12;
    rows.push({
      variant: name,
      iters,
      ms: med,
      smCyclesPerSubgroupIter: cyc,
      mmaTflops: tflops,
      compileS,
    });
    log(
      `RESULT ${name}: ${med.toFixed(3)} ms, ${cyc.toFixed(1)} SM-cycles per subgroup-iteration, MMA ${tflops.toFixed(1)} TFLOP/s, compile ${compileS.toFixed(2)} s`,
    );
  } catch (e) {
    rows.push({ variant: name, error: (e as Error).message });
    log(`RESULT ${name}: error ${(e as Error).message.slice(0, 300)}`);
  } finally {
    bU.destroy();
  }
  const out = value('out');
  if (out)
    writeFileSync(
      out,
      `${JSON.stringify({ device: ctx.adapterInfo, workgroups: WGS, rows }, null, 2)}\n`,
    );
}
profiler.destroy();
ctx.destroy();
process.exit(0);
