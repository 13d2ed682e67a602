import {
  type AttentionOptions,
  alibi,
  alibiSlopes,
  type ModdedReferenceOptions,
  moddedAttentionReference,
  resolveAttentionProblem,
  resolveScoreMods,
  softcap,
  toleranceFor,
  UnsupportedError,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { defineTiledFamily } from '../family.js';
import { type ScheduleHook, sigmoidBias, type TiledHooks } from '../hooks.js';
import { buildAux, buildStreamK } from './aux.js';
import { splitsOf, streamKWorkersOf, tiledForwardWebGpu, type WebGpuTileOptions } from './host.js';

/**
 * The WGSL stream-K forward (LeanAttention; host.ts streamKForward) on decode shapes: Nq 1..16
 * new tokens against Nk up to a few thousand keys (never a multiple of the key tile), GQA
 * (Hq 8, Hkv 2), bottom-right causal, sliding window, varlen THD with empty sequences (O 0,
 * LSE -inf), sinks, the pointwise sigmoid and f16 / bf16 inputs, for workers 1, 2, 3, 7, 64 and
 * more than all key tiles together. Each equals the float64 reference (KERNELS.md tolerances)
 * and the WGSL band forward. The test context poisons outputs and the partial scratch, so a
 * slot the fix-up reads that no piece wrote shows up. The plan's tables are checked without a
 * device (every band tile of every unit in exactly one piece, slots in key order).
 */
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

/** 8-row x 16-key tiles: decode sequences span many key tiles, so units are cut in pieces. */
const SMALL: WebGpuTileOptions['tiles'] = { forward: { tx: 4, ty: 2, rv: 1, cu: 1, kc: 8, mc: 8 } };

/** More workers than any case's key tiles: the trailing ones hold nothing. */
const MANY = 5000;

interface Case {
  name: string;
  dtype?: 'f32' | 'f16' | 'bf16';
  batch?: number;
  hq?: number;
  hkv?: number;
  nq: number;
  nk: number;
  d?: number;
  attn?: AttentionOptions;
  /** THD with these sequence lengths (q, k) instead of BHND. */
  varlen?: [number[], number[]];
  sinks?: boolean;
  sigmoid?: boolean;
  tiles?: WebGpuTileOptions['tiles'];
  workers: number[];
}

const CASES: Case[] = [
  {
    name: 'decode gqa 8/2',
    hq: 8,
    hkv: 2,
    nq: 1,
    nk: 1000,
    workers: [1, 2, 3, 7, 64, MANY],
  },
  {
    name: 'gqa causal nq 16',
    hq: 8,
    hkv: 2,
    nq: 16,
    nk: 2049,
    attn: { causal: true },
    workers: [3, 7, 64],
  },
  {
    name: 'causal window nq 5',
    hq: 4,
    hkv: 2,
    nq: 5,
    nk: 1301,
    attn: { causal: true, window: [300, 0] },
    workers: [2, 7, MANY],
  },
  {
    name: 'varlen thd, empty sequences',
    batch: 4,
    hq: 4,
    hkv: 2,
    nq: 0,
    nk: 0,
    varlen: [
      [1, 0, 4, 3],
      [700, 0, 0, 1201],
    ],
    attn: { causal: true },
    workers: [1, 3, 7, 64, MANY],
  },
  {
    name: 'sinks, causal nq 12',
    hq: 4,
    hkv: 1,
    nq: 12,
    nk: 777,
    sinks: true,
    attn: { causal: true },
    workers: [1, 7, 64],
  },
  { name: 'sigmoid', hq: 4, hkv: 2, nq: 3, nk: 517, sigmoid: true, workers: [2, 7, MANY] },
  {
    name: 'f16 decode default tiles',
    dtype: 'f16',
    hq: 8,
    hkv: 2,
    nq: 1,
    nk: 3001,
    d: 16,
    tiles: undefined,
    workers: [3, 7, 64],
  },
  {
    name: 'f16 causal sinks',
    dtype: 'f16',
    hq: 4,
    hkv: 2,
    nq: 9,
    nk: 1500,
    sinks: true,
    attn: { causal: true },
    workers: [2, 64],
  },
  { name: 'bf16 decode', dtype: 'bf16', hq: 8, hkv: 2, nq: 2, nk: 999, workers: [7] },
];

function cu(lens: readonly number[]): number[] {
  const out = [0];
  for (const n of lens) out.push(out[out.length - 1]! + n);
  return out;
}

describe.skipIf(!ctx)('WGSL stream-K forward vs the float64 reference and WGSL band', () => {
  const rng = new Rng(20261202);
  for (const c of CASES) {
    test.each(c.workers)(`${c.name}, workers %i`, async (workers) => {
      const dtype = c.dtype ?? 'f32';
      const [batch, hq, hkv, d] = [c.batch ?? 2, c.hq ?? 2, c.hkv ?? 1, c.d ?? 8];
      const attn: AttentionOptions = { ...c.attn };
      let shapes: number[][];
      if (c.varlen) {
        attn.layout = 'THD';
        attn.cuSeqlensQ = cu(c.varlen[0]);
        attn.cuSeqlensK = cu(c.varlen[1]);
        const [tq, tk] = [attn.cuSeqlensQ.at(-1)!, attn.cuSeqlensK.at(-1)!];
        shapes = [
          [tq, hq, d],
          [tk, hkv, d],
          [tk, hkv, d],
        ];
      } else {
        shapes = [
          [batch, hq, c.nq, d],
          [batch, hkv, c.nk, d],
          [batch, hkv, c.nk, d],
        ];
      }
      const [q, k, v] = shapes.map((s) => rng.randn(s, dtype)) as [Tensor, Tensor, Tensor];
      const sinks = c.sinks
        ? Float32Array.from({ length: hq }, () => rng.uniform() * 4 - 2)
        : undefined;
      const ref: ModdedReferenceOptions = { ...attn, scoreMod: [] };
      if (c.sigmoid) ref.normalize = 'sigmoid';
      if (sinks) ref.sinks = sinks;
      const want = moddedAttentionReference(q, k, v, ref);
      const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx!)) as Tensor[];
      const p = resolveAttentionProblem(gq!, gk!, gv!, attn);
      const base = {
        normalize: c.sigmoid
          ? { kind: 'sigmoid', bias: sigmoidBias(p) }
          : { kind: 'softmax', sinks },
        scoreMods: [],
      } as TiledHooks;
      const tiles = 'tiles' in c ? c.tiles : SMALL;
      const run = (schedule: ScheduleHook) =>
        tiledForwardWebGpu(p, { ...base, schedule }, gq!, gk!, gv!, { tiles });
      const got = await run({ kind: 'streamK', workers });
      const band = await run({ kind: 'band' });
      const tol = toleranceFor({ dtype });
      expect(got.o.dtype).toBe(dtype);
      const o = await got.o.toCpu();
      expectClose(o, want.o, tol, `${c.name} o`);
      expectClose(o, await band.o.toCpu(), tol, `${c.name} o vs band`);
      if (c.sigmoid) expect(got.lse).toBeUndefined();
      else {
        const lse = await got.lse!.toCpu();
        expectClose(lse, want.lse!, tol, `${c.name} lse`);
        expectClose(lse, await band.lse!.toCpu(), tol, `${c.name} lse vs band`);
      }
      for (const t of [gq, gk, gv, got.o, got.lse, band.o, band.lse]) t?.dispose();
    });
  }

  test('permuted tiles and score mods: stream-K equals WGSL band', async () => {
    // Band with these hooks is checked against the reference in permute.test.ts; here the
    // pieces must reproduce it (partials in the tiled order, o and lse through the index).
    const [batch, hq, hkv, nq, nk, d] = [2, 4, 2, 11, 403, 8];
    const perm = (heads: number, n: number) => {
      const out = new Int32Array(batch * heads * n);
      for (let s = 0; s < batch * heads; s++) {
        const p = Array.from({ length: n }, (_, i) => i);
        for (let i = n - 1; i > 0; i--) {
          const j = Math.floor(rng.uniform() * (i + 1));
          [p[i], p[j]] = [p[j]!, p[i]!];
        }
        out.set(p, s * n);
      }
      return out;
    };
    const [gq, gk, gv] = [
      [batch, hq, nq, d],
      [batch, hkv, nk, d],
      [batch, hkv, nk, d],
    ].map((s) => toWebGpu(rng.randn(s), ctx!)) as Tensor[];
    const p = resolveAttentionProblem(gq!, gk!, gv!, { causal: true });
    const base: TiledHooks = {
      normalize: { kind: 'softmax', sinks: Float32Array.from({ length: hq }, (_, h) => h - 1) },
      scoreMods: resolveScoreMods([softcap(5), alibi(alibiSlopes(hq))], p, 'webgpu'),
      permute: { q: perm(hq, nq), k: perm(hkv, nk) },
    };
    const run = (schedule: ScheduleHook) =>
      tiledForwardWebGpu(p, { ...base, schedule }, gq!, gk!, gv!, { tiles: SMALL });
    const band = await run({ kind: 'band' });
    const [bo, bl] = [await band.o.toCpu(), await band.lse!.toCpu()];
    for (const workers of [3, 64]) {
      const got = await run({ kind: 'streamK', workers });
      expectClose(await got.o.toCpu(), bo, 1e-5, `workers ${workers} o`);
      expectClose(await got.lse!.toCpu(), bl, 1e-5, `workers ${workers} lse`);
      got.o.dispose();
      got.lse?.dispose();
    }
    for (const t of [gq, gk, gv, band.o, band.lse]) t?.dispose();
  });

  test('typed errors: bad workers, block sparsity, too many workers for one dispatch', async () => {
    const [q, k, v] = [0, 1, 2].map(() => toWebGpu(rng.randn([1, 1, 4, 8]), ctx!)) as Tensor[];
    const p = resolveAttentionProblem(q!, k!, v!);
    const hooks = (schedule: unknown) =>
      ({ normalize: { kind: 'softmax' }, scoreMods: [], schedule }) as TiledHooks;
    for (const workers of [0, -2, 1.5]) {
      await expect(
        tiledForwardWebGpu(p, hooks({ kind: 'streamK', workers }), q!, k!, v!),
      ).rejects.toThrow(expect.objectContaining({ argument: 'schedule.workers' }));
    }
    const mask = Tensor.from(new Uint8Array([1, 1]), [1, 1, 2]);
    const ps = resolveAttentionProblem(q!, k!, v!, {
      blockSparse: { blockQ: 4, blockK: 2, mask },
    });
    const sparse = tiledForwardWebGpu(ps, hooks({ kind: 'streamK', workers: 2 }), q!, k!, v!);
    await expect(sparse).rejects.toThrow(UnsupportedError);
    await expect(
      tiledForwardWebGpu(ps, hooks({ kind: 'streamK', workers: 2 }), q!, k!, v!),
    ).rejects.toThrow(expect.objectContaining({ argument: 'schedule' }));
    // 70000 one-tile units (decode, 1-key tiles would be needed for more): a long sequence of
    // 16-key tiles with 70000 workers holding one tile each exceeds one dispatch dimension.
    const lk = toWebGpu(rng.randn([1, 1, 16 * 70000 + 3, 8]), ctx!);
    const lv = toWebGpu(rng.randn([1, 1, 16 * 70000 + 3, 8]), ctx!);
    const q1 = toWebGpu(rng.randn([1, 1, 1, 8]), ctx!);
    const pl = resolveAttentionProblem(q1, lk, lv);
    await expect(
      tiledForwardWebGpu(pl, hooks({ kind: 'streamK', workers: 70000 }), q1, lk, lv, {
        tiles: SMALL,
      }),
    ).rejects.toThrow(/schedule.workers: expected at most 65535 workers/);
    for (const t of [q, k, v, lk, lv, q1]) t?.dispose();
  });

  test('the streamKWorkers option runs on webgpu through a family', async () => {
    const family = defineTiledFamily({
      family: 'webgpu-streamk-option-test',
      normalize: () => ({ kind: 'softmax' }),
      extraOptions: [],
      forwardOutputs: ['o', 'lse'],
    });
    const [q, k, v] = [
      [1, 4, 2, 8],
      [1, 2, 301, 8],
      [1, 2, 301, 8],
    ].map((s) => rng.randn(s));
    const want = moddedAttentionReference(q!, k!, v!, { causal: true });
    const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t!, ctx!)) as Tensor[];
    const got = await family.forward(gq!, gk!, gv!, {
      causal: true,
      streamKWorkers: 5,
      backend: 'webgpu',
    });
    expectClose(await got.o.toCpu(), want.o, 1e-5, 'o');
    expectClose(await got.lse!.toCpu(), want.lse!, 1e-5, 'lse');
    for (const t of [gq, gk, gv, got.o, got.lse]) t?.dispose();
  });
});

