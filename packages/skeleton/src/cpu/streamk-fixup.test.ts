import { accuracy, moddedAttentionReference, resolveAttentionProblem } from '@attnkit/attention';
import { Rng } from '@attnkit/tensor';
import { expectClose } from '@attnkit/testing';
import { describe, expect, test, vi } from 'vitest';
import { tiledForwardTs } from './run.js';

/**
 * The stream-K fix-up is what makes the pieces one answer: with combinePartials replaced by a
 * no-op (only the first piece of each unit reaches the output), the streamK forward must be far
 * from the float64 reference while band (one range, no merge) still matches it. Guards against
 * a fix-up that is skipped or never reached (the comparison tests would then also fail; this
 * says why). combinePartials is mocked for this file only.
 */
vi.mock('./schedule.js', async (importOriginal) => {
  const mod = await importOriginal<typeof import('./schedule.js')>();
  return { ...mod, combinePartials: vi.fn() };
});

describe('streamK without its fix-up', () => {
  test('is wrong, and band is not', () => {
    const rng = new Rng(99);
    const q = rng.randn([1, 8, 1, 16]);
    const k = rng.randn([1, 2, 203, 16]);
    const v = rng.randn([1, 2, 203, 16]);
    const p = resolveAttentionProblem(q, k, v, {});
    const hooks = { normalize: { kind: 'softmax' } as const, scoreMods: [] };
    const opts = { blockQ: 1, blockK: 16 };
    const ref = moddedAttentionReference(q, k, v, {});
    const band = tiledForwardTs(p, hooks, q, k, v, opts);
    expectClose(band.o, ref.o, 1e-5, 'band o');
    // 8 units of 13 tiles over 5 workers (ranges of 21 or 20 tiles): units 1, 3, 4 and 6 are
    // cut in two, so their outputs miss one piece without the fix-up.
    const sk = tiledForwardTs(
      p,
      { ...hooks, schedule: { kind: 'streamK', workers: 5 } },
      q,
      k,
      v,
      opts,
    );
    expect(accuracy(sk.o, ref.o).relL2).toBeGreaterThan(1e-2);
    expect(accuracy(sk.lse!, ref.lse!).relL2).toBeGreaterThan(1e-3);
  });
});
