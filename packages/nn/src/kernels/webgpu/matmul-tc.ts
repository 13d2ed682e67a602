import { matrixOps } from '@attnkit/skeleton';
import type { Tensor } from '@attnkit/tensor';
import type { ComputeProgram, WebGpuContext, WebGpuStorage } from '@attnkit/webgpu';
import { matmulBatchWgsl, memoProgram, type Params, PRELUDE } from './program.js';
import { output, queueOf } from './queue.js';

/**
 * f16 storage on tensor cores: subgroup matrices (Dawn's chromium-experimental-subgroup-matrix,
 * f16 x f16 -> f32, 16 x 16 x 16), operands loaded straight from storage (the H200 probe's
 * fastest portable layout, ../shared/gpu/README.md: 55 TFLOP/s at 4096^3 with 4 x 4 result
 * matrices per subgroup). A transpose is a column-major load, so op(A) and op(B) cost the
 * same. 4 subgroups of 32 per workgroup in 2 x 2, each holding R x R results of 16 x 16; the
 * f32 results are stored and then encoded to f16 by the caller.
 */
export function tensorCoresQualify(ctx: WebGpuContext): boolean {
  const f = ctx.features;
  return (
    f.shaderF16 &&
    f.subgroupMinSize === 32 &&
    f.subgroupMaxSize === 32 &&
    f.subgroupMatrixConfigs.some(
      (c) => c.component === 'f16' && c.result === 'f32' && c.M === 16 && c.N === 16 && c.K === 16,
    )
  );
}

/** Result matrices per subgroup side (R x R), largest first. */
const REGS = [4, 2, 1] as const;
/** Workgroups that fill the H200's 132 SMs once: fewer and a smaller R does better. */
const ONE_WAVE = 132;

/**
 * R (result matrices per subgroup side) and the K split, or undefined when the shape does not
 * tile by 16s (the SIMT kernel runs). A product with few output tiles and a long K (a weight
 * gradient, M and N the layer's widths, K = batch x tokens) takes the largest R and splits K
 * (splitK) rather than shrinking R, which leaves each workgroup the whole K and the GPU
 * part-idle (GPT-2 small's 768 x 768 x 8192 weight gradients ran at 11 TFLOP/s with R 2 on the
 * H200).
 */
export function tensorCorePlan(
  m: number,
  n: number,
  k: number,
  batch: number,
  /** The kernel's K step (a K slice is a multiple of it) and the largest R it may take. */
  { step = 16, maxR = 4 }: { step?: number; maxR?: number } = {},
): { r: number; splits: number; kLen: number } | undefined {
  if (k % 16 !== 0 || k === 0) return undefined;
  const valid = REGS.filter((r) => r <= maxR && m % (32 * r) === 0 && n % (32 * r) === 0);
  const top = valid[0];
  if (top === undefined) return undefined;
  const tiles = (r: number) => (m / (32 * r)) * (n / (32 * r)) * batch;
  const split = splitK(tiles(top), k, step);
  if (split.splits > 1) return { r: top, ...split };
  const r = valid.find((x) => tiles(x) >= ONE_WAVE) ?? (valid.at(-1) as number);
  return { r, splits: 1, kLen: k };
}

/** K at which splitting starts to pay (a slice keeps at least SPLIT_MIN_SLICE of it). */
export const SPLIT_MIN_K = 2048;
const SPLIT_MIN_SLICE = 512;
const MAX_SPLITS = 16;

/**
 * Slices of K for `tiles` output workgroups (pure): none when the tiles alone fill two waves of
 * the GPU or K is short; else the fewest powers of two that give four waves, each slice at
 * least SPLIT_MIN_SLICE long and a multiple of `step` (the kernel's K step). The slices' partial
 * products are summed by a reduction pass (deterministic: no atomics, which WGSL lacks for f32).
 */
