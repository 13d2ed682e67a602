import {
  alibi,
  alibiSlopes,
  type ModdedReferenceOptions,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  resolveScoreMods,
  type ScoreMod,
  scoreBias,
  softcap,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import {
  type NativeCase as Case,
  engineOrSkip,
  expectClose,
  NATIVE_FLAVORS as FLAVORS,
  poisoned,
  randomNativeCase as randomCase,
} from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import {
  loadNative,
  type NativeAttentionProblem,
  type NativeEngine,
  type NativeScoreMod,
} from './index.js';

// The skeleton's hooks on the native engine: every normalize policy (softmax, softmax with
// sinks, sigmoid) x score-mod policy (none, each built-in mod, lists in several orders) against
// the float64 modded reference, over the random problems of testing.ts (odd lengths, Nq != Nk,
// GQA, THD varlen with empty sequences, causal / window / block-sparse, odd tiles), on every
// ISA this CPU has, with NaN-poisoned outputs and fresh inputs per case.

const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];

type Norm = 'softmax' | 'sinks' | 'sigmoid' | 'sigmoid fixed bias';
const NORMS: readonly Norm[] = ['softmax', 'sinks', 'sigmoid', 'sigmoid fixed bias'];
type ModSet =
  | 'none'
  | 'softcap'
  | 'alibi'
  | 'bias'
  | 'alibi+softcap'
  | 'bias+softcap+alibi'
  | 'softcap+bias+softcap';
const MOD_SETS: readonly ModSet[] = [
  'none',
  'softcap',
  'alibi',
  'bias',
  'alibi+softcap',
  'bias+softcap+alibi',
  'softcap+bias+softcap',
];

interface HookCase extends Case {
  norm: Norm;
  mods: ModSet;
  ref: ModdedReferenceOptions;
}

function modsOf(rng: Rng, set: ModSet, c: Case): ScoreMod[] {
  const p = c.problem;
  const make = (kind: string): ScoreMod => {
    if (kind === 'softcap') return softcap(1 + rng.uniform() * 4);
    if (kind === 'alibi') {
      // The paper's slopes, or random ones (negative too: the kernel must not assume a sign).
      return alibi(
        rng.uniform() < 0.5
          ? alibiSlopes(p.hq)
          : Float32Array.from({ length: p.hq }, () => rng.uniform() * 0.4 - 0.1),
      );
    }
    const shapes = [
      [p.maxSeqQ, p.maxSeqK],
      [p.hq, p.maxSeqQ, p.maxSeqK],
      [p.batch, p.hq, p.maxSeqQ, p.maxSeqK],
    ];
    return scoreBias(rng.randn(shapes[rng.int(0, 3)]!));
  };
  return set === 'none' ? [] : set.split('+').map(make);
}

function hookCase(rng: Rng, flavor: (typeof FLAVORS)[number], norm: Norm, mods: ModSet): HookCase {
  const c = randomCase(rng, flavor);
  const ref: ModdedReferenceOptions = { ...c.options };
  if (norm === 'sinks')
    ref.sinks = Float32Array.from({ length: c.problem.hq }, () => rng.uniform() * 4 - 2);
  if (norm.startsWith('sigmoid')) ref.normalize = 'sigmoid';
  if (norm === 'sigmoid fixed bias') ref.bias = rng.uniform() * 2 - 1;
  const list = modsOf(rng, mods, c);
  if (list.length > 0) ref.scoreMod = list;
  return { ...c, name: `${norm} / ${mods} / ${c.name}`, norm, mods, ref };
}

/** The engine problem of a case: the resolved problem plus its hooks. */
function nativeProblem(c: HookCase): NativeAttentionProblem {
  const p = c.problem;
  const scoreMods: NativeScoreMod[] = resolveScoreMods(c.ref.scoreMod, p, 'cpu').map((m) => {
    if (m.kind === 'softcap') return { kind: 'softcap', cap: m.cap };
    if (m.kind === 'alibi') return { kind: 'alibi', slopes: m.slopes };
    if (m.kind === 'bias') {
      const { batchStride, headStride, rowStride } = m;
      return { kind: 'bias', bias: m.bias.toFloat32Array(), batchStride, headStride, rowStride };
    }
    throw new Error('custom mods do not run on the native engine');
  });
  let normalize: NativeAttentionProblem['normalize'];
  if (c.ref.normalize === 'sigmoid') {
    const bias = Float32Array.from({ length: p.batch }, (_, b) =>
      c.ref.bias !== undefined ? c.ref.bias : p.seqK[b]! > 0 ? -Math.log(p.seqK[b]!) : 0,
    );
    normalize = { kind: 'sigmoid', bias };
  } else {
    normalize = { kind: 'softmax', sinks: c.ref.sinks as Float32Array | undefined };
  }
  return { ...p, normalize, scoreMods };
}

