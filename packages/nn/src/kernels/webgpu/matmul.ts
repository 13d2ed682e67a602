import { UnsupportedError } from '@attnkit/attention';
import { formatShape, numel, ShapeError, type Tensor } from '@attnkit/tensor';
import type { ComputeProgram, WebGpuStorage } from '@attnkit/webgpu';
import type { UnaryOp } from '../table.js';
import { broadcastShapes } from '../ts/util.js';
import { gpuContext, kernelOptions } from './context.js';
import { binary, cast, MATH, unary, unaryWgsl } from './elementwise.js';
import {
  matmulTensorCores,
  splitK,
  stagedBuffers,
  stagedMaxR,
  TC_BK,
  tensorCorePlan,
  tensorCoresEmulated,
  tensorCoresQualify,
} from './matmul-tc.js';
import {
  broadcastStrides,
  coalesce,
  MAX_BATCH_DIMS,
  matmulBatchWgsl,
  memoProgram,
  Params,
  PRELUDE,
  readDecl,
  writeDecl,
} from './program.js';
import { output, queueOf, storageOf } from './queue.js';
import { sumAs } from './reduce.js';

/**
 * The SIMT kernel's K step and the length of a staged row in vec4s: tiles of 128 step K by 8,
 * of 64 by 16 (both stage 1,024 elements of each operand a step). A staged row (one k) holds
 * tile / 4 vec4s and one of padding: the loads of a non-transposed operand write k-neighbours
 * from neighbouring threads, which without it all hit one bank (the row's length in words is a
 * multiple of 32).
 */
function simtStaging(tile: 64 | 128): { bk: number; row: number } {
  return { bk: tile === 64 ? 16 : 8, row: tile / 4 + 1 };
}

/**
 * The tiled SIMT matmul: op(A) [M, K] x op(B) [K, N] per batch element, both tiles staged in
 * workgroup memory (k-major, as vec4 of 4 rows / columns), f32 accumulators; f16 storage is
 * decoded on load and encoded on store (math in f32). Transposes change only which index walks
 * the tile loads. Tiles of 128 x 128 (8 x 8 outputs per thread of 256, K steps of 8) where the
 * problem fills the GPU with them, else 64 x 64 (4 x 4 per thread, K steps of 16); both stage
 * 1,024 elements of each operand per step.
 */
