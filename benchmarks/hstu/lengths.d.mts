/** Types of lengths.mjs (the seeded jagged lengths shared with lengths.py). */
export function mulberry32(seed: number): Generator<number, never, unknown>;
export function jaggedLengths(seed: number, batch: number, maxSeqLen: number): number[];
export function seqOffsets(lengths: readonly number[]): Int32Array;
