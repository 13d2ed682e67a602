import {
  type AttentionProblem,
  kBase,
  keyRange,
  keyRow,
  lseBase,
  permKBase,
  qBase,
} from '@attnkit/attention';
import { allocF32, allocI32 } from './alloc.js';
import { int8PV, int8Scores, int8StageQ } from './int8.js';
import { type DecodePiece, piecesByUnit, planDecodePartition } from './partition.js';
import { combinePartials, splitKeyTiles } from './schedule.js';
import {
  applyHstuMask,
  applyHstuRab,
  applyMaskMod,
  applyScoreMods,
  CPU_SOFTMAX,
  type CpuHooks,
  pointwiseWeights,
} from './scores.js';
import {
  allFinite,
  classifyTile,
  FULL,
  gemm,
  needsMaskTest,
  SKIP,
  stageTile,
  tileRowRanges,
} from './tile.js';

/** Scratch and per-(b, h, Q tile) state of the forward, shared by its key-range passes. */
interface ForwardState {
  p: AttentionProblem;
  hooks: CpuHooks;
  K: Float32Array;
  V: Float32Array;
  bq: number;
  bk: number;
  qt: Float32Array;
  kt: Float32Array;
  vt: Float32Array;
  s: Float32Array;
  lo: Int32Array;
  hi: Int32Array;
  /** Partials, one slot per key range: m[slot * bq + r], l[...], acc[(slot * bq + r) * dv]. */
  m: Float32Array;
  l: Float32Array;
  acc: Float32Array;
  // The (b, h, Q tile) in flight.
  b: number;
  h: number;
  kBase0: number;
  vBase0: number;
  /** Offset of (b, kv head)'s slice of hooks.permK (unused without it). */
  kIdx0: number;
  bias: number;
  q0: number;
  rows: number;
}

/**
 * One key-range pass: the partial (m, l, acc) of rows [0, rows) of the staged Q tile over key
 * tiles [t0, t1) into partial slot `slot` (reset first, so an empty range leaves m = -inf,
 * l = 0, acc = 0). The 'band' schedule runs it once over all the band's tiles, 'splitK' once
 * per range, 'streamK' once per piece of the stream-K plan. Per tile:
 *   S = scale Q K^T  ->  score mods (in order)  ->  mask-mod element test (block value 1 only)
 *   ->  weights  ->  acc += W V.
 * softmax: online max/sum, rescaling acc only when the row maximum grows (FA2 Sec. 3.1.1);
 * pointwise (sigmoid: W = sigmoid(S + bias[b]); silu: W = factor silu(S)): acc a plain sum
 * (m, l untouched). Tiles the mask rule skips (block sparsity, the mask mod's block mask) cost
 * nothing; tiles without mods or element tests run no per-element hook code.
 * int8 operands (hooks.operands, SageAttention2): S comes from the Q/K codes and, with V codes,
 * P V from u8-quantized P~ in int32 (int8.ts); the walk, masks and online softmax are these.
 */
