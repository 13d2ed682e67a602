// node --test benchmarks/hstu/ : the lists below are what lengths.py prints (test_lengths.py holds
// the same lists), so the JS and PyTorch sides of the benchmark time the same jagged batch.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jaggedLengths, seqOffsets } from './lengths.mjs';

test('seed 0, B 16, N 4096 (the benchmark batch) as lengths.py prints it', () => {
  const lengths = jaggedLengths(0, 16, 4096);
  assert.deepEqual(
    lengths,
    [
      2593, 2048, 2505, 2347, 3005, 3164, 3308, 3377, 2982, 3238, 2552, 2248, 3899, 2884, 3523,
      3400,
    ],
  );
  assert.equal(seqOffsets(lengths).at(-1), 47073);
});

test('seed 7, B 5, N 33 (odd N: lo = 16) as lengths.py prints it', () => {
  assert.deepEqual(jaggedLengths(7, 5, 33), [16, 17, 33, 28, 25]);
  assert.deepEqual(Array.from(seqOffsets([16, 17, 33, 28, 25])), [0, 16, 33, 66, 94, 119]);
});

test('lengths stay in [floor(N/2), N] and reach both ends', () => {
  const lengths = jaggedLengths(3, 4000, 9);
  assert.ok(lengths.every((n) => n >= 4 && n <= 9));
  assert.equal(Math.min(...lengths), 4);
  assert.equal(Math.max(...lengths), 9);
});
