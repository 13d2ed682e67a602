import {
  type AttentionOptions,
  type ModdedReferenceOptions,
  moddedAttentionReference,
  resolveAttentionProblem,
  resolveScoreMods,
  softcap,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { sigmoidBias, type TiledHooks } from '../hooks.js';
import { tiledForwardWebGpu, type WebGpuTileOptions } from './host.js';

// Split-K (FlashDecoding) forward vs the float64 modded reference. Outputs (and the split-K
// scratch) start as NaN, so every (row, split) partial the combine reads must have been written.
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

/** 8-row x 16-key tiles: short sequences still span several key tiles. */
const SMALL: WebGpuTileOptions['tiles'] = { forward: { tx: 4, ty: 2, rv: 1, cu: 1, kc: 8, mc: 8 } };

/** Plain softmax hooks with split-K's schedule (any count: bad ones are what some tests pass). */
const softmaxSplitK = (splits: number) =>
  ({
    normalize: { kind: 'softmax' },
    scoreMods: [],
    schedule: { kind: 'splitK', splits },
  }) as TiledHooks;

interface Case {
  name: string;
  dtype?: 'f32' | 'f16';
  hq?: number;
  hkv?: number;
  nq: number;
  nk: number;
  d?: number;
  dv?: number;
  attn?: AttentionOptions;
  /** THD with these sequence lengths (q, k) instead of BHND. */
  varlen?: [number[], number[]];
  sparse?: [number, number];
  sinks?: boolean;
  sigmoid?: boolean;
  cap?: number;
  tiles?: WebGpuTileOptions['tiles'];
  splits: number[];
}

const CASES: Case[] = [
  { name: 'causal nq<nk', nq: 12, nk: 40, attn: { causal: true }, splits: [1, 2, 3, 40] },
  {
    name: 'causal nq>nk (rows without keys)',
    nq: 20,
    nk: 9,
    attn: { causal: true },
    splits: [2, 3],
  },
  {
    name: 'window gqa',
    hq: 4,
    hkv: 2,
    nq: 17,
    nk: 33,
    d: 6,
    dv: 10,
    attn: { causal: true, window: [9, 0] },
    splits: [3],
  },
  {
    name: 'varlen thd, an empty sequence',
    nq: 0,
    nk: 0,
    varlen: [
      [13, 0, 7],
      [35, 0, 20],
    ],
    attn: { causal: true },
    splits: [2, 5],
  },
  { name: 'block-sparse', hq: 2, hkv: 2, nq: 16, nk: 48, sparse: [8, 8], splits: [2, 3, 9] },
  // The combine's 16 lanes a row: Dv 70 is 18 column groups (two lanes take a second, the
  // last holds 2 columns), 70 rows are 18 workgroups of 4 rows (the last holds 2).
  { name: 'wide Dv, many rows', nq: 70, nk: 45, d: 8, dv: 70, splits: [3] },
  {
    name: 'sinks + softcap',
    nq: 10,
    nk: 37,
    sinks: true,
    cap: 2,
    attn: { causal: true },
    splits: [1, 3],
  },
  {
    name: 'sinks, rows without keys',
    nq: 20,
    nk: 9,
    sinks: true,
    attn: { causal: true },
    splits: [4],
  },
  { name: 'sigmoid', nq: 9, nk: 41, sigmoid: true, splits: [1, 2, 3] },
  { name: 'decode', hq: 4, hkv: 1, nq: 1, nk: 300, d: 16, tiles: undefined, splits: [1, 2, 3, 7] },
  { name: 'decode small tiles', nq: 1, nk: 300, d: 8, splits: [4, 25] },
  {
    name: 'decode f16 sinks',
    dtype: 'f16',
    hq: 2,
    hkv: 2,
    nq: 1,
    nk: 290,
    d: 8,
    sinks: true,
    tiles: undefined,
    splits: [3],
  },
  {
    name: 'f16 causal',
    dtype: 'f16',
    nq: 12,
    nk: 30,
    d: 6,
    attn: { causal: true },
    splits: [2, 30],
  },
];

describe.skipIf(!ctx)('split-K forward vs the float64 modded reference', () => {
  const rng = new Rng(20261203);
  for (const c of CASES) {
    test.each(c.splits)(`${c.name} splits %i`, async (splits) => {
      const dtype = c.dtype ?? 'f32';
      const [hq, hkv, d] = [c.hq ?? 2, c.hkv ?? 1, c.d ?? 8];
      const dv = c.dv ?? d;
      const attn: AttentionOptions = { ...c.attn };
      let q: Tensor;
      let k: Tensor;
      let v: Tensor;
      if (c.varlen) {
        const cu = (lens: number[]) => {
          const out = [0];
          for (const n of lens) out.push(out[out.length - 1]! + n);
          return out;
        };
        attn.layout = 'THD';
        attn.cuSeqlensQ = cu(c.varlen[0]);
        attn.cuSeqlensK = cu(c.varlen[1]);
        q = rng.randn([attn.cuSeqlensQ.at(-1)!, hq, d], dtype);
        k = rng.randn([attn.cuSeqlensK.at(-1)!, hkv, d], dtype);
        v = rng.randn([attn.cuSeqlensK.at(-1)!, hkv, dv], dtype);
      } else {
        q = rng.randn([2, hq, c.nq, d], dtype);
        k = rng.randn([2, hkv, c.nk, d], dtype);
        v = rng.randn([2, hkv, c.nk, dv], dtype);
      }
      if (c.sparse) {
        const [bq, bk] = c.sparse;
        const shape = [hq, Math.ceil(c.nq / bq), Math.ceil(c.nk / bk)];
        const n = shape.reduce((a, x) => a * x, 1);
        // Alternating runs of kept and dropped blocks, one query block with none kept.
        const mask = Uint8Array.from({ length: n }, (_, i) => (i % 5 < 2 || i === 1 ? 1 : 0));
        mask.fill(0, shape[2]!, 2 * shape[2]!);
        attn.blockSparse = { blockQ: bq, blockK: bk, mask: Tensor.from(mask, shape) };
      }
      const sinks = c.sinks ? Float32Array.from({ length: hq }, (_, h) => 1.5 - h) : undefined;
      const ref: ModdedReferenceOptions = { ...attn, scoreMod: c.cap ? [softcap(c.cap)] : [] };
      if (c.sigmoid) ref.normalize = 'sigmoid';
      if (sinks) ref.sinks = sinks;
      const want = moddedAttentionReference(q, k, v, ref);
      const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx!)) as Tensor[];
      const p = resolveAttentionProblem(gq!, gk!, gv!, attn);
      const hooks = {
        normalize: c.sigmoid
          ? { kind: 'sigmoid', bias: sigmoidBias(p) }
          : { kind: 'softmax', sinks },
        scoreMods: resolveScoreMods(c.cap ? [softcap(c.cap)] : [], p, 'webgpu'),
        schedule: { kind: 'splitK', splits },
      } as TiledHooks;
      const tiles = 'tiles' in c ? c.tiles : SMALL;
      const { o, lse } = await tiledForwardWebGpu(p, hooks, gq!, gk!, gv!, { tiles });
      const tol = toleranceFor({ dtype });
      expect(o.dtype).toBe(dtype);
      expectClose(await o.toCpu(), want.o, tol, `${c.name} o`);
      if (c.sigmoid) expect(lse).toBeUndefined();
      else expectClose(await lse!.toCpu(), want.lse!, tol, `${c.name} lse`);
      for (const t of [gq, gk, gv, o, lse]) t?.dispose();
    });
  }

  test('the combine loops over rows its grid cannot hold (workgroups per dimension capped)', async () => {
    // 70 rows are 18 combine workgroups of 4; a device allowing 16 a dimension gets 16, which
    // must loop around for rows 64-69 (a skipped row would keep the fresh buffer's zeros).
    const q = rng.randn([1, 2, 70, 8]);
    const k = rng.randn([1, 1, 45, 8]);
    const v = rng.randn([1, 1, 45, 12]);
    const want = moddedAttentionReference(q, k, v, {});
    const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx!)) as Tensor[];
    const p = resolveAttentionProblem(gq!, gk!, gv!);
    const hooks = softmaxSplitK(3);
    const real = ctx!.limits;
    const c = ctx as unknown as { limits: typeof real };
    c.limits = { ...real, maxComputeWorkgroupsPerDimension: 16 };
    try {
      const { o, lse } = await tiledForwardWebGpu(p, hooks, gq!, gk!, gv!, { tiles: SMALL });
      expectClose(await o.toCpu(), want.o, 1e-5, 'o');
      expectClose(await lse!.toCpu(), want.lse!, 1e-5, 'lse');
      for (const t of [o, lse]) t?.dispose();
    } finally {
      c.limits = real;
    }
    for (const t of [gq, gk, gv]) t.dispose();
  });

  test('a bad schedule is a typed error', async () => {
    const [q, k, v] = [0, 1, 2].map(() => toWebGpu(rng.randn([1, 1, 4, 4]), ctx!));
    const p = resolveAttentionProblem(q!, k!, v!);
    const hooks = softmaxSplitK(0);
    await expect(tiledForwardWebGpu(p, hooks, q!, k!, v!)).rejects.toThrow(
      expect.objectContaining({ argument: 'schedule.splits' }),
    );
    // More splits than one dispatch dimension may hold: said before anything is queued.
    const many = softmaxSplitK(70000);
    await expect(tiledForwardWebGpu(p, many, q!, k!, v!)).rejects.toThrow(
      /schedule.splits: expected batch \(1\) x splits <= 65535/,
    );
    for (const t of [q, k, v]) t?.dispose();
  });
});
