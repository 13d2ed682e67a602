import { bandAllows } from '../mask.js';
import { type IOProblem, resolveProblem, type TileBlocks } from '../problem.js';
import {
  checkOptions,
  forBlocks,
  forKeyBlocks,
  result,
  type SimulateOptions,
  type SimulationResult,
  setupInputs,
  tileBlocks,
} from './common.js';

/**
 * FlashAttention-2 forward (Dao 2023, Algorithm 1): the outer loop keeps a query block Q_i and
 * its running O_i, l_i, m_i on chip while every K_j, V_j streams past; O_i is rescaled once at
 * the end and written with L_i = m_i + log l_i. Slow memory is read for Q once and for K, V once
 * per query block, and written once for O and L. Fast memory holds Q_i, O_i, m_i, l_i, K_j, V_j
 * and S_ij (P_ij overwrites it): Br (d + dv + 2) + Bc (d + dv) + Br Bc elements. With a band
 * (`causal` / `window`), tiles with no allowed pair under spec.ts's mask rule are skipped: their
 * K_j, V_j are never loaded; partial tiles mask their scores elementwise.
 */
export function simulateFa2(
  problem: IOProblem,
  options: SimulateOptions<TileBlocks> = {},
): SimulationResult {
  checkOptions(options);
  const p = resolveProblem(problem);
  const { br, bc } = tileBlocks('fa2', p, options.blocks);
  const { N, d, dv, masked } = p;
  const data = options.data;
  const { mem, compute, scale, Q, K, V } = setupInputs(p, data);
  const O = mem.declare('O', N, dv);
  const LSE = mem.declare('L', N, 1);

  const qb = mem.alloc('Q_i', br * d);
  const ob = mem.alloc('O_i', br * dv);
  const mb = mem.alloc('m_i', br);
  const lb = mem.alloc('l_i', br);
  const kb = mem.alloc('K_j', bc * d);
  const vb = mem.alloc('V_j', bc * dv);
  const sb = mem.alloc('S_ij', br * bc);

  forBlocks(N, br, (r0, rows) => {
    mem.loadTile(Q, { row: r0, rows, col: 0, cols: d }, qb);
    if (compute) {
      ob.data!.fill(0);
      mb.data!.fill(Number.NEGATIVE_INFINITY);
      lb.data!.fill(0);
    }
    // Only the key blocks the band lets these rows see (all when dense): tileMasked's rule.
    forKeyBlocks(p, r0, rows, bc, (c0, cols) => {
      mem.loadTile(K, { row: c0, rows: cols, col: 0, cols: d }, kb);
      mem.loadTile(V, { row: c0, rows: cols, col: 0, cols: dv }, vb);
      if (!compute) return;
      const q = qb.data!;
      const k = kb.data!;
      const v = vb.data!;
      const o = ob.data!;
      const s = sb.data!;
      for (let r = 0; r < rows; r++) {
        let mNew = mb.data![r]!;
        for (let c = 0; c < cols; c++) {
          let acc = 0;
          for (let t = 0; t < d; t++) acc += q[r * d + t]! * k[c * d + t]!;
          const x =
            masked && !bandAllows(p, r0 + r, c0 + c) ? Number.NEGATIVE_INFINITY : acc * scale;
          s[r * cols + c] = x;
          mNew = Math.max(mNew, x);
        }
        if (mNew === Number.NEGATIVE_INFINITY) continue; // no allowed key of this row so far
        const alpha = Math.exp(mb.data![r]! - mNew);
        let rowSum = 0;
        for (let c = 0; c < cols; c++)
          rowSum += s[r * cols + c] = Math.exp(s[r * cols + c]! - mNew);
        lb.data![r] = alpha * lb.data![r]! + rowSum;
        mb.data![r] = mNew;
        for (let t = 0; t < dv; t++) {
          let pv = 0;
          for (let c = 0; c < cols; c++) pv += s[r * cols + c]! * v[c * dv + t]!;
          o[r * dv + t] = alpha * o[r * dv + t]! + pv;
        }
      }
    });
    if (compute) {
      for (let r = 0; r < rows; r++) {
        const l = lb.data![r]!;
        for (let t = 0; t < dv; t++) ob.data![r * dv + t] = ob.data![r * dv + t]! / l;
        lb.data![r] = mb.data![r]! + Math.log(l);
      }
    }
    mem.storeTile(O, { row: r0, rows, col: 0, cols: dv }, ob);
    mem.store(LSE, { start: r0, count: rows }, lb);
  });
  mem.free(qb, ob, mb, lb, kb, vb, sb);
  return result(mem, compute ? { o: O.data!, lse: LSE.data! } : undefined);
}