function shader(
  ta: boolean,
  tb: boolean,
  dtA: 'f32' | 'f16',
  dtB: 'f32' | 'f16',
  dtC: 'f32' | 'f16',
  tile: 64 | 128,
  buffers: 1 | 2,
): string {
  const { bk, row } = simtStaging(tile);
  const halves = tile / 64;
  // Each of the 256 threads stages 4 elements of each operand per K step, at q * 256 + li in the
  // tile's flat order; 256 is a multiple of both the tile and bk, so a thread's tile coordinate
  // along the walked index is the same for all four and the other one steps by 256 / width.
  const stage = (trans: boolean, name: 'A' | 'B', q: number) => {
    // Neighbouring threads read neighbouring addresses: along M (or N) when the operand is
    // stored K-major (A^T, B), along K otherwise.
    const [along, step] = trans === (name === 'A') ? [tile, 256 / tile] : [bk, 256 / bk];
    const walk = `li % ${along}u`;
    const other = `li / ${along}u + ${q * step}u`;
    const [kk, mn] = trans === (name === 'A') ? [other, walk] : [walk, other];
    const [lim, base] = name === 'A' ? ['M', 'm0'] : ['N', 'n0'];
    const at =
      trans === (name === 'A')
        ? `(k0 + ${kk}) * ${lim} + ${base} + ${mn}`
        : `(${base} + ${mn}) * K + k0 + ${kk}`;
    return { kk, mn, lim, base, at };
  };
  const fetchTile = (k0: string) =>
    (['A', 'B'] as const)
      .flatMap((name) =>
        [0, 1, 2, 3].map((q) => {
          const x = stage(name === 'A' ? ta : tb, name, q);
          const at = x.at.replaceAll('k0', k0);
          const off = `${name.toLowerCase()}Off`;
          return `r${name}[${q}] = 0.0; if (${x.base} + ${x.mn} < ${x.lim} && ${k0} + ${x.kk} < kEnd) { r${name}[${q}] = ld_${name}(${off} + ${at}); }`;
        }),
      )
      .join('\n    ');
  const putTile = (buf: string) =>
    (['A', 'B'] as const)
      .flatMap((name) =>
        [0, 1, 2, 3].map((q) => {
          const x = stage(name === 'A' ? ta : tb, name, q);
          return `${name}s[${buf} + (${x.kk}) * ${row}u + (${x.mn}) / 4u][(${x.mn}) % 4u] = r${name}[${q}];`;
        }),
      )
      .join('\n    ');
  const blocks: [number, number][] = [];
  for (let h = 0; h < halves; h++) for (let g = 0; g < halves; g++) blocks.push([h, g]);
  const fma = blocks
    .map(([h, g], q) =>
      [0, 1, 2, 3]
        .map((i) => `acc[${q * 4 + i}] = acc[${q * 4 + i}] + a${h}[${i}] * b${g};`)
        .join('\n      '),
    )
    .join('\n      ');
  // Stores with constant indices into acc, unrolled here: a runtime index (the f16 store's loop
  // stepped by 2 was not unrolled by NVIDIA's compiler) moves the whole accumulator array out of
  // registers, which made the f16-output kernel ~10x slower than the f32 one on the H200 (the
  // same kernel with an f32 output ran at the f32 speed; bench-matmul, session 12).
  const store = (q: number, i: number) =>
    dtC === 'f32'
      ? [0, 1, 2, 3]
          .map(
            (j) =>
              `if (c0 + ${j}u < N) { C[cOff + r * N + c0 + ${j}u] = acc[${q * 4 + i}][${j}]; }`,
          )
          .join('\n      ')
      : [0, 2]
          .map(
            (j) =>
              `if (c0 + ${j}u < N) { C[(cOff + r * N + c0 + ${j}u) >> 1u] = pack2x16float(vec2<f32>(acc[${q * 4 + i}][${j}], acc[${q * 4 + i}][${j + 1}])); }`,
          )
          .join('\n      ');
  const stores = blocks
    .flatMap(([h, g], q) =>
      [0, 1, 2, 3].map(
        (i) => `{
    let r = m0 + ${h * 64 + i}u + ty * 4u;
    let c0 = n0 + ${g * 64}u + tx * 4u;
    if (r < M) {
      ${store(q, i)}
    }
  }`,
      ),
    )
    .join('\n  ');
  return `${PRELUDE}
${readDecl('A', 1, dtA)}
${readDecl('B', 2, dtB)}
${writeDecl('C', 3, dtC)}
var<workgroup> As: array<vec4<f32>, ${buffers * bk * row}>;
var<workgroup> Bs: array<vec4<f32>, ${buffers * bk * row}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  ${matmulBatchWgsl('wid.z')}
  let tx = li % 16u;
  let ty = li / 16u;
  let m0 = wid.y * ${tile}u;
  let n0 = wid.x * ${tile}u;
  var acc = array<vec4<f32>, ${4 * blocks.length}>();
  var rA = vec4<f32>();
  var rB = vec4<f32>();
  ${fetchTile('kBegin')}
  var buf = 0u;
  for (var k0 = kBegin; k0 < kEnd; k0 = k0 + ${bk}u) {
    ${putTile('buf')}
    workgroupBarrier();
    // The next step's elements are fetched into registers before this step's products, so
    // that their latency hides behind the FMAs. With two staging buffers (where workgroup
    // memory allows) they alternate and one barrier a step is enough: a buffer is rewritten
    // only after every thread passed the barrier that follows its last read.
    let next = k0 + ${bk}u;
    if (next < kEnd) {
      ${fetchTile('next')}
    }
    for (var kk = 0u; kk < ${bk}u; kk = kk + 1u) {
      ${[...Array(halves).keys()].map((h) => `let a${h} = As[buf + kk * ${row}u + ${h * 16}u + ty];`).join('\n      ')}
      ${[...Array(halves).keys()].map((g) => `let b${g} = Bs[buf + kk * ${row}u + ${g * 16}u + tx];`).join('\n      ')}
      ${fma}
    }
    ${buffers === 2 ? `buf = ${bk * row}u - buf;` : 'workgroupBarrier();'}
  }
  ${stores}
}`;
}

