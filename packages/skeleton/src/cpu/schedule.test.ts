import {
  type AttentionOptions,
  type AttentionProblem,
  type MaskMod,
  type ModdedReferenceOptions,
  moddedAttentionReference,
  resolveAttentionProblem,
  resolveScoreMods,
  type ScoreMod,
  softcap,
} from '@attnkit/attention';
import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { type Accounting, expectClose, poisonAllocations } from '@attnkit/testing';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { type ScheduleHook, sigmoidBias, type TiledHooks } from '../hooks.js';
import { tiledBackwardTs, tiledForwardTs, tsSupports } from './run.js';
import { combinePartials, splitKeyTiles } from './schedule.js';

/**
 * The `schedule` hook of the TS forward: the split-K planner (splitKeyTiles), the combine pass
 * (combinePartials) and the forward under { kind: 'splitK', splits } for splits in {1, 2, 3, 7,
 * more than the key tiles} and { kind: 'streamK', workers } for workers in {1, 3, 8, 5000}
 * against the float64 modded reference and against the band schedule,
 * over causal, window, GQA, varlen, block-sparse, mask-mod and decode (Nq = 1) problems with
 * softmax, sinks, sigmoid and score mods; every kernel allocation poisoned with NaN.
 */

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

const TOL = 1e-5;

describe('splitKeyTiles', () => {
  test('every tile once, in order, contiguous, sizes within one, empty splits at the end', () => {
    for (const first of [0, 1, 5]) {
      for (let n = 0; n <= 23; n++) {
        for (let splits = 1; splits <= 27; splits++) {
          const ranges = splitKeyTiles(first, first + n - 1, splits);
          expect(ranges.length).toBe(splits);
          let next = first;
          const sizes: number[] = [];
          for (const [begin, end] of ranges) {
            expect(begin).toBe(next);
            expect(end).toBeGreaterThanOrEqual(begin);
            sizes.push(end - begin);
            next = end;
          }
          expect(next).toBe(first + n);
          expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
          // Non-increasing sizes: the larger splits come first, empty ones last.
          for (let s = 1; s < splits; s++) expect(sizes[s]!).toBeLessThanOrEqual(sizes[s - 1]!);
          if (n < splits) expect(sizes.filter((x) => x === 0).length).toBe(splits - n);
        }
      }
    }
  });

  test('examples', () => {
    expect(splitKeyTiles(0, 9, 3)).toEqual([
      [0, 4],
      [4, 7],
      [7, 10],
    ]);
    expect(splitKeyTiles(2, 3, 4)).toEqual([
      [2, 3],
      [3, 4],
      [4, 4],
      [4, 4],
    ]);
    expect(splitKeyTiles(3, 2, 2)).toEqual([
      [3, 3],
      [3, 3],
    ]);
    expect(splitKeyTiles(0, 6, 1)).toEqual([[0, 7]]);
  });

  test.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '2'])('splits = %s', (splits) => {
    const call = () => splitKeyTiles(0, 4, splits as number);
    expect(call).toThrow(ValueError);
    expect(call).toThrow(expect.objectContaining({ argument: 'splits' }));
  });
});

