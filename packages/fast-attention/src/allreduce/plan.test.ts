import { ValueError } from '@attnkit/tensor';
import { describe, expect, it } from 'vitest';
import {
  planColumnChunks,
  planHeadShards,
  planRowTiles,
  planTiledAllReduce,
  tileKeyLength,
} from './plan.js';

describe('planHeadShards', () => {
  it('splits heads evenly, the first H mod P devices one more', () => {
    expect(planHeadShards(5, 5, 2).map((s) => [s.headStart, s.headEnd])).toEqual([
      [0, 3],
      [3, 5],
    ]);
    expect(planHeadShards(7, 7, 3).map((s) => s.headEnd - s.headStart)).toEqual([3, 2, 2]);
    expect(planHeadShards(4, 4, 1)).toEqual([
      { device: 0, headStart: 0, headEnd: 4, kvHeadStart: 0, kvHeadEnd: 4 },
    ]);
  });

  it('keeps GQA groups whole on one device', () => {
    // 12 query heads in 3 groups of 4 over 2 devices: 2 groups + 1 group.
    expect(planHeadShards(12, 3, 2)).toEqual([
      { device: 0, headStart: 0, headEnd: 8, kvHeadStart: 0, kvHeadEnd: 2 },
      { device: 1, headStart: 8, headEnd: 12, kvHeadStart: 2, kvHeadEnd: 3 },
    ]);
    for (const [hq, hkv, p] of [
      [8, 2, 2],
      [12, 6, 4],
      [32, 8, 3],
      [6, 1, 1],
    ] as const) {
      const shards = planHeadShards(hq, hkv, p);
      const g = hq / hkv;
      // Contiguous cover of all heads; every device's heads read exactly its kv heads.
      expect(shards[0]!.headStart).toBe(0);
      expect(shards.at(-1)!.headEnd).toBe(hq);
      for (let i = 0; i < shards.length; i++) {
        const s = shards[i]!;
        if (i > 0) expect(s.headStart).toBe(shards[i - 1]!.headEnd);
        expect(s.headEnd).toBeGreaterThan(s.headStart);
        expect(s.kvHeadStart).toBe(s.headStart / g);
        expect(s.kvHeadEnd).toBe(s.headEnd / g);
        expect(Math.floor(s.headStart / g)).toBe(s.kvHeadStart);
        expect(Math.floor((s.headEnd - 1) / g)).toBe(s.kvHeadEnd - 1);
      }
      const sizes = shards.map((s) => s.kvHeadEnd - s.kvHeadStart);
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    }
  });

  it('rejects P < 1, P > kv heads, non-integers and uneven groups, naming the argument', () => {
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e as ValueError;
      }
      throw new Error('no error');
    };
    expect(err(() => planHeadShards(8, 8, 0))).toBeInstanceOf(ValueError);
    expect(err(() => planHeadShards(8, 8, 0)).argument).toBe('devices');
    expect(err(() => planHeadShards(8, 8, 1.5)).argument).toBe('devices');
    expect(err(() => planHeadShards(8, 2, 3)).message).toBe(
      'devices: expected at most 2 (one whole GQA group of 4 query heads per device at least; hq = 8, hkv = 2), got 3',
    );
    expect(err(() => planHeadShards(4, 4, 5)).message).toContain('expected at most 4');
    expect(err(() => planHeadShards(6, 4, 1)).argument).toBe('hkv');
  });
});

describe('planRowTiles / planTiledAllReduce', () => {
  it('cuts each batch entry into row tiles', () => {
    const tiles = planRowTiles(2, 5, 2);
    expect(tiles.map((t) => [t.index, t.batch, t.rowStart, t.rowEnd])).toEqual([
      [0, 0, 0, 2],
      [1, 0, 2, 4],
      [2, 0, 4, 5],
      [3, 1, 0, 2],
      [4, 1, 2, 4],
      [5, 1, 4, 5],
    ]);
  });

  it('cuts the columns into P contiguous chunks, the first dModel mod P one wider', () => {
    expect(planColumnChunks(10, 3).map((c) => [c.start, c.end])).toEqual([
      [0, 4],
      [4, 7],
      [7, 10],
    ]);
    expect(planColumnChunks(2, 3).map((c) => c.end - c.start)).toEqual([1, 1, 0]);
    expect(planColumnChunks(7, 1)).toEqual([{ device: 0, start: 0, end: 7 }]);
  });

  it('every output element reduced by exactly one device; slots', () => {
    for (const [batch, seqQ, tileRows, devices, dModel] of [
      [1, 129, 16, 3, 20],
      [3, 7, 64, 4, 9],
      [2, 100, 10, 1, 5],
    ] as const) {
      const plan = planTiledAllReduce({ batch, hq: 12, hkv: 12, seqQ, dModel, devices, tileRows });
      expect(plan.tileRows).toBe(Math.min(seqQ, tileRows));
      const rows = plan.tiles.reduce((a, t) => a + t.rowEnd - t.rowStart, 0);
      expect(rows).toBe(batch * seqQ);
      const cover = new Array<number>(dModel).fill(0);
      for (const c of plan.chunks) for (let j = c.start; j < c.end; j++) cover[j]!++;
      expect(cover.every((n) => n === 1)).toBe(true);
      const widths = plan.chunks.map((c) => c.end - c.start);
      expect(Math.max(...widths) - Math.min(...widths)).toBeLessThanOrEqual(1);
      expect(plan.slots).toBe(Math.min(4, plan.tiles.length));
      expect(plan.overlap).toBe(true);
    }
    const off = planTiledAllReduce({
      batch: 1,
      hq: 4,
      hkv: 4,
      seqQ: 100,
      dModel: 8,
      devices: 2,
      overlap: false,
      tileRows: 8,
    });
    expect(off.slots).toBe(13);
    expect(off.tiles).toHaveLength(13);
  });

  it('rejects bad fields with ValueError naming them', () => {
    const base = { batch: 1, hq: 4, hkv: 4, seqQ: 8, dModel: 8, devices: 2 };
    for (const [field, value] of [
      ['batch', 0],
      ['seqQ', -1],
      ['tileRows', 0],
      ['slots', 2.5],
      ['overlap', 'yes'],
      ['devices', 5],
      ['dModel', 0],
    ] as const) {
      expect(() => planTiledAllReduce({ ...base, [field]: value } as never)).toThrow(
        expect.objectContaining({ name: 'ValueError', argument: field }),
      );
    }
  });
});

describe('tileKeyLength', () => {
  it('is the causal prefix, clamped to [0, Nk]', () => {
    expect(tileKeyLength({ rowStart: 0, rowEnd: 4 }, 10, 10, true)).toBe(4);
    expect(tileKeyLength({ rowStart: 8, rowEnd: 10 }, 10, 10, true)).toBe(10);
    // Nk > Nq: the queries are the last Nq positions.
    expect(tileKeyLength({ rowStart: 0, rowEnd: 2 }, 4, 10, true)).toBe(8);
    // Nq > Nk: the first Nq - Nk rows see no key.
    expect(tileKeyLength({ rowStart: 0, rowEnd: 3 }, 10, 4, true)).toBe(0);
    expect(tileKeyLength({ rowStart: 6, rowEnd: 8 }, 10, 4, true)).toBe(2);
    expect(tileKeyLength({ rowStart: 6, rowEnd: 8 }, 10, 4, false)).toBe(4);
  });
});
