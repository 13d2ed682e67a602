import { Rng, ShapeError, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { softmaxAttentionReference } from './reference/softmax.js';
import { kBase, keyRow, resolveAttentionProblem } from './spec.js';

// AttentionOptions.paged resolved: pools as K/V, per-sequence lengths, the block table, and
// keyRow / kBase addressing (key j of sequence b at kBase(b, h) + keyRow(b, j) * kRow).

describe('paged K/V: resolveAttentionProblem', () => {
  const rng = new Rng(4);
  const q = rng.randn([3, 4, 2, 8]);
  const k = rng.randn([5, 4, 2, 8]);
  const v = rng.randn([5, 4, 2, 6]);
  const paged = {
    pageSize: 4,
    blockTable: Int32Array.of(4, 1, -1, 0, -1, -1, 2, 3, -1),
    lengths: Int32Array.of(6, 0, 5),
  };

  test('resolves the pools, lengths and row addressing', () => {
    const p = resolveAttentionProblem(q, k, v, { paged, causal: true });
    expect([p.batch, p.hq, p.hkv, p.group, p.d, p.dv]).toEqual([3, 4, 2, 2, 8, 6]);
    expect(Array.from(p.seqK)).toEqual([6, 0, 5]);
    expect([p.maxSeqK, p.totalK, p.kRow, p.vRow]).toEqual([6, 20, 16, 12]);
    expect(p.paged).toMatchObject({ pageSize: 4, maxPages: 3, numPages: 5 });
    expect(p.oShape).toEqual([3, 4, 2, 6]);
    // Key 5 of sequence 0: slot 1 (page 1), row 1 -> pool token 5; key 4 of sequence 2: page 3.
    expect(keyRow(p, 0, 5)).toBe(5);
    expect(keyRow(p, 0, 3)).toBe(19);
    expect(keyRow(p, 2, 4)).toBe(12);
    expect(kBase(p, 2, 1, p.d)).toBe(8);
  });

  test('the reference through the table equals the reference on the gathered keys', () => {
    const ref = softmaxAttentionReference(q, k, v, { paged, causal: true });
    const K = k.toFloat64Array();
    const V = v.toFloat64Array();
    const Q = q.toFloat64Array();
    const o = ref.o.toFloat64Array();
    // Sequence 2, head 3 (kv head 1), query 1: sees keys 0..4 (bottom-right causal, Nk 5).
    const key = (j: number) => [2, 3][j >> 2]! * 4 + (j % 4);
    const s = [0, 1, 2, 3, 4].map((j) => {
      let x = 0;
      for (let c = 0; c < 8; c++)
        x += Q[((2 * 4 + 3) * 2 + 1) * 8 + c]! * K[(key(j) * 2 + 1) * 8 + c]!;
      return x / Math.sqrt(8);
    });
    const m = Math.max(...s);
    const w = s.map((x) => Math.exp(x - m));
    const l = w.reduce((a, x) => a + x, 0);
    for (let c = 0; c < 6; c++) {
      let acc = 0;
      for (let j = 0; j < 5; j++) acc += w[j]! * V[(key(j) * 2 + 1) * 6 + c]!;
      expect(o[((2 * 4 + 3) * 2 + 1) * 6 + c]).toBeCloseTo(acc / l, 12);
    }
    // Sequence 1 has no keys: LSE -inf, O 0.
    const lse = ref.lse.toFloat64Array();
    for (let i = 4 * 2; i < 8 * 2; i++) expect(lse[i]).toBe(Number.NEGATIVE_INFINITY);
  });

  test('all sequences empty: a table of no columns is fine', () => {
    const p = resolveAttentionProblem(q, k, v, {
      paged: { pageSize: 4, blockTable: new Int32Array(0), lengths: new Int32Array(3) },
    });
    expect([p.maxSeqK, p.paged!.maxPages]).toEqual([0, 0]);
  });

  test('typed errors name the field', () => {
    const argument = (f: () => unknown, cls: unknown = ValueError) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(cls as never);
        return (e as ValueError).argument;
      }
      return 'no error';
    };
    const with_ = (o: object) => () =>
      resolveAttentionProblem(q, k, v, { paged: { ...paged, ...o } });
    expect(argument(with_({ pageSize: 1.5 }))).toBe('paged.pageSize');
    expect(argument(with_({ pageSize: 2 }), ShapeError)).toBe('k');
    expect(argument(with_({ blockTable: Int32Array.of(4, 1, -1, 0, -1, -1, 2, 5, -1) }))).toBe(
      'paged.blockTable',
    );
    expect(argument(with_({ blockTable: [4, 1.5, 0, 0, 0, 0, 2, 3, 0] }))).toBe('paged.blockTable');
    expect(argument(with_({ lengths: Int32Array.of(13, 0, 5) }))).toBe('paged.lengths');
    expect(argument(with_({ lengths: [6, 0] }))).toBe('paged.lengths');
    expect(argument(with_({ lengths: 'x' }))).toBe('paged.lengths');
    expect(
      argument(() =>
        resolveAttentionProblem(q, k, v, { paged, cuSeqlensK: Int32Array.of(0, 1, 2, 3) }),
      ),
    ).toBe('paged');
    expect(
      argument(() => resolveAttentionProblem(q, k, rng.randn([5, 4, 1, 6]), { paged }), ShapeError),
    ).toBe('v');
  });
});
