import {
  type AttentionOptions,
  alibi,
  alibiSlopes,
  type ModdedReferenceOptions,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  resolveAttentionProblem,
  resolveScoreMods,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { type PermuteHook, sigmoidBias, type TiledHooks } from '../hooks.js';
import { tiledBackwardWebGpu, tiledForwardWebGpu, type WebGpuTileOptions } from './host.js';

// hooks.permute (PermuteHook) on the WGSL kernels: the result must equal attention of the
// gathered Q' = Q[perm_q], K' = K[perm_k], V' = V[perm_k] (every position rule seeing the tiled
// positions) scattered back, forward and backward. Outputs start poisoned (NaN), so every row
// the index reaches must be written; fresh random inputs and permutations per case.
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

const SMALL = { tx: 4, ty: 2, rv: 1, cu: 1, kc: 8, mc: 8 };
const TILES: WebGpuTileOptions['tiles'] = {
  forward: SMALL,
  dq: SMALL,
  dkdv: { ...SMALL, ty: 4 },
};

/** Where the rows of one side (queries or keys) live: BHND [B, H, N, W] or THD [T, H, W]. */
interface Side {
  thd: boolean;
  heads: number;
  lens: number[];
  starts: number[];
  total: number;
  maxN: number;
}

function sideOf(thd: boolean, heads: number, lens: number[]): Side {
  const starts = [0];
  for (const n of lens) starts.push(starts.at(-1)! + n);
  return { thd, heads, lens, starts, total: starts.at(-1)!, maxN: Math.max(0, ...lens) };
}

/** Position of (b, h, i) in the index (= LSE) layout. */
function indexAt(s: Side, b: number, h: number, i: number): number {
  return s.thd ? h * s.total + s.starts[b]! + i : (b * s.heads + h) * s.maxN + i;
}

/** Row (of width W) of token i of (b, h) in a BHND / THD tensor. */
function rowAt(s: Side, b: number, h: number, i: number): number {
  return s.thd ? (s.starts[b]! + i) * s.heads + h : (b * s.heads + h) * s.maxN + i;
}

/** A random permutation of each (b, h) slice, in the index layout. */
function randomPerm(rng: Rng, s: Side): Int32Array {
  const out = new Int32Array(s.thd ? s.heads * s.total : s.lens.length * s.heads * s.maxN);
  s.lens.forEach((n, b) => {
    for (let h = 0; h < s.heads; h++) {
      const p = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(rng.uniform() * (i + 1));
        [p[i], p[j]] = [p[j]!, p[i]!];
      }
      p.forEach((x, i) => {
        out[indexAt(s, b, h, i)] = x;
      });
    }
  });
  return out;
}

/**
 * gather: out row i = in row perm[i]; scatter: out row perm[i] = in row i (per (b, h) slice).
 * `lse` tensors are indexed by the index layout itself (rows of width 1).
 */
function move(
  t: Tensor,
  s: Side,
  perm: Int32Array | undefined,
  mode: 'gather' | 'scatter',
  lse = false,
): Tensor {
  if (!perm) return t;
  const x = t.toFloat32Array();
  const out = x.slice();
  const w = lse ? 1 : t.shape.at(-1)!;
  const at = lse ? indexAt : rowAt;
  s.lens.forEach((n, b) => {
    for (let h = 0; h < s.heads; h++) {
      for (let i = 0; i < n; i++) {
        const tiled = at(s, b, h, i) * w;
        const stored = at(s, b, h, perm[indexAt(s, b, h, i)]!) * w;
        const [dst, src] = mode === 'gather' ? [tiled, stored] : [stored, tiled];
        out.set(x.subarray(src, src + w), dst);
      }
    }
  });
  return Tensor.from(out, t.shape).astype(t.dtype);
}

type Which = 'q' | 'k' | 'both';