/** Rows of op(A) up to which the skinny kernel runs (decoding: one token per sequence). */
export const SKINNY_MAX_M = 8;

/**
 * op(A) with at most SKINNY_MAX_M rows (a decoded token's activations) times op(B): one pass over
 * B, every row of A at once, f32 result. The tiled kernel would give one workgroup a 64-row tile
 * for 1 row (GPT-2 small's decoding on the H200: 72 linear layers a token took 8 ms, 50x the time
 * to read their weights). 256 threads split a workgroup's columns and K so that B's loads are
 * coalesced: B [K, N] -> 64 columns x 4 K lanes (neighbours read neighbouring columns); B^T
 * [N, K] -> 8 columns x 32 K lanes (neighbours read neighbouring k). The lanes' partial sums
 * meet in workgroup memory.
 */
function skinnyShader(ta: boolean, tb: boolean, dtA: 'f32' | 'f16', dtB: 'f32' | 'f16'): string {
  const [cols, lanes] = skinnyLayout(tb);
  const mm = SKINNY_MAX_M;
  return `${PRELUDE}
${readDecl('A', 1, dtA)}
${readDecl('B', 2, dtB)}
${writeDecl('C', 3, 'f32')}
var<workgroup> red: array<f32, ${cols * lanes * mm}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  ${matmulBatchWgsl('wid.z')}
  let col = ${tb ? `li / ${lanes}u` : `li % ${cols}u`};
  let lane = ${tb ? `li % ${lanes}u` : `li / ${cols}u`};
  let n = wid.x * ${cols}u + col;
  var acc = array<f32, ${mm}>();
  if (n < N) {
    for (var k = lane; k < K; k = k + ${lanes}u) {
      let b = ld_B(bOff + ${tb ? 'n * K + k' : 'k * N + n'});
      for (var m = 0u; m < M; m = m + 1u) {
        acc[m] = acc[m] + ld_A(aOff + ${ta ? 'k * M + m' : 'm * K + k'}) * b;
      }
    }
  }
  ${skinnyReduce(cols, lanes, 'm < M && nc < N', 'C[cOff + m * N + nc] = s;')}
}`;
}

/**
 * The skinny kernels' end: each thread's per-row partial sums (acc) meet in workgroup memory,
 * then thread t sums the K lanes of output (row m, column nc) in lane order into `s` and, where
 * `guard` holds, runs `store`. One text for the matmul and the fused linear, so that their sums
 * are the same (the fused linear's results equal matmul's bit for bit).
 */
function skinnyReduce(cols: number, lanes: number, guard: string, store: string): string {
  const mm = SKINNY_MAX_M;
  return `for (var m = 0u; m < ${mm}u; m = m + 1u) { red[(lane * ${cols}u + col) * ${mm}u + m] = acc[m]; }
  workgroupBarrier();
  for (var t = li; t < ${cols * mm}u; t = t + 256u) {
    let c = t / ${mm}u;
    let m = t % ${mm}u;
    let nc = wid.x * ${cols}u + c;
    if (${guard}) {
      var s = 0.0;
      for (var l = 0u; l < ${lanes}u; l = l + 1u) { s = s + red[(l * ${cols}u + c) * ${mm}u + m]; }
      ${store}
    }
  }`;
}

/** [columns, K lanes] of a skinny workgroup (256 threads). */
export function skinnyLayout(tb: boolean): [number, number] {
  return tb ? [8, 32] : [64, 4];
}

export function skinnyProgram(
  ta: boolean,
  tb: boolean,
  dtA: 'f32' | 'f16',
  dtB: 'f32' | 'f16',
): ComputeProgram {
  return memoProgram(`skinny|${ta}|${tb}|${dtA}|${dtB}`, () => ({
    code: skinnyShader(ta, tb, dtA, dtB),
    bindings: ['uniform', 'read', 'read', 'storage'],
    label: `nn matmul skinny${ta ? ' A^T' : ''}${tb ? ' B^T' : ''}`,
  }));
}

