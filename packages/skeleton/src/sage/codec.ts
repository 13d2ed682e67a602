/**
 * SageAttention2's codec: the int8 operands (codes + group scales) that the pre-pass
 * (quantize.ts, native.ts, webgpu.ts) produces and every kernel reads. The groupings and
 * rounding are fixed by packages/sage-attention/ARITHMETIC.md; this file holds the shared
 * types and the group arithmetic so the three backends agree on them by construction.
 */

import { type AttentionProblem, resolveAttentionProblem } from '@attnkit/attention';
import { CpuStorage, describe, Tensor, ValueError } from '@attnkit/tensor';

/** Scale-group granularity (ARITHMETIC.md "Configuration"). */
export type SageGranularity = 'block' | 'warp' | 'thread';

export interface SageDims {
  batch: number;
  hq: number;
  hkv: number;
  nq: number;
  nk: number;
  d: number;
  dv: number;
}

export interface SageQuantConfig {
  /** Per query head (length hq), each 4 or 8. */
  qBits: Uint8Array;
  granularity: SageGranularity;
  smoothK: boolean;
  smoothQ: boolean;
  pvBits: 8 | 32;
}

/** Q groups, K groups and 128-row Q blocks (the smoothQ bias rows) of one (b, head). */
export interface SageGroupCounts {
  nQG: number;
  nKG: number;
  nQB: number;
}

/** Key tile of the kernel: fixed, P's quantization depends on the running max per tile. */
export const SAGE_KEY_TILE = 64;
/** Q rows per smoothQ block (and per 'block' scale group). */
export const SAGE_Q_BLOCK = 128;

/**
 * Group counts per (b, head). 'thread' has 8 Q groups per 16-row tile and 4 K groups per
 * 64-key tile; the last tile's groups may be short or empty (scale 0).
 */
export function sageGroupCounts(nq: number, nk: number, g: SageGranularity): SageGroupCounts {
  const q16 = Math.ceil(nq / 16);
  const k64 = Math.ceil(nk / SAGE_KEY_TILE);
  const nQB = Math.ceil(nq / SAGE_Q_BLOCK);
  switch (g) {
    case 'block':
      return { nQG: nQB, nKG: k64, nQB };
    case 'warp':
      return { nQG: q16, nKG: k64, nQB };
    case 'thread':
      return { nQG: q16 * 8, nKG: k64 * 4, nQB };
  }
}

/**
 * Q scale group of row i: 'block' its 128-row block, 'warp' its 16-row subgroup tile,
 * 'thread' rows i and i + 8 of a 16-row tile (the two rows one thread holds in an m16n8k32 MMA).
 */
export function qGroupOf(i: number, g: SageGranularity): number {
  switch (g) {
    case 'block':
      return i >> 7;
    case 'warp':
      return i >> 4;
    case 'thread':
      return (i >> 4) * 8 + (i & 7);
  }
}

/**
 * K scale group of key j: 'block' and 'warp' its 64-key tile, 'thread' the 16 keys of a tile
 * with equal (j & 7) >> 1 (the columns one thread holds).
 */
export function kGroupOf(j: number, g: SageGranularity): number {
  switch (g) {
    case 'block':
    case 'warp':
      return j >> 6;
    case 'thread':
      return (j >> 6) * 4 + ((j & 7) >> 1);
  }
}

/**
 * Round half to even (C `nearbyint` in the default rounding mode). `Math.round` rounds halves
 * towards +inf, so a tie that landed on an odd integer moves back by one. `r - x` is exact for
 * |x| < 2^52 (above that every double is an integer and r = x).
 */