describe('combinePartials', () => {
  test('merging per-range online softmax states equals one pass (with empty partials)', () => {
    const rng = new Rng(7);
    const [bq, dv, rows, nKeys] = [4, 3, 3, 20];
    const scores = Array.from({ length: rows }, () =>
      Array.from({ length: nKeys }, () => rng.uniform() * 8 - 4),
    );
    const values = Array.from({ length: nKeys }, () =>
      Array.from({ length: dv }, () => rng.uniform() - 0.5),
    );
    // Row 2 sees no key at all; range 1 is empty.
    const bounds = [0, 7, 7, 13, 20];
    const n = bounds.length - 1;
    const m = new Float32Array(n * bq).fill(Number.NaN);
    const l = new Float32Array(n * bq).fill(Number.NaN);
    const acc = new Float32Array(n * bq * dv).fill(Number.NaN);
    for (let s = 0; s < n; s++) {
      for (let r = 0; r < rows; r++) {
        const keys = r === 2 ? [] : scores[r]!.slice(bounds[s]!, bounds[s + 1]!);
        const mx = Math.max(Number.NEGATIVE_INFINITY, ...keys);
        m[s * bq + r] = mx;
        let sum = 0;
        const a = new Array<number>(dv).fill(0);
        keys.forEach((x, j) => {
          const e = Math.exp(x - mx);
          sum += e;
          for (let c = 0; c < dv; c++) a[c] += e * values[bounds[s]! + j]![c]!;
        });
        l[s * bq + r] = sum;
        for (let c = 0; c < dv; c++) acc[(s * bq + r) * dv + c] = a[c]!;
      }
    }
    combinePartials(n, rows, bq, dv, false, m, l, acc);
    for (let r = 0; r < 2; r++) {
      const mx = Math.max(...scores[r]!);
      const w = scores[r]!.map((x) => Math.exp(x - mx));
      const lr = w.reduce((a, x) => a + x, 0);
      expect(m[r]).toBeCloseTo(mx, 5);
      expect(l[r]! / lr).toBeCloseTo(1, 5);
      for (let c = 0; c < dv; c++) {
        const want = w.reduce((a, x, j) => a + x * values[j]![c]!, 0);
        expect(acc[r * dv + c]!).toBeCloseTo(want, 4);
      }
    }
    expect(m[2]).toBe(Number.NEGATIVE_INFINITY);
    expect(l[2]).toBe(0);
    for (let c = 0; c < dv; c++) expect(acc[2 * dv + c]).toBe(0);
  });

  test('sigmoid partials are plain sums', () => {
    const acc = Float32Array.from([1, 2, 9, 9, 10, 20, 9, 9, 100, 200]);
    combinePartials(3, 1, 2, 2, true, new Float32Array(6), new Float32Array(6), acc);
    expect(Array.from(acc.subarray(0, 2))).toEqual([111, 222]);
  });
});

type Shape =
  | 'causal nq<nk'
  | 'causal nq>nk'
  | 'window'
  | 'gqa'
  | 'varlen'
  | 'sparse'
  | 'mask mod'
  | 'decode'
  | 'decode varlen';
type Variant = 'softmax' | 'sinks' | 'sigmoid' | 'softcap' | 'custom' | 'sinks+softcap';

const SHAPES: readonly Shape[] = [
  'causal nq<nk',
  'causal nq>nk',
  'window',
  'gqa',
  'varlen',
  'sparse',
  'mask mod',
  'decode',
  'decode varlen',
];
const VARIANTS: readonly Variant[] = [
  'softmax',
  'sinks',
  'sigmoid',
  'softcap',
  'custom',
  'sinks+softcap',
];

const WIGGLE: ScoreMod = {
  kind: 'custom',
  name: 'wiggle',
  ts: (s, _b, h, i, j) => s + 0.5 * Math.sin(s) - 0.02 * (h + 1) * Math.abs(i - j),
  tsGrad: (s) => 1 + 0.5 * Math.cos(s),
};

interface Case {
  name: string;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  p: AttentionProblem;
  hooks: TiledHooks;
  ref: ModdedReferenceOptions;
  blockQ: number;
  blockK: number;
  /** Key tiles of the longest key sequence. */
  keyTiles: number;
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(0, xs.length)]!;
}

function cu(lens: number[]): number[] {
  const offsets = [0];
  for (const n of lens) offsets.push(offsets[offsets.length - 1]! + n);
  return offsets;
}

