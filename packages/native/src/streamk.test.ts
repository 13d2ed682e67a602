import {
  type AttentionOptions,
  type ModdedReferenceOptions,
  moddedAttentionReference,
  resolveAttentionProblem,
} from '@attnkit/attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import { engineOrSkip, expectClose, poisoned } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { loadNative, type NativeAttentionProblem, type NativeEngine } from './index.js';

// The forward's stream-K schedule (problem.streamK, LeanAttention): the key tiles of every
// (b, h, query block) planned across `workers` pool tasks, each piece's partial (m, l, acc)
// merged by a fix-up. On decode shapes (Nq 1..16 against Nk up to a few thousand keys, never a
// multiple of the key tile), GQA 8/2, bottom-right causal, sliding window, varlen THD with empty
// sequences (O 0, LSE -inf), sinks and sigmoid, for workers 1, 2, 3, 7, 64 and more than all
// key tiles together (every piece one tile: a unit of several tiles is always split, so a
// skipped or partial fix-up leaves NaN-poisoned or wrong rows), it must equal the float64
// reference (KERNELS.md tolerances) and the band schedule, on every ISA, fresh random inputs.

const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];

/** KERNELS.md: f32 <= 1e-5, <= 2e-5 for N >= 4096. */
const tol = (nk: number) => (nk >= 4096 ? 2e-5 : 1e-5);

type Variant = 'softmax' | 'sinks' | 'sigmoid';
type Mask = 'none' | 'causal' | 'window' | 'causal+window';

interface Case {
  name: string;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  problem: NativeAttentionProblem;
  ref: ModdedReferenceOptions;
  /** An upper bound of the key tiles of all units (each query block holds one row at least). */
  maxTiles: number;
}

function cu(lens: readonly number[]): number[] {
  const out = [0];
  for (const n of lens) out.push(out[out.length - 1]! + n);
  return out;
}

function makeCase(
  rng: Rng,
  o: {
    batch?: number;
    hq?: number;
    hkv?: number;
    nq: number;
    nk: number;
    d?: number;
    lens?: { q: number[]; k: number[] };
    mask: Mask;
    variant: Variant;
    blockK: number;
  },
): Case {
  const { hq = 8, hkv = 2, d = 16, batch = 1, mask, variant } = o;
  const attn: AttentionOptions = { scale: (0.6 + rng.uniform()) / Math.sqrt(d) };
  if (mask === 'causal' || mask === 'causal+window') attn.causal = true;
  if (mask === 'window' || mask === 'causal+window')
    attn.window = [rng.int(0, Math.max(1, o.nk >> 1)), rng.uniform() < 0.5 ? -1 : 2];
  let q: Tensor;
  let k: Tensor;
  let v: Tensor;
  if (o.lens) {
    attn.layout = 'THD';
    attn.cuSeqlensQ = cu(o.lens.q);
    attn.cuSeqlensK = Int32Array.from(cu(o.lens.k));
    q = rng.randn([attn.cuSeqlensQ[o.lens.q.length]!, hq, d]);
    k = rng.randn([attn.cuSeqlensK[o.lens.k.length]!, hkv, d]);
    v = rng.randn([attn.cuSeqlensK[o.lens.k.length]!, hkv, d]);
  } else {
    q = rng.randn([batch, hq, o.nq, d]);
    k = rng.randn([batch, hkv, o.nk, d]);
    v = rng.randn([batch, hkv, o.nk, d]);
  }
  const p = resolveAttentionProblem(q, k, v, attn);
  const problem: NativeAttentionProblem = { ...p, blockK: o.blockK };
  const ref: ModdedReferenceOptions = { ...attn };
  if (variant === 'sinks') {
    ref.sinks = Float32Array.from({ length: hq }, () => (rng.uniform() - 0.3) * 6);
    problem.normalize = { kind: 'softmax', sinks: ref.sinks };
  }
  if (variant === 'sigmoid') {
    ref.normalize = 'sigmoid';
    ref.bias = rng.uniform() * 2 - 1;
    problem.normalize = {
      kind: 'sigmoid',
      bias: Float32Array.from({ length: p.batch }, () => ref.bias as number),
    };
  }
  let maxTiles = 0;
  for (let b = 0; b < p.batch; b++) maxTiles += hq * p.seqQ[b]! * Math.ceil(p.seqK[b]! / o.blockK);
  const shape = o.lens
    ? `THD q${JSON.stringify(o.lens.q)} k${JSON.stringify(o.lens.k)}`
    : `B${batch} Nq ${o.nq} Nk ${o.nk}`;
  const name = `${variant} ${mask} ${shape} Hq ${hq} Hkv ${hkv} blockK ${o.blockK}${attn.window ? ` window[${attn.window}]` : ''}`;
  return { name, q, k, v, problem, ref, maxTiles };
}

