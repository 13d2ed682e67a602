import {
  type AttentionOptions,
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
  toleranceFor,
} from '@attnkit/attention';
import { DeviceError, Rng, Tensor, ValueError } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { SOFTMAX_HOOKS, sigmoidBias, type TiledHooks } from '../hooks.js';
import {
  tiledBackwardWebGpu,
  tiledForwardWebGpu,
  type WebGpuTileOptions,
  webGpuSupports,
} from './host.js';

// Fails here when no adapter can be had (Dawn on Mesa llvmpipe in CI), unless
// ATTNKIT_ALLOW_NO_WEBGPU=1 declares a machine without WebGPU. Outputs start as NaN.
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

/** A custom mod in both languages, with its derivative: smooth, index- and batch-dependent. */
const WIGGLE: ScoreMod = {
  kind: 'custom',
  name: 'wiggle',
  ts: (s, b, h, i, j) => s + 0.5 * Math.sin(s) - 0.02 * (h + 1) * Math.abs(i - j) + 0.1 * b,
  tsGrad: (s) => 1 + 0.5 * Math.cos(s),
  wgsl: `fn wiggle(s: f32, b: u32, h: u32, i: u32, j: u32) -> f32 {
  return s + 0.5 * sin(s) - 0.02 * f32(h + 1u) * abs(f32(i) - f32(j)) + 0.1 * f32(b);
}`,
  wgslGrad: `fn wiggle_grad(s: f32, b: u32, h: u32, i: u32, j: u32) -> f32 { return 1.0 + 0.5 * cos(s); }`,
};

type MaskKind = 'prefix-lm' | 'document' | 'per-head' | 'per-batch';

/** Mask mods in both languages; per-head's row 2 sees no key at all. */
function maskMod(kind: MaskKind, rng: Rng): MaskMod {
  const blockSize = [4, 8, 16][rng.int(0, 3)]!;
  switch (kind) {
    case 'prefix-lm': {
      const n = rng.int(0, 20);
      return {
        name: 'prefix_lm',
        ts: (_b, _h, i, j) => j < n || j <= i,
        wgsl: `fn prefix_lm(b: u32, h: u32, i: u32, j: u32) -> bool { return j < ${n}u || j <= i; }`,
        blockSize,
      };
    }
    case 'document': {
      const n = rng.int(3, 15);
      return {
        name: 'document',
        ts: (_b, _h, i, j) => Math.floor(i / n) === Math.floor(j / n),
        wgsl: `fn document(b: u32, h: u32, i: u32, j: u32) -> bool { return i / ${n}u == j / ${n}u; }`,
        blockSize,
      };
    }
    case 'per-head':
      return {
        name: 'per_head',
        ts: (_b, h, i, j) => i !== 2 && Math.floor(i / (3 + 2 * h)) === Math.floor(j / (3 + 2 * h)),
        wgsl: `fn per_head(b: u32, h: u32, i: u32, j: u32) -> bool {
  return i != 2u && i / (3u + 2u * h) == j / (3u + 2u * h);
}`,
        perHead: true,
        blockSize,
      };
    case 'per-batch':
      return {
        name: 'per_batch',
        ts: (b, _h, i, j) => j <= i + 3 * b || (i + j) % 5 === 0,
        wgsl: `fn per_batch(b: u32, h: u32, i: u32, j: u32) -> bool { return j <= i + 3u * b || (i + j) % 5u == 0u; }`,
        perBatch: true,
        blockSize,
      };
  }
}

type Shape =
  | 'plain'
  | 'nq<nk causal'
  | 'nq>nk causal'
  | 'gqa'
  | 'window causal'
  | 'varlen'
  | 'sparse';
const SHAPES: readonly Shape[] = [
  'plain',
  'nq<nk causal',
  'nq>nk causal',
  'gqa',
  'window causal',
  'varlen',
  'sparse',
];

interface Hooked {
  normalize?: 'softmax' | 'sigmoid';
  sinks?: boolean;
  bias?: number;
  mods?: (hq: number, bias: () => Tensor) => ScoreMod[];
  mask?: MaskKind;
}

const VARIANTS: Record<string, Hooked> = {
  softmax: {},
  sinks: { sinks: true },
  sigmoid: { normalize: 'sigmoid' },
  'sigmoid bias': { normalize: 'sigmoid', bias: 0.7 },
  softcap: { mods: () => [softcap(1.5)] },
  alibi: { mods: (hq) => [alibi(alibiSlopes(hq))] },
  bias: { mods: (_, bias) => [scoreBias(bias())] },
  'softcap+alibi': { mods: (hq) => [softcap(2), alibi(alibiSlopes(hq))] },
  custom: { mods: () => [WIGGLE] },
  'sigmoid+softcap+bias': {
    normalize: 'sigmoid',
    mods: (_, bias) => [softcap(3), scoreBias(bias())],
  },
  'sigmoid+custom': { normalize: 'sigmoid', bias: -1, mods: () => [WIGGLE] },
  'sinks+custom+softcap': { sinks: true, mods: () => [WIGGLE, softcap(4)] },
  'mask prefix-lm': { mask: 'prefix-lm' },
  'mask document+bias': { mask: 'document', mods: (_, bias) => [scoreBias(bias())] },
  'mask per-head+alibi': { mask: 'per-head', mods: (hq) => [alibi(alibiSlopes(hq))] },
  'mask per-head+sinks': { mask: 'per-head', sinks: true },
  'mask per-batch sigmoid': { mask: 'per-batch', normalize: 'sigmoid' },
};

