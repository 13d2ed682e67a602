import {
  type AttentionOptions,
  resolveAttentionProblem,
  softmaxAttentionReference,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, afterEach, beforeEach, describe, expect, test } from 'vitest';
import { tiledForwardTs } from '../cpu/run.js';
import { sigmoidBias, type TiledHooks } from '../hooks.js';
import { buildAux } from './aux.js';
import {
  buildDecodeStreamK,
  DECODE_BK,
  DECODE_THREADS,
  DECODE_WIDE_THREADS,
  type DecodeTuning,
  decodeLayout,
  decodeShader,
  decodeSpecFor,
  decodeWorkgroupBytes,
  inDecodeRegime,
  setDecodeTuning,
} from './decode.js';
import { tiledForwardWebGpu } from './host.js';

// The decode kernel (decode.ts) through tiledForwardWebGpu vs the float64 reference. Outputs and
// the partials' scratch start as NaN (poisonOutputs), so every o / lse element and every slot
// the combine reads must have been written.
const ctx = await webGpuTestContext();
if (ctx) ctx.poisonOutputs = true;
afterAll(() => ctx?.destroy());

type Partition =
  | { kind: 'fa2' }
  | { kind: 'splitK'; splits: number }
  | { kind: 'streamK'; workers: number };
const PARTITIONS: Partition[] = [
  { kind: 'fa2' },
  { kind: 'splitK', splits: 3 },
  { kind: 'streamK', workers: 5 },
];
const label = (s: Partition) =>
  s.kind === 'fa2' ? 'fa2' : s.kind === 'splitK' ? `splitK ${s.splits}` : `streamK ${s.workers}`;

interface Case {
  name: string;
  dtype?: 'f32' | 'f16' | 'bf16';
  hq: number;
  hkv: number;
  nq: number;
  nk: number;
  d?: number;
  dv?: number;
  batch?: number;
  attn?: AttentionOptions;
  /** THD with these (q, k) lengths per sequence. */
  varlen?: [number[], number[]];
  /** Paged K/V with this page size (pages shuffled in the pool). */
  page?: number;
}

const CASES: Case[] = [
  { name: 'gqa 8:1 nq 1, nk odd', hq: 8, hkv: 1, nq: 1, nk: 203 },
  { name: 'gqa 4:1 nq 3, causal', hq: 8, hkv: 2, nq: 3, nk: 131, attn: { causal: true } },
  {
    name: 'mqa nq 4, window',
    hq: 6,
    hkv: 1,
    nq: 4,
    nk: 150,
    attn: { causal: true, window: [37, 0] },
  },
  { name: 'mha nq 2, d 6 dv 10', hq: 3, hkv: 3, nq: 2, nk: 97, d: 6, dv: 10 },
  { name: 'one key', hq: 4, hkv: 2, nq: 1, nk: 1 },
  { name: 'nk a multiple of the tile', hq: 2, hkv: 1, nq: 1, nk: 2 * DECODE_BK },
  {
    name: 'f16 gqa 8:1 causal',
    dtype: 'f16',
    hq: 8,
    hkv: 1,
    nq: 2,
    nk: 171,
    attn: { causal: true },
  },
  { name: 'f16 mha d 6', dtype: 'f16', hq: 2, hkv: 2, nq: 1, nk: 77, d: 6, dv: 6 },
  {
    name: 'varlen, an empty sequence, causal',
    hq: 4,
    hkv: 1,
    nq: 0,
    nk: 0,
    varlen: [
      [2, 0, 1, 3],
      [70, 0, 0, 141],
    ],
    attn: { causal: true },
  },
  // Paged: varlen's key lengths are the sequences' lengths (one of them empty); Nq as nq.
  {
    name: 'paged, shuffled pages, causal',
    hq: 4,
    hkv: 2,
    nq: 2,
    nk: 0,
    page: 16,
    varlen: [[], [45, 130, 0]],
    attn: { causal: true },
  },
  {
    name: 'f16 paged, window',
    dtype: 'f16',
    hq: 8,
    hkv: 1,
    nq: 1,
    nk: 0,
    page: 8,
    // An empty sequence between: its pieces have no keys and no block-table entries.
    varlen: [[], [99, 0, 20]],
    attn: { causal: true, window: [30, 0] },
  },
  // The layouts of the bandwidth path: 16-byte chunks, several chunks per lane, row slices.
  {
    name: 'f32 d 128 (two chunks per lane), nk a tile + 1',
    hq: 4,
    hkv: 2,
    nq: 1,
    nk: DECODE_BK + 1,
    d: 128,
  },
  {
    name: 'f16 d 128 dv 64 (8-half chunks, Dv != D), causal',
    dtype: 'f16',
    hq: 8,
    hkv: 2,
    nq: 2,
    nk: 150,
    d: 128,
    dv: 64,
    attn: { causal: true },
  },
  { name: 'bf16 d 64 dv 128', dtype: 'bf16', hq: 4, hkv: 4, nq: 1, nk: 97, d: 64, dv: 128 },
  { name: 'f16 d 12 (4-half chunks)', dtype: 'f16', hq: 2, hkv: 1, nq: 3, nk: 70, d: 12 },
  { name: 'mqa 64 rows (row slices)', hq: 64, hkv: 1, nq: 1, nk: 130, d: 32, batch: 1 },
  {
    name: 'gqa 8:1 nq 4 (32 rows), window',
    hq: 8,
    hkv: 1,
    nq: 4,
    nk: 200,
    attn: { causal: true, window: [50, 0] },
    batch: 1,
  },
];

