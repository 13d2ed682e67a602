import {
  type AttentionOptions,
  type AttentionProblem,
  alibi,
  alibiSlopes,
  type MaskMod,
  type ModdedReferenceOptions,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  resolveAttentionProblem,
  resolveScoreMods,
  type ScoreMod,
  scoreBias,
  softcap,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
  toleranceFor,
} from '@attnkit/attention';
import {
  type AttnkitError,
  type DType,
  DTypeError,
  Rng,
  ShapeError,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { type Accounting, expectClose, poisonAllocations } from '@attnkit/testing';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { SOFTMAX_HOOKS, sigmoidBias, type TiledHooks } from '../hooks.js';
import { planFlashTiles, workspaceBytes } from '../plan.js';
import { fa1Forward } from './fa1.js';
import { fa2Forward } from './fa2.js';
import {
  sinkGradients,
  type TsTileOptions,
  tiledBackwardTs,
  tiledForwardTs,
  tsSupports,
} from './run.js';

/**
 * The hooked TS kernels (tiledForwardTs / tiledBackwardTs, FA1 and FA2 loop orders) against the
 * float64 modded reference: seeded random problems over KERNELS.md "Common" (odd lengths,
 * Nq != Nk, GQA, THD varlen with empty sequences, causal, window, block sparsity) crossed with
 * the hook space (softmax, sinks, sigmoid, each built-in mod, chained mods, a custom mod, mask
 * mods), every kernel allocation poisoned with NaN so unwritten elements fail.
 */

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

const F32 = toleranceFor({ dtype: 'f32' });

type Shape =
  | 'plain'
  | 'nq<nk causal'
  | 'nq>nk causal'
  | 'gqa'
  | 'window'
  | 'window causal'
  | 'varlen'
  | 'sparse';

const SHAPES: readonly Shape[] = [
  'plain',
  'nq<nk causal',
  'nq>nk causal',
  'gqa',
  'window',
  'window causal',
  'varlen',
  'sparse',
];

type Variant =
  | 'softmax'
  | 'sinks'
  | 'sigmoid'
  | 'sigmoid bias'
  | 'softcap'
  | 'alibi'
  | 'bias'
  | 'softcap+alibi'
  | 'custom'
  | 'sigmoid+softcap+bias'
  | 'sinks+custom'
  | 'mask prefix-lm'
  | 'mask document'
  | 'mask per-head+alibi';

const VARIANTS: readonly Variant[] = [
  'softmax',
  'sinks',
  'sigmoid',
  'sigmoid bias',
  'softcap',
  'alibi',
  'bias',
  'softcap+alibi',
  'custom',
  'sigmoid+softcap+bias',
  'sinks+custom',
  'mask prefix-lm',
  'mask document',
  'mask per-head+alibi',
];

interface HookCase {
  name: string;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  dO: Tensor;
  /** Problem options (what resolveAttentionProblem reads). */
  attn: AttentionOptions;
  tiles: TsTileOptions;
  ref: ModdedReferenceOptions;
  p: AttentionProblem;
  hooks: TiledHooks;
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(0, xs.length)]!;
}

/** A custom mod with its gradient: a smooth nonlinearity plus an index-dependent shift. */
const WIGGLE: ScoreMod = {
  kind: 'custom',
  name: 'wiggle',
  ts: (s, _b, h, i, j) => s + 0.5 * Math.sin(s) - 0.02 * (h + 1) * Math.abs(i - j),
  tsGrad: (s) => 1 + 0.5 * Math.cos(s),
};

const ODD_TILES = [3, 5, 7, 11, 13, 17, 24, 33];

function divisorsOf(n: number): number[] {
  const out: number[] = [];
  for (let t = 1; t <= n; t++) if (n % t === 0) out.push(t);
  return out;
}

/** The problem, hooks and reference options of a case from its tensors and option parts. */
function makeCase(
  name: string,
  tensors: { q: Tensor; k: Tensor; v: Tensor; dO: Tensor },
  attn: AttentionOptions,
  hookOpts: {
    normalize?: 'softmax' | 'sigmoid';
    sinks?: Float32Array;
    bias?: number;
    scoreMod?: ScoreMod[];
  },
  tiles: TsTileOptions = {},
): HookCase {
  const { q, k, v } = tensors;
  const p = resolveAttentionProblem(q, k, v, attn);
  const scoreMods = resolveScoreMods(hookOpts.scoreMod, p, q.device);
  const hooks: TiledHooks = {
    normalize:
      hookOpts.normalize === 'sigmoid'
        ? { kind: 'sigmoid', bias: sigmoidBias(p, hookOpts.bias) }
        : { kind: 'softmax', sinks: hookOpts.sinks },
    scoreMods,
  };
  const ref: ModdedReferenceOptions = { ...attn };
  if (hookOpts.normalize) ref.normalize = hookOpts.normalize;
  if (hookOpts.sinks) ref.sinks = hookOpts.sinks;
  if (hookOpts.bias !== undefined) ref.bias = hookOpts.bias;
  if (hookOpts.scoreMod) ref.scoreMod = hookOpts.scoreMod;
  return { name, ...tensors, attn, tiles, ref, p, hooks };
}