async function runCase(e: NativeEngine, c: HookCase, np: NativeAttentionProblem) {
  const sigmoid = c.ref.normalize === 'sigmoid';
  const o = poisoned(c.problem.oShape.reduce((a, x) => a * x, 1));
  const lse = sigmoid ? undefined : poisoned(c.problem.lseShape.reduce((a, x) => a * x, 1));
  const [q, k, v, dO] = [c.q, c.k, c.v, c.dO].map((t) => t.toFloat32Array()) as [
    Float32Array,
    Float32Array,
    Float32Array,
    Float32Array,
  ];
  await e.run('attention.forward', np, { q, k, v }, lse ? { o, lse } : { o });
  const grads = {
    dq: poisoned(q.length),
    dk: poisoned(k.length),
    dv: poisoned(v.length),
    dsinks: c.ref.sinks ? poisoned(c.problem.hq) : undefined,
  };
  const inputs = sigmoid ? { q, k, v, dO } : { q, k, v, o, lse, dO };
  await e.run('attention.backward', np, inputs, grads);
  return { o, lse, ...grads };
}

describe.runIf(base)('hooks vs the float64 modded reference, every ISA', () => {
  const rng = new Rng(20260514);
  const tol = toleranceFor({ dtype: 'f32' });
  const cases: HookCase[] = [];
  // Every (normalize, mods) pair twice, over the flavors in turn.
  let n = 0;
  for (let rep = 0; rep < 2; rep++)
    for (const norm of NORMS)
      for (const mods of MOD_SETS)
        cases.push(hookCase(rng, FLAVORS[n++ % FLAVORS.length]!, norm, mods));
  test.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
    const g = moddedAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.ref);
    const np = nativeProblem(c);
    for (const e of engines) {
      const out = await runCase(e, c, np);
      expectClose(out.o, ref.o, tol, `${e.isa} o`);
      if (ref.lse) expectClose(out.lse!, ref.lse, tol, `${e.isa} lse`);
      expectClose(out.dq, g.dq, tol, `${e.isa} dq`);
      expectClose(out.dk, g.dk, tol, `${e.isa} dk`);
      expectClose(out.dv, g.dv, tol, `${e.isa} dv`);
      if (g.dsinks) expectClose(out.dsinks!, g.dsinks, tol, `${e.isa} dsinks`);
    }
  });
});

