import { describe, ValueError } from '@attnkit/tensor';
import type { WebGpuFeatures, WgslBinding } from '@attnkit/webgpu';
import { declareBindings } from '@attnkit/webgpu';
import { SAGE_KEY_TILE, type SageGranularity } from '../sage/codec.js';
import { SAGE_EXP_WGSL, sageGroupFns } from '../sage/webgpu-forward.js';
import { paramsStruct } from './params.js';
import type { WgslKernel } from './shaders.js';
import { HI_BITS_WGSL } from './split-f16.js';

/**
 * The tensor-core FlashAttention-2 forward (issue 20 item 2), softmax, f16 q/k/v/o, f32
 * accumulation, on WGSL subgroup matrices (chromium_experimental_subgroup_matrix, f16 x f16 ->
 * f32, 16x16x16). One workgroup per (query tile of BR = 16 * subgroups rows, head, batch), as
 * the SIMT kernel; each subgroup owns 16 query rows against the whole key tile, so the online
 * softmax never crosses subgroups (FA2 Sec. 3.3).
 *
 * Staging: the workgroup's Q block (once, into `qs`) and each K and V tile (BC keys, into `kv`)
 * are copied into workgroup memory with 16-byte loads (rows past the sequence filled with zeros) and shared
 * by the subgroups. A first version read the matrices straight from storage: every K/V matrix
 * then fed one multiply per subgroup (14.9 TFLOP/s on the H200, like the GEMM probe's 1x1
 * 14.3), and a load straddling the end of a buffer was clamped by Tint's robustness to a shifted
 * position (wrong keys at the tails of unpadded tensors). Staging fixes both.
 *
 * Per key tile:
 * 1. S = Q K^T: Q's left matrices from `qs`, K's right matrices from `kv`
 *    (column-major: keys are the columns of K^T). Offsets derive from @builtin(subgroup_id):
 *    subgroup-matrix loads and stores need subgroup-uniform arguments, and Tint does not see
 *    lid / 32 as one (rejected on the H200).
 * 2. S leaves the matrices through per-subgroup scratch (WGSL has no per-element access to
 *    subgroup matrices); two lanes per row scale it to log2 units, mask it (causal / window,
 *    keys past the sequence), take the row max (exchanged through workgroup memory: subgroup
 *    arithmetic is avoided beside subgroup matrices, which crashed NVIDIA's pipeline creation
 *    elsewhere), and write P = 2^(S - m) as f16. V is staged into `kv` meanwhile.
 * 3. Lazy rescaling (FlashAttention-4's trick): a row's max moves only when the tile's max
 *    exceeds it by more than `lazy` (log2 units; 0 = every increase), so P <= 2^lazy (within
 *    f16's range) and O, in result matrices, makes its round trip through scratch (in chunks
 *    of BC columns) only when some row of the workgroup moved: a workgroup-uniform flag. On the
 *    H200 rescaling at every increase ran at 2/3 of the lazy kernel's speed.
 * 4. O += P V with P's left matrices from scratch and V's right matrices from `kv`.
 * Epilogue: O / l (0 for a row with no allowed key), stored as packed f16; LSE = m ln 2 + ln l.
 *
 * Head dims D and Dv are compile-time constants (multiples of 16: the matrices are unrolled per
 * 16 columns into named variables, no arrays of matrices); strides, lengths and the mask are the
 * SIMT kernels' uniforms (params.ts), so the host's buffers and grid serve both.
 */
