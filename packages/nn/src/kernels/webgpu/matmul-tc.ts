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
): { r: number; splits: number; kLen: number } | undefined {
  if (k % 16 !== 0 || k === 0) return undefined;
  const valid = REGS.filter((r) => m % (32 * r) === 0 && n % (32 * r) === 0);
  const top = valid[0];
  if (top === undefined) return undefined;
  const tiles = (r: number) => (m / (32 * r)) * (n / (32 * r)) * batch;
  const split = splitK(tiles(top), k, 16);
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

function shader(ta: boolean, tb: boolean, r: number): string {
  const idx = [...Array(r).keys()];
  // Left (M x K) from A [M, K] or, transposed, [K, M]; right (K x N) from B [K, N] or [N, K].
  const loadA = (i: number) =>
    ta
      ? `subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&A, aOff + k * M + m0 + ${i * 16}u, true, M)`
      : `subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&A, aOff + (m0 + ${i * 16}u) * K + k, false, K)`;
  const loadB = (j: number) =>
    tb
      ? `subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&B, bOff + (n0 + ${j * 16}u) * K + k, true, K)`
      : `subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&B, bOff + k * N + n0 + ${j * 16}u, false, N)`;
  const pairs = idx.flatMap((i) => idx.map((j) => [i, j] as const));
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

/** Queues op(a) op(b) on tensor cores into a new f32 tensor of `shape` (p: the SIMT kernel's uniforms). */
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
): Tensor {
  const out = output(ctx, shape, 'f32');
  const { m, n, batch, r, splits } = dims;
  queueOf(ctx).pass(
    memoProgram(`tc|${ta}|${tb}|${r}`, () => ({
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
