import {
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
  resolveAttentionProblem,
  toleranceFor,
} from '@attnkit/attention';
import { BackendUnavailableError, Rng, type Tensor, ValueError } from '@attnkit/tensor';
import { expectClose } from '@attnkit/testing';
import { afterEach, describe, expect, test } from 'vitest';
import { setAllocHook } from './cpu/alloc.js';
import type { TiledHooks } from './hooks.js';
import { hstuRabTimes, hstuTimeThresholds } from './hstu-rab.js';
import {
  loadNativeBackend,
  setNativeImporter,
  tiledBackwardNative,
  tiledForwardNative,
} from './native.js';

/**
 * The native bridge of HSTU's bucketed rab hook (native.ts: hooks.rab -> problem.hstuRab, the
 * tables' gradients allocated through allocF32 and returned as dPositionTable /
 * dTimestampTable): a hand-built hook against the float64 reference, every output poisoned
 * with NaN at allocation (so each element must be written), per-head and shared tables, with an
 * HSTU mask; permuted tiles are refused with a ValueError naming `permute`. The engine's own
 * grid (every ISA, cached queries, typed errors) is packages/native/src/hstu-rab.test.ts.
 */
const available = await loadNativeBackend();

afterEach(() => {
  setAllocHook(undefined);
  setNativeImporter();
});

const rng = new Rng(97);
const lens = [14, 0, 23, 9];
const cu = Int32Array.of(0, 14, 14, 37, 46);
const L = 46;
const H = 2;
const N = 23;
const q = rng.randn([L, H, 16]);
const k = rng.randn([L, H, 16]);
const v = rng.randn([L, H, 8]);
const dO = rng.randn([L, H, 8]);
const stamps: number[] = [];
for (let b = 0, t = 1_700_000_000; b < lens.length; b++)
  for (let x = 0; x < lens[b]!; x++) stamps.push((t += Math.floor(Math.exp(rng.uniform() * 16))));

function hooksOf(
  positionTable: Tensor,
  timestampTable: Tensor,
  mask: TiledHooks['mask'],
): TiledHooks {
  return {
    normalize: { kind: 'silu', factor: 1 / N },
    scoreMods: [],
    mask,
    rab: {
      kind: 'hstuRab',
      positionTable,
      timestampTable,
      ...hstuRabTimes(cu, stamps),
      thresholds: hstuTimeThresholds(timestampTable.shape[1]!),
      grad: true,
    },
  };
}

