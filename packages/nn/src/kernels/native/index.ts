import { loadNative, nativeLoadError } from '@attnkit/native';
import type { Tensor } from '@attnkit/tensor';
import { registerKernel } from '../../dispatch.js';
import type { KernelName, Kernels } from '../table.js';
import { tsKernels } from '../ts/index.js';
import { attention, attentionBackward } from './attention.js';
import { affine, full, sumSquares, unary, unaryBackward } from './elementwise.js';
import { setEngine } from './engine.js';
import { gla, glaBackward } from './gla.js';
import { matmul } from './matmul.js';
import {
  crossEntropy,
  crossEntropyBackward,
  gather,
  layerNorm,
  layerNormBackward,
  logSoftmax,
  logSoftmaxBackward,
  rmsNorm,
  rmsNormBackward,
  rope,
  scatterAdd,
  softmax,
  softmaxBackward,
} from './nn.js';
import { adamwStep, sgdStep } from './optim.js';
import {
  binary,
  broadcastTo,
  concat,
  maxTo,
  maxToBackward,
  permute,
  slice,
  sliceBackward,
  sumTo,
} from './strided.js';

/**
 * The native backend: @attnkit/native's C++ engine (threads + SIMD) for f32 cpu tensors.
 * - f64 tensors (the gradient checks' precision) run on the ts kernels, by design: the engine
 *   is f32-only and f64 is the reference precision, not a speed path. This is the dtype's
 *   route, not a fallback for a missing kernel: every kernel of the table has a native f32 one.
 * - dropoutMask draws from the host Rng (ts's kernel): the mask must be the same stream of
 *   rng.uniform() as on ts, which is a sequential JS generator; the mask then multiplies on the
 *   engine. reshape is a view on both.
 */
const f32Kernels: Kernels = {
  full: (shape, value, dtype) =>
    dtype === 'f32' ? full(shape, value) : tsKernels.full(shape, value, dtype),
  binary,
  affine,
  unary,
  unaryBackward,
  sumTo,
  broadcastTo,
  maxTo,
  maxToBackward,
  // One scan of each row in JS: nothing for the engine's threads or SIMD to add at the sizes
  // it serves (a logits row per generated token).
  argmax: tsKernels.argmax,
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
  reshape: tsKernels.reshape,
  permute,
  slice,
  sliceBackward,
  concat,
  dropoutMask: tsKernels.dropoutMask,
  attention,
  attentionBackward,
  gla,
  glaBackward,
  sumSquares,
  sgdStep,
  adamwStep,
};

function hasF64(args: readonly unknown[]): boolean {
  return args.some((a) =>
    Array.isArray(a)
      ? a.some((t) => (t as Tensor | null)?.dtype === 'f64')
      : (a as Tensor | null)?.dtype === 'f64',
  );
}

function routeF64<K extends KernelName>(name: K, fn: Kernels[K]): Kernels[K] {
  const ts = tsKernels[name] as (...args: unknown[]) => unknown;
  const native = fn as (...args: unknown[]) => unknown;
  return ((...args: unknown[]) => (hasF64(args) ? ts(...args) : native(...args))) as Kernels[K];
}

/** The native kernels as registered: f32 on the engine, f64 on the ts kernels. */
export const nativeKernels = Object.fromEntries(
  Object.entries(f32Kernels).map(([name, fn]) => [name, routeF64(name as KernelName, fn as never)]),
) as unknown as Kernels;

let registered: true | string | undefined;

function inNode(): boolean {
  const proc = (globalThis as { process?: { versions?: { node?: unknown } } }).process;
  return typeof proc?.versions?.node === 'string';
}

/**
 * Registers the native kernels as backend 'native' (once) when the engine loads: true, or why
 * not (in Node, @attnkit/native has then warned once). Synchronous: the addon loads in place.
 */
export function registerNativeKernels(): true | string {
  if (registered !== undefined) return registered;
  if (!inNode()) return (registered = 'the native engine runs in Node only');
  const engine = loadNative();
  if (!engine) return (registered = nativeLoadError() ?? 'the engine did not load');
  setEngine(engine);
  for (const name of Object.keys(nativeKernels) as KernelName[])
    registerKernel(name, 'native', nativeKernels[name] as never);
  return (registered = true);
}
