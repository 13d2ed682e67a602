import { resolveAttentionProblem } from '@attnkit/attention';
import { Tensor, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import type { TiledHooks } from './hooks.js';
import { nativeAttentionProblem } from './native.js';

// nativeAttentionProblem: the engine problem a synchronous caller (@attnkit/nn) passes, built
// as the skeleton's own native backend builds it; pure (no addon needed).
describe('nativeAttentionProblem', () => {
  const t = (shape: number[]) => Tensor.zeros(shape, 'f32');
  const p = resolveAttentionProblem(t([2, 4, 3, 16]), t([2, 2, 9, 16]), t([2, 2, 9, 16]), {
    causal: true,
  });

  test('carries the normalisation, the schedule and the planned query block', () => {
    const bias = Float32Array.of(-2, -3);
    const sig = nativeAttentionProblem(p, {
      normalize: { kind: 'sigmoid', bias },
      scoreMods: [],
      schedule: { kind: 'splitK', splits: 3 },
    } as TiledHooks);
    expect(sig.normalize).toEqual({ kind: 'sigmoid', bias });
    expect(sig.splits).toBe(3);
    expect(sig.scoreMods).toEqual([]);
    expect(Number.isInteger(sig.blockQ) && sig.blockQ! > 0).toBe(true);
    expect(sig.hq).toBe(4);
    const soft = nativeAttentionProblem(p, {
      normalize: { kind: 'softmax' },
      scoreMods: [],
    } as TiledHooks);
    expect(soft.normalize).toEqual({ kind: 'softmax', sinks: undefined });
    expect(soft.splits).toBeUndefined();
  });

  test('what the engine cannot run is a ValueError naming the argument', () => {
    const custom = {
      normalize: { kind: 'softmax' },
      scoreMods: [{ kind: 'custom', name: 'mine' }],
    } as unknown as TiledHooks;
    let err: unknown;
    try {
      nativeAttentionProblem(p, custom);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ValueError);
    expect((err as ValueError).argument).toBe('scoreMod');
    expect((err as Error).message).toMatch(
      /^scoreMod: expected built-in score mods .* got custom mod "mine"/,
    );
  });
});
