import {
  AllocationError,
  AttnkitError,
  DTypeError,
  Rng,
  ShapeError,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { describe, expect, it } from 'vitest';
import { CacheFullError } from './errors.js';
import { KvCache, type KvCacheDType, type KvCacheOptions } from './kv-cache.js';

/** Everything a caller can observe, copied: two snapshots are equal iff nothing changed. */
function snapshot(cache: KvCache) {
  const ids = cache.sequenceIds();
  return {
    ids,
    lengths: ids.map((id) => cache.length(id)),
    tables: ids.map((id) => Array.from(cache.blockTable(id))),
    pagesInUse: cache.pagesInUse,
    freePages: cache.freePages,
    k: cache.kPool.data<KvCacheDType>().slice(),
    v: cache.vPool.data<KvCacheDType>().slice(),
  };
}

/**
 * pagesInUse = sum over live sequences of ceil(length / pageSize), pagesInUse + freePages =
 * numPages, and the block tables are disjoint sets of valid page ids.
 */
function expectInvariants(cache: KvCache): void {
  let sum = 0;
  const seen = new Set<number>();
  for (const id of cache.sequenceIds()) {
    const table = cache.blockTable(id);
    const pages = Math.ceil(cache.length(id) / cache.pageSize);
    expect(table.length, `sequence ${id}'s block table`).toBe(pages);
    sum += pages;
    for (const page of table) {
      expect(page >= 0 && page < cache.numPages, `page ${page} in the pool`).toBe(true);
      expect(seen.has(page), `page ${page} held twice`).toBe(false);
      seen.add(page);
    }
  }
  expect(cache.pagesInUse).toBe(sum);
  expect(cache.pagesInUse + cache.freePages).toBe(cache.numPages);
}

/** Raw storage (f16 as bits) of a tensor, copied. */
function raw(t: Tensor): Float32Array | Uint16Array {
  return (t.data() as Float32Array | Uint16Array).slice();
}

function concat(
  parts: (Float32Array | Uint16Array)[],
  dtype: KvCacheDType,
): Float32Array | Uint16Array {
  const out =
    dtype === 'f32'
      ? new Float32Array(parts.reduce((a, p) => a + p.length, 0))
      : new Uint16Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Bit-exact equality, as one cheap check (toEqual walks typed arrays element by element). */
function expectSameElements(
  got: Float32Array | Uint16Array,
  want: Float32Array | Uint16Array,
  what: string,
) {
  expect(got.constructor, what).toBe(want.constructor);
  expect(got.length, what).toBe(want.length);
  const at = got.findIndex((x, i) => !Object.is(x, want[i]));
  expect(at, `${what}: first differing element`).toBe(-1);
}

/** The cache is as `before` saw it: sequences, lengths, block tables, counts and both pools. */
function expectUnchanged(cache: KvCache, before: ReturnType<typeof snapshot>) {
  const { k, v, ...now } = snapshot(cache);
  const { k: k0, v: v0, ...then } = before;
  expect(now).toEqual(then);
  expectSameElements(k, k0, 'kPool');
  expectSameElements(v, v0, 'vPool');
}

const base: KvCacheOptions = {
  numKvHeads: 2,
  headDim: 3,
  valueDim: 5,
  pageSize: 4,
  numPages: 6,
  dtype: 'f32',
};

describe('KvCache: construction', () => {
  it('allocates the pools [numPages, pageSize, Hkv, D|Dv] in the storage dtype', () => {
    const cache = new KvCache({ ...base, dtype: 'f16' });
    expect(cache.kPool.shape).toEqual([6, 4, 2, 3]);
    expect(cache.vPool.shape).toEqual([6, 4, 2, 5]);
    expect(cache.kPool.dtype).toBe('f16');
    expect(cache.kPool.device).toBe('cpu');
    expect(cache.pagesInUse).toBe(0);
    expect(cache.freePages).toBe(6);
    expect(cache.numLayers).toBe(1);
  });

  it('defaults pageSize to 16 and valueDim to headDim', () => {
    const cache = new KvCache({ numKvHeads: 1, headDim: 8, numPages: 2, dtype: 'f32' });
    expect(cache.pageSize).toBe(16);
    expect(cache.valueDim).toBe(8);
    expect(cache.vPool.shape).toEqual([2, 16, 1, 8]);
  });

  it.each([
    [{ numKvHeads: 0 }, ValueError, 'numKvHeads'],
    [{ headDim: 2.5 }, ValueError, 'headDim'],
    [{ valueDim: -1 }, ValueError, 'valueDim'],
    [{ pageSize: 12 }, ValueError, 'pageSize'],
    [{ pageSize: 0 }, ValueError, 'pageSize'],
    [{ numPages: 0 }, ValueError, 'numPages'],
    [{ numPages: 2 ** 28, pageSize: 16 }, ValueError, 'numPages'],
    [{ numLayers: 2 }, ValueError, 'numLayers'],
    [{ dtype: 'bf16' }, DTypeError, 'dtype'],
    [{ pagesize: 16 }, ValueError, 'pagesize'],
  ] as const)('rejects %o with a typed error naming the option', (patch, Err, argument) => {
    const make = () => new KvCache({ ...base, ...patch } as unknown as KvCacheOptions);
    expect(make).toThrow(Err);
    try {
      make();
    } catch (e) {
      expect((e as AttnkitError).argument).toBe(argument);
      expect((e as Error).message).toMatch(new RegExp(`^${argument}: `));
    }
  });

  it('accepts pageSize 1 and 64', () => {
    expect(new KvCache({ ...base, pageSize: 1 }).kPool.shape[1]).toBe(1);
    expect(new KvCache({ ...base, pageSize: 64 }).kPool.shape[1]).toBe(64);
  });

  it('surfaces a pool the runtime cannot hold as an AllocationError', () => {
    // 2^26 pages x 16 tokens x 64 heads x 128 dims = 2^43 f32 elements: past any typed array.
    const make = () =>
      new KvCache({ numKvHeads: 64, headDim: 128, pageSize: 16, numPages: 2 ** 26, dtype: 'f32' });
    expect(make).toThrow(AllocationError);
    expect(make).toThrow(/\[67108864, 16, 64, 128\] of f32/);
  });
});

describe('KvCache: append, gather, block tables', () => {
  it('fills pages in order across page boundaries and gathers what was appended', () => {
    const rng = new Rng(1);
    const cache = new KvCache(base);
    const a = cache.addSequence();
    const b = cache.addSequence();
    const k1 = rng.randn([3, 2, 3]);
    const v1 = rng.randn([3, 2, 5]);
    cache.append(a, k1, v1);
    expect(cache.blockTable(a)).toEqual(Int32Array.of(0));
    const k2 = rng.randn([6, 2, 3]);
    const v2 = rng.randn([6, 2, 5]);
    cache.append(b, k2, v2); // 6 tokens: pages 1 and 2
    const k3 = rng.randn([2, 2, 3]);
    const v3 = rng.randn([2, 2, 5]);
    cache.append(a, k3, v3); // 3 + 2 = 5 tokens: crosses into page 3
    expect(cache.blockTable(a)).toEqual(Int32Array.of(0, 3));
    expect(cache.blockTable(b)).toEqual(Int32Array.of(1, 2));
    expect(cache.length(a)).toBe(5);
    expect(cache.length(b)).toBe(6);
    expect(cache.pagesInUse).toBe(4);
    const ga = cache.gather(a);
    expect(ga.k.shape).toEqual([5, 2, 3]);
    expect(ga.v.shape).toEqual([5, 2, 5]);
    expect(raw(ga.k)).toEqual(concat([raw(k1), raw(k3)], 'f32'));
    expect(raw(ga.v)).toEqual(concat([raw(v1), raw(v3)], 'f32'));
    expect(raw(cache.gather(b).k)).toEqual(raw(k2));
    // Token 4 of a is row 0 of page 3 in the pool: what a kernel reads through the table.
    expect(cache.kPool.get(3, 0, 1, 2)).toBe(k3.get(1, 1, 2));
    expectInvariants(cache);
  });

  it('pads block tables with -1 to the longest table, lengths beside', () => {
    const rng = new Rng(2);
    const cache = new KvCache(base);
    const [a, b, c] = [cache.addSequence(), cache.addSequence(), cache.addSequence()];
    cache.append(a, rng.randn([9, 2, 3]), rng.randn([9, 2, 5]));
    cache.append(c, rng.randn([1, 2, 3]), rng.randn([1, 2, 5]));
    const t = cache.blockTables([c, a, b, a]);
    expect(t.maxPages).toBe(3);
    expect(t.lengths).toEqual(Int32Array.of(1, 9, 0, 9));
    expect(Array.from(t.blockTable)).toEqual([3, -1, -1, 0, 1, 2, -1, -1, -1, 0, 1, 2]);
    const empty = cache.blockTables([b]);
    expect(empty).toEqual({
      blockTable: new Int32Array(0),
      maxPages: 0,
      lengths: Int32Array.of(0),
    });
    expect(cache.blockTables([]).lengths.length).toBe(0);
  });

  it('reserve takes the pages an append would and returns the pool rows the caller writes, merged where pages are adjacent', () => {
    const rng = new Rng(12);
    const cache = new KvCache(base);
    const [a, b] = [cache.addSequence(), cache.addSequence()];
    expect([cache.pagesNeeded(a, 0), cache.pagesNeeded(a, 3), cache.pagesNeeded(a, 5)]).toEqual([
      0, 1, 2,
    ]);
    // a: 3 tokens in page 0 (rows 0-2).
    expect(cache.reserve(a, 3)).toEqual([{ token: 0, row: 0, count: 3 }]);
    // Room for 1 more in page 0, then a page per 4.
    expect([cache.pagesNeeded(a, 1), cache.pagesNeeded(a, 2), cache.pagesNeeded(a, 5)]).toEqual([
      0, 1, 1,
    ]);
    // b: 6 tokens over pages 1 and 2, adjacent in the pool: one run of rows 4-9.
    expect(cache.reserve(b, 6)).toEqual([{ token: 0, row: 4, count: 6 }]);
    // a: 2 more, row 3 of page 0 then page 3 (rows 12-15): two runs.
    expect(cache.reserve(a, 2)).toEqual([
      { token: 0, row: 3, count: 1 },
      { token: 1, row: 12, count: 1 },
    ]);
    expect(cache.length(a)).toBe(5);
    expect(cache.blockTable(a)).toEqual(Int32Array.of(0, 3));
    expectInvariants(cache);
    // Rows written where reserve said are what gather (and the kernels) read.
    const want = rng.randn([5, 2, 3]);
    const runsOfA = [
      { token: 0, row: 0, count: 3 },
      { token: 3, row: 3, count: 1 },
      { token: 4, row: 12, count: 1 },
    ];
    const pool = cache.kPool.data<'f32'>();
    const src = want.data<'f32'>();
    for (const r of runsOfA)
      pool.set(src.subarray(r.token * 6, (r.token + r.count) * 6), r.row * 6);
    expect(raw(cache.gather(a).k)).toEqual(raw(want));
    // Refusals change nothing: a full pool (2 pages free, 3 needed), n not a positive integer, an unknown id.
    const before = snapshot(cache);
    const full = (() => {
      try {
        cache.reserve(b, 11);
      } catch (e) {
        return e;
      }
    })() as CacheFullError;
    expect(full).toBeInstanceOf(CacheFullError);
    expect([full.argument, full.pagesNeeded, full.pagesFree]).toEqual(['n', 3, 2]);
    for (const n of [0, -1, 1.5, Number.NaN, '2'])
      expect(() => cache.reserve(a, n as number)).toThrow(
        expect.objectContaining({ name: 'ValueError', argument: 'n' }),
      );
    expect(() => cache.reserve(99, 1)).toThrow(
      expect.objectContaining({ name: 'ValueError', argument: 'id' }),
    );
    for (const n of [-1, 0.5, Number.NaN])
      expect(() => cache.pagesNeeded(a, n)).toThrow(
        expect.objectContaining({ name: 'ValueError', argument: 'n' }),
      );
    expect(() => cache.pagesNeeded(99, 1)).toThrow(
      expect.objectContaining({ name: 'ValueError', argument: 'id' }),
    );
    expectUnchanged(cache, before);
  });

  it('gathers an empty sequence as [0, Hkv, D] tensors', () => {
    const cache = new KvCache(base);
    const { k, v } = cache.gather(cache.addSequence());
    expect(k.shape).toEqual([0, 2, 3]);
    expect(v.shape).toEqual([0, 2, 5]);
  });

  it('copies f16 bit patterns exactly and reads strided k/v', () => {
    const rng = new Rng(3);
    const cache = new KvCache({ ...base, dtype: 'f16' });
    const id = cache.addSequence();
    // [Hkv, n, D] transposed to [n, Hkv, D]: not contiguous.
    const k = rng.randn([2, 7, 3], 'f16').transpose(0, 1);
    const v = rng.randn([2, 7, 5], 'f16').transpose(0, 1);
    expect(k.isContiguous()).toBe(false);
    cache.append(id, k, v);
    const g = cache.gather(id);
    expect(g.k.dtype).toBe('f16');
    expect(raw(g.k)).toEqual(raw(k.contiguous()));
    expect(raw(g.v)).toEqual(raw(v.contiguous()));
  });

  it('appends a view of its own pool without reading rows it already overwrote', () => {
    const rng = new Rng(4);
    const cache = new KvCache({ ...base, pageSize: 2 });
    const a = cache.addSequence();
    cache.append(a, rng.randn([5, 2, 3]), rng.randn([5, 2, 5])); // pool rows 0..4 (pages 0..2)
    const b = cache.addSequence();
    // Pool rows 4..9 go to b's pages 3..5 (rows 6..11): page 3 is written before rows 6, 7 of
    // the source are read, so the append must copy its source first.
    const k = cache.kPool.reshape([12, 2, 3]).slice(0, 4, 10);
    const v = cache.vPool.reshape([12, 2, 5]).slice(0, 4, 10);
    const [kBefore, vBefore] = [raw(k), raw(v)];
    cache.append(b, k, v);
    expect(cache.blockTable(b)).toEqual(Int32Array.of(3, 4, 5));
    expect(raw(cache.gather(b).k)).toEqual(kBefore);
    expect(raw(cache.gather(b).v)).toEqual(vBefore);
  });

  it('frees pages on removeSequence and reuses them', () => {
    const rng = new Rng(5);
    const cache = new KvCache(base);
    const a = cache.addSequence();
    const b = cache.addSequence();
    cache.append(a, rng.randn([8, 2, 3]), rng.randn([8, 2, 5])); // pages 0, 1
    cache.append(b, rng.randn([4, 2, 3]), rng.randn([4, 2, 5])); // page 2
    cache.removeSequence(a);
    expect(cache.pagesInUse).toBe(1);
    expect(cache.sequenceIds()).toEqual([b]);
    const c = cache.addSequence();
    expect(c).not.toBe(a); // ids are never reused
    const k = rng.randn([5, 2, 3]);
    cache.append(c, k, rng.randn([5, 2, 5]));
    expect(cache.blockTable(c)).toEqual(Int32Array.of(0, 1));
    expect(raw(cache.gather(c).k)).toEqual(raw(k));
    expectInvariants(cache);
  });
});

describe.each(['f32', 'f16'] as const)(
  'KvCache (%s): bad input leaves the cache unchanged',
  (dtype) => {
    const other = dtype === 'f32' ? 'f16' : 'f32';

    /** Two sequences (6 tokens over 2 pages, 3 tokens in 1 page) and one removed: 3 of 6 pages used. */
    function setup() {
      const rng = new Rng(6);
      const cache = new KvCache({ ...base, dtype });
      const a = cache.addSequence();
      const b = cache.addSequence();
      const gone = cache.addSequence();
      cache.append(a, rng.randn([6, 2, 3], dtype), rng.randn([6, 2, 5], dtype));
      cache.append(b, rng.randn([3, 2, 3], dtype), rng.randn([3, 2, 5], dtype));
      cache.append(gone, rng.randn([1, 2, 3], dtype), rng.randn([1, 2, 5], dtype));
      cache.removeSequence(gone);
      return { cache, a, b, gone, rng };
    }

    const k = (n: number, h = 2, d = 3, dt: string = dtype) =>
      Tensor.zeros([n, h, d], dt as KvCacheDType);
    const v = (n: number, h = 2, d = 5, dt: string = dtype) =>
      Tensor.zeros([n, h, d], dt as KvCacheDType);

    it.each([
      ['an unknown id', (c: KvCache) => c.append(99, k(1), v(1)), ValueError, 'id', /got 99/],
      [
        'a removed id',
        (c: KvCache, s: { gone: number }) => c.append(s.gone, k(1), v(1)),
        ValueError,
        'id',
        /sequence 2 was removed/,
      ],
      ['a non-integer id', (c: KvCache) => c.append(0.5, k(1), v(1)), ValueError, 'id', /got 0\.5/],
      [
        'k with other heads',
        (c: KvCache, s: { a: number }) => c.append(s.a, k(2, 3), v(2)),
        ShapeError,
        'k',
        /expected \[n >= 1, 2 \(numKvHeads\), 3 \(headDim\)\], got \[2, 3, 3\]/,
      ],
      [
        'k with another headDim',
        (c: KvCache, s: { a: number }) => c.append(s.a, k(2, 2, 4), v(2)),
        ShapeError,
        'k',
        /got \[2, 2, 4\]/,
      ],
      [
        'v with another valueDim',
        (c: KvCache, s: { a: number }) => c.append(s.a, k(2), v(2, 2, 3)),
        ShapeError,
        'v',
        /5 \(valueDim\)\], got \[2, 2, 3\]/,
      ],
      [
        'k of rank 2',
        (c: KvCache, s: { a: number }) => c.append(s.a, Tensor.zeros([2, 6], dtype), v(2)),
        ShapeError,
        'k',
        /got \[2, 6\]/,
      ],
      [
        'zero new tokens',
        (c: KvCache, s: { a: number }) => c.append(s.a, k(0), v(0)),
        ShapeError,
        'k',
        /got \[0, 2, 3\]/,
      ],
      [
        'k in another dtype',
        (c: KvCache, s: { a: number }) => c.append(s.a, k(2, 2, 3, other), v(2)),
        DTypeError,
        'k',
        new RegExp(`expected ${dtype} \\(the cache's dtype\\), got ${other}`),
      ],
      [
        'v in another dtype',
        (c: KvCache, s: { a: number }) => c.append(s.a, k(2), v(2, 2, 5, other)),
        DTypeError,
        'v',
        new RegExp(`got ${other}`),
      ],
      [
        'k and v of different lengths',
        (c: KvCache, s: { a: number }) => c.append(s.a, k(3), v(2)),
        ShapeError,
        'v',
        /expected 3 tokens \(as many as k\), got \[2, 2, 5\]/,
      ],
      [
        'k not a tensor',
        (c: KvCache, s: { a: number }) => c.append(s.a, [1, 2] as unknown as Tensor, v(2)),
        ValueError,
        'k',
        /got \[1, 2\]/,
      ],
      // b holds 3 tokens in 1 page; 3 pages are free: 3 + 14 = 17 tokens need 5 pages, 4 more.
      [
        'a full pool',
        (c: KvCache, s: { b: number }) => c.append(s.b, k(14), v(14)),
        CacheFullError,
        'k',
        /needs 4 more pages of 4 tokens, but 3 of 6 are free/,
      ],
      ['removing an unknown id', (c: KvCache) => c.removeSequence(-1), ValueError, 'id', /got -1/],
      [
        'removing twice',
        (c: KvCache, s: { gone: number }) => c.removeSequence(s.gone),
        ValueError,
        'id',
        /was removed/,
      ],
      [
        'a block table of a removed id',
        (c: KvCache, s: { a: number; gone: number }) => c.blockTables([s.a, s.gone]),
        ValueError,
        'ids[1]',
        /ids\[1\]: sequence 2 was removed/,
      ],
    ] as const)(
      '%s: a typed error naming the argument, nothing taken',
      (_, call, Err, argument, message) => {
        const s = setup();
        const before = snapshot(s.cache);
        let error: unknown;
        try {
          (call as (c: KvCache, s: ReturnType<typeof setup>) => void)(s.cache, s);
        } catch (e) {
          error = e;
        }
        expect(error).toBeInstanceOf(Err);
        expect(error).toBeInstanceOf(AttnkitError);
        expect((error as AttnkitError).argument).toBe(argument);
        expect((error as Error).message).toMatch(message);
        expectUnchanged(s.cache, before);
        expectInvariants(s.cache);
      },
    );

    it('takes the last free pages exactly, then refuses one more token', () => {
      const s = setup();
      s.cache.append(s.b, k(13), v(13)); // 3 + 13 = 16 tokens: 4 pages, the pool is full
      expect(s.cache.freePages).toBe(0);
      expectInvariants(s.cache);
      const before = snapshot(s.cache);
      let error: CacheFullError | undefined;
      try {
        s.cache.append(s.a, k(3), v(3)); // a: 6 + 2 fit its 2 pages, the 3rd token does not
      } catch (e) {
        error = e as CacheFullError;
      }
      expect(error).toBeInstanceOf(CacheFullError);
      expect(error!.pagesNeeded).toBe(1);
      expect(error!.pagesFree).toBe(0);
      expectUnchanged(s.cache, before);
      s.cache.append(s.a, k(2), v(2)); // fills a's last page without a new one
      expect(s.cache.length(s.a)).toBe(8);
      expectInvariants(s.cache);
    });
  },
);

describe.each([
  { dtype: 'f32', pageSize: 4, numPages: 10, seed: 11 },
  { dtype: 'f16', pageSize: 4, numPages: 10, seed: 12 },
  { dtype: 'f16', pageSize: 1, numPages: 24, seed: 13 },
  { dtype: 'f32', pageSize: 16, numPages: 6, seed: 14 },
  { dtype: 'f16', pageSize: 64, numPages: 3, seed: 15 },
] as const)(
  'KvCache: random add / append / remove ($dtype, pageSize $pageSize, $numPages pages)',
  ({ dtype, pageSize: P, numPages, seed }) => {
    it('keeps pagesInUse = sum of ceil(length / pageSize) and gathers exactly what was appended', () => {
      const rng = new Rng(seed);
      const [H, D, Dv] = [rng.int(1, 4), rng.int(1, 9), rng.int(1, 9)];
      const cache = new KvCache({
        numKvHeads: H,
        headDim: D,
        valueDim: Dv,
        pageSize: P,
        numPages,
        dtype,
      });
      const model = new Map<
        number,
        { k: (Float32Array | Uint16Array)[]; v: (Float32Array | Uint16Array)[] }
      >();
      const everUsed = new Set<number>();
      const seen = { appends: 0, filled: 0, crossed: 0, refused: 0, removed: 0, reused: 0 };
      for (let step = 0; step < 400; step++) {
        const ids = [...model.keys()];
        const r = rng.uniform();
        if (ids.length === 0 || r < 0.1) {
          model.set(cache.addSequence(), { k: [], v: [] });
        } else if (r < 0.22) {
          const id = ids[rng.int(0, ids.length)]!;
          cache.removeSequence(id);
          model.delete(id);
          seen.removed++;
        } else {
          const id = ids[rng.int(0, ids.length)]!;
          const len = cache.length(id);
          const room = (P - (len % P)) % P; // free rows in the sequence's last page
          const pick = rng.int(0, 4);
          const n =
            pick === 0 && room > 0
              ? room // exactly fills the last page
              : pick === 1
                ? room + P * rng.int(0, 2) + rng.int(1, P + 1) // crosses at least one boundary
                : pick === 2
                  ? room + P // ends exactly on a page boundary one page further
                  : rng.int(1, 2 * P + 2);
          // A third of the appends come as strided views ([Hkv, n, D] transposed).
          const strided = rng.uniform() < 0.33;
          const k = strided
            ? rng.randn([H, n, D], dtype).transpose(0, 1)
            : rng.randn([n, H, D], dtype);
          const v = strided
            ? rng.randn([H, n, Dv], dtype).transpose(0, 1)
            : rng.randn([n, H, Dv], dtype);
          const needed = Math.ceil((len + n) / P) - Math.ceil(len / P);
          if (needed > cache.freePages) {
            const before = snapshot(cache);
            expect(() => cache.append(id, k, v)).toThrow(CacheFullError);
            expectUnchanged(cache, before);
            seen.refused++;
          } else {
            const pagesBefore = cache.blockTable(id).length;
            cache.append(id, k, v);
            const taken = cache.blockTable(id).subarray(pagesBefore);
            expect(taken.length).toBe(needed);
            for (const page of taken) {
              if (everUsed.has(page)) seen.reused++;
              everUsed.add(page);
            }
            model.get(id)!.k.push(raw(k));
            model.get(id)!.v.push(raw(v));
            seen.appends++;
            if ((len + n) % P === 0) seen.filled++;
            // Its first and last rows land in different pages.
            if (Math.floor(len / P) !== Math.floor((len + n - 1) / P)) seen.crossed++;
          }
        }
        expectInvariants(cache);
        for (const [id, m] of model) {
          const g = cache.gather(id);
          expect(g.k.dtype).toBe(dtype);
          expectSameElements(raw(g.k), concat(m.k, dtype), `k of sequence ${id}`);
          expectSameElements(raw(g.v), concat(m.v, dtype), `v of sequence ${id}`);
        }
      }
      // The sequence exercised every path it is meant to (a change of seed that skips one fails).
      for (const [what, count] of Object.entries(seen)) expect(count, what).toBeGreaterThan(0);
    });
  },
);
