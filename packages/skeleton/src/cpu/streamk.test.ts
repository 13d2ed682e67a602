import {
  type AttentionOptions,
  type AttentionProblem,
  type ModdedReferenceOptions,
  moddedAttentionReference,
  registeredKernels,
  resolveAttentionProblem,
  UnsupportedError,
} from '@attnkit/attention';
import { Rng, type Tensor, ValueError } from '@attnkit/tensor';
import { type Accounting, expectClose, poisonAllocations } from '@attnkit/testing';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { defineTiledFamily } from '../family.js';
import { type ScheduleHook, sigmoidBias, type TiledHooks } from '../hooks.js';
import { splitsOf } from '../webgpu/host.js';
import { tiledBackwardTs, tiledForwardTs, tsSupports } from './run.js';
import { scheduleSplits } from './schedule.js';

/**
 * The 'streamK' schedule (LeanAttention) of the TS FA2 forward on decode shapes: Nq 1..16 new
 * tokens against Nk up to a few thousand keys (never a multiple of the key tile), GQA (Hq 8,
 * Hkv 2), bottom-right causal, sliding window, varlen THD with empty sequences (LSE -inf, O 0),
 * sinks and the pointwise sigmoid, for workers from 1 to more than all key tiles together.
 * Each equals the float64 reference (KERNELS.md tolerances) and the band schedule; every
 * kernel allocation is poisoned with NaN, so a partial slot the fix-up forgets shows up.
 * Also: the option (streamKWorkers) through a family and its typed errors.
 */

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

/** KERNELS.md: f32 <= 1e-5, <= 2e-5 for N >= 4096. */
const tol = (nk: number) => (nk >= 4096 ? 2e-5 : 1e-5);

type Variant = 'softmax' | 'sinks' | 'sigmoid';
type Mask = 'none' | 'causal' | 'window' | 'causal+window';

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
  /** Key tiles of all (b, h, Q tile) units together at most (an upper bound for workers). */
  totalTiles: number;
}

function cu(lens: readonly number[]): number[] {
  const out = [0];
  for (const n of lens) out.push(out[out.length - 1]! + n);
  return out;
}

function makeCase(
  rng: Rng,
  o: {
    batch?: number;
    hq?: number;
    hkv?: number;
    nq: number;
    nk: number;
    d?: number;
    lens?: { q: number[]; k: number[] };
    mask: Mask;
    variant: Variant;
    blockQ: number;
    blockK: number;
  },
): Case {
  const { hq = 8, hkv = 2, d = 16, batch = 1, mask, variant } = o;
  const dv = d;
  const attn: AttentionOptions = { scale: (0.6 + rng.uniform()) / Math.sqrt(d) };
  if (mask === 'causal' || mask === 'causal+window') attn.causal = true;
  if (mask === 'window' || mask === 'causal+window')
    attn.window = [rng.int(0, Math.max(1, o.nk >> 1)), rng.uniform() < 0.5 ? -1 : 2];
  let q: Tensor;
  let k: Tensor;
  let v: Tensor;
  if (o.lens) {
    attn.layout = 'THD';
    attn.cuSeqlensQ = cu(o.lens.q);
    attn.cuSeqlensK = Int32Array.from(cu(o.lens.k));
    const tq = attn.cuSeqlensQ[o.lens.q.length]!;
    const tk = attn.cuSeqlensK[o.lens.k.length]!;
    q = rng.randn([tq, hq, d]);
    k = rng.randn([tk, hkv, d]);
    v = rng.randn([tk, hkv, dv]);
  } else {
    q = rng.randn([batch, hq, o.nq, d]);
    k = rng.randn([batch, hkv, o.nk, d]);
    v = rng.randn([batch, hkv, o.nk, dv]);
  }
  const p = resolveAttentionProblem(q, k, v, attn);
  const ref: ModdedReferenceOptions = { ...attn };
  let normalize: TiledHooks['normalize'] = { kind: 'softmax' };
  if (variant === 'sinks') {
    const sinks = Float32Array.from({ length: hq }, () => (rng.uniform() - 0.3) * 6);
    normalize = { kind: 'softmax', sinks };
    ref.sinks = sinks;
  }
  if (variant === 'sigmoid') {
    normalize = { kind: 'sigmoid', bias: sigmoidBias(p) };
    ref.normalize = 'sigmoid';
  }
  const blockQ = Math.min(o.blockQ, Math.max(1, p.maxSeqQ));
  const blockK = Math.min(o.blockK, Math.max(1, p.maxSeqK));
  let totalTiles = 0;
  for (let b = 0; b < p.batch; b++)
    totalTiles += hq * Math.ceil(p.seqQ[b]! / blockQ) * Math.ceil(p.seqK[b]! / blockK);
  const shape = o.lens
    ? `THD q${JSON.stringify(o.lens.q)} k${JSON.stringify(o.lens.k)}`
    : `B${batch} Nq ${o.nq} Nk ${o.nk}`;
  const name = `${variant} ${mask} ${shape} Hq ${hq} Hkv ${hkv} tiles ${blockQ}x${blockK}${attn.window ? ` window[${attn.window}]` : ''}`;
  return { name, q, k, v, p, hooks: { normalize, scoreMods: [] }, ref, blockQ, blockK, totalTiles };
}

