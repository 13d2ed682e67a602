import { softmaxChunk } from '../closed-form.js';
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
 * Standard attention as Algorithm 0 of Dao et al. (2022): S = QK^T / sqrt(d) is written to slow
 * memory, read back for P = softmax(S), P is written, then read again for O = PV. The two
 * products are tiled (blockQ query rows x blockK key rows) so they run for any M; the softmax
 * streams each row of S through a chunk of min(N, M - 2) elements (plus the row max and sum),
 * in one pass when a row fits and in two (statistics, then normalisation) when it does not.
 */
export function simulateStandard(
  problem: IOProblem,
  options: SimulateOptions<TileBlocks> = {},
): SimulationResult {
  checkOptions(options);
  const p = resolveProblem(problem);
  requireDense(p, 'standard');
  const { br, bc } = tileBlocks('standard', p, options.blocks);
  const { N, d, dv } = p;
  const data = options.data;
  const { mem, compute, scale, Q, K, V } = setupInputs(p, data);
  const S = mem.declare('S', N, N);
  const P = mem.declare('P', N, N);
  const O = mem.declare('O', N, dv);

  // 1. S = Q K^T / sqrt(d), one (query block, key block) tile at a time.
  {
    const qb = mem.alloc('Q_i', br * d);
    const kb = mem.alloc('K_j', bc * d);
    const sb = mem.alloc('S_ij', br * bc);
    forBlocks(N, br, (r0, rows) => {
      mem.loadTile(Q, { row: r0, rows, col: 0, cols: d }, qb);
      forBlocks(N, bc, (c0, cols) => {
        mem.loadTile(K, { row: c0, rows: cols, col: 0, cols: d }, kb);
        if (compute) {
          const q = qb.data!;
          const k = kb.data!;
          const s = sb.data!;
          for (let r = 0; r < rows; r++) {
            for (let c = 0; c < cols; c++) {
              let acc = 0;
              for (let t = 0; t < d; t++) acc += q[r * d + t]! * k[c * d + t]!;
              s[r * cols + c] = acc * scale;
            }
          }
        }
        mem.storeTile(S, { row: r0, rows, col: c0, cols }, sb);
      });
    });
    mem.free(qb, kb, sb);
  }

  // 2. P = softmax(S) row by row.
  {
    const chunk = softmaxChunk(N, p.M);
    const row = mem.alloc('S row chunk', chunk);
    const stats = mem.alloc('row max, row sum', 2);
    for (let i = 0; i < N; i++) {
      if (chunk === N) {
        mem.load(S, { start: i * N, count: N }, row);
        if (compute) {
          const x = row.data!;
          let m = Number.NEGATIVE_INFINITY;
          for (let c = 0; c < N; c++) m = Math.max(m, x[c]!);
          let l = 0;
          for (let c = 0; c < N; c++) l += x[c] = Math.exp(x[c]! - m);
          for (let c = 0; c < N; c++) x[c] = x[c]! / l;
        }
        mem.store(P, { start: i * N, count: N }, row);
        continue;
      }
      // Pass 1: online max and sum (Milakov & Gimelshein 2018) over the chunks of the row.
      if (compute) {
        stats.data![0] = Number.NEGATIVE_INFINITY;
        stats.data![1] = 0;
      }
      forBlocks(N, chunk, (c0, n) => {
        mem.load(S, { start: i * N + c0, count: n }, row);
        if (compute) {
          const x = row.data!;
          const st = stats.data!;
          let mc = st[0]!;
          for (let c = 0; c < n; c++) mc = Math.max(mc, x[c]!);
          let l = st[1]! * Math.exp(st[0]! - mc);
          for (let c = 0; c < n; c++) l += Math.exp(x[c]! - mc);
          st[0] = mc;
          st[1] = l;
        }
      });
      // Pass 2: normalise and write P.
      forBlocks(N, chunk, (c0, n) => {
        mem.load(S, { start: i * N + c0, count: n }, row);
        if (compute) {
          const x = row.data!;
          const [m, l] = stats.data!;
          for (let c = 0; c < n; c++) x[c] = Math.exp(x[c]! - m!) / l!;
        }
        mem.store(P, { start: i * N + c0, count: n }, row);
      });
    }
    mem.free(row, stats);
  }

  // 3. O = P V, the output block accumulated in fast memory over the key blocks.
  {
    const ob = mem.alloc('O_i', br * dv);
    const pb = mem.alloc('P_ij', br * bc);
    const vb = mem.alloc('V_j', bc * dv);
    forBlocks(N, br, (r0, rows) => {
      if (compute) ob.data!.fill(0, 0, rows * dv);
      forBlocks(N, bc, (c0, cols) => {
        mem.loadTile(P, { row: r0, rows, col: c0, cols }, pb);
        mem.loadTile(V, { row: c0, rows: cols, col: 0, cols: dv }, vb);
        if (compute) {
          const o = ob.data!;
          const pp = pb.data!;
          const v = vb.data!;
          for (let r = 0; r < rows; r++) {
            for (let c = 0; c < cols; c++) {
              const w = pp[r * cols + c]!;
              for (let t = 0; t < dv; t++) o[r * dv + t] = o[r * dv + t]! + w * v[c * dv + t]!;
            }
          }
        }
      });
      mem.storeTile(O, { row: r0, rows, col: 0, cols: dv }, ob);
    });
    mem.free(ob, pb, vb);
  }
  return result(mem, compute ? { o: O.data! } : undefined);
}
