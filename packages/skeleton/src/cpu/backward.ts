import { type AttentionProblem, kBase, lseBase, permKBase, qBase } from '@attnkit/attention';
import { allocF32, allocI32 } from './alloc.js';
import {
  accumulateRabGrad,
  applyHstuMask,
  applyHstuRab,
  applyMaskMod,
  applyScoreMods,
  CPU_SOFTMAX,
  type CpuHooks,
  pointwiseWeights,
} from './scores.js';
import {
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
 * The tiled backward, FlashAttention-2 loop order (Dao 2023, Algorithm 2), parameterised by
 * the hooks. An outer loop over K/V tiles whose dK, dV accumulate in tile-local buffers, and an
 * inner loop over the Q tiles of every query head sharing that kv head (so GQA's sum over the
 * group needs no atomics). Per tile the forward's scores are recomputed, S = scale Q K^T ->
 * score mods -> mask-mod element test, never stored beyond one tile, and
 *   softmax: P = exp(S - LSE), dS = P * (dO V^T - D) with D_i = dO_i . O_i (line 4, a pre-pass);
 *   sigmoid: P = W = sigmoid(S + bias[b]), dS = (dO V^T) * W (1 - W) (no pre-pass, no O/LSE);
 *   silu:    P = W = factor silu(S), dS = (dO V^T) * factor sig(S) (1 + S (1 - sig(S))) (likewise);
 * with score mods dS is multiplied by the product of the mods' derivatives, each at its input;
 *   dV += P^T dO,  dK += scale dS^T Q,  dQ += scale dS K,
 * each a small dense matmul on the tiles (dQ accumulates in its f32 output buffer).
 * All inputs decoded f32 in the problem's layout (O and LSE: softmax only); dQ, dK, dV are
 * written completely.
 * Permuted tiles (hooks.permQ / permK): Q, dO, O, LSE rows are read through permQ and K, V
 * rows through permK; dK, dV rows are written at permK, and a Q tile's dQ rows (not a strided
 * block then) are copied into a scratch tile, accumulated there and copied back.
 * `dBias` (a bias mod with grad, see ../hooks.ts biasGradMod): each tile's dS, the gradient at
 * the score after the scale and the mods' chain rule (0 at masked keys), is added at the bias's
 * element of (b, h, tiled i, tiled j); += sums the broadcast dims in this one thread. Elements no
 * tile reaches (outside every sequence, skipped tiles) keep the caller's zeros.
 * `rabGrad` (hooks.rab with grad, HstuRabHook): the same dS summed per table column into the
 * caller's zeroed float64 accumulators (dPositionTable, dTimestampTable in the tables' shapes).
 */
