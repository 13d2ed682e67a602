import {
  type AttentionOptions,
  type AttentionProblem,
  resolveAttentionProblem,
} from '@attnkit/attention';
import {
  DeviceError,
  DTypeError,
  describe,
  formatShape,
  ShapeError,
  sameShape,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';
import {
  type BindingKind,
  type ComputeStep,
  emptyWebGpu,
  type GpuProfiler,
  type WebGpuContext,
  type WebGpuStorage,
  webGpuStorageOf,
} from '@attnkit/webgpu';
import { type AuxTables, buildAux, buildParams } from './aux.js';
import { packParams } from './params.js';
import {
  planWebGpuFlash,
  type WebGpuFlashKernel,
  type WebGpuFlashPlan,
  type WebGpuTileConfig,
} from './plan.js';
import {
  dkdvShader,
  dqShader,
  forwardShader,
  type ShaderSpec,
  type StorageDType,
  statsShader,
} from './shaders.js';

/** WebGPU's buffer type, named through @attnkit/webgpu so this package needs no WebGPU typings of its own. */
type GpuBuffer = WebGpuStorage['buffer'];

export interface WebGpuFlashOptions extends AttentionOptions {
  /** The WGSL kernels implement FA2 only. */
  algorithm?: 'fa1' | 'fa2';
  /** Tile sizes per kernel instead of the planner's (benchmarks sweep these). */
  tiles?: Partial<Record<WebGpuFlashKernel, Partial<WebGpuTileConfig>>>;
  /** Times each kernel's pass with timestamp queries (when the device has them). */
  profiler?: GpuProfiler;
}

const FORWARD_BINDINGS: BindingKind[] = [
  'uniform',
  'read',
  'read',
  'read',
  'read',
  'storage',
  'storage',
];
const STATS_BINDINGS: BindingKind[] = ['uniform', 'read', 'read', 'read', 'read', 'storage'];
const DQ_BINDINGS: BindingKind[] = [
  'uniform',
  'read',
  'read',
  'read',
  'read',
  'read',
  'read',
  'storage',
];
const DKDV_BINDINGS: BindingKind[] = [
  'uniform',
  'read',
  'read',
  'read',
  'read',
  'read',
  'read',
  'storage',
  'storage',
];

interface Prepared {
  p: AttentionProblem;
  ctx: WebGpuContext;
  dtype: StorageDType;
  buffers: { q: GpuBuffer; k: GpuBuffer; v: GpuBuffer };
}

function prepare(q: Tensor, k: Tensor, v: Tensor, options: WebGpuFlashOptions): Prepared {
  if (options === null || typeof options !== 'object') {
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  }
  const p = resolveAttentionProblem(q, k, v, options);
  if (options.algorithm !== undefined && options.algorithm !== 'fa2') {
    throw new ValueError(
      `algorithm: the webgpu backend implements "fa2" only, got ${describe(options.algorithm)}`,
      'algorithm',
    );
  }
  const dtype = q.dtype;
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16') {
    throw new DTypeError(`q: expected f32, f16 or bf16 on webgpu, got ${dtype}`, 'q');
  }
  const sq = webGpuStorageOf(q, 'q');
  const sk = webGpuStorageOf(k, 'k');
  const sv = webGpuStorageOf(v, 'v');
  for (const [s, name] of [
    [sk, 'k'],
    [sv, 'v'],
  ] as const) {
    if (s.ctx !== sq.ctx) {
      throw new DeviceError(
        `${name}: expected a tensor on q's WebGPU device, got one on another device`,
        name,
      );
    }
  }
  if (dtype !== 'f32' && (p.d % 2 !== 0 || p.dv % 2 !== 0)) {
    throw new ValueError(
      `q: ${dtype} tensors are stored as u32 pairs on webgpu, so head dims must be even, got D = ${p.d}, Dv = ${p.dv}`,
      'q',
    );
  }
  sq.ctx.checkAlive();
  return { p, ctx: sq.ctx, dtype, buffers: { q: sq.buffer, k: sk.buffer, v: sv.buffer } };
}

