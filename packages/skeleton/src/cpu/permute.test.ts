import {
  type AttentionOptions,
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
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { type Accounting, expectClose, poisonAllocations } from '@attnkit/testing';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { type PermuteHook, sigmoidBias, type TiledHooks } from '../hooks.js';
import { type TsTileOptions, tiledBackwardTs, tiledForwardTs } from './run.js';

/**
 * The permute hook (PermuteHook) of the TS kernels: FA2 (band and split-K), FA1 and the
 * backward against the oracle scatter(moddedAttentionReference(gather(q), gather(k), gather(v)))
 * with gather / scatter built here in float64 from the index arrays, for q-only, k-only and
 * both sides permuted, over BHND and THD varlen (an empty sequence), GQA, causal, window, block
 * sparsity, sinks, sigmoid, ALiBi, a bias mod and a mask mod; identity permutations give
 * bit-identical results to no permutation. Every kernel allocation is poisoned with NaN.
 */

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

const TOL = 1e-5;

type Side = 'q' | 'k' | 'both';
const SIDES: readonly Side[] = ['q', 'k', 'both'];

type Config =
  | 'plain'
  | 'THD varlen'
  | 'THD varlen causal'
  | 'GQA'
  | 'causal nq<nk'
  | 'causal nq>nk'
  | 'window'
  | 'window causal'
  | 'block-sparse'
  | 'sinks'
  | 'sigmoid'
  | 'alibi'
  | 'bias mod'
  | 'mask mod'
  | 'splitK 3'
  | 'splitK 3 causal THD'
  | 'FA1'
  | 'FA1 causal THD sinks';

const CONFIGS: readonly Config[] = [
  'plain',
  'THD varlen',
  'THD varlen causal',
  'GQA',
  'causal nq<nk',
  'causal nq>nk',
  'window',
  'window causal',
  'block-sparse',
  'sinks',
  'sigmoid',
  'alibi',
  'bias mod',
  'mask mod',
  'splitK 3',
  'splitK 3 causal THD',
  'FA1',
  'FA1 causal THD sinks',
];

interface Case {
  name: string;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  dO: Tensor;
  p: AttentionProblem;
  /** The hooks without permute. */
  hooks: TiledHooks;
  tiles: TsTileOptions;
  ref: ModdedReferenceOptions;
}

function cu(lens: readonly number[]): number[] {
  const out = [0];
  for (const n of lens) out.push(out[out.length - 1]! + n);
  return out;
}

/** A case of `config` with fresh random inputs from `rng` (small sizes, several tiles). */
function makeCase(rng: Rng, config: Config): Case {
  const batch = 2;
  const gqa = config === 'GQA';
  const hkv = gqa ? 2 : rng.int(1, 3);
  const group = gqa ? 3 : rng.int(1, 3);
  const hq = hkv * group;
  const d = [8, 12, 16][rng.int(0, 3)]!;
  const dv = rng.uniform() < 0.3 ? 8 : d;
  let nq = rng.int(9, 40);
  let nk = rng.int(9, 40);
  const attn: AttentionOptions = { scale: (rng.uniform() + 0.75) / Math.sqrt(d) };
  const tiles: TsTileOptions = {
    blockQ: [3, 5, 7][rng.int(0, 3)],
    blockK: [4, 5, 6][rng.int(0, 3)],
  };
  const hooks: TiledHooks = { normalize: { kind: 'softmax' }, scoreMods: [] };
  const ref: ModdedReferenceOptions = {};
  let scoreMod: ScoreMod[] | undefined;
  const thd = config.includes('THD');
  if (config === 'plain') nk = nq;
  if (config.includes('causal')) attn.causal = true;
  if (config === 'causal nq<nk') nk = nq + rng.int(1, 20);
  if (config === 'causal nq>nk') nq = nk + rng.int(1, 20);
  if (config.startsWith('window')) attn.window = [rng.int(1, 10), attn.causal ? 0 : rng.int(1, 10)];
  let q: Tensor;
  let k: Tensor;
  let v: Tensor;
  let dO: Tensor;
  if (thd) {
    // The middle sequence is empty.
    const lensQ = [rng.int(5, 30), 0, rng.int(5, 30)];
    const lensK = [rng.int(5, 30), 0, rng.int(5, 30)];
    attn.layout = 'THD';
    attn.cuSeqlensQ = cu(lensQ);
    attn.cuSeqlensK = Int32Array.from(cu(lensK));
    const tq = attn.cuSeqlensQ[3]!;
    const tk = attn.cuSeqlensK[3]!;
    q = rng.randn([tq, hq, d]);
    k = rng.randn([tk, hkv, d]);
    v = rng.randn([tk, hkv, dv]);
    dO = rng.randn([tq, hq, dv]);
  } else {
    q = rng.randn([batch, hq, nq, d]);
    k = rng.randn([batch, hkv, nk, d]);
    v = rng.randn([batch, hkv, nk, dv]);
    dO = rng.randn([batch, hq, nq, dv]);
  }
  if (config === 'block-sparse') {
    const [blockQ, blockK] = [8, 10];
    const nbq = Math.ceil(nq / blockQ);
    const nbk = Math.ceil(nk / blockK);
    const mask = Uint8Array.from({ length: hq * nbq * nbk }, () => (rng.uniform() < 0.6 ? 1 : 0));
    attn.blockSparse = { blockQ, blockK, mask: Tensor.from(mask, [hq, nbq, nbk]) };
    tiles.blockQ = 4;
    tiles.blockK = 5;
  }
  if (config === 'mask mod') {
    const len = rng.int(3, 9);
    attn.maskMod = {
      name: 'document',
      ts: (_b, _h, i, j) => Math.floor(i / len) === Math.floor(j / len) || j === 0,
      blockSize: 8,
    };
    tiles.blockQ = 4;
    tiles.blockK = 8;
  }
  const sinks = () =>
    Float32Array.from({ length: hq }, () => (rng.uniform() - 0.3) * 4 * (rng.uniform() + 0.2));
  if (config === 'sinks' || config === 'FA1 causal THD sinks') {
    const s = sinks();
    hooks.normalize = { kind: 'softmax', sinks: s };
    ref.sinks = s;
  }
  if (config === 'alibi') scoreMod = [alibi(alibiSlopes(hq))];
  if (config === 'bias mod') scoreMod = [scoreBias(rng.randn([hq, nq, nk]))];
  if (config.startsWith('splitK')) hooks.schedule = { kind: 'splitK', splits: 3 };
  if (config.startsWith('FA1')) tiles.algorithm = 'fa1';
  const p = resolveAttentionProblem(q, k, v, attn);
  if (config === 'sigmoid') {
    hooks.normalize = { kind: 'sigmoid', bias: sigmoidBias(p) };
    ref.normalize = 'sigmoid';
  }
  if (scoreMod) {
    hooks.scoreMods = resolveScoreMods(scoreMod, p, q.device);
    ref.scoreMod = scoreMod;
  }
  Object.assign(ref, attn);
  const name = `${config} q[${q.shape}] k[${k.shape}] v[${v.shape}] tiles ${tiles.blockQ}x${tiles.blockK}`;
  return { name, q, k, v, dO, p, hooks, tiles, ref };
}

/** The geometry of one side: q (and o, dO, lse) or k (and v). */
function sideOf(p: AttentionProblem, side: 'q' | 'k') {
  const q = side === 'q';
  return {
    heads: q ? p.hq : p.hkv,
    seq: q ? p.seqQ : p.seqK,
    start: q ? p.startQ : p.startK,
    maxSeq: q ? p.maxSeqQ : p.maxSeqK,
    total: q ? p.totalQ : p.totalK,
  };
}

/** Offset of entry i of (b, h)'s slice of an index array (the LSE layout of the side). */
function indexAt(p: AttentionProblem, side: 'q' | 'k', b: number, h: number, i: number): number {
  const s = sideOf(p, side);
  return p.layout === 'BHND' ? (b * s.heads + h) * s.maxSeq + i : h * s.total + s.start[b]! + i;
}

/** Random (or identity) permutations of every (b, h) slice, in the index layout of `side`. */
function makeIndex(rng: Rng | undefined, p: AttentionProblem, side: 'q' | 'k'): Int32Array {
  const s = sideOf(p, side);
  const len = p.layout === 'BHND' ? p.batch * s.heads * s.maxSeq : s.heads * s.total;
  const out = new Int32Array(len).fill(-1);
  for (let b = 0; b < p.batch; b++) {
    const n = s.seq[b]!;
    for (let h = 0; h < s.heads; h++) {
      const perm = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; rng && i > 0; i--) {
        const j = rng.int(0, i + 1);
        [perm[i], perm[j]] = [perm[j]!, perm[i]!];
      }
      for (let i = 0; i < n; i++) out[indexAt(p, side, b, h, i)] = perm[i]!;
    }
  }
  return out;
}