function run(c: Case, schedule: ScheduleHook | undefined) {
  return tiledForwardTs(c.p, { ...c.hooks, schedule }, c.q, c.k, c.v, {
    blockQ: c.blockQ,
    blockK: c.blockK,
  });
}

function checkAgainst(c: Case, workers: number) {
  const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
  const band = run(c, undefined);
  const got = run(c, { kind: 'streamK', workers });
  const t = tol(c.p.maxSeqK);
  const label = `workers ${workers}`;
  expectClose(got.o, ref.o, t, `${label} o vs reference`);
  expectClose(got.o, band.o, t, `${label} o vs band`);
  if (c.hooks.normalize.kind === 'sigmoid') {
    expect(got.lse).toBeUndefined();
    return;
  }
  expectClose(got.lse!, ref.lse!, t, `${label} lse vs reference`);
  expectClose(got.lse!, band.lse!, t, `${label} lse vs band`);
  // Rows without keys (and no sink): LSE = -inf and O = 0 exactly, where band has them.
  const a = got.lse!.toFloat32Array();
  const b = band.lse!.toFloat32Array();
  const r = ref.lse!.toFloat32Array();
  for (let i = 0; i < a.length; i++) {
    if (r[i] === Number.NEGATIVE_INFINITY) {
      expect(a[i], `${label} lse[${i}]`).toBe(Number.NEGATIVE_INFINITY);
      expect(b[i], `band lse[${i}]`).toBe(Number.NEGATIVE_INFINITY);
    }
  }
}