export function splitK(tiles: number, k: number, step: number): { splits: number; kLen: number } {
  if (tiles >= 2 * ONE_WAVE || k < SPLIT_MIN_K) return { splits: 1, kLen: k };
  let s = 1;
  while (s < MAX_SPLITS && tiles * s < 4 * ONE_WAVE && k / (2 * s) >= SPLIT_MIN_SLICE) s *= 2;
  const kLen = Math.ceil(Math.ceil(k / s) / step) * step;
  return { splits: Math.ceil(k / kLen), kLen };
}

/** A subgroup's R x R result matrices: the indices 0..R-1 and every (row, column) pair. */
function registerBlock(r: number) {
  const idx = [...Array(r).keys()];
  return { idx, pairs: idx.flatMap((i) => idx.map((j) => [i, j] as const)) };
}

function shader(ta: boolean, tb: boolean, r: number): string {
  const { idx, pairs } = registerBlock(r);
  // Left (M x K) from A [M, K] or, transposed, [K, M]; right (K x N) from B [K, N] or [N, K].
  const loadA = (i: number) =>
    ta
      ? `subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&A, aOff + k * M + m0 + ${i * 16}u, true, M)`
      : `subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&A, aOff + (m0 + ${i * 16}u) * K + k, false, K)`;
  const loadB = (j: number) =>
    tb
      ? `subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&B, bOff + (n0 + ${j * 16}u) * K + k, true, K)`
      : `subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&B, bOff + k * N + n0 + ${j * 16}u, false, N)`;
  return `enable f16;
enable chromium_experimental_subgroup_matrix;
${PRELUDE}
@group(0) @binding(1) var<storage, read> A: array<f16>;
@group(0) @binding(2) var<storage, read> B: array<f16>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_id) sg: u32) {
  ${matmulBatchWgsl('wg.z')}
  let m0 = wg.y * ${32 * r}u + (sg / 2u) * ${16 * r}u;
  let n0 = wg.x * ${32 * r}u + (sg % 2u) * ${16 * r}u;
  ${pairs.map(([i, j]) => `var c${i}${j} = subgroup_matrix_result<f32, 16, 16>();`).join('\n  ')}
  for (var k = kBegin; k < kEnd; k = k + 16u) {
    ${idx.map((i) => `let a${i} = ${loadA(i)};`).join('\n    ')}
    ${idx.map((j) => `let b${j} = ${loadB(j)};`).join('\n    ')}
    ${pairs.map(([i, j]) => `c${i}${j} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}, c${i}${j});`).join('\n    ')}
  }
  ${pairs.map(([i, j]) => `subgroupMatrixStore(&C, cOff + (m0 + ${i * 16}u) * N + n0 + ${j * 16}u, c${i}${j}, false, N);`).join('\n  ')}
}`;
}

let emulation = false;

/**
 * Tests only: runs the staged tensor-core kernel with emulated subgroup matrices on adapters
 * without them (llvmpipe in CI), to test its staging and indexing; never set in use.
 */
export function emulateTensorCores(on: boolean): void {
  emulation = on;
}

export function tensorCoresEmulated(): boolean {
  return emulation;
}

/**
 * Queues op(a) op(b) on tensor cores into a new tensor of `shape` (p: the SIMT kernel's
 * uniforms): f32, or with `staged.out` f16 rounded by the kernel itself.
 */
export function matmulTensorCores(
  ctx: WebGpuContext,
  a: Tensor,
  b: Tensor,
  ta: boolean,
  tb: boolean,
  shape: readonly number[],
  dims: { m: number; n: number; batch: number; r: number; splits: number },
  p: Params,
  fallback: { program: ComputeProgram; workgroups: [number, number, number] },
  staged?: Omit<StagedConfig, 'ta' | 'tb' | 'r'>,
): Tensor {
  const { m, n, batch, r, splits } = dims;
  const out = output(ctx, shape, staged?.out ?? 'f32');
  const config = staged && { ta, tb, r, ...staged };
  queueOf(ctx).pass(
    config
      ? memoProgram(`tcs|${JSON.stringify(config)}`, () => ({
          code: stagedShader(config),
          bindings: ['uniform', 'read', 'read', 'storage'],
          label: `nn matmul tensor cores staged ${r}x${r}${ta ? ' A^T' : ''}${tb ? ' B^T' : ''}${config.out === 'f16' ? ' f16' : ''}`,
        }))
      : memoProgram(`tc|${ta}|${tb}|${r}`, () => ({
          code: shader(ta, tb, r),
          bindings: ['uniform', 'read', 'read', 'storage'],
          label: `nn matmul tensor cores ${r}x${r}${ta ? ' A^T' : ''}${tb ? ' B^T' : ''}`,
        })),
    p.words,
    [a, b, out].map((t) => t.storage as WebGpuStorage),
    [n / (32 * r), m / (32 * r), batch * splits],
    [out.storage as WebGpuStorage],
    fallback,
  );
  return out;
}

