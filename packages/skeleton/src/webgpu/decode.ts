import type { AttentionProblem } from '@attnkit/attention';
import {
  declareBindings,
  halfCodec,
  type StorageDType,
  type UniformField,
  type WgslBinding,
} from '@attnkit/webgpu';
import type { TiledHooks } from '../hooks.js';
import { type AuxTables, buildStreamK, type StreamKTables } from './aux.js';
import type { WgslHooks } from './hooks.js';
import { paramsStruct } from './params.js';
import { SPLITS_FIELD, STREAMK_FIELDS, type WgslKernel } from './shaders.js';

/**
 * Decode attention on WebGPU (LeanAttention, issue 12; the native engine's flash_decode.h on
 * CPU): one workgroup per (b, kv head, piece) stages the query rows of ALL the query heads of
 * its kv head (group x Nq rows) once and streams the piece's keys in tiles of DECODE_BK, so
 * every K/V byte is read once per kv head per piece. The generic forward (shaders.ts) tiles 64
 * query rows per workgroup per query head: at decode it fills one row and re-reads the kv
 * head's K/V once per query head of the group.
 *
 * Per key tile: lanes over keys (thread t holds key c0 + t: its K row in registers through vec4
 * loads, dot products against the staged rows, masked by the band); one thread per row does
 * the online softmax in f32, log2 units, over the tile's scores in workgroup memory; then threads
 * over (row, 4 Dv columns) accumulate P V, consecutive threads on consecutive columns of a V row
 * (coalesced). Numerics as shaders.ts: masked scores NEG, running max from M0, so rows without
 * keys end with l = 0 (O = 0, LSE = -inf) and no NaN.
 *
 * Partitions: 'fa2' one piece per (b, kv head), writing o and lse directly; 'splitK' P.splits
 * equal ranges of the unit's key tiles; 'streamK' the host's stream-K plan (aux.ts buildStreamK
 * over (b, kv head) units). The last two write partials (m, l, acc) in split-K's scratch layout
 * (slot (lse row) x P.splits + piece), which shaders.ts combineShader merges unchanged.
 */

/** Keys per tile, and threads per workgroup. */
export const DECODE_BK = 64;
/** Query rows (group x Nq) one workgroup stages: the decode regime's bound. */
export const DECODE_MAX_ROWS = 64;
/**
 * New query tokens per sequence the decode regime takes (LeanAttention's Nq 1..16, issue 12):
 * longer queries are prefill, for the generic forward (whose tiles they fill), even when a
 * group of 1 would keep them under DECODE_MAX_ROWS.
 */
export const DECODE_MAX_NQ = 16;

export type DecodePartition = 'fa2' | 'splitK' | 'streamK';

export interface DecodeSpec {
  dtype: StorageDType;
  d: number;
  dv: number;
  /** Row capacity: a power of two >= group x maxSeqQ, at most DECODE_MAX_ROWS. */
  rows: number;
  partition: DecodePartition;
  paged: boolean;
  /** The hooks' uniforms and bindings (paged K/V's pagetab, pgSize, pgPages). */
  hooks: Pick<WgslHooks, 'uniforms' | 'bindings'>;
}

/** The row capacity of a problem: group x maxSeqQ rounded up to a power of two. */
export function decodeRows(p: AttentionProblem): number {
  let r = 1;
  while (r < p.group * p.maxSeqQ) r *= 2;
  return r;
}

/** Workgroup memory of a decode kernel: staged rows, the scores tile, three row statistics. */
export function decodeWorkgroupBytes(s: Pick<DecodeSpec, 'rows' | 'd'>): number {
  return s.rows * Math.ceil(s.d / 4) * 16 + s.rows * (DECODE_BK + 1) * 4 + 3 * s.rows * 4;
}

