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

// The forward's decode path (flash_decode.h: Nq <= 4 rows per sequence, softmax, band only,
// optional sinks): keys in the SIMD lanes, the query heads of a GQA group together, key splits
// combined. Every ISA against the float64 reference, for Nq 1..4, GQA 8/2 and 32/8, odd Nk up to
// 5000, causal, window, sinks, THD varlen with empty sequences, under the band, split-K and
// stream-K schedules; outputs NaN-poisoned first, fresh random inputs per case.

const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];
const TOL = 1e-5;
const SCHEDULES: Partial<NativeAttentionProblem>[] = [
  {},
  { splits: 3 },
  { streamK: { workers: 5 } },
  { streamK: { workers: 64 } },
];

async function check(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions,
  sinks: Float32Array | undefined,
) {
  const ref = moddedAttentionReference(q, k, v, { ...options, sinks } as ModdedReferenceOptions);
  const problem: NativeAttentionProblem = {
    ...resolveAttentionProblem(q, k, v, options),
    ...(sinks ? { normalize: { kind: 'softmax' as const, sinks } } : {}),
  };
  const [qa, ka, va] = [q, k, v].map((t) => t.toFloat32Array()) as [
    Float32Array,
    Float32Array,
    Float32Array,
  ];
  for (const e of engines) {
    for (const s of SCHEDULES) {
      const o = poisoned((q.size / problem.d) * problem.dv);
      const lse = poisoned(q.size / problem.d);
      await e.run('attention.forward', { ...problem, ...s }, { q: qa, k: ka, v: va }, { o, lse });
      const label = `${e.isa} ${JSON.stringify(s)}`;
      expectClose(o, ref.o, TOL, `${label} o`);
      expectClose(lse, ref.lse!, TOL, `${label} lse`);
    }
  }
}