describe.runIf(available === true)('HstuRabHook on the native backend (native.ts)', () => {
  const cases = [
    { name: 'per-head tables', rows: H, mask: undefined },
    {
      name: 'shared tables, HSTU mask (targets, window)',
      rows: 1,
      mask: {
        kind: 'hstu' as const,
        numTargets: Int32Array.of(3, 0, 4, 2),
        contextual: 0,
        maxAttnLen: 6,
        minFull: 1,
        causal: true,
      },
    },
  ];
  for (const c of cases) {
    test(`${c.name}: o and every gradient vs the reference, outputs poisoned`, async () => {
      const positionTable = rng.randn([c.rows, 2 * N - 1]);
      const timestampTable = rng.randn([c.rows, 30]);
      const hooks = hooksOf(positionTable, timestampTable, c.mask);
      const p = resolveAttentionProblem(q, k, v, {
        layout: 'THD',
        cuSeqlensQ: cu,
        cuSeqlensK: cu,
        scale: 0.35,
        causal: true,
      });
      const outputs: string[] = [];
      setAllocHook((a, kind) => {
        if (kind === 'output' && a instanceof Float32Array) {
          a.fill(Number.NaN);
          outputs.push(String(a.length));
        }
      });
      const options = {
        seqOffsets: cu,
        maxSeqLen: N,
        alpha: 0.35,
        bucketedRab: { positionTable, timestampTable, timestamps: stamps },
        ...(c.mask
          ? {
              numTargets: c.mask.numTargets,
              maxAttnLen: c.mask.maxAttnLen,
              minFullAttnSeqLen: c.mask.minFull,
            }
          : {}),
      };
      const tol = toleranceFor({ maxSeqLen: N });
      const { o } = await tiledForwardNative(p, hooks, q, k, v);
      expectClose(o, hstuAttentionReference(q, k, v, options).o, tol, 'o');
      const g = await tiledBackwardNative(p, hooks, q, k, v, undefined, undefined, dO);
      const r = hstuAttentionReferenceBackward(q, k, v, dO, options);
      expectClose(g.dq, r.dq, tol, 'dq');
      expectClose(g.dk, r.dk, tol, 'dk');
      expectClose(g.dv, r.dv, tol, 'dv');
      expect(g.dPositionTable!.shape).toEqual(positionTable.shape);
      expect(g.dTimestampTable!.shape).toEqual(timestampTable.shape);
      expectClose(g.dPositionTable!, r.dPositionTable!, tol, 'dPositionTable');
      expectClose(g.dTimestampTable!, r.dTimestampTable!, tol, 'dTimestampTable');
      // The tables' gradients came through allocF32 (poisoned, then written by the engine).
      expect(outputs).toContain(String(positionTable.size));
      expect(outputs).toContain(String(timestampTable.size));
    });
  }

  test('without grad no table gradient is returned', async () => {
    const hooks = hooksOf(rng.randn([H, 2 * N - 1]), rng.randn([1, 30]), undefined);
    hooks.rab = { ...hooks.rab!, grad: false };
    const p = resolveAttentionProblem(q, k, v, {
      layout: 'THD',
      cuSeqlensQ: cu,
      cuSeqlensK: cu,
      scale: 0.35,
      causal: true,
    });
    const g = await tiledBackwardNative(p, hooks, q, k, v, undefined, undefined, dO);
    expect(g.dPositionTable).toBeUndefined();
    expect(g.dTimestampTable).toBeUndefined();
  });

  test('permuted tiles are refused (a ValueError naming permute)', async () => {
    const hooks = hooksOf(rng.randn([H, 2 * N - 1]), rng.randn([H, 30]), undefined);
    hooks.permute = { q: new Int32Array(H * L) };
    const p = resolveAttentionProblem(q, k, v, {
      layout: 'THD',
      cuSeqlensQ: cu,
      cuSeqlensK: cu,
      scale: 0.35,
      causal: true,
    });
    const e = await tiledForwardNative(p, hooks, q, k, v).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ValueError);
    expect((e as ValueError).argument).toBe('permute');
    expect((e as Error).message).toMatch(
      /^permute: expected no permuted tiles with HSTU's bucketed rab/,
    );
  });

  test('an addon that predates the hook is refused, not run without the rab', async () => {
    const real = await import('@attnkit/native');
    const engine = real.loadNative()!;
    // The engine of an older build: the same ops, without the rab's backward outputs.
    const stale = {
      ...engine,
      ops: () => {
        const ops = engine.ops();
        const bwd = ops['attention.backward'];
        return {
          ...ops,
          'attention.backward': {
            ...bwd,
            outputs: bwd.outputs.filter((x) => !x.startsWith('dP') && !x.startsWith('dT')),
          },
        };
      },
    };
    setNativeImporter(async () => ({ ...real, loadNative: () => stale }));
    const hooks = hooksOf(rng.randn([H, 2 * N - 1]), rng.randn([H, 30]), undefined);
    const p = resolveAttentionProblem(q, k, v, {
      layout: 'THD',
      cuSeqlensQ: cu,
      cuSeqlensK: cu,
      scale: 0.35,
      causal: true,
    });
    const e = await tiledForwardNative(p, hooks, q, k, v).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BackendUnavailableError);
    expect((e as Error).message).toMatch(/predates it; rebuild it/);
  });
});