interface Case {
  name: string;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  dO: Tensor;
  attn: AttentionOptions;
  hooked: Hooked;
  sinks: Float32Array | undefined;
  mods: ScoreMod[];
  tiles: WebGpuTileOptions['tiles'];
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(0, xs.length)]!;
}

/** Fresh random inputs of a small problem of `shape` with the hooks of `variant`. */
function makeCase(rng: Rng, shape: Shape, variant: string, dtype: 'f32' | 'f16' | 'bf16'): Case {
  const hooked = VARIANTS[variant]!;
  const hkv = pick(rng, [1, 2]);
  const hq = hkv * (shape === 'gqa' ? pick(rng, [2, 3]) : pick(rng, [1, 2]));
  const batch = rng.int(1, 3);
  // Head dims that are not multiples of 4 take the scalar load / store paths.
  const d = pick(rng, [6, 8, 16, 24, 40]);
  const dv = rng.uniform() < 0.3 ? pick(rng, [10, 16]) : d;
  let nq = rng.int(1, 50);
  let nk = rng.int(1, 50);
  const attn: AttentionOptions = { scale: (rng.uniform() * 2 + 0.5) / Math.sqrt(d) };
  if (shape === 'plain') nk = nq;
  if (shape === 'nq<nk causal') nk = nq + rng.int(1, 20);
  if (shape === 'nq>nk causal') nq = nk + rng.int(1, 20);
  if (shape.endsWith('causal') || shape === 'gqa') attn.causal = true;
  if (shape === 'window causal') attn.window = [rng.int(0, 15), pick(rng, [-1, 0, 3])];
  let q: Tensor;
  let k: Tensor;
  let v: Tensor;
  let dO: Tensor;
  let maxQ = nq;
  let maxK = nk;
  let batches = batch;
  if (shape === 'varlen') {
    // The middle sequence is empty: its rows exist nowhere and nothing breaks.
    const lensQ = [rng.int(1, 30), 0, rng.int(1, 30)];
    const lensK = [rng.int(1, 30), 0, rng.int(1, 30)];
    const cu = (lens: number[]) => {
      const out = [0];
      for (const n of lens) out.push(out[out.length - 1]! + n);
      return out;
    };
    attn.layout = 'THD';
    attn.cuSeqlensQ = cu(lensQ);
    attn.cuSeqlensK = cu(lensK);
    maxQ = Math.max(...lensQ);
    maxK = Math.max(...lensK);
    batches = 3;
    q = rng.randn([attn.cuSeqlensQ[3]!, hq, d], dtype);
    k = rng.randn([attn.cuSeqlensK[3]!, hkv, d], dtype);
    v = rng.randn([attn.cuSeqlensK[3]!, hkv, dv], dtype);
    dO = rng.randn([attn.cuSeqlensQ[3]!, hq, dv], dtype);
  } else {
    q = rng.randn([batch, hq, nq, d], dtype);
    k = rng.randn([batch, hkv, nk, d], dtype);
    v = rng.randn([batch, hkv, nk, dv], dtype);
    dO = rng.randn([batch, hq, nq, dv], dtype);
  }
  if (hooked.mask) attn.maskMod = maskMod(hooked.mask, rng);
  else if (shape === 'sparse') {
    const [blockQ, blockK] = [pick(rng, [8, 12]), pick(rng, [8, 10])];
    const mshape = [hq, Math.ceil(nq / blockQ), Math.ceil(nk / blockK)];
    const n = mshape.reduce((a, x) => a * x, 1);
    const mask = Uint8Array.from({ length: n }, () => (rng.uniform() < 0.6 ? 1 : 0));
    attn.blockSparse = { blockQ, blockK, mask: Tensor.from(mask, mshape) };
  }
  const bias = () =>
    rng.randn(
      pick(rng, [
        [maxQ, maxK],
        [hq, maxQ, maxK],
        [batches, hq, maxQ, maxK],
      ]),
    );
  const mods = hooked.mods?.(hq, bias) ?? [];
  const sinks = hooked.sinks
    ? Float32Array.from({ length: hq }, () => (rng.uniform() - 0.3) * 4)
    : undefined;
  // Small tiles (8 x 16) beside the planner's: with mask mods they make tiles of every state.
  const small = { tx: 4, ty: 2, rv: 1, cu: 1, kc: 8, mc: 8 };
  const tiles =
    rng.uniform() < 0.4 ? { forward: small, dq: small, dkdv: { ...small, ty: 4 } } : undefined;
  const name = `${variant} | ${shape} ${dtype} q[${q.shape}] k[${k.shape}] v[${v.shape}]${tiles ? ' small tiles' : ''}`;
  return { name, q, k, v, dO, attn, hooked, sinks, mods, tiles };
}

