import {
  type ModdedReferenceOptions,
  moddedAttentionReference,
  resolveAttentionProblem,
  softcap,
} from '@attnkit/attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import {
  engineOrSkip,
  expectClose,
  NATIVE_FLAVORS as FLAVORS,
  type NativeCase,
  poisoned,
  randomNativeCase,
} from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { loadNative, type NativeAttentionProblem, type NativeEngine } from './index.js';

// The forward's split-K schedule (problem.splits, FlashDecoding): each query group's visited
// key tiles cut into `splits` ranges, partial (m, l, acc) combined. It must equal the band
// schedule (splits 1 / absent) and the float64 modded reference, for splits 1, 2, 3, 8 and more
// than the tiles, over causal / window / GQA / THD varlen / block-sparse problems, softmax,
// sinks, sigmoid, a softcap mod, and decode rows (Nq = 1, 4, long Nk); every ISA, NaN-poisoned
// outputs, fresh random inputs per case.

const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];

const SPLITS = [1, 2, 3, 8, 4096];
const TOL = 1e-5;
type Norm = 'softmax' | 'sinks' | 'sigmoid';

interface SplitCase {
  name: string;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  problem: NativeAttentionProblem;
  ref: ModdedReferenceOptions;
}

function withHooks(rng: Rng, c: NativeCase, norm: Norm, cap: boolean): SplitCase {
  const p = c.problem;
  const ref: ModdedReferenceOptions = { ...c.options };
  const problem: NativeAttentionProblem = { ...p };
  if (norm === 'sinks') {
    ref.sinks = Float32Array.from({ length: p.hq }, () => rng.uniform() * 4 - 2);
    problem.normalize = { kind: 'softmax', sinks: ref.sinks };
  }
  if (norm === 'sigmoid') {
    ref.normalize = 'sigmoid';
    ref.bias = rng.uniform() * 2 - 1;
    problem.normalize = {
      kind: 'sigmoid',
      bias: Float32Array.from({ length: p.batch }, () => ref.bias as number),
    };
  }
  if (cap) {
    const c0 = 1 + rng.uniform() * 4;
    ref.scoreMod = softcap(c0);
    problem.scoreMods = [{ kind: 'softcap', cap: c0 }];
  }
  const name = `${norm}${cap ? ' softcap' : ''} / ${c.name}`;
  return { name, q: c.q, k: c.k, v: c.v, problem, ref };
}

async function forward(e: NativeEngine, c: SplitCase, splits: number | undefined) {
  const p = c.problem;
  const sigmoid = p.normalize?.kind === 'sigmoid';
  const o = poisoned((c.q.size / p.d) * p.dv);
  const lse = sigmoid ? undefined : poisoned(c.q.size / p.d);
  const problem = splits === undefined ? p : { ...p, splits };
  const [q, k, v] = [c.q, c.k, c.v].map((t) => t.toFloat32Array()) as [
    Float32Array,
    Float32Array,
    Float32Array,
  ];
  await e.run('attention.forward', problem, { q, k, v }, lse ? { o, lse } : { o });
  return { o, lse };
}

async function check(c: SplitCase) {
  const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
  for (const e of engines) {
    const band = await forward(e, c, undefined);
    expectClose(band.o, ref.o, TOL, `${e.isa} band o`);
    for (const splits of SPLITS) {
      const out = await forward(e, c, splits);
      const label = `${e.isa} splits ${splits}`;
      expectClose(out.o, band.o, TOL, `${label} o vs band`);
      expectClose(out.o, ref.o, TOL, `${label} o`);
      if (ref.lse) {
        expectClose(out.lse!, band.lse!, TOL, `${label} lse vs band`);
        expectClose(out.lse!, ref.lse, TOL, `${label} lse`);
      }
    }
  }
}

