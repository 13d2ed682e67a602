import type { AttentionProblem } from '@attnkit/attention';
import { ValueError } from '@attnkit/tensor';
import {
  declareBindings,
  halfCodec,
  type StorageDType,
  type UniformField,
  type WebGpuFeatures,
  type WgslBinding,
} from '@attnkit/webgpu';
import type { TiledHooks } from '../hooks.js';
import { type AuxTables, buildStreamK, type StreamKTables } from './aux.js';
import {
  pointwiseFn,
  pointwiseOut,
  pointwisePrelude,
  pointwiseWgsl,
  type WgslHooks,
} from './hooks.js';
import { paramsStruct } from './params.js';
import { SPLITS_FIELD, STREAMK_FIELDS, type WgslKernel } from './shaders.js';

/**
 * Decode attention on WebGPU (LeanAttention, issue 12; the native engine's flash_decode.h on
 * CPU): one workgroup per (b, kv head, piece) computes the query rows of ALL the query heads of
 * its kv head (group x Nq rows) and streams the piece's keys once, so every K/V byte is read
 * once per kv head per piece. The generic forward (shaders.ts) tiles 64 query rows per
 * workgroup per query head: at decode it fills one row and re-reads the kv head's K/V once per
 * query head of the group.
 *
 * Decode is bound by K/V bandwidth, so the layout is about bytes in flight and coalescing
 * (decodeLayout):
 * - a key row is cut into 16-byte chunks (8 halves as one vec4<u32> when D % 8 == 0, else 4
 *   elements), and LANES consecutive threads share a key, lane l reading chunks l, l + LANES,
 *   ...: a subgroup's load covers whole rows of consecutive keys;
 * - the threads of a row slice form key groups of LANES lanes; per pass each group takes UNROLL
 *   keys and issues all their K and V loads before any arithmetic;
 * - each lane keeps its chunk of q and of the Dv accumulator of RT rows in registers; the lanes
 *   of a key sum their partial dot products (`lane_sum`: subgroupShuffleXor with `subgroups`,
 *   else workgroup memory);
 * - every key group runs its own online softmax over its keys (flash-decoding within the
 *   workgroup): no barrier in the key loop on the subgroup path, and the groups' (m, l, acc)
 *   are merged once per piece, through workgroup memory;
 * - more rows than RT (large GQA groups, Nq > 1) are cut into row slices of RT rows, each slice
 *   a share of the threads streaming the same keys (the repeats hit the L1/L2, not DRAM).
 * Numerics as shaders.ts: scores in log2 units, masked scores NEG, running max from M0, so rows
 * without keys end with l = 0 (O = 0, LSE = -inf) and no NaN.
 *
 * Partitions: 'fa2' one piece per (b, kv head), writing o and lse directly; 'splitK' P.splits
 * equal ranges of the unit's key tiles; 'streamK' the host's stream-K plan (aux.ts buildStreamK
 * over (b, kv head) units). The last two write partials (m, l, acc) in split-K's scratch layout
 * (slot (lse row) x P.splits + piece), which shaders.ts combineShader merges unchanged.
 * Pointwise weights (sigmoid, silu): no (m, l) and no LSE; each key's weight is final, the
 * groups' accumulators and the pieces' partials are plain sums (combineShader's pointwise merge).
 */

/** Keys per tile: the unit of the split-K ranges and of the stream-K plan. */
export const DECODE_BK = 64;
/** Query rows (group x Nq) one workgroup computes: the decode regime's bound. */
export const DECODE_MAX_ROWS = 64;
/**
 * New query tokens per sequence the decode regime takes (LeanAttention's Nq 1..16, issue 12):
 * longer queries are prefill, for the generic forward (whose tiles they fill), even when a
 * group of 1 would keep them under DECODE_MAX_ROWS.
 */
export const DECODE_MAX_NQ = 16;
/** Threads per workgroup by default: 8 subgroups of 32, each key group's loads in flight together. */
export const DECODE_THREADS = 256;
/**
 * Threads per workgroup where the device allows them and has subgroup shuffles of 8 lanes
 * (decodeSpecFor; the layout was measured on such a GPU only): with DECODE_UNROLL keys per key
 * group a pass spans two tiles and a workgroup has twice the K/V bytes in flight. On the H200
 * (session 15, unquantized timestamps) B 1, Hq 32, Hkv 8 at 256K: split-K 16 0.394 ms against
 * 0.503 with 256 threads; stream-K at 132 workers 0.424 against 0.484 with 256 threads (and
 * 0.600 for session 5's 256 threads at 264 workers); Hkv 32 at 32K stream-K 0.188 against
 * 0.262 at 132 workers and 0.211 at 264.
 */
export const DECODE_WIDE_THREADS = 512;
/** Keys per key group per pass by default (all their K and V loads issued before the math). */
export const DECODE_UNROLL = 4;
/** The most keys per key group per pass a tuning may ask for. */
export const DECODE_MAX_UNROLL = 16;
/** The most lanes that share one key by default (16 x 16 bytes: a D 128 f16 row). */
const MAX_LANES = 16;
/** Registers (f32) per thread for the q and accumulator chunks of its rows, by default. */
const ROW_REGISTERS = 64;

export type DecodePartition = 'fa2' | 'splitK' | 'streamK';

/**
 * How the lanes of a key sum their partial dot products: 'subgroup' (subgroupShuffleXor; needs
 * the device's `subgroups` with its smallest subgroup at least the lanes), 'workgroup' (through
 * workgroup memory, two barriers per sum), or 'emulated' (the subgroup path's code with each
 * shuffle done through workgroup memory: runs that path's logic where there are no subgroups).
 */
