import type { NativeEngine, NativeOp, NativeOpMap } from '@attnkit/native';
import { type CpuStorage, DTypeError, type Tensor } from '@attnkit/tensor';
import { tensorOf } from '../ts/util.js';

/**
 * The engine the native kernels run on (set when they register) and what every kernel shares:
 * f32 inputs as Float32Arrays (views of contiguous tensors, no copy) and fresh f32 outputs.
 */
let engine: NativeEngine | undefined;

export function setEngine(e: NativeEngine): void {
  engine = e;
}

/** The engine handle, for kernels a family package runs on it (linear-attention's GLA). */
export function nativeEngine(): NativeEngine {
  return engine!;
}

/** One synchronous engine call (the addon checks the arrays against the op's descriptor). */
export function run<Op extends NativeOp>(
  op: Op,
  problem: NativeOpMap[Op]['problem'],
  inputs: NativeOpMap[Op]['inputs'],
  outputs: NativeOpMap[Op]['outputs'],
): void {
  engine!.runSync(op, problem, inputs, outputs);
}

let poison = false;

/**
 * Outputs filled with NaN before the kernels write them (tests: a kernel that leaves an
 * element unwritten shows). Off by default: fresh arrays are zeros.
 * @internal
 */
export function setOutputPoison(on: boolean): void {
  poison = on;
}

export function out(n: number): Float32Array {
  const a = new Float32Array(n);
  if (poison) a.fill(Number.NaN);
  return a;
}

/** The native kernels take f32; f64 tensors never get here (index.ts routes them to ts). */
export function checkF32(t: Tensor, op: string, argument = 'x'): void {
  if (t.dtype !== 'f32')
    throw new DTypeError(
      `${op}: backend 'native' takes f32 tensors (f64 runs on the ts kernels), got ${argument} in ${t.dtype}`,
      argument,
    );
}

/** A contiguous f32 tensor's elements (a view; a copy only for a strided view). */
export function f32(t: Tensor, op: string, argument = 'x'): Float32Array {
  checkF32(t, op, argument);
  return t.data() as Float32Array;
}

/** The whole storage of a cpu f32 tensor, for strided reads of a view without a copy. */
export function storageOf(t: Tensor, op: string, argument = 'x'): Float32Array {
  checkF32(t, op, argument);
  return (t.storage as CpuStorage).data as Float32Array;
}

export { tensorOf };