/** A random case of `shape` x `variant` with small sizes (N <= ~70, B <= 2). */
function randomHookCase(rng: Rng, shape: Shape, variant: Variant, dtype: DType = 'f32'): HookCase {
  const batch = rng.int(1, 3);
  const hkv = pick(rng, [1, 2]);
  const group = shape === 'gqa' ? pick(rng, [2, 3, 4]) : pick(rng, [1, 2]);
  const hq = hkv * group;
  const d = pick(rng, [8, 16, 24, 40]);
  const dv = rng.uniform() < 0.3 ? pick(rng, [8, 16, 32]) : d;
  let nq = rng.int(1, 70);
  let nk = rng.int(1, 70);
  const attn: AttentionOptions = {};
  const tiles: TsTileOptions = {};
  switch (shape) {
    case 'plain':
      nk = nq;
      break;
    case 'nq<nk causal':
      nq = rng.int(1, 40);
      nk = nq + rng.int(1, 30);
      attn.causal = true;
      break;
    case 'nq>nk causal':
      nk = rng.int(1, 40);
      nq = nk + rng.int(1, 30);
      attn.causal = true;
      break;
    case 'window':
      attn.window = [rng.int(0, 20), rng.int(0, 20)];
      break;
    case 'window causal':
      attn.causal = true;
      attn.window = [rng.int(0, 20), pick(rng, [-1, 0, 4])];
      break;
    default:
      attn.causal = rng.uniform() < 0.4;
  }
  const masked = variant.startsWith('mask');
  let q: Tensor;
  let k: Tensor;
  let v: Tensor;
  let dO: Tensor;
  if (shape === 'varlen') {
    // One sequence is empty or lacks queries / keys: its rows exist nowhere and nothing breaks.
    const lensQ = [rng.int(1, 40), 0, rng.int(1, 40)];
    const lensK = [rng.int(1, 40), 0, rng.int(1, 40)];
    const empty = pick(rng, ['both', 'queries', 'keys']);
    if (empty === 'queries') lensK[1] = rng.int(1, 20);
    if (empty === 'keys') lensQ[1] = rng.int(1, 20);
    const cu = (lens: number[]) => {
      const offsets = [0];
      for (const n of lens) offsets.push(offsets[offsets.length - 1]! + n);
      return offsets;
    };
    attn.layout = 'THD';
    attn.cuSeqlensQ = cu(lensQ);
    attn.cuSeqlensK = Int32Array.from(cu(lensK));
    const tq = attn.cuSeqlensQ[3]!;
    const tk = attn.cuSeqlensK[3]!;
    q = rng.randn([tq, hq, d], dtype);
    k = rng.randn([tk, hkv, d], dtype);
    v = rng.randn([tk, hkv, dv], dtype);
    dO = rng.randn([tq, hq, dv], dtype);
  } else {
    q = rng.randn([batch, hq, nq, d], dtype);
    k = rng.randn([batch, hkv, nk, d], dtype);
    v = rng.randn([batch, hkv, nk, dv], dtype);
    dO = rng.randn([batch, hq, nq, dv], dtype);
    if (shape === 'sparse' && !masked) {
      const blockQ = pick(rng, [8, 12, 16]);
      const blockK = pick(rng, [8, 10, 16]);
      const nbq = Math.ceil(nq / blockQ);
      const nbk = Math.ceil(nk / blockK);
      const mshape = rng.uniform() < 0.5 ? [nbq, nbk] : [hq, nbq, nbk];
      const mask = Uint8Array.from({ length: mshape.reduce((a, x) => a * x, 1) }, () =>
        rng.uniform() < 0.6 ? 1 : 0,
      );
      attn.blockSparse = { blockQ, blockK, mask: Tensor.from(mask, mshape) };
      if (rng.uniform() < 0.5) {
        tiles.blockQ = blockQ / pick(rng, [1, 2, 4]);
        tiles.blockK = blockK / pick(rng, [1, 2]);
      }
    }
  }
  if (masked) {
    const blockSize = pick(rng, [4, 8, 12, 16]);
    attn.maskMod = maskModFor(variant, rng, blockSize);
    if (rng.uniform() < 0.6) {
      tiles.blockQ = pick(rng, divisorsOf(blockSize));
      tiles.blockK = pick(rng, divisorsOf(blockSize));
    }
  } else if (!attn.blockSparse && rng.uniform() < 0.5) {
    tiles.blockQ = pick(rng, ODD_TILES);
    tiles.blockK = pick(rng, ODD_TILES);
  }
  // Scores of a few units, as trained models have: exercises the online max shifts.
  attn.scale = (rng.uniform() * 2 + 0.5) / Math.sqrt(d);

  const maxQ = shape === 'varlen' ? Math.max(...seqLens(attn.cuSeqlensQ!)) : nq;
  const maxK = shape === 'varlen' ? Math.max(...seqLens(attn.cuSeqlensK!)) : nk;
  const hookOpts: Parameters<typeof makeCase>[3] = {};
  const randomSinks = () =>
    Float32Array.from({ length: hq }, () => (rng.uniform() - 0.3) * 6 * (rng.uniform() + 0.2));
  const biasTensor = () => {
    const shapes = [
      [maxQ, maxK],
      [hq, maxQ, maxK],
      [shape === 'varlen' ? 3 : batch, hq, maxQ, maxK],
    ];
    return scoreBias(rng.randn(pick(rng, shapes)));
  };
  switch (variant) {
    case 'softmax':
      break;
    case 'sinks':
      hookOpts.sinks = randomSinks();
      break;
    case 'sigmoid':
      hookOpts.normalize = 'sigmoid';
      break;
    case 'sigmoid bias':
      hookOpts.normalize = 'sigmoid';
      hookOpts.bias = (rng.uniform() - 0.5) * 4;
      break;
    case 'softcap':
      hookOpts.scoreMod = [softcap(pick(rng, [1.5, 3, 10]))];
      break;
    case 'alibi':
      hookOpts.scoreMod = [alibi(alibiSlopes(hq))];
      break;
    case 'bias':
      hookOpts.scoreMod = [biasTensor()];
      break;
    case 'softcap+alibi':
      hookOpts.scoreMod = [softcap(2), alibi(alibiSlopes(hq))];
      break;
    case 'custom':
      hookOpts.scoreMod = [WIGGLE];
      break;
    case 'sigmoid+softcap+bias':
      hookOpts.normalize = 'sigmoid';
      hookOpts.scoreMod = [softcap(3), biasTensor()];
      break;
    case 'sinks+custom':
      hookOpts.sinks = randomSinks();
      hookOpts.scoreMod = [WIGGLE, softcap(4)];
      break;
    case 'mask per-head+alibi':
      hookOpts.scoreMod = [alibi(alibiSlopes(hq))];
      break;
    default:
      break;
  }
  const c = makeCase(`${variant} | ${shape}`, { q, k, v, dO }, attn, hookOpts, tiles);
  c.name = `${variant} | ${shape} ${describeCase(c)}`;
  return c;
}