async function forward(e: NativeEngine, c: Case, workers: number | undefined) {
  const p = c.problem;
  const sigmoid = p.normalize?.kind === 'sigmoid';
  const rows = c.q.size / p.d;
  const o = poisoned(rows * p.dv);
  const lse = sigmoid ? undefined : poisoned(rows);
  const problem = workers === undefined ? p : { ...p, streamK: { workers } };
  const [q, k, v] = [c.q, c.k, c.v].map((t) => t.toFloat32Array()) as [
    Float32Array,
    Float32Array,
    Float32Array,
  ];
  await e.run('attention.forward', problem, { q, k, v }, lse ? { o, lse } : { o });
  return { o, lse };
}

async function check(c: Case) {
  const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
  const refO = ref.o.toFloat32Array();
  const refLse = ref.lse?.toFloat32Array();
  const t = tol(c.problem.maxSeqK);
  for (const e of engines) {
    const band = await forward(e, c, undefined);
    expectClose(band.o, refO, t, `${e.isa} band o`);
    for (const workers of [1, 2, 3, 7, 64, c.maxTiles + 5]) {
      const got = await forward(e, c, workers);
      const label = `${e.isa} workers ${workers}`;
      expectClose(got.o, refO, t, `${label} o vs reference`);
      expectClose(got.o, band.o, t, `${label} o vs band`);
      if (!refLse) continue;
      expectClose(got.lse!, refLse, t, `${label} lse vs reference`);
      expectClose(got.lse!, band.lse!, t, `${label} lse vs band`);
      for (let i = 0; i < refLse.length; i++) {
        if (refLse[i] === Number.NEGATIVE_INFINITY)
          expect(got.lse![i], `${label} lse[${i}]`).toBe(Number.NEGATIVE_INFINITY);
      }
    }
  }
}

describe.runIf(base)('stream-K forward vs band and the float64 reference, every ISA', () => {
  const rng = new Rng(20261203);
  const cases: Case[] = [];
  const masks: Mask[] = ['none', 'causal', 'window', 'causal+window'];
  const variants: Variant[] = ['softmax', 'sinks', 'sigmoid'];
  const shapes = [
    { nq: 1, nk: 1, blockK: 16 },
    { nq: 1, nk: 37, blockK: 8 },
    { nq: 1, nk: 2999, blockK: 64 },
    { nq: 3, nk: 515, blockK: 32, batch: 2 },
    { nq: 16, nk: 1023, blockK: 64 },
    { nq: 7, nk: 4099, blockK: 128 },
    { nq: 5, nk: 333, blockK: 7, hq: 4, hkv: 1 },
  ];
  shapes.forEach((s, i) => {
    cases.push(makeCase(rng, { ...s, mask: masks[i % 4]!, variant: variants[i % 3]! }));
    cases.push(makeCase(rng, { ...s, mask: masks[(i + 1) % 4]!, variant: variants[(i + 2) % 3]! }));
  });
  // Varlen THD decode batches: an empty key sequence (rows without keys: O 0, LSE -inf), an
  // empty query sequence and very different lengths (what stream-K balances).
  for (const variant of variants) {
    cases.push(
      makeCase(rng, {
        nq: 0,
        nk: 0,
        lens: { q: [1, 2, 0, 16, 1], k: [1500, 0, 40, 611, 3] },
        mask: 'causal',
        variant,
        blockK: 32,
      }),
    );
  }
  cases.push(
    makeCase(rng, {
      nq: 0,
      nk: 0,
      lens: { q: [3, 1], k: [0, 0] },
      mask: 'none',
      variant: 'softmax',
      blockK: 8,
    }),
  );
  test.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    await check(c);
  });

  test('varlen: rows of an empty key sequence give O 0 and LSE -inf (or the sink)', async () => {
    const sinks = Float32Array.from({ length: 8 }, (_, h) => h / 4 - 1);
    for (const s of [undefined, sinks]) {
      const c = makeCase(new Rng(9), {
        nq: 0,
        nk: 0,
        lens: { q: [2, 1], k: [0, 21] },
        mask: 'none',
        variant: 'softmax',
        blockK: 4,
      });
      c.problem.normalize = { kind: 'softmax', sinks: s };
      const { hq, dv, totalQ } = c.problem;
      for (const e of engines) {
        for (const workers of [1, 3, 1000]) {
          const got = await forward(e, c, workers);
          for (let h = 0; h < hq; h++) {
            for (const row of [0, 1]) {
              expect(got.lse![h * totalQ + row]).toBe(s ? s[h]! : Number.NEGATIVE_INFINITY);
              for (let j = 0; j < dv; j++) expect(got.o[(row * hq + h) * dv + j]).toBe(0);
            }
            expect(Number.isFinite(got.lse![h * totalQ + 2]!)).toBe(true);
          }
        }
      }
    }
  });
});