function forwardKeyRange(st: ForwardState, slot: number, t0: number, t1: number): void {
  const { p, hooks, K, V, bq, bk, qt, kt, vt, s, lo, hi, m, l, acc } = st;
  const { b, h, kBase0, vBase0, kIdx0, bias, q0, rows } = st;
  const { d, dv, kRow, vRow } = p;
  const { pointwise: pw, factor, mods, permK, operands: ops } = hooks;
  // int8 operands: S from the Q/K codes (int8Scores), P~ V from the V codes when present
  // (int8PV); otherwise (pvBits 32) V is the codec's f32 V on the float path below.
  const intPv = ops?.codec.vCodes !== undefined;
  const hasMods = mods.length > 0;
  const maskMod = p.maskMod;
  const nk = p.seqK[b]!;
  const ms = slot * bq;
  const as = ms * dv;
  m.fill(Number.NEGATIVE_INFINITY, ms, ms + rows);
  l.fill(0, ms, ms + rows);
  acc.fill(0, as, as + rows * dv);
  for (let t = t0; t < t1; t++) {
    const k0 = t * bk;
    const cols = Math.min(bk, nk - k0);
    const kind = classifyTile(p, b, h, q0, rows, k0, cols);
    if (kind === SKIP) continue;
    tileRowRanges(p, b, q0, rows, k0, cols, kind === FULL, lo, hi);
    if (p.paged) {
      // Paged K/V: each key row through the block table (keyRow), read in place from the pool.
      stagePagedRows(p, b, K, kBase0, kRow, k0, cols, d, kt);
      stagePagedRows(p, b, V, vBase0, vRow, k0, cols, dv, vt);
    } else {
      if (!ops) stageTile(K, kBase0, kRow, permK, kIdx0, k0, cols, d, kt, 1);
      if (!intPv) stageTile(V, vBase0, vRow, permK, kIdx0, k0, cols, dv, vt, 1);
    }
    if (ops) {
      int8Scores(ops, b, h, Math.floor(h / p.group), q0, rows, k0, cols, s, bk, lo, hi);
    } else {
      s.fill(0, 0, rows * bk);
      gemm(qt, 0, d, 1, kt, 0, 1, d, s, 0, bk, rows, cols, d);
    }
    // HSTU's bucketed rab joins the scaled score first (before the mods and masks).
    if (hooks.rab) applyHstuRab(hooks.rab, p, b, h, q0, rows, k0, s, bk, lo, hi);
    if (hasMods) applyScoreMods(mods, p, b, h, q0, rows, k0, s, bk, lo, hi, undefined);
    if (maskMod && needsMaskTest(p, b, h, q0, k0)) {
      applyMaskMod(maskMod, b, h, q0, rows, k0, s, bk, lo, hi, undefined);
    }
    if (hooks.mask)
      applyHstuMask(hooks.mask, b, p.seqQ[b]!, nk, q0, rows, k0, s, bk, lo, hi, undefined);
    if (pw) {
      for (let r = 0; r < rows; r++) {
        const so = r * bk;
        const jlo = lo[r]!;
        const jhi = hi[r]!;
        s.fill(0, so, so + jlo);
        s.fill(0, so + Math.max(jlo, jhi), so + cols);
        pointwiseWeights(pw, s, so + jlo, so + jhi, bias, factor);
      }
    } else {
      for (let r = 0; r < rows; r++) {
        const jlo = lo[r]!;
        const jhi = hi[r]!;
        const so = r * bk;
        // Keys outside the row's range get P = 0, so P V below runs over the dense tile.
        s.fill(0, so, so + jlo);
        s.fill(0, so + Math.max(jlo, jhi), so + cols);
        if (jhi <= jlo) continue;
        let mx = Number.NEGATIVE_INFINITY;
        for (let j = jlo; j < jhi; j++) if (s[so + j]! > mx) mx = s[so + j]!;
        if (mx === Number.NEGATIVE_INFINITY) {
          // Every key of this tile masked (mask mod, or a mod giving -inf): weight 0. Scores
          // that are all NaN also end here (NaN > mx is false): they poison the row (l = NaN,
          // so O and LSE come out NaN, as in the float64 reference).
          for (let j = so + jlo, e = so + jhi; j < e; j++) {
            if (Number.isNaN(s[j])) {
              l[ms + r] = Number.NaN;
              break;
            }
          }
          s.fill(0, so + jlo, so + jhi);
          continue;
        }
        const mOld = m[ms + r]!;
        if (mx > mOld) {
          // exp(-inf) = 0 on the first visited tile: nothing to rescale yet.
          const alpha = Math.exp(mOld - mx);
          l[ms + r] = l[ms + r]! * alpha;
          m[ms + r] = mx;
          for (let c = as + r * dv, e = c + dv; c < e; c++) acc[c] = acc[c]! * alpha;
        }
        const mNew = m[ms + r]!;
        let sum = 0;
        for (let j = jlo; j < jhi; j++) {
          const e = Math.exp(s[so + j]! - mNew);
          s[so + j] = e;
          sum += e;
        }
        l[ms + r] = l[ms + r]! + sum;
      }
    }
    if (intPv) {
      int8PV(ops!, b, Math.floor(h / p.group), rows, k0, s, bk, lo, hi, acc, as);
    } else if (kind !== FULL && !allFinite(vt, cols * dv)) {
      // A non-finite V row that some rows of the tile do not see: 0 * NaN would poison them,
      // so those rows multiply only their own key range (rare: checked on partial tiles only).
      for (let r = 0; r < rows; r++) {
        const jlo = lo[r]!;
        const jhi = hi[r]!;
        if (jhi > jlo) {
          gemm(s, r * bk + jlo, bk, 1, vt, jlo * dv, dv, 1, acc, as + r * dv, dv, 1, dv, jhi - jlo);
        }
      }
    } else {
      gemm(s, 0, bk, 1, vt, 0, dv, 1, acc, as, dv, rows, dv, cols);
    }
  }
}

