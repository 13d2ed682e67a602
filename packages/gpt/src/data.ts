import { describe, Rng, Tensor, ValueError } from '@attnkit/tensor';

export interface Batch {
  /** [batchSize, blockSize] int32 token ids. */
  x: Tensor;
  /** [batchSize, blockSize]: x shifted by one (each position's next token). */
  y: Tensor;
}

/**
 * A token stream split into train (the first `1 - valFraction`) and val (the rest), as nanoGPT's
 * prepare.py, and random batches of blockSize + 1 consecutive tokens from either. Batch `step`
 * of a split is drawn from Rng(seed, split, step) alone, so a resumed run sees the batches the
 * uninterrupted run would have.
 */
export class DataLoader {
  readonly train: Int32Array;
  readonly val: Int32Array;
  constructor(
    tokens: ArrayLike<number>,
    readonly options: { blockSize: number; batchSize: number; valFraction?: number; seed?: number },
  ) {
    const { blockSize, batchSize, valFraction = 0.1, seed = 0 } = options;
    for (const [name, v] of Object.entries({ blockSize, batchSize }))
      if (!Number.isInteger(v) || v < 1)
        throw new ValueError(
          `DataLoader: ${name} expected a positive integer, got ${describe(v)}`,
          name,
        );
    if (typeof valFraction !== 'number' || !(valFraction > 0 && valFraction < 1))
      throw new ValueError(
        `DataLoader: valFraction expected a number in (0, 1), got ${describe(valFraction)}`,
        'valFraction',
      );
    if (!Number.isSafeInteger(seed))
      throw new ValueError(
        `DataLoader: seed expected a safe integer, got ${describe(seed)}`,
        'seed',
      );
    const all = Int32Array.from(tokens);
    const n = Math.floor(all.length * (1 - valFraction));
    this.train = all.subarray(0, n);
    this.val = all.subarray(n);
    for (const [name, split] of [
      ['train', this.train],
      ['val', this.val],
    ] as const)
      if (split.length < blockSize + 1)
        throw new ValueError(
          `DataLoader: tokens expected enough for a ${name} window of blockSize + 1 = ${blockSize + 1} tokens, got ${split.length} in ${name} (of ${all.length}; use more text or a smaller blockSize)`,
          'tokens',
        );
  }

  /** Batch number `step` of `split`: batchSize windows at seeded random offsets. */
  batch(split: 'train' | 'val', step: number): Batch {
    const { blockSize, batchSize, seed = 0 } = this.options;
    const data = split === 'train' ? this.train : this.val;
    // One stream per (seed, split, step): 2^20 steps per split before streams could meet.
    const rng = new Rng(seed * 2 ** 21 + (split === 'val' ? 2 ** 20 : 0) + step);
    const x = new Int32Array(batchSize * blockSize);
    const y = new Int32Array(batchSize * blockSize);
    for (let b = 0; b < batchSize; b++) {
      const start = rng.int(0, data.length - blockSize);
      x.set(data.subarray(start, start + blockSize), b * blockSize);
      y.set(data.subarray(start + 1, start + blockSize + 1), b * blockSize);
    }
    return { x: Tensor.from(x, [batchSize, blockSize]), y: Tensor.from(y, [batchSize, blockSize]) };
  }
}
