import { expect, test } from 'vitest';
import { Tensor } from '@attnkit/tensor';
test('smoke', () => {
  const t = Tensor.from([1, 2, 3, 4, 5, 6], [2, 3]);
  expect([...t.transpose(0, 1).toFloat32Array()]).toEqual([1, 4, 2, 5, 3, 6]);
  expect([...t.slice(1, 1).contiguous().toFloat32Array()]).toEqual([2, 3, 5, 6]);
});
