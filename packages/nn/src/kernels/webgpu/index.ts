import { CpuStorage, describe, Tensor, ValueError } from '@attnkit/tensor';
import { type GpuProfiler, type WebGpuContext, WebGpuStorage } from '@attnkit/webgpu';
import { registerKernel } from '../../dispatch.js';
import type { KernelName, Kernels } from '../table.js';
import { attention, attentionBackward } from './attention.js';
import { bindContext, KERNEL_OPTION_DEFAULTS, type WebGpuKernelOptions } from './context.js';
import { affine, binary, broadcastTo, full, unary, unaryBackward } from './elementwise.js';
import { matmul } from './matmul.js';
import { adamwStep, sgdStep } from './optim.js';
import { queueOf } from './queue.js';
import { maxTo, maxToBackward, sumTo } from './reduce.js';
import {
  argmax,
  crossEntropy,
  crossEntropyBackward,
  layerNorm,
  layerNormBackward,
  logSoftmax,
  logSoftmaxBackward,
  rmsNorm,
  rmsNormBackward,
  softmax,
  softmaxBackward,
} from './rows.js';
import {
  concat,
  dropoutMask,
  gather,
  permute,
  reshape,
  rope,
  scatterAdd,
  slice,
  sliceBackward,
} from './shape.js';

/**
 * The WGSL kernels (f32, and f16 storage with f32 math). `sumSquares` is absent: it returns a
 * host number synchronously, which no GPU kernel can (it stays an UnsupportedError).
 */
export const webgpuKernels: Omit<Kernels, 'sumSquares'> = {
  full: full as Kernels['full'],
  binary,
  affine,
  unary,
  unaryBackward,
  sumTo,
  broadcastTo,
  maxTo,
  maxToBackward,
  argmax,
  matmul,
  softmax,
  softmaxBackward,
  logSoftmax,
  logSoftmaxBackward,
  layerNorm,
  layerNormBackward,
  rmsNorm,
  rmsNormBackward,
  gather,
  scatterAdd,
  crossEntropy,
  crossEntropyBackward,
  rope,
  reshape,
  permute,
  slice,
  sliceBackward,
  concat,
  dropoutMask: dropoutMask as Kernels['dropoutMask'],
  attention,
  attentionBackward,
  sgdStep,
  adamwStep,
};

/**
 * Registers the WGSL kernels as backend 'webgpu' (the backend of device 'webgpu'), bound to
 * `ctx`: every webgpu tensor an op takes must live there, and kernels without tensor inputs
 * (full, dropout masks) allocate there. Call again to rebind to another context.
 * `options.tensorCores: false` keeps f16 matmuls on the SIMT kernel.
 */
export function registerWebGpuKernels(ctx: WebGpuContext, options: WebGpuKernelOptions = {}): void {
  if (options === null || typeof options !== 'object')
    throw new ValueError(
      `registerWebGpuKernels: options expected an object, got ${describe(options)}`,
      'options',
    );
  for (const name of Object.keys(KERNEL_OPTION_DEFAULTS) as (keyof WebGpuKernelOptions)[]) {
    const v = options[name];
    const unsplit = name === 'stageTensorCores' && v === 'unsplit';
    if (v !== undefined && typeof v !== 'boolean' && !unsplit)
      throw new ValueError(
        `registerWebGpuKernels: options.${name} expected a boolean${name === 'stageTensorCores' ? " or 'unsplit'" : ''}, got ${describe(v)}`,
        `options.${name}`,
      );
  }
  bindContext(ctx, options);
  queueOf(ctx);
  for (const [name, fn] of Object.entries(webgpuKernels))
    registerKernel(name as KernelName, 'webgpu', fn as Kernels[KernelName]);
}

/**
 * Resolves when every nn kernel queued on `ctx` has been submitted and the GPU has finished it;
 * rejects with the first error raised in the queue since the last await (a typed WebGpuError,
 * or the kernel's own AttnkitError).
 */
export async function syncWebGpu(ctx: WebGpuContext): Promise<void> {
  await queueOf(ctx).idle();
  await ctx.sync();
}

/**
 * Times every pass nn's queue encodes on ctx with `profiler` (undefined stops); read its
 * timings after syncWebGpu. Work that submits on its own (attention) is not in them.
 */
export function setWebGpuProfiler(ctx: WebGpuContext, profiler: GpuProfiler | undefined): void {
  queueOf(ctx).profiler = profiler;
}

/**
 * A webgpu tensor read back with a copy submitted now, behind the work queued so far: work
 * queued after this call does not delay it, where `toCpu()` waits for everything queued. Call
 * it right after queuing what writes `t` and before queuing more (greedy decoding reads token t
 * while token t + 1 runs). Rejects with the error of the work that wrote `t`, as toCpu does;
 * with async work still queued ahead (a pipeline compiling) it is toCpu. cpu tensors: toCpu.
 */
export async function readWebGpuNow(t: Tensor): Promise<Tensor> {
  if (!(t instanceof Tensor))
    throw new ValueError(`readWebGpuNow: t expected a Tensor, got ${describe(t)}`, 't');
  const s = t.storage;
  if (!(s instanceof WebGpuStorage)) return t.toCpu();
  const data = await queueOf(s.ctx).readNow(s);
  return new Tensor(new CpuStorage(t.dtype, data), t.shape, t.strides, t.offset);
}

/** Passes encoded and command buffers submitted by nn's queue on ctx. */
export function webGpuQueueStats(ctx: WebGpuContext): {
  passes: number;
  immediate: number;
  submits: number;
  /** Attention calls encoded synchronously with the passes around them (recordAttention). */
  recorded: number;
  /** Passes whose uniform / bind group was reused, and those that made one (BindingCache). */
  uniformHits: number;
  uniformsMade: number;
  groupHits: number;
  groupsMade: number;
} {
  const q = queueOf(ctx);
  return { ...q.stats, ...q.bindings.stats };
}

export type { WebGpuKernelOptions } from './context.js';
