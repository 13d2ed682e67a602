import {
  type AttentionOptions,
  moddedAttentionReference,
  resolveAttentionProblem,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
} from '@attnkit/attention';
import type { Tensor } from '@attnkit/tensor';
import { expectSamePattern, type Poison, poisonedInputs } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { SOFTMAX_HOOKS, sigmoidBias, type TiledHooks } from '../hooks.js';
import { tiledBackwardTs, tiledForwardTs } from './run.js';

/**
 * Non-finite inputs (issue 9 item 1): the TS kernels give the same NaN / +-Inf pattern per
 * element of O and LSE as the float64 reference, and the same values (relL2) on the finite
 * elements. A NaN score (or a +Inf one, whose exp(inf - inf) is NaN) poisons its row; a row
 * with no allowed key is O = 0, LSE = -inf; a NaN in V reaches exactly the rows that attend it.
 */

const B = 1 as const;
const N = 13;
const H = 2;
const D = 8;

const CASES: [string, Poison][] = [
  ['NaN in one q row', { t: 'q', row: 5, head: 0, col: 3, x: Number.NaN }],
  ['NaN in one k row', { t: 'k', row: 7, head: 1, col: 2, x: Number.NaN }],
  ['+Inf in a k row', { t: 'k', row: 7, head: 0, col: 2, x: Number.POSITIVE_INFINITY }],
  ['-Inf in a q element', { t: 'q', row: 4, head: 1, col: 0, x: Number.NEGATIVE_INFINITY }],
  ['NaN in v', { t: 'v', row: 6, head: 0, col: 1, x: Number.NaN }],
];

function countNaN(t: Tensor): number {
  let n = 0;
  for (const x of t.toFloat64Array()) if (Number.isNaN(x)) n++;
  return n;
}

describe.each([false, true])('non-finite inputs, causal %s', (causal) => {
  const attn: AttentionOptions = { causal };
  test.each(CASES)('softmax: %s', (_name, poison) => {
    const { q, k, v } = poisonedInputs(11, [B, H, N, D], poison);
    const p = resolveAttentionProblem(q, k, v, attn);
    // softmaxAttentionReference (moddedAttentionReference gives O = 0, LSE = -inf for a row
    // whose scores are all NaN: its max stays -inf and it returns before the exps).
    const ref = softmaxAttentionReference(q, k, v, attn);
    expect(countNaN(ref.o)).toBeGreaterThan(0);
    const runs: [string, TiledHooks, 'fa1' | 'fa2'][] = [
      ['fa2 band', SOFTMAX_HOOKS, 'fa2'],
      ['fa2 splitK', { ...SOFTMAX_HOOKS, schedule: { kind: 'splitK', splits: 2 } }, 'fa2'],
      ['fa1', SOFTMAX_HOOKS, 'fa1'],
    ];
    for (const [name, hooks, algorithm] of runs) {
      const { o, lse } = tiledForwardTs(p, hooks, q, k, v, { blockQ: 4, blockK: 5, algorithm });
      expectSamePattern(o, ref.o, 1e-5, `${name} o`);
      expectSamePattern(lse!, ref.lse, 1e-5, `${name} lse`);
    }
  });

  test.each(CASES)('sigmoid: %s', (_name, poison) => {
    const { q, k, v } = poisonedInputs(12, [B, H, N, D], poison);
    const p = resolveAttentionProblem(q, k, v, attn);
    const ref = moddedAttentionReference(q, k, v, { ...attn, normalize: 'sigmoid' });
    const hooks: TiledHooks = {
      normalize: { kind: 'sigmoid', bias: sigmoidBias(p) },
      scoreMods: [],
    };
    for (const schedule of [undefined, { kind: 'splitK' as const, splits: 2 }]) {
      const { o } = tiledForwardTs(p, { ...hooks, schedule }, q, k, v, { blockQ: 4, blockK: 5 });
      expectSamePattern(o, ref.o, 1e-5, 'sigmoid o');
    }
  });

  test.each(CASES)(
    'softmax backward: no finite value where the reference is NaN (%s)',
    (_n, poison) => {
      const { q, k, v, dO } = poisonedInputs(13, [B, H, N, D], poison);
      const p = resolveAttentionProblem(q, k, v, attn);
      const ref = softmaxAttentionReferenceBackward(q, k, v, dO, attn);
      const { o, lse } = tiledForwardTs(p, SOFTMAX_HOOKS, q, k, v, { blockQ: 4, blockK: 5 });
      const got = tiledBackwardTs(p, SOFTMAX_HOOKS, q, k, v, o, lse, dO, { blockQ: 4, blockK: 5 });
      for (const name of ['dq', 'dk', 'dv'] as const) {
        const a = got[name].toFloat32Array();
        const b = ref[name].toFloat64Array();
        for (let i = 0; i < a.length; i++) {
          if (Number.isNaN(b[i]!) && Number.isFinite(a[i]!)) {
            throw new Error(`${name}[${i}]: finite ${a[i]} where the reference is NaN`);
          }
        }
      }
    },
  );
});