function plan(
  pr: Prepared,
  kernel: WebGpuFlashKernel,
  options: WebGpuFlashOptions,
): WebGpuFlashPlan {
  const { ctx, p } = pr;
  return planWebGpuFlash({
    kernel,
    d: p.d,
    dv: p.dv,
    maxComputeWorkgroupStorageSize: ctx.limits.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: Math.min(
      ctx.limits.maxComputeInvocationsPerWorkgroup,
      ctx.limits.maxComputeWorkgroupSizeX,
    ),
    subgroupMinSize: ctx.features.subgroups ? ctx.features.subgroupMinSize : 0,
    tiles: options.tiles?.[kernel],
  });
}

function spec(pr: Prepared, plan: WebGpuFlashPlan): ShaderSpec {
  return {
    plan,
    dtype: pr.dtype,
    vecD: pr.p.d % 4 === 0,
    vecV: pr.p.dv % 4 === 0,
    blockSparse: pr.p.blockSparse !== undefined,
  };
}

/** Uniform and aux buffers of one launch; released to the pool once the work is queued. */
function launchBuffers(pr: Prepared, tables: AuxTables): [GpuBuffer, GpuBuffer] {
  const uniform = pr.ctx.createUniform(new Uint8Array(packParams(buildParams(pr.p, tables))));
  const aux = pr.ctx.createFromData(tables.aux);
  return [uniform, aux];
}

function checkBindingSizes(ctx: WebGpuContext, tensors: Record<string, Tensor>): void {
  const max = ctx.limits.maxStorageBufferBindingSize;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = (t.storage as WebGpuStorage).byteLength;
    if (bytes > max || t.size >= 2 ** 32) {
      throw new ValueError(
        `${name}: ${formatShape(t.shape)} takes ${bytes} bytes, more than one binding may hold on this device (${max})`,
        name,
      );
    }
  }
}

/**
 * FlashAttention-2 forward in WGSL. q, k, v: webgpu tensors (f32, or f16/bf16 packed in u32) of
 * one context, in the layouts of KERNELS.md "Common"; returns o (q's dtype) and lse (f32) as
 * webgpu tensors. Resolves once the work is queued and validated.
 */
export async function flashAttentionWebGpu(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: WebGpuFlashOptions = {},
): Promise<{ o: Tensor; lse: Tensor }> {
  const pr = prepare(q, k, v, options);
  const { p, ctx } = pr;
  checkBindingSizes(ctx, { q, k, v });
  const fp = plan(pr, 'forward', options);
  const program = await ctx.pipelines.get({
    code: forwardShader(spec(pr, fp)),
    bindings: FORWARD_BINDINGS,
    label: 'flash-attention forward',
  });
  const o = emptyWebGpu(p.oShape, pr.dtype, ctx);
  const lse = emptyWebGpu(p.lseShape, 'f32', ctx);
  const [uniform, aux] = launchBuffers(pr, buildAux(p, { tileQ: fp.br, tileK: fp.bc }));
  try {
    await ctx.dispatch(
      [
        {
          program,
          buffers: [uniform, pr.buffers.q, pr.buffers.k, pr.buffers.v, aux, buf(o), buf(lse)],
          workgroups: [Math.ceil(p.maxSeqQ / fp.br), p.hq, p.batch],
          label: 'flash forward',
        },
      ],
      options.profiler,
    );
  } catch (e) {
    o.dispose();
    lse.dispose();
    throw e;
  } finally {
    ctx.pool.release(uniform);
    ctx.pool.release(aux);
  }
  return { o, lse };
}

function buf(t: Tensor): GpuBuffer {
  return (t.storage as WebGpuStorage).buffer;
}