function seqLens(cu: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let i = 1; i < cu.length; i++) out.push(cu[i]! - cu[i - 1]!);
  return out;
}

function maskModFor(variant: Variant, rng: Rng, blockSize: number): MaskMod {
  if (variant === 'mask prefix-lm') {
    const prefix = rng.int(0, 20);
    return { name: 'prefix_lm', ts: (_b, _h, i, j) => j < prefix || j <= i, blockSize };
  }
  if (variant === 'mask document') {
    const len = rng.int(3, 15);
    return {
      name: 'document',
      ts: (_b, _h, i, j) => Math.floor(i / len) === Math.floor(j / len),
      blockSize,
    };
  }
  // Per head: a document mask whose documents grow with the head; row 2 sees nothing.
  return {
    name: 'per_head',
    ts: (_b, h, i, j) => i !== 2 && Math.floor(i / (3 + 2 * h)) === Math.floor(j / (3 + 2 * h)),
    perHead: true,
    blockSize,
  };
}

function describeCase(c: HookCase): string {
  const o = c.attn;
  const parts = [`q[${c.q.shape}] k[${c.k.shape}] v[${c.v.shape}]`];
  if (o.causal) parts.push('causal');
  if (o.window) parts.push(`window[${o.window}]`);
  if (o.blockSparse) {
    parts.push(
      `sparse ${o.blockSparse.blockQ}x${o.blockSparse.blockK} mask[${o.blockSparse.mask.shape}]`,
    );
  }
  if (o.maskMod) parts.push(`maskMod ${o.maskMod.name}/${o.maskMod.blockSize}`);
  if (c.tiles.blockQ) parts.push(`tiles ${c.tiles.blockQ}x${c.tiles.blockK}`);
  return parts.join(' ');
}

/**
 * Bias mods of every accepted shape ([Nq, Nk], [Hq, Nq, Nk], [B, Hq, Nq, Nk]) on two batch
 * entries, in BHND and in THD (where positions are relative to each sequence's start).
 */
