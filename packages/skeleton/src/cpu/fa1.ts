import { type AttentionProblem, kBase, lseBase, permKBase, qBase } from '@attnkit/attention';
import { allocF32, allocI32 } from './alloc.js';
import {
  applyHstuMask,
  applyHstuRab,
  applyMaskMod,
  applyScoreMods,
  CPU_SOFTMAX,
  type CpuHooks,
} from './scores.js';
import {
  allFinite,
  classifyTile,
  FULL,
  gemm,
  needsMaskTest,
  SKIP,
  scatterTile,
  stageTile,
  tileRowRanges,
} from './tile.js';

/**
 * FlashAttention (Dao et al. 2022, Algorithm 1). Outer loop over K/V tiles, inner over Q
 * tiles; every row keeps its running max m and sum l in slow memory and its output row is
 * kept normalised, rescaled at every visit (line 12):
 *   O_i <- diag(l_new)^-1 (diag(l_i) e^(m_i - m_new) O_i + e^(m~ - m_new) P~ V).
 * Kept beside FA2 so the papers' comparison can be reproduced. Softmax hooks only (score mods,
 * the mask mod's element test and sinks as in the FA2 loop); the caller rejects sigmoid.
 * Permuted tiles (hooks.permQ / permK) read the staged rows through the index; with permQ the
 * O rows a Q tile updates are not a strided block, so they are copied into a scratch tile,
 * updated there with the same arithmetic and copied back (bit-identical for the identity).
 */
