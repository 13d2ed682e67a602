import { ValueError } from '@attnkit/tensor';
import type { WgslBinding } from '@attnkit/webgpu';
import { declareBindings, storageBindingCount } from '@attnkit/webgpu';
import { paramsStruct } from './params.js';
import type { WgslKernel } from './shaders.js';
import {
  matrixOps,
  partsArray,
  stageRows,
  TC_DIRECT_BLOCK_ROW,
  TC_KEY_RANGES,
  TC_SUBGROUP_SIZE,
  tcEntry,
} from './tc-forward.js';

/**
 * The tensor-core FlashAttention-2 backward (issue 20 item 3), softmax, f16 q/k/v/o/dO, f32
 * accumulation, on WGSL subgroup matrices (f16 x f16 -> f32, 16x16x16): the SIMT backward's two
 * passes (shaders.ts dqShader / dkdvShader) after the same stats pre-pass (statsShader: per query
 * row the pair (LSE, D = rowsum(dO * O)), LSE 0 for rows without keys).
 *
 * dQ pass: one workgroup per (query tile of 16 * subgroups rows, head, batch), each subgroup 16
 * query rows; per key tile of BC = 16 * keyMatrices keys: S = Q K^T, dP = dO V^T, then (two
 * lanes per row, through per-subgroup scratch: WGSL has no per-element access to matrices)
 * P = e^(S scale - LSE) (masked: causal bottom-right / window / keys past the sequence), dS =
 * P (dP - D) as f16 left matrices, dQ += dS K. dQ scale at the end.
 *
 * dK/dV pass: one workgroup per (key tile of 16 * subgroups rows, kv head, batch), each subgroup
 * 16 key rows; over the query heads of its GQA group and their query tiles of BC queries:
 * S^T = K Q^T, dP^T = V dO^T, P^T, dS^T = P^T (dP^T - D), dV += P^T dO, dK += dS^T Q; dK scale
 * at the end. dK and dV of a key row have one owner, so no atomics.
 *
 * What the H200 taught the forward (tc-forward.ts, benchmarks/gpu/results/tc-wip/VARIANTS.md)
 * holds here: every staged row is padded (`pad`, 8 halves: unpadded strides of 64/128 halves
 * gave wrong results there), the block a workgroup keeps (Q and dO in dQ, K and V in dK/dV) has
 * regions of its own, and the streamed tiles alternate between two halves by the parity of a
 * running tile counter (NVIDIA's compiler re-issues matrix loads inside loops, so a region is
 * never rewritten while a matrix loaded from it may still be read); matrix offsets derive from
 * @builtin(subgroup_id); matrices are named variables, one per 16 columns; the score matrices
 * of S and of dP are the same variables (S leaves through scratch before dP is computed), so a
 * subgroup holds D / 16 (+ Dv / 16) accumulators and keyMatrices score matrices.
 */
export interface TcBackwardConfig {
  /** Head dims (multiples of 16). */
  d: number;
  dv: number;
  /** Subgroups (of 32 invocations) per workgroup: 16 * subgroups rows (queries in dQ, keys in dK/dV). */
  subgroups: number;
  /** Column matrices per tile: BC = 16 * keyMatrices keys (dQ) or queries (dK/dV). */
  keyMatrices: number;
  /** Halves of padding after every staged row and every row of P / dS (0 or 8; default 8). */
  pad?: number;
  /**
   * dK/dV only: two passes, one accumulating dK and one dV (each recomputes S^T), so a subgroup
   * holds D / 16 or Dv / 16 accumulators instead of both (D = Dv = 128: 9 result matrices instead
   * of 17, past the ~16 that fit the H200's registers without spilling).
   */
  split?: boolean;
  /**
   * Stage tiles with every 16-byte load of an invocation issued before the stores (as the
   * forward's `batchLoads`, tc-forward.ts stageRows). The host's default since 2026-12-04
   * (with constOffsets: 8.9 -> 29.4 TFLOP/s at (4, 16, 4096, 128) on the H200).
   */
  batchLoads?: boolean;
  /**
   * The per-tile scalar pass (P, and dS from dP) unrolled over the lane's half row with every
   * load issued first (S and dP from the scratch; in dK/dV the query rows' statistics from
   * storage, at clamped addresses), then the math and the stores: the loop waited for each
   * load before its use (the forward's regSoftmax, tc-forward.ts).
   */
  regLoops?: boolean;
  /**
   * Declare the per-subgroup scratch (S, dP, dS / P^T, dS^T) and the kept block (Q and dO in
   * dQ, K and V in dK/dV) as arrays of per-subgroup arrays (the block's 16 rows of each
   * subgroup) and the streamed staging as an array of its two halves, so that every
   * subgroup-matrix load and store addresses an element array (`&sc[sg]`, `&kv[kvo]`) at a
   * compile-time constant offset. Tint's robustness transform then proves each access in bounds
   * at compile time and emits the bare load; with a dynamic offset (the flat layout) it wraps
   * every load and store in `if (in bounds)` and moves the matrix through a function variable,
   * which on the H200 cost ~19 SM cycles per workgroup-memory load against ~4 without
   * robustness (as the forward's `constOffsets`, tc-forward.ts). Same bytes, same layout within
   * each array. Off: the kernel text is unchanged.
   */
  constOffsets?: boolean;
  /**
   * dQ pass only: load the kept block's matrices (Q's D / 16 and dO's Dv / 16 left matrices)
   * straight from storage into registers once (second bindings of q's and dout's buffers as
   * `array<f16>`, `q16` / `dout16`) instead of staging the blocks in workgroup memory and
   * reloading them every tile (the forward's qDirect, tc-forward.ts). That frees BR (D + Dv)
   * halves of workgroup memory (17 KiB at 32 rows of D = Dv = 128), which 4 and 8 subgroups
   * need under the 48 KiB limit; the registers hold D / 16 + Dv / 16 left matrices more. Every
   * 16-row block must lie within the buffers (the host checks with tcQDirectFits, else stages);
   * a subgroup wholly past the sequence loads its last block.
   */
  blockDirect?: boolean;
  /** Test aid: the subgroup matrices emulated in plain WGSL (tc-forward.ts matrixOps). */
  emulate?: boolean;
  /**
   * A block-sparse mask: tiles the host's summary (aux.ts buildAux with this pass's tiling: dQ
   * BR queries x BC keys, dK/dV BC queries x BR keys) marks all-dropped are skipped (the staging
   * halves already alternate by a running count of visited tiles), mixed tiles mask each pair
   * outside a kept block. Off: the kernel text is unchanged.
   */
  blockSparse?: boolean;
}

