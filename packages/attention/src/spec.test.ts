import { Rng, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { resolveAttentionProblem } from './spec.js';

const rng = new Rng(0x5bec);

describe('resolveAttentionProblem: cuSeqlens ranges', () => {
  // Packed THD tensors with 8 tokens, 2 heads, head dim 4.
  const q = rng.randn([8, 2, 4]);
  const k = rng.randn([8, 2, 4]);
  const v = rng.randn([8, 2, 4]);

  function errorOf(cuSeqlensQ: readonly number[], cuSeqlensK?: readonly number[]): ValueError {
    try {
      resolveAttentionProblem(q, k, v, { layout: 'THD', cuSeqlensQ, cuSeqlensK });
    } catch (e) {
      expect(e).toBeInstanceOf(ValueError);
      return e as ValueError;
    }
    throw new Error('expected a ValueError');
  }

  test('entries outside int32 are refused before they could wrap', () => {
    // Int32Array.from wraps each of these to a valid-looking offset list ending at 8.
    for (const bad of [
      [0, 2 ** 32 + 8],
      [-(2 ** 32), 8],
      [0, 2 ** 32 + 3, 8],
      [0, 2 ** 31, 8],
      [0, -3, 8],
    ]) {
      const e = errorOf(bad);
      expect(e.argument).toBe('cuSeqlensQ');
      expect(e.message).toMatch(/^cuSeqlensQ: expected integer entries in \[0, 2147483647\]/);
    }
    const e = errorOf([0, 3, 8], [0, 2 ** 32 + 5, 8]);
    expect(e.argument).toBe('cuSeqlensK');
    expect(e.message).toMatch(/entry 1 is 4294967301/);
  });

  test('non-integer entries name the entry', () => {
    for (const bad of [
      [0, 2.5, 8],
      [0, Number.NaN, 8],
      [0, Number.POSITIVE_INFINITY],
    ]) {
      expect(errorOf(bad).message).toMatch(/cuSeqlensQ: expected integer entries.*entry 1 is/);
    }
  });

  test('valid offsets resolve to per-sequence lengths and starts', () => {
    const p = resolveAttentionProblem(q, k, v, {
      layout: 'THD',
      cuSeqlensQ: Int32Array.from([0, 3, 8]),
      cuSeqlensK: [0, 0, 8],
    });
    expect(p.batch).toBe(2);
    expect(Array.from(p.seqQ)).toEqual([3, 5]);
    expect(Array.from(p.seqK)).toEqual([0, 8]);
    expect(Array.from(p.startQ)).toEqual([0, 3]);
    expect(Array.from(p.startK)).toEqual([0, 0]);
  });
});