function randomCase(rng: Rng, shape: Shape, variant: Variant): Case {
  const hkv = pick(rng, [1, 2]);
  const group = shape === 'gqa' ? pick(rng, [2, 3, 4]) : pick(rng, [1, 2]);
  const hq = hkv * group;
  const d = pick(rng, [8, 16, 24]);
  const dv = rng.uniform() < 0.3 ? pick(rng, [8, 16]) : d;
  const batch = rng.int(1, 3);
  let nq = rng.int(1, 40);
  let nk = rng.int(20, 90);
  const attn: AttentionOptions = { scale: (rng.uniform() * 2 + 0.5) / Math.sqrt(d) };
  let blockQ = pick(rng, [3, 5, 8, 16]);
  let blockK = pick(rng, [3, 4, 7, 8]);
  let lensQ: number[] | undefined;
  let lensK: number[] | undefined;
  switch (shape) {
    case 'causal nq<nk':
      nq = rng.int(1, 30);
      nk = nq + rng.int(10, 60);
      attn.causal = true;
      break;
    case 'causal nq>nk':
      nk = rng.int(10, 40);
      nq = nk + rng.int(1, 30);
      attn.causal = true;
      break;
    case 'window':
      attn.causal = rng.uniform() < 0.5;
      attn.window = [rng.int(0, 30), pick(rng, [-1, 0, 5])];
      break;
    case 'gqa':
      attn.causal = rng.uniform() < 0.5;
      break;
    case 'varlen':
      lensQ = [rng.int(1, 30), 0, rng.int(1, 30)];
      lensK = [rng.int(10, 60), 0, rng.int(10, 60)];
      if (rng.uniform() < 0.5) lensK[1] = rng.int(1, 20);
      else lensQ[1] = rng.int(1, 10);
      attn.causal = rng.uniform() < 0.5;
      break;
    case 'decode':
      nq = 1;
      nk = rng.int(40, 200);
      attn.causal = rng.uniform() < 0.5;
      break;
    case 'decode varlen':
      lensQ = [1, 1, 0, 1];
      lensK = [rng.int(30, 150), 0, rng.int(1, 10), rng.int(1, 150)];
      attn.causal = true;
      break;
    default:
      break;
  }
  let q: Tensor;
  let k: Tensor;
  let v: Tensor;
  if (lensQ && lensK) {
    attn.layout = 'THD';
    attn.cuSeqlensQ = cu(lensQ);
    attn.cuSeqlensK = Int32Array.from(cu(lensK));
    q = rng.randn([attn.cuSeqlensQ[lensQ.length]!, hq, d]);
    k = rng.randn([attn.cuSeqlensK[lensK.length]!, hkv, d]);
    v = rng.randn([attn.cuSeqlensK[lensK.length]!, hkv, dv]);
  } else {
    q = rng.randn([batch, hq, nq, d]);
    k = rng.randn([batch, hkv, nk, d]);
    v = rng.randn([batch, hkv, nk, dv]);
  }
  if (shape === 'sparse') {
    const bqs = pick(rng, [8, 16]);
    const bks = pick(rng, [8, 12]);
    const mshape = [Math.ceil(nq / bqs), Math.ceil(nk / bks)];
    if (rng.uniform() < 0.5) mshape.unshift(hq);
    const mask = Uint8Array.from({ length: mshape.reduce((a, x) => a * x, 1) }, () =>
      rng.uniform() < 0.6 ? 1 : 0,
    );
    attn.blockSparse = { blockQ: bqs, blockK: bks, mask: Tensor.from(mask, mshape) };
    blockQ = bqs / pick(rng, [1, 2, 4]);
    blockK = bks / pick(rng, [2, 4]);
  }
  if (shape === 'mask mod') {
    const len = rng.int(3, 15);
    const blockSize = 8;
    const mod: MaskMod = {
      name: 'document',
      ts: (_b, _h, i, j) => i !== 2 && Math.floor(i / len) === Math.floor(j / len),
      blockSize,
    };
    attn.maskMod = mod;
    blockQ = pick(rng, [2, 4, 8]);
    blockK = pick(rng, [2, 4]);
  }
  const p = resolveAttentionProblem(q, k, v, attn);
  const ref: ModdedReferenceOptions = { ...attn };
  let normalize: TiledHooks['normalize'] = { kind: 'softmax' };
  let mods: ScoreMod[] | undefined;
  if (variant === 'sinks' || variant === 'sinks+softcap') {
    const sinks = Float32Array.from({ length: hq }, () => (rng.uniform() - 0.3) * 6);
    normalize = { kind: 'softmax', sinks };
    ref.sinks = sinks;
  }
  if (variant === 'sigmoid') {
    normalize = { kind: 'sigmoid', bias: sigmoidBias(p) };
    ref.normalize = 'sigmoid';
  }
  if (variant === 'softcap' || variant === 'sinks+softcap') mods = [softcap(pick(rng, [2, 5]))];
  if (variant === 'custom') mods = [WIGGLE];
  if (mods) ref.scoreMod = mods;
  const hooks: TiledHooks = { normalize, scoreMods: resolveScoreMods(mods, p, q.device) };
  blockQ = Math.min(blockQ, Math.max(1, p.maxSeqQ));
  blockK = Math.min(blockK, Math.max(1, p.maxSeqK));
  const keyTiles = Math.ceil(p.maxSeqK / blockK);
  const name = `${variant} | ${shape} q[${q.shape}] k[${k.shape}] tiles ${blockQ}x${blockK}${attn.causal ? ' causal' : ''}${attn.window ? ` window[${attn.window}]` : ''}`;
  return { name, q, k, v, p, hooks, ref, blockQ, blockK, keyTiles };
}

function run(c: Case, schedule: ScheduleHook | undefined) {
  return tiledForwardTs(c.p, { ...c.hooks, schedule }, c.q, c.k, c.v, {
    blockQ: c.blockQ,
    blockK: c.blockK,
  });
}