describe.runIf(base)('decode forward (Nq <= 4) vs the float64 reference, every ISA', () => {
  const cases: [string, number, number, number, number, 'causal' | 'window' | 'none', boolean][] = [
    ['nq 1 GQA 8/2 causal', 1, 8, 2, 5000, 'causal', false],
    ['nq 2 GQA 8/2 window', 2, 8, 2, 3001, 'window', false],
    ['nq 3 GQA 32/8 causal sinks', 3, 32, 8, 1999, 'causal', true],
    ['nq 4 GQA 32/8 window sinks', 4, 32, 8, 777, 'window', true],
    ['nq 1 GQA 32/8 no mask', 1, 32, 8, 4097, 'none', false],
    ['nq 4 GQA 8/2 causal', 4, 8, 2, 65, 'causal', false],
    ['nq 2 MHA 4/4 causal d 72', 2, 4, 4, 131, 'causal', false],
    // One row per kv head (16 keys a step) and 3 (single rows only), d with a tail.
    ['nq 1 MHA 4/4 no mask d 80', 1, 4, 4, 300, 'none', false],
    ['nq 1 GQA 6/2 causal', 1, 6, 2, 1000, 'causal', false],
  ];
  test.each(cases)('%s', async (name, nq, hq, hkv, nk, mask, withSinks) => {
    const rng = new Rng(1000 + nq * 97 + hq + nk);
    const [d, dv] = name.includes('d 72')
      ? [72, 40]
      : name.includes('d 80')
        ? [80, 48]
        : [128, 128];
    const q = rng.randn([2, hq, nq, d]);
    const k = rng.randn([2, hkv, nk, d]);
    const v = rng.randn([2, hkv, nk, dv]);
    const options: AttentionOptions =
      mask === 'causal'
        ? { causal: true }
        : mask === 'window'
          ? { causal: true, window: [Math.floor(nk / 3), 0] }
          : {};
    const sinks = withSinks
      ? Float32Array.from({ length: hq }, () => rng.uniform() * 4 - 2)
      : undefined;
    await check(q, k, v, options, sinks);
  });

  test('THD varlen with empty sequences: O 0 and LSE -inf on rows without keys', async () => {
    const rng = new Rng(4242);
    const lensQ = [1, 0, 4, 2, 3];
    const lensK = [1777, 0, 9, 0, 2500];
    const cum = (l: number[]) =>
      Int32Array.from([0, ...l.map((_, i) => l.slice(0, i + 1).reduce((a, x) => a + x, 0))]);
    const [cuQ, cuK] = [cum(lensQ), cum(lensK)];
    const [hq, hkv, d] = [8, 2, 64];
    const q = rng.randn([cuQ[5]!, hq, d]);
    const k = rng.randn([cuK[5]!, hkv, d]);
    const v = rng.randn([cuK[5]!, hkv, d]);
    for (const causal of [false, true]) {
      const options: AttentionOptions = {
        layout: 'THD',
        cuSeqlensQ: cuQ,
        cuSeqlensK: cuK,
        causal,
      };
      await check(q, k, v, options, undefined);
    }
    // Sequence 3 (2 queries, no keys): O exactly 0 and LSE -inf on every ISA and schedule.
    const problem = resolveAttentionProblem(q, k, v, {
      layout: 'THD',
      cuSeqlensQ: cuQ,
      cuSeqlensK: cuK,
    });
    for (const e of engines) {
      const o = poisoned(q.size);
      const lse = poisoned(q.size / d);
      const x = [q, k, v].map((t) => t.toFloat32Array()) as [
        Float32Array,
        Float32Array,
        Float32Array,
      ];
      await e.run('attention.forward', problem, { q: x[0], k: x[1], v: x[2] }, { o, lse });
      for (let t = cuQ[3]!; t < cuQ[4]!; t++) {
        for (let h = 0; h < hq; h++) {
          expect(lse[h * cuQ[5]! + t]).toBe(-Infinity);
          for (let c = 0; c < d; c++) expect(o[(t * hq + h) * d + c]).toBe(0);
        }
      }
    }
  });

  test('a NaN key or value row poisons only the rows whose band holds it', async () => {
    // nq 4, causal, nk 100: rows 0 and 1 see keys [0, 97) and [0, 98), rows 2 and 3 key 98 too.
    const [hq, hkv, nq, nk, d] = [8, 2, 4, 100, 32];
    for (const t of ['k', 'v'] as const) {
      const rng = new Rng(t === 'k' ? 31 : 32);
      const q = rng.randn([1, hq, nq, d]);
      const k = rng.randn([1, hkv, nk, d]);
      const v = rng.randn([1, hkv, nk, d]);
      const ref = moddedAttentionReference(q, k, v, { causal: true });
      const [refO, refLse] = [ref.o.toFloat64Array(), ref.lse!.toFloat64Array()];
      const x = [q, k, v].map((y) => y.toFloat32Array()) as [
        Float32Array,
        Float32Array,
        Float32Array,
      ];
      const poisonedIn = t === 'k' ? x[1] : x[2];
      for (let h = 0; h < hkv; h++)
        poisonedIn.fill(Number.NaN, (h * nk + 98) * d, (h * nk + 99) * d);
      const problem = resolveAttentionProblem(q, k, v, { causal: true });
      for (const e of engines) {
        for (const s of SCHEDULES) {
          const o = poisoned(q.size);
          const lse = poisoned(q.size / d);
          await e.run(
            'attention.forward',
            { ...problem, ...s },
            { q: x[0], k: x[1], v: x[2] },
            { o, lse },
          );
          for (let h = 0; h < hq; h++) {
            for (let i = 0; i < nq; i++) {
              const row = h * nq + i;
              const label = `${t} ${e.isa} ${JSON.stringify(s)} head ${h} row ${i}`;
              if (i < 2) {
                expectClose(
                  o.subarray(row * d, row * d + d),
                  refO.subarray(row * d, row * d + d),
                  TOL,
                  label,
                );
                expect(lse[row], label).toBeCloseTo(refLse[row]!, 4);
              } else {
                for (let c = 0; c < d; c++) expect(o[row * d + c], label).toBeNaN();
                if (t === 'k') expect(lse[row], label).toBeNaN();
                else expect(Number.isFinite(lse[row]), label).toBe(true);
              }
            }
          }
        }
      }
    }
  });
});