/**
 * The staged tensor-core kernel (the default; `stageTensorCores`): each K step of BK = 32 the
 * workgroup copies its A and B tiles (32R x 32 each) from storage into workgroup memory with
 * 16-byte loads, and the subgroups load their matrices from there. On the H200 with robust
 * access a subgroup-matrix load from storage cost ~75 SM cycles against ~19 from workgroup
 * memory (bench-tc-micro, BENCHMARKS.md "WebGPU tensor cores without robustness"); the direct
 * kernel above does one storage load per two MMAs. The next step's tile is fetched into
 * registers while this step's MMAs run, and two buffers alternate (one barrier a step) where
 * workgroup memory holds them. Rows of the staged tiles are padded by 8 halves (unpadded
 * 256-byte rows doubled the load cost in the micro-benchmark: bank conflicts).
 */
export const TC_BK = 32;
const PAD = 8;

/** Halves of one staged tile of A (M x BK, or BK x M when transposed) for result side 32R. */
function stagedTileHalves(r: number, transposed: boolean, side: 'a' | 'b'): number {
  const wide = 32 * r;
  // A row-major [M, K] and B^T [N, K] stage wide rows of BK; A^T [K, M] and B [K, N], BK rows.
  const byRows = side === 'a' ? !transposed : transposed;
  return byRows ? wide * (TC_BK + PAD) : TC_BK * (wide + PAD);
}

/** Workgroup bytes of the staged kernel: its tiles (f16, f32 when emulated), epilogue, emulation. */
export function stagedBytes(
  r: number,
  ta: boolean,
  tb: boolean,
  buffers: 1 | 2,
  emulate = false,
): number {
  const halves = stagedTileHalves(r, ta, 'a') + stagedTileHalves(r, tb, 'b');
  const element = emulate ? 4 : 2;
  // 4 subgroups x one 16 x 16 f32 result for the f16 epilogue; the emulation's MMA scratch.
  return buffers * halves * element + 4 * 256 * 4 + (emulate ? 4 * 512 * 4 : 0);
}

/** Staging buffers that fit `limit` bytes of workgroup memory (2 preferred), or undefined. */
export function stagedBuffers(
  r: number,
  ta: boolean,
  tb: boolean,
  limit: number,
  emulate = false,
): 1 | 2 | undefined {
  if (stagedBytes(r, ta, tb, 2, emulate) <= limit) return 2;
  if (stagedBytes(r, ta, tb, 1, emulate) <= limit) return 1;
  return undefined;
}

/** The largest R whose staged tiles fit `limit` (0: none). */
export function stagedMaxR(ta: boolean, tb: boolean, limit: number, emulate = false): number {
  return REGS.find((r) => stagedBuffers(r, ta, tb, limit, emulate) !== undefined) ?? 0;
}

export interface StagedConfig {
  ta: boolean;
  tb: boolean;
  r: number;
  buffers: 1 | 2;
  /** f16: results rounded and stored as f16 pairs through workgroup memory (no cast pass). */
  out: 'f32' | 'f16';
  /** Subgroup matrices emulated with scalar code (llvmpipe in CI: tests of the indexing). */
  emulate: boolean;
}

