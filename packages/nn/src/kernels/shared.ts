import { formatShape, ShapeError, type Tensor } from '@attnkit/tensor';

/**
 * What every backend's kernels check alike, written once: the shape `concat` produces (every
 * input equal to the first except along `dim`, a ShapeError naming the input otherwise). The
 * family an attention kernel runs is kernels/families.ts.
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
