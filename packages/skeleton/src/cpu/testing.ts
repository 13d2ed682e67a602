import {
  type AttentionOptions,
  type AttentionProblem,
  accuracy,
  alibi,
  alibiSlopes,
  type MaskMod,
  type ModdedReferenceOptions,
  resolveAttentionProblem,
  resolveScoreMods,
  type ScoreMod,
  scoreBias,
  softcap,
} from '@attnkit/attention';
import { type DType, type Rng, Tensor } from '@attnkit/tensor';
import { expect } from 'vitest';
import { sigmoidBias, type TiledHooks } from '../hooks.js';
import { type AllocKind, setAllocHook } from './alloc.js';
import type { TsTileOptions } from './run.js';

/**
 * Test support for the hooked TS kernels (not exported from the package): seeded random
 * problems over KERNELS.md "Common" (odd lengths, Nq != Nk, GQA, THD varlen with empty
 * sequences, causal, window, block sparsity) crossed with the hook space (softmax, sinks,
 * sigmoid, each built-in mod, chained mods, a custom mod, mask mods), each with the options of
 * the float64 modded reference that is its oracle.
 */

export type Shape =
  | 'plain'
  | 'nq<nk causal'
  | 'nq>nk causal'
  | 'gqa'
  | 'window'
  | 'window causal'
  | 'varlen'
  | 'sparse';

export const SHAPES: readonly Shape[] = [
  'plain',
  'nq<nk causal',
  'nq>nk causal',
  'gqa',
  'window',
  'window causal',
  'varlen',
  'sparse',
];

export type Variant =
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

export const VARIANTS: readonly Variant[] = [
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

export interface HookCase {
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
export const WIGGLE: ScoreMod = {
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
export function makeCase(
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
export function randomHookCase(
  rng: Rng,
  shape: Shape,
  variant: Variant,
  dtype: DType = 'f32',
): HookCase {
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

/** Asserts no unexpected NaN/Infinity and relative L2 within `tol` (KERNELS.md "Tolerances"). */
export function expectClose(
  actual: Tensor | ArrayLike<number>,
  reference: Tensor | ArrayLike<number>,
  tol: number,
  label: string,
): void {
  const a = accuracy(actual, reference);
  expect(a.nonFinite, `${label}: non-finite values`).toBe(0);
  expect(a.relL2, `${label}: relative L2`).toBeLessThanOrEqual(tol);
}

export interface Accounting {
  bytes: Record<AllocKind, number>;
  restore(): void;
}

/**
 * Makes every kernel allocation start as garbage (NaN for f32, a huge index for i32) and
 * counts the bytes per kind, until restore().
 */
export function poisonAllocations(): Accounting {
  const bytes: Record<AllocKind, number> = { output: 0, tile: 0, rows: 0 };
  const previous = setAllocHook((array, kind) => {
    if (array instanceof Float32Array) array.fill(Number.NaN);
    else array.fill(0x3fffffff);
    bytes[kind] += array.byteLength;
  });
  return { bytes, restore: () => setAllocHook(previous) };
}

/**
 * Bias mods of every accepted shape ([Nq, Nk], [Hq, Nq, Nk], [B, Hq, Nq, Nk]) on two batch
 * entries, in BHND and in THD (where positions are relative to each sequence's start).
 */
export function biasCases(rng: Rng): HookCase[] {
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