describe.runIf(base)('split-K forward vs band and the float64 reference, every ISA', () => {
  const rng = new Rng(20261202);
  const cases: [string, () => SplitCase][] = [];
  const norms: Norm[] = ['softmax', 'sinks', 'sigmoid'];
  let n = 0;
  for (const flavor of FLAVORS) {
    for (const norm of norms) {
      const cap = n++ % 2 === 0;
      const seed = rng.int(0, 1 << 30);
      // Fresh random inputs per case (built when the case runs).
      const make = () =>
        withHooks(new Rng(seed + 1), randomNativeCase(new Rng(seed), flavor), norm, cap);
      cases.push([`${norm}${cap ? ' softcap' : ''} / ${flavor} #${seed}`, make]);
    }
  }
  test.each(cases)('%s', async (_name, make) => {
    await check(make());
  });

  // Decode: Nq = 1, 4 against a long key band, several key tiles (small blockK) so that the
  // splits have work; causal (bottom-right), window, GQA, sinks, sigmoid, softcap.
  const decode: [string, number, Norm, ModdedReferenceOptions['window'], boolean][] = [
    ['nq 1 causal softmax', 1, 'softmax', undefined, false],
    ['nq 4 causal sinks softcap', 4, 'sinks', undefined, true],
    ['nq 4 window sigmoid', 4, 'sigmoid', [700, 0], false],
    ['nq 1 window sinks', 1, 'sinks', [333, 0], true],
    ['nq 4 causal sigmoid softcap', 4, 'sigmoid', undefined, true],
  ];
  test.each(decode)('decode %s', async (_name, nq, norm, window, cap) => {
    const rng = new Rng(nq * 31 + (cap ? 7 : 0) + norm.length);
    const [b, hq, hkv, nk, d] = [1, 8, 2, 1500, 64];
    const q = rng.randn([b, hq, nq, d]);
    const k = rng.randn([b, hkv, nk, d]);
    const v = rng.randn([b, hkv, nk, d]);
    const options = window ? { causal: true, window } : { causal: true };
    const problem = { ...resolveAttentionProblem(q, k, v, options), blockK: 64 };
    const c: NativeCase = { name: '', q, k, v, dO: q, options, problem };
    await check(withHooks(rng, c, norm, cap));
  });
});

describe.runIf(base)('split-K: problem.splits', () => {
  test('rows without keys: O = 0 and LSE = -inf (or the sink), for every split', async () => {
    const rng = new Rng(77);
    const [nq, nk, d] = [70, 30, 16];
    const q = rng.randn([1, 2, nq, d]);
    const k = rng.randn([1, 1, nk, d]);
    const v = rng.randn([1, 1, nk, d]);
    const problem = resolveAttentionProblem(q, k, v, { causal: true });
    const sinks = Float32Array.of(0.75, -1.5);
    for (const e of engines) {
      for (const s of [undefined, sinks]) {
        const c: SplitCase = {
          ...{ name: '', q, k, v },
          problem: { ...problem, normalize: { kind: 'softmax', sinks: s }, blockK: 8 },
          ref: { causal: true, sinks: s },
        };
        for (const splits of [2, 3, 64]) {
          const out = await forward(e, c, splits);
          for (let h = 0; h < 2; h++) {
            for (let i = 0; i < nq - nk; i++) {
              expect(out.lse![h * nq + i]).toBe(s ? s[h] : -Infinity);
              for (let x = 0; x < d; x++) expect(out.o[(h * nq + i) * d + x]).toBe(0);
            }
          }
        }
      }
    }
  });

  test('splits < 1 or not an integer: RangeError naming problem.splits', async () => {
    const rng = new Rng(5);
    const q = rng.randn([1, 1, 4, 8]);
    const problem = resolveAttentionProblem(q, q, q);
    const x = q.toFloat32Array();
    for (const splits of [0, -1, 1.5]) {
      const run = base!.run(
        'attention.forward',
        { ...problem, splits },
        { q: x, k: x, v: x },
        {
          o: new Float32Array(x.length),
          lse: new Float32Array(4),
        },
      );
      await expect(run).rejects.toThrow(RangeError);
      await expect(run).rejects.toThrow(/problem\.splits/);
    }
  });
});