/**
 * The decode regime (host.ts tiledForwardWebGpu takes the decode kernel there): plain softmax
 * (no sinks, score mods, mask, rab, permutation, block sparsity or mask mod), neither tensor
 * cores nor explicit forward tiles asked for (those select the generic forward), at least one
 * query row, group x maxSeqQ <= 64 rows per kv head (so one workgroup
 * stages all of them), and the kernel's workgroup memory within the device's limit.
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
  if (n.kind !== 'softmax' || n.sinks !== undefined) return false;
  if (hooks.scoreMods.length > 0 || hooks.mask || hooks.rab || hooks.permute) return false;
  if (p.blockSparse !== undefined || p.maskMod !== undefined) return false;
  if (p.maxSeqQ < 1 || p.maxSeqQ > DECODE_MAX_NQ || p.group * p.maxSeqQ > DECODE_MAX_ROWS)
    return false;
  return decodeWorkgroupBytes({ rows: decodeRows(p), d: p.d }) <= maxWorkgroupBytes;
}

const UNIFORMS: WgslBinding = { name: 'P', kind: 'uniform', type: 'Params' };
const AUX: WgslBinding = { name: 'aux', kind: 'read', type: 'array<u32>' };

/** The uniform fields the partition adds after the hooks' (as the generic forward's). */
export function decodeScheduleFields(partition: DecodePartition): readonly UniformField[] {
  return partition === 'fa2' ? [] : partition === 'splitK' ? [SPLITS_FIELD] : STREAMK_FIELDS;
}

/** 4 elements of a row at element e (column c, a multiple of 4) of width W; zeros past it. */
function load4(name: string, e: string, c: string, width: number, vec: boolean): string {
  if (vec) return `ld4_${name}(${e})`;
  const el = (t: number) => `select(0.0, ld_${name}(${e} + ${t}u), ${c} + ${t}u < ${width}u)`;
  return `vec4<f32>(${el(0)}, ${el(1)}, ${el(2)}, ${el(3)})`;
}

