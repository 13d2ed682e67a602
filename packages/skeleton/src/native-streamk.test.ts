import {
  moddedAttentionReference,
  registeredKernels,
  resolveAttentionProblem,
} from '@attnkit/attention';
import { loadNative } from '@attnkit/native';
import { Rng, ValueError } from '@attnkit/tensor';
import { expectClose, poisonAllocations } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { planDecodePartition } from './cpu/partition.js';
import { defineTiledFamily } from './family.js';
import { sigmoidBias, type TiledHooks } from './hooks.js';
import { loadNativeBackend, tiledForwardNative } from './native.js';

/**
 * The native bridge of the 'streamK' schedule (native.ts: hooks.schedule -> problem.streamK;
 * the family layer's streamKWorkers reaching the native backend): the engine's C++ planner
 * (NativeEngine.planStreamK, what its forward runs) equals planDecodePartition on equal
 * inputs, and the native stream-K forward equals the float64 reference and the ts stream-K
 * forward, with NaN-poisoned outputs. The engine's own grid (every ISA, decode shapes, varlen,
 * sinks, sigmoid, typed errors) is packages/native/src/streamk.test.ts.
 */
const available = await loadNativeBackend();
const engine = available === true ? loadNative() : undefined;

describe.runIf(engine)('native stream-K', () => {
  test('the C++ planner equals planDecodePartition (random units and workers)', () => {
    const rng = new Rng(4242);
    for (let trial = 0; trial < 300; trial++) {
      const units = Array.from({ length: rng.int(0, 16) }, () => ({
        tiles: rng.uniform() < 0.2 ? 0 : rng.int(1, 60),
      }));
      const total = units.reduce((a, u) => a + u.tiles, 0);
      const workers = rng.uniform() < 0.2 ? total + rng.int(1, 10) : rng.int(1, Math.max(2, total));
      const want = planDecodePartition({ kind: 'streamK', units, workers });
      const got = engine!.planStreamK(
        Float64Array.from(units, (u) => u.tiles),
        workers,
      );
      const asPlan = Array.from({ length: workers }, (_, w) => {
        const out = [];
        for (let k = got.workerStart[w]!; k < got.workerStart[w + 1]!; k++)
          out.push({
            unit: got.pieces[3 * k]!,
            begin: got.pieces[3 * k + 1]!,
            end: got.pieces[3 * k + 2]!,
          });
        return out;
      });
      expect(
        asPlan,
        `units ${JSON.stringify(units.map((u) => u.tiles))} workers ${workers}`,
      ).toEqual(want);
    }
  });

  test('tiledForwardNative with schedule streamK equals the reference and ts, outputs poisoned', async () => {
    const rng = new Rng(31);
    const acct = poisonAllocations();
    try {
      for (const [nq, nk, sigmoid] of [
        [1, 2999, false],
        [16, 1023, true],
        [5, 333, false],
      ] as const) {
        const q = rng.randn([2, 8, nq, 32]);
        const k = rng.randn([2, 2, nk, 32]);
        const v = rng.randn([2, 2, nk, 32]);
        const p = resolveAttentionProblem(q, k, v, { causal: true });
        const hooks: TiledHooks = {
          normalize: sigmoid ? { kind: 'sigmoid', bias: sigmoidBias(p) } : { kind: 'softmax' },
          scoreMods: [],
        };
        const ref = moddedAttentionReference(q, k, v, {
          causal: true,
          ...(sigmoid ? { normalize: 'sigmoid' as const } : {}),
        });
        for (const workers of [1, 3, 7, 64, 100000]) {
          const got = await tiledForwardNative(
            p,
            { ...hooks, schedule: { kind: 'streamK', workers } },
            q,
            k,
            v,
            {
              blockK: 32,
            },
          );
          expectClose(got.o, ref.o, 1e-5, `nq ${nq} workers ${workers} o`);
          if (sigmoid) expect(got.lse).toBeUndefined();
          else expectClose(got.lse!, ref.lse!, 1e-5, `nq ${nq} workers ${workers} lse`);
        }
      }
    } finally {
      acct.restore();
    }
  });

  test('an invalid schedule.workers is a ValueError naming it', async () => {
    const rng = new Rng(3);
    const q = rng.randn([1, 1, 2, 8]);
    const p = resolveAttentionProblem(q, q, q);
    for (const workers of [0, 1.5]) {
      const run = tiledForwardNative(
        p,
        { normalize: { kind: 'softmax' }, scoreMods: [], schedule: { kind: 'streamK', workers } },
        q,
        q,
        q,
      );
      await expect(run).rejects.toThrow(ValueError);
      await expect(run).rejects.toThrow(expect.objectContaining({ argument: 'schedule.workers' }));
    }
  });

  test('streamKWorkers with backend native: taken for the forward, equals the reference', async () => {
    const family = defineTiledFamily({
      family: 'native-streamk-test',
      normalize: () => ({ kind: 'softmax' }),
      extraOptions: [],
      forwardOutputs: ['o', 'lse'],
    });
    const reg = registeredKernels({ family: 'native-streamk-test' }).find(
      (r) => r.backend === 'native' && r.pass === 'forward',
    )!;
    const ask = (options: Record<string, unknown>) =>
      reg.supports({
        family: 'native-streamk-test',
        pass: 'forward',
        device: 'cpu',
        dtype: 'f32',
        options,
      });
    expect(ask({ streamKWorkers: 4 })).toBe(true);
    const rng = new Rng(8);
    const q = rng.randn([1, 8, 3, 16]);
    const k = rng.randn([1, 2, 777, 16]);
    const v = rng.randn([1, 2, 777, 16]);
    const ref = moddedAttentionReference(q, k, v, { causal: true });
    const got = await family.forward(q, k, v, {
      causal: true,
      streamKWorkers: 5,
      backend: 'native',
    });
    expectClose(got.o, ref.o, 1e-5, 'o');
    expectClose(got.lse!, ref.lse!, 1e-5, 'lse');
  });
});
