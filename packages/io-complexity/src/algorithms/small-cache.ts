import { defaultBlocks } from '../closed-form.js';
import {
  checkSmallCacheBlocks,
  type IOProblem,
  requireDense,
  resolveProblem,
  type SmallCacheBlocks,
} from '../problem.js';
import {
  checkOptions,
  checkSimulationCounts,
  forBlocks,
  result,
  type SimulateOptions,
  type SimulationResult,
  setupInputs,
} from './common.js';

/**
 * Attention for a small cache (M < d^2), after Saha & Ye (2024): when a row of K does not fit
 * beside a useful query block, FlashAttention's N^2 d^2 / M loses to computing both products
 * as I/O-optimal matrix multiplications (Hong & Kung 1981): square t x t output tiles stay in
 * fast memory while the inner dimension streams through in chunks, so each product costs
 * ~ 2 (rows x cols x inner) / t reads with t ~ sqrt(M), i.e. O(N^2 d / sqrt(M)) in all.
 *
 * 1. S = QK^T / sqrt(d) tile by tile (d streamed `chunk` columns at a time); the row max and
 *    sum of softmax are kept online beside each row tile; S, then the statistics, are written.
 * 2. O = softmax(S) V tile by tile (t query rows x t value columns, keys streamed `chunk` at a
 *    time): each S chunk is turned into P = exp(S - m) / l as it is loaded.
 * S is written once and read once per value tile: N^2 (1 + ceil(dv / t)), below N^2 d / sqrt(M).
 */
export function simulateSmallCache(
  problem: IOProblem,
  options: SimulateOptions<SmallCacheBlocks> = {},
): SimulationResult {
  checkOptions(options);
  const p = resolveProblem(problem);
  requireDense(p, 'small-cache');
  const blocks =
    options.blocks === undefined
      ? defaultBlocks('small-cache', p)
      : checkSmallCacheBlocks(options.blocks);
  checkSimulationCounts('small-cache', p, blocks);
  const { N, d, dv } = p;
  const t = Math.min(blocks.tile, N);
  const tv = Math.min(blocks.tile, dv);
  const cd = Math.min(blocks.chunk, d);
  const ck = Math.min(blocks.chunk, N);
  const data = options.data;
  const { mem, compute, scale, Q, K, V } = setupInputs(p, data);
  const S = mem.declare('S', N, N);
  const Mx = mem.declare('m', N, 1);
  const L = mem.declare('l', N, 1);
  const O = mem.declare('O', N, dv);

  // 1. S tiles and the online softmax statistics of each row tile.
  {
    const sb = mem.alloc('S tile', t * t);
    const qs = mem.alloc('Q slice', t * cd);
    const ks = mem.alloc('K slice', t * cd);
    const mb = mem.alloc('m rows', t);
    const lb = mem.alloc('l rows', t);
    forBlocks(N, t, (r0, rows) => {
      if (compute) {
        mb.data!.fill(Number.NEGATIVE_INFINITY);
        lb.data!.fill(0);
      }
      forBlocks(N, t, (c0, cols) => {
        if (compute) sb.data!.fill(0);
        forBlocks(d, cd, (k0, w) => {
          mem.loadTile(Q, { row: r0, rows, col: k0, cols: w }, qs);
          mem.loadTile(K, { row: c0, rows: cols, col: k0, cols: w }, ks);
          if (!compute) return;
          const s = sb.data!;
          for (let r = 0; r < rows; r++) {
            for (let c = 0; c < cols; c++) {
              let acc = s[r * cols + c]!;
              for (let x = 0; x < w; x++) acc += qs.data![r * w + x]! * ks.data![c * w + x]!;
              s[r * cols + c] = acc;
            }
          }
        });
        if (compute) {
          const s = sb.data!;
          for (let r = 0; r < rows; r++) {
            let mNew = mb.data![r]!;
            for (let c = 0; c < cols; c++) mNew = Math.max(mNew, (s[r * cols + c]! *= scale));
            let l = lb.data![r]! * Math.exp(mb.data![r]! - mNew);
            for (let c = 0; c < cols; c++) l += Math.exp(s[r * cols + c]! - mNew);
            mb.data![r] = mNew;
            lb.data![r] = l;
          }
        }
        mem.storeTile(S, { row: r0, rows, col: c0, cols }, sb);
      });
      mem.store(Mx, { start: r0, count: rows }, mb);
      mem.store(L, { start: r0, count: rows }, lb);
    });
    mem.free(sb, qs, ks, mb, lb);
  }

  // 2. O = P V with P recovered from S and the statistics on load.
  {
    const ob = mem.alloc('O tile', t * tv);
    const ps = mem.alloc('P slice', t * ck);
    const vs = mem.alloc('V slice', ck * tv);
    const mb = mem.alloc('m rows', t);
    const lb = mem.alloc('l rows', t);
    forBlocks(N, t, (r0, rows) => {
      forBlocks(dv, tv, (v0, cols) => {
        mem.load(Mx, { start: r0, count: rows }, mb);
        mem.load(L, { start: r0, count: rows }, lb);
        if (compute) ob.data!.fill(0);
        forBlocks(N, ck, (k0, w) => {
          mem.loadTile(S, { row: r0, rows, col: k0, cols: w }, ps);
          mem.loadTile(V, { row: k0, rows: w, col: v0, cols }, vs);
          if (!compute) return;
          const P = ps.data!;
          const o = ob.data!;
          for (let r = 0; r < rows; r++) {
            const m = mb.data![r]!;
            const l = lb.data![r]!;
            for (let x = 0; x < w; x++) {
              const pr = Math.exp(P[r * w + x]! - m) / l;
              for (let c = 0; c < cols; c++) o[r * cols + c]! += pr * vs.data![x * cols + c]!;
            }
          }
        });
        mem.storeTile(O, { row: r0, rows, col: v0, cols }, ob);
      });
    });
    mem.free(ob, ps, vs, mb, lb);
  }
  if (!compute) return result(mem);
  const lse = new Float64Array(N);
  for (let i = 0; i < N; i++) lse[i] = Mx.data![i]! + Math.log(L.data![i]!);
  return result(mem, { o: O.data!, lse });
}