describe.runIf(base)('stream-K: problem.streamK and planStreamK', () => {
  const rng = new Rng(5);
  const q = rng.randn([1, 1, 4, 8]);
  const problem = resolveAttentionProblem(q, q, q);
  const x = q.toFloat32Array();
  const run = (p: unknown) =>
    base!.run(
      'attention.forward',
      p as NativeAttentionProblem,
      { q: x, k: x, v: x },
      { o: new Float32Array(x.length), lse: new Float32Array(4) },
    );

  test.each([0, -1, 1.5, Number.NaN, 2 ** 24 + 1])(
    'workers = %s: RangeError naming problem.streamK.workers',
    async (workers) => {
      const r = run({ ...problem, streamK: { workers } });
      await expect(r).rejects.toThrow(RangeError);
      await expect(r).rejects.toThrow(
        /^problem\.streamK\.workers: expected an integer in \[1, 16777216\]/,
      );
    },
  );

  test('not an object, or workers not a number: TypeError naming the field', async () => {
    for (const [streamK, name] of [
      [4, 'problem.streamK'],
      [null, 'problem.streamK'],
      [[4], 'problem.streamK'],
      [{}, 'problem.streamK.workers'],
      [{ workers: '4' }, 'problem.streamK.workers'],
    ] as const) {
      const r = run({ ...problem, streamK });
      await expect(r).rejects.toThrow(TypeError);
      await expect(r).rejects.toThrow(new RegExp(`^${name.replace(/\./g, '\\.')}: expected`));
    }
  });

  test('with splits > 1: RangeError naming problem.streamK; splits 1 is fine', async () => {
    const r = run({ ...problem, streamK: { workers: 2 }, splits: 3 });
    await expect(r).rejects.toThrow(RangeError);
    await expect(r).rejects.toThrow(/^problem\.streamK: expected no problem\.splits > 1/);
    await expect(run({ ...problem, streamK: { workers: 2 }, splits: 1 })).resolves.toBeUndefined();
  });

  test('workers 2^24 (the most) on a small problem equals band', async () => {
    const c = makeCase(new Rng(17), {
      nq: 2,
      nk: 300,
      mask: 'causal',
      variant: 'sinks',
      blockK: 16,
    });
    for (const e of engines) {
      const band = await forward(e, c, undefined);
      const got = await forward(e, c, 2 ** 24);
      expectClose(got.o, band.o, 1e-5, `${e.isa} o`);
      expectClose(got.lse!, band.lse!, 1e-5, `${e.isa} lse`);
    }
  });

  test('planStreamK: every tile once, balanced to one tile, units in order; typed errors', () => {
    const prng = new Rng(123);
    for (let trial = 0; trial < 200; trial++) {
      const units = prng.int(0, 12);
      const tiles = Float64Array.from({ length: units }, () =>
        prng.uniform() < 0.25 ? 0 : prng.int(1, 40),
      );
      const total = tiles.reduce((a, t) => a + t, 0);
      const workers = prng.int(1, Math.max(2, total + 8));
      const { workerStart, pieces } = base!.planStreamK(tiles, workers);
      expect(workerStart.length).toBe(workers + 1);
      const next = new Float64Array(units);
      let prevUnit = 0;
      for (let w = 0; w < workers; w++) {
        let size = 0;
        for (let k = workerStart[w]!; k < workerStart[w + 1]!; k++) {
          const [u, b, e] = [pieces[3 * k]!, pieces[3 * k + 1]!, pieces[3 * k + 2]!];
          expect(u).toBeGreaterThanOrEqual(prevUnit);
          expect(b).toBe(next[u]);
          expect(e).toBeGreaterThan(b);
          next[u] = e;
          prevUnit = u;
          size += e - b;
        }
        expect(size).toBe(Math.floor(total / workers) + (w < total % workers ? 1 : 0));
      }
      expect([...next]).toEqual([...tiles]);
    }
    expect(() => base!.planStreamK(Float64Array.of(1, -1), 2)).toThrow(/^tiles\[1\]: expected/);
    expect(() => base!.planStreamK(Float64Array.of(1.5), 2)).toThrow(RangeError);
    expect(() => base!.planStreamK([1] as unknown as Float64Array, 2)).toThrow(TypeError);
    expect(() => base!.planStreamK(Float64Array.of(1), 0)).toThrow(/^workers: expected/);
  });
});
