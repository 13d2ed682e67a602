import type { NativeAttentionProblem, NativeEngine } from '@attnkit/native';
import { gatherHeads } from './gather.js';
import { type HeadShard, type RowTile, tileKeyLength } from './plan.js';
import type { AllReduceDims, AllReduceJob } from './protocol.js';
import type { TileDevice } from './tile-loop.js';

/**
 * A device on the native engine: its query heads and their kv heads gathered from the shared
 * BHND inputs into its own THD arrays (token-major: a tile's query rows, and a causal tile's
 * key prefix, are then one contiguous range each, so every tile is a THD problem with
 * startQ / seqQ / seqK and no copy), the engine's FA2 forward per tile into its O_p, and the
 * engine's GEMM of the tile's O_p rows [rows, Hp Dv] by W_o's rows of these heads straight into
 * the shared partial slot. The engine's thread pool is per process: P devices in one process
 * share it (ATTNKIT_NUM_THREADS threads), each call a parallel region of its own.
 */

export function createNativeTileDevice(
  engine: NativeEngine,
  job: AllReduceJob,
  shard: HeadShard,
): TileDevice {
  const dims: AllReduceDims = job.dims;
  const { batch, hq, hkv, seqQ, seqK, d, dv, dModel } = dims;
  const hp = shard.headEnd - shard.headStart;
  const hkp = shard.kvHeadEnd - shard.kvHeadStart;
  const q = gatherHeads(
    new Float32Array(job.q),
    { batch, heads: hq, n: seqQ, x: d },
    shard.headStart,
    shard.headEnd,
  );
  const k = gatherHeads(
    new Float32Array(job.k),
    { batch, heads: hkv, n: seqK, x: d },
    shard.kvHeadStart,
    shard.kvHeadEnd,
  );
  const v = gatherHeads(
    new Float32Array(job.v),
    { batch, heads: hkv, n: seqK, x: dv },
    shard.kvHeadStart,
    shard.kvHeadEnd,
  );
  // The W_o rows of these heads: a view of the shared matrix (the GEMM only reads it).
  const wo = new Float32Array(job.wo, shard.headStart * dv * dModel * 4, hp * dv * dModel);
  const o = new Float32Array(batch * seqQ * hp * dv);
  const lse = new Float32Array(batch * seqQ * hp);
  const base = {
    layout: 'THD' as const,
    batch: 1,
    hq: hp,
    hkv: hkp,
    d,
    dv,
    scale: dims.scale,
    left: -1,
    right: dims.causal ? 0 : -1,
    totalQ: batch * seqQ,
    totalK: batch * seqK,
  };
  return {
    async computeTile(tile: RowTile, out: Float32Array) {
      const rows = tile.rowEnd - tile.rowStart;
      const keys = tileKeyLength(tile, seqQ, seqK, dims.causal);
      const row0 = tile.batch * seqQ + tile.rowStart;
      // No key for any row (causal, Nq > Nk): O stays 0 there (a fresh array).
      if (keys > 0) {
        const problem: NativeAttentionProblem = {
          ...base,
          seqQ: Int32Array.of(rows),
          seqK: Int32Array.of(keys),
          startQ: Int32Array.of(row0),
          startK: Int32Array.of(tile.batch * seqK),
          maxSeqQ: rows,
          maxSeqK: keys,
        };
        await engine.flashForward(problem, q, k, v, o, lse);
      }
      await engine.gemm({
        m: rows,
        n: dModel,
        k: hp * dv,
        a: o.subarray(row0 * hp * dv, (row0 + rows) * hp * dv),
        b: wo,
        c: out,
      });
    },
  };
}