/** The tile fields of a backward config (WebGpuTileOptions.tensorCoreBackward). */
export type TcBackwardTile = Pick<
  TcBackwardConfig,
  | 'subgroups'
  | 'keyMatrices'
  | 'pad'
  | 'split'
  | 'batchLoads'
  | 'constOffsets'
  | 'regLoops'
  | 'blockDirect'
>;

function rep(n: number, f: (i: number) => string, sep = '\n'): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

function check(c: TcBackwardConfig): void {
  for (const [name, v] of [
    ['d', c.d],
    ['dv', c.dv],
  ] as const) {
    if (!Number.isInteger(v) || v < 16 || v % 16 !== 0)
      throw new ValueError(`${name}: expected a positive multiple of 16, got ${v}`, name);
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
  if (c.pad !== undefined && c.pad !== 0 && c.pad !== 8)
    throw new ValueError(`pad: expected 0 or 8, got ${c.pad}`, 'pad');
}

/** Sizes (elements) of a pass's workgroup arrays. */
function layoutOf(c: TcBackwardConfig, pass: 'dq' | 'dkdv') {
  const pad = c.pad ?? 8;
  const BR = 16 * c.subgroups;
  const BC = 16 * c.keyMatrices;
  const KW = c.d + pad;
  const VW = c.dv + pad;
  const SPW = BC + pad;
  // One half of the streamed staging: K and V (dQ) or Q and dO (dK/dV) of one tile.
  const HALFSZ = BC * (KW + VW);
  return {
    pad,
    BR,
    BC,
    KW,
    VW,
    SPW,
    HALFSZ,
    // The kept block: Q and dO (dQ) or K and V (dK/dV), BR rows each (none: blockDirect).
    blockSize: c.blockDirect && pass === 'dq' ? 0 : BR * (KW + VW),
    streamSize: 2 * HALFSZ,
    // Per subgroup: S and dP scratch (f32), then dS (dQ) or P^T and dS^T (dK/dV) as halves.
    scratch: 2 * 16 * BC,
    halves: (pass === 'dq' ? 1 : 2) * 16 * SPW,
  };
}

/** Workgroup memory of a backward pass, bytes (emulated: halves kept as f32, 2 KiB per subgroup of multiply scratch). */
export function tcBackwardWorkgroupBytes(c: TcBackwardConfig, pass: 'dq' | 'dkdv'): number {
  const L = layoutOf(c, pass);
  const h = c.emulate ? 4 : 2;
  return (
    (L.blockSize + L.streamSize) * h +
    c.subgroups * (L.scratch * 4 + L.halves * h + (c.emulate ? 512 * 4 : 0))
  );
}

/**
 * Storage buffers the pass binds (what the device's maxStorageBuffersPerShaderStage bounds):
 * the dQ pass's blockDirect adds q's and dO's buffers as halves (9 in all, one more than
 * WebGPU's default limit of 8).
 */
export function tcBackwardStorageBuffers(
  c: Pick<TcBackwardConfig, 'blockDirect'>,
  pass: 'dq' | 'dkdv',
): number {
  if (pass !== 'dq' && pass !== 'dkdv')
    throw new ValueError(`pass: expected "dq" or "dkdv", got ${String(pass)}`, 'pass');
  if (c === null || typeof c !== 'object')
    throw new ValueError(`c: expected a config object, got ${String(c)}`, 'c');
  return storageBindingCount(
    pass === 'dq' ? dqBindings(c.blockDirect === true) : bindingsOf(['dk', 'dv']),
  );
}

/** Result matrices (f32 16x16) a subgroup of the pass holds: accumulators and the score matrices. */
export function tcBackwardMatrices(c: TcBackwardConfig, pass: 'dq' | 'dkdv'): number {
  const acc = pass === 'dq' ? c.d / 16 : c.split ? Math.max(c.d, c.dv) / 16 : c.d / 16 + c.dv / 16;
  return acc + c.keyMatrices;
}

/** Tiles tried by default, largest first (subgroups x keyMatrices). */
export const TC_BACKWARD_TILES: ReadonlyArray<{ subgroups: number; keyMatrices: number }> = [
  { subgroups: 4, keyMatrices: 2 },
  { subgroups: 4, keyMatrices: 1 },
  { subgroups: 2, keyMatrices: 2 },
  { subgroups: 2, keyMatrices: 1 },
  { subgroups: 1, keyMatrices: 1 },
];

/**
 * A pass's config: the given fields, the rest from the first of TC_BACKWARD_TILES whose
 * workgroup memory fits `limit` bytes and whose subgroups hold at most 16 result matrices (more
 * spilled registers on the H200), else the first that fits (else the last, which the caller
 * rejects); pad 8 (unpadded rows gave wrong results on the H200).
 */
export function tcBackwardConfigFor(
  pass: 'dq' | 'dkdv',
  given: Partial<TcBackwardConfig> & Pick<TcBackwardConfig, 'd' | 'dv'>,
  limit: number,
): TcBackwardConfig {
  const make = (t: { subgroups: number; keyMatrices: number }): TcBackwardConfig => ({
    pad: 8,
    ...t,
    ...given,
  });
  const fits = (t: { subgroups: number; keyMatrices: number }) =>
    tcBackwardWorkgroupBytes(make(t), pass) <= limit;
  // The dQ pass with blockDirect holds no blocks in workgroup memory: 8 subgroups first
  // (52.0 TFLOP/s for the whole backward at (4, 16, 4096, 128) on the H200 against 47.2 with
  // 4, 2026-12-05).
  const tiles =
    pass === 'dq' && given.blockDirect
      ? [{ subgroups: 8, keyMatrices: 1 }, ...TC_BACKWARD_TILES]
      : TC_BACKWARD_TILES;
  const tile =
    tiles.find((t) => fits(t) && tcBackwardMatrices(make(t), pass) <= 16) ??
    tiles.find(fits) ??
    tiles.at(-1)!;
  return make(tile);
}

/** Zero, from a uniform the compiler cannot see through (as shaders.ts ROUNDED): x ln 2 rounded on its own, as the forward's LSE rounded it. */
const ROUNDED = '(P.negInf ^ 0xff800000u)';

/**
 * Copies `rows` rows of width W halves from storage `s` (16-byte words; row `first + r` at
 * base + (first + r) stride halves) into `dst` at `at` + r DW (rows at or past `limit` as zeros),
 * as c asks: halves emulated as f32 (c.emulate), loads before stores (c.batchLoads). `outer`
 * (constOffsets: dst an array of arrays): WGSL of the element the rows go to, or the rows per
 * element (row r to dst[r / outer] at `at` + (r % outer) DW; tc-forward.ts stageRows).
 */
function stage(
  c: TcBackwardConfig,
  T: number,
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
  outer?: string | number,
): string {
  const cvt = (x: string) => (c.emulate ? `unpack2x16float(${x})` : `bitcast<vec2<f16>>(${x})`);
  return stageRows(
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
}

type Ops = ReturnType<typeof matrixOps>;

/**
 * How a pass addresses its workgroup arrays: flat (one array, matrix offsets sums of a
 * subgroup's or a half's base and a constant) or nested (c.constOffsets: arrays of arrays,
 * matrices at constant offsets within an element: `&sc[sg]`, `&kv[kvo]`).
 */
function addressing(c: TcBackwardConfig, mx: Ops) {
  const nest = c.constOffsets ?? false;
  // A matrix of subgroup sg's part of a per-subgroup array (flat: the part starts at `base`),
  // at `off` within it: matrixOps' (offset, outer).
  const mine = (base: string, off: number): [string, string | undefined] =>
    nest ? [`${off}u`, 'sg'] : [`${base} + ${off}u`, undefined];
  return {
    nest,
    /** A workgroup array of n parts of `size` elements: nested or flat. */
    arr: (t: string, size: number, n: number) => partsArray(t, size, n, nest),
    /** A row-major matrix load from the subgroup's part of `a` (flat: at `base`), at `off` within it. */
    ldSg: (kind: 'L' | 'A', a: string, base: string, off: number, stride: string) => {
      const [o, outer] = mine(base, off);
      return mx.load(kind, a, o, false, stride, outer);
    },
    /** A row-major matrix store into the subgroup's part of `a` (flat: at `base`), at `off` within it. */
    stSg: (a: string, base: string, off: number, m: string, stride: string) => {
      const [o, outer] = mine(base, off);
      return mx.store(a, o, m, false, stride, outer);
    },
    /**
     * A right matrix of the tile's half of the streamed staging `a`, at `off` within the
     * region (K / V, Q / dO) that starts at `flat` (WGSL, the flat layout) or at `start`
     * halves within element `outer` (nested).
     */
    ldHalf: (
      a: string,
      flat: string,
      outer: string,
      start: number,
      off: number,
      cm: boolean,
      stride: string,
    ) =>
      nest
        ? mx.load('R', a, `${start + off}u`, cm, stride, outer)
        : mx.load('R', a, `${flat} + ${off}u`, cm, stride),
    /** Scalar x (WGSL) of the subgroup's part of a per-subgroup array (flat: x includes the part's base). */
    el: (a: string, x: string) => (nest ? `${a}[sg][${x}]` : `${a}[${x}]`),
    /** The flat layout's part base to add to an index (`scB + `), nothing nested. */
    at: (base: string) => (nest ? '' : `${base} + `),
  };
}

type Addr = ReturnType<typeof addressing>;

/**
 * Result matrices `names[j]` (columns 16 j .. 16 j + 15 of a width-`width` row block of the
 * subgroup) times `factor`, stored as packed f16 rows of `out` for rows
 * with `ok` (at base + rowOff halves): through the subgroup's scratch `sc` (16 x BC f32) in chunks of BC columns, each lane
 * writing 8 halves at a time.
 */
function epilogue(
  ad: Addr,
  names: (j: number) => string,
  width: number,
  BC: number,
  out: string,
  base: string,
  rowOff: string,
  ok: string,
  factor: string,
): string {
  const chunks = Math.ceil(width / BC);
  return rep(
    chunks,
    (ch) => {
      const js = Array.from({ length: width / 16 }, (_, j) => j).filter(
        (j) => Math.floor((16 * j) / BC) === ch,
      );
      const w = Math.min(BC, width - ch * BC);
      return `${js.map((j) => `${ad.stSg('sc', 'scB', 16 * j - ch * BC, names(j), `${BC}u`)};`).join('\n  ')}
  workgroupBarrier();
  if (${ok}) {
    for (var c8 = hh; c8 < ${w / 8}u; c8 += 2u) {
      let e = ${ad.at('scB')}rr * ${BC}u + c8 * 8u;
      let x = array<f32, 8>(${rep(8, (t) => `${ad.el('sc', `e + ${t}u`)} * ${factor}`, ', ')});
      ${out}[(${base} + ${rowOff} + ${ch * BC}u) / 8u + c8] = vec4<u32>(pack2x16float(vec2<f32>(x[0], x[1])), pack2x16float(vec2<f32>(x[2], x[3])), pack2x16float(vec2<f32>(x[4], x[5])), pack2x16float(vec2<f32>(x[6], x[7])));
    }
  }
  workgroupBarrier();`;
    },
    '\n  ',
  );
}

const TENSOR = 'array<vec4<u32>>';

function bindingsOf(outs: string[]): WgslBinding[] {
  return [
    { name: 'P', kind: 'uniform', type: 'Params' },
    { name: 'q', kind: 'read', type: TENSOR },
    { name: 'k', kind: 'read', type: TENSOR },
    { name: 'v', kind: 'read', type: TENSOR },
    { name: 'dout', kind: 'read', type: TENSOR },
    { name: 'stats', kind: 'read', type: 'array<vec2<f32>>' },
    { name: 'aux', kind: 'read', type: 'array<u32>' },
    ...outs.map((name) => ({ name, kind: 'storage' as const, type: TENSOR })),
  ];
}

/** The dQ pass's bindings; `direct` (blockDirect, not emulated) adds q's and dO's buffers as halves. */
function dqBindings(direct: boolean): WgslBinding[] {
  const b = bindingsOf(['dq']);
  if (direct)
    b.push(
      { name: 'q16', kind: 'read', type: 'array<f16>' },
      { name: 'dout16', kind: 'read', type: 'array<f16>' },
    );
  return b;
}

/** The module's head: enables, uniforms, constants, workgroup arrays, bindings, the emulation's prelude (filled in last). */
function head(
  c: TcBackwardConfig,
  mx: Ops,
  ad: Addr,
  L: ReturnType<typeof layoutOf>,
  bindings: WgslBinding[],
  block: [string, string],
  stream: string,
  ranges: string,
): string {
  const emu = c.emulate ?? false;
  const { H } = mx;
  return `${emu ? '' : 'enable f16;\nenable chromium_experimental_subgroup_matrix;'}
${paramsStruct()}
const NEG = -3.0e38;
const LOG2E = 1.4426950408889634;
const LN2 = 0.6931471805599453;
${
  L.blockSize === 0
    ? ''
    : `var<workgroup> ${block[0]}: ${ad.arr(H, 16 * L.KW, c.subgroups)};
var<workgroup> ${block[1]}: ${ad.arr(H, 16 * L.VW, c.subgroups)};
`
}var<workgroup> ${stream}: ${ad.arr(H, L.HALFSZ, 2)};
var<workgroup> sc: ${ad.arr('f32', 16 * L.BC, c.subgroups)};
var<workgroup> sd: ${ad.arr('f32', 16 * L.BC, c.subgroups)};
var<workgroup> sp: ${ad.arr(H, 16 * L.SPW, c.subgroups)};
${block[0] === 'ks' ? `var<workgroup> sq: ${ad.arr(H, 16 * L.SPW, c.subgroups)};` : ''}
${declareBindings(bindings)}
__PRELUDE__
${ranges}
/** P of a score x (log2 units) of a row with log-sum-exp lse (natural units), as shaders.ts prob(): clamped to <= 1. */
fn prob1(x: f32, lse: f32) -> f32 {
  let t = bitcast<f32>(bitcast<u32>(x * LN2) ^ ${ROUNDED}) - lse;
  return exp2(select(t, 0.0, t > 0.0) * LOG2E);
}
`;
}

function entry(c: TcBackwardConfig, T: number): string {
  return `${tcEntry(T, c.emulate ?? false)}
  let rr = lane / 2u;
  let hh = lane % 2u;`;
}

/**
 * The dQ pass (see the file comment). Bindings P, q, k, v, dout, stats, aux, dq, as the SIMT
 * dqShader's for softmax; the grid (ceil(maxSeqQ / (16 subgroups)), Hq, B).
 */
export function tcDqShader(c: TcBackwardConfig): WgslKernel {
  check(c);
  const emu = c.emulate ?? false;
  const mx = matrixOps(emu, c.subgroups);
  const ad = addressing(c, mx);
  const { nest, el } = ad;
  const L = layoutOf(c, 'dq');
  const bsp = c.blockSparse ?? false;
  const { BR, BC, KW, VW, SPW, HALFSZ } = L;
  const KD = c.d / 16;
  const KV = c.dv / 16;
  const NC = c.keyMatrices;
  const T = c.subgroups * TC_SUBGROUP_SIZE;
  const HALF = BC / 2;
  const { A } = mx;
  const direct = c.blockDirect ?? false;
  // Emulated, the direct loads read q's and dout's words (emulatedDirectLoad).
  const bindings = dqBindings(direct && !emu);
  const scores = (
    left: (i: number) => string,
    n: number,
    right: (n: number, i: number) => string,
  ) =>
    rep(
      n,
      (i) => `{
      let la = ${left(i)};
      ${rep(NC, (m) => `s${m} = ${mx.mma('la', right(m, i), `s${m}`)};`, '\n      ')}
    }`,
      '\n    ',
    );
  const body = `
  ${rep(KD, (i) => `var aq${i} = ${A}();`, '\n  ')}
  ${rep(NC, (m) => `var s${m} = ${A}();`, '\n  ')}
  var it = 0u;
  let loFirst = key_lo(rFirst, off, ncols);
  let hiLast = max(key_hi(rLast, off, ncols), 0);${
    bsp
      ? `
  let slice = b * P.bsBatch + h * P.bsHead;
  let bsRow = (u32(max(row, 0)) / P.bsQ) * P.nbk;`
      : ''
  }
  for (var ct = u32(loFirst) / ${BC}u; ct < (u32(hiLast) + ${BC - 1}u) / ${BC}u; ct++) {
    let c0 = ct * ${BC}u;${
      bsp
        ? `
    // The host's summary of the tile's blocks (0 all dropped, 1 mixed, 2 all kept), read at a
    // workgroup-uniform address: a uniform skip, before the tile counts for the parity.
    let state = aux[P.tsOff + (slice * P.ntq + wg.x) * P.ntk + ct];
    if (state == 0u) { continue; }
    let mixed = state == 1u;`
        : ''
    }
    // K and V of this tile into the half of its parity: the other half still holds the last
    // tile's, which other subgroups may be multiplying with.
    ${nest ? 'let kvo = it & 1u;' : `let kvK = (it & 1u) * ${HALFSZ}u;\n    let kvV = kvK + ${BC * KW}u;`}
    it++;
    ${nest ? stage(c, T, 'k', 'kB', 'P.kRow', 'c0', BC, 'nk', c.d, KW, 'kv', '', 'kvo') : stage(c, T, 'k', 'kB', 'P.kRow', 'c0', BC, 'nk', c.d, KW, 'kv', 'kvK + ')}
    ${nest ? stage(c, T, 'v', 'vB', 'P.vRow', 'c0', BC, 'nk', c.dv, VW, 'kv', `${BC * KW}u + `, 'kvo') : stage(c, T, 'v', 'vB', 'P.vRow', 'c0', BC, 'nk', c.dv, VW, 'kv', 'kvV + ')}
    workgroupBarrier();
    // S = Q K^T (K^T: the keys' rows column-major), out through scratch; then dP = dO V^T in the same matrices.
    ${rep(NC, (m) => `s${m} = ${A}();`, '\n    ')}
    ${scores(
      (i) => (direct ? `qa${i}` : ad.ldSg('L', 'qs', `sg * ${16 * KW}u`, 16 * i, `${KW}u`)),
      KD,
      (m, i) => ad.ldHalf('kv', 'kvK', 'kvo', 0, 16 * m * KW + 16 * i, true, `${KW}u`),
    )}
    ${rep(NC, (m) => `${ad.stSg('sc', 'scB', 16 * m, `s${m}`, `${BC}u`)};`, '\n    ')}
    ${rep(NC, (m) => `s${m} = ${A}();`, '\n    ')}
    ${scores(
      (j) => (direct ? `da${j}` : ad.ldSg('L', 'dos', `sg * ${16 * VW}u`, 16 * j, `${VW}u`)),
      KV,
      (m, j) => ad.ldHalf('kv', 'kvV', 'kvo', BC * KW, 16 * m * VW + 16 * j, true, `${VW}u`),
    )}
    ${rep(NC, (m) => `${ad.stSg('sd', 'scB', 16 * m, `s${m}`, `${BC}u`)};`, '\n    ')}
    workgroupBarrier();
    ${
      c.regLoops
        ? `{
      ${rep(HALF, (i) => `let e${i} = ${ad.at('scB')}rr * ${BC}u + hh * ${HALF}u + ${i}u;`, '\n      ')}
      ${rep(HALF, (i) => `let xs${i} = ${el('sc', `e${i}`)};\n      let ds${i} = ${el('sd', `e${i}`)};`, '\n      ')}
      ${rep(
        HALF,
        (i) => `{
        let j = i32(c0 + hh * ${HALF}u + ${i}u);
        let x = select(NEG, xs${i} * P.scaleLog2, j >= rowLo && j < rowHi${bsp ? ' && (!mixed || aux[P.bsOff + slice * P.nbq * P.nbk + bsRow + u32(j) / P.bsK] != 0u)' : ''});
        ${el('sp', `${ad.at('spB')}rr * ${SPW}u + hh * ${HALF}u + ${i}u`)} = ${emu ? 'r16' : 'f16'}(prob1(x, st.x) * (ds${i} - st.y));
      }`,
        '\n      ',
      )}
    }`
        : `for (var c = 0u; c < ${HALF}u; c++) {
      let cl = hh * ${HALF}u + c;
      let j = i32(c0 + cl);
      let e = ${ad.at('scB')}rr * ${BC}u + cl;
      let x = select(NEG, ${el('sc', 'e')} * P.scaleLog2, j >= rowLo && j < rowHi${bsp ? ' && (!mixed || aux[P.bsOff + slice * P.nbq * P.nbk + bsRow + u32(j) / P.bsK] != 0u)' : ''});
      let p = prob1(x, st.x);
      ${el('sp', `${ad.at('spB')}rr * ${SPW}u + cl`)} = ${emu ? 'r16' : 'f16'}(p * (${el('sd', 'e')} - st.y));
    }`
    }
    workgroupBarrier();
    // dQ += dS K (K row-major: keys are the inner dimension).
    ${rep(
      NC,
      (m) => `{
      let la = ${ad.ldSg('L', 'sp', 'spB', 16 * m, `${SPW}u`)};
      ${rep(KD, (i) => `aq${i} = ${mx.mma('la', ad.ldHalf('kv', 'kvK', 'kvo', 0, 16 * m * KW + 16 * i, false, `${KW}u`), `aq${i}`)};`, '\n      ')}
    }`,
      '\n    ',
    )}
  }
  workgroupBarrier();
  ${epilogue(ad, (i) => `aq${i}`, c.d, BC, 'dq', 'qB', 'u32(row) * P.qRow', 'u32(row) < nq', 'P.scale')}
}
`;
  const code = `${head(c, mx, ad, L, bindings, ['qs', 'dos'], 'kv', TC_KEY_RANGES)}
${entry(c, T)}
  let h = wg.y;
  let r0 = wg.x * ${BR}u;
  if (r0 >= nq) { return; }
  let hk = h / P.group;
  let qB = b * P.qBatch + h * P.qHead + startQ * P.qRow;
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  let oB = b * P.oBatch + h * P.oHead + startQ * P.oRow;
  let lB = b * P.lBatch + h * P.lHead + startQ;
  ${nest ? '' : `let scB = sg * ${16 * BC}u;\n  let spB = sg * ${16 * SPW}u;`}
  let row = i32(r0 + sg * 16u + rr);
  let ncols = i32(nk);
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + ${BR}u, nq)) - 1;
  let rowLo = key_lo(row, off, ncols);
  let rowHi = key_hi(row, off, ncols);
  // (LSE, D) of this lane's row; zeros past the sequence (their dS is 0 where dO is staged as
  // zeros; with blockDirect those rows read other rows' dO, and their dQ rows are never written).
  var st = vec2<f32>(0.0);
  if (u32(row) < nq) { st = stats[lB + u32(row)]; }
  ${
    direct
      ? `// Q's and dO's matrices from storage into registers, once: the subgroup's 16-row block, or
  // (wholly past the sequence) its last one; the host checked that each lies within its buffer.
  let blk = ${TC_DIRECT_BLOCK_ROW};
  ${rep(KD, (i) => `let qa${i} = ${mx.loadStorage('q16', 'q', `qB + blk * P.qRow + ${16 * i}u`, 'P.qRow')};`, '\n  ')}
  ${rep(KV, (j) => `let da${j} = ${mx.loadStorage('dout16', 'dout', `oB + blk * P.oRow + ${16 * j}u`, 'P.oRow')};`, '\n  ')}`
      : `// The Q and dO blocks, once, each in a region of its own.
  ${stage(c, T, 'q', 'qB', 'P.qRow', 'r0', BR, 'nq', c.d, KW, 'qs', '', nest ? 16 : undefined)}
  ${stage(c, T, 'dout', 'oB', 'P.oRow', 'r0', BR, 'nq', c.dv, VW, 'dos', '', nest ? 16 : undefined)}`
  }${body}`;
  return { code: code.replace('__PRELUDE__', mx.prelude()), bindings };
}

/** Its transpose: key r is in keyRange(i) iff query_lo(r) <= i < query_hi(r) (ncols = nq). */
const RANGES_K = `fn query_lo(r: i32, off: i32, ncols: i32) -> i32 { if (P.right < 0) { return 0; } return max(r - off - P.right, 0); }
fn query_hi(r: i32, off: i32, ncols: i32) -> i32 { if (P.left < 0) { return ncols; } return clamp(r - off + P.left + 1, 0, ncols); }`;

/**
 * The dK/dV pass (see the file comment). Bindings P, q, k, v, dout, stats, aux, dk, dv, as the
 * SIMT dkdvShader's for softmax; the grid (ceil(maxSeqK / (16 subgroups)), Hkv, B). `only`
 * (TcBackwardConfig.split): the pass of dK alone (binding dk, no dV products) or of dV alone
 * (binding dv; no dP^T, so V is not staged).
 */
export function tcDkdvShader(c: TcBackwardConfig, only?: 'dk' | 'dv'): WgslKernel {
  check(c);
  const emu = c.emulate ?? false;
  const mx = matrixOps(emu, c.subgroups);
  const ad = addressing(c, mx);
  const { nest, el } = ad;
  const L = layoutOf(c, 'dkdv');
  const bsp = c.blockSparse ?? false;
  const { BR, BC, KW, VW, SPW, HALFSZ } = L;
  const KD = c.d / 16;
  const KV = c.dv / 16;
  const NC = c.keyMatrices;
  const T = c.subgroups * TC_SUBGROUP_SIZE;
  const HALF = BC / 2;
  const { A } = mx;
  if (c.blockDirect)
    throw new ValueError(
      'blockDirect: expected false in the dK/dV pass (its dK and dV accumulators leave no registers for K and V), got true',
      'blockDirect',
    );
  if (only !== undefined && only !== 'dk' && only !== 'dv')
    throw new ValueError(`only: expected "dk", "dv" or undefined, got ${String(only)}`, 'only');
  const wantK = only !== 'dv';
  const wantV = only !== 'dk';
  const bindings = bindingsOf(only ? [only] : ['dk', 'dv']);
  const scores = (
    left: (i: number) => string,
    n: number,
    right: (n: number, i: number) => string,
  ) =>
    rep(
      n,
      (i) => `{
        let la = ${left(i)};
        ${rep(NC, (m) => `s${m} = ${mx.mma('la', right(m, i), `s${m}`)};`, '\n        ')}
      }`,
      '\n      ',
    );
  const tile = `
      let c0 = ct * ${BC}u;${
        bsp
          ? `
      // The tile's block summary (tiling BC queries x BR keys): a uniform skip before the
      // tile counts for the parity; mixed tiles test each pair below.
      let state = aux[P.tsOff + (slice * P.ntq + ct) * P.ntk + wg.x];
      if (state == 0u) { continue; }
      let mixed = state == 1u;`
          : ''
      }
      // Q and dO of this query tile into the half of the running tile count's parity (the
      // count runs on across heads, so consecutive tiles never share a half).
      ${nest ? 'let qdo = it & 1u;' : `let qdQ = (it & 1u) * ${HALFSZ}u;\n      let qdO = qdQ + ${BC * KW}u;`}
      it++;
      ${nest ? stage(c, T, 'q', 'qB', 'P.qRow', 'c0', BC, 'nq', c.d, KW, 'qd', '', 'qdo') : stage(c, T, 'q', 'qB', 'P.qRow', 'c0', BC, 'nq', c.d, KW, 'qd', 'qdQ + ')}
      ${nest ? stage(c, T, 'dout', 'oB', 'P.oRow', 'c0', BC, 'nq', c.dv, VW, 'qd', `${BC * KW}u + `, 'qdo') : stage(c, T, 'dout', 'oB', 'P.oRow', 'c0', BC, 'nq', c.dv, VW, 'qd', 'qdO + ')}
      workgroupBarrier();
      // S^T = K Q^T, out through scratch; then dP^T = V dO^T in the same matrices.
      ${rep(NC, (m) => `s${m} = ${A}();`, '\n      ')}
      ${scores(
        (i) => ad.ldSg('L', 'ks', `sg * ${16 * KW}u`, 16 * i, `${KW}u`),
        KD,
        (m, i) => ad.ldHalf('qd', 'qdQ', 'qdo', 0, 16 * m * KW + 16 * i, true, `${KW}u`),
      )}
      ${rep(NC, (m) => `${ad.stSg('sc', 'scB', 16 * m, `s${m}`, `${BC}u`)};`, '\n      ')}
      ${
        wantK
          ? `${rep(NC, (m) => `s${m} = ${A}();`, '\n      ')}
      ${scores(
        (j) => ad.ldSg('L', 'vs', `sg * ${16 * VW}u`, 16 * j, `${VW}u`),
        KV,
        (m, j) => ad.ldHalf('qd', 'qdO', 'qdo', BC * KW, 16 * m * VW + 16 * j, true, `${VW}u`),
      )}
      ${rep(NC, (m) => `${ad.stSg('sd', 'scB', 16 * m, `s${m}`, `${BC}u`)};`, '\n      ')}`
          : ''
      }
      workgroupBarrier();
      ${
        c.regLoops
          ? `{
        ${rep(HALF, (i) => `let e${i} = ${ad.at('scB')}rr * ${BC}u + hh * ${HALF}u + ${i}u;\n        let j${i} = c0 + hh * ${HALF}u + ${i}u;`, '\n        ')}
        ${rep(HALF, (i) => `let sw${i} = stats[min(lB + j${i}, arrayLength(&stats) - 1u)];\n        let xs${i} = ${el('sc', `e${i}`)};${wantK ? `\n        let ds${i} = ${el('sd', `e${i}`)};` : ''}`, '\n        ')}
        ${rep(
          HALF,
          (i) => `{
          let st = select(vec2<f32>(0.0), sw${i}, j${i} < nq);
          let x = select(NEG, xs${i} * P.scaleLog2, i32(j${i}) >= rowLo && i32(j${i}) < rowHi${bsp ? ` && (!mixed || aux[P.bsOff + slice * P.nbq * P.nbk + (j${i} / P.bsQ) * P.nbk + bsKey] != 0u)` : ''});
          let p = prob1(x, st.x);
          ${wantV ? `${el('sp', `${ad.at('spB')}rr * ${SPW}u + hh * ${HALF}u + ${i}u`)} = ${emu ? 'r16' : 'f16'}(p);` : ''}
          ${wantK ? `${el('sq', `${ad.at('spB')}rr * ${SPW}u + hh * ${HALF}u + ${i}u`)} = ${emu ? 'r16' : 'f16'}(p * (ds${i} - st.y));` : ''}
        }`,
          '\n        ',
        )}
      }`
          : `for (var c = 0u; c < ${HALF}u; c++) {
        let cl = hh * ${HALF}u + c;
        let j = c0 + cl;
        var st = vec2<f32>(0.0);
        if (j < nq) { st = stats[lB + j]; }
        let e = ${ad.at('scB')}rr * ${BC}u + cl;
        let x = select(NEG, ${el('sc', 'e')} * P.scaleLog2, i32(j) >= rowLo && i32(j) < rowHi${bsp ? ' && (!mixed || aux[P.bsOff + slice * P.nbq * P.nbk + (j / P.bsQ) * P.nbk + bsKey] != 0u)' : ''});
        let p = prob1(x, st.x);
        ${wantV ? `${el('sp', `${ad.at('spB')}rr * ${SPW}u + cl`)} = ${emu ? 'r16' : 'f16'}(p);` : ''}
        ${wantK ? `${el('sq', `${ad.at('spB')}rr * ${SPW}u + cl`)} = ${emu ? 'r16' : 'f16'}(p * (${el('sd', 'e')} - st.y));` : ''}
      }`
      }
      workgroupBarrier();
      // dV += P^T dO, dK += dS^T Q (dO and Q row-major: queries are the inner dimension).
      ${rep(
        NC,
        (m) => `{
        ${
          wantV
            ? `let pa = ${ad.ldSg('L', 'sp', 'spB', 16 * m, `${SPW}u`)};
        ${rep(KV, (j) => `av${j} = ${mx.mma('pa', ad.ldHalf('qd', 'qdO', 'qdo', BC * KW, 16 * m * VW + 16 * j, false, `${VW}u`), `av${j}`)};`, '\n        ')}`
            : ''
        }
        ${
          wantK
            ? `let da = ${ad.ldSg('L', 'sq', 'spB', 16 * m, `${SPW}u`)};
        ${rep(KD, (i) => `ak${i} = ${mx.mma('da', ad.ldHalf('qd', 'qdQ', 'qdo', 0, 16 * m * KW + 16 * i, false, `${KW}u`), `ak${i}`)};`, '\n        ')}`
            : ''
        }
      }`,
        '\n      ',
      )}`;
  const code = `${head(c, mx, ad, L, bindings, ['ks', 'vs'], 'qd', RANGES_K)}
${entry(c, T)}
  let hk = wg.y;
  let r0 = wg.x * ${BR}u;
  if (r0 >= nk) { return; }
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  ${nest ? '' : `let scB = sg * ${16 * BC}u;\n  let spB = sg * ${16 * SPW}u;`}
  let row = i32(r0 + sg * 16u + rr);
  let ncols = i32(nq);
  let rFirst = i32(r0);
  let rLast = i32(min(r0 + ${BR}u, nk)) - 1;
  let rowLo = query_lo(row, off, ncols);
  let rowHi = query_hi(row, off, ncols);
  // The K and V blocks, once, each in a region of its own.
  ${stage(c, T, 'k', 'kB', 'P.kRow', 'r0', BR, 'nk', c.d, KW, 'ks', '', nest ? 16 : undefined)}
  ${wantK ? stage(c, T, 'v', 'vB', 'P.vRow', 'r0', BR, 'nk', c.dv, VW, 'vs', '', nest ? 16 : undefined) : ''}
  ${wantK ? rep(KD, (i) => `var ak${i} = ${A}();`, '\n  ') : ''}
  ${wantV ? rep(KV, (j) => `var av${j} = ${A}();`, '\n  ') : ''}
  ${rep(NC, (m) => `var s${m} = ${A}();`, '\n  ')}
  var it = 0u;${bsp ? '\n  let bsKey = u32(max(row, 0)) / P.bsK;' : ''}
  let loFirst = query_lo(rFirst, off, ncols);
  let hiLast = max(query_hi(rLast, off, ncols), 0);
  for (var g = 0u; g < P.group; g++) {
    let h = hk * P.group + g;
    let qB = b * P.qBatch + h * P.qHead + startQ * P.qRow;
    let oB = b * P.oBatch + h * P.oHead + startQ * P.oRow;
    let lB = b * P.lBatch + h * P.lHead + startQ;${bsp ? '\n    let slice = b * P.bsBatch + h * P.bsHead;' : ''}
    for (var ct = u32(loFirst) / ${BC}u; ct < (u32(hiLast) + ${BC - 1}u) / ${BC}u; ct++) {${tile}
    }
  }
  workgroupBarrier();
  ${wantK ? epilogue(ad, (i) => `ak${i}`, c.d, BC, 'dk', 'kB', 'u32(row) * P.kRow', 'u32(row) < nk', 'P.scale') : ''}
  ${wantV ? epilogue(ad, (j) => `av${j}`, c.dv, BC, 'dv', 'vB', 'u32(row) * P.vRow', 'u32(row) < nk', '1.0') : ''}
}
`;
  return { code: code.replace('__PRELUDE__', mx.prelude()), bindings };
}
