import { AllocationError, AttnkitError, Rng, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { FastMemoryOverflowError, TwoLevelMemory } from './memory.js';

describe('TwoLevelMemory', () => {
  test('counts every element moved, with no hidden caching', () => {
    const mem = new TwoLevelMemory(100);
    const A = mem.declare('A', 10, 8);
    const buf = mem.alloc('buf', 20);
    mem.load(A, { start: 3, count: 20 }, buf);
    mem.load(A, { start: 3, count: 20 }, buf); // the same elements again: read again
    mem.load(A, [0, 79, 5], buf, 17);
    mem.store(A, { start: 60, count: 7 }, buf, 2);
    mem.loadTile(A, { row: 2, rows: 3, col: 5, cols: 3 }, buf, 4);
    mem.storeTile(A, { row: 9, rows: 1, col: 0, cols: 8 }, buf, 12);
    expect(mem.counts()).toEqual({
      reads: 20 + 20 + 3 + 9,
      writes: 7 + 8,
      total: 67,
      peakFast: 20,
    });
  });

  test('tracks the peak across alloc and free', () => {
    const mem = new TwoLevelMemory(10);
    const a = mem.alloc('a', 4);
    const b = mem.alloc('b', 5);
    mem.free(a);
    const c = mem.alloc('c', 5);
    expect(mem.inUse).toBe(10);
    mem.free(b, c);
    expect(mem.inUse).toBe(0);
    expect(mem.peakFast).toBe(10);
  });

  test('throws FastMemoryOverflowError the moment an allocation would pass M', () => {
    const mem = new TwoLevelMemory(10);
    mem.alloc('a', 6);
    let error: unknown;
    try {
      mem.alloc('b', 5);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(FastMemoryOverflowError);
    expect(error).toBeInstanceOf(AttnkitError);
    expect((error as Error).message).toBe(
      'M: fast memory of 10 elements cannot hold "b" (5 elements) beside the 6 in use',
    );
    expect(mem.peakFast).toBe(6);
    expect(mem.alloc('b', 4).length).toBe(4);
    expect(mem.peakFast).toBe(10);
  });

  test('compute mode copies values exactly; unwritten slow and fast memory is NaN', () => {
    const rng = new Rng(7);
    const init = new Float64Array(12);
    rng.fillNormal(init);
    const mem = new TwoLevelMemory(16, { compute: true });
    const A = mem.declare('A', 3, 4, init);
    const B = mem.declare('B', 3, 4);
    expect(B.data!.every(Number.isNaN)).toBe(true);
    const buf = mem.alloc('tile', 6);
    expect(buf.data!.every(Number.isNaN)).toBe(true);
    mem.loadTile(A, { row: 1, rows: 2, col: 1, cols: 3 }, buf);
    expect([...buf.data!]).toEqual([init[5], init[6], init[7], init[9], init[10], init[11]]);
    mem.store(B, [11, 0], buf, 4);
    expect(B.data![11]).toBe(init[10]);
    expect(B.data![0]).toBe(init[11]);
    expect(Number.isNaN(B.data![1]!)).toBe(true);
    // `init` is copied: the simulator never writes the caller's array.
    mem.storeTile(A, { row: 0, rows: 1, col: 0, cols: 4 }, buf);
    expect(A.data![0]).toBe(init[5]);
    expect(init[0]).not.toBe(init[5]);
  });

  test('out-of-range transfers and foreign buffers are typed errors naming the argument', () => {
    const mem = new TwoLevelMemory(10);
    const A = mem.declare('A', 2, 3);
    const buf = mem.alloc('buf', 4);
    expect(() => mem.load(A, { start: 4, count: 3 }, buf)).toThrow(/^span: .*6 elements of "A"/);
    expect(() => mem.load(A, [0, 6], buf)).toThrow(/^span: expected indices in \[0, 6\)/);
    expect(() => mem.load(A, { start: 0, count: 5 }, buf)).toThrow(
      /^offset: expected 5 elements to fit in "buf"/,
    );
    expect(() => mem.load(A, { start: 0, count: 2 }, buf, 3)).toThrow(ValueError);
    expect(() => mem.loadTile(A, { row: 1, rows: 2, col: 0, cols: 1 }, buf)).toThrow(/^tile: /);
    mem.free(buf);
    expect(() => mem.load(A, { start: 0, count: 1 }, buf)).toThrow(/^buffer: .*freed or foreign/);
    expect(() => mem.free(buf)).toThrow(/^buffer: /);
    expect(() => mem.alloc('x', 0)).toThrow(/^length: expected a positive integer/);
    expect(() => mem.declare('A', 1, 1)).toThrow(/^name: expected a new array name/);
    expect(() => mem.array('Z')).toThrow(/^name: /);
    expect(mem.array('A')).toBe(A);
    expect(() => new TwoLevelMemory(0)).toThrow(/^capacity: expected a positive integer, got 0/);
    const computing = new TwoLevelMemory(4, { compute: true });
    expect(() => computing.declare('Q', 2, 2, new Float64Array(3))).toThrow(/^init: /);
  });
});

describe('allocation', () => {
  test('a slow array past what the runtime holds is a typed AllocationError naming its shape', () => {
    const mem = new TwoLevelMemory(64, { compute: true });
    expect(() => mem.declare('S', 2 ** 20, 2 ** 20)).toThrow(AllocationError);
    expect(() => mem.declare('T', 2 ** 20, 2 ** 20)).toThrow(/\[1048576, 1048576\]/);
  });
});