/**
 * Rows [k0, k0 + cols) of sequence b of a paged pool into dst (cols x width): key j is pool row
 * keyRow(p, b, j), so a page's rows are consecutive and each page is found once per run.
 */
function stagePagedRows(
  p: AttentionProblem,
  b: number,
  src: Float32Array,
  base: number,
  stride: number,
  k0: number,
  cols: number,
  width: number,
  dst: Float32Array,
): void {
  const ps = p.paged!.pageSize;
  for (let r = 0; r < cols; ) {
    const j = k0 + r;
    // The run of keys [j, j + n) in j's page: consecutive pool rows.
    const n = Math.min(cols - r, ps - (j % ps));
    let so = base + keyRow(p, b, j) * stride;
    for (let e = r + n; r < e; r++, so += stride) {
      const dOff = r * width;
      for (let c = 0; c < width; c++) dst[dOff + c] = src[so + c]!;
    }
  }
}

/**
 * Writes rows [0, rows) of O (and LSE for softmax) from the (combined) state in slot 0; with
 * hooks.permQ, tiled row q0 + r goes to sequence row permQ[lBase0 + q0 + r].
 * softmax: O = acc / l and LSE = m + log l, the sink (if any) joining l once as e^(sink - m)
 * with a zero value vector; a row without keys or sink gets O = 0, LSE = -inf. pointwise: O = acc.
 */
function finishRows(
  st: ForwardState,
  O: Float32Array,
  LSE: Float32Array | undefined,
  oBase0: number,
  lBase0: number,
): void {
  const { hooks, m, l, acc, rows, q0, h } = st;
  const { dv, oRow } = st.p;
  const pq = hooks.permQ;
  if (hooks.pointwise) {
    for (let r = 0; r < rows; r++) {
      const oo = oBase0 + (pq === undefined ? q0 + r : pq[lBase0 + q0 + r]!) * oRow;
      const ao = r * dv;
      for (let c = 0; c < dv; c++) O[oo + c] = acc[ao + c]!;
    }
    return;
  }
  const sink = hooks.sinks === undefined ? undefined : hooks.sinks[h]!;
  for (let r = 0; r < rows; r++) {
    const i = pq === undefined ? q0 + r : pq[lBase0 + q0 + r]!;
    const oo = oBase0 + i * oRow;
    const ao = r * dv;
    let mr = m[r]!;
    let lr = l[r]!;
    let mul = 1;
    if (sink !== undefined) {
      // The sink joins the row's normalisation with a zero value vector.
      const mF = Math.max(mr, sink);
      mul = lr > 0 || Number.isNaN(lr) ? Math.exp(mr - mF) : 0;
      lr = lr * mul + Math.exp(sink - mF);
      mr = mF;
    }
    // l = NaN: a NaN (or +inf) score poisoned the row; O and LSE come out NaN.
    if (lr > 0 || Number.isNaN(lr)) {
      const f = mul / lr;
      for (let c = 0; c < dv; c++) O[oo + c] = acc[ao + c]! * f;
      LSE![lBase0 + i] = mr + Math.log(lr);
    } else {
      O.fill(0, oo, oo + dv);
      LSE![lBase0 + i] = Number.NEGATIVE_INFINITY;
    }
  }
}

