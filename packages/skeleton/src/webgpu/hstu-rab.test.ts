import {
  type HstuBucketedRab,
  type HstuOptions,
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
  resolveAttentionProblem,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import type { HstuMaskHook, TiledHooks } from '../hooks.js';
import { type HstuRabHook, hstuRabTimes, hstuTimeThresholds } from '../hstu-rab.js';
import { hookResources, type WgslHooks } from './hooks.js';
import { tiledBackwardWebGpu, tiledForwardWebGpu } from './host.js';
import { planWebGpuFlash } from './plan.js';
import { dkdvShader, dqShader, forwardShader } from './shaders.js';

// Fails here when no adapter can be had (Dawn on Mesa llvmpipe in CI), unless
// ATTNKIT_ALLOW_NO_WEBGPU=1 declares a machine without WebGPU. Outputs start as NaN.
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

/**
 * HSTU's bucketed rab hook (HstuRabHook) on the WGSL kernels, built by hand as the family layer
 * builds it, against the float64 reference with `bucketedRab` (the same tables and timestamps):
 * forward o, backward dq / dk / dv and the tables' gradients, under the silu normalisation with
 * and without the HSTU mask hook, per-head and shared tables, cpu and webgpu tables, f32 and
 * packed f16, odd lengths and an empty sequence, and M-FALCON's Nq < Nk.
 */
interface Case {
  name: string;
  lens: number[];
  /** Queries per sequence (its last tokens; M-FALCON) — absent: every token. */
  delta?: number[];
  heads: number;
  d: number;
  dv: number;
  dtype: 'f32' | 'f16';
  /** Table rows: 'head' (one per head) or 'shared' (one row). */
  pos?: 'head' | 'shared';
  time?: 'head' | 'shared';
  numPos?: number;
  numTime?: number;
  bucketFn?: 'log' | 'sqrt';
  /** Timestamp gaps drawn from [0, gap). */
  gap?: number;
  mask?: Omit<HstuMaskHook, 'kind' | 'numTargets'> & { numTargets: number[] };
  /** Tables uploaded to the device (the family passes them there), else left on the cpu. */
  deviceTables?: boolean;
  /** Also run the split-K forward with this many splits. */
  splitK?: number;
}

const CASES: Case[] = [
  {
    name: 'f32 per-head tables, HSTU mask (targets, context, window), odd lengths, an empty sequence',
    lens: [13, 0, 29, 7],
    heads: 2,
    d: 16,
    dv: 8,
    dtype: 'f32',
    pos: 'head',
    time: 'head',
    numTime: 40,
    mask: { numTargets: [4, 0, 3, 2], contextual: 2, maxAttnLen: 9, minFull: 1, causal: true },
    deviceTables: true,
    splitK: 3,
  },
  {
    name: 'f32 shared tables on the cpu, causal (no mask hook), clamped position table',
    lens: [37, 5, 70],
    heads: 3,
    d: 12,
    dv: 20,
    dtype: 'f32',
    pos: 'shared',
    time: 'shared',
    numPos: 31,
    numTime: 73,
    gap: 4000,
  },
  {
    name: 'f32 position table only, non-causal mask',
    lens: [19, 33],
    heads: 2,
    d: 8,
    dv: 8,
    dtype: 'f32',
    pos: 'head',
    mask: { numTargets: [3, 5], contextual: 0, maxAttnLen: 0, minFull: 0, causal: false },
    deviceTables: true,
  },
  {
    name: 'f32 time table only (sqrt buckets past the workgroup slots), per-head',
    lens: [41, 23],
    heads: 2,
    d: 16,
    dv: 16,
    dtype: 'f32',
    time: 'head',
    numTime: 300,
    bucketFn: 'sqrt',
    gap: 3000,
    deviceTables: true,
  },
  {
    name: 'packed f16, per-head position and shared time table, HSTU mask',
    lens: [26, 0, 45],
    heads: 2,
    d: 16,
    dv: 12,
    dtype: 'f16',
    pos: 'head',
    time: 'shared',
    mask: { numTargets: [5, 0, 6], contextual: 0, maxAttnLen: 7, minFull: 2, causal: true },
    // Small gaps: the low time buckets.
    gap: 40,
    deviceTables: true,
  },
  {
    name: 'M-FALCON Nq < Nk (cached candidates as targets), per-head tables',
    lens: [31, 18, 0, 9],
    delta: [5, 18, 0, 3],
    heads: 2,
    d: 16,
    dv: 8,
    dtype: 'f32',
    pos: 'head',
    time: 'head',
    mask: { numTargets: [5, 4, 0, 3], contextual: 0, maxAttnLen: 0, minFull: 0, causal: true },
    deviceTables: true,
    splitK: 2,
  },
];

function offsetsOf(lens: number[]): Int32Array {
  const out = new Int32Array(lens.length + 1);
  for (let b = 0; b < lens.length; b++) out[b + 1] = out[b]! + lens[b]!;
  return out;
}

/** Rows of x [L, H, W] at the token indices `rows`. */
function gatherRows(x: Tensor, rows: number[]): Tensor {
  const [, h, w] = x.shape as [number, number, number];
  const src = x.toFloat32Array();
  const out = new Float32Array(rows.length * h * w);
  for (const [n, r] of rows.entries()) out.set(src.subarray(r * h * w, (r + 1) * h * w), n * h * w);
  return Tensor.from(out, [rows.length, h, w]).astype(x.dtype === 'f64' ? 'f32' : x.dtype);
}

describe.skipIf(!ctx)('HSTU bucketed rab on the WGSL kernels vs the float64 reference', () => {
  const rng = new Rng(20261202);
  test.each(CASES.map((c) => [c.name, c] as const))('%s', async (_, c) => {
    const offsets = offsetsOf(c.lens);
    const L = offsets[c.lens.length]!;
    const maxSeqLen = Math.max(...c.lens, 1);
    const delta = c.delta ?? c.lens;
    const qOffsets = offsetsOf(delta);
    // Query rows: the last delta_b tokens of each sequence.
    const qRows = c.lens.flatMap((n, b) =>
      Array.from({ length: delta[b]! }, (_, r) => offsets[b]! + n - delta[b]! + r),
    );
    const H = c.heads;
    const alpha = 1 / Math.sqrt(c.d);
    const qFull = rng.randn([L, H, c.d], c.dtype);
    const k = rng.randn([L, H, c.d], c.dtype);
    const v = rng.randn([L, H, c.dv], c.dtype);
    // Rows outside the queries get dO = 0 in the full reference: they add nothing to any gradient.
    const keep = new Set(qRows);
    const dOData = rng.randn([L, H, c.dv], c.dtype).toFloat32Array();
    for (let t = 0; t < L; t++) if (!keep.has(t)) dOData.fill(0, t * H * c.dv, (t + 1) * H * c.dv);
    const dOFull = Tensor.from(dOData, [L, H, c.dv]).astype(c.dtype);
    const cached = c.delta !== undefined;
    const q = cached ? gatherRows(qFull, qRows) : qFull;
    const dO = cached ? gatherRows(dOFull, qRows) : dOFull;
    const numPos = c.numPos ?? 2 * maxSeqLen - 1;
    const numTime = c.numTime ?? 60;
    const fn = c.bucketFn ?? 'log';
    const positionTable = c.pos
      ? rng.randn([c.pos === 'head' ? H : 1, numPos], 'f32', 0.5)
      : undefined;
    const timestampTable = c.time
      ? rng.randn([c.time === 'head' ? H : 1, numTime], 'f32', 0.5)
      : undefined;
    const stamps: number[] = [];
    for (let b = 0; b < c.lens.length; b++) {
      let t = 1_700_000_000 + rng.int(0, 1000);
      for (let j = 0; j < c.lens[b]!; j++) {
        stamps.push(t);
        t += rng.int(0, c.gap ?? 200_000);
      }
    }
    const bucketed: HstuBucketedRab = {
      ...(positionTable ? { positionTable } : {}),
      ...(timestampTable ? { timestampTable, timestamps: stamps, bucketFn: fn } : {}),
    };
    const refOpts: HstuOptions = {
      seqOffsets: offsets,
      maxSeqLen,
      alpha,
      causal: c.mask?.causal ?? true,
      bucketedRab: bucketed,
      ...(c.mask
        ? {
            numTargets: c.mask.numTargets,
            contextualSeqLen: c.mask.contextual,
            maxAttnLen: c.mask.maxAttnLen,
            minFullAttnSeqLen: c.mask.minFull,
          }
        : {}),
    };
    const fwdRef = hstuAttentionReference(qFull, k, v, refOpts);
    const bwdRef = hstuAttentionReferenceBackward(qFull, k, v, dOFull, refOpts);

    const onDevice = (t: Tensor | undefined) => t && (c.deviceTables ? toWebGpu(t, ctx!) : t);
    const rab: HstuRabHook = {
      kind: 'hstuRab',
      positionTable: onDevice(positionTable),
      timestampTable: onDevice(timestampTable),
      ...(timestampTable
        ? { ...hstuRabTimes(offsets, stamps), thresholds: hstuTimeThresholds(numTime, fn) }
        : {}),
      grad: true,
    };
    const mask: HstuMaskHook | undefined = c.mask && {
      kind: 'hstu',
      ...c.mask,
      numTargets: Int32Array.from(c.mask.numTargets),
    };
    const hooks: TiledHooks = {
      normalize: { kind: 'silu', factor: 1 / maxSeqLen },
      scoreMods: [],
      rab,
      ...(mask ? { mask } : {}),
    };
    const [gq, gk, gv, gdo] = [q, k, v, dO].map((t) => toWebGpu(t, ctx!));
    const p = resolveAttentionProblem(gq!, gk!, gv!, {
      layout: 'THD',
      cuSeqlensQ: qOffsets,
      cuSeqlensK: offsets,
      scale: alpha,
      // The band contains the mask (HstuMaskHook (b)): none with a contextual prefix.
      causal: (c.mask?.causal ?? true) && !(c.mask && c.mask.contextual > 0),
    });
    const tol = toleranceFor({ dtype: c.dtype });
    const { o } = await tiledForwardWebGpu(p, hooks, gq!, gk!, gv!);
    const oRef = cached ? gatherRows(fwdRef.o, qRows) : fwdRef.o;
    expectClose(await o.toCpu(), oRef, tol, `${c.name} o`);
    if (c.splitK) {
      const schedule = { kind: 'splitK', splits: c.splitK } as const;
      const split = await tiledForwardWebGpu(p, { ...hooks, schedule }, gq!, gk!, gv!);
      expectClose(await split.o.toCpu(), oRef, tol, `${c.name} o split-K`);
      split.o.dispose();
    }
    const g = await tiledBackwardWebGpu(p, hooks, gq!, gk!, gv!, undefined, undefined, gdo!);
    const dqRef = cached ? gatherRows(bwdRef.dq, qRows) : bwdRef.dq;
    expectClose(await g.dq.toCpu(), dqRef, tol, `${c.name} dq`);
    expectClose(await g.dk.toCpu(), bwdRef.dk, tol, `${c.name} dk`);
    expectClose(await g.dv.toCpu(), bwdRef.dv, tol, `${c.name} dv`);
    if (positionTable) {
      expect(g.dPositionTable!.shape).toEqual(positionTable.shape);
      expectClose(await g.dPositionTable!.toCpu(), bwdRef.dPositionTable!, tol, 'dPositionTable');
    } else expect(g.dPositionTable).toBeUndefined();
    if (timestampTable) {
      expect(g.dTimestampTable!.shape).toEqual(timestampTable.shape);
      expectClose(
        await g.dTimestampTable!.toCpu(),
        bwdRef.dTimestampTable!,
        tol,
        'dTimestampTable',
      );
    } else expect(g.dTimestampTable).toBeUndefined();
    for (const t of [gq, gk, gv, gdo, o, ...Object.values(g)]) t?.dispose();
    if (c.deviceTables) for (const t of [rab.positionTable, rab.timestampTable]) t?.dispose();
  });

  test('without grad the backward returns no table gradients and declares no drab bindings', async () => {
    const r = new Rng(4);
    const offsets = offsetsOf([9, 6]);
    const [q, k, v, dO] = [0, 1, 2, 3].map(() => toWebGpu(r.randn([15, 1, 8]), ctx!));
    const p = resolveAttentionProblem(q!, k!, v!, {
      layout: 'THD',
      cuSeqlensQ: offsets,
      cuSeqlensK: offsets,
      causal: true,
    });
    const hooks: TiledHooks = {
      normalize: { kind: 'silu', factor: 1 / 9 },
      scoreMods: [],
      rab: { kind: 'hstuRab', positionTable: r.randn([1, 17]), grad: false },
    };
    const g = await tiledBackwardWebGpu(p, hooks, q!, k!, v!, undefined, undefined, dO!);
    expect(g.dPositionTable).toBeUndefined();
    const res = hookResources(hooks, undefined, 'backward', p);
    expect(res.hooks.rab).toEqual({ pos: true, time: false, grad: false });
    for (const t of [q, k, v, dO, ...Object.values(g)]) t?.dispose();
  });

  test('typed errors name the hook field', async () => {
    const r = new Rng(5);
    const offsets = offsetsOf([9, 6]);
    const [q, k, v] = [0, 1, 2].map(() => toWebGpu(r.randn([15, 2, 8]), ctx!));
    const p = resolveAttentionProblem(q!, k!, v!, {
      layout: 'THD',
      cuSeqlensQ: offsets,
      cuSeqlensK: offsets,
    });
    const run = (rab: Partial<HstuRabHook>) =>
      tiledForwardWebGpu(
        p,
        {
          normalize: { kind: 'silu', factor: 1 },
          scoreMods: [],
          rab: { kind: 'hstuRab', grad: false, ...rab },
        },
        q!,
        k!,
        v!,
      );
    const arg = (a: string) => expect.objectContaining({ argument: a });
    await expect(run({})).rejects.toThrow(arg('rab.positionTable'));
    await expect(run({ positionTable: r.randn([2, 8]) })).rejects.toThrow(arg('rab.positionTable'));
    await expect(run({ positionTable: r.randn([3, 9]) })).rejects.toThrow(arg('rab.positionTable'));
    await expect(run({ positionTable: r.randn([2, 9], 'f16') })).rejects.toThrow(
      arg('rab.positionTable'),
    );
    const timestampTable = r.randn([1, 10]);
    const times = hstuRabTimes(
      offsets,
      Array.from({ length: 15 }, (_, t) => 7 * t),
    );
    await expect(
      run({ timestampTable, ...times, thresholds: hstuTimeThresholds(10) }),
    ).resolves.toBeDefined();
    await expect(
      run({
        timestampTable,
        ...times,
        keyTime: new Int32Array(3),
        thresholds: hstuTimeThresholds(10),
      }),
    ).rejects.toThrow(arg('rab.keyTime'));
    await expect(
      run({ timestampTable, ...times, thresholds: hstuTimeThresholds(40) }),
    ).rejects.toThrow(arg('rab.thresholds'));
    for (const t of [q, k, v]) t?.dispose();
  });
});

describe('WGSL text of the bucketed rab hook', () => {
  const plan = (kernel: 'forward' | 'dq' | 'dkdv') =>
    planWebGpuFlash({
      kernel,
      d: 16,
      dv: 16,
      maxComputeWorkgroupStorageSize: 32768,
      maxComputeInvocationsPerWorkgroup: 256,
    });
  const wgsl = (kernel: 'forward' | 'dq' | 'dkdv', rab: WgslHooks['rab']) => {
    const hooks: WgslHooks = {
      normalize: 'silu',
      sinks: false,
      mods: [],
      maskMod: undefined,
      ...(rab ? { rab } : {}),
      bindings: [],
      uniforms: [],
    };
    const spec = {
      plan: plan(kernel),
      dtype: 'f32',
      vecD: true,
      vecV: true,
      blockSparse: false,
      hooks,
    } as const;
    const k =
      kernel === 'forward'
        ? forwardShader(spec)
        : kernel === 'dq'
          ? dqShader(spec)
          : dkdvShader(spec);
    return { code: k.code, names: k.bindings.map((b) => b.name) };
  };

  test('only the dQ pass with grad declares the gradient partials and outputs', () => {
    for (const kernel of ['forward', 'dq', 'dkdv'] as const) {
      const plain = wgsl(kernel, undefined);
      expect(plain.code).not.toMatch(/hk_rab|rabg|drab/);
      const fwd = wgsl(kernel, { pos: true, time: true, grad: false });
      expect(fwd.code).toMatch(/hk_rab\(x_0_0 \* P\.scale, h, /);
      expect(fwd.code).not.toMatch(/rabg|drab/);
      const grad = wgsl(kernel, { pos: true, time: true, grad: true });
      expect(grad.names.includes('drabp')).toBe(kernel === 'dq');
      expect(grad.names.includes('drabt')).toBe(kernel === 'dq');
      expect(/var<workgroup> rabg/.test(grad.code)).toBe(kernel === 'dq');
    }
    const posOnly = wgsl('dq', { pos: true, time: false, grad: true });
    expect(posOnly.names).toContain('drabp');
    expect(posOnly.names).not.toContain('drabt');
    expect(posOnly.code).not.toMatch(/hk_tcol|rabi|rabt/);
    const timeOnly = wgsl('dq', { pos: false, time: true, grad: true });
    expect(timeOnly.names).toEqual(expect.arrayContaining(['drabt']));
    expect(timeOnly.code).not.toMatch(/rabp|P\.rabP/);
  });
});