export function stagedShader(c: StagedConfig): string {
  const { ta, tb, r, buffers, out, emulate } = c;
  const mx = matrixOps(emulate, 4, 'pu(4u)');
  const W = 32 * r;
  const { idx, pairs } = registerBlock(r);
  const aRows = !ta; // A tile stored as W rows of BK (else BK rows of W)
  const bRows = tb;
  const SA = aRows ? TC_BK + PAD : W + PAD;
  const SB = bRows ? TC_BK + PAD : W + PAD;
  const HA = stagedTileHalves(r, ta, 'a');
  const HB = stagedTileHalves(r, tb, 'b');
  // vec4<u32> words (8 halves) per staged row, and per thread (R for both layouts).
  const aWords = (aRows ? TC_BK : W) / 8;
  const bWords = (bRows ? TC_BK : W) / 8;
  const cvt = (w: string) => (emulate ? `unpack2x16float(${w})` : `bitcast<vec2<f16>>(${w})`);
  // Fetch: R words of each operand's next tile into registers (zeros past kEnd).
  const fetch = (op: 'a' | 'b') => {
    const rowsLayout = op === 'a' ? aRows : bRows;
    const words = op === 'a' ? aWords : bWords;
    const src = op === 'a' ? 'A' : 'B';
    const off = op === 'a' ? 'aOff' : 'bOff';
    const wide = op === 'a' ? 'M' : 'N';
    const origin = op === 'a' ? 'mW' : 'nW';
    return idx
      .map((i) => {
        const e = `(lid + ${i * 128}u)`;
        // Rows of the tile are M (or N) rows of the source: K contiguous.
        const [cond, at] = rowsLayout
          ? [
              `kt + (${e} % ${words}u) * 8u < kEnd`,
              `(${off} + (${origin} + ${e} / ${words}u) * K + kt + (${e} % ${words}u) * 8u) / 8u`,
            ]
          : [
              `kt + ${e} / ${words}u < kEnd`,
              `(${off} + (kt + ${e} / ${words}u) * ${wide} + ${origin} + (${e} % ${words}u) * 8u) / 8u`,
            ];
        return `${op}${i} = vec4<u32>(0u);
      if (${cond}) { ${op}${i} = ${src}[${at}]; }`;
      })
      .join('\n      ');
  };
  // Store: the registers into staging buffer `buf` (row-major rows of the layout, padded).
  const store = (op: 'a' | 'b') => {
    const words = op === 'a' ? aWords : bWords;
    const S = op === 'a' ? SA : SB;
    const H = op === 'a' ? HA : HB;
    const dst = op === 'a' ? 'sa' : 'sb';
    return idx
      .map((i) => {
        const e = `(lid + ${i * 128}u)`;
        return `{
        let d = buf * ${H}u + (${e} / ${words}u) * ${S}u + (${e} % ${words}u) * 8u;
        ${[0, 1, 2, 3]
          .map(
            (w) =>
              `let h${w} = ${cvt(`${op}${i}[${w}]`)}; ${dst}[d + ${2 * w}u] = h${w}.x; ${dst}[d + ${2 * w + 1}u] = h${w}.y;`,
          )
          .join('\n        ')}
      }`;
      })
      .join('\n      ');
  };
  // This subgroup's matrices at sub-step kk (0 or 16) of the staged tile in buffer `cur`.
  const loadA = (i: number) =>
    aRows
      ? mx.load('L', 'sa', `cur * ${HA}u + (mS + ${i * 16}u) * ${SA}u + kk`, false, `${SA}u`)
      : mx.load('L', 'sa', `cur * ${HA}u + kk * ${SA}u + mS + ${i * 16}u`, true, `${SA}u`);
  const loadB = (j: number) =>
    bRows
      ? mx.load('R', 'sb', `cur * ${HB}u + (nS + ${j * 16}u) * ${SB}u + kk`, true, `${SB}u`)
      : mx.load('R', 'sb', `cur * ${HB}u + kk * ${SB}u + nS + ${j * 16}u`, false, `${SB}u`);
  const H = emulate ? 'f32' : 'f16';
  const epilogue =
    out === 'f32'
      ? pairs
          .map(([i, j]) =>
            mx.store(
              'C',
              `cOff + (mW + mS + ${i * 16}u) * N + nW + nS + ${j * 16}u`,
              `c${i}${j}`,
              false,
              'N',
            ),
          )
          .map((s) => `${s};`)
          .join('\n  ')
      : // f16: each 16 x 16 result through this subgroup's 256 f32 of `so`, then 8 values a
        // lane rounded and packed into one 16-byte store (rows of 16: two lanes a row).
        pairs
          .map(
            ([i, j]) => `${mx.store('so', 'sg * 256u', `c${i}${j}`, false, '16u')};
  workgroupBarrier();
  {
    let s = sg * 256u + lane * 8u;
    let row = mW + mS + ${i * 16}u + lane / 2u;
    let col = nW + nS + ${j * 16}u + (lane % 2u) * 8u;
    C[(cOff + row * N + col) / 8u] = vec4<u32>(
      pack2x16float(vec2<f32>(so[s], so[s + 1u])),
      pack2x16float(vec2<f32>(so[s + 2u], so[s + 3u])),
      pack2x16float(vec2<f32>(so[s + 4u], so[s + 5u])),
      pack2x16float(vec2<f32>(so[s + 6u], so[s + 7u])));
  }
  workgroupBarrier();`,
          )
          .join('\n  ');
  const body = `
@compute @workgroup_size(128)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  ${emulate ? '' : '@builtin(subgroup_id) sg: u32,\n  @builtin(subgroup_invocation_id) lane: u32,'}
) {
  ${emulate ? 'let sg = lid / 32u;\n  let lane = lid % 32u;\n  e_lane = lane;\n  e_sg = sg;' : ''}
  ${matmulBatchWgsl('wg.z')}
  // This workgroup's W x W block of C, and this subgroup's 16R x 16R quarter of it.
  let mW = wg.y * ${W}u;
  let nW = wg.x * ${W}u;
  let mS = (sg / 2u) * ${16 * r}u;
  let nS = (sg % 2u) * ${16 * r}u;
  ${pairs.map(([i, j]) => `var c${i}${j} = ${mx.A}();`).join('\n  ')}
  ${idx.map((i) => `var a${i}: vec4<u32>;\n  var b${i}: vec4<u32>;`).join('\n  ')}
  let steps = (kEnd - min(kBegin, kEnd) + ${TC_BK - 1}u) / ${TC_BK}u;
  var kt = kBegin;
  var buf = 0u;
  if (steps > 0u) {
      ${fetch('a')}
      ${fetch('b')}
      ${store('a')}
      ${store('b')}
  }
  workgroupBarrier();
  for (var t = 0u; t < steps; t++) {
    let cur = ${buffers === 2 ? 't & 1u' : '0u'};
    kt = kBegin + (t + 1u) * ${TC_BK}u;
    let more = t + 1u < steps;
    if (more) {
      ${fetch('a')}
      ${fetch('b')}
    }
    for (var kk = 0u; kk < ${TC_BK}u; kk += 16u) {
      ${idx.map((i) => `let l${i} = ${loadA(i)};`).join('\n      ')}
      ${idx.map((j) => `let r${j} = ${loadB(j)};`).join('\n      ')}
      ${pairs.map(([i, j]) => `c${i}${j} = ${mx.mma(`l${i}`, `r${j}`, `c${i}${j}`)};`).join('\n      ')}
    }
    ${buffers === 2 ? '' : 'workgroupBarrier();'}
    if (more) {
      buf = ${buffers === 2 ? 'cur ^ 1u' : '0u'};
      ${store('a')}
      ${store('b')}
    }
    workgroupBarrier();
  }
  ${epilogue}
}`;
  return `${emulate ? '' : 'enable f16;\nenable chromium_experimental_subgroup_matrix;'}
${PRELUDE}
@group(0) @binding(1) var<storage, read> A: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> B: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> C: array<${out === 'f32' ? 'f32' : 'vec4<u32>'}>;
var<workgroup> sa: array<${H}, ${buffers * HA}>;
var<workgroup> sb: array<${H}, ${buffers * HB}>;
${out === 'f16' ? 'var<workgroup> so: array<f32, 1024>;' : ''}
${mx.prelude()}
${body}`;
}