function biasCases(rng: Rng): HookCase[] {
  const cases: HookCase[] = [];
  const [B, HKV, G, D] = [2, 1, 2, 8];
  const hq = HKV * G;
  for (const layout of ['BHND', 'THD'] as const) {
    const [nq, nk] = [13, 17];
    const attn: AttentionOptions = { causal: layout === 'THD' };
    let tensors: { q: Tensor; k: Tensor; v: Tensor; dO: Tensor };
    if (layout === 'BHND') {
      tensors = {
        q: rng.randn([B, hq, nq, D]),
        k: rng.randn([B, HKV, nk, D]),
        v: rng.randn([B, HKV, nk, D]),
        dO: rng.randn([B, hq, nq, D]),
      };
    } else {
      attn.layout = 'THD';
      attn.cuSeqlensQ = [0, nq, nq + 9];
      attn.cuSeqlensK = [0, nk - 5, nk - 5 + nk];
      tensors = {
        q: rng.randn([nq + 9, hq, D]),
        k: rng.randn([2 * nk - 5, HKV, D]),
        v: rng.randn([2 * nk - 5, HKV, D]),
        dO: rng.randn([nq + 9, hq, D]),
      };
    }
    for (const shape of [
      [nq, nk],
      [hq, nq, nk],
      [B, hq, nq, nk],
    ]) {
      const mod = scoreBias(rng.randn(shape));
      cases.push(
        makeCase(
          `bias[${shape}] ${layout}`,
          tensors,
          attn,
          { scoreMod: [mod] },
          { blockQ: 4, blockK: 5 },
        ),
      );
    }
  }
  return cases;
}

function checkForward(c: HookCase, algorithm: 'fa1' | 'fa2'): void {
  const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
  const { o, lse } = tiledForwardTs(c.p, c.hooks, c.q, c.k, c.v, { ...c.tiles, algorithm });
  expect(o.dtype).toBe(c.q.dtype);
  expect(o.shape).toEqual(ref.o.shape);
  expectClose(o, ref.o, toleranceFor({ dtype: c.q.dtype as 'f32' }), `${algorithm} o`);
  if (c.hooks.normalize.kind === 'sigmoid') {
    expect(lse).toBeUndefined();
  } else {
    expect(lse!.dtype).toBe('f32');
    expect(lse!.shape).toEqual(ref.lse!.shape);
    expectClose(lse!, ref.lse!, F32, `${algorithm} lse`);
  }
}

describe('tiled forward vs the float64 modded reference (seeded random shapes x hooks)', () => {
  const rng = new Rng(20250301);
  const cases: HookCase[] = [];
  VARIANTS.forEach((variant, n) => {
    // Three shapes per variant, rotating so every shape meets every kind of hook.
    for (let t = 0; t < 3; t++)
      cases.push(randomHookCase(rng, SHAPES[(n + 3 * t) % SHAPES.length]!, variant));
  });
  test.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    checkForward(c, 'fa2');
    if (c.hooks.normalize.kind === 'softmax') checkForward(c, 'fa1');
  });
});

describe('plain softmax', () => {
  test('equals softmaxAttentionReference within 1e-6 (both algorithms) and the old entry points', () => {
    const rng = new Rng(5);
    for (const shape of SHAPES) {
      const c = randomHookCase(rng, shape, 'softmax');
      const ref = softmaxAttentionReference(c.q, c.k, c.v, c.attn);
      for (const algorithm of ['fa1', 'fa2'] as const) {
        const { o, lse } = tiledForwardTs(c.p, c.hooks, c.q, c.k, c.v, { ...c.tiles, algorithm });
        expectClose(o, ref.o, 1e-6, `${algorithm} ${c.name} o`);
        expectClose(lse!, ref.lse, 1e-6, `${algorithm} ${c.name} lse`);
        // The pre-hooks exports run the same loops.
        const O = new Float32Array(o.size);
        const L = new Float32Array(lse!.size);
        const plan = planFlashTiles({ ...c.p, nq: c.p.maxSeqQ, nk: c.p.maxSeqK });
        const bq = Math.min(c.tiles.blockQ ?? plan.blockQ, Math.max(1, c.p.maxSeqQ));
        const bk = Math.min(c.tiles.blockK ?? plan.blockK, Math.max(1, c.p.maxSeqK));
        const kernel = algorithm === 'fa1' ? fa1Forward : fa2Forward;
        kernel(c.p, c.q.toFloat32Array(), c.k.toFloat32Array(), c.v.toFloat32Array(), O, L, bq, bk);
        expectClose(O, ref.o, 1e-6, `${algorithm} ${c.name} old o`);
        expectClose(L, ref.lse, 1e-6, `${algorithm} ${c.name} old lse`);
      }
    }
  });
});

describe('half-precision inputs', () => {
  test.each(['f16', 'bf16'] as const)('%s: o in the same dtype within its tolerance', (dtype) => {
    const rng = new Rng(8);
    for (const variant of ['sinks', 'sigmoid+softcap+bias', 'mask document'] as const) {
      const c = randomHookCase(rng, 'gqa', variant, dtype);
      const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
      const { o, lse } = tiledForwardTs(c.p, c.hooks, c.q, c.k, c.v, c.tiles);
      expect(o.dtype).toBe(dtype);
      expectClose(o, ref.o, toleranceFor({ dtype }), `${c.name} o`);
      if (lse) expectClose(lse, ref.lse!, F32, `${c.name} lse`);
    }
  });
});