export function decodeShader(spec: DecodeSpec): WgslKernel {
  const { d, dv, rows, partition } = spec;
  const vecD = d % 4 === 0;
  const vecV = dv % 4 === 0;
  const d4 = Math.ceil(d / 4);
  const v4 = Math.ceil(dv / 4);
  const na = Math.ceil((rows * v4) / DECODE_BK);
  const partial = partition !== 'fa2';
  const bindings: WgslBinding[] = [
    UNIFORMS,
    { name: 'q', kind: 'read', type: { dtype: spec.dtype, vec: vecD } },
    { name: 'k', kind: 'read', type: { dtype: spec.dtype, vec: vecD } },
    { name: 'v', kind: 'read', type: { dtype: spec.dtype, vec: vecV } },
    AUX,
    ...(partial
      ? ([
          { name: 'pstat', kind: 'storage', type: 'array<vec2<f32>>' },
          { name: 'pacc', kind: 'storage', type: { dtype: 'f32', vec: vecV } },
        ] as const)
      : ([
          { name: 'o', kind: 'storage', type: { dtype: spec.dtype, vec: vecV } },
          { name: 'lse', kind: 'storage', type: 'array<f32>' },
        ] as const)),
    ...spec.hooks.bindings,
  ];
  const row = (t: string) => (spec.paged ? `pg_row(b, ${t})` : `(${t})`);
  // LSE in natural units rounded as the backward's prob() expects (shaders.ts LSE_OF).
  const lseOf = `bitcast<f32>(bitcast<u32>(m * LN2) ^ (P.negInf ^ 0xff800000u)) + log(l)`;
  const store = partial
    ? `st_pacc((li * P.splits + split) * P.dv + c, acc[a], min(4u, P.dv - c));`
    : `st_o(b * P.oBatch + hq * P.oHead + (startQ + i) * P.oRow + c, acc[a] * select(1.0 / ls[r], 0.0, ls[r] == 0.0), min(4u, P.dv - c));`;
  const stat = partial
    ? `pstat[li * P.splits + split] = vec2<f32>(m, l);`
    : `lse[li] = select(${lseOf}, bitcast<f32>(P.negInf), l == 0.0);`;
  const piece = `
  let startQ = aux[4u * b];
  let startK = aux[4u * b + 1u];
  let nq = aux[4u * b + 2u];
  let nk = aux[4u * b + 3u];
  let off = i32(nk) - i32(nq);
  let R = P.group * nq;
  let kB = b * P.kBatch + hk * P.kHead + startK * P.kRow;
  let vB = b * P.vBatch + hk * P.vHead + startK * P.vRow;
  // Stage the group's rows (row r: query head hk group + r / nq, query row r % nq), pre-scaled
  // into log2 units.
  for (var e = lid; e < R * D4; e += BK) {
    let r = e / D4;
    let c = (e % D4) * 4u;
    let hq = hk * P.group + r / nq;
    let qE = b * P.qBatch + hq * P.qHead + (startQ + r % nq) * P.qRow + c;
    qs[e] = ${load4('q', 'qE', 'c', d, vecD)} * P.scaleLog2;
  }
  if (lid < RM) { ms[lid] = M0; ls[lid] = 0.0; }
  var acc: array<vec4<f32>, NA>;
  for (var a = 0u; a < NA; a++) { acc[a] = vec4<f32>(0.0); }
  workgroupBarrier();
  for (var ct = ctBegin; ct < ctEnd; ct++) {
    let c0 = ct * BK;
    let t = c0 + lid;
    var kr: array<vec4<f32>, D4>;
    if (t < nk) {
      let kE = kB + ${row('t')} * P.kRow;
      for (var c4 = 0u; c4 < D4; c4++) { kr[c4] = ${load4('k', 'kE + c4 * 4u', 'c4 * 4u', d, vecD)}; }
    }
    for (var r = 0u; r < R; r++) {
      var s = 0.0;
      for (var c4 = 0u; c4 < D4; c4++) { s += dot(qs[r * D4 + c4], kr[c4]); }
      let i = i32(r % nq);
      let ok = t < nk && i32(t) >= key_lo(i, off, i32(nk)) && i32(t) < key_hi(i, off, i32(nk));
      ps[r * PS + lid] = select(NEG, s, ok);
    }
    workgroupBarrier();
    if (lid < R) {
      var mx = ms[lid];
      for (var j = 0u; j < BK; j++) { mx = max(mx, ps[lid * PS + j]); }
      let alpha = exp2(ms[lid] - mx);
      var sum = 0.0;
      for (var j = 0u; j < BK; j++) {
        let pj = exp2(ps[lid * PS + j] - mx);
        ps[lid * PS + j] = pj;
        sum += pj;
      }
      ls[lid] = ls[lid] * alpha + sum;
      ms[lid] = mx;
      al[lid] = alpha;
    }
    workgroupBarrier();
    // Keys past nk are not read (their P is 0, but their bytes are not K/V).
    let jEnd = min(BK, nk - min(c0, nk));
    for (var a = 0u; a < NA; a++) {
      let e = lid + a * BK;
      let r = e / V4;
      if (r < R) {
        let c = (e % V4) * 4u;
        var x = acc[a] * al[r];
        for (var j = 0u; j < jEnd; j++) {
          let vE = vB + ${row('c0 + j')} * P.vRow + c;
          x += ps[r * PS + j] * ${load4('v', 'vE', 'c', dv, vecV)};
        }
        acc[a] = x;
      }
    }
    workgroupBarrier();
  }
  for (var a = 0u; a < NA; a++) {
    let e = lid + a * BK;
    let r = e / V4;
    if (r < R) {
      let c = (e % V4) * 4u;
      let hq = hk * P.group + r / nq;
      let i = r % nq;
      let li = b * P.lBatch + hq * P.lHead + startQ + i;
      ${store}
    }
  }
  if (lid < R) {
    let r = lid;
    let hq = hk * P.group + r / nq;
    let li = b * P.lBatch + hq * P.lHead + startQ + r % nq;
    let m = ms[r];
    let l = ls[r];
    ${stat}
  }
  // The next piece's first writes to workgroup memory come after this one's last reads.
  workgroupBarrier();`;
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
  const code = `${paramsStruct([...spec.hooks.uniforms, ...decodeScheduleFields(partition)])}
${halfCodec(spec.dtype)}
${declareBindings(bindings)}
const BK = ${DECODE_BK}u;
const PS = ${DECODE_BK + 1}u;
const RM = ${rows}u;
const D4 = ${d4}u;
const V4 = ${v4}u;
const NA = ${na}u;
const NEG = -3.0e38;
const M0 = -1.0e38;
const LN2 = 0.6931471805599453;
var<workgroup> qs: array<vec4<f32>, ${rows * d4}>;
var<workgroup> ps: array<f32, ${rows * (DECODE_BK + 1)}>;
var<workgroup> ms: array<f32, ${rows}>;
var<workgroup> ls: array<f32, ${rows}>;
var<workgroup> al: array<f32, ${rows}>;
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

@compute @workgroup_size(${DECODE_BK})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {${main}
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