interface Case {
  name: string;
  dtype?: 'f32' | 'f16';
  hq?: number;
  hkv?: number;
  nq?: number;
  nk?: number;
  d?: number;
  dv?: number;
  attn?: AttentionOptions;
  varlen?: [number[], number[]];
  sparse?: [number, number];
  sinks?: boolean;
  sigmoid?: boolean;
  alibi?: boolean;
  splits?: number;
  which: Which[];
}

const CASES: Case[] = [
  {
    name: 'gqa causal+window',
    hq: 4,
    hkv: 2,
    nq: 17,
    nk: 33,
    d: 6,
    dv: 10,
    attn: { causal: true, window: [9, 0] },
    which: ['q', 'k', 'both'],
  },
  {
    name: 'varlen thd causal, an empty sequence',
    varlen: [
      [13, 0, 7],
      [20, 0, 11],
    ],
    attn: { causal: true },
    which: ['q', 'k', 'both'],
  },
  { name: 'block-sparse', hq: 2, hkv: 2, nq: 16, nk: 40, sparse: [8, 8], which: ['both'] },
  { name: 'sinks causal', nq: 10, nk: 23, sinks: true, attn: { causal: true }, which: ['both'] },
  { name: 'sigmoid', nq: 9, nk: 21, sigmoid: true, which: ['both', 'k'] },
  {
    name: 'alibi causal',
    hq: 2,
    hkv: 2,
    nq: 12,
    nk: 20,
    alibi: true,
    attn: { causal: true },
    which: ['both'],
  },
  {
    name: 'split-K 3 causal',
    nq: 12,
    nk: 40,
    attn: { causal: true },
    splits: 3,
    which: ['q', 'both'],
  },
  {
    name: 'split-K 3 varlen sinks',
    varlen: [
      [5, 9],
      [30, 17],
    ],
    sinks: true,
    splits: 3,
    which: ['both'],
  },
  {
    name: 'f16 gqa causal',
    dtype: 'f16',
    hq: 4,
    hkv: 2,
    nq: 12,
    nk: 30,
    attn: { causal: true },
    which: ['both'],
  },
  {
    name: 'f16 split-K 3 sinks',
    dtype: 'f16',
    nq: 6,
    nk: 37,
    sinks: true,
    splits: 3,
    which: ['both'],
  },
];