export type DecodeReduce = 'subgroup' | 'workgroup' | 'emulated';

/** Overrides of the layout decodeLayout picks (tests and benchmarks); powers of two. */
export interface DecodeTuning {
  /** Threads per workgroup, 64..1024 (default DECODE_THREADS). */
  threads?: number;
  /** Lanes per key, at least threads / DECODE_BK (default: the row's 16-byte chunks, <= 16). */
  lanes?: number;
  /** Query rows per thread (default: what ROW_REGISTERS holds; raised when the slices run out). */
  rowsPerThread?: number;
  /**
   * Keys per key group per pass (default DECODE_UNROLL, at most what threads / DECODE_THREADS
   * tiles hold: one tile at 256 threads, two at 512; up to DECODE_MAX_UNROLL when given: a pass
   * then spans several tiles, the keys past the piece's last tile masked, for more loads in
   * flight per lane).
   */
  unroll?: number;
  /** The lane reduction, instead of the device's (decodeSpecFor). */
  reduce?: DecodeReduce;
  /**
   * Software pipelining: the next pass's K / V words loaded into registers while the current
   * pass's scores and accumulators are computed (twice the K / V registers). Only where both
   * rows load as whole 16-byte chunks (f16 / bf16, widths multiples of 8), else ignored.
   */
  prefetch?: boolean;
}

export interface DecodeSpec {
  dtype: StorageDType;
  d: number;
  dv: number;
  /** Row capacity: a power of two >= group x maxSeqQ, at most DECODE_MAX_ROWS. */
  rows: number;
  partition: DecodePartition;
  paged: boolean;
  /**
   * The hooks' uniforms and bindings (paged K/V's pagetab, pgSize, pgPages; sigmoid's bias, silu's
   * factors) and the normalisation (default softmax; sigmoid and silu: pointwise weights, no
   * row statistics, partials plain sums, no LSE).
   */
  hooks: Pick<WgslHooks, 'uniforms' | 'bindings'> & { normalize?: WgslHooks['normalize'] };
  /** Default 'workgroup'. */
  reduce?: DecodeReduce;
  /** The device's smallest subgroup ('subgroup' reduce): the lanes of a key stay within one. */
  subgroupSize?: number;
  tuning?: DecodeTuning;
}

/** The kernel's layout (decodeLayout); every count a power of two except the chunk counts. */
export interface DecodeLayout {
  threads: number;
  /** Elements per chunk of a K / V row: 8 (f16/bf16, width % 8 == 0: one vec4<u32>) or 4. */
  wk: number;
  wv: number;
  /** Chunks per K / V row. */
  ck: number;
  cv: number;
  /** Lanes per key, and the chunks each lane holds of a K / V row. */
  lanes: number;
  cpk: number;
  cpv: number;
  /** Query rows per thread, row slices (rows / rt), key groups per slice. */
  rt: number;
  slices: number;
  groups: number;
  /**
   * Keys per key group per pass; passes per DECODE_BK-key tile (below 1 when a tuned unroll
   * makes one pass span several tiles).
   */
  unroll: number;
  passes: number;
  reduce: DecodeReduce;
  /** The next pass's K / V loaded during the current one's math (DecodeTuning.prefetch). */
  prefetch: boolean;
}

const isPow2 = (x: number) => Number.isInteger(x) && x >= 1 && (x & (x - 1)) === 0;
const nextPow2 = (x: number) => {
  let r = 1;
  while (r < x) r *= 2;
  return r;
};

function tuned(name: keyof DecodeTuning, v: number | undefined, lo: number, hi: number) {
  if (v !== undefined && (!isPow2(v) || v < lo || v > hi))
    throw new ValueError(
      `tuning.${name}: expected a power of two in [${lo}, ${hi}], got ${String(v)}`,
      `tuning.${name}`,
    );
  return v;
}

/**
 * The kernel's layout: chunk widths from the dtype and widths, LANES from the chunks of the
 * wider row (at least threads / DECODE_BK so that one key a group never spans more than a
 * tile, at most 16, and within a subgroup on the subgroup path), RT rows per thread so that
 * their q and accumulator chunks take about ROW_REGISTERS f32, row slices rows / RT, and UNROLL
 * keys per group per pass (DECODE_UNROLL, bounded by threads / DECODE_THREADS tiles a pass:
 * the 256-thread layout never spans a tile, the 512-thread one spans two, as measured).
 * ValueError naming `tuning.*` for an override that does not fit.
 */