function checkLike(
  t: Tensor,
  name: string,
  shape: readonly number[],
  dtype: string,
  ctx: WebGpuContext,
): GpuBuffer {
  const s = webGpuStorageOf(t, name);
  if (!sameShape(t.shape, shape)) {
    throw new ShapeError(
      `${name}: expected shape ${formatShape(shape)}, got ${formatShape(t.shape)}`,
      name,
    );
  }
  if (t.dtype !== dtype)
    throw new DTypeError(`${name}: expected dtype ${dtype}, got ${t.dtype}`, name);
  if (s.ctx !== ctx) {
    throw new DeviceError(
      `${name}: expected a tensor on q's WebGPU device, got one on another device`,
      name,
    );
  }
  return s.buffer;
}

/**
 * FlashAttention-2 backward in WGSL: a D = rowsum(dO * O) pre-pass, a dK/dV pass parallel over
 * key tiles and a dQ pass parallel over query tiles, queued in one command buffer. Returns dq,
 * dk, dv (q's dtype) as webgpu tensors.
 */
export async function flashAttentionBackwardWebGpu(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  options: WebGpuFlashOptions = {},
): Promise<{ dq: Tensor; dk: Tensor; dv: Tensor }> {
  const pr = prepare(q, k, v, options);
  const { p, ctx } = pr;
  const bo = checkLike(o, 'o', p.oShape, pr.dtype, ctx);
  const bl = checkLike(lse, 'lse', p.lseShape, 'f32', ctx);
  const bdo = checkLike(dO, 'dO', p.oShape, pr.dtype, ctx);
  checkBindingSizes(ctx, { q, k, v, o, dO });
  const qp = plan(pr, 'dq', options);
  const kp = plan(pr, 'dkdv', options);
  const vecV = p.dv % 4 === 0;
  const [statsProgram, dqProgram, dkdvProgram] = await Promise.all([
    ctx.pipelines.get({
      code: statsShader(pr.dtype, vecV),
      bindings: STATS_BINDINGS,
      label: 'flash-attention backward stats',
    }),
    ctx.pipelines.get({
      code: dqShader(spec(pr, qp)),
      bindings: DQ_BINDINGS,
      label: 'flash-attention dq',
    }),
    ctx.pipelines.get({
      code: dkdvShader(spec(pr, kp)),
      bindings: DKDV_BINDINGS,
      label: 'flash-attention dk dv',
    }),
  ]);
  const dq = emptyWebGpu(q.shape, pr.dtype, ctx);
  const dk = emptyWebGpu(k.shape, pr.dtype, ctx);
  const dv = emptyWebGpu(v.shape, pr.dtype, ctx);
  const stats = ctx.createStorageBuffer(lse.size * 8, 'flash backward stats');
  const [uq, auxq] = launchBuffers(pr, buildAux(p, { tileQ: qp.br, tileK: qp.bc }));
  const [uk, auxk] = launchBuffers(pr, buildAux(p, { tileQ: kp.bc, tileK: kp.br }));
  const { q: bq, k: bk, v: bv } = pr.buffers;
  const steps: ComputeStep[] = [
    {
      program: statsProgram,
      buffers: [uq, bo, bdo, bl, auxq, stats],
      workgroups: [Math.ceil(p.maxSeqQ / 64), p.hq, p.batch],
      label: 'flash backward stats',
    },
    {
      program: dkdvProgram,
      buffers: [uk, bq, bk, bv, bdo, stats, auxk, buf(dk), buf(dv)],
      workgroups: [Math.ceil(p.maxSeqK / kp.br), p.hkv, p.batch],
      label: 'flash backward dk dv',
    },
    {
      program: dqProgram,
      buffers: [uq, bq, bk, bv, bdo, stats, auxq, buf(dq)],
      workgroups: [Math.ceil(p.maxSeqQ / qp.br), p.hq, p.batch],
      label: 'flash backward dq',
    },
  ];
  try {
    await ctx.dispatch(steps, options.profiler);
  } catch (e) {
    for (const t of [dq, dk, dv]) t.dispose();
    throw e;
  } finally {
    for (const b of [stats, uq, auxq, uk, auxk]) ctx.pool.release(b);
  }
  return { dq, dk, dv };
}