/** Weights one fused linear pass takes (three: a layer's q, k and v projections). */
export const LINEAR_MAX_WEIGHTS = 3;

/**
 * The skinny kernel's B^T layout (8 columns x 32 K lanes a workgroup, the same sums in the same
 * order) for up to LINEAR_MAX_WEIGHTS Linear layers of one input at once: y_j = act(x W_j^T +
 * b_j), x [M, K] (M <= SKINNY_MAX_M), W_j [N_j, K], f32. The weights' columns are laid end to
 * end over the grid (words 6.. hold their ends); a column reads its weight and is stored, bias
 * added and activation applied, into its output. A decoded token's q, k and v projections are
 * one pass instead of three, and an MLP's first layer and its activation one instead of two.
 */
function linearShader(count: number, bias: boolean, act: UnaryOp | undefined): string {
  const [cols, lanes] = skinnyLayout(true);
  const mm = SKINNY_MAX_M;
  const js = Array.from({ length: count }, (_, j) => j);
  const decls = [
    readDecl('A', 1, 'f32'),
    ...js.map((j) => readDecl(`B${j}`, 2 + j, 'f32')),
    ...(bias ? js.map((j) => readDecl(`b${j}`, 2 + count + j, 'f32')) : []),
    ...js.map((j) => writeDecl(`C${j}`, 2 + (bias ? 2 : 1) * count + j, 'f32')),
  ];
  // Column n of the concatenation: weight j where end(j - 1) <= n < end(j) (ends at words 6..).
  const end = (j: number) => `pu(${6 + j}u)`;
  const start = (j: number) => (j === 0 ? '0u' : end(j - 1));
  const pick = (v: string, body: (j: number) => string) =>
    js.map((j) => `${j > 0 ? ' else ' : ''}if (${v} < ${end(j)}) { ${body(j)} }`).join('');
  const value = (j: number) => {
    const at = `m * (${end(j)} - ${start(j)}) + nc - ${start(j)}`;
    const x = bias ? `s + ld_b${j}(nc - ${start(j)})` : 's';
    return act ? `let x = ${x}; C${j}[${at}] = ${unaryWgsl(act)};` : `C${j}[${at}] = ${x};`;
  };
  return `${PRELUDE}
${act ? MATH : ''}
${decls.join('\n')}
var<workgroup> red: array<f32, ${cols * lanes * mm}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let M = pu(4u);
  let K = pu(5u);
  let col = li / ${lanes}u;
  let lane = li % ${lanes}u;
  let n = wid.x * ${cols}u + col;
  var acc = array<f32, ${mm}>();
  for (var k = lane; k < K; k = k + ${lanes}u) {
    var b = 0.0;
    ${pick('n', (j) => `b = ld_B${j}((n - ${start(j)}) * K + k);`)}
    for (var m = 0u; m < M; m = m + 1u) {
      acc[m] = acc[m] + ld_A(m * K + k) * b;
    }
  }
  ${skinnyReduce(cols, lanes, 'm < M', pick('nc', value))}
}`;
}

function linearProgram(count: number, bias: boolean, act: UnaryOp | undefined): ComputeProgram {
  return memoProgram(`linear|${count}|${bias}|${act}`, () => ({
    code: linearShader(count, bias, act),
    bindings: [
      'uniform',
      'read',
      ...new Array<'read'>(count * (bias ? 2 : 1)).fill('read'),
      ...new Array<'storage'>(count).fill('storage'),
    ],
    label: `nn linear${count > 1 ? ` x${count}` : ''}${bias ? ' + bias' : ''}${act ? ` ${act}` : ''}`,
  }));
}

/**
 * nn's `linears` where no gradient is recorded: one pass for y_j = act(x W_j^T + b_j) when x
 * has at most SKINNY_MAX_M rows (decoding), everything is f32 and contiguous, there are at most
 * LINEAR_MAX_WEIGHTS weights and the device binds that many buffers; undefined otherwise (nn
 * composes matmul, add and the activation). `biases` all given or null.
 */