/**
 * Visits every (b, h, Q tile) of the problem in the forward's order (b, then h, then q0) with
 * its band of key tiles [tFirst, tEnd): the tiles between the first row's lower and the last
 * row's upper key bound (block sparsity and the mask mod's block mask skip tiles inside it,
 * per tile, in forwardKeyRange). The one place that order and band are computed: the forward
 * and stream-K's unit list both walk it, so the planner's units are the tiles the loop visits.
 */
function forEachQTile(
  p: AttentionProblem,
  bq: number,
  bk: number,
  visit: (b: number, h: number, q0: number, rows: number, tFirst: number, tEnd: number) => void,
): void {
  for (let b = 0; b < p.batch; b++) {
    const nq = p.seqQ[b]!;
    const nk = p.seqK[b]!;
    for (let h = 0; h < p.hq; h++) {
      for (let q0 = 0; q0 < nq; q0 += bq) {
        const rows = Math.min(bq, nq - q0);
        const kFrom = Math.max(0, keyRange(p, q0, nq, nk)[0]);
        const kTo = Math.min(nk, keyRange(p, q0 + rows - 1, nq, nk)[1]);
        const tFirst = Math.floor(kFrom / bk);
        const tEnd = Math.max(tFirst, Math.ceil(kTo / bk));
        visit(b, h, q0, rows, tFirst, tEnd);
      }
    }
  }
}

/**
 * Stream-K's plan for this call: the units are the (b, h, Q tile)s in forEachQTile order with
 * their band's tile counts, cut among `workers` by planDecodePartition; returned per unit (the
 * fix-up's view), each piece's tiles relative to the unit's tFirst.
 */
function streamKPieces(
  p: AttentionProblem,
  bq: number,
  bk: number,
  workers: number,
): DecodePiece[][] {
  const units: { tiles: number }[] = [];
  forEachQTile(p, bq, bk, (_b, _h, _q0, _rows, tFirst, tEnd) => {
    units.push({ tiles: tEnd - tFirst });
  });
  return piecesByUnit(planDecodePartition({ kind: 'streamK', workers, units }), units.length);
}

/**
 * The tiled forward, FlashAttention-2 loop order (Dao 2023, Algorithm 1), parameterised by the
 * hooks. Outer loop over Q tiles (forEachQTile); for each, the K/V tiles the Q tile can see
 * (the causal / window band between its first row's lower and last row's upper key bound;
 * block sparsity and the mask mod's block mask skip the rest inside) are cut by the schedule
 * into key ranges: one for 'band' (hooks.splits = 1), `splits` contiguous balanced ranges for
 * 'splitK' (splitKeyTiles), and for 'streamK' (hooks.streamKWorkers) the unit's pieces of the
 * stream-K plan over all Q tiles of the call (streamKPieces; zero or more per Q tile).
 * Each range runs forwardKeyRange into its own partial (m, l, acc); combinePartials merges
 * them (associative online-softmax rule; plain sums for the pointwise normalisations; for
 * stream-K this is the fix-up) and finishRows divides by l once and joins the sinks. The
 * ranges are independent (FlashDecoding and LeanAttention run them on different workers);
 * here they run in turn, one Q tile at a time, so only one Q tile's partials are held.
 * Q, K, V: decoded inputs in the problem's layout; O (and LSE for softmax) are written completely.
 * Permuted tiles (hooks.permQ / permK, PermuteHook): Q, K, V rows are staged through the index
 * (stageTile, one branch per tile) and O, LSE rows written through it; every position rule
 * sees the tiled positions, so nothing else changes.
 */