export function fa1Forward(
  p: AttentionProblem,
  Q: Float32Array,
  K: Float32Array,
  V: Float32Array,
  O: Float32Array,
  LSE: Float32Array,
  bq: number,
  bk: number,
  hooks: CpuHooks = CPU_SOFTMAX,
): void {
  const { d, dv, qRow, kRow, vRow, oRow, scale, group } = p;
  const { mods, sinks, permQ, permK } = hooks;
  const hasMods = mods.length > 0;
  const maskMod = p.maskMod;
  const qt = allocF32(bq * d, 'tile');
  const kt = allocF32(bk * d, 'tile');
  const vt = allocF32(bk * dv, 'tile');
  const s = allocF32(bq * bk, 'tile');
  const lo = allocI32(bq, 'tile');
  // The O rows of a Q tile, when permQ scatters them (else O is updated in place).
  const ot = permQ === undefined ? undefined : allocF32(bq * dv, 'tile');
  const hi = allocI32(bq, 'tile');
  const mRow = allocF32(p.maxSeqQ, 'rows');
  const lRow = allocF32(p.maxSeqQ, 'rows');

  for (let b = 0; b < p.batch; b++) {
    const nq = p.seqQ[b]!;
    const nk = p.seqK[b]!;
    for (let h = 0; h < p.hq; h++) {
      const kvh = Math.floor(h / group);
      const qBase0 = qBase(p, b, h, d);
      const oBase0 = qBase(p, b, h, dv);
      const kBase0 = kBase(p, b, kvh, d);
      const vBase0 = kBase(p, b, kvh, dv);
      const lBase0 = lseBase(p, b, h);
      const kIdx0 = permKBase(p, b, kvh);
      // Line 2: O = 0, l = 0, m = -inf.
      for (let i = 0; i < nq; i++) O.fill(0, oBase0 + i * oRow, oBase0 + i * oRow + dv);
      mRow.fill(Number.NEGATIVE_INFINITY, 0, nq);
      lRow.fill(0, 0, nq);
      for (let k0 = 0; k0 < nk; k0 += bk) {
        const cols = Math.min(bk, nk - k0);
        let staged = false;
        for (let q0 = 0; q0 < nq; q0 += bq) {
          const rows = Math.min(bq, nq - q0);
          const kind = classifyTile(p, b, h, q0, rows, k0, cols);
          if (kind === SKIP) continue;
          if (!staged) {
            stageTile(K, kBase0, kRow, permK, kIdx0, k0, cols, d, kt, 1);
            stageTile(V, vBase0, vRow, permK, kIdx0, k0, cols, dv, vt, 1);
            staged = true;
          }
          tileRowRanges(p, b, q0, rows, k0, cols, kind === FULL, lo, hi);
          stageTile(Q, qBase0, qRow, permQ, lBase0, q0, rows, d, qt, scale);
          // Where this tile's O rows live: O itself (rows q0.., stride oRow) or, permuted, ot.
          let oA = O;
          let oB = oBase0 + q0 * oRow;
          let oS = oRow;
          if (ot !== undefined) {
            stageTile(O, oBase0, oRow, permQ, lBase0, q0, rows, dv, ot, 1);
            oA = ot;
            oB = 0;
            oS = dv;
          }
          s.fill(0, 0, rows * bk);
          gemm(qt, 0, d, 1, kt, 0, 1, d, s, 0, bk, rows, cols, d);
          if (hooks.rab) applyHstuRab(hooks.rab, p, b, h, q0, rows, k0, s, bk, lo, hi);
          if (hasMods) applyScoreMods(mods, p, b, h, q0, rows, k0, s, bk, lo, hi, undefined);
          if (maskMod && needsMaskTest(p, b, h, q0, k0)) {
            applyMaskMod(maskMod, b, h, q0, rows, k0, s, bk, lo, hi, undefined);
          }
          if (hooks.mask)
            applyHstuMask(hooks.mask, b, nq, p.seqK[b]!, q0, rows, k0, s, bk, lo, hi, undefined);
          for (let r = 0; r < rows; r++) {
            const jlo = lo[r]!;
            const jhi = hi[r]!;
            const so = r * bk;
            // Keys outside the row's range get P = 0, so P V below runs over the dense tile.
            s.fill(0, so, so + jlo);
            s.fill(0, so + Math.max(jlo, jhi), so + cols);
            if (jhi <= jlo) continue;
            // Lines 10-11: m~ = rowmax(S), P~ = exp(S - m~), l~ = rowsum(P~).
            let mt = Number.NEGATIVE_INFINITY;
            for (let j = jlo; j < jhi; j++) if (s[so + j]! > mt) mt = s[so + j]!;
            if (mt === Number.NEGATIVE_INFINITY) {
              // Every key of this tile masked for the row: weight 0, statistics unchanged.
              // All-NaN scores also end here (NaN > mt is false): they poison the row.
              for (let j = so + jlo, e = so + jhi; j < e; j++) {
                if (Number.isNaN(s[j])) {
                  lRow[q0 + r] = Number.NaN;
                  oA.fill(Number.NaN, oB + r * oS, oB + r * oS + dv);
                  break;
                }
              }
              s.fill(0, so + jlo, so + jhi);
              continue;
            }
            let lt = 0;
            for (let j = jlo; j < jhi; j++) {
              const e = Math.exp(s[so + j]! - mt);
              s[so + j] = e;
              lt += e;
            }
            const i = q0 + r;
            const mi = mRow[i]!;
            const mNew = Math.max(mt, mi);
            // exp(-inf) = 0 on the first visit, when l_i and O_i are still 0.
            const ei = lRow[i]! * Math.exp(mi - mNew);
            const et = Math.exp(mt - mNew);
            const lNew = ei + et * lt;
            // Line 12, split: O_i *= l_i e^(m_i - m_new) / l_new here, then O += (P~ scaled) V.
            const keep = ei / lNew;
            const oo = oB + r * oS;
            for (let c = oo, e = oo + dv; c < e; c++) oA[c] = oA[c]! * keep;
            const add = et / lNew;
            for (let j = jlo; j < jhi; j++) s[so + j] = s[so + j]! * add;
            mRow[i] = mNew;
            lRow[i] = lNew;
          }
          if (kind !== FULL && !allFinite(vt, cols * dv)) {
            // A non-finite V row some rows do not see: those rows multiply only their keys.
            for (let r = 0; r < rows; r++) {
              const jlo = lo[r]!;
              const jhi = hi[r]!;
              if (jhi > jlo) {
                gemm(
                  s,
                  r * bk + jlo,
                  bk,
                  1,
                  vt,
                  jlo * dv,
                  dv,
                  1,
                  oA,
                  oB + r * oS,
                  oS,
                  1,
                  dv,
                  jhi - jlo,
                );
              }
            }
          } else {
            gemm(s, 0, bk, 1, vt, 0, dv, 1, oA, oB, oS, rows, dv, cols);
          }
          if (ot !== undefined) scatterTile(ot, rows, dv, O, oBase0, oRow, permQ!, lBase0, q0);
        }
      }
      const sink = sinks === undefined ? undefined : sinks[h]!;
      for (let i = 0; i < nq; i++) {
        let li = lRow[i]!;
        let mi = mRow[i]!;
        // Tiled row i's sequence row.
        const at = permQ === undefined ? i : permQ[lBase0 + i]!;
        if (sink !== undefined) {
          // The sink joins l with a zero value vector: O_i *= l_i e^(m_i - m) / l_new.
          const mF = Math.max(mi, sink);
          const kept = li > 0 || Number.isNaN(li) ? li * Math.exp(mi - mF) : 0;
          li = kept + Math.exp(sink - mF);
          mi = mF;
          const f = kept / li;
          const oo = oBase0 + at * oRow;
          for (let c = oo, e = oo + dv; c < e; c++) O[c] = O[c]! * f;
        }
        // li = NaN: a NaN (or +inf) score poisoned the row.
        LSE[lBase0 + at] =
          li > 0 || Number.isNaN(li) ? mi + Math.log(li) : Number.NEGATIVE_INFINITY;
      }
    }
  }
}