export function linears(
  x: Tensor,
  weights: readonly Tensor[],
  biases: readonly Tensor[] | null,
  act: UnaryOp | undefined,
): Tensor[] | undefined {
  if (!kernelOptions().fuseLinear) return undefined;
  const ctx = gpuContext('linears');
  const count = weights.length;
  const k = x.shape.at(-1)!;
  const m = x.size / Math.max(k, 1);
  const all = [x, ...weights, ...(biases ?? [])];
  const storages = ctx.limits.maxStorageBuffersPerShaderStage;
  const ns = weights.map((w) => w.shape[0]!);
  const total = ns.reduce((a, b) => a + b, 0);
  const [cols] = skinnyLayout(true);
  if (
    count < 1 ||
    count > LINEAR_MAX_WEIGHTS ||
    x.ndim < 2 ||
    m < 1 ||
    m > SKINNY_MAX_M ||
    k < 1 ||
    all.some((t) => t.dtype !== 'f32' || !t.isContiguous() || t.offset !== 0) ||
    1 + count + count > storages ||
    Math.ceil(total / cols) > ctx.limits.maxComputeWorkgroupsPerDimension
  )
    return undefined;
  if (biases !== null && all.length + count > storages) {
    // The biases do not fit the device's storage bindings (WebGPU's default 8: q, k, v with
    // biases take 10): the products fused, then add and the activation as the composition
    // does them (the same values).
    const ys = linears(x, weights, null, undefined)!;
    return ys.map((y, j) => {
      let z = binary('add', y, biases[j]!);
      y.dispose();
      if (act) {
        const a = unary(act, z);
        z.dispose();
        z = a;
      }
      return z;
    });
  }
  storageOf(x, 'linears', 'x', ctx);
  for (const [j, w] of weights.entries()) storageOf(w, 'linears', `weights[${j}]`, ctx);
  for (const [j, b] of (biases ?? []).entries()) storageOf(b, 'linears', `biases[${j}]`, ctx);
  const outs = ns.map((n) => output(ctx, [...x.shape.slice(0, -1), n], 'f32'));
  const p = new Params().u(4, m).u(5, k);
  let at = 0;
  ns.forEach((n, j) => {
    at += n;
    p.u(6 + j, at);
  });
  if (total > 0)
    queueOf(ctx).pass(
      linearProgram(count, biases !== null, act),
      p.words,
      [...all, ...outs].map((t) => t.storage as WebGpuStorage),
      [Math.ceil(total / cols), 1, 1],
      outs.map((t) => t.storage as WebGpuStorage),
    );
  return outs;
}

export function simtProgram(
  ta: boolean,
  tb: boolean,
  dtA: 'f32' | 'f16',
  dtB: 'f32' | 'f16',
  dtC: 'f32' | 'f16',
  tile: 64 | 128,
  buffers: 1 | 2 = 2,
): ComputeProgram {
  return memoProgram(`simt|${ta}|${tb}|${dtA}|${dtB}|${dtC}|${tile}|${buffers}`, () => ({
    code: shader(ta, tb, dtA, dtB, dtC, tile, buffers),
    bindings: ['uniform', 'read', 'read', 'storage'],
    label: `nn matmul ${tile}${ta ? ' A^T' : ''}${tb ? ' B^T' : ''}`,
  }));
}

/** Workgroup memory of one set of the SIMT kernel's staging buffers (A's and B's tiles, padded). */
export function simtStagingBytes(tile: 64 | 128): number {
  const { bk, row } = simtStaging(tile);
  return 2 * bk * row * 16;
}

/**
 * Two alternating staging buffers where the device's workgroup memory holds them (one barrier a
 * K step), else one (two barriers): WebGPU's default limit, 16 KiB, which browsers and Dawn's
 * compatibility adapters give, is just short of two padded sets.
 */
export function simtBuffers(tile: 64 | 128, workgroupBytes: number): 1 | 2 {
  return workgroupBytes >= 2 * simtStagingBytes(tile) ? 2 : 1;
}

