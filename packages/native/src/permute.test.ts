import {
  type AttentionProblem,
  alibi,
  alibiSlopes,
  type ModdedReferenceOptions,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  resolveAttentionProblem,
  resolveScoreMods,
  type ScoreMod,
  scoreBias,
  softcap,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import {
  engineOrSkip,
  expectClose,
  NATIVE_FLAVORS as FLAVORS,
  type NativeCase,
  poisoned,
  randomNativeCase,
} from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import {
  loadNative,
  type NativeAttentionProblem,
  type NativeEngine,
  type NativeScoreMod,
} from './index.js';

// The permuted-tiles hook (skeleton PermuteHook) on the native engine: inputs permQ / permK
// (Int32Array, the LSE layout). For random permutations the result must equal the float64
// modded reference of the gathered rows Q' = Q[permQ], K' = K[permK], V' = V[permK] (dO' =
// dO[permQ]), scattered back (O, LSE, dQ at permQ; dK, dV at permK) — gather and scatter are
// built here, independently of the engine. Over the random problems of @attnkit/testing (BHND
// and THD varlen with an empty sequence, GQA, causal, window, block-sparse, odd tiles), with
// softmax / sinks / sigmoid, alibi / bias / softcap mods, split-K (splits 3), q-only, k-only
// and both; every ISA, NaN-poisoned outputs, fresh random inputs per case.

const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];

const TOL = 1e-5;
type Norm = 'softmax' | 'sinks' | 'sigmoid';
type Mods = 'none' | 'alibi' | 'bias' | 'alibi+softcap' | 'bias+alibi';
type Which = 'q' | 'k' | 'both';

interface Perm {
  q?: Int32Array;
  k?: Int32Array;
}

/** Element offset of row `pos` of (b, head h) in a tensor of width `width` (q / o / k / v). */
function rowAt(
  p: AttentionProblem,
  side: 'q' | 'k',
  b: number,
  h: number,
  pos: number,
  width: number,
) {
  const heads = side === 'q' ? p.hq : p.hkv;
  if (p.layout === 'THD') {
    const start = (side === 'q' ? p.startQ : p.startK)[b]!;
    return ((start + pos) * heads + h) * width;
  }
  const max = side === 'q' ? p.maxSeqQ : p.maxSeqK;
  return ((b * heads + h) * max + pos) * width;
}

/** Entry of (b, h, pos) in the index layout (= the LSE layout for q). */
function idxAt(p: AttentionProblem, side: 'q' | 'k', b: number, h: number, pos: number) {
  if (p.layout === 'THD') {
    const total = side === 'q' ? p.totalQ : p.totalK;
    const start = (side === 'q' ? p.startQ : p.startK)[b]!;
    return h * total + start + pos;
  }
  const heads = side === 'q' ? p.hq : p.hkv;
  const max = side === 'q' ? p.maxSeqQ : p.maxSeqK;
  return (b * heads + h) * max + pos;
}

/** A random permutation of each (b, h) slice of the index layout of `side`. */
function randomPerm(rng: Rng, p: AttentionProblem, side: 'q' | 'k'): Int32Array {
  const heads = side === 'q' ? p.hq : p.hkv;
  const len =
    p.layout === 'THD'
      ? heads * (side === 'q' ? p.totalQ : p.totalK)
      : p.batch * heads * (side === 'q' ? p.maxSeqQ : p.maxSeqK);
  const out = new Int32Array(len);
  for (let b = 0; b < p.batch; b++) {
    const n = (side === 'q' ? p.seqQ : p.seqK)[b]!;
    for (let h = 0; h < heads; h++) {
      const x = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = rng.int(0, i + 1);
        [x[i], x[j]] = [x[j]!, x[i]!];
      }
      for (let i = 0; i < n; i++) out[idxAt(p, side, b, h, i)] = x[i]!;
    }
  }
  return out;
}

/**
 * Gather (out row i = data row perm[i]) or scatter (out row perm[i] = data row i) of the rows of
 * each (b, h) of a tensor of `side` (width elements per row); `lse`: the LSE layout (width 1).
 */