export function decodeLayout(
  spec: Pick<DecodeSpec, 'dtype' | 'd' | 'dv' | 'rows' | 'reduce' | 'subgroupSize' | 'tuning'>,
): DecodeLayout {
  const t = spec.tuning ?? {};
  const reduce = spec.reduce ?? 'workgroup';
  const half = spec.dtype !== 'f32';
  const wk = half && spec.d % 8 === 0 ? 8 : 4;
  const wv = half && spec.dv % 8 === 0 ? 8 : 4;
  const ck = Math.ceil(spec.d / wk);
  const cv = Math.ceil(spec.dv / wv);
  const threads = tuned('threads', t.threads, 64, 1024) ?? DECODE_THREADS;
  const lanesMin = Math.max(1, threads / DECODE_BK);
  const cap = reduce === 'subgroup' ? Math.min(MAX_LANES, spec.subgroupSize ?? 0) : MAX_LANES;
  const lanes =
    tuned('lanes', t.lanes, lanesMin, reduce === 'subgroup' ? (spec.subgroupSize ?? 0) : threads) ??
    Math.min(Math.max(nextPow2(Math.max(ck, cv)), lanesMin), Math.max(cap, lanesMin));
  if (reduce === 'subgroup' && lanes > (spec.subgroupSize ?? 0))
    throw new ValueError(
      `subgroupSize: expected at least the ${lanes} lanes of a key (threads / ${DECODE_BK} with ${threads} threads) on the subgroup path, got ${String(spec.subgroupSize)}`,
      'subgroupSize',
    );
  const cpk = Math.ceil(ck / lanes);
  const cpv = Math.ceil(cv / lanes);
  const perRow = cpk * wk + cpv * wv;
  const maxSlices = threads / lanes;
  let rt =
    tuned('rowsPerThread', t.rowsPerThread, 1, DECODE_MAX_ROWS) ??
    Math.min(spec.rows, 2 ** Math.floor(Math.log2(Math.max(1, ROW_REGISTERS / perRow))));
  // Every slice needs a key group: fewer, fuller slices when the threads run out.
  rt = Math.min(Math.max(rt, spec.rows / maxSlices), spec.rows);
  const slices = spec.rows / rt;
  const groups = maxSlices / slices;
  // DECODE_UNROLL keys a pass unless tuned, bounded by threads / DECODE_THREADS tiles (the
  // 512-thread layout's passes span two tiles, masked at the piece's end: as measured).
  const span = Math.max(1, threads / DECODE_THREADS);
  const unroll =
    tuned('unroll', t.unroll, 1, DECODE_MAX_UNROLL) ??
    Math.max(1, Math.min(DECODE_UNROLL, (DECODE_BK * span) / groups));
  return {
    threads,
    wk,
    wv,
    ck,
    cv,
    lanes,
    cpk,
    cpv,
    rt,
    slices,
    groups,
    unroll,
    passes: DECODE_BK / (groups * unroll),
    reduce,
    prefetch: !!t.prefetch && wk === 8 && wv === 8,
  };
}

/**
 * Workgroup memory of a decode kernel: the exchange area (lane sums off the subgroup path, then
 * one chunk column of the key groups' accumulators at the merge: threads x the chunk's vec4s,
 * whatever the row count or Dv) and the key groups' (m, l) of each of their rows.
 */
export function decodeWorkgroupBytes(
  spec: Pick<DecodeSpec, 'dtype' | 'd' | 'dv' | 'rows' | 'reduce' | 'subgroupSize' | 'tuning'>,
): number {
  const l = decodeLayout(spec);
  const keyGroups = l.threads / l.lanes;
  return xchEntries(l) * 16 + keyGroups * l.rt * 8;
}

function xchEntries(l: DecodeLayout): number {
  const merge = l.threads * (l.wv / 4);
  return l.reduce === 'subgroup' ? merge : Math.max(l.threads, merge);
}

/** The row capacity of a problem: group x maxSeqQ rounded up to a power of two. */
export function decodeRows(p: AttentionProblem): number {
  return nextPow2(p.group * p.maxSeqQ);
}

let tuningOverride: DecodeTuning | undefined;

/**
 * Overrides the layout of the decode kernels built from now on (undefined restores the
 * defaults): for tests (the emulated subgroup path, odd layouts) and benchmark sweeps. The
 * overrides go into the kernel's spec, so kernels of different tunings are cached apart.
 * @internal
 */
export function setDecodeTuning(t: DecodeTuning | undefined): void {
  if (t) decodeLayout({ dtype: 'f16', d: 128, dv: 128, rows: 1, tuning: t, subgroupSize: 128 });
  tuningOverride = t && Object.keys(t).length > 0 ? { ...t } : undefined;
}

/**
 * The decode kernel's spec for a problem on a device: the lanes of a key reduce with subgroup
 * shuffles when the device has `subgroups` whose smallest size holds them (lanes are capped at
 * that size), else through workgroup memory; setDecodeTuning's overrides on top.
 */
export function decodeSpecFor(
  p: AttentionProblem,
  dtype: StorageDType,
  partition: DecodePartition,
  hooks: DecodeSpec['hooks'],
  features: Pick<WebGpuFeatures, 'subgroups' | 'subgroupMinSize'>,
  /** The device's limits: DECODE_WIDE_THREADS where they hold its workgroup (else 256). */
  limits?: DecodeLimits,
): DecodeSpec {
  const tuning =
    tuningOverride?.threads === undefined && limits && wideFits(p, features, limits)
      ? { ...tuningOverride, threads: DECODE_WIDE_THREADS }
      : tuningOverride;
  const base: DecodeSpec = {
    dtype,
    d: p.d,
    dv: p.dv,
    rows: decodeRows(p),
    partition,
    paged: p.paged !== undefined,
    hooks,
    ...(tuning ? { tuning } : {}),
  };
  const lanes = shuffledLanes(tuning?.threads ?? DECODE_THREADS, tuning);
  const sg = features.subgroups ? features.subgroupMinSize : 0;
  const canShuffle = isPow2(sg) && sg >= lanes;
  const reduce = tuning?.reduce ?? (canShuffle ? 'subgroup' : 'workgroup');
  if (reduce === 'subgroup' && !canShuffle)
    throw new ValueError(
      `tuning.reduce: expected "workgroup" or "emulated" on a device whose smallest subgroup (${sg}; 0 = no subgroups) is below the ${lanes} lanes of a key, got "subgroup"`,
      'tuning.reduce',
    );
  return reduce === 'subgroup' ? { ...base, reduce, subgroupSize: sg } : { ...base, reduce };
}