describe.runIf(base)('hooks: edges', () => {
  test('sinks: a row without keys has O = 0 and LSE = the sink; Nq > Nk causal', async () => {
    const rng = new Rng(8);
    const [nq, nk, hq] = [90, 40, 2];
    const q = rng.randn([1, hq, nq, 16]);
    const k = rng.randn([1, 1, nk, 16]);
    const v = rng.randn([1, 1, nk, 16]);
    const dO = rng.randn([1, hq, nq, 16]);
    const sinks = Float32Array.of(0.5, -1.25);
    const c: HookCase = {
      ...{ name: '', q, k, v, dO, options: { causal: true } },
      problem: undefined!,
      norm: 'sinks',
      mods: 'none',
      ref: { causal: true, sinks },
    };
    const { resolveAttentionProblem } = await import('@attnkit/attention');
    c.problem = resolveAttentionProblem(q, k, v, c.options);
    const ref = moddedAttentionReference(q, k, v, c.ref);
    const g = moddedAttentionReferenceBackward(q, k, v, dO, c.ref);
    for (const e of engines) {
      const out = await runCase(e, c, nativeProblem(c));
      for (let h = 0; h < hq; h++) {
        for (let i = 0; i < nq - nk; i++) {
          expect(out.lse![h * nq + i]).toBe(sinks[h]);
          for (let x = 0; x < 16; x++) expect(out.o[(h * nq + i) * 16 + x]).toBe(0);
        }
      }
      expectClose(out.o, ref.o, 1e-5, `${e.isa} o`);
      expectClose(out.lse!, ref.lse!, 1e-5, `${e.isa} lse`);
      expectClose(out.dsinks!, g.dsinks!, 1e-5, `${e.isa} dsinks`);
      expectClose(out.dq, g.dq, 1e-5, `${e.isa} dq`);
    }
  });

  test('sigmoid and softcap saturate without overflow (huge scores stay finite)', async () => {
    // Scores of std ~1600: the f32 dot products themselves carry absolute errors ~1e-3 there,
    // so the gradients (sensitive to the few unsaturated scores) are checked for finiteness
    // only; O, a weighted sum of saturated weights, still meets the f32 tolerance.
    const rng = new Rng(9);
    const q = rng.randn([1, 2, 70, 32], 'f32', 40);
    const k = rng.randn([1, 2, 70, 32], 'f32', 40);
    const v = rng.randn([1, 2, 70, 32]);
    const dO = rng.randn([1, 2, 70, 32]);
    const { resolveAttentionProblem } = await import('@attnkit/attention');
    const variants: [Norm, ModSet, ModdedReferenceOptions][] = [
      ['sigmoid', 'softcap', { normalize: 'sigmoid', scoreMod: softcap(30) }],
      ['softmax', 'softcap', { scoreMod: softcap(30) }],
      ['sigmoid', 'none', { normalize: 'sigmoid' }],
      ['sigmoid fixed bias', 'none', { normalize: 'sigmoid', bias: 120 }],
      ['sigmoid fixed bias', 'none', { normalize: 'sigmoid', bias: -120 }],
    ];
    for (const [norm, mods, ref] of variants) {
      const c: HookCase = {
        ...{ name: '', q, k, v, dO, options: {} },
        problem: resolveAttentionProblem(q, k, v),
        norm,
        mods,
        ref,
      };
      const r = moddedAttentionReference(q, k, v, ref);
      for (const e of engines) {
        const out = await runCase(e, c, nativeProblem(c));
        const label = `${norm} ${mods} ${ref.bias ?? ''} ${e.isa}`;
        expectClose(out.o, r.o, 1e-5, `${label} o`);
        for (const [name, x] of Object.entries(out)) {
          if (x) expect(x.every(Number.isFinite), `${label} ${name} finite`).toBe(true);
        }
      }
    }
  });

  test('several query and key blocks per head with every hook at once', async () => {
    const rng = new Rng(10);
    const [hq, nq, nk, d] = [4, 333, 290, 64];
    const q = rng.randn([1, hq, nq, d]);
    const k = rng.randn([1, 2, nk, d]);
    const v = rng.randn([1, 2, nk, d]);
    const dO = rng.randn([1, hq, nq, d]);
    const { resolveAttentionProblem } = await import('@attnkit/attention');
    for (const norm of ['sinks', 'sigmoid'] as const) {
      const ref: ModdedReferenceOptions = {
        causal: true,
        scoreMod: [alibi(alibiSlopes(hq)), scoreBias(rng.randn([hq, nq, nk])), softcap(8)],
      };
      if (norm === 'sinks') ref.sinks = Float32Array.of(1, -1, 0, 2);
      else ref.normalize = 'sigmoid';
      const c: HookCase = {
        ...{ name: '', q, k, v, dO, options: { causal: true } },
        problem: resolveAttentionProblem(q, k, v, { causal: true }),
        norm,
        mods: 'bias+softcap+alibi',
        ref,
      };
      const r = moddedAttentionReference(q, k, v, ref);
      const g = moddedAttentionReferenceBackward(q, k, v, dO, ref);
      const e = base!;
      const out = await runCase(e, c, nativeProblem(c));
      expectClose(out.o, r.o, 1e-5, `${norm} o`);
      if (r.lse) expectClose(out.lse!, r.lse, 1e-5, `${norm} lse`);
      expectClose(out.dq, g.dq, 1e-5, `${norm} dq`);
      expectClose(out.dk, g.dk, 1e-5, `${norm} dk`);
      expectClose(out.dv, g.dv, 1e-5, `${norm} dv`);
      if (g.dsinks) expectClose(out.dsinks!, g.dsinks, 1e-5, `${norm} dsinks`);
    }
  });

  test('no mods and softmax hooks given explicitly = the plain kernel, bit for bit', async () => {
    const rng = new Rng(12);
    const c = randomCase(rng, 'gqa');
    const plain: HookCase = { ...c, norm: 'softmax', mods: 'none', ref: c.options };
    for (const e of engines) {
      const a = await runCase(e, plain, c.problem);
      const b = await runCase(e, plain, {
        ...c.problem,
        normalize: { kind: 'softmax' },
        scoreMods: [],
      });
      expect(b.o).toEqual(a.o);
      expect(b.lse).toEqual(a.lse);
      expect(b.dk).toEqual(a.dk);
      expect(b.dv).toEqual(a.dv);
    }
  });

  test('a bias shared by every (b, h) reads the same row for every head (strides 0)', async () => {
    const rng = new Rng(13);
    const q = rng.randn([2, 2, 20, 16]);
    const k = rng.randn([2, 2, 25, 16]);
    const v = rng.randn([2, 2, 25, 16]);
    const bias = rng.randn([20, 25]);
    const { resolveAttentionProblem } = await import('@attnkit/attention');
    const p = resolveAttentionProblem(q, k, v);
    const o = poisoned(2 * 2 * 20 * 16);
    const lse = poisoned(2 * 2 * 20);
    const np: NativeAttentionProblem = {
      ...p,
      scoreMods: [
        { kind: 'bias', bias: bias.toFloat32Array(), batchStride: 0, headStride: 0, rowStride: 25 },
      ],
    };
    await base!.run(
      'attention.forward',
      np,
      { q: q.toFloat32Array(), k: k.toFloat32Array(), v: v.toFloat32Array() },
      { o, lse },
    );
    const ref = moddedAttentionReference(q, k, v, { scoreMod: scoreBias(bias) });
    expectClose(o, ref.o, 1e-5, 'o');
    expect(Tensor.from(lse, [2, 2, 20]).toFloat32Array().every(Number.isFinite)).toBe(true);
  });
});