function permuteRows(
  data: Float64Array | Float32Array,
  p: AttentionProblem,
  side: 'q' | 'k',
  width: number,
  perm: Int32Array | undefined,
  mode: 'gather' | 'scatter',
  lse = false,
): Float64Array {
  const out = Float64Array.from(data);
  if (!perm) return out;
  const heads = side === 'q' ? p.hq : p.hkv;
  const at = (b: number, h: number, pos: number) =>
    lse ? idxAt(p, side, b, h, pos) : rowAt(p, side, b, h, pos, width);
  for (let b = 0; b < p.batch; b++) {
    const n = (side === 'q' ? p.seqQ : p.seqK)[b]!;
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < n; i++) {
        const src = perm[idxAt(p, side, b, h, i)]!;
        const [to, from] =
          mode === 'gather' ? [at(b, h, i), at(b, h, src)] : [at(b, h, src), at(b, h, i)];
        for (let c = 0; c < width; c++) out[to + c] = data[from + c]!;
      }
    }
  }
  return out;
}

function gather(t: Tensor, p: AttentionProblem, side: 'q' | 'k', width: number, perm?: Int32Array) {
  return Tensor.from(
    Float32Array.from(permuteRows(t.toFloat32Array(), p, side, width, perm, 'gather')),
    t.shape,
  );
}

interface PermCase {
  name: string;
  c: NativeCase;
  ref: ModdedReferenceOptions;
  problem: NativeAttentionProblem;
  perm: Perm;
}

function modsOf(rng: Rng, set: Mods, p: AttentionProblem): ScoreMod[] {
  const make = (kind: string): ScoreMod => {
    if (kind === 'softcap') return softcap(1 + rng.uniform() * 4);
    if (kind === 'alibi') return alibi(alibiSlopes(p.hq));
    const shapes = [
      [p.maxSeqQ, p.maxSeqK],
      [p.hq, p.maxSeqQ, p.maxSeqK],
      [p.batch, p.hq, p.maxSeqQ, p.maxSeqK],
    ];
    return scoreBias(rng.randn(shapes[rng.int(0, 3)]!));
  };
  return set === 'none' ? [] : set.split('+').map(make);
}

function permCase(
  rng: Rng,
  c: NativeCase,
  norm: Norm,
  mods: Mods,
  which: Which,
  splits: number,
): PermCase {
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
  const list = modsOf(rng, mods, p);
  if (list.length > 0) {
    ref.scoreMod = list;
    problem.scoreMods = resolveScoreMods(list, p, 'cpu').map((m): NativeScoreMod => {
      if (m.kind === 'softcap') return { kind: 'softcap', cap: m.cap };
      if (m.kind === 'alibi') return { kind: 'alibi', slopes: m.slopes };
      if (m.kind === 'bias') {
        const { batchStride, headStride, rowStride } = m;
        return { kind: 'bias', bias: m.bias.toFloat32Array(), batchStride, headStride, rowStride };
      }
      throw new Error('custom mods do not run on the native engine');
    });
  }
  if (splits > 1) problem.splits = splits;
  const perm: Perm = {};
  if (which !== 'k') perm.q = randomPerm(rng, p, 'q');
  if (which !== 'q') perm.k = randomPerm(rng, p, 'k');
  const name = `${which} / ${norm} / ${mods}${splits > 1 ? ` / splits ${splits}` : ''} / ${c.name}`;
  return { name, c, ref, problem, perm };
}

/** The expected results: the reference of the gathered rows, scattered back. */
function expected(pc: PermCase) {
  const { c, ref, perm } = pc;
  const p = c.problem;
  const gq = gather(c.q, p, 'q', p.d, perm.q);
  const gk = gather(c.k, p, 'k', p.d, perm.k);
  const gv = gather(c.v, p, 'k', p.dv, perm.k);
  const gdO = gather(c.dO, p, 'q', p.dv, perm.q);
  const f = moddedAttentionReference(gq, gk, gv, ref);
  const g = moddedAttentionReferenceBackward(gq, gk, gv, gdO, ref);
  // dsinks_h = -sum_i e^(sink_h - LSE_i) D_i is a sum of terms of either sign (it may cancel):
  // its error is bounded relative to the sum of the terms' magnitudes, kept per head here.
  let dsinksScale: Float64Array | undefined;
  if (ref.sinks && f.lse) {
    dsinksScale = new Float64Array(p.hq);
    const O = f.o.toFloat64Array();
    const G = gdO.toFloat64Array();
    const L = f.lse.toFloat64Array();
    for (let b = 0; b < p.batch; b++) {
      for (let h = 0; h < p.hq; h++) {
        for (let i = 0; i < p.seqQ[b]!; i++) {
          const at = rowAt(p, 'q', b, h, i, p.dv);
          let dd = 0;
          for (let x = 0; x < p.dv; x++) dd += O[at + x]! * G[at + x]!;
          const l = L[idxAt(p, 'q', b, h, i)]!;
          if (l > Number.NEGATIVE_INFINITY)
            dsinksScale[h] += Math.abs(Math.exp(ref.sinks[h]! - l) * dd);
        }
      }
    }
  }
  const back = (t: Tensor, side: 'q' | 'k', width: number, lse = false) =>
    permuteRows(t.toFloat64Array(), p, side, width, side === 'q' ? perm.q : perm.k, 'scatter', lse);
  return {
    o: back(f.o, 'q', p.dv),
    lse: f.lse ? back(f.lse, 'q', 1, true) : undefined,
    dq: back(g.dq, 'q', p.d),
    dk: back(g.dk, 'k', p.d),
    dv: back(g.dv, 'k', p.dv),
    dsinks: g.dsinks?.toFloat64Array(),
    dsinksScale,
  };
}