export function tiledForward(
  p: AttentionProblem,
  hooks: CpuHooks,
  Q: Float32Array,
  K: Float32Array,
  V: Float32Array,
  O: Float32Array,
  LSE: Float32Array | undefined,
  bq: number,
  bk: number,
): void {
  const { d, dv, qRow, scale, group } = p;
  const splits = hooks.splits;
  const workers = hooks.streamKWorkers;
  const byUnit = workers === undefined ? undefined : streamKPieces(p, bq, bk, workers);
  // Partial slots: one per key range of a Q tile (stream-K: the most pieces any unit has).
  let slots = splits;
  if (byUnit) for (const pieces of byUnit) slots = Math.max(slots, pieces.length);
  const st: ForwardState = {
    p,
    hooks,
    K,
    V,
    bq,
    bk,
    qt: allocF32(bq * d, 'tile'),
    kt: allocF32(bk * d, 'tile'),
    vt: allocF32(bk * dv, 'tile'),
    s: allocF32(bq * bk, 'tile'),
    lo: allocI32(bq, 'tile'),
    hi: allocI32(bq, 'tile'),
    m: allocF32(slots * bq, 'tile'),
    l: allocF32(slots * bq, 'tile'),
    acc: allocF32(slots * bq * dv, 'tile'),
    b: 0,
    h: 0,
    kBase0: 0,
    vBase0: 0,
    kIdx0: 0,
    bias: 0,
    q0: 0,
    rows: 0,
  };
  const pointwise = hooks.pointwise !== undefined;
  let unit = 0;
  forEachQTile(p, bq, bk, (b, h, q0, rows, tFirst, tEnd) => {
    const kvh = Math.floor(h / group);
    const oBase0 = qBase(p, b, h, dv);
    const lBase0 = lseBase(p, b, h);
    st.b = b;
    st.bias = hooks.pointwise === 'sigmoid' ? hooks.bias![b]! : 0;
    st.h = h;
    st.kBase0 = kBase(p, b, kvh, d);
    st.vBase0 = kBase(p, b, kvh, dv);
    st.kIdx0 = permKBase(p, b, kvh);
    st.q0 = q0;
    st.rows = rows;
    // Folding the scale into the staged Q tile saves a multiply per score.
    // With hooks.permQ the rows come through the index (the LSE layout: slice lBase0).
    if (hooks.operands) int8StageQ(hooks.operands, b, h, q0, rows);
    else stageTile(Q, qBase(p, b, h, d), qRow, hooks.permQ, lBase0, q0, rows, d, st.qt, scale);
    if (byUnit) {
      const pieces = byUnit[unit++]!;
      // No piece (no tiles): the empty range resets slot 0 to m = -inf, l = 0, acc = 0.
      if (pieces.length === 0) forwardKeyRange(st, 0, tFirst, tFirst);
      for (let j = 0; j < pieces.length; j++) {
        forwardKeyRange(st, j, tFirst + pieces[j]!.begin, tFirst + pieces[j]!.end);
      }
      // The fix-up: the pieces of this unit (possibly on different workers) merged in key order.
      combinePartials(pieces.length, rows, bq, dv, pointwise, st.m, st.l, st.acc);
    } else if (splits === 1) {
      forwardKeyRange(st, 0, tFirst, tEnd);
    } else {
      const ranges = splitKeyTiles(tFirst, tEnd - 1, splits);
      for (let r = 0; r < splits; r++) forwardKeyRange(st, r, ranges[r]![0], ranges[r]![1]);
      combinePartials(splits, rows, bq, dv, pointwise, st.m, st.l, st.acc);
    }
    finishRows(st, O, LSE, oBase0, lBase0);
  });
}

/**
 * Plain FlashAttention-2 forward (softmax, no mods): the tiled forward with the softmax hooks.
 * Kept for callers of the pre-hooks API.
 */
export function fa2Forward(
  p: AttentionProblem,
  Q: Float32Array,
  K: Float32Array,
  V: Float32Array,
  O: Float32Array,
  LSE: Float32Array,
  bq: number,
  bk: number,
): void {
  tiledForward(p, CPU_SOFTMAX, Q, K, V, O, LSE, bq, bk);
}
