import {
  bytesPerElement,
  CpuStorage,
  DeviceError,
  DTypeError,
  describe,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { type GpuProfiler, type WebGpuContext, WebGpuStorage } from '@attnkit/webgpu';
import { registerKernel } from '../../dispatch.js';
import type { KernelName, Kernels } from '../table.js';
import { attention, attentionBackward } from './attention.js';
import { bindContext, KERNEL_OPTION_DEFAULTS, type WebGpuKernelOptions } from './context.js';
import { affine, binary, broadcastTo, full, unary, unaryBackward } from './elementwise.js';
import { gla, glaBackward } from './gla.js';
import { linears, matmul } from './matmul.js';
import { adamwStep, sgdStep } from './optim.js';
import { queueOf } from './queue.js';
import { maxTo, maxToBackward, sumTo } from './reduce.js';
import {
  addLayerNorm,
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
  linears,
  softmax,
  softmaxBackward,
  logSoftmax,
  logSoftmaxBackward,
  layerNorm,
  addLayerNorm,
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
  gla,
  glaBackward,
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

/**
 * Copies `count` elements of webgpu tensor `src`, from its element `srcOffset` on, into `dst`
 * from its element `dstOffset` on: in place, in order with the nn work queued on their context
 * (work queued before it has written src, work queued after reads the new dst), as a buffer
 * copy (no pass). The one nn kernel that writes into an existing tensor, which no op does: what
 * a device-resident KV cache appends the step's keys and values with (@attnkit/gpt's
 * DevicePagedKvCache). Offsets count from each tensor's first element in row-major order; both
 * contiguous, one dtype, one context, different buffers; byte offsets and sizes whole 4-byte
 * words (f16: even offsets and counts). Typed errors name the argument; nothing is queued then.
 * A dst that no nn op made (toWebGpu, emptyWebGpu) does not wait for nn's queue when read with
 * toCpu: read it after syncWebGpu, or with readWebGpuNow, or through nn ops (queued after).
 *
 * @example
 * // token row t of a [maxTokens, H, D] pool, from a [1, H, D] step
 * copyIntoWebGpu(pool, t * H * D, step);
 */
export function copyIntoWebGpu(
  dst: Tensor,
  dstOffset: number,
  src: Tensor,
  srcOffset = 0,
  count?: number,
): void {
  const op = 'copyIntoWebGpu';
  const storageOfArg = (t: Tensor, name: string): WebGpuStorage => {
    if (!(t instanceof Tensor))
      throw new ValueError(`${op}: ${name} expected a webgpu Tensor, got ${describe(t)}`, name);
    const st = t.storage;
    if (!(st instanceof WebGpuStorage))
      throw new DeviceError(
        `${op}: ${name} expected a webgpu tensor, got one on ${t.device}`,
        name,
      );
    if (!t.isContiguous())
      throw new DeviceError(
        `${op}: ${name} expected a contiguous tensor, got a strided view`,
        name,
      );
    st.checkLive(name, op);
    return st;
  };
  const d = storageOfArg(dst, 'dst');
  const s = storageOfArg(src, 'src');
  if (s.ctx !== d.ctx)
    throw new DeviceError(`${op}: src expected dst's WebGpuContext, got another one`, 'src');
  if (src.dtype !== dst.dtype)
    throw new DTypeError(`${op}: src expected dst's dtype ${dst.dtype}, got ${src.dtype}`, 'src');
  if (s.buffer === d.buffer)
    throw new ValueError(`${op}: src expected another buffer than dst's, got the same one`, 'src');
  const range = (value: number, name: string, max: number) => {
    if (!Number.isInteger(value) || value < 0 || value > max)
      throw new ValueError(
        `${op}: ${name} expected an integer in [0, ${max}], got ${describe(value)}`,
        name,
      );
  };
  range(srcOffset, 'srcOffset', src.size);
  const n = count ?? src.size - srcOffset;
  range(n, 'count', Math.min(src.size - srcOffset, dst.size));
  range(dstOffset, 'dstOffset', dst.size - n);
  const bpe = bytesPerElement(dst.dtype);
  const words = (value: number, name: string) => {
    if ((value * bpe) % 4 !== 0)
      throw new ValueError(
        `${op}: ${name} expected a whole number of 4-byte words (${4 / bpe} ${dst.dtype} elements), got ${value}`,
        name,
      );
  };
  words(dst.offset + dstOffset, 'dstOffset');
  words(src.offset + srcOffset, 'srcOffset');
  words(n, 'count');
  if (n === 0) return;
  queueOf(d.ctx).copy(
    s,
    (src.offset + srcOffset) * bpe,
    d,
    (dst.offset + dstOffset) * bpe,
    n * bpe,
  );
}

/** Passes encoded and command buffers submitted by nn's queue on ctx. */
export function webGpuQueueStats(ctx: WebGpuContext): {
  passes: number;
  immediate: number;
  submits: number;
  /** Buffer copies encoded (copyIntoWebGpu). */
  copies: number;
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