async function run(e: NativeEngine, pc: PermCase, perm: Perm, splits?: number) {
  const { c } = pc;
  const problem = splits === undefined ? pc.problem : { ...pc.problem, splits };
  const sigmoid = problem.normalize?.kind === 'sigmoid';
  const [q, k, v, dO] = [c.q, c.k, c.v, c.dO].map((t) => t.toFloat32Array()) as [
    Float32Array,
    Float32Array,
    Float32Array,
    Float32Array,
  ];
  const o = poisoned((q.length / c.problem.d) * c.problem.dv);
  const lse = sigmoid ? undefined : poisoned(q.length / c.problem.d);
  const idx = { permQ: perm.q, permK: perm.k };
  await e.run('attention.forward', problem, { q, k, v, ...idx }, lse ? { o, lse } : { o });
  const grads = {
    dq: poisoned(q.length),
    dk: poisoned(k.length),
    dv: poisoned(v.length),
    dsinks: pc.ref.sinks ? poisoned(c.problem.hq) : undefined,
  };
  const { splits: _s, ...bwdProblem } = problem;
  const inputs = sigmoid ? { q, k, v, dO, ...idx } : { q, k, v, o, lse, dO, ...idx };
  await e.run('attention.backward', bwdProblem, inputs, grads);
  return { o, lse, ...grads };
}

async function check(pc: PermCase) {
  const want = expected(pc);
  for (const e of engines) {
    const out = await run(e, pc, pc.perm);
    const label = e.isa;
    expectClose(out.o, want.o, TOL, `${label} o`);
    if (want.lse) expectClose(out.lse!, want.lse, TOL, `${label} lse`);
    expectClose(out.dq, want.dq, TOL, `${label} dq`);
    expectClose(out.dk, want.dk, TOL, `${label} dk`);
    expectClose(out.dv, want.dv, TOL, `${label} dv`);
    if (want.dsinks) {
      for (let h = 0; h < want.dsinks.length; h++) {
        const err = Math.abs(out.dsinks![h]! - want.dsinks[h]!);
        expect(err, `${label} dsinks[${h}]`).toBeLessThanOrEqual(
          TOL * want.dsinksScale![h]! + 1e-30,
        );
      }
    }
  }
}

describe.runIf(base)(
  'permuted tiles vs the scattered reference of gathered rows, every ISA',
  () => {
    const rng = new Rng(20261203);
    const norms: Norm[] = ['softmax', 'sinks', 'sigmoid'];
    const modSets: Mods[] = ['none', 'alibi', 'bias', 'alibi+softcap', 'bias+alibi'];
    const whichs: Which[] = ['q', 'k', 'both'];
    const cases: [string, () => PermCase][] = [];
    let n = 0;
    for (let rep = 0; rep < 2; rep++) {
      for (const flavor of FLAVORS) {
        for (const which of whichs) {
          const norm = norms[n % norms.length]!;
          const mods = modSets[n % modSets.length]!;
          const splits = n % 2 === 0 ? 3 : 1;
          n++;
          const seed = rng.int(0, 1 << 30);
          // Fresh random inputs and permutations per case (built when the case runs).
          const make = () => {
            const r = new Rng(seed + 1);
            return permCase(r, randomNativeCase(new Rng(seed), flavor), norm, mods, which, splits);
          };
          const label = `${which} / ${norm} / ${mods}${splits > 1 ? ' / splits 3' : ''} / ${flavor} #${seed}`;
          cases.push([label, make]);
        }
      }
    }
    test.each(cases)('%s', async (_name, make) => {
      await check(make());
    });

    test('several query and key tiles per head, every hook at once, split-K', async () => {
      const rng = new Rng(31);
      const [hq, hkv, nq, nk, d] = [4, 2, 333, 290, 64];
      const q = rng.randn([1, hq, nq, d]);
      const k = rng.randn([1, hkv, nk, d]);
      const v = rng.randn([1, hkv, nk, d]);
      const dO = rng.randn([1, hq, nq, d]);
      const options = { causal: true, window: [200, 0] as [number, number] };
      const problem = { ...resolveAttentionProblem(q, k, v, options), blockK: 32, blockQ: 48 };
      const c: NativeCase = { name: 'long', q, k, v, dO, options, problem };
      for (const norm of ['sinks', 'sigmoid'] as const) {
        for (const which of ['q', 'k', 'both'] as const) {
          await check(permCase(rng, c, norm, 'bias+alibi', which, 3));
        }
      }
    });
  },
);