const rng = new Rng(20261202);
const cu = (lens: number[]) => {
  const out = [0];
  for (const n of lens) out.push(out.at(-1)! + n);
  return out;
};

/** The case's inputs on the cpu and its attention options. */
function inputs(c: Case): { q: Tensor; k: Tensor; v: Tensor; attn: AttentionOptions } {
  const dtype = c.dtype ?? 'f32';
  const d = c.d ?? 16;
  const dv = c.dv ?? d;
  const attn: AttentionOptions = { ...c.attn };
  if (c.page !== undefined) {
    const lk = c.varlen![1];
    const lq = lk;
    const pagesOf = lk.map((n) => Math.ceil(n / c.page!));
    const maxPages = Math.max(1, ...pagesOf);
    const total = pagesOf.reduce((a, x) => a + x, 0) + 2;
    // Pages handed out in a shuffled order (and two never used).
    const order = Array.from({ length: total }, (_, i) => i);
    for (let i = total - 1; i > 0; i--) {
      const j = Math.floor(rng.uniform() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const table = new Int32Array(lk.length * maxPages).fill(-1);
    let next = 0;
    lk.forEach((_, b) => {
      for (let t = 0; t < pagesOf[b]!; t++) table[b * maxPages + t] = order[next++]!;
    });
    attn.paged = { pageSize: c.page, blockTable: table, lengths: Int32Array.from(lk) };
    // Paged K/V takes q as [B, Hq, Nq, D] (BHND).
    const q = rng.randn([lq.length, c.hq, c.nq, d], dtype);
    const k = rng.randn([total, c.page, c.hkv, d], dtype);
    const v = rng.randn([total, c.page, c.hkv, dv], dtype);
    return { q, k, v, attn };
  }
  if (c.varlen) {
    attn.layout = 'THD';
    attn.cuSeqlensQ = cu(c.varlen[0]);
    attn.cuSeqlensK = cu(c.varlen[1]);
    const q = rng.randn([attn.cuSeqlensQ.at(-1)!, c.hq, d], dtype);
    const k = rng.randn([attn.cuSeqlensK.at(-1)!, c.hkv, d], dtype);
    const v = rng.randn([attn.cuSeqlensK.at(-1)!, c.hkv, dv], dtype);
    return { q, k, v, attn };
  }
  const b = c.batch ?? 2;
  return {
    q: rng.randn([b, c.hq, c.nq, d], dtype),
    k: rng.randn([b, c.hkv, c.nk, d], dtype),
    v: rng.randn([b, c.hkv, c.nk, dv], dtype),
    attn,
  };
}

/** The case through tiledForwardWebGpu (decode kernel) under partition `s` vs float64. */
async function check(c: Case, s: Partition) {
  const { q, k, v, attn } = inputs(c);
  const want = softmaxAttentionReference(q, k, v, attn);
  const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx!)) as [Tensor, Tensor, Tensor];
  const p = resolveAttentionProblem(gq, gk, gv, attn);
  const hooks = {
    normalize: { kind: 'softmax' },
    scoreMods: [],
    ...(s.kind === 'fa2' ? {} : { schedule: s }),
  } as TiledHooks;
  expect(inDecodeRegime(p, hooks, {}, ctx!.limits.maxComputeWorkgroupStorageSize)).toBe(true);
  const { o, lse } = await tiledForwardWebGpu(p, hooks, gq, gk, gv);
  const tol = toleranceFor({ dtype: c.dtype ?? 'f32' });
  expect(o.dtype).toBe(c.dtype ?? 'f32');
  const lseCpu = await lse!.toCpu();
  expectClose(await o.toCpu(), want.o, tol, `${c.name} o`);
  // Rows without keys: LSE -inf in both (expectClose counts infinities as non-finite).
  const got = lseCpu.toFloat64Array();
  const ref = want.lse.toFloat64Array();
  const fin = ref.map((x) => (Number.isFinite(x) ? x : 0));
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(ref[i]!)) expect(got[i], `lse ${i}`).toBe(-Infinity);
  }
  expectClose(
    Tensor.from(
      got.map((x, i) => (Number.isFinite(ref[i]!) ? x : 0)),
      [got.length],
    ),
    Tensor.from(fin, [fin.length]),
    tol,
    `${c.name} lse`,
  );
  for (const t of [gq, gk, gv, o, lse]) t?.dispose();
}

