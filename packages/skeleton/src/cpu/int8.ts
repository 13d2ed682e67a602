import type { AttentionProblem } from '@attnkit/attention';
import { describe, ShapeError, ValueError } from '@attnkit/tensor';
import type { Int8OperandsHook } from '../hooks.js';
import {
  kGroupOf,
  qGroupOf,
  rint,
  SAGE_KEY_TILE,
  type SageCodecCpu,
  type SageGranularity,
  sageGroupCounts,
} from '../sage/codec.js';
import { allocF32, allocI32 } from './alloc.js';
import type { CpuHooks } from './scores.js';

/**
 * The int8 `operands` hook of the TS FA2 loop (Int8OperandsHook, SageAttention2): the integer
 * parts of a tile, written out so that they read as the specification of
 * packages/sage-attention/ARITHMETIC.md "Kernel":
 * - int8Scores: dot = sum_c qCode qCode' in int32 (exact: |dot| <= 127^2 * 256 < 2^31, and
 *   < 2^24 so f32(dot) is exact too), S = f32(f32(dot) * f32(sQ sK)) (+ bias, rounded to f32)
 *   then f32(. * scale). Rounding: every f32() is round-to-nearest-even (Math.fround) of the
 *   binary64 result of one operation, i.e. what one f32 operation gives.
 * - int8PV: pCode = rint(f32(p * 255)) in [0, 255] (rint: half to even), pv = sum_j pCode
 *   vCode in int32 (exact: <= 255 * 127 * 64 < 2^24), acc = f32(acc + f32(pv * dV)).
 * The loop (cpu/fa2.ts) keeps the tile walk, the mask ranges, the online softmax (m, l, alpha
 * and p = f32(exp(s - m)) as for floats) and the final O = acc / l, LSE = m + log l.
 */

/** Int8OperandsHook bound to a problem: the codec checked, group counts and scratch. */
export interface CpuInt8Operands {
  codec: SageCodecCpu;
  granularity: SageGranularity;
  nQG: number;
  nKG: number;
  nQB: number;
  /** f32(scale): the kernels of every backend hold the softmax scale as an f32. */
  scale: number;
  /** Scratch: the Q scale of each row of the Q tile in flight, the K scale of each key of a tile. */
  sq: Float32Array;
  sk: Float32Array;
  /** Scratch: one row's int32 P~ V of a tile. */
  pv: Int32Array;
}

function shapeErr(name: string, expected: number, got: unknown): never {
  throw new ShapeError(
    `${name}: expected ${expected} elements (ARITHMETIC.md "Storage"), got ${describe(got)}`,
    name,
  );
}

function checkLength(
  a: unknown,
  ctor: Int8ArrayConstructor | Float32ArrayConstructor,
  n: number,
  name: string,
): void {
  if (!(a instanceof ctor) || (a as ArrayLike<number>).length !== n) shapeErr(name, n, a);
}

/**
 * Binds `hook` for the TS loop: `base` (softmax, no schedule other than 'band', no permuted
 * tiles) with operands. The problem must be BHND and unpaged with the codec's dims; `bk` the
 * kernel's key tile (64). ValueError naming hooks.operands / blockK, ShapeError naming the
 * codec's array that does not fit.
 */
export function withInt8Operands(
  p: AttentionProblem,
  base: CpuHooks,
  hook: Int8OperandsHook,
  bq: number,
  bk: number,
): CpuHooks {
  if (hook?.kind !== 'int8' || hook.codec === null || typeof hook.codec !== 'object')
    throw new ValueError(
      `hooks.operands: expected { kind: "int8", codec }, got ${describe(hook)}`,
      'hooks.operands',
    );
  if (bk !== SAGE_KEY_TILE)
    throw new ValueError(
      `blockK: expected ${SAGE_KEY_TILE} with int8 operands (P's quantization depends on the running max per 64-key tile), got ${bk}`,
      'blockK',
    );
  if (
    p.layout !== 'BHND' ||
    p.paged ||
    base.pointwise !== undefined ||
    base.splits !== 1 ||
    base.streamKWorkers !== undefined ||
    base.permQ ||
    base.permK
  )
    throw new ValueError(
      'hooks.operands: expected a BHND unpaged softmax problem on the band schedule without permuted tiles for int8 operands, got another',
      'hooks.operands',
    );
  const c = hook.codec;
  const { batch, hq, hkv, nq, nk, d, dv } = c.dims;
  if (
    batch !== p.batch ||
    hq !== p.hq ||
    hkv !== p.hkv ||
    nq !== p.maxSeqQ ||
    nk !== p.maxSeqK ||
    d !== p.d ||
    dv !== p.dv
  )
    throw new ShapeError(
      `codec.dims: expected the problem's (B ${p.batch}, Hq ${p.hq}, Hkv ${p.hkv}, Nq ${p.maxSeqQ}, Nk ${p.maxSeqK}, D ${p.d}, Dv ${p.dv}), got ${describe(c.dims)}`,
      'codec.dims',
    );
  if (c.granularity !== 'block' && c.granularity !== 'warp' && c.granularity !== 'thread')
    throw new ValueError(
      `codec.granularity: expected "block", "warp" or "thread", got ${describe(c.granularity)}`,
      'codec.granularity',
    );
  const { nQG, nKG, nQB } = sageGroupCounts(nq, nk, c.granularity);
  checkLength(c.qCodes, Int8Array, batch * hq * nq * d, 'codec.qCodes');
  checkLength(c.qScale, Float32Array, batch * hq * nQG, 'codec.qScale');
  checkLength(c.kCodes, Int8Array, batch * hkv * nk * d, 'codec.kCodes');
  checkLength(c.kScale, Float32Array, batch * hkv * nKG, 'codec.kScale');
  if (c.pvBits === 8) {
    checkLength(c.vCodes, Int8Array, batch * hkv * nk * dv, 'codec.vCodes');
    checkLength(c.vScale, Float32Array, batch * hkv * dv, 'codec.vScale');
  } else if (c.pvBits === 32) {
    checkLength(c.v, Float32Array, batch * hkv * nk * dv, 'codec.v');
  } else {
    throw new ValueError(
      `codec.pvBits: expected 8 or 32, got ${describe(c.pvBits)}`,
      'codec.pvBits',
    );
  }
  if (c.bias !== undefined) checkLength(c.bias, Float32Array, batch * hq * nQB * nk, 'codec.bias');
  const operands: CpuInt8Operands = {
    codec: c,
    granularity: c.granularity,
    nQG,
    nKG,
    nQB,
    scale: Math.fround(p.scale),
    sq: allocF32(bq, 'tile'),
    sk: allocF32(bk, 'tile'),
    pv: allocI32(dv, 'tile'),
  };
  return { ...base, operands };
}

