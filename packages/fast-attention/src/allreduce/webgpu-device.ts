import { Tensor } from '@attnkit/tensor';
import { toWebGpu, type WebGpuContext, webGpuStorageOf } from '@attnkit/webgpu';
import { fastAttention } from '../attention.js';
import { type HeadShard, type RowTile, tileKeyLength } from './plan.js';
import type { AllReduceJob } from './protocol.js';
import type { TileDevice } from './tile-loop.js';

/**
 * A device on a WebGPU adapter (its own Dawn device in its worker): per row tile, the tile's
 * query rows of its heads and the key prefix the tile sees are uploaded, FastAttention's
 * forward (the skeleton's FA2 with the planner's tiles for this device's limits) runs on them,
 * and the projection O_p W_o[p rows] runs in a small WGSL kernel against W_o's rows uploaded
 * once per run; the partial tile is read back into the shared slot (the host is the link
 * between the simulated devices). The per-tile K/V upload (O(N) per tile) is fine for the
 * small shapes this is tested at; a long-context multi-GPU run wants K/V resident once.
 */

const PROJECTION_WGSL = /* wgsl */ `
struct Dims { rows: u32, dv: u32, heads: u32, dModel: u32 }
@group(0) @binding(0) var<storage, read> o: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

// y[r, j] = sum over heads h and channels c of o[h, r, c] w[h dv + c, j]; o is [heads, rows, dv].
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let j = g.x;
  let r = g.y;
  if (j >= dims.dModel || r >= dims.rows) { return; }
  var acc = 0.0;
  for (var h = 0u; h < dims.heads; h++) {
    let ob = (h * dims.rows + r) * dims.dv;
    let wb = h * dims.dv;
    for (var c = 0u; c < dims.dv; c++) {
      acc += o[ob + c] * w[(wb + c) * dims.dModel + j];
    }
  }
  y[r * dims.dModel + j] = acc;
}
`;

/** rows [r0, r1) of heads [h0, h1) of a BHND array (batch b) -> [1, h1 - h0, r1 - r0, x]. */
function sliceRows(
  src: Float32Array,
  dims: { heads: number; n: number; x: number },
  b: number,
  h0: number,
  h1: number,
  r0: number,
  r1: number,
): Tensor {
  const { heads, n, x } = dims;
  const rows = r1 - r0;
  const out = new Float32Array((h1 - h0) * rows * x);
  for (let h = h0; h < h1; h++) {
    const from = ((b * heads + h) * n + r0) * x;
    out.set(src.subarray(from, from + rows * x), (h - h0) * rows * x);
  }
  return Tensor.from(out, [1, h1 - h0, rows, x]);
}

export interface WebGpuTileDevice extends TileDevice {
  /** Releases the run's buffers (W_o's rows). */
  dispose(): void;
}

export function createWebGpuTileDevice(
  ctx: WebGpuContext,
  job: AllReduceJob,
  shard: HeadShard,
): WebGpuTileDevice {
  const { hq, hkv, seqQ, seqK, d, dv, dModel } = job.dims;
  const hp = shard.headEnd - shard.headStart;
  const q = new Float32Array(job.q);
  const k = new Float32Array(job.k);
  const v = new Float32Array(job.v);
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
      const b = tile.batch;
      const qt = toWebGpu(
        sliceRows(
          q,
          { heads: hq, n: seqQ, x: d },
          b,
          shard.headStart,
          shard.headEnd,
          tile.rowStart,
          tile.rowEnd,
        ),
        ctx,
      );
      const kt = toWebGpu(
        sliceRows(k, { heads: hkv, n: seqK, x: d }, b, shard.kvHeadStart, shard.kvHeadEnd, 0, keys),
        ctx,
      );
      const vt = toWebGpu(
        sliceRows(
          v,
          { heads: hkv, n: seqK, x: dv },
          b,
          shard.kvHeadStart,
          shard.kvHeadEnd,
          0,
          keys,
        ),
        ctx,
      );
      const y = ctx.createOutput(bytes, 'allreduce partial');
      const uniform = ctx.createUniform(Uint32Array.of(rows, dv, hp, dModel), 'allreduce dims');
      let o: Tensor | undefined;
      let lse: Tensor | undefined;
      try {
        ({ o, lse } = await fastAttention(qt, kt, vt, {
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
        for (const t of [qt, kt, vt, o, lse]) t?.dispose();
        ctx.pool.release(y);
        ctx.pool.release(uniform);
      }
    },
    dispose() {
      ctx.pool.release(wo);
    },
  };
}