describe.runIf(base)('permuted tiles: edges', () => {
  // dQ's partial sums are reduced over threads whose task assignment is dynamic, so dq is
  // checked to a tight tolerance; everything else must match bit for bit.
  test('identity permutations give the unpermuted results (bit for bit but dq)', async () => {
    const rng = new Rng(12);
    for (const flavor of ['varlen', 'gqa', 'sparse'] as const) {
      const c = randomNativeCase(rng, flavor);
      const pc = permCase(rng, c, 'sinks', 'alibi', 'both', 3);
      const p = c.problem;
      const id = (side: 'q' | 'k') => {
        const x = new Int32Array(pc.perm[side]!.length);
        const heads = side === 'q' ? p.hq : p.hkv;
        for (let b = 0; b < p.batch; b++)
          for (let h = 0; h < heads; h++)
            for (let i = 0; i < (side === 'q' ? p.seqQ : p.seqK)[b]!; i++)
              x[idxAt(p, side, b, h, i)] = i;
        return x;
      };
      for (const e of engines) {
        const plain = await run(e, pc, {});
        const ident = await run(e, pc, { q: id('q'), k: id('k') });
        for (const key of ['o', 'lse', 'dk', 'dv', 'dsinks'] as const) {
          expect(ident[key], `${e.isa} ${flavor} ${key}`).toEqual(plain[key]);
        }
        expectClose(ident.dq, plain.dq, 1e-6, `${e.isa} ${flavor} dq`);
      }
    }
  });

  test('permQ / permK: Int32Arrays of the LSE-layout lengths (TypeError / RangeError naming them)', async () => {
    const rng = new Rng(13);
    const c = randomNativeCase(rng, 'varlen');
    const p = c.problem;
    const [q, k, v, dO] = [c.q, c.k, c.v, c.dO].map((t) => t.toFloat32Array()) as [
      Float32Array,
      Float32Array,
      Float32Array,
      Float32Array,
    ];
    const o = new Float32Array((q.length / p.d) * p.dv);
    const lse = new Float32Array(q.length / p.d);
    const nq = p.hq * p.totalQ;
    const nk = p.hkv * p.totalK;
    const e = base!;
    const fwd = (idx: object) =>
      e.run('attention.forward', p, { q, k, v, ...idx } as never, { o, lse });
    const bwd = (idx: object) =>
      e.run('attention.backward', p, { q, k, v, o, lse, dO, ...idx } as never, {
        dq: new Float32Array(q.length),
        dk: new Float32Array(k.length),
        dv: new Float32Array(v.length),
      });
    for (const f of [fwd, bwd]) {
      await expect(f({ permQ: new Int32Array(nq + 1) })).rejects.toThrow(RangeError);
      await expect(f({ permQ: new Int32Array(nq - 1) })).rejects.toThrow(
        new RegExp(`^inputs\\.permQ: expected ${nq} elements \\(one per query row and head`),
      );
      await expect(f({ permK: new Int32Array(nk + 3) })).rejects.toThrow(RangeError);
      await expect(f({ permK: new Int32Array(nk + 3) })).rejects.toThrow(
        new RegExp(`^inputs\\.permK: expected ${nk} elements \\(one per key row and kv head`),
      );
      await expect(f({ permQ: new Float32Array(nq) })).rejects.toThrow(TypeError);
      await expect(f({ permK: new Float32Array(nk) })).rejects.toThrow(
        /^inputs\.permK: expected a Int32Array, got Float32Array/,
      );
      await expect(f({ permQ: undefined, permK: undefined })).resolves.toBeUndefined();
    }
  });
});