/** The Q scale of rows [q0, q0 + rows) of (b, h) into ops.sq (the Q tile's "staging"). */
export function int8StageQ(
  ops: CpuInt8Operands,
  b: number,
  h: number,
  q0: number,
  rows: number,
): void {
  const { qScale, dims } = ops.codec;
  const g0 = (b * dims.hq + h) * ops.nQG;
  for (let r = 0; r < rows; r++) ops.sq[r] = qScale[g0 + qGroupOf(q0 + r, ops.granularity)]!;
}

/**
 * S of the in-range pairs [lo[r], hi[r]) of rows [0, rows) of the Q tile at q0 of (b, h) and
 * keys [k0, k0 + cols) of kv head kvh, into s (row stride ld); out-of-range entries are left
 * for the loop (it zeroes them).
 */
export function int8Scores(
  ops: CpuInt8Operands,
  b: number,
  h: number,
  kvh: number,
  q0: number,
  rows: number,
  k0: number,
  cols: number,
  s: Float32Array,
  ld: number,
  lo: Int32Array,
  hi: Int32Array,
): void {
  const { codec, granularity, sq, sk, scale } = ops;
  const { qCodes, kCodes, kScale, bias, dims } = codec;
  const { hq, hkv, nq, nk, d } = dims;
  const kg0 = (b * hkv + kvh) * ops.nKG;
  for (let j = 0; j < cols; j++) sk[j] = kScale[kg0 + kGroupOf(k0 + j, granularity)]!;
  const qo0 = ((b * hq + h) * nq + q0) * d;
  const ko0 = ((b * hkv + kvh) * nk + k0) * d;
  const bo0 = (b * hq + h) * ops.nQB * nk + k0;
  for (let r = 0; r < rows; r++) {
    const jlo = lo[r]!;
    const jhi = hi[r]!;
    if (jhi <= jlo) continue;
    const qo = qo0 + r * d;
    const sQ = sq[r]!;
    // smoothQ's bias row: the 128-row block a(i) = i >> 7 of the absolute row.
    const bo = bo0 + ((q0 + r) >> 7) * nk;
    const so = r * ld;
    for (let j = jlo; j < jhi; j++) {
      const ko = ko0 + j * d;
      let dot = 0;
      for (let c = 0; c < d; c++) dot = (dot + qCodes[qo + c]! * kCodes[ko + c]!) | 0;
      let t = Math.fround(dot * Math.fround(sQ * sk[j]!));
      if (bias !== undefined) t = Math.fround(t + bias[bo + j]!);
      s[so + j] = Math.fround(t * scale);
    }
  }
}

/**
 * acc (rows of `dv`, from offset `as`) += the tile's P~ V with P~ (the loop's f32 p in s, 0
 * outside each row's range) quantized to u8 and V's int8 codes of kv head kvh, keys
 * [k0, k0 + cols) (only the in-range keys [lo[r], hi[r]) can have pCode > 0).
 */
export function int8PV(
  ops: CpuInt8Operands,
  b: number,
  kvh: number,
  rows: number,
  k0: number,
  s: Float32Array,
  ld: number,
  lo: Int32Array,
  hi: Int32Array,
  acc: Float32Array,
  as: number,
): void {
  const { codec, pv } = ops;
  const { hkv, nk, dv } = codec.dims;
  const vCodes = codec.vCodes!;
  const dV = codec.vScale!;
  const vo0 = ((b * hkv + kvh) * nk + k0) * dv;
  const do0 = (b * hkv + kvh) * dv;
  for (let r = 0; r < rows; r++) {
    const jlo = lo[r]!;
    const jhi = hi[r]!;
    if (jhi <= jlo) continue;
    pv.fill(0);
    const so = r * ld;
    for (let j = jlo; j < jhi; j++) {
      const pCode = rint(Math.fround(s[so + j]! * 255));
      if (pCode === 0) continue;
      const vo = vo0 + j * dv;
      for (let c = 0; c < dv; c++) pv[c] = (pv[c]! + pCode * vCodes[vo + c]!) | 0;
    }
    const ao = as + r * dv;
    // f32(pv) is exact (|pv| < 2^24); the product and the sum each round once to f32.
    for (let c = 0; c < dv; c++) acc[ao + c] = acc[ao + c]! + Math.fround(pv[c]! * dV[do0 + c]!);
  }
}