export interface TcForwardConfig {
  /** Head dims (multiples of 16). */
  d: number;
  dv: number;
  /** Subgroups (of 32 invocations) per workgroup: BR = 16 * subgroups query rows. */
  subgroups: number;
  /** Key matrices per tile: BC = 16 * keyMatrices keys. */
  keyMatrices: number;
  /** Lazy-rescale threshold in log2 units (0: rescale on every increase of a row's max). */
  lazy: number;
  /** Staging converts through unpack2x16float instead of bitcast<vec2<f16>> (an A/B of the two). */
  unpack?: boolean;
  /**
   * Where K and V tiles are staged when they are staged one after the other (not `fused`;
   * default 'parity'): 'parity' alternates two halves of the buffer by tile (K and V of a tile
   * share one half); 'split' keeps K in one half and V in the other; 'single' uses one half for
   * both.
   */
  kvLayout?: 'parity' | 'split' | 'single';
  /**
   * Stage K and V of a tile together, before S (one barrier fewer per tile), into halves that
   * alternate by tile parity.
   */
  fused?: boolean;
  /**
   * Halves of padding after every staged row (0 or 8; also after every row of P). Rows of
   * D = 128 halves are 256 bytes apart: every 16-row matrix load then hits the same banks (8-way
   * conflicts); 16 more bytes per row shift consecutive rows by 4 banks.
   */
  pad?: number;
  /**
   * Softmax, rescale: each lane walks its row's columns starting at a lane-dependent column
   * (rotated), so the 32 lanes of a subgroup touch 32 different banks (rows are BC floats
   * apart: without rotation the 16 rows of a subgroup share banks).
   */
  swizzle?: boolean;
  /**
   * Softmax from registers: each lane reads its half row of S (BC / 2 floats) from the scratch
   * once, every load issued before the first use, masks and maxes it in registers and writes P
   * from them; the loop instead stores the masked scores back and reads them again for P (two
   * reads and a write per score instead of one read), each use waiting for its load.
   */
  regSoftmax?: boolean;
  /**
   * Load the next key tile's K words into registers right after this tile's staging barrier
   * and store them at the next tile's start, so their latency is covered by a whole tile of
   * work (stageParts). Applies where a K tile is a whole number of 16-byte words per
   * invocation and not with split, narrow, fused or blockSparse (a skipped tile would store the
   * wrong prefetch); elsewhere it is ignored and K is staged as before (tested).
   */
  prefetchK?: boolean;
  /**
   * Issue the V tile's loads before the softmax and store them after it (the softmax covers
   * their latency) instead of staging V in one piece before it. Same conditions as prefetchK
   * (blockSparse allowed).
   */
  splitV?: boolean;
  /** Hold Q's D / 16 left matrices in registers across the key loop (staged once). */
  qRegs?: boolean;
  /**
   * Load Q's D / 16 left matrices straight from storage into registers (a second binding of q's
   * buffer as `array<f16>`, `q16`), once per subgroup, instead of staging the Q block through
   * workgroup memory: the block's 17 KiB (D = 128, BR = 64) are freed, which is what a larger
   * key tile (keyMatrices 3, or 4 with kvLayout 'single') needs under the 48 KiB limit. Every
   * 16-row block must lie within the buffer: a subgroup-matrix load that straddles its end is
   * dropped whole by Tint's robustness (and earlier clamped to a shifted offset, VARIANTS.md
   * run 5), so the host sets this only when the last block of every sequence is in bounds
   * (tcQDirectFits) and a subgroup wholly past the sequence loads its last block instead.
   * Rows of a block past the sequence are other rows of q (or the buffer's slack): they only
   * feed their own rows of S and O, which are never written. Implies qRegs; not with split.
   */
  qDirect?: boolean;
  /** Exchange the row statistics of a lane pair with subgroupShuffleXor instead of workgroup memory and a barrier. */
  shuffle?: boolean;
  /** Stage with 4-byte loads (consecutive lanes, consecutive words: conflict-free stores) instead of 16-byte ones. */
  narrow?: boolean;
  /**
   * Stage a tile's 16-byte words with every load of the invocation issued first (unrolled,
   * unconditional at clamped addresses) and the conversions, masks and workgroup stores after
   * them, instead of a loop that waits for each load before its store (the lesson of the GLA
   * passes, BENCHMARKS.md "GLA on the H200 (WebGPU), session 17"). Where the tile's words are
   * not a whole multiple of the invocations the loop stays. Not with narrow or split.
   */
  batchLoads?: boolean;
  /**
   * Declare the per-subgroup scratch (Q block, S, P) as arrays of per-subgroup arrays and the K/V
   * staging as an array of halves, so that every subgroup-matrix load and store addresses an
   * element array (`&sc[sg]`, `&kv[half]`) at a compile-time constant offset. Tint's robustness
   * transform then proves each access in bounds at compile time and emits the bare load; with
   * a dynamic offset (the flat layout) it wraps every load and store in `if (in bounds)` and
   * moves the matrix through a function variable, which on the H200 cost ~19 SM cycles per
   * workgroup-memory load against ~4 without robustness (BENCHMARKS.md "WebGPU tensor cores
   * without robustness"). Same bytes, same layout within each array.
   */
  constOffsets?: boolean;
  /**
   * Test aid: emit the same kernel with the subgroup matrices emulated by plain WGSL (each
   * lane holds 8 elements of a 16x16 matrix in an array<f32, 8>, multiplies go through
   * workgroup scratch between barriers, f16 values live in f32 arrays rounded to f16 on every
   * store), so CI machines without subgroups, f16 or subgroup matrices (llvmpipe) run the
   * kernel's staging, masking, softmax, rescaling and epilogue logic. Not for speed.
   */
  emulate?: boolean;
  /**
   * f32 attention on the f16 tensor cores (issue 20 item 5, precision 'split-f16'): q, k, v and
   * o are f32; every staged operand x is split into hi = f16(x) and lo = f16((x - hi) 2^11), P
   * likewise, and each product is hi*hi + (hi*lo + lo*hi) 2^-11, the hi*hi and the cross terms
   * in accumulators of their own (f32; S's and O's cross accumulators join theirs on every
   * round trip through scratch); the lo*lo term (~2^-22 relative) is dropped. lo is scaled
   * because an unscaled one is an f16 subnormal for |x| < 2^-3: unscaled, the H200 gave o within
   * 3-4e-4 of float64 (run 14), no better than f16 (read then as the device flushing subnormal
   * halves; session 28 found the fold of f32(f16(x)) behind that error, so it is unmeasured).
   * Incompatible with fused, narrow, qRegs, unpack.
   */
  split?: boolean;
  /**
   * split-f16's hi by masking (device probe, issue 20): hi = x with its 13 low mantissa bits
   * cleared (f16's 11 significant bits, so f16(hi) is exact for normal f16 values) and lo =
   * f16((x - hi) 2^11), x - hi exact in f32, instead of hi = f16(x) rounded by the conversion.
   * Integer operations the compiler cannot fold into the conversion. Only with split. The
   * host's default for split (session 28): on the H100 / H200 the compiler folds f32(f16(x)) to
   * x, so the rounded split's lo = x - f32(hi) came out 0 (o 3-4e-4); masked, o 3-10e-7.
   */
  splitMask?: boolean;
  /**
   * split-f16 with the inputs split before the kernel (the host's `splitF16` pass): q, k and v
   * are bound as halves, each buffer [hi | lo], lo at the uniform's qLo / kLo / vLo (halves), so
   * the kernel stages (and with qDirect loads) halves as the f16 kernel does, twice, instead of
   * converting f32 on every staging. Only with split; allows qDirect, qRegs and batchLoads.
   * The host's default for split, with its range guard (host.ts forwardLaunch).
   */
  presplit?: boolean;
  /**
   * Timing aid, wrong results: 'noRoundTrip' leaves S in its matrices (no store, no softmax
   * loops; P is whatever the scratch holds), 'noSoftmax' keeps the round trip but neither masks
   * nor exponentiates. The differences to the real kernel price its parts on the device.
   */
  debug?: 'noRoundTrip' | 'noSoftmax';
  /**
   * Declare the small workgroup variables (row exchange, alphas, the flag widened to 16 bytes)
   * before the f16 arrays (default true). Without it the H200 computed wrong results at D = 64
   * and with 16-key tiles, in every variant and deterministically, while the emulation was
   * right (runs 13-14, VARIANTS.md): the driver's placement of a 4-byte variable among the
   * arrays that subgroup-matrix loads read. false reproduces the failure.
   */
  smallFirst?: boolean;
  /**
   * A block-sparse mask (KERNELS.md "Common"): the host's per-tile summary (aux.ts buildAux with
   * this kernel's tiling, BR x BC) skips tiles whose blocks are all dropped, and in mixed tiles
   * each score outside a kept block is masked. Skipped tiles break the alternation of the
   * staging halves by tile index, so the halves alternate by a running count of visited tiles.
   * Off: the kernel text is unchanged.
   */
  blockSparse?: boolean;
  /**
   * SageAttention2's kernel on this engine (issue 11; packages/sage-attention/ARITHMETIC.md
   * "Kernel", pvBits 8): q, k and v hold the codec's integer codes as f16 halves (exact: |code|
   * <= 127), so S = Q K^T in the f32 accumulators is the exact integer dot (|dot| < 2^21, every
   * partial sum an integer), provided the tensor cores add integers below 2^24 exactly. P~ V,
   * with P~'s codes (0..255, exact in f16) as the left matrices, is accumulated onto O's result
   * matrices: each multiply adds exact integer products to the running (alpha-rescaled) O, so
   * the tile's pv never exists on its own and O is the spec's acc up to the tensor cores' f32
   * additions (with round to nearest, rounding order only; how the H200 adds is measured by
   * benchmarks/gpu/bench-tc-numerics.ts, cases single-c, chain and codes-pv-chain). The score
   * of a lane's column is dequantised as the spec orders it, s = (f32(dot) f32(sQ sK) [+ bias]) scale (natural units,
   * P.scale), the softmax runs on s with sage_exp (the portable kernel's, so P~'s codes agree
   * with the TS spec's as often as there), P~'s codes go to `sp` as f16 and l sums the
   * unquantised p. The accumulators hold sum_t (prod alphas) pv_t: O rescales by alpha through
   * the scratch whenever a row's max moves (lazy 0: the codes are relative to the running max,
   * so the spec leaves no threshold), and dV[c] / l is applied once, in the epilogue (the spec's
   * acc alpha + f32(pv) dV up to f32 rounding order). Bindings after the others: qsc, ksc, vsc
   * (and dsb with `bias`); Params gain hq, hkv, nQG, nKG, nQB; O and LSE are f32, LSE in natural
   * units. Needs 64-key tiles (keyMatrices 4: the spec's tile boundaries) and lazy 0; not with
   * split, blockSparse or debug.
   */
  sage?: TcSageConfig;
}

/** TcForwardConfig.sage: the codec's scale granularity and whether smoothQ's bias is bound. */
export interface TcSageConfig {
  granularity: SageGranularity;
  bias: boolean;
}

/** The uniform fields a presplit kernel adds after PARAM_FIELDS: where lo starts in q, k, v (halves). */
export const TC_SPLIT_FIELDS = [
  ['qLo', 'u32'],
  ['kLo', 'u32'],
  ['vLo', 'u32'],
] as const;

/** The uniform fields a Sage kernel adds after PARAM_FIELDS (TcForwardConfig.sage). */
export const TC_SAGE_FIELDS = [
  ['hq', 'u32'],
  ['hkv', 'u32'],
  ['nQG', 'u32'],
  ['nKG', 'u32'],
  ['nQB', 'u32'],
] as const;

/**
 * Subgroup-matrix operations as WGSL text: the real builtins, or (emulate) plain WGSL with the
 * same semantics: lane l holds elements 8 l .. 8 l + 7 of the 16x16 matrix in row-major order;
 * element (r, c) of a matrix at `off` is arr[off + r * stride + c] (arr[off + c * stride + r]
 * column-major), for left (M x K), right (K x N) and result (M x N) matrices alike. Generated
 * helper functions are named per array and major order, since WGSL functions cannot be
 * generic over the array they read.
 *
 * `opaqueZero`: WGSL of a u32 from the kernel's uniform that the compiler cannot fold (the
 * emulation's 8 is `8u + min(opaqueZero, 0u)`); the skeleton's Params have `group`, another
 * kernel passes a field of its own (GLA: `P.H`).
 */
