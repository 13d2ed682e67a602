import type { AttentionProblem, ResolvedMaskMod, ResolvedScoreMod } from '@attnkit/attention';
import {
  DeviceError,
  DTypeError,
  describe,
  ShapeError,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';
import {
  type HstuMaskHook,
  hstuMaskAllowed,
  type PointwiseKind,
  type TiledHooks,
} from '../hooks.js';
import { type HstuRabHook, hstuTimeColumn } from '../hstu-rab.js';
import type { CpuInt8Operands } from './int8.js';
import { resolveSchedule } from './schedule.js';

/**
 * The TS kernels' view of the hooks (TiledHooks), bound once per call: bias tensors decoded to
 * f32, the normalisation split into flags. Plus the per-tile steps that run between S = scale
 * Q K^T and the normalisation: the score mods (mods.ts semantics, in order) and the mask mod's
 * element test. Both work on the in-range part [lo[r], hi[r]) of each row of a row-major tile.
 */

export type CpuScoreMod =
  | { kind: 'softcap'; cap: number }
  | { kind: 'alibi'; slopes: Float32Array }
  | {
      kind: 'bias';
      data: Float32Array;
      batchStride: number;
      headStride: number;
      rowStride: number;
    }
  | {
      kind: 'custom';
      name: string;
      ts: (s: number, b: number, h: number, i: number, j: number) => number;
      tsGrad: ((s: number, b: number, h: number, i: number, j: number) => number) | undefined;
    };

export interface CpuHooks {
  /** The pointwise normalisation (sigmoid, silu: no row statistics, no LSE); undefined = softmax. */
  pointwise: PointwiseKind | undefined;
  /** sigmoid: b in sigmoid(s + b), per batch entry. */
  bias: Float32Array | undefined;
  /** silu: c in w = c silu(s). */
  factor: number;
  /** softmax: per query head sink logits. */
  sinks: Float32Array | undefined;
  mods: readonly CpuScoreMod[];
  /** forward: key ranges per Q tile (1 = the 'band' schedule, > 1 = split-K); see schedule.ts. */
  splits: number;
  /** forward, 'streamK' schedule: the planner's worker count (cpu/partition.ts); else absent. */
  streamKWorkers?: number | undefined;
  /**
   * Permuted tiles (PermuteHook): the sequence position of each tiled query row, LSE layout
   * ([B, Hq, Nq] or [Hq, totalQ]; slice offset lseBase); absent = identity.
   */
  permQ?: Int32Array | undefined;
  /** Likewise for the keys: [B, Hkv, Nk] or [Hkv, totalK] (slice offset: @attnkit/attention permKBase). */
  permK?: Int32Array | undefined;
  /** Built-in HSTU mask (HstuMaskHook): its element rule runs on every visited tile. */
  mask?: HstuMaskHook | undefined;
  /** Built-in HSTU bucketed rab (HstuRabHook), tables decoded: added to every visited pair. */
  rab?: CpuRab | undefined;
  /** FA2 forward only: int8 operands (Int8OperandsHook, bound by int8.ts withInt8Operands). */
  operands?: CpuInt8Operands | undefined;
}

/**
 * HstuRabHook bound for the TS kernels: tables decoded to f32 once per call (head stride 0 for
 * a shared one-row table), P / T their widths; `time` absent without a time table.
 */
export interface CpuRab {
  pos: { data: Float32Array; headStride: number; cols: number } | undefined;
  time:
    | {
        data: Float32Array;
        headStride: number;
        cols: number;
        keyTime: Int32Array;
        nextTime: Int32Array;
        thresholds: Int32Array;
      }
    | undefined;
  grad: boolean;
}

/** Plain softmax, no mods. */
export const CPU_SOFTMAX: CpuHooks = {
  pointwise: undefined,
  bias: undefined,
  factor: 1,
  sinks: undefined,
  mods: [],
  splits: 1,
};

function bad(name: string, expected: string, got: unknown): never {
  throw new ValueError(`${name}: expected ${expected}, got ${describe(got)}`, name);
}

/** Validates `hooks` against the problem and binds them (bias data decoded once per call). */
export function compileHooks(p: AttentionProblem, hooks: TiledHooks): CpuHooks {
  if (hooks === null || typeof hooks !== 'object') bad('hooks', 'a TiledHooks object', hooks);
  const norm = hooks.normalize;
  if (norm === null || typeof norm !== 'object') {
    bad('hooks.normalize', '{ kind: "softmax" | "sigmoid" | "silu" }', norm);
  }
  let pointwise: PointwiseKind | undefined;
  let bias: Float32Array | undefined;
  let factor = 1;
  let sinks: Float32Array | undefined;
  if (norm.kind === 'softmax') {
    if (norm.sinks !== undefined) {
      if (!(norm.sinks instanceof Float32Array) || norm.sinks.length !== p.hq) {
        bad('sinks', `a Float32Array of length Hq = ${p.hq}`, norm.sinks);
      }
      if (!norm.sinks.every(Number.isFinite)) bad('sinks', 'finite logits', norm.sinks);
      sinks = norm.sinks;
    }
  } else if (norm.kind === 'sigmoid') {
    if (!(norm.bias instanceof Float32Array) || norm.bias.length < p.batch) {
      bad('bias', `a Float32Array with one entry per batch entry (${p.batch})`, norm.bias);
    }
    pointwise = 'sigmoid';
    bias = norm.bias;
  } else if (norm.kind === 'silu') {
    if (typeof norm.factor !== 'number' || !Number.isFinite(norm.factor)) {
      bad('factor', 'a finite number (w = factor silu(s))', norm.factor);
    }
    pointwise = 'silu';
    factor = norm.factor;
  } else {
    bad('hooks.normalize.kind', '"softmax", "sigmoid" or "silu"', (norm as { kind: unknown }).kind);
  }
  const list = hooks.scoreMods ?? [];
  if (!Array.isArray(list)) bad('hooks.scoreMods', 'an array of resolved score mods', list);
  const mods = list.map((m: ResolvedScoreMod, n: number): CpuScoreMod => {
    switch (m?.kind) {
      case 'softcap':
        return { kind: 'softcap', cap: m.cap };
      case 'alibi':
        return { kind: 'alibi', slopes: Float32Array.from(m.slopes) };
      case 'bias':
        return {
          kind: 'bias',
          data: m.bias.toFloat32Array(),
          batchStride: m.batchStride,
          headStride: m.headStride,
          rowStride: m.rowStride,
        };
      case 'custom':
        return { kind: 'custom', name: m.name, ts: m.ts, tsGrad: m.tsGrad };
      default:
        return bad(`scoreMod[${n}]`, 'a resolved score mod (resolveScoreMods)', m);
    }
  });
  const permute = hooks.permute;
  if (permute !== undefined && (permute === null || typeof permute !== 'object')) {
    bad('hooks.permute', '{ q?, k? } Int32Array index arrays', permute);
  }
  const mask = hooks.mask;
  if (mask !== undefined) {
    if (
      mask === null ||
      mask.kind !== 'hstu' ||
      !(mask.numTargets instanceof Int32Array) ||
      mask.numTargets.length !== p.batch
    )
      bad(
        'hooks.mask',
        `{ kind: "hstu", numTargets: Int32Array of length B = ${p.batch}, ... }`,
        mask,
      );
  }
  return {
    mask,
    rab: hooks.rab === undefined ? undefined : compileRab(p, hooks.rab, permute),
    pointwise,
    bias,
    factor,
    sinks,
    mods,
    ...resolveSchedule(hooks.schedule),
    permQ: checkPermIndex(
      permute?.q,
      'permute.q',
      p.layout === 'BHND' ? p.batch * p.hq * p.maxSeqQ : p.hq * p.totalQ,
    ),
    permK: checkPermIndex(
      permute?.k,
      'permute.k',
      p.layout === 'BHND' ? p.batch * p.hkv * p.maxSeqK : p.hkv * p.totalK,
    ),
  };
}

/**
 * The cheap checks of a permutation index (an Int32Array of the layout's length); that each
 * slice is a permutation is the family layer's check (an out-of-range entry would read outside
 * the slice).
 */
function checkPermIndex(
  index: unknown,
  name: 'permute.q' | 'permute.k',
  length: number,
): Int32Array | undefined {
  if (index === undefined) return undefined;
  if (!(index instanceof Int32Array) || index.length !== length) {
    bad(name, `an Int32Array of length ${length} (the LSE layout)`, index);
  }
  return index;
}

/** A table of HstuRabHook: an f32 cpu Tensor [1 or Hq, cols]; typed errors naming `name`. */
function rabTable(
  t: unknown,
  name: string,
  hq: number,
  odd: boolean,
): { data: Float32Array; headStride: number; cols: number } {
  const tt = t as Tensor;
  if (!tt || typeof tt !== 'object' || !Array.isArray(tt.shape))
    throw new ShapeError(
      `${name}: expected a Tensor [1 or Hq = ${hq}, columns], got ${describe(t)}`,
      name,
    );
  const s = tt.shape;
  if (s.length !== 2 || (s[0] !== 1 && s[0] !== hq) || s[1]! < 1 || (odd && s[1]! % 2 !== 1))
    throw new ShapeError(
      `${name}: expected shape [1 or Hq = ${hq}, ${odd ? 'P (odd)' : 'T >= 1'}], got [${s.join(', ')}]`,
      name,
    );
  if (tt.dtype !== 'f32')
    throw new DTypeError(`${name}: expected dtype f32, got ${tt.dtype}`, name);
  if (tt.device !== 'cpu')
    throw new DeviceError(
      `${name}: expected a cpu tensor for the 'ts' backend, got one on ${tt.device}`,
      name,
    );
  return { data: tt.toFloat32Array(), headStride: s[0] === 1 ? 0 : s[1]!, cols: s[1]! };
}

/**
 * Validates hooks.rab (HstuRabHook) against the problem and decodes its tables; every malformed
 * field is a typed error naming `hooks.rab.<field>` (permuted tiles: `permute`). The time term reads per-token times on the
 * key axis of a jagged (THD) batch, so it needs the THD layout.
 */
function compileRab(p: AttentionProblem, rab: HstuRabHook, permute: TiledHooks['permute']): CpuRab {
  // Its positions and times are the sequence order's (as the native and WGSL kernels: all three
  // refuse permuted tiles with it rather than read tiled positions).
  if (permute && (permute.q !== undefined || permute.k !== undefined))
    throw new ValueError(
      "permute: expected no permuted tiles with HSTU's bucketed rab (its positions and times are the sequence order's), got a permutation",
      'permute',
    );
  if (rab === null || typeof rab !== 'object' || rab.kind !== 'hstuRab')
    bad('hooks.rab', '{ kind: "hstuRab", positionTable?, timestampTable?, ... }', rab);
  if (rab.positionTable === undefined && rab.timestampTable === undefined)
    bad('hooks.rab', 'a positionTable or a timestampTable', rab);
  if (typeof rab.grad !== 'boolean') bad('hooks.rab.grad', 'a boolean', rab.grad);
  const pos =
    rab.positionTable === undefined
      ? undefined
      : rabTable(rab.positionTable, 'hooks.rab.positionTable', p.hq, true);
  let time: CpuRab['time'];
  if (rab.timestampTable !== undefined) {
    const t = rabTable(rab.timestampTable, 'hooks.rab.timestampTable', p.hq, false);
    if (p.layout !== 'THD')
      bad(
        'hooks.rab.timestampTable',
        'the THD layout (times are per token of the key axis)',
        p.layout,
      );
    const times = (x: unknown, name: string): Int32Array => {
      if (!(x instanceof Int32Array) || x.length !== p.totalK)
        bad(name, `an Int32Array of length totalK = ${p.totalK} (one per key token)`, x);
      for (let e = 0; e < x.length; e++)
        if (x[e]! < 0) bad(name, 'non-negative rebased times (hstuRabTimes)', `${x[e]} at ${e}`);
      return x;
    };
    for (let b = 0; b < p.batch; b++)
      if (p.seqQ[b]! > p.seqK[b]!)
        bad(
          'hooks.rab.timestampTable',
          'at most as many queries as keys per sequence (query row r is position r + Nk - Nq)',
          `${p.seqQ[b]} queries and ${p.seqK[b]} keys in sequence ${b}`,
        );
    const keyTime = times(rab.keyTime, 'hooks.rab.keyTime');
    const nextTime = times(rab.nextTime, 'hooks.rab.nextTime');
    const th = rab.thresholds as unknown;
    const what = `an Int32Array of 1 to T = ${t.cols} non-decreasing entries, the first 0 (hstuTimeThresholds)`;
    if (!(th instanceof Int32Array) || th.length < 1 || th.length > t.cols || th[0] !== 0)
      bad('hooks.rab.thresholds', what, th);
    for (let e = 1; e < th.length; e++)
      if (th[e]! < th[e - 1]!)
        bad('hooks.rab.thresholds', what, `${th[e]} after ${th[e - 1]} at ${e}`);
    time = { ...t, keyTime, nextTime, thresholds: th };
  }
  return { pos, time, grad: rab.grad };
}

/**
 * The HSTU bucketed rab (HstuRabHook) on the in-range scores [lo[r], hi[r]) of rows [0, rows) of
 * a visited tile (row stride ld): s += pos[h, pc] + time[h, tc]. Query row q0 + r of sequence b
 * is position i = q0 + r + nk - nq (as the HSTU mask hook's rule), key k0 + c is j; times are
 * read on the key axis at startK[b] + i (nextTime) and startK[b] + j (keyTime). Runs right after
 * S = scale Q K^T, before the score mods and masks (the hook's term joins the scaled score
 * first; masked pairs become -inf afterwards regardless). With `cols` (the backward), each
 * pair's columns are kept there (element r * ld + c) for accumulateRabGrad.
 */
export function applyHstuRab(
  rab: CpuRab,
  p: AttentionProblem,
  b: number,
  h: number,
  q0: number,
  rows: number,
  k0: number,
  s: Float32Array,
  ld: number,
  lo: Int32Array,
  hi: Int32Array,
  cols?: { pc: Int32Array; tc: Int32Array },
): void {
  const nq = p.seqQ[b]!;
  const nk = p.seqK[b]!;
  const start = p.startK[b]!;
  const pos = rab.pos;
  const time = rab.time;
  const P = pos ? pos.cols : 1;
  const half = (P - 1) / 2;
  const po = pos ? h * pos.headStride : 0;
  const to = time ? h * time.headStride : 0;
  for (let r = 0; r < rows; r++) {
    const i = q0 + r + nk - nq;
    const so = r * ld;
    const next = time ? time.nextTime[start + i]! : 0;
    for (let c = lo[r]!, e = hi[r]!; c < e; c++) {
      const j = k0 + c;
      let x = 0;
      if (pos) {
        const pc = Math.min(Math.max(j - i + half, 0), P - 1);
        x += pos.data[po + pc]!;
        if (cols) cols.pc[so + c] = pc;
      }
      if (time) {
        // |dt| of two rebased int32 times fits an int32 exactly (both in [0, 2^31)).
        const tc = hstuTimeColumn(time.thresholds, Math.abs(next - time.keyTime[start + j]!));
        x += time.data[to + tc]!;
        if (cols) cols.tc[so + c] = tc;
      }
      s[so + c] = s[so + c]! + x;
    }
  }
}

/**
 * The backward's table gradients of a tile: dZ (ds, the gradient at the score after the scale
 * and the mods' chain rule, 0 at masked pairs) added at each in-range pair's columns (`cols`,
 * kept by applyHstuRab for this tile) of head h (row 0 of a shared table). dPos / dTime are
 * float64 accumulators in the tables' shapes.
 */
export function accumulateRabGrad(
  rab: CpuRab,
  h: number,
  rows: number,
  ds: Float32Array,
  ld: number,
  lo: Int32Array,
  hi: Int32Array,
  cols: { pc: Int32Array; tc: Int32Array },
  dPos: Float64Array | undefined,
  dTime: Float64Array | undefined,
): void {
  const po = rab.pos ? h * rab.pos.headStride : 0;
  const to = rab.time ? h * rab.time.headStride : 0;
  for (let r = 0; r < rows; r++) {
    const so = r * ld;
    for (let e = so + lo[r]!, end = so + hi[r]!; e < end; e++) {
      const g = ds[e]!;
      if (dPos) dPos[po + cols.pc[e]!] += g;
      if (dTime) dTime[to + cols.tc[e]!] += g;
    }
  }
}

/**
 * Applies `mods` in order to the in-range scores of rows [0, rows) of the tile s (row stride
 * ld) at query rows q0 + r and keys k0 + c of sequence (b, h). With `g`, multiplies each mod's
 * derivative at its own input into g (the backward's chain rule); g must hold 1 where it starts.
 */
export function applyScoreMods(
  mods: readonly CpuScoreMod[],
  p: AttentionProblem,
  b: number,
  h: number,
  q0: number,
  rows: number,
  k0: number,
  s: Float32Array,
  ld: number,
  lo: Int32Array,
  hi: Int32Array,
  g: Float32Array | undefined,
): void {
  const nq = p.seqQ[b]!;
  const nk = p.seqK[b]!;
  for (const mod of mods) {
    switch (mod.kind) {
      case 'softcap': {
        const cap = mod.cap;
        const inv = 1 / cap;
        for (let r = 0; r < rows; r++) {
          const so = r * ld;
          for (let j = so + lo[r]!, e = so + hi[r]!; j < e; j++) {
            const t = Math.tanh(s[j]! * inv);
            if (g) g[j] = g[j]! * (1 - t * t);
            s[j] = cap * t;
          }
        }
        break;
      }
      case 'alibi': {
        const slope = mod.slopes[h]!;
        for (let r = 0; r < rows; r++) {
          const so = r * ld;
          // |i + nk - nq - j| with i = q0 + r, j = k0 + c.
          const diag = q0 + r + nk - nq - k0;
          for (let c = lo[r]!, e = hi[r]!; c < e; c++) {
            s[so + c] = s[so + c]! - slope * Math.abs(diag - c);
          }
        }
        break;
      }
      case 'bias': {
        const data = mod.data;
        const base = b * mod.batchStride + h * mod.headStride + k0;
        for (let r = 0; r < rows; r++) {
          const so = r * ld;
          const bo = base + (q0 + r) * mod.rowStride;
          for (let c = lo[r]!, e = hi[r]!; c < e; c++) s[so + c] = s[so + c]! + data[bo + c]!;
        }
        break;
      }
      case 'custom': {
        const { ts, tsGrad } = mod;
        if (g && !tsGrad) {
          throw new ValueError(
            `scoreMod.tsGrad: expected a gradient function for custom mod "${mod.name}" (the backward needs d mod / d s), got undefined`,
            'scoreMod.tsGrad',
          );
        }
        for (let r = 0; r < rows; r++) {
          const so = r * ld;
          const i = q0 + r;
          for (let c = lo[r]!, e = hi[r]!; c < e; c++) {
            const x = s[so + c]!;
            if (g) g[so + c] = g[so + c]! * tsGrad!(x, b, h, i, k0 + c);
            s[so + c] = ts(x, b, h, i, k0 + c);
          }
        }
        break;
      }
    }
  }
}

/**
 * The mask mod's element test on a tile its block mask marks 1 (some pairs pass): scores of
 * pairs the mod rejects become -Infinity, so the normalisation gives them weight 0 (softmax
 * exp(-inf - m) = 0, sigmoid(-inf) = 0), as out-of-range keys. With `g`, their chain-rule
 * factor becomes 0 too.
 */
export function applyMaskMod(
  mask: ResolvedMaskMod,
  b: number,
  h: number,
  q0: number,
  rows: number,
  k0: number,
  s: Float32Array,
  ld: number,
  lo: Int32Array,
  hi: Int32Array,
  g: Float32Array | undefined,
): void {
  const test = mask.ts;
  for (let r = 0; r < rows; r++) {
    const so = r * ld;
    const i = q0 + r;
    for (let c = lo[r]!, e = hi[r]!; c < e; c++) {
      if (!test(b, h, i, k0 + c)) {
        s[so + c] = Number.NEGATIVE_INFINITY;
        if (g) g[so + c] = 0;
      }
    }
  }
}

/**
 * The HSTU mask hook's element rule on rows [0, rows) of a visited tile (query rows q0 + r of
 * the nq queries, keys k0 + c of the nk keys of sequence b): pairs it refuses get score -inf
 * (weight 0) and, with `g` (the backward's mod derivative), g = 0. Every visited tile runs it
 * (HstuMaskHook (b)). The queries are the sequence's last nq tokens (M-FALCON's candidates
 * when nq < nk), so query row r is position r + nk - nq of the length-nk sequence.
 */
export function applyHstuMask(
  mask: HstuMaskHook,
  b: number,
  nq: number,
  n: number,
  q0: number,
  rows: number,
  k0: number,
  s: Float32Array,
  ld: number,
  lo: Int32Array,
  hi: Int32Array,
  g: Float32Array | undefined,
): void {
  for (let r = 0; r < rows; r++) {
    const so = r * ld;
    const i = q0 + r + n - nq;
    for (let c = lo[r]!, e = hi[r]!; c < e; c++) {
      if (!hstuMaskAllowed(mask, b, i, k0 + c, n)) {
        s[so + c] = Number.NEGATIVE_INFINITY;
        if (g) g[so + c] = 0;
      }
    }
  }
}

/** sigmoid(x) without overflow: exp only ever sees a non-positive argument. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/**
 * The pointwise normalisations' weights, in place on s[from, to): sigmoid w = sigmoid(s + bias),
 * silu w = factor s sigmoid(s). With `ds` (the backward's dP over the same range), also
 * ds *= dw/ds: sigmoid w (1 - w); silu factor sig (1 + s (1 - sig)), with 1 - sig computed as
 * sig(-s) (no cancellation as sig -> 1). A masked score (-inf, from a mask mod) weighs 0 with
 * derivative 0 (silu's limit; -inf * 0 would be NaN); a NaN score stays NaN, as in the
 * float64 reference. One branch per row range, none per element.
 */
export function pointwiseWeights(
  kind: PointwiseKind,
  s: Float32Array,
  from: number,
  to: number,
  bias: number,
  factor: number,
  ds?: Float32Array,
): void {
  if (kind === 'sigmoid') {
    for (let j = from; j < to; j++) {
      const w = sigmoid(s[j]! + bias);
      s[j] = w;
      if (ds) ds[j] = ds[j]! * w * (1 - w);
    }
    return;
  }
  for (let j = from; j < to; j++) {
    const x = s[j]!;
    if (x === Number.NEGATIVE_INFINITY) {
      s[j] = 0;
      if (ds) ds[j] = 0;
      continue;
    }
    const sg = sigmoid(x);
    s[j] = factor * x * sg;
    if (ds) ds[j] = ds[j]! * factor * sg * (1 + x * sigmoid(-x));
  }
}
