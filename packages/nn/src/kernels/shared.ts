import { UnsupportedError } from '@attnkit/attention';
import { DTypeError, formatShape, ShapeError, type Tensor } from '@attnkit/tensor';
import type { AttentionKernelOptions } from './table.js';

/**
 * What every backend's kernels check alike, written once: the shape `concat` produces (every
 * input equal to the first except along `dim`, a ShapeError naming the input otherwise), and
 * the family an attention kernel can run.
 */
export function concatShape(xs: readonly Tensor[], dim: number): number[] {
  const first = xs[0]!;
  const shape = [...first.shape];
  shape[dim] = 0;
  for (const [i, x] of xs.entries()) {
    const same =
      x.ndim === first.ndim && x.shape.every((d, j) => j === dim || d === first.shape[j]);
    if (!same)
      throw new ShapeError(
        `concat: xs[${i}] is ${formatShape(x.shape)}, expected ${formatShape(first.shape)} except along dim ${dim}`,
        `xs[${i}]`,
      );
    shape[dim] += x.shape[dim]!;
  }
  return shape;
}

/**
 * The options without `family` for the one family every backend's attention kernels run
 * (FlashAttention-2): any other family is an UnsupportedError naming the backend, never
 * another family's kernel; `f32Only` (the ts and native kernels) makes non-f32 q a DTypeError.
 */
export function flashOnly(
  op: string,
  backend: string,
  q: Tensor,
  options: AttentionKernelOptions,
  f32Only: boolean,
): Omit<AttentionKernelOptions, 'family'> {
  if (options.family !== 'flash') {
    const why = `backend '${backend}' has no attention kernel for family '${options.family}' (available: flash)`;
    throw new UnsupportedError(`${op}: ${why}`, 'family', { [backend]: why });
  }
  if (f32Only && q.dtype !== 'f32')
    throw new DTypeError(
      `${op}: family 'flash' on backend '${backend}' takes f32 q, k, v, got ${q.dtype}`,
      'q',
    );
  const { family: _, ...rest } = options;
  return rest;
}
