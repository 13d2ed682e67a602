/**
 * The tensor-core (subgroup-matrix) building blocks of GLA's WebGPU chunk products
 * (chromium_experimental_subgroup_matrix, f16 x f16 -> f32, 16x16x16; ./kernels.ts `tc`).
 *
 * `glaMatrixOps` follows @attnkit/skeleton's `matrixOps` (packages/skeleton/src/webgpu/
 * tc-forward.ts) line for line: the same emulation semantics (lane l holds elements 8 l .. 8 l + 7
 * of a 16x16 matrix in row-major order; element (r, c) of a matrix at `off` is
 * arr[off + r * stride + c], arr[off + c * stride + r] column-major). It is a copy because the
 * skeleton does not export matrixOps, and its emulation reads `P.group`, a field of the
 * skeleton's Params that GLA's Params does not have (here the opaque 8 comes from P.H).
 */

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

/** Subgroup-matrix load / store / multiply-accumulate as WGSL text (see the file comment). */
export function glaMatrixOps(emulate: boolean, subgroups: number) {
  const helpers = new Map<string, string>();
  const types = emulate
    ? { L: 'array<f32, 8>', R: 'array<f32, 8>', A: 'array<f32, 8>', H: 'f32' }
    : {
        L: 'subgroup_matrix_left<f16, 16, 16>',
        R: 'subgroup_matrix_right<f16, 16, 16>',
        A: 'subgroup_matrix_result<f32, 16, 16>',
        H: 'f16',
      };
  const at = (cm: boolean) =>
    cm ? 'off + (e % 16u) * stride + e / 16u' : 'off + (e / 16u) * stride + e % 16u';
  return {
    ...types,
    /** WGSL of an f32 value cast to the staging element type (rounded to f16 under emulation). */
    half(x: string): string {
      return emulate ? `r16(${x})` : `f16(${x})`;
    },
    load(kind: 'L' | 'R' | 'A', arr: string, off: string, cm: boolean, stride: string): string {
      if (!emulate) return `subgroupMatrixLoad<${types[kind]}>(&${arr}, ${off}, ${cm}, ${stride})`;
      const name = `ld_${arr}_${cm ? 'c' : 'r'}`;
      helpers.set(
        name,
        `fn ${name}(off: u32, stride: u32) -> array<f32, 8> {
  var x: array<f32, 8>;
  for (var t = 0u; t < e_8(); t++) { let e = e_lane * 8u + t; x[t] = f32(${arr}[${at(cm)}]); }
  return x;
}`,
      );
      return `${name}(${off}, ${stride})`;
    },
    store(arr: string, off: string, m: string, cm: boolean, stride: string): string {
      if (!emulate) return `subgroupMatrixStore(&${arr}, ${off}, ${m}, ${cm}, ${stride})`;
      const name = `st_${arr}_${cm ? 'c' : 'r'}`;
      helpers.set(
        name,
        `fn ${name}(off: u32, m: array<f32, 8>, stride: u32) {
  for (var t = 0u; t < e_8(); t++) { let e = e_lane * 8u + t; ${arr}[${at(cm)}] = m[t]; }
}`,
      );
      return `${name}(${off}, ${m}, ${stride})`;
    },
    mma(a: string, b: string, acc: string): string {
      return emulate
        ? `e_mma(${a}, ${b}, ${acc})`
        : `subgroupMatrixMultiplyAccumulate(${a}, ${b}, ${acc})`;
    },
    /** Module-scope declarations the emulation needs (call after generating the kernel body). */
    prelude(): string {
      if (!emulate) return '';
      return `var<private> e_lane: u32;
var<private> e_sg: u32;
// 8, from a uniform the compiler cannot see through: the emulation's loops stay rolled
// (unrolled and inlined at every call they made llvmpipe's compiles take minutes).
fn e_8() -> u32 { return 8u + min(P.H, 0u); }
var<workgroup> e_ab: array<f32, ${subgroups * 512}>;
fn r16(x: f32) -> f32 { return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x; }
fn e_mma(a: array<f32, 8>, b: array<f32, 8>, c: array<f32, 8>) -> array<f32, 8> {
  let base = e_sg * 512u;
  for (var t = 0u; t < e_8(); t++) { e_ab[base + e_lane * 8u + t] = a[t]; e_ab[base + 256u + e_lane * 8u + t] = b[t]; }
  workgroupBarrier();
  var r = c;
  for (var t = 0u; t < e_8(); t++) {
    let e = e_lane * 8u + t;
    var acc = r[t];
    for (var k = 0u; k < 2u * e_8(); k++) { acc += e_ab[base + (e / 16u) * 16u + k] * e_ab[base + 256u + k * 16u + e % 16u]; }
    r[t] = acc;
  }
  workgroupBarrier();
  return r;
}
${[...helpers.values()].join('\n')}`;
    },
  };
}
