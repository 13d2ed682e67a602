import {
  type AttentionOptions,
  keyRange,
  type ModdedReferenceOptions,
  moddedAttentionReference,
  resolveAttentionProblem,
  sigmoidAttentionReference,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { engineOrSkip, expectClose, poisoned } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { loadNative, type NativeAttentionProblem, type NativeEngine } from './index.js';

// The forward's decode path (flash_decode.h: Nq <= 4 rows per sequence, band only; softmax with
// optional sinks here, the pointwise sigmoid and silu in the last describe): keys in the SIMD lanes, the query heads of a GQA group together, key splits
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

/**
 * `attention.forward` of `problem` on every engine x schedule into a fresh NaN-poisoned O of
 * `oSize` floats (no LSE), each checked by `expectO(o, label)`.
 */
async function eachRun(
  problem: NativeAttentionProblem,
  x: readonly [Float32Array, Float32Array, Float32Array],
  oSize: number,
  expectO: (o: Float32Array, label: string) => void,
) {
  for (const e of engines)
    for (const s of SCHEDULES) {
      const o = poisoned(oSize);
      await e.run('attention.forward', { ...problem, ...s }, { q: x[0], k: x[1], v: x[2] }, { o });
      expectO(o, `${e.isa} ${JSON.stringify(s)}`);
    }
}

/** THD offsets of sequence lengths: 0, then the running sums. */
const cum = (l: number[]) =>
  Int32Array.from([0, ...l.map((_, i) => l.slice(0, i + 1).reduce((a, x) => a + x, 0))]);

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

// The pointwise normalisations on the decode path (sigmoid attention, HSTU's silu / N): final
// weights per tile, partials plain sums, no LSE. Against float64: sigmoid through the
// reference, silu written out here (w = c z sigmoid(z), z = scale q.k, masked pairs 0).
function siluReference(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions,
  factor: number,
): Float64Array {
  const p = resolveAttentionProblem(q, k, v, options);
  const [Q, K, V] = [q, k, v].map((t) => t.toFloat64Array()) as [
    Float64Array,
    Float64Array,
    Float64Array,
  ];
  const O = new Float64Array(p.batch * p.hq * p.maxSeqQ * p.dv);
  for (let b = 0; b < p.batch; b++)
    for (let h = 0; h < p.hq; h++)
      for (let i = 0; i < p.maxSeqQ; i++) {
        // The spec's band (bottom-right causal / window), as every reference reads it.
        const [lo, hi] = keyRange(p, i, p.maxSeqQ, p.maxSeqK);
        const qo = ((b * p.hq + h) * p.maxSeqQ + i) * p.d;
        const kvh = Math.floor(h / p.group);
        for (let j = lo; j < hi; j++) {
          const ko = ((b * p.hkv + kvh) * p.maxSeqK + j) * p.d;
          let z = 0;
          for (let x = 0; x < p.d; x++) z += Q[qo + x]! * K[ko + x]!;
          z *= p.scale;
          const w = (factor * z) / (1 + Math.exp(-z));
          const vo = ((b * p.hkv + kvh) * p.maxSeqK + j) * p.dv;
          const oo = ((b * p.hq + h) * p.maxSeqQ + i) * p.dv;
          for (let x = 0; x < p.dv; x++) O[oo + x] = O[oo + x]! + w * V[vo + x]!;
        }
      }
  return O;
}

describe.runIf(base)(
  'decode forward with a pointwise weight (sigmoid, silu) vs float64, every ISA',
  () => {
    const cases: [string, number, number, number, number, 'causal' | 'window' | 'none'][] = [
      ['nq 1 GQA 8/2 causal', 1, 8, 2, 3001, 'causal'],
      ['nq 3 GQA 32/8 window', 3, 32, 8, 777, 'window'],
      ['nq 4 GQA 8/2 no mask', 4, 8, 2, 130, 'none'],
      ['nq 1 MHA 4/4 causal', 1, 4, 4, 1999, 'causal'],
      ['nq 2 GQA 6/2 causal', 2, 6, 2, 65, 'causal'],
    ];
    test.each(cases)('%s', async (_name, nq, hq, hkv, nk, mask) => {
      const rng = new Rng(7000 + nq * 31 + hq + nk);
      const [d, dv] = [64, 48];
      const q = rng.randn([2, hq, nq, d]);
      const k = rng.randn([2, hkv, nk, d]);
      const v = rng.randn([2, hkv, nk, dv]);
      const options: AttentionOptions =
        mask === 'causal'
          ? { causal: true }
          : mask === 'window'
            ? { causal: true, window: [Math.floor(nk / 3), 0] }
            : {};
      const x = [q, k, v].map((t) => t.toFloat32Array()) as [
        Float32Array,
        Float32Array,
        Float32Array,
      ];
      const bias = -Math.log(nk) + 0.5;
      const factor = 1 / nk;
      const wants = {
        sigmoid: sigmoidAttentionReference(q, k, v, { ...options, bias }).o.toFloat64Array(),
        silu: siluReference(q, k, v, options, factor),
      };
      for (const kind of ['sigmoid', 'silu'] as const) {
        const problem: NativeAttentionProblem = {
          ...resolveAttentionProblem(q, k, v, options),
          normalize:
            kind === 'sigmoid' ? { kind, bias: Float32Array.of(bias, bias) } : { kind, factor },
        };
        // Sigmoid's weights sum to ~Nk e^bias per row, silu's to ~1: one tolerance scale.
        const want = wants[kind];
        const scale = Math.max(...want.map(Math.abs));
        await eachRun(problem, x, (q.size / d) * dv, (o, label) => {
          let worst = 0;
          for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(o[i]! - want[i]!));
          expect(worst / scale, `${kind} ${label}`).toBeLessThan(TOL);
        });
      }
    });

    test('THD varlen with empty sequences: rows without keys are exactly 0; a NaN key poisons its rows', async () => {
      const rng = new Rng(5151);
      const lensQ = [1, 0, 4, 2, 3];
      const lensK = [1777, 0, 9, 0, 250];
      const [cuQ, cuK] = [cum(lensQ), cum(lensK)];
      const [hq, hkv, d] = [8, 2, 32];
      const q = rng.randn([cuQ[5]!, hq, d]);
      const k = rng.randn([cuK[5]!, hkv, d]);
      const v = rng.randn([cuK[5]!, hkv, d]);
      const options: AttentionOptions = {
        layout: 'THD',
        cuSeqlensQ: cuQ,
        cuSeqlensK: cuK,
        causal: true,
      };
      // The default bias, -log of each sequence's keys (0 without keys), as the skeleton passes it.
      const bias = Float32Array.from(lensK, (n) => (n > 0 ? -Math.log(n) : 0));
      // The reference per sequence (it takes BHND only): THD rows [start, end) as [1, H, n, D].
      const bhnd = (t: Tensor, start: number, end: number) => {
        const [, h, dd] = t.shape as [number, number, number];
        const src = t.toFloat64Array();
        const dst = new Float64Array((end - start) * h * dd);
        for (let r = start; r < end; r++)
          for (let hh = 0; hh < h; hh++)
            for (let c = 0; c < dd; c++)
              dst[(hh * (end - start) + r - start) * dd + c] = src[(r * h + hh) * dd + c]!;
        return Tensor.from(dst, [1, h, end - start, dd], 'f64');
      };
      const want = new Float64Array(q.size);
      for (let b = 0; b < 5; b++) {
        const nq = lensQ[b]!;
        if (nq === 0 || lensK[b] === 0) continue;
        const o = sigmoidAttentionReference(
          bhnd(q, cuQ[b]!, cuQ[b + 1]!),
          bhnd(k, cuK[b]!, cuK[b + 1]!),
          bhnd(v, cuK[b]!, cuK[b + 1]!),
          { causal: true },
        ).o.toFloat64Array();
        for (let hh = 0; hh < hq; hh++)
          for (let i = 0; i < nq; i++)
            for (let c = 0; c < d; c++)
              want[((cuQ[b]! + i) * hq + hh) * d + c] = o[(hh * nq + i) * d + c]!;
      }
      const problem: NativeAttentionProblem = {
        ...resolveAttentionProblem(q, k, v, options),
        normalize: { kind: 'sigmoid', bias },
      };
      const x = [q, k, v].map((t) => t.toFloat32Array()) as [
        Float32Array,
        Float32Array,
        Float32Array,
      ];
      await eachRun(problem, x, q.size, (o, label) => {
        expectClose(o, want, TOL, label);
        for (let t = cuQ[3]!; t < cuQ[4]!; t++)
          for (let c = 0; c < hq * d; c++) expect(o[t * hq * d + c]).toBe(0);
      });
      // A NaN key row of sequence 2 (keys 5 of 9; its 4 causal rows see keys up to 5..8): NaN in
      // rows 0..3 of sequence 2 only, the other sequences as before; both weights, every schedule.
      const kn = x[1].slice();
      kn.fill(Number.NaN, (cuK[2]! + 5) * hkv * d, (cuK[2]! + 6) * hkv * d);
      const silu: NativeAttentionProblem = {
        ...problem,
        normalize: { kind: 'silu', factor: 0.01 },
      };
      for (const pr of [problem, silu])
        await eachRun(pr, [x[0], kn, x[2]], q.size, (o, label) => {
          for (let t = 0; t < cuQ[5]!; t++) {
            const inSeq2 = t >= cuQ[2]! && t < cuQ[3]!;
            const row = o.subarray(t * hq * d, (t + 1) * hq * d);
            expect(
              row.every((y) => (inSeq2 ? Number.isNaN(y) : Number.isFinite(y))),
              `${pr.normalize?.kind} ${label} token ${t}`,
            ).toBe(true);
          }
        });
    });

    test('a NaN value row inside a visited tile but outside every row band leaves the rows finite (the fallback path)', async () => {
      // nq 3, causal, window [20, 0], nk 200: row i sees keys 177 + i .. 197 + i; key 170 is in
      // the visited tile [128, 192) but in no row's band, so the dense P V would give 0 * NaN.
      const rng = new Rng(6161);
      const [hq, hkv, nq, nk, d] = [8, 2, 3, 200, 32];
      const q = rng.randn([2, hq, nq, d]);
      const k = rng.randn([2, hkv, nk, d]);
      const v = rng.randn([2, hkv, nk, d]);
      const options: AttentionOptions = { causal: true, window: [20, 0] };
      const bias = -3;
      const want = sigmoidAttentionReference(q, k, v, { ...options, bias }).o.toFloat64Array();
      const x = [q, k, v].map((t) => t.toFloat32Array()) as [
        Float32Array,
        Float32Array,
        Float32Array,
      ];
      for (let b = 0; b < 2; b++)
        for (let h = 0; h < hkv; h++)
          x[2].fill(Number.NaN, ((b * hkv + h) * nk + 170) * d, ((b * hkv + h) * nk + 171) * d);
      const problem: NativeAttentionProblem = {
        ...resolveAttentionProblem(q, k, v, options),
        normalize: { kind: 'sigmoid', bias: Float32Array.of(bias, bias) },
      };
      await eachRun(problem, x, q.size, (o, label) => expectClose(o, want, TOL, label));
    });
  },
);