/**
 * The case with a pointwise normalisation (sigmoid with its per-sequence default bias, silu /
 * Nk) through the decode kernel under partition `s`, against the skeleton's TS loop with the
 * same hooks (itself checked against float64 in the families' conformance tests): o alone, no
 * lse, and the kernel is the decode kernel (inDecodeRegime).
 */
async function checkPointwise(c: Case, s: Partition, kind: 'sigmoid' | 'silu') {
  const { q, k, v, attn } = inputs(c);
  const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx!)) as [Tensor, Tensor, Tensor];
  const p = resolveAttentionProblem(gq, gk, gv, attn);
  const normalize =
    kind === 'sigmoid'
      ? { kind, bias: sigmoidBias(p) }
      : { kind, factor: 1 / Math.max(1, p.maxSeqK) };
  const hooks = {
    normalize,
    scoreMods: [],
    ...(s.kind === 'fa2' ? {} : { schedule: s }),
  } as TiledHooks;
  expect(inDecodeRegime(p, hooks, {}, ctx!.limits.maxComputeWorkgroupStorageSize)).toBe(true);
  const { o, lse } = await tiledForwardWebGpu(p, hooks, gq, gk, gv);
  expect(lse).toBeUndefined();
  const want = tiledForwardTs(
    resolveAttentionProblem(q, k, v, attn),
    { ...hooks, schedule: undefined } as TiledHooks,
    q,
    k,
    v,
  );
  expectClose(
    await o.toCpu(),
    want.o,
    toleranceFor({ dtype: c.dtype ?? 'f32' }),
    `${c.name} ${kind} o`,
  );
  for (const t of [gq, gk, gv, o]) t.dispose();
}

describe.skipIf(!ctx)(
  'decode kernel with a pointwise weight (sigmoid, silu) vs the TS loop',
  () => {
    const picked = [
      ...CASES.filter((c) =>
        /^(gqa 4:1 nq 3|mha nq 2|one key|f16 gqa 8:1|varlen|paged, shuffled|gqa 8:1 nq 4|mqa 64 rows|f32 d 128|bf16)/.test(
          c.name,
        ),
      ),
      // Nq past the native path's 4 (the WGSL regime takes up to 16 new rows).
      {
        name: 'gqa 2:1 nq 9 (18 rows), causal',
        hq: 4,
        hkv: 2,
        nq: 9,
        nk: 100,
        attn: { causal: true },
      },
    ];
    // Stream-K with 2 and 3 workers: ranges that cross sequences (and so sigmoid biases) on the
    // paged and varlen cases.
    const partitions: Partition[] = [
      ...PARTITIONS,
      { kind: 'streamK', workers: 2 },
      { kind: 'streamK', workers: 3 },
    ];
    for (const c of picked)
      for (const kind of ['sigmoid', 'silu'] as const)
        test.each(partitions.map((s) => [label(s), s] as const))(`${c.name}, ${kind}, %s`, (_, s) =>
          checkPointwise(c, s, kind),
        );

    test('a NaN key row makes NaN exactly the rows whose band holds it (sigmoid, silu)', async () => {
      // nq 4, causal, nk 100: rows 0 and 1 see keys [0, 97) and [0, 98); rows 2 and 3 key 98 too.
      const [hq, hkv, nq, nk, d] = [4, 2, 4, 100, 16];
      const q = rng.randn([1, hq, nq, d], 'f32');
      const k = rng.randn([1, hkv, nk, d], 'f32');
      const v = rng.randn([1, hkv, nk, d], 'f32');
      const kd = k.toFloat32Array();
      for (let h = 0; h < hkv; h++) kd.fill(Number.NaN, (h * nk + 98) * d, (h * nk + 99) * d);
      const kn = Tensor.from(kd, [1, hkv, nk, d]);
      const attn = { causal: true };
      const [gq, gk, gv] = [q, kn, v].map((t) => toWebGpu(t, ctx!)) as [Tensor, Tensor, Tensor];
      const p = resolveAttentionProblem(gq, gk, gv, attn);
      for (const kind of ['sigmoid', 'silu'] as const) {
        const normalize =
          kind === 'sigmoid' ? { kind, bias: sigmoidBias(p) } : { kind, factor: 1 / nk };
        for (const s of PARTITIONS) {
          const hooks = {
            normalize,
            scoreMods: [],
            ...(s.kind === 'fa2' ? {} : { schedule: s }),
          } as TiledHooks;
          const { o } = await tiledForwardWebGpu(p, hooks, gq, gk, gv);
          const got = (await o.toCpu()).toFloat64Array();
          for (let h = 0; h < hq; h++)
            for (let i = 0; i < nq; i++)
              for (let c = 0; c < d; c++) {
                const x = got[(h * nq + i) * d + c]!;
                const where = `${kind} ${label(s)} head ${h} row ${i}`;
                if (i < 2) expect(Number.isFinite(x), where).toBe(true);
                else expect(x, where).toBeNaN();
              }
          o.dispose();
        }
      }
      for (const t of [gq, gk, gv]) t.dispose();
    });
  },
);

