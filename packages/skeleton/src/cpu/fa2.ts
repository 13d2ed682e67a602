import { type AttentionProblem, kBase, keyRange, lseBase, qBase } from '@attnkit/attention';
import { allocF32, allocI32 } from './alloc.js';
import { applyMaskMod, applyScoreMods, CPU_SOFTMAX, type CpuHooks } from './scores.js';
import { classifyTile, FULL, gemm, needsMaskTest, SKIP, stageRows, tileRowRanges } from './tile.js';

/**
 * The tiled forward, FlashAttention-2 loop order (Dao 2023, Algorithm 1), parameterised by the
 * hooks. Outer loop over Q tiles, inner over the K/V tiles the Q tile can see (the causal /
 * window band, block sparsity and the mask mod's block mask skip the rest). Per tile:
 *   S = scale Q K^T  ->  score mods (in order)  ->  mask-mod element test (block value 1 only)
 *   ->  weights  ->  acc += W V.
 * softmax: the online softmax keeps (m, l) and an unnormalised accumulator per row and divides
 *   by l once at the end (Sec. 3.1.1), rescaling the accumulator only when the row maximum
 *   grows; sinks join l at the end as e^(sink - m). sigmoid: W = sigmoid(S + bias[b]), no row
 *   statistics, O = acc. Tiles without mods or element tests run no per-element hook code.
 * Q, K, V: decoded inputs in the problem's layout; O (and LSE for softmax) are written completely.
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
  const { d, dv, qRow, kRow, vRow, oRow, scale, group } = p;
  const { sigmoid: sig, mods, sinks } = hooks;
  const hasMods = mods.length > 0;
  const maskMod = p.maskMod;
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
    const bias = sig ? hooks.bias![b]! : 0;
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
          if (hasMods) applyScoreMods(mods, p, b, h, q0, rows, k0, s, bk, lo, hi, undefined);
          if (maskMod && needsMaskTest(p, b, h, q0, k0)) {
            applyMaskMod(maskMod, b, h, q0, rows, k0, s, bk, lo, hi, undefined);
          }
          if (sig) {
            for (let r = 0; r < rows; r++) {
              const so = r * bk;
              const jlo = lo[r]!;
              const jhi = hi[r]!;
              s.fill(0, so, so + jlo);
              s.fill(0, so + Math.max(jlo, jhi), so + cols);
              for (let j = so + jlo, e = so + jhi; j < e; j++) {
                // sigmoid(x) without overflow: exp sees -|x| only.
                const x = s[j]! + bias;
                if (x >= 0) {
                  s[j] = 1 / (1 + Math.exp(-x));
                } else {
                  const ex = Math.exp(x);
                  s[j] = ex / (1 + ex);
                }
              }
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
                // Every key of this tile masked (mask mod, or a mod giving -inf): weight 0.
                s.fill(0, so + jlo, so + jhi);
                continue;
              }
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
          }
          gemm(s, 0, bk, 1, vt, 0, dv, 1, acc, 0, dv, rows, dv, cols);
        }
        if (sig) {
          for (let r = 0; r < rows; r++) {
            const oo = oBase0 + (q0 + r) * oRow;
            const ao = r * dv;
            for (let c = 0; c < dv; c++) O[oo + c] = acc[ao + c]!;
          }
          continue;
        }
        const sink = sinks === undefined ? undefined : sinks[h]!;
        for (let r = 0; r < rows; r++) {
          const oo = oBase0 + (q0 + r) * oRow;
          const ao = r * dv;
          let mr = m[r]!;
          let lr = l[r]!;
          let mul = 1;
          if (sink !== undefined) {
            // The sink joins the row's normalisation with a zero value vector.
            const mF = Math.max(mr, sink);
            mul = lr > 0 ? Math.exp(mr - mF) : 0;
            lr = lr * mul + Math.exp(sink - mF);
            mr = mF;
          }
          if (lr > 0) {
            const f = mul / lr;
            for (let c = 0; c < dv; c++) O[oo + c] = acc[ao + c]! * f;
            LSE![lBase0 + q0 + r] = mr + Math.log(lr);
          } else {
            O.fill(0, oo, oo + dv);
            LSE![lBase0 + q0 + r] = Number.NEGATIVE_INFINITY;
          }
        }
      }
    }
  }
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
