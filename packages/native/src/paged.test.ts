import { resolveAttentionProblem, softmaxAttentionReference } from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { engineOrSkip, expectClose, poisoned } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { loadNative, type NativeAttentionProblem, type NativeEngine } from './index.js';

// Paged K/V (problem.paged, engine.h blockTable): the forward reads K and V through the block
// table on every ISA, on the decode path (Nq <= 4: tiles cut at page ends, read in place) and
// the tiled path (Nq > 4: in-page tiles in place, page-crossing ones staged row by row), under
// the band, split-K and stream-K schedules. Pools are shuffled pages whose unused rows are NaN
// (a read through a wrong row poisons the output); outputs are NaN-poisoned first. The float64
// reference reads the same pools through @attnkit/attention's keyRow (lean-attention's
// paged.test.ts checks the kernels against an independent reference on contiguous keys).

const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];
const SCHEDULES: Partial<NativeAttentionProblem>[] = [
  {},
  { splits: 3 },
  { streamK: { workers: 7 } },
];

function pools(rng: Rng, lengths: number[], ps: number, hkv: number, d: number, dv: number) {
  const need = lengths.map((n) => Math.ceil(n / ps));
  const maxPages = Math.max(1, ...need);
  const numPages = need.reduce((a, x) => a + x, 0) + 2;
  const order = Array.from({ length: numPages }, (_, i) => i);
  for (let i = numPages - 1; i > 0; i--) {
    const j = rng.int(0, i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const blockTable = new Int32Array(lengths.length * maxPages).fill(-1);
  let next = 0;
  lengths.forEach((_, b) => {
    for (let p = 0; p < need[b]!; p++) blockTable[b * maxPages + p] = order[next++]!;
  });
  const fill = (w: number) => {
    const x = new Float32Array(numPages * ps * hkv * w).fill(Number.NaN);
    lengths.forEach((n, b) => {
      for (let t = 0; t < n; t++) {
        const row = blockTable[b * maxPages + Math.floor(t / ps)]! * ps + (t % ps);
        for (let e = 0; e < hkv * w; e++) x[row * hkv * w + e] = rng.normal();
      }
    });
    return Tensor.from(x, [numPages, ps, hkv, w]);
  };
  return {
    k: fill(d),
    v: fill(dv),
    paged: { pageSize: ps, blockTable, lengths: Int32Array.from(lengths) },
  };
}

describe.runIf(base)('paged K/V forward vs the float64 reference, every ISA and schedule', () => {
  const cases: [string, number, number, number, number[], number, boolean][] = [
    ['decode nq 1 GQA 8/2 pages of 16', 1, 8, 2, [3001, 0, 17], 16, true],
    ['decode nq 4 MQA pages of 64', 4, 4, 1, [130, 2000], 64, true],
    ['decode nq 2 pages of 1', 2, 2, 2, [9, 33], 1, false],
    ['tiled nq 8 GQA 6/3 pages of 16', 8, 6, 3, [777, 5, 0], 16, true],
    ['tiled nq 16 pages of 8', 16, 2, 1, [1500, 64], 8, false],
  ];
  test('runs on every ISA the machine has', () => {
    expect(engines.map((e) => e.isa)).toEqual(base!.availableIsas);
    expect(engines.length).toBeGreaterThan(0);
  });

  test.each(cases)('%s', async (_name, nq, hq, hkv, lengths, ps, causal) => {
    const rng = new Rng(500 + nq * 31 + ps + lengths[0]!);
    const [d, dv] = [32, 24];
    const { k, v, paged } = pools(rng, lengths, ps, hkv, d, dv);
    const q = rng.randn([lengths.length, hq, nq, d]);
    const options = { causal, paged };
    const ref = softmaxAttentionReference(q, k, v, options);
    const problem: NativeAttentionProblem = resolveAttentionProblem(q, k, v, options);
    const [qa, ka, va] = [q, k, v].map((t) => t.toFloat32Array()) as [
      Float32Array,
      Float32Array,
      Float32Array,
    ];
    const lseRef = ref.lse.toFloat32Array();
    for (const e of engines) {
      for (const s of SCHEDULES) {
        const o = poisoned(lengths.length * hq * nq * dv);
        const lse = poisoned(lengths.length * hq * nq);
        await e.run('attention.forward', { ...problem, ...s }, { q: qa, k: ka, v: va }, { o, lse });
        const label = `${e.isa} ${JSON.stringify(s)}`;
        expectClose(o, ref.o, 1e-5, `${label} o`);
        // Rows without keys: LSE -inf and O exactly 0 (no NaN from the NaN-padded pool).
        const live: number[] = [];
        const liveRef: number[] = [];
        lseRef.forEach((x, i) => {
          if (x === Number.NEGATIVE_INFINITY) {
            expect(lse[i], label).toBe(Number.NEGATIVE_INFINITY);
            for (let c = 0; c < dv; c++) expect(o[i * dv + c], label).toBe(0);
          } else {
            live.push(lse[i]!);
            liveRef.push(x);
          }
        });
        expectClose(live, liveRef, 1e-5, `${label} lse`);
      }
    }
  });

  test('bad paged problems: RangeError naming the field, in the forward and the backward', async () => {
    const e = engines[0]!;
    const rng = new Rng(1);
    const { k, v, paged } = pools(rng, [5, 3], 4, 1, 8, 8);
    const q = rng.randn([2, 2, 1, 8]);
    const problem = resolveAttentionProblem(q, k, v, { paged });
    const x = { q: q.toFloat32Array(), k: k.toFloat32Array(), v: v.toFloat32Array() };
    const out = () => ({ o: poisoned(16), lse: poisoned(2 * 2) });
    const run = (p: object) =>
      e.run('attention.forward', { ...problem, ...p } as NativeAttentionProblem, x, out());
    const numPages = k.shape[0]!;
    const bad = Int32Array.from(paged.blockTable);
    bad[0] = numPages;
    await expect(run({ paged: { pageSize: 4, maxPages: 2, blockTable: bad } })).rejects.toThrow(
      /problem\.paged\.blockTable: expected pages in \[0, /,
    );
    await expect(
      run({ paged: { pageSize: 4, maxPages: 2, blockTable: new Int32Array(3) } }),
    ).rejects.toThrow(/problem\.paged\.blockTable/);
    await expect(
      run({ paged: { pageSize: 4, maxPages: 1, blockTable: new Int32Array(2) } }),
    ).rejects.toThrow(/problem\.seqK\[0\]: expected <= maxPages x pageSize/);
    await expect(
      run({ paged: { pageSize: 0, maxPages: 2, blockTable: paged.blockTable } }),
    ).rejects.toThrow(/problem\.paged\.pageSize/);
    await expect(
      run({ layout: 'THD', paged: { pageSize: 4, maxPages: 2, blockTable: paged.blockTable } }),
    ).rejects.toThrow(/problem\.paged: expected layout BHND/);
    const dO = poisoned(16);
    await expect(
      e.run(
        'attention.backward',
        problem as NativeAttentionProblem,
        { ...x, o: poisoned(16), lse: new Float32Array(4), dO },
        { dq: poisoned(16), dk: poisoned(k.size), dv: poisoned(v.size) },
      ),
    ).rejects.toThrow(/problem\.paged: expected undefined in attention\.backward/);
  });
});