describe.skipIf(!ctx)('decode kernel vs the float64 reference (poisoned outputs)', () => {
  for (const c of CASES) {
    test.each(PARTITIONS.map((s) => [label(s), s] as const))(`${c.name}, %s`, (_, s) =>
      check(c, s),
    );
  }
});

// The subgroup path's code (butterfly of subgroupShuffleXor, no barrier in the key loop) with
// each shuffle done through workgroup memory: llvmpipe has no subgroups.
describe.skipIf(!ctx)('decode kernel, emulated subgroup shuffles', () => {
  beforeEach(() => setDecodeTuning({ reduce: 'emulated' }));
  afterEach(() => setDecodeTuning(undefined));
  for (const c of CASES) {
    test.each(PARTITIONS.map((s) => [label(s), s] as const))(`${c.name}, %s`, (_, s) =>
      check(c, s),
    );
  }
});

/** Every case of `picked` under every tuning (setDecodeTuning), in every partition. */
function layoutTests(tunings: [string, DecodeTuning][], picked: typeof CASES) {
  afterEach(() => setDecodeTuning(undefined));
  for (const [name, tuning] of tunings)
    for (const c of picked)
      test.each(PARTITIONS.map((s) => [label(s), s] as const))(
        `${name}: ${c.name}, %s`,
        async (_, s) => {
          setDecodeTuning(tuning);
          await check(c, s);
        },
      );
}

describe.skipIf(!ctx)('decode kernel, other layouts', () => {
  const tunings: [string, DecodeTuning][] = [
    ['64 threads, unroll 1', { threads: 64, unroll: 1 }],
    ['128 threads, 8 lanes, unroll 8', { threads: 128, lanes: 8, unroll: 8 }],
    ['4 lanes (several chunks per lane), emulated', { lanes: 4, reduce: 'emulated' }],
    ['32 lanes (lanes past the chunks)', { lanes: 32 }],
    ['1 row per thread (more slices)', { rowsPerThread: 1 }],
    ['512 threads, 2 rows per thread', { threads: 512, rowsPerThread: 2 }],
    // Passes of more keys than a tile: keys past a piece's last tile are the next piece's.
    ['unroll 8 (a pass spans two tiles)', { unroll: 8 }],
    [
      '128 threads, 8 lanes, unroll 16, emulated',
      { threads: 128, lanes: 8, unroll: 16, reduce: 'emulated' },
    ],
  ];
  const picked = CASES.filter((c) =>
    /gqa 4:1|d 6 dv 10|f16 d 128 dv 64|bf16|64 rows|one key|paged, shuffled/.test(c.name),
  );
  layoutTests(tunings, picked);
});