/** Forward and backward on WebGPU against the float64 modded reference. */
async function check(ctx: WebGpuContext, c: Case, tol: number): Promise<void> {
  const { q, k, v, dO, attn, hooked } = c;
  const sigmoid = hooked.normalize === 'sigmoid';
  const ref: ModdedReferenceOptions = { ...attn, scoreMod: c.mods };
  if (sigmoid) ref.normalize = 'sigmoid';
  if (hooked.bias !== undefined) ref.bias = hooked.bias;
  if (c.sinks) ref.sinks = c.sinks;
  const fwdRef = moddedAttentionReference(q, k, v, ref);
  const bwdRef = moddedAttentionReferenceBackward(q, k, v, dO, ref);

  const [gq, gk, gv, gdo] = [q, k, v, dO].map((t) => toWebGpu(t, ctx)) as Tensor[];
  const gpuMods = c.mods.map((m) => (m.kind === 'bias' ? scoreBias(toWebGpu(m.bias, ctx)) : m));
  const p = resolveAttentionProblem(gq!, gk!, gv!, attn);
  const hooks: TiledHooks = {
    normalize: sigmoid
      ? { kind: 'sigmoid', bias: sigmoidBias(p, hooked.bias) }
      : { kind: 'softmax', sinks: c.sinks },
    scoreMods: resolveScoreMods(gpuMods, p, 'webgpu'),
  };
  const opts = { tiles: c.tiles };
  const { o, lse } = await tiledForwardWebGpu(p, hooks, gq!, gk!, gv!, opts);
  expect(o.dtype).toBe(q.dtype);
  expectClose(await o.toCpu(), fwdRef.o, tol, `${c.name} o`);
  if (sigmoid) expect(lse).toBeUndefined();
  else expectClose(await lse!.toCpu(), fwdRef.lse!, tol, `${c.name} lse`);
  const grads = await tiledBackwardWebGpu(p, hooks, gq!, gk!, gv!, o, lse, gdo!, opts);
  for (const name of ['dq', 'dk', 'dv'] as const) {
    expect(grads[name].dtype).toBe(q.dtype);
    expectClose(await grads[name].toCpu(), bwdRef[name], tol, `${c.name} ${name}`);
  }
  if (c.sinks) expectClose(await grads.dsinks!.toCpu(), bwdRef.dsinks!, tol, `${c.name} dsinks`);
  else expect(grads.dsinks).toBeUndefined();
  for (const t of [gq, gk, gv, gdo, o, lse, ...Object.values(grads)]) t?.dispose();
  for (const m of hooks.scoreMods) if (m.kind === 'bias') m.bias.dispose();
}