export function matrixOps(emulate: boolean, subgroups: number, opaqueZero = 'P.group') {
  if (typeof emulate !== 'boolean')
    throw new ValueError(`emulate: expected a boolean, got ${describe(emulate)}`, 'emulate');
  if (!Number.isInteger(subgroups) || subgroups < 1)
    throw new ValueError(
      `subgroups: expected a positive integer, got ${describe(subgroups)}`,
      'subgroups',
    );
  if (typeof opaqueZero !== 'string' || opaqueZero.trim() === '')
    throw new ValueError(
      `opaqueZero: expected the WGSL of a uniform u32, got ${describe(opaqueZero)}`,
      'opaqueZero',
    );
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
    /**
     * `outer`: `arr` is an array of arrays and the matrix lies in its element `outer` (WGSL of
     * a u32), at `off` within it. With a constant `off` and stride, Tint's robustness proves the
     * access in bounds at compile time and emits the bare load; a dynamic offset gets an
     * `if (in bounds)` around every load and store (and the matrix through a function
     * variable), which cost ~19 SM cycles a load on the H200 against ~4 (bench-tc-micro).
     */
    load(
      kind: 'L' | 'R' | 'A',
      arr: string,
      off: string,
      cm: boolean,
      stride: string,
      outer?: string,
    ): string {
      const ref = outer === undefined ? arr : `${arr}[${outer}]`;
      if (!emulate) return `subgroupMatrixLoad<${types[kind]}>(&${ref}, ${off}, ${cm}, ${stride})`;
      const name = `ld_${arr}_${cm ? 'c' : 'r'}${outer === undefined ? '' : '_n'}`;
      const el = outer === undefined ? `${arr}[${at(cm)}]` : `${arr}[ou][${at(cm)}]`;
      helpers.set(
        name,
        `fn ${name}(${outer === undefined ? '' : 'ou: u32, '}off: u32, stride: u32) -> array<f32, 8> {
  var x: array<f32, 8>;
  for (var t = 0u; t < e_8(); t++) { let e = e_lane * 8u + t; x[t] = f32(${el}); }
  return x;
}`,
      );
      return `${name}(${outer === undefined ? '' : `${outer}, `}${off}, ${stride})`;
    },
    store(
      arr: string,
      off: string,
      m: string,
      cm: boolean,
      stride: string,
      outer?: string,
    ): string {
      const ref = outer === undefined ? arr : `${arr}[${outer}]`;
      if (!emulate) return `subgroupMatrixStore(&${ref}, ${off}, ${m}, ${cm}, ${stride})`;
      const name = `st_${arr}_${cm ? 'c' : 'r'}${outer === undefined ? '' : '_n'}`;
      const el = outer === undefined ? `${arr}[${at(cm)}]` : `${arr}[ou][${at(cm)}]`;
      helpers.set(
        name,
        `fn ${name}(${outer === undefined ? '' : 'ou: u32, '}off: u32, m: array<f32, 8>, stride: u32) {
  for (var t = 0u; t < e_8(); t++) { let e = e_lane * 8u + t; ${el} = m[t]; }
}`,
      );
      return `${name}(${outer === undefined ? '' : `${outer}, `}${off}, ${m}, ${stride})`;
    },
    /**
     * A left matrix (row-major) of halves straight from storage, at `off` with row stride
     * `stride` (halves): the real builtin reads `halves`, a second binding of the buffer as
     * `array<f16>`; the emulation reads the buffer's words `words` (16-byte, or 4-byte with
     * `narrow`) through a generated helper. The forward's qDirect and the dQ pass's blockDirect
     * load their kept blocks with it.
     */
    loadStorage(
      halves: string,
      words: string,
      off: string,
      stride: string,
      narrow = false,
    ): string {
      if (!emulate) return `subgroupMatrixLoad<${types.L}>(&${halves}, ${off}, false, ${stride})`;
      const name = `ld_direct_${words}`;
      helpers.set(name, emulatedDirectLoad(name, words, narrow));
      return `${name}(${off}, ${stride})`;
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
// 8, from a uniform the compiler cannot see through (the kernel's Params P): the emulation's
// loops stay rolled (unrolled and inlined at every call they made llvmpipe's compiles take
// minutes).
fn e_8() -> u32 { return 8u + min(${opaqueZero}, 0u); }
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

/**
 * WGSL type of a workgroup array of `n` parts of `size` elements of type `t`: nested, an array
 * of per-part arrays whose elements subgroup-matrix builtins address at constant offsets
 * (constOffsets), or flat. The tensor-core forward, backward and Sage's int8 kernel declare
 * their per-subgroup scratch with it.
 */
export function partsArray(t: string, size: number, n: number, nested: boolean): string {
  return nested ? `array<array<${t}, ${size}>, ${n}>` : `array<${t}, ${size * n}>`;
}

/** The subgroup size the kernel assumes (NVIDIA's warp; the planner requires it). */
export const TC_SUBGROUP_SIZE = 32;

/**
 * Why an adapter cannot run the f16 tensor-core kernels (the FA2 forward and backward, Sage's
 * f16 engine), as the end of a "got one where ..." message, or undefined when it can: they need
 * f16 x f16 -> f32 16x16x16 subgroup matrices and TC_SUBGROUP_SIZE-wide subgroups.
 */
export function tcAdapterGap(
  f: Pick<
    WebGpuFeatures,
    'shaderF16' | 'subgroupMatrixConfigs' | 'subgroupMinSize' | 'subgroupMaxSize'
  >,
): string | undefined {
  if (
    !f.shaderF16 ||
    !f.subgroupMatrixConfigs.some(
      (c) => c.component === 'f16' && c.result === 'f32' && c.M === 16 && c.N === 16 && c.K === 16,
    )
  )
    return 'the adapter has no f16 x f16 -> f32 16x16x16 subgroup matrices';
  if (f.subgroupMinSize !== TC_SUBGROUP_SIZE || f.subgroupMaxSize !== TC_SUBGROUP_SIZE)
    return `the subgroups are ${f.subgroupMinSize}-${f.subgroupMaxSize} wide, not ${TC_SUBGROUP_SIZE}`;
  return undefined;
}

function rep(n: number, f: (i: number) => string, sep = '\n'): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

function check(c: TcForwardConfig): void {
  for (const [name, v, step] of [
    ['d', c.d, 16],
    ['dv', c.dv, 16],
  ] as const) {
    if (!Number.isInteger(v) || v < step || v % step !== 0)
      throw new ValueError(`${name}: expected a positive multiple of ${step}, got ${v}`, name);
  }
  if (!Number.isInteger(c.subgroups) || c.subgroups < 1 || c.subgroups > 16)
    throw new ValueError(
      `subgroups: expected an integer in [1, 16], got ${c.subgroups}`,
      'subgroups',
    );
  if (!Number.isInteger(c.keyMatrices) || c.keyMatrices < 1 || c.keyMatrices > 8)
    throw new ValueError(
      `keyMatrices: expected an integer in [1, 8], got ${c.keyMatrices}`,
      'keyMatrices',
    );
  if (!(Number.isFinite(c.lazy) && c.lazy >= 0 && c.lazy <= 12))
    throw new ValueError(`lazy: expected a number in [0, 12], got ${c.lazy}`, 'lazy');
  if (c.presplit && !c.split)
    throw new ValueError('presplit: expected split beside it, got none', 'presplit');
  if (c.batchLoads && (c.narrow || (c.split && !c.presplit)))
    throw new ValueError(
      'batchLoads: expected neither narrow nor split beside it (it stages 16-byte words of halves; f32 inputs run split-f16), got one',
      'batchLoads',
    );
  if (c.splitMask && !c.split)
    throw new ValueError('splitMask: expected split beside it, got none', 'splitMask');
  if (c.split && (c.fused || c.narrow || (c.qRegs && !c.presplit) || c.unpack))
    throw new ValueError(
      'split: expected no fused, narrow, qRegs (without presplit) or unpack beside it, got some of them',
      'split',
    );
  if (c.qDirect && c.split && !c.presplit)
    throw new ValueError(
      'qDirect: expected no split beside it (split-f16 stages Q as hi and lo halves), got both',
      'qDirect',
    );
  if (
    c.pad !== undefined &&
    !(Number.isInteger(c.pad) && c.pad >= 0 && c.pad <= 128 && c.pad % 8 === 0)
  )
    throw new ValueError(`pad: expected a multiple of 8 in [0, 128], got ${c.pad}`, 'pad');
  if (c.sage !== undefined) checkSage(c);
}

function checkSage(c: TcForwardConfig): void {
  const s = c.sage;
  if (s === null || typeof s !== 'object')
    throw new ValueError(`sage: expected { granularity, bias }, got ${describe(s)}`, 'sage');
  if (s.granularity !== 'block' && s.granularity !== 'warp' && s.granularity !== 'thread')
    throw new ValueError(
      `sage.granularity: expected "block", "warp" or "thread", got ${describe(s.granularity)}`,
      'sage.granularity',
    );
  if (typeof s.bias !== 'boolean')
    throw new ValueError(`sage.bias: expected a boolean, got ${describe(s.bias)}`, 'sage.bias');
  if (16 * c.keyMatrices !== SAGE_KEY_TILE)
    throw new ValueError(
      `keyMatrices: expected ${SAGE_KEY_TILE / 16} with sage (ARITHMETIC.md's ${SAGE_KEY_TILE}-key tiles), got ${c.keyMatrices}`,
      'keyMatrices',
    );
  if (c.lazy !== 0)
    throw new ValueError(
      `lazy: expected 0 with sage (P~'s codes are relative to the running max), got ${c.lazy}`,
      'lazy',
    );
  if (c.split || c.blockSparse || c.debug !== undefined)
    throw new ValueError(
      'sage: expected no split, blockSparse or debug beside it, got some of them',
      'sage',
    );
}

/** Sizes (in elements) of the kernel's workgroup arrays. */
function layoutOf(c: TcForwardConfig) {
  const pad = c.pad ?? 0;
  const BC = 16 * c.keyMatrices;
  const BR = 16 * c.subgroups;
  const KW = c.d + pad;
  const VW = c.dv + pad;
  const SPW = BC + pad;
  const fused = c.fused ?? false;
  const layout = c.kvLayout ?? 'parity';
  // fused: [K | V] of even tiles, then [K | V] of odd ones; otherwise STAGE-sized halves.
  const HALFSZ = fused ? BC * (KW + VW) : BC * Math.max(KW, VW);
  const kvSize = fused || layout !== 'single' ? 2 * HALFSZ : HALFSZ;
  // Q's block keeps a region of its own even when its matrices are held in registers: staged
  // through kv (rewritten by the first K tile after the matrices were loaded) it gave wrong
  // scores on the H200 (run 12, VARIANTS.md): NVIDIA's compiler moved the loads past the barrier.
  // qDirect: Q's matrices come from storage, no block in workgroup memory.
  const qsSize = c.qDirect ? 0 : BR * KW;
  return { pad, BC, BR, KW, VW, SPW, fused, layout, HALFSZ, kvSize, qsSize };
}

/** Workgroup memory of the kernel, bytes: K/V staging, the Q block, S scratch, P, the row exchange, alphas, flag. */
export function tcForwardWorkgroupBytes(c: TcForwardConfig): number {
  const L = layoutOf(c);
  // The emulation keeps f16 values in f32 arrays and needs 512 floats of scratch per subgroup.
  const h = (c.emulate ? 4 : 2) * (c.split ? 2 : 1);
  return (
    (L.kvSize + L.qsSize) * h +
    c.subgroups *
      (16 * L.BC * 4 * (c.split ? 2 : 1) +
        16 * L.SPW * h +
        (c.shuffle ? 0 : TC_SUBGROUP_SIZE * 4) +
        16 * 4 +
        (c.emulate ? 512 * 4 : 0)) +
    (c.smallFirst === false ? 4 : 16)
  );
}

/**
 * Where a staged row goes, for stageRows, stageParts and the forward's split / narrow stagings:
 * `outer` undefined, into `dst` itself; a string, into dst's element `outer` (WGSL); a number,
 * dst is an array of arrays of that many rows each, row r going to dst[r / outer] at `at` +
 * (r % outer) DW. `target(a)` is the array to index (dst, or one laid out alike such as split's
 * lo array); `rowAt(r)` declares d, row r's start there (and oq, its element: not q, a storage
 * binding of the kernels).
 */
export function stagingAddress(outer: string | number | undefined, at: string, DW: number) {
  return {
    target: (a: string) =>
      outer === undefined ? a : typeof outer === 'string' ? `${a}[${outer}]` : `${a}[oq]`,
    rowAt: (r: string) =>
      typeof outer === 'number'
        ? `let oq = ${r} / ${outer}u;\n      let d = ${at}(${r} % ${outer}u) * ${DW}u`
        : `let d = ${at}${r} * ${DW}u`,
  };
}

/** WGSL: word w's 8 halves through cvt into `target` at d .. d + 7, lines indented by `ind`. */
function storeWord(cvt: (x: string) => string, target: string, ind: string): string {
  return rep(
    4,
    (j) => `let h${j} = ${cvt(`w[${j}]`)};
${ind}${target}[d + ${2 * j}u] = h${j}.x;
${ind}${target}[d + ${2 * j + 1}u] = h${j}.y;`,
    `\n${ind}`,
  );
}

/**
 * Copies `rows` rows of width W halves from storage `s` (16-byte words; row `first + r` at
 * base + (first + r) stride halves) into the workgroup array `dst` at `at` + r DW (rows at or
 * past `limit` as zeros), 8 halves per invocation step, each word's halves through `cvt` (WGSL
 * text of a vec2 of the array's element type from a u32). `outer` (constOffsets: dst an array
 * of arrays): the element the rows go to, or the rows per element (stagingAddress). The
 * tensor-core forward and backward stage their tiles with it.
 */
export function stageRows(
  T: number,
  cvt: (x: string) => string,
  s: string,
  base: string,
  stride: string,
  first: string,
  rows: number,
  limit: string,
  W: number,
  DW: number,
  dst: string,
  at: string,
  batched = false,
  outer?: string | number,
): string {
  const words = (rows * W) / 8;
  const { target: into, rowAt } = stagingAddress(outer, at, DW);
  const target = into(dst);
  if (batched && words % T === 0) {
    // Every word of the invocation loaded first, then converted and stored: no store waits
    // for a load before the next load is issued. Rows at or past `limit` load a clamped word
    // and store zeros. (Names sr / sc / sw: `first` may be the caller's r0.)
    const n = words / T;
    return `
    {
      ${rep(
        n,
        (i) => `let sr${i} = (lid + ${i * T}u) / ${W / 8}u;
      let sc${i} = (lid + ${i * T}u) % ${W / 8}u;
      let sw${i} = ${s}[min((${base} + (${first} + sr${i}) * ${stride}) / 8u + sc${i}, arrayLength(&${s}) - 1u)];`,
        '\n      ',
      )}
      ${rep(
        n,
        (i) => `{
        let w = select(vec4<u32>(0u), sw${i}, ${first} + sr${i} < ${limit});
        ${rowAt(`sr${i}`)} + sc${i} * 8u;
        ${storeWord(cvt, target, '        ')}
      }`,
        '\n      ',
      )}
    }`;
  }
  return `
    for (var e = lid; e < ${words}u; e += ${T}u) {
      let r = e / ${W / 8}u;
      let c8 = e % ${W / 8}u;
      var w = vec4<u32>(0u);
      if (${first} + r < ${limit}) { w = ${s}[(${base} + (${first} + r) * ${stride}) / 8u + c8]; }
      ${rowAt('r')} + c8 * 8u;
      ${storeWord(cvt, target, '      ')}
    }`;
}

/**
 * stageRows' batched staging cut in two, so that the loads can be issued well before the
 * stores (prefetchK: a tile ahead; splitV: before the softmax): `load` reads the invocation's
 * 16-byte words of the rows from `loadFirst` into `${tag}<i>` (`let`s, or assignments to
 * `var`s that `decl` declares, with `assign`), and `store` converts, masks (rows at or past
 * `limit`, counted from `storeFirst`) and writes them as stageRows does. Undefined where the
 * tile's words are not a whole multiple of the invocations (the caller stages as before).
 */
export function stageParts(
  T: number,
  cvt: (x: string) => string,
  s: string,
  base: string,
  stride: string,
  loadFirst: string,
  storeFirst: string,
  rows: number,
  limit: string,
  W: number,
  DW: number,
  dst: string,
  at: string,
  tag: string,
  assign: boolean,
): { decl: string; load: string; store: string } | undefined {
  const words = (rows * W) / 8;
  if (words % T !== 0) return undefined;
  const n = words / T;
  // Row and 16-byte column of the invocation's word i (as stageRows).
  const row = (i: number) => `(lid + ${i * T}u) / ${W / 8}u`;
  const col = (i: number) => `(lid + ${i * T}u) % ${W / 8}u`;
  return {
    decl: rep(n, (i) => `var ${tag}${i}: vec4<u32>;`, '\n  '),
    load: rep(
      n,
      (i) =>
        `${assign ? '' : 'let '}${tag}${i} = ${s}[min((${base} + (${loadFirst} + ${row(i)}) * ${stride}) / 8u + ${col(i)}, arrayLength(&${s}) - 1u)];`,
      '\n    ',
    ),
    store: rep(
      n,
      (i) => `{
      let r = ${row(i)};
      let w = select(vec4<u32>(0u), ${tag}${i}, ${storeFirst} + r < ${limit});
      let d = ${at}r * ${DW}u + ${col(i)} * 8u;
      ${storeWord(cvt, dst, '      ')}
    }`,
      '\n    ',
    ),
  };
}

/** spec.ts keyRange(i) = [key_lo, key_hi) of query row r (off = nk - nq, ncols = nk), in WGSL. */
export const TC_KEY_RANGES = `fn key_lo(r: i32, off: i32, ncols: i32) -> i32 { if (P.left < 0) { return 0; } return max(r + off - P.left, 0); }
fn key_hi(r: i32, off: i32, ncols: i32) -> i32 { if (P.right < 0) { return ncols; } return clamp(r + off + P.right + 1, 0, ncols); }`;

/**
 * The entry point's head shared by the tensor-core kernels: the builtins (subgroup_id and the
 * lane, or under emulation their values from the invocation index), then sequence b's starts
 * and lengths from aux, with off = nk - nq.
 */
export function tcEntry(T: number, emulate: boolean): string {
  return `@compute @workgroup_size(${T})
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  ${emulate ? '' : '@builtin(subgroup_id) sg: u32,\n  @builtin(subgroup_invocation_id) lane: u32,'}
) {
  ${emulate ? `let sg = lid / ${TC_SUBGROUP_SIZE}u;\n  let lane = lid % ${TC_SUBGROUP_SIZE}u;\n  e_lane = lane;\n  e_sg = sg;` : ''}
  let b = wg.z;
  let startQ = aux[4u * b];
  let startK = aux[4u * b + 1u];
  let nq = aux[4u * b + 2u];
  let nk = aux[4u * b + 3u];
  let off = i32(nk) - i32(nq);`;
}

/**
 * WGSL of `fn <name>(off, stride) -> array<f32, 8>`: matrixOps' emulated left-matrix load
 * (lane layout as there, row-major) of halves read from the storage binding `src` of 16-byte
 * words (`narrow`: 4-byte words), for matrixOps' loadStorage. Uses the emulation's prelude.
 */
function emulatedDirectLoad(name: string, src: string, narrow = false): string {
  return `
fn ${name}(off: u32, stride: u32) -> array<f32, 8> {
  var x: array<f32, 8>;
  for (var t = 0u; t < e_8(); t++) {
    let e = e_lane * 8u + t;
    let i = off + (e / 16u) * stride + e % 16u;
    x[t] = unpack2x16float(${narrow ? `${src}[i / 2u]` : `${src}[i / 8u][(i % 8u) / 2u]`})[i % 2u];
  }
  return x;
}`;
}

/**
 * WGSL of the first row of the 16-row block whose matrices subgroup `sg` of the workgroup at
 * row `r0` loads straight from storage (qDirect, blockDirect): its own block, or (wholly past the
 * sequence of `nq` rows) the sequence's last one, which the host checked lies within the buffer.
 */
export const TC_DIRECT_BLOCK_ROW = 'min(r0 + sg * 16u, ((nq + 15u) / 16u) * 16u - 16u)';

export function tcForwardShader(c: TcForwardConfig): WgslKernel {
  check(c);
  const KD = c.d / 16;
  const KV = c.dv / 16;
  const NC = c.keyMatrices;
  const Lo = layoutOf(c);
  const { BC, BR, KW, VW, SPW, fused, layout, HALFSZ } = Lo;
  const T = c.subgroups * TC_SUBGROUP_SIZE;
  const HALF = BC / 2;
  const CH = Math.ceil(c.dv / BC); // O round-trip chunks of BC columns
  const narrow = c.narrow ?? false;
  const swz = c.swizzle ?? false;
  const shuffle = c.shuffle ?? false;
  // qDirect loads Q's matrices into registers from storage: qRegs' loop, no staging.
  const qDirect = c.qDirect ?? false;
  const qRegs = (c.qRegs ?? false) || qDirect;
  // Where this tile's K and V go in kv.
  const bsp = c.blockSparse ?? false;
  // The staging half's parity: the tile index, or (block-sparse: tiles may be skipped) the
  // count of tiles visited so far.
  const par = bsp ? 'vis' : 'ct';
  const nest = c.constOffsets ?? false;
  // nest: K and V live in kv[kvo] at constant bases kB0 / vB0 (halves); flat: at kvK / kvV.
  const kB0 = 0;
  const vB0 = fused ? BC * KW : 0;
  const kvBases = nest
    ? `let kvo = ${fused || layout === 'parity' ? `${par} & 1u` : '0u'};`
    : fused
      ? `let kvK = (${par} & 1u) * ${HALFSZ}u;\n    let kvV = kvK + ${BC * KW}u;`
      : layout === 'parity'
        ? `let kvK = (${par} & 1u) * ${HALFSZ}u;\n    let kvV = kvK;`
        : layout === 'split'
          ? `let kvK = 0u;\n    let kvV = ${HALFSZ}u;`
          : `let kvK = 0u;\n    let kvV = 0u;`;
  // A barrier at the top of the loop is only needed when a tile's K overwrites the previous
  // tile's V while other subgroups may still multiply with it ('single').
  const topBarrier = !fused && layout === 'single';
  const emu = c.emulate ?? false;
  const mx = matrixOps(emu, c.subgroups);
  const { A, H } = mx;
  const split = c.split ?? false;
  const sage = c.sage;
  // split converts f32 words while staging; presplit stages halves (words of [hi | lo]).
  const presplit = split && (c.presplit ?? false);
  const kSplit = split && !presplit;
  const src = kSplit ? 'array<vec4<f32>>' : narrow ? 'array<u32>' : 'array<vec4<u32>>';
  const bindings: WgslBinding[] = [
    { name: 'P', kind: 'uniform', type: 'Params' },
    { name: 'q', kind: 'read', type: src },
    { name: 'k', kind: 'read', type: src },
    { name: 'v', kind: 'read', type: src },
    { name: 'aux', kind: 'read', type: 'array<u32>' },
    {
      name: 'o',
      kind: 'storage',
      type: split || sage ? 'array<vec4<f32>>' : 'array<vec4<u32>>',
    },
    { name: 'lse', kind: 'storage', type: 'array<f32>' },
    // qDirect: q's buffer again, as halves, for the matrix loads (the emulation reads q).
    ...(qDirect && !emu ? [{ name: 'q16', kind: 'read', type: 'array<f16>' } as const] : []),
    // sage: the codec's scales (Q per group, K per group, V per channel) and smoothQ's bias.
    ...(sage
      ? ([
          { name: 'qsc', kind: 'read', type: 'array<f32>' },
          { name: 'ksc', kind: 'read', type: 'array<f32>' },
          { name: 'vsc', kind: 'read', type: 'array<f32>' },
          ...(sage.bias ? [{ name: 'dsb', kind: 'read', type: 'array<f32>' } as const] : []),
        ] as const)
      : []),
  ];
  const moved = c.lazy > 0 ? `tmax > m + ${c.lazy.toFixed(1)}` : 'tmax > m';
  const cvt = (x: string) =>
    emu
      ? `unpack2x16float(${x})`
      : c.unpack
        ? `vec2<f16>(unpack2x16float(${x}))`
        : `bitcast<vec2<f16>>(${x})`;
  // Copies `rows` rows of width W (halves) from `src` (base in halves, row stride in halves)
  // into dst at `at` (row-major, row stride DW), rows at or past `limit` as zeros.
  const stage = (
    s: string,
    base: string,
    stride: string,
    first: string,
    rows: number,
    limit: string,
    W: number,
    DW: number,
    dst: string,
    at: string,
    // nest: the element of dst (an array of arrays) the rows go to, or rows per element.
    outer?: string | number,
  ) => {
    // dst (and split's lo array) as the staging target, and row r's start d within it.
    const { target: tgt, rowAt } = stagingAddress(outer, at, DW);
    return kSplit
      ? `
    for (var e = lid; e < ${(rows * W) / 4}u; e += ${T}u) {
      let r = e / ${W / 4}u;
      let c4 = e % ${W / 4}u;
      var x = vec4<f32>(0.0);
      if (${first} + r < ${limit}) { x = ${s}[(${base} + (${first} + r) * ${stride}) / 4u + c4]; }
      ${rowAt('r')} + c4 * 4u;
      ${[0, 1, 2, 3]
        .map((i) =>
          c.splitMask
            ? `let m${i} = hiBits(x[${i}]);
      ${tgt(dst)}[d + ${i}u] = ${emu ? `r16(m${i})` : `f16(m${i})`};
      ${tgt(`${dst}l`)}[d + ${i}u] = ${emu ? `r16((x[${i}] - m${i}) * LOSCALE)` : `f16((x[${i}] - m${i}) * LOSCALE)`};`
            : `let h${i} = ${emu ? `r16(x[${i}])` : `f16(x[${i}])`};
      ${tgt(dst)}[d + ${i}u] = h${i};
      ${tgt(`${dst}l`)}[d + ${i}u] = ${emu ? `r16((x[${i}] - h${i}) * LOSCALE)` : `f16((x[${i}] - f32(h${i})) * LOSCALE)`};`,
        )
        .join('\n      ')}
    }`
      : narrow
        ? `
    for (var e = lid; e < ${(rows * W) / 2}u; e += ${T}u) {
      let r = e / ${W / 2}u;
      let c2 = e % ${W / 2}u;
      var w = 0u;
      if (${first} + r < ${limit}) { w = ${s}[(${base} + (${first} + r) * ${stride}) / 2u + c2]; }
      ${rowAt('r')} + c2 * 2u;
      let h = ${cvt('w')};
      ${tgt(dst)}[d] = h.x;
      ${tgt(dst)}[d + 1u] = h.y;
    }`
        : stageRows(
            T,
            cvt,
            s,
            base,
            stride,
            first,
            rows,
            limit,
            W,
            DW,
            dst,
            at,
            c.batchLoads,
            outer,
          );
  };
  // Column of a lane's row at step c of its half (rotated when swizzled: see `swizzle`).
  const col = (cv: string) =>
    swz ? `hh * ${HALF}u + (${cv} + rot) % ${HALF}u` : `hh * ${HALF}u + ${cv}`;
  // The partner lane's value (the other half of the row).
  const partner = (x: string) =>
    shuffle
      ? `${x} = ${x.startsWith('l') ? `${x} + subgroupShuffleXor(${x}, 1u)` : `max(${x}, subgroupShuffleXor(${x}, 1u))`};`
      : `sx[sg * ${TC_SUBGROUP_SIZE}u + lane] = ${x};
    workgroupBarrier();
    ${x} = ${x.startsWith('l') ? `${x} + sx[sg * ${TC_SUBGROUP_SIZE}u + (lane ^ 1u)]` : `max(${x}, sx[sg * ${TC_SUBGROUP_SIZE}u + (lane ^ 1u)])`};`;
  const qStage = 'qs';
  // K's and V's element of kv (nest).
  const kOuter = 'kvo';
  const vOuter = nest && !fused && layout === 'split' ? '1u' : 'kvo';
  // A matrix of a per-subgroup array (qs, sc, sp...) at `off` within the subgroup's part
  // (`base` its start in the flat layout), or of kv at `off` within the tile's K or V: the
  // (offset, outer) of matrixOps' load and store.
  const mine = (base: string, off: number): [string, string | undefined] =>
    nest ? [`${off}u`, 'sg'] : [`${base} + ${off}u`, undefined];
  const kvAt = (isV: boolean, off: number): [string, string | undefined] =>
    nest
      ? [`${(isV ? vB0 : kB0) + off}u`, isV ? vOuter : kOuter]
      : [`${isV ? 'kvV' : 'kvK'} + ${off}u`, undefined];
  // Scalar element x (WGSL) of a per-subgroup array, and the flat layout's base to add.
  const el = (a: string, x: string) => (nest ? `${a}[sg][${x}]` : `${a}[${x}]`);
  const scAt = nest ? '' : 'scB + ';
  const spAt = nest ? '' : 'spB + ';
  const ldMine = (kind: 'L' | 'A', a: string, base: string, off: number, stride: string) => {
    const [o, outer] = mine(base, off);
    return mx.load(kind, a, o, false, stride, outer);
  };
  const stMine = (a: string, base: string, off: number, m: string) => {
    const [o, outer] = mine(base, off);
    return mx.store(a, o, m, false, 'BC', outer);
  };
  const ldKv = (a: string, isV: boolean, off: number, stride: string) => {
    const [o, outer] = kvAt(isV, off);
    return mx.load('R', a, o, !isV, stride, outer);
  };
  const qLoad = (i: number) => ldMine('L', qStage, `sg * ${16 * KW}u`, 16 * i, `${KW}u`);
  const qlLoad = (i: number) => ldMine('L', 'qsl', `sg * ${16 * KW}u`, 16 * i, `${KW}u`);
  // K's or V's tile into kv; presplit stages it twice, hi into kv and lo (at the uniform's
  // offset kLo / vLo) into kvl.
  const stageKv = (isV: boolean) => {
    const [t, W, DW] = isV ? (['v', c.dv, VW] as const) : (['k', c.d, KW] as const);
    const one = (base: string, dst: string) =>
      nest
        ? stage(
            t,
            base,
            `P.${t}Row`,
            'c0',
            BC,
            'nk',
            W,
            DW,
            dst,
            `${isV ? vB0 : kB0}u + `,
            isV ? vOuter : kOuter,
          )
        : stage(t, base, `P.${t}Row`, 'c0', BC, 'nk', W, DW, dst, `kv${isV ? 'V' : 'K'} + `);
    return presplit
      ? `${one(`${t}B`, 'kv')}\n${one(`(${t}B + P.${t}Lo)`, 'kvl')}`
      : one(`${t}B`, 'kv');
  };
  const stageK = stageKv(false);
  const stageV = stageKv(true);
  // prefetchK / splitV: the loads apart from the stores (stageParts), where they apply.
  const partsOk = !split && !narrow && !fused;
  const kParts = (loadFirst: string) =>
    stageParts(
      T,
      cvt,
      'k',
      'kB',
      'P.kRow',
      loadFirst,
      'c0',
      BC,
      'nk',
      c.d,
      KW,
      nest ? `kv[${kOuter}]` : 'kv',
      nest ? `${kB0}u + ` : 'kvK + ',
      'kw',
      true,
    );
  const pfK = (c.prefetchK ?? false) && partsOk && !bsp ? kParts('c0 + BC') : undefined;
  // The first tile's K, loaded before the loop.
  const pfK0 = pfK ? kParts('(u32(loFirst) / BC) * BC') : undefined;
  const svV =
    (c.splitV ?? false) && partsOk
      ? stageParts(
          T,
          cvt,
          'v',
          'vB',
          'P.vRow',
          'c0',
          'c0',
          BC,
          'nk',
          c.dv,
          VW,
          nest ? `kv[${vOuter}]` : 'kv',
          nest ? `${vB0}u + ` : 'kvV + ',
          'vw',
          false,
        )
      : undefined;
  const oChunk = (ch: number) =>
    Array.from({ length: KV }, (_, j) => j).filter((j) => Math.floor((16 * j) / BC) === ch);
  const smallFirst = c.smallFirst ?? true;
  const small = `${shuffle ? '' : `var<workgroup> sx: array<f32, ${c.subgroups * TC_SUBGROUP_SIZE}>;`}
var<workgroup> salpha: array<f32, ${c.subgroups * 16}>;
var<workgroup> sflag: ${smallFirst ? 'array<u32, 4>' : 'u32'};`;
  const flag = smallFirst ? 'sflag[0]' : 'sflag';
  const arr = (t: string, size: number, n: number) => partsArray(t, size, n, nest);
  if (emu && shuffle)
    throw new ValueError(
      'shuffle: expected false with emulate (no subgroups to shuffle), got true',
      'shuffle',
    );
  // sage: with 'block' / 'warp' granularity a 64-key tile has one K scale: f32(sQ sK) once per
  // tile (ksT) instead of a load per score. The score is dequantised as ARITHMETIC.md orders
  // it, in natural units; the scale and bias loads at the key clamped into the sequence (the
  // select discards keys past it).
  const tileScale = sage !== undefined && sage.granularity !== 'thread';
  const sageTileScale = tileScale ? '\n    let ksT = qsv * ksc[ksB + kgroup(c0)];' : '';
  const sageScore = (raw: string, j: string) => {
    const key = `min(u32(${j}), nk - 1u)`;
    const bias = sage?.bias ? ` + dsb[dsB + ${key}]` : '';
    const ks = tileScale ? 'ksT' : `(qsv * ksc[ksB + kgroup(${key})])`;
    return `select(NEG, (${raw} * ${ks}${bias}) * P.scale, ${j} >= rowLo && ${j} < rowHi)`;
  };
  // The masked score of a lane's column (WGSL): in log2 units, raw S (+ split's cross term); or
  // sage's.
  const scoreOf = (raw: string, cross: string, j: string) =>
    sage
      ? sageScore(raw, j)
      : c.debug === 'noSoftmax'
        ? raw
        : `select(NEG, ${cross ? `(${raw} + ${cross} * LOINV)` : raw} * P.scaleLog2, ${j} >= rowLo && ${j} < rowHi${bsp ? ` && (!mixed || aux[P.bsOff + slice * P.nbq * P.nbk + bsRow + u32(${j}) / P.bsK] != 0u)` : ''})`;
  // P = p at column `cl` of the lane's row into sp (split: hi and scaled lo).
  const storeP = (cl: string) =>
    sage
      ? // P~'s code, rint(f32(p 255)) (WGSL's round is half to even), exact as f16.
        `${el('sp', `${spAt}rr * ${SPW}u + ${cl}`)} = ${mx.half('round(p * 255.0)')};`
      : split && c.splitMask
        ? `let pm = hiBits(p);
      ${el('sp', `${spAt}rr * ${SPW}u + ${cl}`)} = ${emu ? 'r16(pm)' : 'f16(pm)'};
      ${el('spl', `${spAt}rr * ${SPW}u + ${cl}`)} = ${emu ? 'r16((p - pm) * LOSCALE)' : 'f16((p - pm) * LOSCALE)'};`
        : split
          ? `let ph = ${emu ? 'r16(p)' : 'f16(p)'};
      ${el('sp', `${spAt}rr * ${SPW}u + ${cl}`)} = ph;
      ${el('spl', `${spAt}rr * ${SPW}u + ${cl}`)} = ${emu ? 'r16((p - ph) * LOSCALE)' : 'f16((p - f32(ph)) * LOSCALE)'};`
          : `${el('sp', `${spAt}rr * ${SPW}u + ${cl}`)} = ${emu ? 'r16(p)' : 'f16(p)'};`;
  // p of a masked score x: 2^(x - m) (log2 units), or sage's e^(x - m), 0 for a masked key.
  const expOf = (x: string) =>
    sage ? `select(0.0, sage_exp(${x} - mn), ${x} > NEG)` : `exp2(${x} - mn)`;
  // regSoftmax: the lane's HALF scores read once into registers (every load issued before the
  // first use), masked and maxed ('max'), then exponentiated from the registers into P ('exp').
  // Names rs / rsx / ms: r0 is the tile's first row and x<n> split's cross accumulators.
  const regs = (c.regSoftmax ?? false) && c.debug !== 'noRoundTrip';
  const softmaxRegs = (part: 'max' | 'exp') =>
    part === 'max'
      ? `${rep(HALF, (i) => `let cl${i} = ${col(`${i}u`)};`, '\n    ')}
    ${rep(HALF, (i) => `let rs${i} = ${el('sc', `${scAt}rr * BC + cl${i}`)};${split ? ` let rsx${i} = ${el('scx', `${scAt}rr * BC + cl${i}`)};` : ''}`, '\n    ')}
    ${rep(HALF, (i) => `let ms${i} = ${scoreOf(`rs${i}`, split ? `rsx${i}` : '', `i32(c0 + cl${i})`)};\n    tmax = max(tmax, ms${i});`, '\n    ')}`
      : rep(
          HALF,
          (i) => `{
      let p = ${c.debug === 'noSoftmax' ? `ms${i}` : expOf(`ms${i}`)};
      ${storeP(`cl${i}`)}
      ps += p;
    }`,
          '\n    ',
        );
  const code = `${emu ? '' : 'enable f16;\n'}${shuffle ? 'enable subgroups;\n' : ''}${emu ? '' : 'enable chromium_experimental_subgroup_matrix;'}
${paramsStruct(sage ? TC_SAGE_FIELDS : presplit ? TC_SPLIT_FIELDS : [])}
const BC = ${BC}u;
const NEG = -3.0e38;
const M0 = -1.0e38;
const LN2 = 0.6931471805599453;
${split ? `const LOSCALE = 2048.0;\nconst LOINV = 0.00048828125;${c.splitMask ? `\n${HI_BITS_WGSL}` : ''}` : ''}
${smallFirst ? small : ''}
var<workgroup> kv: ${arr(H, HALFSZ, Lo.kvSize / HALFSZ)};
${qDirect ? '' : `var<workgroup> qs: ${arr(H, 16 * KW, c.subgroups)};\n`}${split ? `var<workgroup> kvl: ${arr(H, HALFSZ, Lo.kvSize / HALFSZ)};\n${qDirect ? '' : `var<workgroup> qsl: ${arr(H, 16 * KW, c.subgroups)};\n`}var<workgroup> spl: ${arr(H, 16 * SPW, c.subgroups)};\nvar<workgroup> scx: ${arr('f32', 16 * BC, c.subgroups)};` : ''}
var<workgroup> sc: ${arr('f32', 16 * BC, c.subgroups)};
var<workgroup> sp: ${arr(H, 16 * SPW, c.subgroups)};
${smallFirst ? '' : small}
${declareBindings(bindings)}
__PRELUDE__
${TC_KEY_RANGES}${sage ? `\n${sageGroupFns(sage.granularity)}\n${SAGE_EXP_WGSL}` : ''}

${tcEntry(T, emu)}
  let h = wg.y;
  let r0 = wg.x * ${BR}u;
  if (r0 >= nq) { return; }
  let hk = h / P.group;
  let rr = lane / 2u;
  let hh = lane % 2u;
  let rot = rr + 16u * hh;
  let qB = b * P.qBatch + h * P.qHead + startQ * P.qRow;
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  let oB = b * P.oBatch + h * P.oHead + startQ * P.oRow;
  ${
    nest
      ? ''
      : `let scB = sg * ${16 * BC}u;
  let spB = sg * ${16 * SPW}u;`
  }
  let row = i32(r0 + sg * 16u + rr);
  let ncols = i32(nk);
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + ${BR}u, nq)) - 1;
  let rowLo = key_lo(row, off, ncols);
  let rowHi = key_hi(row, off, ncols);${
    sage
      ? `
  // sage: the row's Q scale, where its K scales and V's start, its bias row (a row past the
  // sequence reads the last row's: it is never written).
  let sRow = min(u32(row), nq - 1u);
  let qsv = qsc[(b * P.hq + h) * P.nQG + qgroup(sRow)];
  let ksB = (b * P.hkv + hk) * P.nKG;
  let vsB = (b * P.hkv + hk) * ${c.dv}u;${sage.bias ? '\n  let dsB = ((b * P.hq + h) * P.nQB + (sRow >> 7u)) * nk;' : ''}`
      : ''
  }
  ${
    qDirect
      ? `// Q's matrices from storage, once: the subgroup's 16-row block, or (wholly past the
  // sequence) its last one; the host checked that every such block lies within the buffer.
  let qOff = qB + ${TC_DIRECT_BLOCK_ROW} * P.qRow;
  ${rep(KD, (i) => `let qa${i} = ${mx.loadStorage('q16', 'q', `qOff + ${16 * i}u`, 'P.qRow', narrow)};`, '\n  ')}${
    presplit
      ? `
  ${rep(KD, (i) => `let ql${i} = ${mx.loadStorage('q16', 'q', `qOff + P.qLo + ${16 * i}u`, 'P.qRow', narrow)};`, '\n  ')}`
      : ''
  }`
      : `// Q's block (rows past the sequence as zeros), once.
  ${nest ? stage('q', 'qB', 'P.qRow', 'r0', BR, 'nq', c.d, KW, qStage, '', 16) : stage('q', 'qB', 'P.qRow', 'r0', BR, 'nq', c.d, KW, qStage, '')}${
    presplit
      ? `
  ${nest ? stage('q', '(qB + P.qLo)', 'P.qRow', 'r0', BR, 'nq', c.d, KW, 'qsl', '', 16) : stage('q', '(qB + P.qLo)', 'P.qRow', 'r0', BR, 'nq', c.d, KW, 'qsl', '')}`
      : ''
  }
  ${
    qRegs
      ? `workgroupBarrier();
  ${rep(KD, (i) => `let qa${i} = ${qLoad(i)};${split ? ` let ql${i} = ${qlLoad(i)};` : ''}`, '\n  ')}
`
      : ''
  }`
  }
  ${rep(KV, (j) => `var o${j} = ${A}();${split ? `\n  var y${j} = ${A}();` : ''}`, '\n  ')}
  var m = M0;
  var l = 0.0;
  let loFirst = key_lo(rFirst, off, ncols);
  let hiLast = max(key_hi(rLast, off, ncols), 0);${
    pfK && pfK0
      ? `
  // prefetchK: the first tile's K words (clamped addresses; masked when stored).
  ${pfK.decl}
  ${pfK0.load}`
      : ''
  }${
    bsp
      ? `
  let slice = b * P.bsBatch + h * P.bsHead;
  let bsRow = (u32(max(row, 0)) / P.bsQ) * P.nbk;
  var vis = 0u;`
      : ''
  }
  for (var ct = u32(loFirst) / BC; ct < (u32(hiLast) + BC - 1u) / BC; ct++) {
    let c0 = ct * BC;${sageTileScale}${
      bsp
        ? `
    // The host's summary of the tile's blocks (aux.ts): 0 all dropped, 1 mixed, 2 all kept.
    // Read-only storage at a workgroup-uniform address: the skip is uniform, barriers stay legal.
    let state = aux[P.tsOff + (slice * P.ntq + wg.x) * P.ntk + ct];
    if (state == 0u) { continue; }
    let mixed = state == 1u;`
        : ''
    }
    // K and V tiles alternate between two halves of kv by tile parity (fused, 'parity'): with
    // one constant-address buffer ('single') the H200 computed wrong scores (run 11 of
    // benchmarks/gpu/results/tc-wip/VARIANTS.md).
    ${kvBases}${bsp ? '\n    vis++;' : ''}
    ${topBarrier ? 'workgroupBarrier();' : ''}
    if (lid == 0u) { ${flag} = 0u; }
    ${pfK ? pfK.store : stageK}
    ${fused ? stageV : ''}
    workgroupBarrier();${
      pfK
        ? `
    // The next tile's K words, stored at its start (the last tile reloads a clamped one).
    ${pfK.load}`
        : ''
    }
    ${rep(NC, (n) => `var s${n} = ${A}();${split ? `\n    var x${n} = ${A}();` : ''}`, '\n    ')}
    ${rep(
      KD,
      (i) => `{
      let qa = ${qRegs ? `qa${i}` : qLoad(i)};
      ${split ? `let ql = ${qRegs ? `ql${i}` : qlLoad(i)};` : ''}
      ${rep(
        NC,
        (n) => {
          const kOff = 16 * n * KW + 16 * i;
          // split: the small cross terms first, then hi * hi.
          return split
            ? `{
        let kh = ${ldKv('kv', false, kOff, `${KW}u`)};
        x${n} = ${mx.mma('qa', ldKv('kvl', false, kOff, `${KW}u`), mx.mma('ql', 'kh', `x${n}`))};
        s${n} = ${mx.mma('qa', 'kh', `s${n}`)};
      }`
            : `s${n} = ${mx.mma('qa', ldKv('kv', false, kOff, `${KW}u`), `s${n}`)};`;
        },
        '\n      ',
      )}
    }`,
      '\n    ',
    )}
    ${c.debug === 'noRoundTrip' ? '' : rep(NC, (n) => `${stMine('sc', 'scB', 16 * n, `s${n}`)};${split ? `\n    ${stMine('scx', 'scB', 16 * n, `x${n}`)};` : ''}`, '\n    ')}
    workgroupBarrier();
    ${fused ? '' : svV ? svV.load : stageV}
    var tmax = NEG;
    ${
      regs
        ? softmaxRegs('max')
        : `for (var c = 0u; c < ${c.debug === 'noRoundTrip' ? 0 : HALF}u; c++) {
      let cl = ${col('c')};
      let j = i32(c0 + cl);
      let e = ${scAt}rr * BC + cl;
      let x = ${scoreOf(el('sc', 'e'), split ? el('scx', 'e') : '', 'j')};
      ${el('sc', 'e')} = x;
      tmax = max(tmax, x);
    }`
    }
    ${partner('tmax')}
    var mn = m;
    if (${moved}) { mn = tmax; }
    let alpha = ${sage ? 'sage_exp(m - mn)' : 'exp2(m - mn)'};
    m = mn;
    var ps = 0.0;
    ${
      regs
        ? softmaxRegs('exp')
        : `for (var c = 0u; c < ${c.debug === 'noRoundTrip' ? 0 : HALF}u; c++) {
      let cl = ${col('c')};
      let p = ${c.debug === 'noSoftmax' ? el('sc', `${scAt}rr * BC + cl`) : expOf(el('sc', `${scAt}rr * BC + cl`))};
      ${storeP('cl')}
      ps += p;
    }`
    }
    ${svV ? svV.store : ''}
    l = l * alpha + ps;
    if (hh == 0u) { salpha[sg * 16u + rr] = alpha; }
    if (alpha != 1.0) { ${flag} = 1u; }
    if (workgroupUniformLoad(&${flag}) != 0u) {
      ${rep(
        CH,
        (ch) => {
          const js = oChunk(ch);
          return `${js.map((j) => `${stMine('sc', 'scB', 16 * j - ch * BC, `o${j}`)};${split ? `\n      ${stMine('scx', 'scB', 16 * j - ch * BC, `y${j}`)};` : ''}`).join('\n      ')}
      workgroupBarrier();
      for (var c = 0u; c < ${HALF}u; c++) {
        let e = ${scAt}rr * BC + ${col('c')};
        ${el('sc', 'e')} = ${split ? `(${el('sc', 'e')} + ${el('scx', 'e')} * LOINV)` : el('sc', 'e')} * salpha[sg * 16u + rr];
      }
      workgroupBarrier();
      ${js.map((j) => `o${j} = ${ldMine('A', 'sc', 'scB', 16 * j - ch * BC, 'BC')};${split ? `\n      y${j} = ${A}();` : ''}`).join('\n      ')}`;
        },
        '\n      workgroupBarrier();\n      ',
      )}
    }
    ${rep(
      NC,
      (n) => `{
      let pa = ${ldMine('L', 'sp', 'spB', 16 * n, `${SPW}u`)};
      ${split ? `let pl = ${ldMine('L', 'spl', 'spB', 16 * n, `${SPW}u`)};` : ''}
      ${rep(
        KV,
        (j) => {
          const vOff = 16 * n * VW + 16 * j;
          return split
            ? `{
        let vh = ${ldKv('kv', true, vOff, `${VW}u`)};
        y${j} = ${mx.mma('pa', ldKv('kvl', true, vOff, `${VW}u`), mx.mma('pl', 'vh', `y${j}`))};
        o${j} = ${mx.mma('pa', 'vh', `o${j}`)};
      }`
            : `o${j} = ${mx.mma('pa', ldKv('kv', true, vOff, `${VW}u`), `o${j}`)};`;
        },
        '\n      ',
      )}
    }`,
      '\n    ',
    )}
  }
  // Both lanes of a row hold partial sums of l: add the partner's; O leaves through scratch in
  // chunks of BC columns, each lane writing 8 halves at a time.
  workgroupBarrier();
  ${partner('l')}
  let inv = select(1.0 / l, 0.0, l == 0.0);
  ${rep(
    CH,
    (ch) => {
      const js = oChunk(ch);
      const width = Math.min(BC, c.dv - ch * BC);
      return `${js.map((j) => `${stMine('sc', 'scB', 16 * j - ch * BC, `o${j}`)};${split ? `\n  ${stMine('scx', 'scB', 16 * j - ch * BC, `y${j}`)};` : ''}`).join('\n  ')}
  workgroupBarrier();
  if (u32(row) < nq) {
    ${
      split
        ? `for (var c4 = hh; c4 < ${width / 4}u; c4 += 2u) {
      let e = ${scAt}rr * BC + c4 * 4u;
      o[(oB + u32(row) * P.oRow + ${ch * BC}u) / 4u + c4] = (vec4<f32>(${[0, 1, 2, 3].map((t) => el('sc', t ? `e + ${t}u` : 'e')).join(', ')}) + vec4<f32>(${[0, 1, 2, 3].map((t) => el('scx', t ? `e + ${t}u` : 'e')).join(', ')}) * LOINV) * inv;
    }`
        : ''
    }
    ${
      split
        ? ''
        : sage
          ? `for (var c4 = hh; c4 < ${width / 4}u; c4 += 2u) {
      let e = ${scAt}rr * BC + c4 * 4u;
      let cc = vsB + ${ch * BC}u + c4 * 4u;
      o[(oB + u32(row) * P.oRow + ${ch * BC}u) / 4u + c4] = vec4<f32>(${[0, 1, 2, 3].map((t) => `${el('sc', t ? `e + ${t}u` : 'e')} * vsc[cc${t ? ` + ${t}u` : ''}]`).join(', ')}) * inv;
    }`
          : `for (var c8 = hh; c8 < ${width / 8}u; c8 += 2u) {
      let e = ${scAt}rr * BC + c8 * 8u;
      let x = array<f32, 8>(${[0, 1, 2, 3, 4, 5, 6, 7].map((t) => `${el('sc', `e + ${t}u`)} * inv`).join(', ')});
      o[(oB + u32(row) * P.oRow + ${ch * BC}u) / 8u + c8] = vec4<u32>(pack2x16float(vec2<f32>(x[0], x[1])), pack2x16float(vec2<f32>(x[2], x[3])), pack2x16float(vec2<f32>(x[4], x[5])), pack2x16float(vec2<f32>(x[6], x[7])));
    }
`
    }
  }
  workgroupBarrier();`;
    },
    '\n  ',
  )}
  if (u32(row) < nq && hh == 0u) {
    let lB = b * P.lBatch + h * P.lHead + startQ;
    lse[lB + u32(row)] = select(${sage ? 'm' : 'bitcast<f32>(bitcast<u32>(m * LN2) ^ (P.negInf ^ 0xff800000u))'} + log(l), bitcast<f32>(P.negInf), l == 0.0);
  }
}
`;
  // The emulation's helpers are known once the body has been generated.
  return { code: code.replace('__PRELUDE__', mx.prelude()), bindings };
}