// Prefetch (the next pass's 16-byte K / V words loaded during the current pass's math; opt-in,
// no faster on the H200: BENCHMARKS.md session 17): on the wide f16 rows it applies to, with
// passes spanning two tiles (keys past the piece masked), a paged batch with a window, Dv != D.
describe.skipIf(!ctx)('decode kernel, prefetching the next pass', () => {
  const tunings: [string, DecodeTuning][] = [
    ['prefetch, unroll 8 (a pass spans two tiles)', { unroll: 8, prefetch: true }],
    ['prefetch (default unroll: the piece end clamps the rows)', { prefetch: true }],
  ];
  const picked = CASES.filter((c) => /^f16 (paged|d 128)/.test(c.name));
  test('the layout takes it only where K and V rows are 16-byte chunks', () => {
    const on = { prefetch: true };
    expect(decodeLayout({ dtype: 'f16', d: 128, dv: 64, rows: 4, tuning: on }).prefetch).toBe(true);
    expect(decodeLayout({ dtype: 'f16', d: 12, dv: 12, rows: 4, tuning: on }).prefetch).toBe(false);
    expect(decodeLayout({ dtype: 'f32', d: 128, dv: 128, rows: 4, tuning: on }).prefetch).toBe(
      false,
    );
    expect(decodeLayout({ dtype: 'f16', d: 128, dv: 128, rows: 4 }).prefetch).toBe(false);
  });
  layoutTests(tunings, picked);
});

describe.skipIf(!ctx)('decode partitions at the edges', () => {
  test.each([
    ['splitK 9 (more splits than key tiles: empty splits)', { kind: 'splitK', splits: 9 }],
    ['streamK 64 (more workers than key tiles)', { kind: 'streamK', workers: 64 }],
    ['streamK 1 (one worker over every kv head)', { kind: 'streamK', workers: 1 }],
  ] as const)('%s', async (_, schedule) => {
    const { q, k, v, attn } = inputs({ name: 'edges', hq: 8, hkv: 2, nq: 2, nk: 150, batch: 3 });
    attn.causal = true;
    const want = softmaxAttentionReference(q, k, v, attn);
    const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx!)) as [Tensor, Tensor, Tensor];
    const p = resolveAttentionProblem(gq, gk, gv, attn);
    const hooks = { normalize: { kind: 'softmax' }, scoreMods: [], schedule } as TiledHooks;
    const { o, lse } = await tiledForwardWebGpu(p, hooks, gq, gk, gv);
    const tol = toleranceFor({ dtype: 'f32' });
    expectClose(await o.toCpu(), want.o, tol, 'o');
    expectClose(await lse!.toCpu(), want.lse, tol, 'lse');
    for (const t of [gq, gk, gv, o, lse]) t?.dispose();
  });
});