describe.skipIf(!ctx)('WGSL skeleton with hooks vs the float64 modded reference', () => {
  const rng = new Rng(20261202);
  const cases = Object.keys(VARIANTS).flatMap((variant, n) =>
    [0, 1, 2].map((t) => makeCase(rng, SHAPES[(3 * n + t) % SHAPES.length]!, variant, 'f32')),
  );
  test.each(cases.map((c) => [c.name, c] as const))('f32 %s', async (_, c) => {
    await check(ctx!, c, toleranceFor({ dtype: 'f32' }));
  });

  const half = new Rng(5);
  const halfCases = (['f16', 'bf16'] as const).flatMap((dtype) =>
    (
      [
        ['softcap+alibi', 'gqa'],
        ['sigmoid+softcap+bias', 'varlen'],
        ['sinks+custom+softcap', 'window causal'],
        ['mask per-head+sinks', 'nq>nk causal'],
      ] as const
    ).map(([variant, shape]) => makeCase(half, shape, variant, dtype)),
  );
  test.each(halfCases.map((c) => [c.name, c] as const))('%s', async (_, c) => {
    await check(ctx!, c, toleranceFor({ dtype: c.q.dtype as 'f16' | 'bf16' }));
  });

  test('a row the mask mod removes entirely: O = 0, LSE = -inf (or the sink), zero dQ, no NaN', async () => {
    const r = new Rng(9);
    for (const sinks of [undefined, Float32Array.of(0.5, -1)]) {
      const [q, k, v, dO] = [0, 1, 2, 3].map(() => r.randn([1, 2, 9, 8]));
      const attn = { maskMod: maskMod('per-head', r) };
      const [gq, gk, gv, gdo] = [q!, k!, v!, dO!].map((t) => toWebGpu(t, ctx!));
      const p = resolveAttentionProblem(gq!, gk!, gv!, attn);
      const hooks: TiledHooks = { normalize: { kind: 'softmax', sinks }, scoreMods: [] };
      const { o, lse } = await tiledForwardWebGpu(p, hooks, gq!, gk!, gv!);
      const grads = await tiledBackwardWebGpu(p, hooks, gq!, gk!, gv!, o, lse, gdo!);
      const [O, L, dQ] = await Promise.all(
        [o, lse!, grads.dq].map(async (t) => (await t.toCpu()).toFloat32Array()),
      );
      for (let h = 0; h < 2; h++) {
        const row = 2 + 9 * h;
        expect(Array.from(O!.subarray(row * 8, row * 8 + 8))).toEqual(new Array(8).fill(0));
        expect(Array.from(dQ!.subarray(row * 8, row * 8 + 8))).toEqual(new Array(8).fill(0));
        expect(L![row]).toBeCloseTo(sinks ? sinks[h]! : Number.NEGATIVE_INFINITY, 5);
      }
      for (const x of [...O!, ...dQ!]) expect(Number.isFinite(x)).toBe(true);
      for (const t of [gq, gk, gv, gdo, o, lse, ...Object.values(grads)]) t?.dispose();
    }
  });

  test('typed errors and webGpuSupports', async () => {
    const r = new Rng(3);
    const [q, k, v] = [0, 1, 2].map(() => toWebGpu(r.randn([1, 2, 8, 8]), ctx!));
    const p = resolveAttentionProblem(q!, k!, v!);
    const noWgsl: ScoreMod = { kind: 'custom', name: 'f', ts: (s) => s };
    const noGrad: ScoreMod = { ...WIGGLE, wgslGrad: undefined };
    const hooksOf = (mods: ScoreMod[]): TiledHooks => ({
      normalize: { kind: 'softmax' },
      scoreMods: resolveScoreMods(mods, p, 'webgpu'),
    });
    expect(webGpuSupports(SOFTMAX_HOOKS, undefined, 'backward')).toBe(true);
    expect(webGpuSupports(hooksOf([noWgsl]), undefined, 'forward')).toMatch(/no wgsl source/);
    expect(webGpuSupports(hooksOf([noGrad]), undefined, 'forward')).toBe(true);
    expect(webGpuSupports(hooksOf([noGrad]), undefined, 'backward')).toMatch(/no wgslGrad/);
    expect(webGpuSupports(SOFTMAX_HOOKS, { wgsl: undefined }, 'forward')).toMatch(/mask mod/);
    await expect(tiledForwardWebGpu(p, hooksOf([noWgsl]), q!, k!, v!)).rejects.toThrow(
      expect.objectContaining({ argument: 'scoreMod.wgsl' }),
    );
    const fwd = await tiledForwardWebGpu(p, hooksOf([noGrad]), q!, k!, v!);
    await expect(
      tiledBackwardWebGpu(p, hooksOf([softcap(2), noGrad]), q!, k!, v!, fwd.o, fwd.lse, fwd.o),
    ).rejects.toThrow(expect.objectContaining({ argument: 'scoreMod[1].wgslGrad' }));
    await expect(
      tiledBackwardWebGpu(p, SOFTMAX_HOOKS, q!, k!, v!, undefined, fwd.lse, fwd.o),
    ).rejects.toThrow(expect.objectContaining({ argument: 'o' }));
    const cpuBias = resolveScoreMods(scoreBias(r.randn([8, 8])), p, 'cpu');
    await expect(
      tiledForwardWebGpu(p, { normalize: { kind: 'softmax' }, scoreMods: cpuBias }, q!, k!, v!),
    ).rejects.toThrow(DeviceError);
    const sig: TiledHooks = {
      normalize: { kind: 'sigmoid', bias: new Float32Array(3) },
      scoreMods: [],
    };
    await expect(tiledForwardWebGpu(p, sig, q!, k!, v!)).rejects.toThrow(ValueError);
    const sinks: TiledHooks = {
      normalize: { kind: 'softmax', sinks: new Float32Array(1) },
      scoreMods: [],
    };
    await expect(tiledForwardWebGpu(p, sinks, q!, k!, v!)).rejects.toThrow(
      expect.objectContaining({ argument: 'sinks' }),
    );
    await expect(
      tiledForwardWebGpu(p, SOFTMAX_HOOKS, q!, k!, v!, { algorithm: 'fa1' }),
    ).rejects.toThrow(/"fa2" only/);
    for (const t of [q, k, v, fwd.o, fwd.lse]) t?.dispose();
  });
});