describe('bias gradient output (scoreMods[n].dbias)', () => {
  test('stores dS per (b, h): dQ = scale dS K, 0 at masked pairs; a short dbias is a RangeError', async () => {
    const rng = new Rng(17);
    const [B, H, Nq, Nk, D] = [2, 2, 13, 17, 8];
    const q = rng.randn([B, H, Nq, D]);
    const k = rng.randn([B, H, Nk, D]);
    const v = rng.randn([B, H, Nk, D]);
    const dO = rng.randn([B, H, Nq, D]);
    const bias = rng.randn([B, H, Nq, Nk]);
    const { resolveAttentionProblem } = await import('@attnkit/attention');
    const p = resolveAttentionProblem(q, k, v, { causal: true });
    const dbias = new Float32Array(B * H * Nq * Nk);
    const mod: NativeScoreMod = {
      kind: 'bias',
      bias: bias.toFloat32Array(),
      batchStride: H * Nq * Nk,
      headStride: Nq * Nk,
      rowStride: Nk,
      dbias,
      dbiasBatchStride: H * Nq * Nk,
      dbiasHeadStride: Nq * Nk,
    };
    const np: NativeAttentionProblem = { ...p, scoreMods: [mod] };
    const [Q, K, V, G] = [q, k, v, dO].map((t) => t.toFloat32Array()) as Float32Array[];
    const o = poisoned(B * H * Nq * D);
    const lse = poisoned(B * H * Nq);
    await base!.run('attention.forward', np, { q: Q!, k: K!, v: V! }, { o, lse });
    const dq = poisoned(Q!.length);
    const dk = poisoned(K!.length);
    const dv = poisoned(V!.length);
    await base!.run(
      'attention.backward',
      np,
      { q: Q!, k: K!, v: V!, o, lse, dO: G! },
      { dq, dk, dv },
    );
    let worst = 0;
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < Nq; i++) {
          const row = ((b * H + h) * Nq + i) * Nk;
          for (let j = 0; j < Nk; j++) {
            // Bottom-right causal: key j is allowed iff j <= i + Nk - Nq.
            if (j > i + Nk - Nq) expect(Math.abs(dbias[row + j]!)).toBe(0);
          }
          for (let c = 0; c < D; c++) {
            let s = 0;
            for (let j = 0; j < Nk; j++) s += dbias[row + j]! * K![((b * H + h) * Nk + j) * D + c]!;
            const want = p.scale * s;
            const got = dq[((b * H + h) * Nq + i) * D + c]!;
            worst = Math.max(worst, Math.abs(got - want) / Math.max(1, Math.abs(want)));
          }
        }
    expect(worst).toBeLessThanOrEqual(1e-5);
    const short = { ...np, scoreMods: [{ ...mod, dbias: new Float32Array(10) }] };
    await expect(
      base!.run(
        'attention.backward',
        short,
        { q: Q!, k: K!, v: V!, o, lse, dO: G! },
        { dq, dk, dv },
      ),
    ).rejects.toThrow(/scoreMods\[0\]\.dbias/);
  });
});