describe('decode regime and plan (pure)', () => {
  const problem = (hq: number, hkv: number, nq: number, nk: number, d = 128) =>
    resolveAttentionProblem(
      Tensor.zeros([1, hq, nq, d]),
      Tensor.zeros([1, hkv, nk, d]),
      Tensor.zeros([1, hkv, nk, d]),
    );
  const plain = { normalize: { kind: 'softmax' }, scoreMods: [] } as TiledHooks;
  test('group x maxSeqQ <= 64 rows, Nq <= 16, softmax without sinks or a pointwise weight, no tensor cores or explicit tiles', () => {
    const big = 1 << 20;
    expect(inDecodeRegime(problem(32, 8, 1, 4096), plain, {}, big)).toBe(true);
    expect(inDecodeRegime(problem(64, 1, 1, 10), plain, {}, big)).toBe(true);
    expect(inDecodeRegime(problem(64, 1, 2, 10), plain, {}, big)).toBe(false);
    expect(inDecodeRegime(problem(4, 4, 65, 10), plain, {}, big)).toBe(false);
    // Nq 1..16 only: a 17- or 33-row query is prefill even with a group of 1.
    expect(inDecodeRegime(problem(2, 2, 16, 10), plain, {}, big)).toBe(true);
    expect(inDecodeRegime(problem(2, 2, 17, 10), plain, {}, big)).toBe(false);
    expect(inDecodeRegime(problem(2, 2, 33, 35), plain, {}, big)).toBe(false);
    expect(inDecodeRegime(problem(4, 1, 1, 10), plain, { tensorCores: true }, big)).toBe(false);
    expect(inDecodeRegime(problem(4, 1, 1, 10), plain, { tiles: { forward: {} } }, big)).toBe(
      false,
    );
    const sinks = { ...plain, normalize: { kind: 'softmax', sinks: new Float32Array(4) } };
    expect(inDecodeRegime(problem(4, 1, 1, 10), sinks as TiledHooks, {}, big)).toBe(false);
    // Pointwise weights take it (sigmoid, silu); with a score mod they do not.
    const sigmoid = { ...plain, normalize: { kind: 'sigmoid', bias: new Float32Array(1) } };
    expect(inDecodeRegime(problem(4, 1, 1, 10), sigmoid as TiledHooks, {}, big)).toBe(true);
    const silu = { ...plain, normalize: { kind: 'silu', factor: 0.1 } };
    expect(inDecodeRegime(problem(4, 1, 1, 10), silu as TiledHooks, {}, big)).toBe(true);
    const capped = { ...sigmoid, scoreMods: [{ kind: 'softcap', cap: 5 }] };
    expect(inDecodeRegime(problem(4, 1, 1, 10), capped as TiledHooks, {}, big)).toBe(false);
    // Workgroup memory (the merge area and the lane sums; the same for every row count): D 128
    // fits WebGPU's default 16 KiB, not 8 KiB.
    const ws = decodeWorkgroupBytes({ dtype: 'f16', d: 128, dv: 128, rows: 64 });
    expect(ws).toBeLessThanOrEqual(16384);
    expect(decodeWorkgroupBytes({ dtype: 'f16', d: 128, dv: 512, rows: 64 })).toBe(ws);
    expect(inDecodeRegime(problem(64, 1, 1, 10), plain, {}, 16384)).toBe(true);
    expect(inDecodeRegime(problem(64, 1, 1, 10), plain, {}, 8192)).toBe(false);
    // Off the subgroup path the lane sums take workgroup memory too.
    expect(
      decodeWorkgroupBytes({
        dtype: 'f16',
        d: 128,
        dv: 128,
        rows: 1,
        reduce: 'subgroup',
        subgroupSize: 32,
      }),
    ).toBeLessThan(ws);
  });

  test('stream-K plan: every key tile of every (b, kv head) in one piece; query heads map to their kv head', () => {
    const p = resolveAttentionProblem(
      Tensor.zeros([11, 6, 8]),
      Tensor.zeros([500, 2, 8]),
      Tensor.zeros([500, 2, 8]),
      { layout: 'THD', cuSeqlensQ: [0, 2, 2, 11], cuSeqlensK: [0, 300, 300, 500], causal: true },
    );
    const tables = buildAux(p, { tileQ: p.maxSeqQ, tileK: DECODE_BK });
    for (const workers of [1, 3, 7, 1000]) {
      const sk = buildDecodeStreamK(p, tables, workers);
      const { aux, values } = sk;
      const seen = new Map<string, number>();
      for (let pc = aux[values.skWorkers]!; pc < aux[values.skWorkers + sk.workers]!; pc++) {
        const r = values.skRecords + 6 * pc;
        for (let t = aux[r + 3]!; t < aux[r + 4]!; t++) {
          const key = `${aux[r]}/${aux[r + 1]}/${t}`;
          seen.set(key, (seen.get(key) ?? 0) + 1);
        }
      }
      // Sequence 0: 2 rows, 300 keys causal -> tiles 0..4; sequence 2: 9 rows, 200 keys.
      const want = 2 * Math.ceil(300 / DECODE_BK) + 2 * Math.ceil(200 / DECODE_BK);
      expect(seen.size, `workers ${workers}`).toBe(want);
      for (const n of seen.values()) expect(n).toBe(1);
      expect(values.skHeads).toBe(6);
      for (let b = 0; b < 3; b++)
        for (let h = 0; h < 6; h++) {
          const mine = aux[values.skUnits + b * 6 + h]!;
          const first = aux[values.skUnits + b * 6 + 3 * Math.floor(h / 3)]!;
          expect(mine).toBe(first);
        }
    }
  });

  test('the generated WGSL names its partition and reads K/V through the block table when paged', () => {
    const hooks = { uniforms: [], bindings: [] };
    const base = { dtype: 'f16', d: 128, dv: 128, rows: 4, paged: false, hooks } as const;
    expect(decodeShader({ ...base, partition: 'fa2' }).bindings.map((b) => b.name)).toContain(
      'lse',
    );
    expect(decodeShader({ ...base, partition: 'splitK' }).code).toContain('P.splits');
    expect(decodeShader({ ...base, partition: 'streamK' }).code).toContain('P.skRecords');
    const paged = decodeShader({
      ...base,
      partition: 'fa2',
      paged: true,
      hooks: {
        uniforms: [
          ['pgSize', 'u32'],
          ['pgPages', 'u32'],
        ],
        bindings: [{ name: 'pagetab', kind: 'read', type: 'array<u32>' }],
      },
    }).code;
    expect(paged).toContain('pg_row(b, t0)');
  });

  test('layouts: 16-byte chunks, lanes per key, rows per thread, row slices', () => {
    const f16 = (rows: number, d = 128, dv = d) => decodeLayout({ dtype: 'f16', d, dv, rows });
    // Hq 32 / Hkv 32 decode: one row, 16 lanes of 8 halves per D 128 key, 16 groups x 4 keys.
    expect(f16(1)).toMatchObject({ wk: 8, wv: 8, ck: 16, lanes: 16, cpk: 1, rt: 1, slices: 1 });
    expect(f16(1)).toMatchObject({ threads: 256, groups: 16, unroll: 4, passes: 1 });
    // GQA 4:1: the group's 4 rows in one thread's registers.
    expect(f16(4)).toMatchObject({ rt: 4, slices: 1, groups: 16 });
    // 256 threads never span a tile by default: D 64 f16 has 8 lanes, 32 groups x 2 keys.
    expect(f16(1, 64)).toMatchObject({ lanes: 8, groups: 32, unroll: 2, passes: 1 });
    // 512 threads span two: D 128 32 groups x 4 keys, D 64 64 groups x 2.
    const wide = (d: number) =>
      decodeLayout({ dtype: 'f16', d, dv: d, rows: 1, tuning: { threads: 512 } });
    expect(wide(128)).toMatchObject({ groups: 32, unroll: 4, passes: 0.5 });
    expect(wide(64)).toMatchObject({ groups: 64, unroll: 2, passes: 0.5 });
    // A tuned unroll past the tile: 16 groups x 8 keys, a pass spans two tiles.
    expect(
      decodeLayout({ dtype: 'f16', d: 128, dv: 128, rows: 4, tuning: { unroll: 8 } }),
    ).toMatchObject({ groups: 16, unroll: 8, passes: 0.5 });
    // 64 rows: 16 slices of 4 rows, one key group each, 16 passes per tile.
    expect(f16(64)).toMatchObject({ rt: 4, slices: 16, groups: 1, passes: 16 });
    // f32 D 128: 32 chunks of 4 -> 16 lanes of 2 chunks; odd widths: 4-element chunks.
    expect(decodeLayout({ dtype: 'f32', d: 128, dv: 128, rows: 1 })).toMatchObject({
      wk: 4,
      ck: 32,
      lanes: 16,
      cpk: 2,
    });
    expect(f16(2, 6, 10)).toMatchObject({ wk: 4, wv: 4, ck: 2, cv: 3, lanes: 4, cpk: 1 });
    // Dv != D: the lanes follow the wider row.
    expect(f16(1, 64, 256)).toMatchObject({ lanes: 16, cpk: 1, cpv: 2 });
  });

  test('512 threads where the device holds them and keeps its shuffles, else 256', () => {
    const p = problem(32, 8, 1, 100);
    const hooks = { uniforms: [], bindings: [] };
    const sg32 = { subgroups: true, subgroupMinSize: 32 };
    const big = {
      maxComputeInvocationsPerWorkgroup: 1024,
      maxComputeWorkgroupSizeX: 1024,
      maxComputeWorkgroupStorageSize: 32768,
    };
    const wide = decodeSpecFor(p, 'f16', 'streamK', hooks, sg32, big);
    expect(wide.tuning).toEqual({ threads: DECODE_WIDE_THREADS });
    // 32 key groups x 4 keys: a pass spans two 64-key tiles.
    expect(decodeLayout(wide)).toMatchObject({ threads: 512, groups: 32, unroll: 4, passes: 0.5 });
    expect(decodeShader(wide).code).toContain('let kLim = min(nk, ctEnd * BK);');
    // Without limits, with too few invocations or a workgroup narrower than 512 in x, too
    // little workgroup memory (16 KiB: the 512-thread exchange area alone fills it), without
    // subgroups (llvmpipe: the layout was measured with shuffles only) or with a 4-wide one
    // (shuffles need 8 lanes at 512 threads): 256 threads.
    for (const [f, l] of [
      [sg32, undefined],
      [sg32, { ...big, maxComputeInvocationsPerWorkgroup: 256 }],
      [sg32, { ...big, maxComputeWorkgroupSizeX: 256 }],
      [sg32, { ...big, maxComputeWorkgroupStorageSize: 16384 }],
      [{ subgroups: false, subgroupMinSize: 0 }, big],
      [{ subgroups: true, subgroupMinSize: 4 }, big],
    ] as const) {
      const s = decodeSpecFor(p, 'f16', 'fa2', hooks, f, l);
      expect(s.tuning).toBeUndefined();
      expect(decodeLayout(s).threads).toBe(DECODE_THREADS);
    }
    // An explicit thread count, or a tuning the wide layout cannot take, wins.
    try {
      setDecodeTuning({ threads: 128 });
      expect(decodeLayout(decodeSpecFor(p, 'f16', 'fa2', hooks, sg32, big)).threads).toBe(128);
      setDecodeTuning({ lanes: 4, reduce: 'workgroup' });
      expect(decodeLayout(decodeSpecFor(p, 'f16', 'fa2', hooks, sg32, big)).threads).toBe(256);
    } finally {
      setDecodeTuning(undefined);
    }
  });

  test('the device picks the lane sum: subgroup shuffles when its smallest subgroup holds the lanes', () => {
    const p = problem(32, 8, 1, 100);
    const hooks = { uniforms: [], bindings: [] };
    const sub = decodeSpecFor(p, 'f16', 'streamK', hooks, { subgroups: true, subgroupMinSize: 32 });
    expect(sub).toMatchObject({ reduce: 'subgroup', subgroupSize: 32 });
    expect(decodeLayout(sub).lanes).toBe(16);
    const code = decodeShader(sub).code;
    expect(code.startsWith('enable subgroups;')).toBe(true);
    expect(code).toContain('subgroupShuffleXor');
    // The key loop has no barrier on the subgroup path: the only ones are the merge's.
    const loop = code.slice(code.indexOf('for (var kb'), code.indexOf('if (lane == 0u)'));
    expect(loop).not.toContain('workgroupBarrier');
    expect(code.slice(0, code.indexOf('fn main'))).not.toContain('workgroupBarrier');
    // An 8-wide subgroup caps the lanes (two chunks each).
    const narrow = decodeSpecFor(p, 'f16', 'fa2', hooks, { subgroups: true, subgroupMinSize: 8 });
    expect(decodeLayout(narrow)).toMatchObject({ lanes: 8, cpk: 2 });
    // Tuned lanes: up to the subgroup on its path, else the workgroup path takes them.
    try {
      setDecodeTuning({ lanes: 32 });
      const wide = decodeSpecFor(p, 'f16', 'fa2', hooks, { subgroups: true, subgroupMinSize: 32 });
      expect(wide.reduce).toBe('subgroup');
      expect(decodeLayout(wide).lanes).toBe(32);
      const over = decodeSpecFor(p, 'f16', 'fa2', hooks, { subgroups: true, subgroupMinSize: 16 });
      expect(over.reduce).toBe('workgroup');
      expect(decodeLayout(over).lanes).toBe(32);
    } finally {
      setDecodeTuning(undefined);
    }
    // No subgroups, or ones smaller than threads / DECODE_BK lanes: workgroup memory.
    for (const f of [
      { subgroups: false, subgroupMinSize: 0 },
      { subgroups: true, subgroupMinSize: 2 },
    ]) {
      const s = decodeSpecFor(p, 'f16', 'fa2', hooks, f);
      expect(s.reduce).toBe('workgroup');
      expect(decodeShader(s).code).not.toMatch(/enable subgroups|subgroupShuffle/);
    }
  });

  test('tuning overrides are checked and go into the spec', () => {
    expect(() => setDecodeTuning({ threads: 96 })).toThrow(/tuning\.threads/);
    expect(() => setDecodeTuning({ lanes: 2 })).toThrow(/tuning\.lanes/);
    expect(() => setDecodeTuning({ unroll: 3 })).toThrow(/tuning\.unroll/);
    const p = problem(8, 2, 1, 100);
    const hooks = { uniforms: [], bindings: [] };
    const none = { subgroups: false, subgroupMinSize: 0 };
    try {
      setDecodeTuning({ threads: 128, unroll: 8 });
      const s = decodeSpecFor(p, 'f32', 'fa2', hooks, none);
      expect(s.tuning).toEqual({ threads: 128, unroll: 8 });
      expect(decodeLayout(s)).toMatchObject({ threads: 128, unroll: 8 });
      setDecodeTuning({ reduce: 'subgroup' });
      expect(() => decodeSpecFor(p, 'f32', 'fa2', hooks, none)).toThrow(/tuning\.reduce/);
    } finally {
      setDecodeTuning(undefined);
    }
    expect(decodeSpecFor(p, 'f32', 'fa2', hooks, none).tuning).toBeUndefined();
  });
});
