import { bandAllows } from '../mask.js';
import { type IOProblem, resolveProblem, type TileBlocks } from '../problem.js';
import {
  type BackwardData,
  checkArray,
  checkOptions,
  forBlocks,
  forQueryBlocks,
  result,
  type SimulateOptions,
  type SimulationResult,
  setupInputs,
  tileBlocks,
} from './common.js';

/**
 * FlashAttention-2 backward (Dao 2023, Algorithm 2). First D = rowsum(dO o O) is computed block
 * by block and written (line 4) and dQ = 0 is initialised in slow memory (line 3). The outer
 * loop keeps K_j, V_j and the accumulators dK_j, dV_j on chip; for every query block it loads
 * Q_i, dO_i, dQ_i, L_i, D_i, recomputes P_ij = exp(S_ij - L_i), accumulates dV_j, dK_j and
 * writes dQ_i back. O_i, listed among line 9's loads, is not loaded: once D is known nothing in
 * the loop reads it. Fast memory holds K_j, V_j, dK_j, dV_j, Q_i, dO_i, dQ_i, L_i, D_i, the P_ij
 * tile and the dP_ij tile (dS_ij overwrites it): 2 Bc (d + dv) + Br (2d + dv + 2) + 2 Br Bc.
 * With a band (`causal` / `window`), query blocks with no allowed pair against K_j under
 * spec.ts's mask rule are skipped (nothing loaded or written back); partial tiles zero P_ij.
 */
export function simulateFa2Backward(
  problem: IOProblem,
  options: SimulateOptions<TileBlocks, BackwardData> = {},
): SimulationResult {
  checkOptions(options);
  const p = resolveProblem(problem);
  const { br, bc } = tileBlocks('fa2-backward', p, options.blocks);
  const { N, d, dv, masked } = p;
  const data = options.data;
  const { mem, compute, scale, Q, K, V } = setupInputs(p, data);
  const O = mem.declare('O', N, dv, data && checkArray(data, 'o', N * dv));
  const LSE = mem.declare('L', N, 1, data && checkArray(data, 'lse', N));
  const dO = mem.declare('dO', N, dv, data && checkArray(data, 'dO', N * dv));
  const D = mem.declare('D', N, 1);
  const dQ = mem.declare('dQ', N, d);
  const dK = mem.declare('dK', N, d);
  const dV = mem.declare('dV', N, dv);

  // Line 4: D_i = rowsum(dO_i o O_i).
  {
    const gb = mem.alloc('dO_i', br * dv);
    const ob = mem.alloc('O_i', br * dv);
    const db = mem.alloc('D_i', br);
    forBlocks(N, br, (r0, rows) => {
      mem.loadTile(dO, { row: r0, rows, col: 0, cols: dv }, gb);
      mem.loadTile(O, { row: r0, rows, col: 0, cols: dv }, ob);
      if (compute) {
        for (let r = 0; r < rows; r++) {
          let acc = 0;
          for (let t = 0; t < dv; t++) acc += gb.data![r * dv + t]! * ob.data![r * dv + t]!;
          db.data![r] = acc;
        }
      }
      mem.store(D, { start: r0, count: rows }, db);
    });
    mem.free(gb, ob, db);
  }

  const kb = mem.alloc('K_j', bc * d);
  const vb = mem.alloc('V_j', bc * dv);
  const dkb = mem.alloc('dK_j', bc * d);
  const dvb = mem.alloc('dV_j', bc * dv);
  const qb = mem.alloc('Q_i', br * d);
  const gb = mem.alloc('dO_i', br * dv);
  const dqb = mem.alloc('dQ_i', br * d);
  const lb = mem.alloc('L_i', br);
  const db = mem.alloc('D_i', br);
  const pb = mem.alloc('P_ij', br * bc);
  const sb = mem.alloc('dP_ij', br * bc);

  // Line 3: dQ = 0 in slow memory, since every key block adds into it.
  if (compute) dqb.data!.fill(0);
  forBlocks(N, br, (r0, rows) => mem.storeTile(dQ, { row: r0, rows, col: 0, cols: d }, dqb));

  forBlocks(N, bc, (c0, cols) => {
    mem.loadTile(K, { row: c0, rows: cols, col: 0, cols: d }, kb);
    mem.loadTile(V, { row: c0, rows: cols, col: 0, cols: dv }, vb);
    if (compute) {
      dkb.data!.fill(0);
      dvb.data!.fill(0);
    }
    // Only the query blocks the band lets see these keys (all when dense): tileMasked's rule.
    forQueryBlocks(p, c0, cols, br, (r0, rows) => {
      mem.loadTile(Q, { row: r0, rows, col: 0, cols: d }, qb);
      mem.loadTile(dO, { row: r0, rows, col: 0, cols: dv }, gb);
      mem.loadTile(dQ, { row: r0, rows, col: 0, cols: d }, dqb);
      mem.load(LSE, { start: r0, count: rows }, lb);
      mem.load(D, { start: r0, count: rows }, db);
      if (compute) {
        const q = qb.data!;
        const k = kb.data!;
        const v = vb.data!;
        const g = gb.data!;
        const P = pb.data!;
        const dS = sb.data!;
        for (let r = 0; r < rows; r++) {
          for (let c = 0; c < cols; c++) {
            let s = 0;
            for (let t = 0; t < d; t++) s += q[r * d + t]! * k[c * d + t]!;
            P[r * cols + c] =
              masked && !bandAllows(p, r0 + r, c0 + c) ? 0 : Math.exp(s * scale - lb.data![r]!);
            let dp = 0;
            for (let t = 0; t < dv; t++) dp += g[r * dv + t]! * v[c * dv + t]!;
            dS[r * cols + c] = P[r * cols + c]! * (dp - db.data![r]!);
          }
        }
        for (let c = 0; c < cols; c++) {
          for (let r = 0; r < rows; r++) {
            const w = P[r * cols + c]!;
            const ds = dS[r * cols + c]! * scale;
            for (let t = 0; t < dv; t++) dvb.data![c * dv + t]! += w * g[r * dv + t]!;
            for (let t = 0; t < d; t++) {
              dkb.data![c * d + t]! += ds * q[r * d + t]!;
              dqb.data![r * d + t]! += ds * k[c * d + t]!;
            }
          }
        }
      }
      mem.storeTile(dQ, { row: r0, rows, col: 0, cols: d }, dqb);
    });
    mem.storeTile(dK, { row: c0, rows: cols, col: 0, cols: d }, dkb);
    mem.storeTile(dV, { row: c0, rows: cols, col: 0, cols: dv }, dvb);
  });
  mem.free(kb, vb, dkb, dvb, qb, gb, dqb, lb, db, pb, sb);
  return result(mem, compute ? { dq: dQ.data!, dk: dK.data!, dv: dV.data! } : undefined);
}
