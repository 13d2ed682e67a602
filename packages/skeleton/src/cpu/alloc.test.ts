import { describe, expect, test } from 'vitest';
import {
  ALLOC_UNSAFE_MAX_BYTES,
  type AllocKind,
  allocF32,
  allocF32Written,
  setAllocHook,
} from './alloc.js';

describe('allocF32Written: outputs a kernel writes in full, not zero-filled', () => {
  test('the poison hook sees it like allocF32 (kind, length, own buffer)', () => {
    const seen: Array<[string, number, AllocKind]> = [];
    const previous = setAllocHook((a, kind) => {
      seen.push([a.constructor.name, a.length, kind]);
      a.fill(Number.NaN);
    });
    try {
      const a = allocF32Written(1000, 'output');
      const b = allocF32Written(0, 'output');
      const c = allocF32(3, 'tile');
      expect(seen).toEqual([
        ['Float32Array', 1000, 'output'],
        ['Float32Array', 0, 'output'],
        ['Float32Array', 3, 'tile'],
      ]);
      // Its own ArrayBuffer (not a slice of Node's shared pool): handing it to a worker or
      // transferring it moves nothing else.
      expect(a.byteOffset).toBe(0);
      expect(a.buffer.byteLength).toBe(4000);
      expect(Number.isNaN(a[999])).toBe(true);
      expect(b.length).toBe(0);
      expect(Array.from(c).every(Number.isNaN)).toBe(true);
      // Past ALLOC_UNSAFE_MAX_BYTES a plain (zero-filled) array; not allocated here (2 GiB),
      // the limit itself is what Node 20's Buffer takes.
      expect(ALLOC_UNSAFE_MAX_BYTES).toBeLessThanOrEqual(2 ** 32);
    } finally {
      setAllocHook(previous);
    }
  });
});