/** The lanes a subgroup must hold for the shuffle path: threads / DECODE_BK, or tuned lanes. */
function shuffledLanes(threads: number, tuning: DecodeTuning | undefined): number {
  return Math.max(threads / DECODE_BK, tuning?.lanes ?? 0);
}

/**
 * Workgroup bytes of p's decode kernel under `tuning`: the larger of the f16 and f32 layouts off
 * the subgroup path ('workgroup' and 'emulated' take the same memory, 'subgroup' less).
 */
function decodeBytesBound(p: AttentionProblem, tuning: DecodeTuning | undefined): number {
  const bytes = (dtype: StorageDType) =>
    decodeWorkgroupBytes({
      dtype,
      d: p.d,
      dv: p.dv,
      rows: decodeRows(p),
      reduce: 'workgroup',
      ...(tuning ? { tuning } : {}),
    });
  return Math.max(bytes('f16'), bytes('f32'));
}

/** The device limits the decode kernel's workgroup size depends on. */
export interface DecodeLimits {
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupStorageSize: number;
}

/** Whether the device holds a DECODE_WIDE_THREADS workgroup of the decode kernel (either reduce). */
function wideFits(
  p: AttentionProblem,
  features: Pick<WebGpuFeatures, 'subgroups' | 'subgroupMinSize'>,
  limits: DecodeLimits,
): boolean {
  const most = Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
  if (most < DECODE_WIDE_THREADS) return false;
  // Only with subgroup shuffles for a key's lanes (at least threads / BK of them): the layout
  // was measured on such a GPU alone (the workgroup-memory sums, e.g. llvmpipe, keep 256).
  const sg = features.subgroups ? features.subgroupMinSize : 0;
  if (sg < shuffledLanes(DECODE_WIDE_THREADS, tuningOverride)) return false;
  try {
    const tuning = { ...tuningOverride, threads: DECODE_WIDE_THREADS };
    return decodeBytesBound(p, tuning) <= limits.maxComputeWorkgroupStorageSize;
  } catch (e) {
    // A tuning the wide layout cannot take (e.g. fewer lanes than threads / BK): stay narrow.
    if (e instanceof ValueError) return false;
    throw e;
  }
}

/**
 * The decode regime (host.ts tiledForwardWebGpu takes the decode kernel there): softmax without
 * sinks, or a pointwise weight (sigmoid, silu), and no score mods, mask, rab, permutation, block
 * sparsity or mask mod; neither tensor
 * cores nor explicit forward tiles asked for (those select the generic forward), Nq 1..16,
 * group x maxSeqQ <= 64 rows per kv head, and the kernel's workgroup memory within the
 * device's limit (counted for the larger of the f16 and f32 layouts, off the subgroup path).
 */
export function inDecodeRegime(
  p: AttentionProblem,
  hooks: TiledHooks,
  opts: { tensorCores?: unknown; tiles?: { forward?: unknown } },
  maxWorkgroupBytes: number,
): boolean {
  // Explicit forward tiles ask for the generic forward with that plan.
  if (opts.tensorCores || opts.tiles?.forward !== undefined) return false;
  const n = hooks.normalize;
  if (n.kind === 'softmax' && n.sinks !== undefined) return false;
  if (hooks.scoreMods.length > 0 || hooks.mask || hooks.rab || hooks.permute) return false;
  if (p.blockSparse !== undefined || p.maskMod !== undefined) return false;
  if (p.maxSeqQ < 1 || p.maxSeqQ > DECODE_MAX_NQ || p.group * p.maxSeqQ > DECODE_MAX_ROWS)
    return false;
  return decodeBytesBound(p, tuningOverride) <= maxWorkgroupBytes;
}

const UNIFORMS: WgslBinding = { name: 'P', kind: 'uniform', type: 'Params' };
const AUX: WgslBinding = { name: 'aux', kind: 'read', type: 'array<u32>' };

/** The uniform fields the partition adds after the hooks' (as the generic forward's). */
export function decodeScheduleFields(partition: DecodePartition): readonly UniformField[] {
  return partition === 'fa2' ? [] : partition === 'splitK' ? [SPLITS_FIELD] : STREAMK_FIELDS;
}

function rep(n: number, f: (i: number) => string, sep = '\n'): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

/** 4 elements of a row at element e (column c, a multiple of 4) of width W; zeros past it. */
function load4(name: string, e: string, c: string, width: number, vec: boolean): string {
  if (vec) return `ld4_${name}(${e})`;
  const el = (t: number) => `select(0.0, ld_${name}(${e} + ${t}u), ${c} + ${t}u < ${width}u)`;
  return `vec4<f32>(${el(0)}, ${el(1)}, ${el(2)}, ${el(3)})`;
}

/**
 * The lane sum of the reduce: the LANES lanes of a key (consecutive invocations, LANES-aligned)
 * end with bitwise equal sums (a butterfly adds the same two values on both sides; the
 * workgroup loop adds in one order), so every lane takes the same softmax steps.
 */
function laneSum(reduce: DecodeReduce, lanes: number): string {
  const steps: string[] = [];
  for (let s = 1; s < lanes; s *= 2)
    steps.push(
      reduce === 'subgroup'
        ? `  y += subgroupShuffleXor(y, ${s}u);`
        : // The shuffle through workgroup memory, inline: llvmpipe's GL backend mis-orders
          // barriers in a function called from this one.
          `  xch[g_lid] = y;
  workgroupBarrier();
  y += xch[g_lid ^ ${s}u];
  workgroupBarrier();`,
    );
  if (reduce !== 'workgroup')
    return `fn lane_sum(x: vec4<f32>) -> vec4<f32> {
  var y = x;
${steps.join('\n')}
  return y;
}`;
  return `fn lane_sum(x: vec4<f32>) -> vec4<f32> {
  xch[g_lid] = x;
  workgroupBarrier();
  let b0 = g_lid & ~(LANES - 1u);
  var y = xch[b0];
  for (var i = 1u; i < LANES; i++) { y += xch[b0 + i]; }
  workgroupBarrier();
  return y;
}`;
}