/** Rows 3 and 8..15 see no key; blocks of value 0, 1 and 2 all occur (blockSize 8). */
const HOLES = {
  name: 'holes',
  ts: (_b: number, _h: number, i: number, j: number) =>
    (i < 8 || i >= 16) && i !== 3 && (j < 8 || j <= i),
  blockSize: 8,
};
const holeRow = (i: number) => i === 3 || (i >= 8 && i < 16);

describe('mask mods', () => {
  const rng = new Rng(21);
  const [B, H, N, D] = [2, 2, 30, 16];
  const q = rng.randn([B, H, N, D]);
  const k = rng.randn([B, H, N, D]);
  const v = rng.randn([B, H, N, D]);
  const dO = rng.randn([B, H, N, D]);

  test.each([
    ['4x8', 4, 8],
    ['8x2', 8, 2],
    ['planned', undefined, undefined],
  ] as const)('fully masked rows: O = 0, LSE = -Infinity, no NaN (tiles %s)', (_n, bq, bk) => {
    const c = makeCase(
      'holes',
      { q, k, v, dO },
      { maskMod: HOLES },
      {},
      { blockQ: bq, blockK: bk },
    );
    // The derived block mask has all three values, so all three tile paths run.
    expect(new Set(c.p.blockSparse!.mask)).toEqual(new Set([0, 1, 2]));
    const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
    for (const algorithm of ['fa1', 'fa2'] as const) {
      const { o, lse } = tiledForwardTs(c.p, c.hooks, q, k, v, { ...c.tiles, algorithm });
      expectClose(o, ref.o, F32, `${algorithm} o`);
      expectClose(lse!, ref.lse!, F32, `${algorithm} lse`);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          for (let i = 0; i < N; i++) {
            expect(lse!.get(b, h, i) === Number.NEGATIVE_INFINITY).toBe(holeRow(i));
            if (holeRow(i)) for (let x = 0; x < D; x++) expect(o.get(b, h, i, x)).toBe(0);
          }
        }
      }
    }
  });

  test('fully masked rows with sinks: O = 0, LSE = the sink', () => {
    const sinks = Float32Array.from([0.5, -1.25]);
    const c = makeCase('holes+sinks', { q, k, v, dO }, { maskMod: HOLES }, { sinks });
    const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
    for (const algorithm of ['fa1', 'fa2'] as const) {
      const { o, lse } = tiledForwardTs(c.p, c.hooks, q, k, v, { algorithm });
      expectClose(o, ref.o, F32, `${algorithm} o`);
      expectClose(lse!, ref.lse!, F32, `${algorithm} lse`);
      for (let h = 0; h < H; h++) {
        expect(lse!.get(1, h, 3)).toBe(sinks[h]);
        for (let x = 0; x < D; x++) expect(o.get(1, h, 9, x)).toBe(0);
      }
    }
  });

  test('sigmoid: masked pairs and fully masked rows contribute 0', () => {
    const c = makeCase(
      'holes sigmoid',
      { q, k, v, dO },
      { maskMod: HOLES },
      { normalize: 'sigmoid' },
    );
    const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
    const { o, lse } = tiledForwardTs(c.p, c.hooks, q, k, v, { blockQ: 4, blockK: 4 });
    expect(lse).toBeUndefined();
    expectClose(o, ref.o, F32, 'o');
    for (let x = 0; x < D; x++) expect(o.get(0, 1, 3, x)).toBe(0);
  });

  test('a mask mod that passes everything equals no mask (value-2 path only)', () => {
    const all = { name: 'all', ts: () => true, blockSize: 16 };
    const c = makeCase('all', { q, k, v, dO }, { maskMod: all, causal: true }, {});
    expect([...c.p.blockSparse!.mask].every((x) => x === 2)).toBe(true);
    const plain = makeCase('plain', { q, k, v, dO }, { causal: true }, {});
    const a = tiledForwardTs(c.p, c.hooks, q, k, v, { blockQ: 8, blockK: 16 });
    const b = tiledForwardTs(plain.p, plain.hooks, q, k, v, { blockQ: 8, blockK: 16 });
    expect([...a.o.toFloat32Array()]).toEqual([...b.o.toFloat32Array()]);
  });
});

