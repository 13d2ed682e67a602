/**
 * The tensor-core (subgroup-matrix) building blocks of GLA's WebGPU chunk products
 * (chromium_experimental_subgroup_matrix, f16 x f16 -> f32, 16x16x16; ./kernels.ts `tc`).
 *
 * `glaMatrixOps` is @attnkit/skeleton's `matrixOps` (the same emulation semantics: lane l holds
 * elements 8 l .. 8 l + 7 of a 16x16 matrix in row-major order; element (r, c) of a matrix at
 * `off` is arr[off + r * stride + c], arr[off + c * stride + r] column-major), its emulation's
 * opaque 8 read from GLA's `P.H` since GLA's Params have no `group` field.
 */
import { matrixOps } from '@attnkit/skeleton';

/** Tensor-core variant of a kernel: real subgroup matrices, or their plain-WGSL emulation. */
export interface GlaTc {
  /**
   * Test aid: the same kernel with the subgroup matrices emulated in plain WGSL (f16 operands
   * rounded to f16 and held in f32 arrays), so llvmpipe (no subgroups, no f16, no subgroup
   * matrices) runs the staging, the product structure and the epilogues. Not for speed.
   */
  emulate: boolean;
}

/** The subgroup width the tensor-core kernels assume (NVIDIA's warp; auto requires it). */
export const GLA_TC_SUBGROUP = 32;

/** Halves of padding after each staged f16 row (rows of 32 / 64 halves would share banks). */
export const GLA_TC_PAD = 8;

/**
 * WGSL directives of a tensor-core kernel (none under emulation). The matrix operations sit
 * under branches on the subgroup id (a subgroup past the last result matrix stores nothing):
 * subgroup-uniform, as the skeleton's offsets from subgroup_id are, which Tint accepted on the
 * H200; the diagnostic is a safety net should a Tint analyse them at workgroup scope (an
 * unknown rule name is only a warning).
 */
export function tcEnables(tc: GlaTc | undefined): string {
  return tc && !tc.emulate
    ? 'enable f16;\nenable chromium_experimental_subgroup_matrix;\ndiagnostic(off, subgroup_uniformity);\n'
    : '';
}

/**
 * Entry-point parameters (after the workgroup id and local id) and the prologue giving `sg`
 * (subgroup id) and `lane`: the real builtins, or their values from the invocation index under
 * emulation. Subgroup-matrix load / store offsets must be subgroup-uniform, so they derive from
 * @builtin(subgroup_id), never from tid / 32 (Tint does not see that as uniform).
 */
export function tcEntry(tc: GlaTc | undefined, tid: string): { params: string; prologue: string } {
  if (!tc) return { params: '', prologue: '' };
  if (tc.emulate)
    return {
      params: '',
      prologue: `let sg = ${tid} / ${GLA_TC_SUBGROUP}u;
  let lane = ${tid} % ${GLA_TC_SUBGROUP}u;
  e_lane = lane;
  e_sg = sg;`,
    };
  return {
    params: ', @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32',
    prologue: '',
  };
}

/**
 * Subgroup-matrix load / store / multiply-accumulate as WGSL text: @attnkit/skeleton's
 * `matrixOps`, its emulation's opaque 8 taken from GLA's Params field H.
 */
export function glaMatrixOps(emulate: boolean, subgroups: number) {
  return matrixOps(emulate, subgroups, 'P.H');
}