/** 128-wide tiles when they alone give the GPU a full wave of workgroups (132 SMs on the H200). */
export function simtTile(m: number, n: number, batch: number): 64 | 128 {
  return Math.ceil(m / 128) * Math.ceil(n / 128) * batch >= 132 ? 128 : 64;
}

/**
 * The SIMT kernel's tile and K split (pure): a long K under few 128-wide tiles is split (splitK)
 * and keeps the 128 tiles, whose workgroups do twice the work per staged element of the 64
 * ones; otherwise simtTile, unsplit.
 */
export function simtPlan(
  m: number,
  n: number,
  k: number,
  batch: number,
): { tile: 64 | 128; splits: number; kLen: number } {
  const split = splitK(Math.ceil(m / 128) * Math.ceil(n / 128) * batch, k, simtStaging(128).bk);
  if (split.splits > 1) return { tile: 128, ...split };
  return { tile: simtTile(m, n, batch), splits: 1, kLen: k };
}

export function matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  if (a.ndim < 2 || b.ndim < 2)
    throw new ShapeError(
      `matmul: expected a and b with at least 2 dims, got ${formatShape(a.shape)} and ${formatShape(b.shape)}`,
      'matmul',
    );
  const ctx = gpuContext('matmul');
  storageOf(a, 'matmul', 'a', ctx);
  storageOf(b, 'matmul', 'b', ctx);
  const [ra, ca] = a.shape.slice(-2) as [number, number];
  const [rb, cb] = b.shape.slice(-2) as [number, number];
  const [m, k] = transA ? [ca, ra] : [ra, ca];
  const [k2, n] = transB ? [cb, rb] : [rb, cb];
  if (k !== k2)
    throw new ShapeError(
      `matmul: inner dims differ: a ${formatShape(a.shape)}${transA ? '^T' : ''} has K = ${k}, b ${formatShape(b.shape)}${transB ? '^T' : ''} has K = ${k2}`,
      'matmul',
    );
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const batch = broadcastShapes('matmul', batchA, batchB);
  const nb = numel(batch);
  const c = coalesce(batch, [broadcastStrides(batchA, batch), broadcastStrides(batchB, batch)]);
  if (c.shape.length > MAX_BATCH_DIMS || nb > 65535) {
    const why = `backend 'webgpu' runs at most 65535 batch elements in ${MAX_BATCH_DIMS} merged batch dims, got batch ${formatShape(batch)}`;
    throw new UnsupportedError(`matmul: ${why}`, 'matmul', { webgpu: why });
  }
  // Batch dims padded in front with size 1 (stride 0) to MAX_BATCH_DIMS.
  const pad = MAX_BATCH_DIMS - c.shape.length;
  const fill = (xs: readonly number[], v: number) => [...new Array<number>(pad).fill(v), ...xs];
  const p = new Params()
    .u(4, m)
    .u(5, n)
    .u(6, k)
    .arr(8, fill(c.shape, 1))
    .arr(12, fill(c.strides[0]!, 0))
    .arr(16, fill(c.strides[1]!, 0));
  const dtype = a.dtype as 'f32' | 'f16';
  const dtB = b.dtype as 'f32' | 'f16';
  const emulate = tensorCoresEmulated();
  const tc = dtype === 'f16' && kernelOptions().tensorCores && (emulate || tensorCoresQualify(ctx));
  const limit = ctx.limits.maxComputeWorkgroupStorageSize;
  // The staged kernel's largest R that fits workgroup memory (0: none; the direct kernel).
  let stagedR =
    tc && (kernelOptions().stageTensorCores || emulate)
      ? stagedMaxR(transA, transB, limit, emulate)
      : 0;
  let tcPlan = !tc
    ? undefined
    : stagedR > 0
      ? tensorCorePlan(m, n, k, nb, { step: TC_BK, maxR: stagedR })
      : emulate
        ? undefined
        : tensorCorePlan(m, n, k, nb);
  // The grid's z counts (batch element, K slice) pairs: at most 65535 of them.
  const splitStands = (s: number) =>
    s > 1 && kernelOptions().splitK && nb * s <= 65535 && m * n * nb > 0;
  // 'unsplit': a product whose K is split loads its matrices straight from storage, when the
  // split stands under the direct kernel's own plan.
  if (
    tcPlan &&
    stagedR > 0 &&
    tcPlan.splits > 1 &&
    kernelOptions().stageTensorCores === 'unsplit' &&
    !emulate
  ) {
    const direct = tensorCorePlan(m, n, k, nb);
    if (direct && splitStands(direct.splits)) {
      stagedR = 0;
      tcPlan = direct;
    }
  }
  const simt = simtPlan(m, n, k, nb);
  const buffers = simtBuffers(simt.tile, ctx.limits.maxComputeWorkgroupStorageSize);
  const [cols] = skinnyLayout(transB);
  const skinny =
    m <= SKINNY_MAX_M && Math.ceil(n / cols) <= ctx.limits.maxComputeWorkgroupsPerDimension;
  let splits = tcPlan ? tcPlan.splits : skinny ? 1 : simt.splits;
  let kLen = tcPlan ? tcPlan.kLen : skinny ? k : simt.kLen;
  if (!splitStands(splits)) {
    splits = 1;
    kLen = k;
  }
  p.u(2, kLen).u(7, splits);
  const result = (partial: Tensor): Tensor => {
    // Split K: the slices' partial products [batch, splits, M, N] summed in f32, stored in
    // the product's dtype by the same pass.
    let out = partial;
    if (splits > 1) {
      out = sumAs(partial, [nb, 1, m, n], dtype).reshape([...batch, m, n]);
      partial.dispose();
    }
    if (out.dtype === dtype) return out;
    const half = cast(out, dtype);
    out.dispose();
    return half;
  };
  const shapeOut = splits > 1 ? [nb, splits, m, n] : [...batch, m, n];
  if (tcPlan !== undefined && nb > 0) {
    // The staged kernel rounds to f16 itself (no cast pass) unless K is split (the slices are
    // summed in f32).
    const staged =
      stagedR > 0
        ? {
            buffers: stagedBuffers(tcPlan.r, transA, transB, limit, emulate)!,
            out: splits === 1 ? dtype : ('f32' as const),
            emulate,
          }
        : undefined;
    // Should the tensor-core pipeline not compile, the SIMT kernel writes the same result.
    const fallback = {
      program: simtProgram(transA, transB, dtype, dtB, staged?.out ?? 'f32', simt.tile, buffers),
      workgroups: [Math.ceil(n / simt.tile), Math.ceil(m / simt.tile), nb * splits] as [
        number,
        number,
        number,
      ],
    };
    const dims = { m, n, batch: nb, r: tcPlan.r, splits };
    return result(
      matmulTensorCores(ctx, a, b, transA, transB, shapeOut, dims, p, fallback, staged),
    );
  }
  if (skinny && nb > 0) {
    const out = output(ctx, [...batch, m, n], 'f32');
    if (out.size > 0)
      queueOf(ctx).pass(
        skinnyProgram(transA, transB, dtype, dtB),
        p.words,
        [a, b, out].map((t) => t.storage as WebGpuStorage),
        [Math.ceil(n / cols), 1, nb],
        [out.storage as WebGpuStorage],
      );
    return result(out);
  }
  // f16 outputs are stored a u32 word (two columns) per store: an odd N goes through f32, as
  // does a split product (its slices are summed in f32).
  const direct = splits === 1 && (dtype === 'f32' || n % 2 === 0);
  const out = output(ctx, shapeOut, direct ? dtype : 'f32');
  if (out.size > 0) {
    queueOf(ctx).pass(
      simtProgram(transA, transB, dtype, dtB, out.dtype as 'f32' | 'f16', simt.tile, buffers),
      p.words,
      [a, b, out].map((t) => t.storage as WebGpuStorage),
      [Math.ceil(n / simt.tile), Math.ceil(m / simt.tile), nb * splits],
      [out.storage as WebGpuStorage],
    );
  }
  return result(out);
}