describe('sigmoid numerics', () => {
  test('huge scores (|s| ~ 1e3) neither overflow nor give NaN', () => {
    const rng = new Rng(9);
    const q = rng.randn([1, 2, 19, 8]);
    const k = rng.randn([1, 2, 23, 8]);
    const v = rng.randn([1, 2, 23, 8]);
    const dO = rng.randn([1, 2, 19, 8]);
    const c = makeCase('big', { q, k, v, dO }, { scale: 300 }, { normalize: 'sigmoid' });
    const ref = moddedAttentionReference(q, k, v, c.ref);
    const { o } = tiledForwardTs(c.p, c.hooks, q, k, v, { blockQ: 5, blockK: 7 });
    expectClose(o, ref.o, F32, 'o');
  });

  test('no keys at all (Nk = 0): O = 0', () => {
    const rng = new Rng(10);
    const q = rng.randn([1, 2, 5, 8]);
    const k = Tensor.zeros([1, 2, 0, 8]);
    const v = Tensor.zeros([1, 2, 0, 4]);
    for (const normalize of ['sigmoid', 'softmax'] as const) {
      const c = makeCase('empty', { q, k, v, dO: q }, {}, { normalize });
      const { o, lse } = tiledForwardTs(c.p, c.hooks, q, k, v);
      expect([...o.toFloat32Array()]).toEqual(new Array(2 * 5 * 4).fill(0));
      if (lse) expect([...lse.toFloat32Array()]).toEqual(new Array(10).fill(-Infinity));
    }
  });
});

describe('bias mods', () => {
  test.each(biasCases(new Rng(22)).map((c) => [c.name, c] as const))('%s', (_name, c) => {
    checkForward(c, 'fa2');
    checkForward(c, 'fa1');
  });
});

/** The forward's o and lse (softmax) from the kernel under test, as a training step has them. */
function forward(c: HookCase): { o: Tensor | undefined; lse: Tensor | undefined } {
  if (c.hooks.normalize.kind === 'sigmoid') return { o: undefined, lse: undefined };
  const { o, lse } = tiledForwardTs(c.p, c.hooks, c.q, c.k, c.v, c.tiles);
  return { o, lse };
}

function checkBackward(c: HookCase): void {
  const ref = moddedAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.ref);
  const { o, lse } = forward(c);
  const g = tiledBackwardTs(c.p, c.hooks, c.q, c.k, c.v, o, lse, c.dO, c.tiles);
  const tol = toleranceFor({ dtype: c.q.dtype as 'f32' });
  for (const name of ['dq', 'dk', 'dv'] as const) {
    expect(g[name].dtype).toBe(c.q.dtype);
    expect(g[name].shape).toEqual(ref[name].shape);
    expectClose(g[name], ref[name], tol, name);
  }
  if (c.hooks.normalize.kind === 'softmax' && c.hooks.normalize.sinks) {
    expect(g.dsinks!.dtype).toBe('f32');
    expect(g.dsinks!.shape).toEqual([c.p.hq]);
    // From the forward's o, stored in q's dtype.
    expectClose(g.dsinks!, ref.dsinks!, tol, 'dsinks');
  } else {
    expect(g.dsinks).toBeUndefined();
  }
}

describe('tiled backward vs the float64 modded reference (seeded random shapes x hooks)', () => {
  const rng = new Rng(20250302);
  const cases: HookCase[] = [];
  VARIANTS.forEach((variant, n) => {
    for (let t = 0; t < 3; t++)
      cases.push(randomHookCase(rng, SHAPES[(n + 3 * t + 1) % SHAPES.length]!, variant));
  });
  test.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => checkBackward(c));
});

describe('special cases', () => {
  test('plain softmax equals softmaxAttentionReferenceBackward within 1e-5', () => {
    const rng = new Rng(31);
    for (const shape of ['gqa', 'varlen', 'sparse'] as const) {
      const c = randomHookCase(rng, shape, 'softmax');
      const ref = softmaxAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.attn);
      const { o, lse } = forward(c);
      const g = tiledBackwardTs(c.p, c.hooks, c.q, c.k, c.v, o, lse, c.dO, c.tiles);
      for (const name of ['dq', 'dk', 'dv'] as const) expectClose(g[name], ref[name], F32, name);
    }
  });

  test('half-precision inputs: grads in q dtype within its tolerance', () => {
    const rng = new Rng(32);
    for (const dtype of ['f16', 'bf16'] as const) {
      for (const variant of ['sinks+custom', 'sigmoid+softcap+bias'] as const)
        checkBackward(randomHookCase(rng, 'gqa', variant, dtype));
    }
  });

  test('fully masked rows (mask mod) get zero dq and no NaN anywhere, with and without sinks', () => {
    const rng = new Rng(33);
    const [B, H, N, D] = [1, 2, 26, 8];
    const t = {
      q: rng.randn([B, H, N, D]),
      k: rng.randn([B, 1, N, D]),
      v: rng.randn([B, 1, N, D]),
      dO: rng.randn([B, H, N, D]),
    };
    const holes = {
      name: 'holes',
      ts: (_b: number, _h: number, i: number, j: number) =>
        (i < 8 || i >= 16) && i !== 3 && (j < 8 || j <= i),
      blockSize: 8,
    };
    for (const hookOpts of [
      {},
      { sinks: Float32Array.from([1, -2]) },
      { normalize: 'sigmoid' as const },
    ]) {
      const c = makeCase('holes', t, { maskMod: holes }, hookOpts, { blockQ: 4, blockK: 8 });
      checkBackward(c);
      const { o, lse } = forward(c);
      const g = tiledBackwardTs(c.p, c.hooks, c.q, c.k, c.v, o, lse, c.dO, c.tiles);
      for (const i of [3, 8, 15]) for (let x = 0; x < D; x++) expect(g.dq.get(0, 1, i, x)).toBe(0);
    }
  });

  test('sigmoid ignores o and lse (undefined is fine)', () => {
    const rng = new Rng(34);
    const c = randomHookCase(rng, 'window causal', 'sigmoid');
    const ref = moddedAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.ref);
    const g = tiledBackwardTs(c.p, c.hooks, c.q, c.k, c.v, undefined, undefined, c.dO, c.tiles);
    expectClose(g.dq, ref.dq, F32, 'dq');
    expect(acct.bytes.rows).toBe(0);
  });
});

