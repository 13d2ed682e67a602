import { Tensor } from '@attnkit/tensor';
import { toWebGpu, type WebGpuContext, webGpuStorageOf } from '@attnkit/webgpu';
import { fastAttention } from '../attention.js';
import { gatherHeads } from './gather.js';
import { type HeadShard, type RowTile, tileKeyLength } from './plan.js';
import type { AllReduceJob } from './protocol.js';
import type { TileDevice } from './tile-loop.js';

/**
 * A device on a WebGPU adapter (its own Dawn device in its worker). Its heads' K and V are
 * uploaded once per run, token-major (THD [B Nk, Hkv_p, D]); per row tile only the tile's query
 * rows go up, and FastAttention's forward (the skeleton's FA2 with the planner's tiles for this
 * device's limits) runs as a THD problem whose sequences are (keys of the batch entries before,
 * no query), (the tile's rows, the key prefix it sees), (the rest, no query): the resident K/V
 * is read in place. The projection O_p W_o[p rows] runs in a small WGSL kernel against W_o's
 * rows (uploaded once per run), and the partial tile is read back into the shared slot (the
 * host is the link between the simulated devices).
 */

const PROJECTION_WGSL = /* wgsl */ `
struct Dims { rows: u32, dv: u32, heads: u32, dModel: u32 }
@group(0) @binding(0) var<storage, read> o: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

// y[r, j] = sum over (h, c) of o[r, h, c] w[h dv + c, j]: o [rows, heads, dv] is row-major
// [rows, heads dv], the rows of W_o in head order.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let j = g.x;
  let r = g.y;
  if (j >= dims.dModel || r >= dims.rows) { return; }
  let width = dims.heads * dims.dv;
  var acc = 0.0;
  for (var i = 0u; i < width; i++) {
    acc += o[r * width + i] * w[i * dims.dModel + j];
  }
  y[r * dims.dModel + j] = acc;
}
`;

export interface WebGpuTileDevice extends TileDevice {
  /** Releases the run's buffers (K, V, W_o's rows). */
  dispose(): void;
}

export function createWebGpuTileDevice(
  ctx: WebGpuContext,
  job: AllReduceJob,
  shard: HeadShard,
): WebGpuTileDevice {
  const { batch, hq, hkv, seqQ, seqK, d, dv, dModel } = job.dims;
  const hp = shard.headEnd - shard.headStart;
  const hkp = shard.kvHeadEnd - shard.kvHeadStart;
  const q = gatherHeads(
    new Float32Array(job.q),
    { batch, heads: hq, n: seqQ, x: d },
    shard.headStart,
    shard.headEnd,
  );
  const k = toWebGpu(
    Tensor.from(
      gatherHeads(
        new Float32Array(job.k),
        { batch, heads: hkv, n: seqK, x: d },
        shard.kvHeadStart,
        shard.kvHeadEnd,
      ),
      [batch * seqK, hkp, d],
    ),
    ctx,
  );
  const v = toWebGpu(
    Tensor.from(
      gatherHeads(
        new Float32Array(job.v),
        { batch, heads: hkv, n: seqK, x: dv },
        shard.kvHeadStart,
        shard.kvHeadEnd,
      ),
      [batch * seqK, hkp, dv],
    ),
    ctx,
  );
  const wo = ctx.createFromData(
    new Float32Array(job.wo, shard.headStart * dv * dModel * 4, hp * dv * dModel).slice(),
    'allreduce W_o rows',
  );
  const program = ctx.pipelines.get({
    code: PROJECTION_WGSL,
    bindings: ['read', 'read', 'storage', 'uniform'],
  });
  return {
    async computeTile(tile: RowTile, out: Float32Array) {
      const rows = tile.rowEnd - tile.rowStart;
      const keys = tileKeyLength(tile, seqQ, seqK, job.dims.causal);
      const bytes = rows * dModel * 4;
      if (keys === 0) {
        // No row of the tile sees a key (causal, Nq > Nk): O = 0, so the partial is 0.
        out.fill(0);
        return;
      }
      const row0 = tile.batch * seqQ + tile.rowStart;
      const qt = toWebGpu(
        Tensor.from(q.subarray(row0 * hp * d, (row0 + rows) * hp * d), [rows, hp, d]),
        ctx,
      );
      const k0 = tile.batch * seqK;
      const y = ctx.createOutput(bytes, 'allreduce partial');
      const uniform = ctx.createUniform(Uint32Array.of(rows, dv, hp, dModel), 'allreduce dims');
      let o: Tensor | undefined;
      let lse: Tensor | undefined;
      try {
        ({ o, lse } = await fastAttention(qt, k, v, {
          layout: 'THD',
          cuSeqlensQ: [0, 0, rows, rows],
          cuSeqlensK: [0, k0, k0 + keys, batch * seqK],
          causal: job.dims.causal,
          scale: job.dims.scale,
        }));
        await ctx.dispatch([
          {
            program: await program,
            buffers: [webGpuStorageOf(o, 'o').buffer, wo, y, uniform],
            workgroups: [Math.ceil(dModel / 64), rows],
            label: 'allreduce projection',
          },
        ]);
        out.set(new Float32Array(await ctx.readBuffer(y, bytes)));
      } finally {
        for (const t of [qt, o, lse]) t?.dispose();
        ctx.pool.release(y);
        ctx.pool.release(uniform);
      }
    },
    dispose() {
      k.dispose();
      v.dispose();
      ctx.pool.release(wo);
    },
  };
}