describe.skipIf(!ctx)('permuted tiles (hooks.permute) vs scatter(reference(gather(...)))', () => {
  const rng = new Rng(20261204);
  for (const c of CASES) {
    test.each(c.which)(`${c.name}, permute %s`, async (which) => {
      const dtype = c.dtype ?? 'f32';
      const [hq, hkv, d] = [c.hq ?? 2, c.hkv ?? 1, c.d ?? 8];
      const dv = c.dv ?? d;
      const attn: AttentionOptions = { ...c.attn };
      const batch = 2;
      const thd = c.varlen !== undefined;
      const qs = sideOf(thd, hq, c.varlen?.[0] ?? Array(batch).fill(c.nq!));
      const ks = sideOf(thd, hkv, c.varlen?.[1] ?? Array(batch).fill(c.nk!));
      const shape = (s: Side, heads: number, w: number) =>
        thd ? [s.total, heads, w] : [batch, heads, s.maxN, w];
      if (thd) {
        attn.layout = 'THD';
        attn.cuSeqlensQ = qs.starts;
        attn.cuSeqlensK = ks.starts;
      }
      const q = rng.randn(shape(qs, hq, d), dtype);
      const k = rng.randn(shape(ks, hkv, d), dtype);
      const v = rng.randn(shape(ks, hkv, dv), dtype);
      const dO = rng.randn(shape(qs, hq, dv), dtype);
      if (c.sparse) {
        const [bq, bk] = c.sparse;
        const mshape = [hq, Math.ceil(qs.maxN / bq), Math.ceil(ks.maxN / bk)];
        const n = mshape.reduce((a, x) => a * x, 1);
        const mask = Uint8Array.from({ length: n }, () => (rng.uniform() < 0.6 ? 1 : 0));
        attn.blockSparse = { blockQ: bq, blockK: bk, mask: Tensor.from(mask, mshape) };
      }
      const permute: PermuteHook = {
        q: which === 'k' ? undefined : randomPerm(rng, qs),
        k: which === 'q' ? undefined : randomPerm(rng, ks),
      };
      const sinks = c.sinks
        ? Float32Array.from({ length: hq }, () => (rng.uniform() - 0.3) * 4)
        : undefined;
      const mods = c.alibi ? [alibi(alibiSlopes(hq))] : [];
      const ref: ModdedReferenceOptions = { ...attn, scoreMod: mods };
      if (c.sigmoid) ref.normalize = 'sigmoid';
      if (sinks) ref.sinks = sinks;
      const [pq, pk, pv, pdo] = [
        move(q, qs, permute.q, 'gather'),
        move(k, ks, permute.k, 'gather'),
        move(v, ks, permute.k, 'gather'),
        move(dO, qs, permute.q, 'gather'),
      ];
      const fwd = moddedAttentionReference(pq, pk, pv, ref);
      const bwd = moddedAttentionReferenceBackward(pq, pk, pv, pdo, ref);
      const [gq, gk, gv, gdo] = [q, k, v, dO].map((t) => toWebGpu(t, ctx!));
      const p = resolveAttentionProblem(gq!, gk!, gv!, attn);
      const hooks: TiledHooks = {
        normalize: c.sigmoid
          ? { kind: 'sigmoid', bias: sigmoidBias(p) }
          : { kind: 'softmax', sinks },
        scoreMods: resolveScoreMods(mods, p, 'webgpu'),
        permute,
        ...(c.splits ? { schedule: { kind: 'splitK', splits: c.splits } as const } : {}),
      };
      const tol = toleranceFor({ dtype });
      const { o, lse } = await tiledForwardWebGpu(p, hooks, gq!, gk!, gv!, { tiles: TILES });
      expectClose(await o.toCpu(), move(fwd.o, qs, permute.q, 'scatter'), tol, `${c.name} o`);
      if (c.sigmoid) expect(lse).toBeUndefined();
      else
        expectClose(
          await lse!.toCpu(),
          move(fwd.lse!, qs, permute.q, 'scatter', true),
          tol,
          `${c.name} lse`,
        );
      const grads = await tiledBackwardWebGpu(p, hooks, gq!, gk!, gv!, o, lse, gdo!, {
        tiles: TILES,
      });
      const want = {
        dq: move(bwd.dq, qs, permute.q, 'scatter'),
        dk: move(bwd.dk, ks, permute.k, 'scatter'),
        dv: move(bwd.dv, ks, permute.k, 'scatter'),
      };
      for (const name of ['dq', 'dk', 'dv'] as const) {
        expect(grads[name].dtype).toBe(dtype);
        expectClose(await grads[name].toCpu(), want[name], tol, `${c.name} ${name}`);
      }
      if (sinks) expectClose(await grads.dsinks!.toCpu(), bwd.dsinks!, tol, `${c.name} dsinks`);
      for (const t of [gq, gk, gv, gdo, o, lse, ...Object.values(grads)]) t?.dispose();
    });
  }

  test('an index of the wrong length is a typed error naming it', async () => {
    const [q, k, v] = [0, 1, 2].map(() => toWebGpu(rng.randn([1, 1, 4, 4]), ctx!));
    const p = resolveAttentionProblem(q!, k!, v!);
    for (const side of ['q', 'k'] as const) {
      const hooks: TiledHooks = {
        normalize: { kind: 'softmax' },
        scoreMods: [],
        permute: { [side]: new Int32Array(3) },
      };
      await expect(tiledForwardWebGpu(p, hooks, q!, k!, v!)).rejects.toThrow(
        expect.objectContaining({ argument: `permute.${side}`, constructor: ValueError }),
      );
    }
    for (const t of [q, k, v]) t?.dispose();
  });
});