describe('sinkGradients', () => {
  test('equals the reference dsinks; rows with LSE = -Infinity contribute nothing', () => {
    const rng = new Rng(35);
    const c = randomHookCase(rng, 'nq>nk causal', 'sinks');
    const ref = moddedAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.ref);
    const fwd = moddedAttentionReference(c.q, c.k, c.v, c.ref);
    const sinks = (c.hooks.normalize as { sinks: Float32Array }).sinks;
    const ds = sinkGradients(
      c.p,
      sinks,
      fwd.o.toFloat32Array(),
      fwd.lse!.toFloat32Array(),
      c.dO.toFloat32Array(),
    );
    expect(ds).toBeInstanceOf(Float32Array);
    expectClose(ds, ref.dsinks!, F32, 'dsinks');
    // -Infinity LSE: the row is skipped, not exp(+inf) * 0 = NaN.
    const lse = fwd.lse!.toFloat32Array().fill(Number.NEGATIVE_INFINITY);
    const none = sinkGradients(c.p, sinks, fwd.o.toFloat32Array(), lse, c.dO.toFloat32Array());
    expect([...none]).toEqual(new Array(c.p.hq).fill(0));
  });
});

describe('bias mods', () => {
  test.each(biasCases(new Rng(23)).map((c) => [c.name, c] as const))('%s', (_name, c) =>
    checkBackward(c),
  );
});