/**
 * Float64 gather (out row i = in row index[i]) or scatter (out row index[i] = in row i) of
 * every (b, h) slice of `data`: a tensor of `side` with row width `width`, or (lse) the LSE
 * layout. Without an index, a copy.
 */
function permuteRows(
  data: Float64Array,
  p: AttentionProblem,
  side: 'q' | 'k',
  width: number,
  lse: boolean,
  index: Int32Array | undefined,
  mode: 'gather' | 'scatter',
): Float64Array {
  const out = Float64Array.from(data);
  if (!index) return out;
  const s = sideOf(p, side);
  const row = (b: number, h: number, i: number) => {
    if (lse) return indexAt(p, side, b, h, i);
    return p.layout === 'BHND'
      ? ((b * s.heads + h) * s.maxSeq + i) * width
      : ((s.start[b]! + i) * s.heads + h) * width;
  };
  const w = lse ? 1 : width;
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < s.heads; h++) {
      for (let i = 0; i < s.seq[b]!; i++) {
        const j = index[indexAt(p, side, b, h, i)]!;
        const [to, from] =
          mode === 'gather' ? [row(b, h, i), row(b, h, j)] : [row(b, h, j), row(b, h, i)];
        for (let c = 0; c < w; c++) out[to + c] = data[from + c]!;
      }
    }
  }
  return out;
}

