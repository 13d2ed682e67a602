import { resolveAttentionProblem } from '@attnkit/attention';
import {
  planWebGpuFlash,
  SOFTMAX_HOOKS,
  tiledForwardWebGpu,
  type WebGpuTileOptions,
} from '@attnkit/skeleton';
import { CpuStorage, DeviceError, DTypeError, describe, Tensor, ValueError } from '@attnkit/tensor';
import {
  bindBuffers,
  emptyWebGpu,
  getWebGpuContext,
  type WebGpuContext,
  WebGpuStorage,
  webGpuStorageOf,
} from '@attnkit/webgpu';
import { mergeKernels, mergeParams, mergeWorkgroups } from './merge.js';
import { planStreaming, type StreamDType, type StreamPlan, streamSchedule } from './plan.js';

/**
 * FastAttention's CPU-GPU cooperative long context: K/V stay in host memory and are streamed
 * to the GPU chunk by chunk into two buffers (one uploads while the kernel reads the other),
 * under a GPU byte budget, so the context is bounded by host memory. Each chunk runs the
 * skeleton's FA2 forward (tiledForwardWebGpu: the same kernel as the resident call, decode
 * included) over its key range, and ./merge.ts folds its (o, LSE) into the rows' running state.
 */

type GpuBuffer = WebGpuStorage['buffer'];

export interface StreamingAttentionOptions {
  /** GPU bytes this call may hold at once (every buffer it allocates; q's own is the caller's). */
  gpuBudgetBytes: number;
  scale?: number;
  causal?: boolean;
  window?: [number, number];
  layout?: 'BHND';
  /** The device when q is a cpu tensor (default: getWebGpuContext()); with a webgpu q, q's own. */
  ctx?: WebGpuContext;
  /** Tile sizes of the skeleton's forward kernel (benchmarks); chunks are multiples of its tiles. */
  tiles?: WebGpuTileOptions['tiles'];
  /** Called after each key chunk is queued: progress of a long call. */
  onChunk?: (progress: StreamProgress) => void;
}

export interface StreamProgress {
  /** Work group (batch entry, kv-head group, query chunk) and key chunk, counted from 0. */
  group: number;
  chunk: number;
  k0: number;
  k1: number;
}

export interface StreamingStats {
  groups: number;
  /** Key chunks uploaded and computed. */
  chunks: number;
  /** K/V bytes uploaded, and what uploading every key for every work group would have been. */
  uploadedBytes: number;
  denseBytes: number;
  /** Host time in queue.writeBuffer (the copy into the driver's staging) and waiting for a free chunk buffer. */
  uploadMs: number;
  waitMs: number;
}

export interface StreamingAttentionResult {
  /** o [B, Hq, Nq, Dv] (q's dtype) and lse [B, Hq, Nq] f32, on q's device. */
  o: Tensor;
  lse: Tensor;
  plan: StreamPlan;
  stats: StreamingStats;
}

const KNOWN = new Set([
  'gpuBudgetBytes',
  'scale',
  'causal',
  'window',
  'layout',
  'ctx',
  'tiles',
  'onChunk',
]);

/** A webgpu tensor over part of a buffer this call owns: dispose() leaves the buffer alone. */
class BorrowedStorage extends WebGpuStorage {
  private returned = false;
  override dispose(): void {
    if (this.returned) return;
    this.returned = true;
    this.ctx.untrack(this);
  }
}

function view(ctx: WebGpuContext, buffer: GpuBuffer, dtype: StreamDType, shape: number[]): Tensor {
  const n = shape.reduce((a, x) => a * x, 1);
  return new Tensor(new BorrowedStorage(ctx, dtype, n, buffer), shape);
}

/** A cpu tensor of t's shape and dtype over one element (zero strides): for shape validation only. */
function shapeOnly(t: Tensor): Tensor {
  const one = t.dtype === 'f32' ? new Float32Array(1) : new Uint16Array(1);
  return new Tensor(
    new CpuStorage(t.dtype, one),
    [...t.shape],
    t.shape.map(() => 0),
  );
}

/**
 * Softmax attention (KERNELS.md "Common", layout BHND, causal / window, GQA) with K/V in host
 * memory, streamed to the GPU under `gpuBudgetBytes`: q a webgpu tensor (o and lse come back on
 * the GPU, and count against the budget) or a cpu tensor (they come back on the cpu: the GPU
 * holds only the working set); k and v cpu tensors of q's dtype. The plan (planStreaming) is
 * made, and a budget too small for it is a GpuBudgetError, before any work. The result equals
 * the resident kernel's within KERNELS.md's tolerance for the dtype. GPU errors and device
 * loss reject with @attnkit/webgpu's typed errors; every buffer of the call is released.
 */