export function tiledBackward(
  p: AttentionProblem,
  hooks: CpuHooks,
  Q: Float32Array,
  K: Float32Array,
  V: Float32Array,
  O: Float32Array | undefined,
  LSE: Float32Array | undefined,
  dO: Float32Array,
  dQ: Float32Array,
  dK: Float32Array,
  dV: Float32Array,
  bq: number,
  bk: number,
  dBias?: { data: Float32Array; batchStride: number; headStride: number; rowStride: number },
  rabGrad?: { pos: Float64Array | undefined; time: Float64Array | undefined },
): void {
  const { d, dv, qRow, kRow, vRow, oRow, scale, group } = p;
  const { pointwise: pw, factor, mods, permQ, permK } = hooks;
  const hasMods = mods.length > 0;
  const maskMod = p.maskMod;
  const kt = allocF32(bk * d, 'tile');
  const vt = allocF32(bk * dv, 'tile');
  const dka = allocF32(bk * d, 'tile');
  const dva = allocF32(bk * dv, 'tile');
  const qt = allocF32(bq * d, 'tile');
  const gt = allocF32(bq * dv, 'tile');
  const s = allocF32(bq * bk, 'tile');
  const ds = allocF32(bq * bk, 'tile');
  const lo = allocI32(bq, 'tile');
  const hi = allocI32(bq, 'tile');
  // A Q tile's dQ rows, when permQ scatters them (else dQ accumulates in place).
  const dqt = permQ === undefined ? undefined : allocF32(bq * d, 'tile');
  // The chain-rule factor of the score mods (only with mods).
  const gm = hasMods ? allocF32(bq * bk, 'tile') : undefined;
  // The rab's table columns of each pair of the tile, kept for its gradient (with rabGrad).
  const rabCols =
    rabGrad && hooks.rab
      ? { pc: allocI32(bq * bk, 'tile'), tc: allocI32(bq * bk, 'tile') }
      : undefined;
  // D_i = dO_i . O_i per row of the heads of one kv head (softmax only).
  const Dr = pw ? undefined : allocF32(group * p.maxSeqQ, 'rows');
  dQ.fill(0);

  for (let b = 0; b < p.batch; b++) {
    const nq = p.seqQ[b]!;
    const nk = p.seqK[b]!;
    const bias = pw === 'sigmoid' ? hooks.bias![b]! : 0;
    for (let kvh = 0; kvh < p.hkv; kvh++) {
      const kBase0 = kBase(p, b, kvh, d);
      const vBase0 = kBase(p, b, kvh, dv);
      const kIdx0 = permKBase(p, b, kvh);
      for (let g = 0; Dr && g < group; g++) {
        const oBase0 = qBase(p, b, kvh * group + g, dv);
        const lBase0 = lseBase(p, b, kvh * group + g);
        for (let i = 0; i < nq; i++) {
          // D of tiled row i, from its sequence row.
          const oo = oBase0 + (permQ === undefined ? i : permQ[lBase0 + i]!) * oRow;
          let t = 0;
          for (let c = 0; c < dv; c++) t += dO[oo + c]! * O![oo + c]!;
          Dr[g * nq + i] = t;
        }
      }
      for (let k0 = 0; k0 < nk; k0 += bk) {
        const cols = Math.min(bk, nk - k0);
        stageTile(K, kBase0, kRow, permK, kIdx0, k0, cols, d, kt, 1);
        stageTile(V, vBase0, vRow, permK, kIdx0, k0, cols, dv, vt, 1);
        dka.fill(0, 0, cols * d);
        dva.fill(0, 0, cols * dv);
        for (let g = 0; g < group; g++) {
          const h = kvh * group + g;
          const qBase0 = qBase(p, b, h, d);
          const oBase0 = qBase(p, b, h, dv);
          const lBase0 = lseBase(p, b, h);
          for (let q0 = 0; q0 < nq; q0 += bq) {
            const rows = Math.min(bq, nq - q0);
            const kind = classifyTile(p, b, h, q0, rows, k0, cols);
            if (kind === SKIP) continue;
            tileRowRanges(p, b, q0, rows, k0, cols, kind === FULL, lo, hi);
            // Staged as scale * Q: S needs it, and dK_j = sum_i dS_ij (scale q_i).
            stageTile(Q, qBase0, qRow, permQ, lBase0, q0, rows, d, qt, scale);
            stageTile(dO, oBase0, oRow, permQ, lBase0, q0, rows, dv, gt, 1);
            s.fill(0, 0, rows * bk);
            gemm(qt, 0, d, 1, kt, 0, 1, d, s, 0, bk, rows, cols, d);
            // dP = dO V^T.
            ds.fill(0, 0, rows * bk);
            gemm(gt, 0, dv, 1, vt, 0, 1, dv, ds, 0, bk, rows, cols, dv);
            // HSTU's bucketed rab joins the scaled score first (before the mods and masks);
            // additive, so the gradient at z is dS after the mods' chain rule below.
            if (hooks.rab) applyHstuRab(hooks.rab, p, b, h, q0, rows, k0, s, bk, lo, hi, rabCols);
            if (gm) {
              gm.fill(1, 0, rows * bk);
              applyScoreMods(mods, p, b, h, q0, rows, k0, s, bk, lo, hi, gm);
            }
            if (maskMod && needsMaskTest(p, b, h, q0, k0)) {
              applyMaskMod(maskMod, b, h, q0, rows, k0, s, bk, lo, hi, gm);
            }
            if (hooks.mask)
              applyHstuMask(hooks.mask, b, p.seqQ[b]!, p.seqK[b]!, q0, rows, k0, s, bk, lo, hi, gm);
            if (pw) {
              for (let r = 0; r < rows; r++) {
                const so = r * bk;
                const jlo = lo[r]!;
                const jhi = hi[r]!;
                s.fill(0, so, so + jlo);
                s.fill(0, so + Math.max(jlo, jhi), so + cols);
                ds.fill(0, so, so + jlo);
                ds.fill(0, so + Math.max(jlo, jhi), so + cols);
                pointwiseWeights(pw, s, so + jlo, so + jhi, bias, factor, ds);
              }
            } else {
              for (let r = 0; r < rows; r++) {
                const so = r * bk;
                const lse =
                  LSE![lBase0 + (permQ === undefined ? q0 + r : permQ[lBase0 + q0 + r]!)]!;
                // A row without keys has LSE = -inf and no gradient.
                const jlo = lse === Number.NEGATIVE_INFINITY ? 0 : lo[r]!;
                const jhi = lse === Number.NEGATIVE_INFINITY ? 0 : hi[r]!;
                // Masked keys get P = dS = 0, so the products below run over the dense tile.
                s.fill(0, so, so + jlo);
                s.fill(0, so + Math.max(jlo, jhi), so + cols);
                ds.fill(0, so, so + jlo);
                ds.fill(0, so + Math.max(jlo, jhi), so + cols);
                const Di = Dr![g * nq + q0 + r]!;
                for (let j = so + jlo, e = so + jhi; j < e; j++) {
                  // P <= 1 in exact arithmetic: the clamp keeps rounding in s or LSE from
                  // lifting it above (NaN stays NaN through Math.min).
                  const pij = Math.exp(Math.min(s[j]! - lse, 0));
                  s[j] = pij;
                  ds[j] = pij * (ds[j]! - Di);
                }
              }
            }
            if (gm) {
              // Chain rule through the mods (zeros outside the rows' ranges stay zero).
              for (let j = 0, e = rows * bk; j < e; j++) ds[j] = ds[j]! * gm[j]!;
            }
            if (dBias) {
              const db = dBias.data;
              const base = b * dBias.batchStride + h * dBias.headStride + k0;
              for (let r = 0; r < rows; r++) {
                const bo = base + (q0 + r) * dBias.rowStride;
                for (let c = 0, so = r * bk; c < cols; c++) db[bo + c] = db[bo + c]! + ds[so + c]!;
              }
            }
            if (rabGrad && rabCols)
              accumulateRabGrad(
                hooks.rab!,
                h,
                rows,
                ds,
                bk,
                lo,
                hi,
                rabCols,
                rabGrad.pos,
                rabGrad.time,
              );
            // dV += P^T dO, dK += dS^T (scale Q), dQ += dS K (scaled once at the end).
            gemm(s, 0, 1, bk, gt, 0, dv, 1, dva, 0, dv, cols, dv, rows);
            gemm(ds, 0, 1, bk, qt, 0, d, 1, dka, 0, d, cols, d, rows);
            if (dqt === undefined) {
              gemm(ds, 0, bk, 1, kt, 0, d, 1, dQ, qBase0 + q0 * qRow, qRow, rows, d, cols);
            } else {
              stageTile(dQ, qBase0, qRow, permQ, lBase0, q0, rows, d, dqt, 1);
              gemm(ds, 0, bk, 1, kt, 0, d, 1, dqt, 0, d, rows, d, cols);
              scatterTile(dqt, rows, d, dQ, qBase0, qRow, permQ!, lBase0, q0);
            }
          }
        }
        for (let j = 0; j < cols; j++) {
          // Key k0 + j of the tiled order is sequence key permK[kIdx0 + k0 + j].
          const kj = permK === undefined ? k0 + j : permK[kIdx0 + k0 + j]!;
          const ko = kBase0 + kj * kRow;
          const vo = vBase0 + kj * vRow;
          for (let c = 0; c < d; c++) dK[ko + c] = dka[j * d + c]!;
          for (let c = 0; c < dv; c++) dV[vo + c] = dva[j * dv + c]!;
        }
      }
    }
  }
  for (let i = 0; i < dQ.length; i++) dQ[i] = dQ[i]! * scale;
}

/**
 * Plain FlashAttention-2 backward (softmax, no mods): the tiled backward with the softmax
 * hooks. Kept for callers of the pre-hooks API.
 */
export function fa2Backward(
  p: AttentionProblem,
  Q: Float32Array,
  K: Float32Array,
  V: Float32Array,
  O: Float32Array,
  LSE: Float32Array,
  dO: Float32Array,
  dQ: Float32Array,
  dK: Float32Array,
  dV: Float32Array,
  bq: number,
  bk: number,
): void {
  tiledBackward(p, CPU_SOFTMAX, Q, K, V, O, LSE, dO, dQ, dK, dV, bq, bk);
}
