import { type AllocKind, setAllocHook } from '@attnkit/skeleton';

/**
 * Poisoned memory: kernels must write every element they own, so tests hand them NaN-filled
 * arrays (the TS and native paths allocate through @attnkit/skeleton's setAllocHook; the WGSL
 * kernels through WebGpuContext.createOutput, see webGpuTestContext).
 */

export interface Accounting {
  /** Bytes allocated per kind since poisonAllocations(). */
  bytes: Record<AllocKind, number>;
  /** Allocations per kind since poisonAllocations(). */
  count: Record<AllocKind, number>;
  /** Puts back the hook that was installed before. */
  restore(): void;
}

/**
 * Makes every kernel allocation start as garbage (NaN for f32, a huge index for i32) and
 * counts the allocations and bytes per kind, until restore().
 */
export function poisonAllocations(): Accounting {
  const bytes: Record<AllocKind, number> = { output: 0, tile: 0, rows: 0 };
  const count: Record<AllocKind, number> = { output: 0, tile: 0, rows: 0 };
  const previous = setAllocHook((array, kind) => {
    if (array instanceof Float32Array) array.fill(Number.NaN);
    else array.fill(0x3fffffff);
    bytes[kind] += array.byteLength;
    count[kind] += 1;
  });
  return { bytes, count, restore: () => setAllocHook(previous) };
}

/** A Float32Array of n NaNs: kernels must overwrite every element they own. */
export function poisoned(n: number): Float32Array {
  return new Float32Array(n).fill(Number.NaN);
}