function gather(t: Tensor, p: AttentionProblem, side: 'q' | 'k', index?: Int32Array): Tensor {
  const width = t.shape[t.shape.length - 1]!;
  return Tensor.from(
    permuteRows(t.toFloat64Array(), p, side, width, false, index, 'gather'),
    t.shape,
  );
}

function scatter(
  t: Tensor,
  p: AttentionProblem,
  side: 'q' | 'k',
  index?: Int32Array,
  lse = false,
): Float64Array {
  const width = t.shape[t.shape.length - 1]!;
  return permuteRows(t.toFloat64Array(), p, side, width, lse, index, 'scatter');
}

function permuteFor(rng: Rng, c: Case, side: Side): PermuteHook {
  return {
    q: side === 'k' ? undefined : makeIndex(rng, c.p, 'q'),
    k: side === 'q' ? undefined : makeIndex(rng, c.p, 'k'),
  };
}

function checkForward(c: Case, perm: PermuteHook): void {
  const { p } = c;
  const ref = moddedAttentionReference(
    gather(c.q, p, 'q', perm.q),
    gather(c.k, p, 'k', perm.k),
    gather(c.v, p, 'k', perm.k),
    c.ref,
  );
  const got = tiledForwardTs(p, { ...c.hooks, permute: perm }, c.q, c.k, c.v, c.tiles);
  expect(got.o.shape).toEqual(p.oShape);
  expectClose(got.o, scatter(ref.o, p, 'q', perm.q), TOL, 'o');
  if (c.hooks.normalize.kind === 'sigmoid') {
    expect(got.lse).toBeUndefined();
  } else {
    expectClose(got.lse!, scatter(ref.lse!, p, 'q', perm.q, true), TOL, 'lse');
  }
}