export function decodeShader(spec: DecodeSpec): WgslKernel {
  const { d, dv, partition } = spec;
  const L = decodeLayout(spec);
  const { rt: RT, unroll: U, lanes, cpk, cpv } = L;
  const vecD = d % 4 === 0;
  const vecV = dv % 4 === 0;
  const wideK = L.wk === 8;
  const wideV = L.wv === 8;
  const nk4 = L.wk / 4;
  const nv4 = L.wv / 4;
  const quads = Math.ceil(U / 4);
  const partial = partition !== 'fa2';
  // Softmax: online (m, l) per key group, merged with rescales. Pointwise (sigmoid, silu): each
  // key's weight is final, the groups' accumulators are plain sums, no LSE (shaders.ts's
  // pointwise forward); the softmax kernel's text does not change.
  const norm = spec.hooks.normalize ?? 'softmax';
  const softmax = norm === 'softmax';
  const pw = { normalize: norm } as const;
  // A pass of more keys than a tile (a tuned unroll) can reach past the piece's last tile: its
  // keys from there on belong to the next piece, so loads stop at kLim and scores at hi.
  const spans = L.groups * U > DECODE_BK;
  const kLim = spans ? 'kLim' : 'nk';
  const bindings: WgslBinding[] = [
    UNIFORMS,
    { name: 'q', kind: 'read', type: { dtype: spec.dtype, vec: vecD } },
    // Whole 16-byte chunks (8 halves) when the row allows: the widest load WGSL has.
    {
      name: 'k',
      kind: 'read',
      type: wideK ? 'array<vec4<u32>>' : { dtype: spec.dtype, vec: vecD },
    },
    {
      name: 'v',
      kind: 'read',
      type: wideV ? 'array<vec4<u32>>' : { dtype: spec.dtype, vec: vecV },
    },
    AUX,
    ...(partial
      ? ([
          ...(softmax
            ? [{ name: 'pstat', kind: 'storage', type: 'array<vec2<f32>>' } as const]
            : []),
          { name: 'pacc', kind: 'storage', type: { dtype: 'f32', vec: vecV } },
        ] as const)
      : ([
          { name: 'o', kind: 'storage', type: { dtype: spec.dtype, vec: vecV } },
          ...(softmax ? [{ name: 'lse', kind: 'storage', type: 'array<f32>' } as const] : []),
        ] as const)),
    ...spec.hooks.bindings,
  ];
  const row = (t: string) => (spec.paged ? `pg_row(b, ${t})` : t);
  // A lane's chunk j of a row holds chunk index lane + j LANES; lanes past the row's chunks
  // hold zeros (guarded only where some lane can be past them).
  const chunkGuard = (j: number, chunks: number) =>
    (j + 1) * lanes > chunks ? `lane + ${j * lanes}u < ${chunks}u` : '';
  const guarded = (cond: string, body: string) => (cond ? `if (${cond}) { ${body} }` : body);
  // f32 vec4 n of K chunk j of key u (from the raw vec4<u32> when wide).
  const kf = (u: number, j: number, n: number) =>
    wideK
      ? `vec4<f32>(h2f(kw${u}_${j}.${n ? 'z' : 'x'}), h2f(kw${u}_${j}.${n ? 'w' : 'y'}))`
      : `kw${u}_${j}`;
  const vf = (u: number, j: number, n: number) =>
    wideV
      ? `vec4<f32>(h2f(vw${u}_${j}.${n ? 'z' : 'x'}), h2f(vw${u}_${j}.${n ? 'w' : 'y'}))`
      : `vw${u}_${j}`;
  const kLoad = (j: number) => {
    const col = `(lane + ${j * lanes}u) * ${L.wk}u`;
    return wideK ? `k[(kE + ${col}) >> 3u]` : load4('k', `kE + ${col}`, col, d, vecD);
  };
  const vLoad = (j: number) => {
    const col = `(lane + ${j * lanes}u) * ${L.wv}u`;
    return wideV ? `v[(vE + ${col}) >> 3u]` : load4('v', `vE + ${col}`, col, dv, vecV);
  };
  const zeroK = wideK ? 'vec4<u32>(0u)' : 'vec4<f32>(0.0)';
  const zeroV = wideV ? 'vec4<u32>(0u)' : 'vec4<f32>(0.0)';
  const E = ['x', 'y', 'z', 'w'];
  // Per row r: the score of key u is component u % 4 of quad u / 4.
  const sc = (r: number, u: number) => `s${r}_${u >> 2}.${E[u & 3]}`;
  const perRow = (f: (r: number) => string, sep = '\n    ') => rep(RT, f, sep);
  const qRegs = (f: (r: number, j: number, n: number) => string, sep = '\n    ') =>
    rep(RT, (r) => rep(cpk, (j) => rep(nk4, (n) => f(r, j, n), sep), sep), sep);
  const accRegs = (f: (r: number, j: number, n: number) => string, sep = '\n    ') =>
    rep(RT, (r) => rep(cpv, (j) => rep(nv4, (n) => f(r, j, n), sep), sep), sep);

  // Key u's K and V chunks of this lane from row key `t` into registers k / v{u}_{j}.
  const rowLoads = (u: number, t: string, k: string, v: string) => `
      let kr = ${row(t)};
      let kE = kB + kr * P.kRow;
      let vE = vB + kr * P.vRow;
      ${rep(cpk, (j) => guarded(chunkGuard(j, L.ck), `${k}${u}_${j} = ${kLoad(j)};`), '\n      ')}
      ${rep(cpv, (j) => guarded(chunkGuard(j, L.cv), `${v}${u}_${j} = ${vLoad(j)};`), '\n      ')}`;
  // Prefetch (L.prefetch, wide rows only): pass kb + KP's raw words into nk / nv while pass kb
  // computes. Loaded whatever the key (rows past the piece clamped to its last, so the last
  // pass's prefetch reads cached rows) and masked when used (V zeroed past kLim; K's scores are
  // masked by the key band): a load under a branch, or converted next to it, would make the
  // thread wait for it there instead of during the math. A piece without keys prefetches
  // nothing (its rows, and on the paged path its block-table entries, do not exist).
  const prefetchInto = (kbExpr: string) => `{
      let pkb = ${kbExpr};
      ${rep(
        U,
        (u) => `{${rowLoads(u, `min(pkb + ${u * L.groups}u + g, pfLim - 1u)`, 'nk', 'nv')}
      }`,
        '\n      ',
      )}
    }`;
  const loads = L.prefetch
    ? `
    ${rep(U, (u) => rep(cpk, (j) => `let kw${u}_${j} = nk${u}_${j};`, ' '), '\n    ')}
    ${rep(U, (u) => rep(cpv, (j) => `let vw${u}_${j} = select(${zeroV}, nv${u}_${j}, t${u} < ${kLim});`, ' '), '\n    ')}
    ${prefetchInto('kb + KP')}`
    : `
    ${rep(U, (u) => rep(cpk, (j) => `var kw${u}_${j} = ${zeroK};`, ' '), '\n    ')}
    ${rep(U, (u) => rep(cpv, (j) => `var vw${u}_${j} = ${zeroV};`, ' '), '\n    ')}
    ${rep(
      U,
      (u) => `if (t${u} < ${kLim}) {${rowLoads(u, `t${u}`, 'kw', 'vw')}
    }`,
      '\n    ',
    )}`;
  const pass = `
    // Keys kb + u GROUPS + g: a subgroup's loads cover consecutive whole rows.
    ${rep(U, (u) => `let t${u} = kb + ${u * L.groups}u + g;`, '\n    ')}${loads}
    // Partial dot products over this lane's chunks, summed over the key's lanes.
    ${perRow((r) =>
      rep(
        quads,
        (qd) =>
          `var s${r}_${qd} = lane_sum(vec4<f32>(${rep(
            4,
            (e) => {
              const u = 4 * qd + e;
              if (u >= U) return '0.0';
              return rep(
                cpk,
                (j) => rep(nk4, (n) => `dot(q${r}_${j}_${n}, ${kf(u, j, n)})`, ' + '),
                ' + ',
              );
            },
            ', ',
          )}));`,
        '\n    ',
      ),
    )}
    ${perRow((r) => {
      const masks = rep(
        U,
        (u) =>
          `${sc(r, u)} = select(NEG, ${sc(r, u)}, i32(t${u}) >= lo${r} && i32(t${u}) < hi${r});`,
        '\n      ',
      );
      const pad = rep(4 * quads - U, (e) => `${sc(r, U + e)} = NEG;`, ' ');
      // Each quad's max, folded pairwise (WGSL's max takes two arguments).
      const mx = Array.from(
        { length: quads },
        (_, qd) => `max(max(s${r}_${qd}.x, s${r}_${qd}.y), max(s${r}_${qd}.z, s${r}_${qd}.w))`,
      ).reduce((a, b) => `max(${a}, ${b})`);
      const ps = rep(quads, (qd) => `let p${qd} = exp2(s${r}_${qd} - vec4<f32>(mn));`, '\n      ');
      const psum = rep(quads, (qd) => `dot(p${qd}, vec4<f32>(1.0))`, ' + ');
      const pv = (j: number, n: number) =>
        rep(U, (u) => `p${u >> 2}.${E[u & 3]} * ${vf(u, j, n)}`, ' + ');
      if (!softmax) {
        // The key's final weight (a masked NEG weighs 0; sigmoid adds its bias, sb).
        const bias = norm === 'sigmoid' ? ' + vec4<f32>(sb)' : '';
        const ws = rep(
          quads,
          (qd) => `let p${qd} = ${pointwiseFn(pw)}(s${r}_${qd}${bias}).w;`,
          '\n      ',
        );
        return `{
      ${masks}
      ${pad}
      ${ws}
      ${rep(cpv, (j) => rep(nv4, (n) => `a${r}_${j}_${n} = a${r}_${j}_${n} + ${pv(j, n)};`, '\n      '), '\n      ')}
    }`;
      }
      return `{
      ${masks}
      ${pad}
      let mn = max(m${r}, ${mx});
      let al = exp2(m${r} - mn);
      ${ps}
      l${r} = l${r} * al + ${psum};
      m${r} = mn;
      ${rep(cpv, (j) => rep(nv4, (n) => `a${r}_${j}_${n} = a${r}_${j}_${n} * al + ${pv(j, n)};`, '\n      '), '\n      ')}
    }`;
    })}`;

  // The rows' outputs: o (normalised) and lse, or the partial (acc, (m, l)) of this piece.
  const lseOf = `bitcast<f32>(bitcast<u32>(M * LN2) ^ (P.negInf ^ 0xff800000u)) + log(Lt)`;
  // Pointwise: O and its partials are the sums (silu's c ln 2 applied once here, as shaders.ts).
  const out = softmax ? 'x * select(1.0 / Lt, 0.0, Lt == 0.0)' : `x${pointwiseOut(pw)}`;
  const store = partial
    ? `st_pacc((li * P.splits + split) * P.dv + c, x${softmax ? '' : pointwiseOut(pw)}, min(4u, P.dv - c));`
    : `st_o(b * P.oBatch + hq * P.oHead + (startQ + i) * P.oRow + c, ${out}, min(4u, P.dv - c));`;
  const stat = !softmax
    ? ''
    : partial
      ? `pstat[li * P.splits + split] = vec2<f32>(M, Lt);`
      : `lse[li] = select(${lseOf}, bitcast<f32>(P.negInf), Lt == 0.0);`;
  // Merge of the slice's key groups, one row at a time: their max M, the sum of their l and of
  // their accumulators, each rescaled by exp2(m - M) (rows of a group without keys: m = M0,
  // l = 0, acc = 0). The accumulators go through workgroup memory one chunk column (each
  // lane's chunk j, LW vec4 columns of the row) at a time, so it holds threads x the chunk's
  // vec4s whatever Dv.
  const mergeChunk = (r: number, j: number) => `
    ${guarded(
      chunkGuard(j, L.cv),
      rep(nv4, (n) => `xch[gg * LW + lane * ${nv4}u + ${n}u] = a${r}_${j}_${n} * f;`, ' '),
    )}
    workgroupBarrier();
    if (rw < R) {
      for (var e = lid % SLICE; e < LW; e += SLICE) {
        let c = (${j}u * LW + e) * 4u;
        if (c < P.dv) {
          var x = xch[sl * GROUPS * LW + e];
          for (var h = 1u; h < GROUPS; h++) { x += xch[(sl * GROUPS + h) * LW + e]; }
          ${store}
        }
      }${j === 0 && stat ? `\n      if (lid % SLICE == 0u) { ${stat} }` : ''}
    }
    workgroupBarrier();`;
  const merge = perRow(
    (r) => `{${
      softmax
        ? `
    var M = M0;
    for (var h = 0u; h < GROUPS; h++) { M = max(M, ml[(sl * GROUPS + h) * RT + ${r}u].x); }
    var Lt = 0.0;
    for (var h = 0u; h < GROUPS; h++) {
      let st = ml[(sl * GROUPS + h) * RT + ${r}u];
      Lt += st.y * exp2(st.x - M);
    }
    let f = exp2(m${r} - M);`
        : `
    let f = 1.0;`
    }
    let rw = sl * RT + ${r}u;
    let hq = hk * P.group + rw / nq;
    let i = rw % nq;
    let li = b * P.lBatch + hq * P.lHead + startQ + i;${rep(cpv, (j) => mergeChunk(r, j), '')}
  }`,
    '\n  ',
  );

  const piece = `${softmax ? '' : `\n  ${pointwisePrelude(pw)}`}
  let startQ = aux[4u * b];
  let startK = aux[4u * b + 1u];
  let nq = aux[4u * b + 2u];
  let nk = aux[4u * b + 3u];
  let off = i32(nk) - i32(nq);
  let R = P.group * nq;
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  // This lane's chunks of its rows (row sl RT + r: query head hk group + row / nq, query row
  // row % nq), pre-scaled into log2 units; zeros for rows past R, and the rows' key bands.
  ${qRegs((r, j, n) => `var q${r}_${j}_${n} = vec4<f32>(0.0);`)}
  ${perRow(
    (r) => `var lo${r} = 0;
  var hi${r} = 0;
  {
    let rw = sl * RT + ${r}u;
    if (rw < R) {
      let i = rw % nq;
      lo${r} = key_lo(i32(i), off, i32(nk));
      hi${r} = key_hi(i32(i), off, i32(nk));
      let qE = b * P.qBatch + (hk * P.group + rw / nq) * P.qHead + (startQ + i) * P.qRow;
      ${rep(
        cpk,
        (j) => {
          const body = rep(
            nk4,
            (n) => {
              const c = `(lane + ${j * lanes}u) * ${L.wk}u + ${4 * n}u`;
              return `q${r}_${j}_${n} = ${load4('q', `qE + ${c}`, c, d, vecD)} * P.scaleLog2;`;
            },
            ' ',
          );
          return guarded(chunkGuard(j, L.ck), body);
        },
        '\n      ',
      )}
    }
  }`,
    '\n  ',
  )}
  ${spans ? `let kLim = min(nk, ctEnd * BK);\n  ${perRow((r) => `hi${r} = min(hi${r}, i32(kLim));`, '\n  ')}` : ''}
  ${perRow((r) => `var m${r} = M0;\n  var l${r} = 0.0;`, '\n  ')}
  ${accRegs((r, j, n) => `var a${r}_${j}_${n} = vec4<f32>(0.0);`, '\n  ')}
  ${
    L.prefetch
      ? `// The prefetch's rows end at the piece's (kLim where a pass spans tiles, else nk).
  let pfLim = max(min(${kLim}, ctEnd * BK), 1u);
  ${rep(U, (u) => rep(cpk, (j) => `var nk${u}_${j} = ${zeroK};`, ' '), '\n  ')}
  ${rep(U, (u) => rep(cpv, (j) => `var nv${u}_${j} = ${zeroV};`, ' '), '\n  ')}
  if (ctBegin < ctEnd) ${prefetchInto('ctBegin * BK')}`
      : ''
  }
  for (var kb = ctBegin * BK; kb < ctEnd * BK; kb += KP) {${pass}
  }
  if (lane == 0u) {
    ${perRow((r) => `ml[gg * RT + ${r}u] = vec2<f32>(m${r}, l${r});`)}
  }
  workgroupBarrier();
  ${merge}`;
  // The unit's key tiles: the band of its first and last rows (shaders.ts tileLoop, aux.ts
  // buildStreamK with one query tile per (b, kv head)).
  const unitTiles = `
  let nq0 = aux[4u * b + 2u];
  let nk0 = i32(aux[4u * b + 3u]);
  let off0 = nk0 - i32(nq0);
  var ctLo = 0u;
  var ctHi = 0u;
  if (nq0 > 0u) {
    ctLo = u32(key_lo(0, off0, nk0)) / BK;
    ctHi = max((u32(max(key_hi(i32(nq0) - 1, off0, nk0), 0)) + BK - 1u) / BK, ctLo);
  }`;
  const main =
    partition === 'streamK'
      ? `
  let pcEnd = aux[P.skWorkers + wg.x + 1u];
  for (var pc = aux[P.skWorkers + wg.x]; pc < pcEnd; pc++) {
  let pe = P.skRecords + 6u * pc;
  let b = aux[pe];
  let hk = aux[pe + 1u];
  let ctBegin = aux[pe + 3u];
  let ctEnd = aux[pe + 4u];
  let split = aux[pe + 5u];${piece}
  }`
      : partition === 'splitK'
        ? `
  let b = wg.z;
  let hk = wg.y;
  let split = wg.x;${unitTiles}
  let per = (ctHi - ctLo + P.splits - 1u) / P.splits;
  let ctBegin = min(ctLo + split * per, ctHi);
  let ctEnd = min(ctBegin + per, ctHi);${piece}`
        : `
  let b = wg.z;
  let hk = wg.y;${unitTiles}
  let ctBegin = ctLo;
  let ctEnd = ctHi;${piece}`;
  const keyGroups = L.threads / lanes;
  const code = `${L.reduce === 'subgroup' ? 'enable subgroups;\n' : ''}${paramsStruct([...spec.hooks.uniforms, ...decodeScheduleFields(partition)])}
${halfCodec(spec.dtype)}
${declareBindings(bindings)}
const BK = ${DECODE_BK}u;
const LANES = ${lanes}u;
const GROUPS = ${L.groups}u;
const RT = ${RT}u;
const SLICE = ${L.threads / L.slices}u;
const KP = ${L.groups * U}u;
const LW = ${lanes * nv4}u;
const NEG = -3.0e38;
const M0 = -1.0e38;
const LN2 = 0.6931471805599453;${softmax ? '' : `\nconst LOG2E = 1.4426950408889634;\n${pointwiseWgsl(norm, false)}`}
var<workgroup> xch: array<vec4<f32>, ${xchEntries(L)}>;
var<workgroup> ml: array<vec2<f32>, ${keyGroups * RT}>;
var<private> g_lid: u32;
${laneSum(L.reduce, lanes)}
fn key_lo(r: i32, off: i32, ncols: i32) -> i32 { if (P.left < 0) { return 0; } return max(r + off - P.left, 0); }
fn key_hi(r: i32, off: i32, ncols: i32) -> i32 { if (P.right < 0) { return ncols; } return clamp(r + off + P.right + 1, 0, ncols); }${
    spec.paged
      ? `
fn pg_row(b: u32, t: u32) -> u32 {
  let slot = t / P.pgSize;
  return pagetab[b * P.pgPages + slot] * P.pgSize + (t - slot * P.pgSize);
}`
      : ''
  }

@compute @workgroup_size(${L.threads})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  g_lid = lid;
  // Thread lid: lane of key group gg (row slice sl, group g within it).
  let lane = lid % LANES;
  let gg = lid / LANES;
  let sl = gg / GROUPS;
  let g = gg % GROUPS;${main}
}
`;
  return { code, bindings };
}