export function rint(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** CPU codec (row-major, independent of the input layout); ARITHMETIC.md "Storage". */
export interface SageCodecCpu {
  dims: SageDims;
  granularity: SageGranularity;
  pvBits: 8 | 32;
  /** [B, Hq, Nq, D] codes in [-qmax, qmax]. */
  qCodes: Int8Array;
  /** [B, Hq, nQG]. */
  qScale: Float32Array;
  /** [B, Hkv, Nk, D]. */
  kCodes: Int8Array;
  /** [B, Hkv, nKG]. */
  kScale: Float32Array;
  /** pvBits 8: [B, Hkv, Nk, Dv]. */
  vCodes?: Int8Array | undefined;
  /** pvBits 8: [B, Hkv, Dv] = dV = f32(sV / 255) (P's 1/255 folded in). */
  vScale?: Float32Array | undefined;
  /** pvBits 32: V as f32 [B, Hkv, Nk, Dv]. */
  v?: Float32Array | undefined;
  /** smoothQ: [B, Hq, nQB, Nk], the rank-one term qm . Ks added back to S. */
  bias?: Float32Array | undefined;
}

/**
 * A pre-pass's arrays as a SageCodecCpu: pvBits 8 carries vCodes / vScale, pvBits 32 carries v;
 * bias only with smoothQ. Shared by the TS and native pre-passes so both hand out the same shape.
 */
export function sageCodecOf(
  dims: SageDims,
  granularity: SageGranularity,
  pvBits: 8 | 32,
  a: {
    qCodes: Int8Array;
    qScale: Float32Array;
    kCodes: Int8Array;
    kScale: Float32Array;
    vCodes?: Int8Array | undefined;
    vScale?: Float32Array | undefined;
    v: Float32Array;
    bias?: Float32Array | undefined;
  },
): SageCodecCpu {
  const codec: SageCodecCpu = {
    dims: { ...dims },
    granularity,
    pvBits,
    qCodes: a.qCodes,
    qScale: a.qScale,
    kCodes: a.kCodes,
    kScale: a.kScale,
  };
  if (pvBits === 8) {
    codec.vCodes = a.vCodes;
    codec.vScale = a.vScale;
  } else {
    codec.v = a.v;
  }
  if (a.bias) codec.bias = a.bias;
  return codec;
}

export interface SageKernelOptions {
  scale: number;
  causal: boolean;
  /** KERNELS.md "Common" [left, right], -1 unbounded. */
  window?: readonly [number, number] | undefined;
  returnLse: boolean;
}

/**
 * @attnkit/attention's problem for a codec's dims and the mask options, from tensors that hold
 * no data (all strides 0: the problem needs only the shapes): the one mask rule (causal
 * bottom-right folded into the window) every Sage backend follows. Validates scale, causal,
 * window and the head counts (ValueError naming them).
 */
export function sageProblem(
  dims: SageDims,
  opts: Pick<SageKernelOptions, 'scale' | 'causal' | 'window'>,
): AttentionProblem {
  const { batch, hq, hkv, nq, nk, d, dv } = dims;
  const shapeOnly = (shape: number[]) =>
    new Tensor(
      new CpuStorage('f32', new Float32Array(1)),
      shape,
      shape.map(() => 0),
    );
  return resolveAttentionProblem(
    shapeOnly([batch, hq, nq, d]),
    shapeOnly([batch, hkv, nk, d]),
    shapeOnly([batch, hkv, nk, dv]),
    { scale: opts.scale, causal: opts.causal, window: opts.window as [number, number] | undefined },
  );
}

/** The head dims the integer path takes: multiples of 16 in [16, 256] (ARITHMETIC.md). */
export function sageHeadDimOk(n: number): boolean {
  return Number.isInteger(n) && n >= 16 && n <= 256 && n % 16 === 0;
}

function fail(name: string, expected: string, got: unknown): never {
  throw new ValueError(`${name}: expected ${expected}, got ${describe(got)}`, name);
}

/**
 * Checks dims and config for a pre-pass (every backend's): ValueError naming `q` (D), `v` (Dv),
 * `k` (Hkv), `dims` (counts), `qkBits`, `granularity`, `smoothK`, `smoothQ`, `pvBits`.
 */
export function checkSageConfig(dims: SageDims, config: SageQuantConfig): void {
  if (dims === null || typeof dims !== 'object') fail('dims', 'a SageDims object', dims);
  for (const key of ['batch', 'hq', 'hkv', 'nq', 'nk', 'd', 'dv'] as const) {
    const n = dims[key];
    if (!Number.isInteger(n) || n < 0) fail(`dims.${key}`, 'a non-negative integer', n);
  }
  if (dims.hkv < 1 || dims.hq % dims.hkv !== 0)
    fail('k', `a kv head count dividing Hq = ${dims.hq} (GQA)`, dims.hkv);
  if (!sageHeadDimOk(dims.d))
    fail(
      'q',
      'head dim D a multiple of 16 in [16, 256] (the int32 scores stay exact in f32)',
      dims.d,
    );
  if (!sageHeadDimOk(dims.dv))
    fail(
      'v',
      'head dim Dv a multiple of 16 in [16, 256] (the int32 P~ V stays exact in f32)',
      dims.dv,
    );
  if (config === null || typeof config !== 'object') fail('config', 'a SageQuantConfig', config);
  const bits = config.qBits;
  if (!(bits instanceof Uint8Array) || bits.length !== dims.hq)
    fail('qkBits', `a Uint8Array of length Hq = ${dims.hq}`, bits);
  for (let h = 0; h < bits.length; h++)
    if (bits[h] !== 4 && bits[h] !== 8) fail('qkBits', `4 or 8 (head ${h})`, bits[h]);
  checkSageSettings(config);
}

/** The quantization settings besides the bits: what a Sage calibration records and defaults. */
export type SageSettings = Pick<SageQuantConfig, 'granularity' | 'smoothK' | 'smoothQ' | 'pvBits'>;

/**
 * Checks the four settings (checkSageConfig's, and a calibration's recorded ones with `prefix`
 * 'calibration.'): ValueError naming `${prefix}granularity`, `smoothK`, `smoothQ` or `pvBits`.
 */
export function checkSageSettings(s: SageSettings, prefix = ''): void {
  const g = s.granularity;
  if (g !== 'block' && g !== 'warp' && g !== 'thread')
    fail(`${prefix}granularity`, '"block", "warp" or "thread"', g);
  if (typeof s.smoothK !== 'boolean') fail(`${prefix}smoothK`, 'a boolean', s.smoothK);
  if (typeof s.smoothQ !== 'boolean') fail(`${prefix}smoothQ`, 'a boolean', s.smoothQ);
  if (s.pvBits !== 8 && s.pvBits !== 32) fail(`${prefix}pvBits`, '8 or 32', s.pvBits);
}

/**
 * ValueError naming `name` (q, k or v) at the first NaN or infinity: the quantization scales
 * (max |x|) would be meaningless.
 */
export function checkSageFinite(a: ArrayLike<number>, name: string): void {
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    if (x - x !== 0)
      throw new ValueError(
        `${name}: expected finite values (a NaN or infinity makes the quantization scales meaningless), got ${x} at element ${i}`,
        name,
      );
  }
}
