import { ValueError } from '@attnkit/tensor';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { benchMemoryBytes, checkBenchMemory, DEFAULT_BENCH } from './bench.js';
import { type CliIo, runCli } from './cli.js';

function captureIo(): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => stdout.push(t), err: (t) => stderr.push(t) };
}

const GiB = 2 ** 30;
const both = ['forward', 'backward'] as const;

describe('bench: a --shape is checked against memory before anything is allocated', () => {
  afterEach(() => vi.restoreAllMocks());

  test('the estimate follows what runBench holds (inputs, kept forward, timed results, reference)', () => {
    // n = r = 1: 16 inputs + 8 kept forward + backward's 2 (12 + 4) timed + 56 reference.
    expect(benchMemoryBytes({ shape: [1, 1, 1, 1], reference: true, passes: both }).bytes).toBe(
      16 + 8 + 32 + 56,
    );
    expect(
      benchMemoryBytes({ shape: [1, 1, 1, 1], reference: false, passes: ['forward'] }).bytes,
    ).toBe(16 + 8 + 16);
    const n = 1 * 8 * 1024 * 64;
    const r = 8 * 1024;
    expect(benchMemoryBytes(DEFAULT_BENCH)).toEqual({
      bytes: 16 * n + 4 * n + 4 * r + 2 * (12 * n + 4 * r) + 56 * n,
      largest: n,
    });
  });

  test('checkBenchMemory refuses past the memory available or the typed-array limit', () => {
    const huge = {
      shape: [1e9, 1, 1, 1] as [number, number, number, number],
      reference: true,
      passes: both,
    };
    expect(() => checkBenchMemory(huge, 16 * GiB)).toThrow(ValueError);
    expect(() => checkBenchMemory(huge, 16 * GiB)).toThrow(
      /^--shape: 1000000000,1,1,1 needs about 112000000000 bytes \(104\.3 GiB\) for inputs, outputs and the float64 reference, more than the 17179869184 bytes \(16\.0 GiB\) of memory available; use a smaller shape \(--no-reference/,
    );
    // Without the reference the same shape still needs 56 bytes an element.
    expect(() => checkBenchMemory({ ...huge, reference: false }, 16 * GiB)).toThrow(
      /needs about 56000000000 bytes .* more than the 17179869184 bytes/,
    );
    expect(() => checkBenchMemory({ ...huge, reference: false }, 64 * GiB)).not.toThrow();
    // One [B, H, N, D] tensor past the engine's typed-array length, whatever the memory.
    expect(() =>
      checkBenchMemory({ ...huge, shape: [1, 1, 2 ** 33, 1] }, 2 ** 50, 2 ** 32),
    ).toThrow(
      /^--shape: 1,1,8589934592,1 makes tensors of 8589934592 elements \(B\*H\*N\*D\), past this runtime's typed-array limit of 4294967296/,
    );
    expect(() => checkBenchMemory(DEFAULT_BENCH, 16 * GiB)).not.toThrow();
  });

  test('attnkit bench --shape 1e9,1,1,1 exits 2 without allocating', async () => {
    // Before: the inputs were drawn first and the process grew to 12 GB before dying.
    if (typeof (process as { availableMemory?: unknown }).availableMemory === 'function') {
      vi.spyOn(
        process as unknown as { availableMemory: () => number },
        'availableMemory',
      ).mockReturnValue(16 * GiB);
    }
    const io = captureIo();
    const before = process.memoryUsage().arrayBuffers;
    // The memory check is the test (a wall-clock bound would only measure CI's load).
    expect(await runCli(['bench', '--shape', '1e9,1,1,1'], io)).toBe(2);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * 2 ** 20);
    expect(io.stdout).toEqual([]);
    expect(io.stderr).toHaveLength(1);
    expect(io.stderr[0]).toMatch(
      /^attnkit: --shape: 1000000000,1,1,1 needs about 112000000000 bytes \(104\.3 GiB\) .* of memory available; use a smaller shape/,
    );
  });
});