function checkBackward(c: Case, perm: PermuteHook): void {
  const { p } = c;
  const ref = moddedAttentionReferenceBackward(
    gather(c.q, p, 'q', perm.q),
    gather(c.k, p, 'k', perm.k),
    gather(c.v, p, 'k', perm.k),
    gather(c.dO, p, 'q', perm.q),
    c.ref,
  );
  const hooks = { ...c.hooks, permute: perm };
  const { o, lse } = tiledForwardTs(p, hooks, c.q, c.k, c.v, c.tiles);
  const g = tiledBackwardTs(p, hooks, c.q, c.k, c.v, o, lse, c.dO, c.tiles);
  expectClose(g.dq, scatter(ref.dq, p, 'q', perm.q), TOL, 'dq');
  expectClose(g.dk, scatter(ref.dk, p, 'k', perm.k), TOL, 'dk');
  expectClose(g.dv, scatter(ref.dv, p, 'k', perm.k), TOL, 'dv');
  if (ref.dsinks) expectClose(g.dsinks!, ref.dsinks, TOL, 'dsinks');
}

const CASES = CONFIGS.flatMap((config, n) =>
  SIDES.map((side, s) => [config, side, 7001 + 31 * n + s] as const),
);

describe('permuted tiles equal the gathered float64 reference, scattered back', () => {
  test.each(CASES)('forward: %s, %s permuted (seed %i)', (config, side, seed) => {
    const rng = new Rng(seed);
    const c = makeCase(rng, config);
    checkForward(c, permuteFor(rng, c, side));
  });

  test.each(CASES)('backward: %s, %s permuted (seed %i)', (config, side, seed) => {
    const rng = new Rng(seed + 100_000);
    const c = makeCase(rng, config);
    checkBackward(c, permuteFor(rng, c, side));
  });
});

/** Bitwise equality of two f32 results (NaN and -Infinity included). */
function expectBitIdentical(a: Tensor | undefined, b: Tensor | undefined, label: string): void {
  if (a === undefined || b === undefined) {
    expect(a, label).toBe(b);
    return;
  }
  const x = new Uint32Array(Float32Array.from(a.toFloat32Array()).buffer);
  const y = new Uint32Array(Float32Array.from(b.toFloat32Array()).buffer);
  expect(x.length, label).toBe(y.length);
  let diff = 0;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) diff++;
  expect(diff, `${label}: elements differing in bits`).toBe(0);
}

describe('identity permutations are bit-identical to no permutation', () => {
  test.each(CONFIGS.map((config, n) => [config, 9001 + n] as const))(
    '%s (seed %i)',
    (config, seed) => {
      const rng = new Rng(seed);
      const c = makeCase(rng, config);
      const identity: PermuteHook = {
        q: makeIndex(undefined, c.p, 'q'),
        k: makeIndex(undefined, c.p, 'k'),
      };
      for (const perm of [identity, { q: identity.q }, { k: identity.k }]) {
        const hooks = { ...c.hooks, permute: perm };
        const want = tiledForwardTs(c.p, c.hooks, c.q, c.k, c.v, c.tiles);
        const got = tiledForwardTs(c.p, hooks, c.q, c.k, c.v, c.tiles);
        expectBitIdentical(got.o, want.o, 'o');
        expectBitIdentical(got.lse, want.lse, 'lse');
        const gw = tiledBackwardTs(c.p, c.hooks, c.q, c.k, c.v, want.o, want.lse, c.dO, c.tiles);
        const gg = tiledBackwardTs(c.p, hooks, c.q, c.k, c.v, want.o, want.lse, c.dO, c.tiles);
        for (const name of ['dq', 'dk', 'dv', 'dsinks'] as const) {
          expectBitIdentical(gg[name], gw[name], name);
        }
      }
    },
  );
});

describe('permute validation', () => {
  test('index arrays of the wrong type or length name permute.q / permute.k', () => {
    const rng = new Rng(12);
    const c = makeCase(rng, 'GQA');
    const q = makeIndex(rng, c.p, 'q');
    const k = makeIndex(rng, c.p, 'k');
    const run = (permute: PermuteHook) =>
      tiledForwardTs(c.p, { ...c.hooks, permute }, c.q, c.k, c.v, c.tiles);
    expect(() => run({ q: q.subarray(1) })).toThrow(
      expect.objectContaining({ argument: 'permute.q' }),
    );
    expect(() => run({ k: Array.from(k) as unknown as Int32Array })).toThrow(
      expect.objectContaining({ argument: 'permute.k' }),
    );
    // q's index has Hq slices, k's Hkv: swapping them is a length error.
    expect(() => run({ k: q })).toThrow(expect.objectContaining({ argument: 'permute.k' }));
  });
});