/**
 * Stream-K's plan over the decode kernel's units, one per (b, kv head) with rows (buildStreamK
 * on the problem with Hq = Hkv and one query tile holding every row), its per-(b, h) unit table
 * rewritten for the query heads (query head h reads its kv head's unit), so the fix-up
 * (combineShader, schedule 'streamK', with a plan whose br >= maxSeqQ) finds each row's pieces.
 */
export function buildDecodeStreamK(
  p: AttentionProblem,
  tables: AuxTables,
  workers: number,
): StreamKTables {
  const sk = buildStreamK(
    { ...p, hq: p.hkv },
    tables,
    { tileQ: Math.max(1, p.maxSeqQ), tileK: DECODE_BK },
    workers,
  );
  const { skUnits, skCounts } = sk.values;
  const perKv = sk.aux.subarray(skUnits, skCounts);
  const counts = sk.aux.subarray(skCounts);
  const units = new Uint32Array(p.batch * p.hq);
  for (let b = 0; b < p.batch; b++)
    for (let h = 0; h < p.hq; h++)
      units[b * p.hq + h] = perKv[b * p.hkv + Math.floor(h / p.group)]!;
  const aux = new Uint32Array(skUnits + units.length + counts.length);
  aux.set(sk.aux.subarray(0, skUnits));
  aux.set(units, skUnits);
  aux.set(counts, skUnits + units.length);
  return {
    ...sk,
    aux,
    values: { ...sk.values, skCounts: skUnits + units.length, skHeads: p.hq },
  };
}