describe('TS backend API', () => {
  function expectError(call: () => unknown, Err: typeof AttnkitError, argument: string): void {
    expect(call, argument).toThrow(Err);
    expect(call).toThrow(expect.objectContaining({ argument }));
    expect(call).toThrow(new RegExp(`^${argument.replace('.', '\\.')}: expected`));
  }

  const rng = new Rng(41);
  const t = {
    q: rng.randn([1, 2, 20, 8]),
    k: rng.randn([1, 2, 20, 8]),
    v: rng.randn([1, 2, 20, 8]),
    dO: rng.randn([1, 2, 20, 8]),
  };
  const { q, k, v, dO } = t;
  const plain = makeCase('plain', t, {}, {});
  const sig = makeCase('sigmoid', t, {}, { normalize: 'sigmoid' });
  const NO_GRAD: ScoreMod = { kind: 'custom', name: 'nograd', ts: (s) => 2 * s };
  const noGrad = makeCase('nograd', t, {}, { scoreMod: [NO_GRAD] });

  describe('tsSupports', () => {
    test('softmax with any mods on both algorithms; sigmoid on FA2 only', () => {
      expect(tsSupports(SOFTMAX_HOOKS, 'forward')).toBe(true);
      expect(tsSupports(SOFTMAX_HOOKS, 'backward', 'fa1')).toBe(true);
      const mods = resolveScoreMods([softcap(2), WIGGLE], plain.p, 'cpu');
      const sinks: TiledHooks = {
        normalize: { kind: 'softmax', sinks: new Float32Array(2) },
        scoreMods: mods,
      };
      expect(tsSupports(sinks, 'forward', 'fa1')).toBe(true);
      expect(tsSupports(sinks, 'backward')).toBe(true);
      expect(tsSupports(sig.hooks, 'forward', 'fa2')).toBe(true);
      expect(tsSupports(sig.hooks, 'backward')).toBe(true);
      expect(tsSupports(sig.hooks, 'forward', 'fa1')).toMatch(/FA1.*softmax/);
    });

    test('a custom mod without tsGrad runs forward only', () => {
      expect(tsSupports(noGrad.hooks, 'forward')).toBe(true);
      expect(tsSupports(noGrad.hooks, 'backward')).toMatch(/nograd.*tsGrad/);
    });
  });

  describe('argument errors', () => {
    const { o, lse } = tiledForwardTs(plain.p, plain.hooks, q, k, v);
    const sparse = makeCase(
      'sparse',
      t,
      { maskMod: { name: 'm', ts: (_b, _h, i, j) => j <= i, blockSize: 8 } },
      {},
    );
    const bad: [string, () => unknown, typeof AttnkitError, string][] = [
      [
        'blockQ 0',
        () => tiledForwardTs(plain.p, plain.hooks, q, k, v, { blockQ: 0 }),
        ValueError,
        'blockQ',
      ],
      [
        'blockK 2.5',
        () => tiledForwardTs(plain.p, plain.hooks, q, k, v, { blockK: 2.5 }),
        ValueError,
        'blockK',
      ],
      [
        'blockQ not dividing the mask-mod block',
        () => tiledForwardTs(sparse.p, sparse.hooks, q, k, v, { blockQ: 3 }),
        ValueError,
        'blockQ',
      ],
      [
        'blockK not dividing the mask-mod block',
        () => tiledBackwardTs(sparse.p, sparse.hooks, q, k, v, o, lse, dO, { blockK: 16 }),
        ValueError,
        'blockK',
      ],
      [
        'algorithm',
        () => tiledForwardTs(plain.p, plain.hooks, q, k, v, { algorithm: 'fa3' as 'fa2' }),
        ValueError,
        'algorithm',
      ],
      [
        'fa1 with sigmoid',
        () => tiledForwardTs(sig.p, sig.hooks, q, k, v, { algorithm: 'fa1' }),
        ValueError,
        'algorithm',
      ],
      [
        'fa1 with sigmoid, backward',
        () =>
          tiledBackwardTs(sig.p, sig.hooks, q, k, v, undefined, undefined, dO, {
            algorithm: 'fa1',
          }),
        ValueError,
        'algorithm',
      ],
      [
        'f64',
        () =>
          tiledForwardTs(plain.p, plain.hooks, q.astype('f64'), k.astype('f64'), v.astype('f64')),
        DTypeError,
        'q',
      ],
      [
        'custom mod without tsGrad',
        () => tiledBackwardTs(noGrad.p, noGrad.hooks, q, k, v, o, lse, dO),
        ValueError,
        'scoreMod.tsGrad',
      ],
      [
        'softmax backward without o',
        () => tiledBackwardTs(plain.p, plain.hooks, q, k, v, undefined, lse, dO),
        ShapeError,
        'o',
      ],
      [
        'o of the wrong shape',
        () => tiledBackwardTs(plain.p, plain.hooks, q, k, v, dO.reshape([1, 2, 8, 20]), lse, dO),
        ShapeError,
        'o',
      ],
      [
        'lse of the wrong dtype',
        () => tiledBackwardTs(plain.p, plain.hooks, q, k, v, o, (lse as Tensor).astype('f16'), dO),
        DTypeError,
        'lse',
      ],
      [
        'dO of the wrong dtype',
        () => tiledBackwardTs(sig.p, sig.hooks, q, k, v, undefined, undefined, dO.astype('bf16')),
        DTypeError,
        'dO',
      ],
      [
        'sinks of the wrong length',
        () =>
          tiledForwardTs(
            plain.p,
            { normalize: { kind: 'softmax', sinks: new Float32Array(3) }, scoreMods: [] },
            q,
            k,
            v,
          ),
        ValueError,
        'sinks',
      ],
      [
        'sigmoid without a bias per batch entry',
        () =>
          tiledForwardTs(
            plain.p,
            { normalize: { kind: 'sigmoid', bias: new Float32Array(0) }, scoreMods: [] },
            q,
            k,
            v,
          ),
        ValueError,
        'bias',
      ],
    ];
    test.each(bad)('%s', (_name, call, Err, argument) => expectError(call, Err, argument));

    test('options beyond the tile options are ignored (the families pass theirs through)', () => {
      const opts = { blockQ: 4, causal: true, scoreMod: softcap(1) } as never;
      expect(() => tiledForwardTs(plain.p, plain.hooks, q, k, v, opts)).not.toThrow();
    });
  });

  describe('tile scratch', () => {
    test('bounded by workspaceBytes (with the mods flag for the backward) and no per-row buffer for sigmoid', () => {
      const mods = makeCase('mods', t, {}, { scoreMod: [softcap(2)] });
      const plan = planFlashTiles({ nq: 20, nk: 20, d: 8, dv: 8 });
      const { o, lse } = tiledForwardTs(mods.p, mods.hooks, q, k, v);
      expect(acct.bytes.tile).toBeLessThanOrEqual(workspaceBytes(plan, 8, 8));
      const before = acct.bytes.tile;
      tiledBackwardTs(mods.p, mods.hooks, q, k, v, o, lse, dO);
      // The mods' chain-rule tile is the one buffer beyond the plain workspace.
      expect(acct.bytes.tile - before).toBeGreaterThan(workspaceBytes(plan, 8, 8));
      expect(acct.bytes.tile - before).toBeLessThanOrEqual(
        workspaceBytes(plan, 8, 8, { scoreMods: true }),
      );
      const rows = acct.bytes.rows;
      tiledBackwardTs(sig.p, sig.hooks, q, k, v, undefined, undefined, dO);
      expect(acct.bytes.rows).toBe(rows);
    });
  });
});
