import { type AttentionProblem, kBase, keyRange, lseBase, qBase } from '@attnkit/attention';
import { allocF32, allocI32 } from './alloc.js';
import { classifyTile, FULL, gemm, SKIP, stageRows, tileRowRanges } from './tile.js';

/**
 * FlashAttention-2 forward (Dao 2023, Algorithm 1). Outer loop over Q tiles, inner over the
 * K/V tiles the Q tile can see; the online softmax keeps (m, l) and an unnormalised output
 * accumulator per row and divides by l once at the end (Sec. 3.1.1), so an inner step only
 * rescales the accumulator when the row maximum grows.
 * Q, K, V: decoded inputs in the problem's layout; O and LSE are written completely.
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
  const { d, dv, qRow, kRow, vRow, oRow, scale, group } = p;
  const qt = allocF32(bq * d, 'tile');
  const kt = allocF32(bk * d, 'tile');
  const vt = allocF32(bk * dv, 'tile');
  const s = allocF32(bq * bk, 'tile');
  const acc = allocF32(bq * dv, 'tile');
  const m = allocF32(bq, 'tile');
  const l = allocF32(bq, 'tile');
  const lo = allocI32(bq, 'tile');
  const hi = allocI32(bq, 'tile');

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
      for (let q0 = 0; q0 < nq; q0 += bq) {
        const rows = Math.min(bq, nq - q0);
        // Folding the scale into the staged Q tile saves a multiply per score.
        stageRows(Q, qBase0 + q0 * qRow, qRow, rows, d, qt, scale);
        m.fill(Number.NEGATIVE_INFINITY, 0, rows);
        l.fill(0, 0, rows);
        acc.fill(0, 0, rows * dv);
        // Only K tiles between the first row's lower and the last row's upper key bound.
        const kFrom = Math.max(0, keyRange(p, q0, nq, nk)[0]);
        const kTo = Math.min(nk, keyRange(p, q0 + rows - 1, nq, nk)[1]);
        for (let k0 = kFrom - (kFrom % bk); k0 < kTo; k0 += bk) {
          const cols = Math.min(bk, nk - k0);
          const kind = classifyTile(p, b, h, q0, rows, k0, cols);
          if (kind === SKIP) continue;
          tileRowRanges(p, b, q0, rows, k0, cols, kind === FULL, lo, hi);
          stageRows(K, kBase0 + k0 * kRow, kRow, cols, d, kt, 1);
          stageRows(V, vBase0 + k0 * vRow, vRow, cols, dv, vt, 1);
          s.fill(0, 0, rows * bk);
          gemm(qt, 0, d, 1, kt, 0, 1, d, s, 0, bk, rows, cols, d);
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
            const mOld = m[r]!;
            if (mx > mOld) {
              // exp(-inf) = 0 on the first visited tile: nothing to rescale yet.
              const alpha = Math.exp(mOld - mx);
              l[r] = l[r]! * alpha;
              m[r] = mx;
              for (let c = r * dv, e = c + dv; c < e; c++) acc[c] = acc[c]! * alpha;
            }
            const mNew = m[r]!;
            let sum = 0;
            for (let j = jlo; j < jhi; j++) {
              const e = Math.exp(s[so + j]! - mNew);
              s[so + j] = e;
              sum += e;
            }
            l[r] = l[r]! + sum;
          }
          gemm(s, 0, bk, 1, vt, 0, dv, 1, acc, 0, dv, rows, dv, cols);
        }
        for (let r = 0; r < rows; r++) {
          const oo = oBase0 + (q0 + r) * oRow;
          const ao = r * dv;
          const lr = l[r]!;
          if (lr > 0) {
            const inv = 1 / lr;
            for (let c = 0; c < dv; c++) O[oo + c] = acc[ao + c]! * inv;
            LSE[lBase0 + q0 + r] = m[r]! + Math.log(lr);
          } else {
            O.fill(0, oo, oo + dv);
            LSE[lBase0 + q0 + r] = Number.NEGATIVE_INFINITY;
          }
        }
      }
    }
  }
}
