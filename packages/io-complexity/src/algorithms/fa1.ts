import { type IOProblem, requireDense, resolveProblem, type TileBlocks } from '../problem.js';
import {
  checkOptions,
  forBlocks,
  result,
  type SimulateOptions,
  type SimulationResult,
  setupInputs,
  tileBlocks,
} from './common.js';

/**
 * FlashAttention forward, Algorithm 1 of Dao et al. (2022), line by line: O = 0, l = 0,
 * m = -inf are initialised in slow memory (line 2); the outer loop loads K_j, V_j (line 6);
 * the inner loop loads Q_i, O_i, l_i, m_i (line 8), computes S_ij, m~_ij, P~_ij, l~_ij,
 * m_i^new, l_i^new on chip (lines 9-11) and writes O_i, l_i, m_i back (lines 12-13).
 * Fast memory holds K_j, V_j, Q_i, O_i, l_i, m_i, S_ij (P~_ij overwrites it) and the four
 * row vectors m~, l~, m^new, l^new: Bc (d + dv) + Br (d + dv + 6) + Br Bc elements.
 * Default blocks: the paper's Bc = ceil(M / 4d), Br = min(Bc, d), shrunk until they fit.
 */
export function simulateFa1(
  problem: IOProblem,
  options: SimulateOptions<TileBlocks> = {},
): SimulationResult {
  checkOptions(options);
  const p = resolveProblem(problem);
  requireDense(p, 'fa1');
  const { br, bc } = tileBlocks('fa1', p, options.blocks);
  const { N, d, dv } = p;
  const data = options.data;
  const { mem, compute, scale, Q, K, V } = setupInputs(p, data);
  const O = mem.declare('O', N, dv);
  const L = mem.declare('l', N, 1);
  const Mx = mem.declare('m', N, 1);

  const kb = mem.alloc('K_j', bc * d);
  const vb = mem.alloc('V_j', bc * dv);
  const qb = mem.alloc('Q_i', br * d);
  const ob = mem.alloc('O_i', br * dv);
  const lb = mem.alloc('l_i', br);
  const mb = mem.alloc('m_i', br);
  const sb = mem.alloc('S_ij', br * bc);
  const mt = mem.alloc('m~_ij', br);
  const lt = mem.alloc('l~_ij', br);
  const mn = mem.alloc('m_i^new', br);
  const ln = mem.alloc('l_i^new', br);

  // Line 2: the running statistics start in slow memory.
  if (compute) {
    ob.data!.fill(0);
    lb.data!.fill(0);
    mb.data!.fill(Number.NEGATIVE_INFINITY);
  }
  forBlocks(N, br, (r0, rows) => {
    mem.storeTile(O, { row: r0, rows, col: 0, cols: dv }, ob);
    mem.store(L, { start: r0, count: rows }, lb);
    mem.store(Mx, { start: r0, count: rows }, mb);
  });

  forBlocks(N, bc, (c0, cols) => {
    mem.loadTile(K, { row: c0, rows: cols, col: 0, cols: d }, kb);
    mem.loadTile(V, { row: c0, rows: cols, col: 0, cols: dv }, vb);
    forBlocks(N, br, (r0, rows) => {
      mem.loadTile(Q, { row: r0, rows, col: 0, cols: d }, qb);
      mem.loadTile(O, { row: r0, rows, col: 0, cols: dv }, ob);
      mem.load(L, { start: r0, count: rows }, lb);
      mem.load(Mx, { start: r0, count: rows }, mb);
      if (compute) {
        const q = qb.data!;
        const k = kb.data!;
        const v = vb.data!;
        const o = ob.data!;
        const s = sb.data!;
        for (let r = 0; r < rows; r++) {
          let rowMax = Number.NEGATIVE_INFINITY;
          for (let c = 0; c < cols; c++) {
            let acc = 0;
            for (let t = 0; t < d; t++) acc += q[r * d + t]! * k[c * d + t]!;
            s[r * cols + c] = acc * scale;
            rowMax = Math.max(rowMax, acc * scale);
          }
          mt.data![r] = rowMax;
          let rowSum = 0;
          for (let c = 0; c < cols; c++)
            rowSum += s[r * cols + c] = Math.exp(s[r * cols + c]! - rowMax);
          lt.data![r] = rowSum;
          const mNew = Math.max(mb.data![r]!, rowMax);
          const oldScale = Math.exp(mb.data![r]! - mNew);
          const tileScale = Math.exp(rowMax - mNew);
          const lNew = oldScale * lb.data![r]! + tileScale * rowSum;
          mn.data![r] = mNew;
          ln.data![r] = lNew;
          // Line 12: O_i <- diag(l^new)^-1 (diag(l_i) e^{m_i - m^new} O_i + e^{m~ - m^new} P~_ij V_j).
          for (let t = 0; t < dv; t++) {
            let pv = 0;
            for (let c = 0; c < cols; c++) pv += s[r * cols + c]! * v[c * dv + t]!;
            o[r * dv + t] = (lb.data![r]! * oldScale * o[r * dv + t]! + tileScale * pv) / lNew;
          }
        }
      }
      mem.storeTile(O, { row: r0, rows, col: 0, cols: dv }, ob);
      mem.store(L, { start: r0, count: rows }, ln);
      mem.store(Mx, { start: r0, count: rows }, mn);
    });
  });
  mem.free(kb, vb, qb, ob, lb, mb, sb, mt, lt, mn, ln);
  if (!compute) return result(mem);
  const lse = new Float64Array(N);
  for (let i = 0; i < N; i++) lse[i] = Mx.data![i]! + Math.log(L.data![i]!);
  return result(mem, { o: O.data!, lse });
}