describe('stream-K plan tables (no device)', () => {
  test('schedule readers: streamK is not a split count and does not throw', () => {
    const hooks: TiledHooks = {
      normalize: { kind: 'softmax' },
      scoreMods: [],
      schedule: { kind: 'streamK', workers: 4 },
    };
    expect(splitsOf(hooks)).toBeUndefined();
    expect(streamKWorkersOf(hooks)).toBe(4);
    expect(streamKWorkersOf({ ...hooks, schedule: { kind: 'splitK', splits: 2 } })).toBeUndefined();
    expect(() => streamKWorkersOf({ ...hooks, schedule: { kind: 'streamK', workers: 0 } })).toThrow(
      expect.objectContaining({ argument: 'schedule.workers' }),
    );
  });

  const rng = new Rng(5);
  test('a bad worker count is a ValueError naming workers', () => {
    const q = rng.randn([1, 1, 1, 4]);
    const p = resolveAttentionProblem(q, q, q);
    const tiling = { tileQ: 4, tileK: 16 };
    for (const w of [0, -1, 2.5, Number.NaN])
      expect(() => buildStreamK(p, buildAux(p, tiling), tiling, w)).toThrow(
        expect.objectContaining({ argument: 'workers' }),
      );
  });
  test.each([1, 2, 3, 7, 64, MANY, 2 ** 40])(
    'every band tile of every unit in exactly one piece, slots in key order (workers %i)',
    (workers) => {
      const q = rng.randn([10, 3, 4]);
      const k = rng.randn([900, 1, 4]);
      const p = resolveAttentionProblem(q, k, k, {
        layout: 'THD',
        cuSeqlensQ: [0, 1, 1, 10, 10],
        cuSeqlensK: [0, 300, 300, 899, 900],
        causal: true,
        window: [100, 0],
      });
      const tiling = { tileQ: 4, tileK: 16 };
      const tables = buildAux(p, tiling);
      const sk = buildStreamK(p, tables, tiling, workers);
      const a = sk.aux;
      const { skWorkers, skRecords, skUnits, skCounts, splits } = sk.values;
      expect(Array.from(a.subarray(0, tables.aux.length))).toEqual(Array.from(tables.aux));
      // Units: (b, h, query tile) with rows: b0 1 row, b1 none, b2 9 rows (3 tiles), b3 none.
      expect(sk.unitTiles.length).toBe(3 * (1 + 3));
      expect(Array.from(a.subarray(skUnits, skUnits + 12))).toEqual([
        0, 1, 2, 3, 3, 3, 3, 6, 9, 12, 12, 12,
      ]);
      // Band tiles of the units, from the rule itself: b2 (9 rows, 599 keys, off 590).
      const band = (r0: number, r1: number, off: number, nk: number) => {
        const lo = Math.max(r0 + off - 100, 0);
        const hi = Math.min(r1 + off + 1, nk);
        return Math.ceil(hi / 16) - Math.floor(lo / 16);
      };
      const b0 = band(0, 0, 299, 300);
      const b2 = [band(0, 3, 590, 599), band(4, 7, 590, 599), band(8, 8, 590, 599)];
      expect(sk.unitTiles).toEqual([b0, b0, b0, ...b2, ...b2, ...b2]);
      const total = sk.unitTiles.reduce((x, y) => x + y, 0);
      expect(sk.workers).toBe(Math.min(workers, total));
      const seen = sk.unitTiles.map(() => [] as number[]);
      const slots = sk.unitTiles.map(() => 0);
      const ranges = sk.unitTiles.map(() => [] as [number, number][]);
      for (let w = 0; w < sk.workers; w++) {
        const [r0, r1] = [a[skWorkers + w]!, a[skWorkers + w + 1]!];
        // Balanced to one tile.
        let load = 0;
        for (let r = r0; r < r1; r++) {
          const [b, h, qt, begin, end, slot] = a.subarray(skRecords + 6 * r, skRecords + 6 * r + 6);
          const unit = a[skUnits + b! * 3 + h!]! + qt!;
          expect(slot).toBe(slots[unit]!++);
          expect(end!).toBeGreaterThan(begin!);
          ranges[unit]!.push([begin!, end!]);
          load += end! - begin!;
          seen[unit]!.push(end! - begin!);
        }
        expect(Math.abs(load - total / sk.workers)).toBeLessThan(1);
      }
      for (let u = 0; u < sk.unitTiles.length; u++) {
        expect(a[skCounts + u]).toBe(slots[u]);
        expect(seen[u]!.reduce((x, y) => x + y, 0)).toBe(sk.unitTiles[u]);
        // Contiguous, in key order.
        for (let j = 1; j < ranges[u]!.length; j++)
          expect(ranges[u]![j]![0]).toBe(ranges[u]![j - 1]![1]);
      }
      expect(splits).toBe(Math.max(1, ...slots));
    },
  );
});