describe('splitK forward equals the band schedule and the float64 reference', () => {
  const rng = new Rng(20250611);
  const cases: Case[] = [];
  SHAPES.forEach((shape, i) => {
    VARIANTS.forEach((variant, j) => {
      // Every shape x variant once, plus a second draw for every other pair.
      cases.push(randomCase(rng, shape, variant));
      if ((i + j) % 2 === 0) cases.push(randomCase(rng, shape, variant));
    });
  });
  test.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
    const band = run(c, undefined);
    expectClose(band.o, ref.o, TOL, 'band o');
    // Stream-K (cpu/streamk.test.ts has its own decode cases): workers 1, a few, and more than
    // all Q tiles' key tiles together (idle workers) over the same shapes and variants.
    const schedules: [string, ScheduleHook][] = [
      ...[1, 2, 3, 7, c.keyTiles + 3].map((splits): [string, ScheduleHook] => [
        `splits ${splits}`,
        { kind: 'splitK', splits },
      ]),
      ...[1, 3, 8, 5000].map((workers): [string, ScheduleHook] => [
        `streamK workers ${workers}`,
        { kind: 'streamK', workers },
      ]),
    ];
    for (const [label, schedule] of schedules) {
      const got = run(c, schedule);
      expectClose(got.o, ref.o, TOL, `${label} o vs reference`);
      expectClose(got.o, band.o, TOL, `${label} o vs band`);
      if (c.hooks.normalize.kind === 'sigmoid') {
        expect(got.lse).toBeUndefined();
      } else {
        expectClose(got.lse!, ref.lse!, TOL, `${label} lse vs reference`);
        expectClose(got.lse!, band.lse!, TOL, `${label} lse vs band`);
        // Rows without keys (and no sink): LSE = -inf in both schedules, at the same places.
        const a = got.lse!.toFloat32Array();
        const b = band.lse!.toFloat32Array();
        for (let i = 0; i < a.length; i++) {
          if (b[i] === Number.NEGATIVE_INFINITY) expect(a[i], `${label} lse[${i}]`).toBe(b[i]);
        }
      }
    }
  });
});

describe('schedule hook validation', () => {
  const rng = new Rng(3);
  const c = randomCase(rng, 'decode', 'softmax');

  test.each([0, -2, 2.5, Number.NaN, Number.POSITIVE_INFINITY, '4', undefined])(
    'splits = %s -> ValueError naming schedule.splits',
    (splits) => {
      const call = () => run(c, { kind: 'splitK', splits: splits as number });
      expect(call).toThrow(ValueError);
      expect(call).toThrow(expect.objectContaining({ argument: 'schedule.splits' }));
      expect(call).toThrow(/^schedule\.splits: expected a positive integer/);
    },
  );

  test('unknown kind and non-object schedules', () => {
    const kind = () => run(c, { kind: 'ring' } as unknown as ScheduleHook);
    expect(kind).toThrow(expect.objectContaining({ argument: 'schedule.kind' }));
    const obj = () => run(c, 3 as unknown as ScheduleHook);
    expect(obj).toThrow(expect.objectContaining({ argument: 'schedule' }));
  });

  test("'band' is the default; FA1's loop order declines splitK", () => {
    const band = run(c, { kind: 'band' });
    expectClose(band.o, run(c, undefined).o, 0, 'explicit band');
    const hooks = { ...c.hooks, schedule: { kind: 'splitK', splits: 2 } as const };
    expect(tsSupports(hooks, 'forward', 'fa1')).toMatch(/split-K/);
    expect(tsSupports(hooks, 'forward', 'fa2')).toBe(true);
    expect(tsSupports(hooks, 'backward', 'fa1')).toBe(true);
    expect(() => tiledForwardTs(c.p, hooks, c.q, c.k, c.v, { algorithm: 'fa1' })).toThrow(
      expect.objectContaining({ argument: 'algorithm' }),
    );
  });

  test('the backward ignores the schedule', () => {
    const fwd = run(c, { kind: 'splitK', splits: 3 });
    const dO = rng.randn(c.p.oShape as number[]);
    const opts = { blockQ: c.blockQ, blockK: c.blockK };
    const split = { ...c.hooks, schedule: { kind: 'splitK', splits: 3 } as const };
    const a = tiledBackwardTs(c.p, split, c.q, c.k, c.v, fwd.o, fwd.lse, dO, opts);
    const b = tiledBackwardTs(c.p, c.hooks, c.q, c.k, c.v, fwd.o, fwd.lse, dO, opts);
    for (const g of ['dq', 'dk', 'dv'] as const) expectClose(a[g], b[g], 0, g);
  });
});