describe('streamK decode forward equals the float64 reference and band', () => {
  const rng = new Rng(20261202);
  const cases: Case[] = [];
  const masks: Mask[] = ['none', 'causal', 'window', 'causal+window'];
  const variants: Variant[] = ['softmax', 'sinks', 'sigmoid'];
  // Decode shapes: Nq 1..16, Nk up to a few thousand and never a multiple of the key tile.
  const shapes = [
    { nq: 1, nk: 1, blockQ: 1, blockK: 16 },
    { nq: 1, nk: 37, blockQ: 1, blockK: 8 },
    { nq: 1, nk: 2999, blockQ: 1, blockK: 64 },
    { nq: 3, nk: 515, blockQ: 4, blockK: 32, batch: 2 },
    { nq: 16, nk: 1023, blockQ: 16, blockK: 64 },
    { nq: 7, nk: 4099, blockQ: 8, blockK: 128 },
    { nq: 5, nk: 333, blockQ: 2, blockK: 7, hq: 4, hkv: 1 },
  ];
  shapes.forEach((s, i) => {
    cases.push(makeCase(rng, { ...s, mask: masks[i % 4]!, variant: variants[i % 3]! }));
    cases.push(makeCase(rng, { ...s, mask: masks[(i + 1) % 4]!, variant: variants[(i + 2) % 3]! }));
  });
  // Varlen THD decode batches with an empty key sequence (rows with no key: O 0, LSE -inf),
  // an empty query sequence and very different lengths (what stream-K balances).
  for (const variant of variants) {
    cases.push(
      makeCase(rng, {
        nq: 0,
        nk: 0,
        lens: { q: [1, 2, 0, 16, 1], k: [1500, 0, 40, 611, 3] },
        mask: 'causal',
        variant,
        blockQ: 4,
        blockK: 32,
      }),
    );
  }
  cases.push(
    makeCase(rng, {
      nq: 0,
      nk: 0,
      lens: { q: [3, 1], k: [0, 0] },
      mask: 'none',
      variant: 'softmax',
      blockQ: 2,
      blockK: 8,
    }),
  );
  test.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    for (const workers of [1, 2, 3, 7, 64, 250, c.totalTiles + 5]) checkAgainst(c, workers);
  });

  test('varlen: a query row with an empty key sequence gives O 0 and LSE -inf', () => {
    const c = makeCase(rng, {
      nq: 0,
      nk: 0,
      lens: { q: [2, 1], k: [0, 21] },
      mask: 'none',
      variant: 'softmax',
      blockQ: 2,
      blockK: 4,
    });
    const got = run(c, { kind: 'streamK', workers: 3 });
    const o = got.o.toFloat32Array();
    const lse = got.lse!.toFloat32Array();
    // THD: o [totalQ, Hq, Dv], lse [Hq, totalQ]; sequence 0 holds query rows 0 and 1.
    const { hq, dv, totalQ } = c.p;
    for (let h = 0; h < hq; h++) {
      for (const row of [0, 1]) {
        expect(lse[h * totalQ + row]).toBe(Number.NEGATIVE_INFINITY);
        for (let j = 0; j < dv; j++) expect(o[(row * hq + h) * dv + j]).toBe(0);
      }
      expect(Number.isFinite(lse[h * totalQ + 2]!)).toBe(true);
    }
  });
});

describe('streamK schedule: validation and backends', () => {
  const rng = new Rng(5);
  const c = makeCase(rng, {
    nq: 1,
    nk: 50,
    mask: 'none',
    variant: 'softmax',
    blockQ: 1,
    blockK: 8,
  });

  test.each([0, -2, 2.5, Number.NaN, Number.POSITIVE_INFINITY, '4', undefined])(
    'workers = %s -> ValueError naming schedule.workers',
    (workers) => {
      const call = () => run(c, { kind: 'streamK', workers: workers as number });
      expect(call).toThrow(ValueError);
      expect(call).toThrow(expect.objectContaining({ argument: 'schedule.workers' }));
      expect(call).toThrow(/^schedule\.workers: expected a positive integer/);
    },
  );

  test("FA1's loop order declines it; the backward ignores it", () => {
    const hooks = { ...c.hooks, schedule: { kind: 'streamK', workers: 4 } as const };
    expect(tsSupports(hooks, 'forward', 'fa1')).toMatch(/stream-K/);
    expect(tsSupports(hooks, 'forward', 'fa2')).toBe(true);
    expect(() => tiledForwardTs(c.p, hooks, c.q, c.k, c.v, { algorithm: 'fa1' })).toThrow(
      expect.objectContaining({ argument: 'algorithm' }),
    );
    const fwd = run(c, { kind: 'streamK', workers: 4 });
    const dO = rng.randn(c.p.oShape as number[]);
    const opts = { blockQ: c.blockQ, blockK: c.blockK };
    const a = tiledBackwardTs(c.p, hooks, c.q, c.k, c.v, fwd.o, fwd.lse, dO, opts);
    const b = tiledBackwardTs(c.p, c.hooks, c.q, c.k, c.v, fwd.o, fwd.lse, dO, opts);
    expectClose(a.dq, b.dq, 0, 'dq');
    expectClose(a.dk, b.dk, 0, 'dk');
  });

  test('the band/splitK-only reader throws UnsupportedError instead of running band', () => {
    const hooks: TiledHooks = { ...c.hooks, schedule: { kind: 'streamK', workers: 4 } };
    const call = () => scheduleSplits(hooks.schedule);
    expect(call).toThrow(UnsupportedError);
    expect(call).toThrow(expect.objectContaining({ argument: 'schedule' }));
    // webgpu runs stream-K (webgpu/streamk.test.ts): its reader says "no split count".
    expect(splitsOf(hooks)).toBeUndefined();
    // An invalid streamK hook is still a ValueError first (validation is shared).
    const bad = () => scheduleSplits({ kind: 'streamK', workers: 0 });
    expect(bad).toThrow(expect.objectContaining({ argument: 'schedule.workers' }));
    expect(scheduleSplits({ kind: 'splitK', splits: 3 })).toBe(3);
  });
});