export function streamingAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: StreamingAttentionOptions,
): Promise<StreamingAttentionResult> {
  return runStreaming(q, k, v, options, true);
}

/**
 * streamingAttention, for benchmarks: with `uploads` false the K/V chunks are not copied (the
 * kernels read whatever the chunk buffers hold, so the result is meaningless): the compute
 * time of the same schedule alone, to tell how much of the copy time the overlap hid.
 */
export async function runStreaming(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: StreamingAttentionOptions,
  uploads: boolean,
): Promise<StreamingAttentionResult> {
  if (options === null || typeof options !== 'object')
    throw new ValueError(
      `options: expected an object with gpuBudgetBytes, got ${describe(options)}`,
      'options',
    );
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key))
      throw new ValueError(
        `${key}: expected one of ${[...KNOWN].join(', ')} (streaming attention runs plain softmax with causal / window on BHND tensors), got ${describe((options as unknown as Record<string, unknown>)[key])}`,
        key,
      );
  }
  const { gpuBudgetBytes, ctx: given, tiles, onChunk, ...attn } = options;
  if (attn.layout !== undefined && attn.layout !== 'BHND')
    throw new ValueError(
      `layout: expected "BHND" (K/V chunks are contiguous key ranges per head), got ${describe(attn.layout)}`,
      'layout',
    );
  if (onChunk !== undefined && typeof onChunk !== 'function')
    throw new ValueError(`onChunk: expected a function, got ${describe(onChunk)}`, 'onChunk');
  if (!(q instanceof Tensor)) throw new ValueError(`q: expected a Tensor, got ${describe(q)}`, 'q');
  const dtype = q.dtype;
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16')
    throw new DTypeError(`q: expected f32, f16 or bf16, got ${dtype}`, 'q');
  for (const [t, name] of [
    [k, 'k'],
    [v, 'v'],
  ] as const) {
    if (t instanceof Tensor && t.device !== 'cpu')
      throw new DeviceError(
        `${name}: expected a cpu tensor (K/V stay in host memory and are streamed), got one on ${t.device}`,
        name,
      );
  }
  if (q.device !== 'cpu' && q.device !== 'webgpu')
    throw new DeviceError(`q: expected a cpu or webgpu tensor, got one on ${q.device}`, 'q');
  const onGpu = q.device === 'webgpu';
  const p = resolveAttentionProblem(onGpu ? shapeOnly(q) : q, k, v, attn);
  if (dtype !== 'f32' && (p.d % 2 !== 0 || p.dv % 2 !== 0))
    throw new ValueError(
      `q: ${dtype} rows are copied as u32 pairs, so head dims must be even, got D = ${p.d}, Dv = ${p.dv}`,
      'q',
    );
  let ctx: WebGpuContext;
  if (onGpu) {
    ctx = webGpuStorageOf(q, 'q').ctx;
    if (given !== undefined && given !== ctx)
      throw new DeviceError(
        "ctx: expected q's own WebGPU context (or none) with a webgpu q, got another",
        'ctx',
      );
  } else {
    ctx = given ?? (await getWebGpuContext());
  }
  ctx.checkAlive();
  const lim = ctx.limits;
  const fp = planWebGpuFlash({
    kernel: 'forward',
    d: p.d,
    dv: p.dv,
    maxComputeWorkgroupStorageSize: lim.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: Math.min(
      lim.maxComputeInvocationsPerWorkgroup,
      lim.maxComputeWorkgroupSizeX,
    ),
    subgroupMinSize: ctx.features.subgroups ? ctx.features.subgroupMinSize : 0,
    tiles: tiles?.forward,
  });
  const { batch: B, hq, hkv, maxSeqQ: nq, maxSeqK: nk, d, dv } = p;
  const problem = {
    batch: B,
    hq,
    hkv,
    nq,
    nk,
    d,
    dv,
    dtype,
    left: p.left,
    right: p.right,
    outputOnGpu: onGpu,
  } as const;
  const plan = planStreaming(problem, gpuBudgetBytes, {
    queryTile: fp.br,
    keyTile: fp.bc,
    maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize,
    maxBufferSize: lim.maxBufferSize,
  });
  const kernels = await mergeKernels(ctx, dtype);
  const e = dtype === 'f32' ? 4 : 2;
  // Row-major elements (a view when contiguous), f16 / bf16 as bit patterns.
  const kData = k.data();
  const vData = v.data();
  const qData = onGpu ? undefined : q.data();
  const qSrc = onGpu ? webGpuStorageOf(q, 'q').buffer : undefined;
  const device = ctx.device;
  const stats: StreamingStats = {
    groups: 0,
    chunks: 0,
    uploadedBytes: 0,
    denseBytes: 0,
    uploadMs: 0,
    waitMs: 0,
  };
  const { hkvGroup: hkvG, hqGroup: hqG, queryChunk: Qc, keyChunk: Kc } = plan;
  const owned: GpuBuffer[] = [];
  const take = (bytes: number, label: string) => {
    const b = ctx.createStorageBuffer(bytes, `streaming attention ${label}`);
    owned.push(b);
    return b;
  };
  const o = onGpu ? emptyWebGpu(p.oShape, dtype, ctx) : undefined;
  const lse = onGpu ? emptyWebGpu(p.lseShape, 'f32', ctx) : undefined;
  const oHost = onGpu
    ? undefined
    : dtype === 'f32'
      ? new Float32Array(B * hq * nq * dv)
      : new Uint16Array(B * hq * nq * dv);
  const lseHost = onGpu ? undefined : new Float32Array(B * hq * nq);
  try {
    const qBuf = take(plan.buffers.q, 'q chunk');
    const acc = take(plan.buffers.acc, 'acc');
    const lseS = take(plan.buffers.lse, 'lse');
    const groupO = take(plan.buffers.groupO, 'o chunk');
    const kBufs = [take(plan.buffers.k, 'k chunk 0'), take(plan.buffers.k, 'k chunk 1')];
    const vBufs = [take(plan.buffers.v, 'v chunk 0'), take(plan.buffers.v, 'v chunk 1')];
    const maxX = lim.maxComputeWorkgroupsPerDimension;
    for (let b = 0; b < B; b++) {
      for (let g = 0; g < hkv / hkvG; g++) {
        for (let q0 = 0; q0 < nq; q0 += Qc) {
          const q1 = Math.min(nq, q0 + Qc);
          const qc = q1 - q0;
          const rows = hqG * qc;
          // Rows (b, head, q0..q1) of a [B, H, N, W] tensor: one contiguous run per head.
          const qRow = (head: number, width: number) => ((b * hq + head) * nq + q0) * width;
          await ctx.scoped('streaming attention q chunk', () => {
            const enc = device.createCommandEncoder();
            for (let h = 0; h < hqG; h++) {
              const src = qRow(g * hqG + h, d);
              if (qSrc) enc.copyBufferToBuffer(qSrc, src * e, qBuf, h * qc * d * e, qc * d * e);
              else device.queue.writeBuffer(qBuf, h * qc * d * e, qData!, src, qc * d);
            }
            enc.clearBuffer(acc, 0, rows * dv * 4);
            device.queue.writeBuffer(
              lseS,
              0,
              new Float32Array(rows).fill(Number.NEGATIVE_INFINITY),
            );
            device.queue.submit([enc.finish()]);
          });
          const qT = view(ctx, qBuf, dtype, [1, hqG, qc, d]);
          const uniform = ctx.createUniform(mergeParams(rows, dv), 'streaming attention merge');
          try {
            const chunks = streamSchedule({ nq, nk, left: p.left, right: p.right }, q0, q1, Kc);
            stats.denseBytes += hkvG * nk * (d + dv) * e;
            const done: Promise<unknown>[] = [];
            const upload = (i: number) => {
              const { k0, k1 } = chunks[i]!;
              const kl = k1 - k0;
              if (!uploads) return;
              const t0 = performance.now();
              for (let h = 0; h < hkvG; h++) {
                const row = (b * hkv + g * hkvG + h) * nk + k0;
                device.queue.writeBuffer(kBufs[i % 2]!, h * kl * d * e, kData, row * d, kl * d);
                device.queue.writeBuffer(vBufs[i % 2]!, h * kl * dv * e, vData, row * dv, kl * dv);
              }
              stats.uploadMs += performance.now() - t0;
              stats.uploadedBytes += hkvG * kl * (d + dv) * e;
            };
            if (chunks.length > 0) upload(0);
            for (const [i, ch] of chunks.entries()) {
              ctx.checkAlive();
              const kl = ch.k1 - ch.k0;
              const kT = view(ctx, kBufs[i % 2]!, dtype, [1, hkvG, kl, d]);
              const vT = view(ctx, vBufs[i % 2]!, dtype, [1, hkvG, kl, dv]);
              const sub = resolveAttentionProblem(qT, kT, vT, {
                scale: p.scale,
                window: [ch.left, ch.right],
              });
              const run = tiledForwardWebGpu(sub, SOFTMAX_HOOKS, qT, kT, vT, {
                tiles,
                tensorCores: false,
              });
              // Awaited below; a rejection meanwhile must not count as unhandled.
              run.catch(() => undefined);
              let r: Awaited<typeof run> | undefined;
              try {
                // The next chunk goes into the other buffer while this one's kernel is queued
                // and runs; that buffer was last read by chunk i - 1, so wait for it first
                // (which also bounds the driver's staging memory to about two chunks).
                if (i + 1 < chunks.length) {
                  if (i >= 1) {
                    const t0 = performance.now();
                    await done[i - 1];
                    stats.waitMs += performance.now() - t0;
                    ctx.checkAlive();
                  }
                  upload(i + 1);
                }
                r = await run;
                await ctx.dispatch([
                  {
                    program: kernels.merge,
                    buffers: bindBuffers(kernels.mergeBindings, {
                      P: uniform,
                      oc: webGpuStorageOf(r.o, 'o').buffer,
                      lc: webGpuStorageOf(r.lse!, 'lse').buffer,
                      acc,
                      lse: lseS,
                    }),
                    workgroups: mergeWorkgroups('merge', rows, dv, maxX),
                    label: 'streaming attention merge',
                  },
                ]);
              } finally {
                const release = (x: Awaited<typeof run>) => {
                  x.o.dispose();
                  x.lse?.dispose();
                };
                // Failed before the kernel's outputs came back: release them when they do.
                if (r) release(r);
                else run.then(release, () => undefined);
                kT.dispose();
                vT.dispose();
              }
              done[i] = device.queue.onSubmittedWorkDone();
              stats.chunks++;
              onChunk?.({ group: stats.groups, chunk: i, k0: ch.k0, k1: ch.k1 });
            }
            await ctx.dispatch([
              {
                program: kernels.finish,
                buffers: bindBuffers(kernels.finishBindings, { P: uniform, acc, o: groupO }),
                workgroups: mergeWorkgroups('finish', rows, dv, maxX),
                label: 'streaming attention finish',
              },
            ]);
          } finally {
            qT.dispose();
            ctx.pool.release(uniform);
          }
          if (o && lse) {
            const oBuf = webGpuStorageOf(o, 'o').buffer;
            const lBuf = webGpuStorageOf(lse, 'lse').buffer;
            await ctx.scoped('streaming attention output', () => {
              const enc = device.createCommandEncoder();
              for (let h = 0; h < hqG; h++) {
                const head = g * hqG + h;
                enc.copyBufferToBuffer(
                  groupO,
                  h * qc * dv * e,
                  oBuf,
                  qRow(head, dv) * e,
                  qc * dv * e,
                );
                enc.copyBufferToBuffer(lseS, h * qc * 4, lBuf, qRow(head, 1) * 4, qc * 4);
              }
              device.queue.submit([enc.finish()]);
            });
          } else {
            const [ob, lb] = await Promise.all([
              ctx.readBuffer(groupO, rows * dv * e),
              ctx.readBuffer(lseS, rows * 4),
            ]);
            const oc = dtype === 'f32' ? new Float32Array(ob) : new Uint16Array(ob);
            const lc = new Float32Array(lb);
            for (let h = 0; h < hqG; h++) {
              const head = g * hqG + h;
              oHost!.set(oc.subarray(h * qc * dv, (h + 1) * qc * dv), qRow(head, dv));
              lseHost!.set(lc.subarray(h * qc, (h + 1) * qc), qRow(head, 1));
            }
          }
          stats.groups++;
        }
      }
    }
    // The last copies into o / lse are queued: later reads of them come after (queue order).
  } catch (err) {
    o?.dispose();
    lse?.dispose();
    throw err;
  } finally {
    for (const buffer of owned) ctx.pool.release(buffer);
  }
  if (o && lse) return { o, lse, plan, stats };
  return {
    o: Tensor.from(oHost!, p.oShape, dtype),
    lse: Tensor.from(lseHost!, p.lseShape),
    plan,
    stats,
  };
}