describe('streamKWorkers option (family layer)', () => {
  const family = defineTiledFamily({
    family: 'streamk-option-test',
    normalize: () => ({ kind: 'softmax' }),
    extraOptions: [],
    forwardOutputs: ['o', 'lse'],
  });
  const rng = new Rng(11);
  const c = makeCase(rng, {
    nq: 2,
    nk: 301,
    mask: 'causal',
    variant: 'softmax',
    blockQ: 2,
    blockK: 16,
  });

  test('maps to the streamK schedule and equals the reference (default backend on cpu)', async () => {
    const r = family.resolve(c.q, c.k, c.v, { causal: true, streamKWorkers: 5 });
    expect(r.hooks.schedule).toEqual({ kind: 'streamK', workers: 5 });
    const ref = moddedAttentionReference(c.q, c.k, c.v, { causal: true });
    for (const backend of [undefined, 'ts'] as const) {
      const got = await family.forward(c.q, c.k, c.v, {
        causal: true,
        streamKWorkers: 5,
        ...(backend ? { backend } : {}),
      });
      expectClose(got.o, ref.o, 1e-5, `${backend ?? 'default'} o`);
      expectClose(got.lse!, ref.lse!, 1e-5, `${backend ?? 'default'} lse`);
    }
  });

  test('every backend takes it for both passes; FA1 declines it', () => {
    const regs = registeredKernels({ family: 'streamk-option-test' });
    const ask = (backend: string, pass: 'forward' | 'backward', options: Record<string, unknown>) =>
      regs
        .find((r) => r.backend === backend && r.pass === pass)!
        .supports({ family: 'streamk-option-test', pass, device: 'cpu', dtype: 'f32', options });
    for (const backend of ['native', 'webgpu']) {
      expect(ask(backend, 'backward', { streamKWorkers: 4 })).toBe(true);
    }
    // native and webgpu run it (their forwards: native-streamk.test.ts, webgpu/streamk.test.ts);
    // whether the addon or a device is there is another question, so only the absence of a
    // stream-K reason is checked.
    for (const backend of ['native', 'webgpu'])
      expect(String(ask(backend, 'forward', { streamKWorkers: 4 }))).not.toMatch(/stream-K/);
    expect(ask('ts', 'forward', { streamKWorkers: 4 })).toBe(true);
    expect(ask('ts', 'forward', { streamKWorkers: 4, algorithm: 'fa1' })).toMatch(/stream-K/);
  });

  test.each([0, -1, 1.5, '3', Number.NaN, null])('streamKWorkers = %s', async (w) => {
    const call = () => family.resolve(c.q, c.k, c.v, { streamKWorkers: w as number });
    expect(call).toThrow(ValueError);
    expect(call).toThrow(expect.objectContaining({ argument: 'streamKWorkers' }));
  });

  test('not together with numSplits', () => {
    for (const numSplits of [1, 4]) {
      const call = () => family.resolve(c.q, c.k, c.v, { streamKWorkers: 4, numSplits });
      expect(call).toThrow(ValueError);
      expect(call).toThrow(expect.objectContaining({ argument: 'streamKWorkers' }));
      expect(call).toThrow(/pick one/);
    }
  });
});
