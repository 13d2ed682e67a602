import {
  hstuAllowed,
  resolveAttentionProblem,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
} from '@attnkit/attention';
import { Rng } from '@attnkit/tensor';
import { expectClose } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { type HstuMaskHook, hstuMaskAllowed, SOFTMAX_HOOKS, type TiledHooks } from '../hooks.js';
import { tiledBackwardTs, tiledForwardTs } from './run.js';

/**
 * The built-in HSTU mask hook (hooks.ts HstuMaskHook): its element rule is the reference's
 * `hstuAllowed`, and the TS kernels (FA1 and FA2 forward, backward) apply it on every tile the
 * band visits. The hstu family's conformance grid checks it under silu; here it runs under
 * softmax (FA1 runs softmax only) against the float64 reference with the same rule as a mask mod.
 */
describe('hstu mask hook', () => {
  test('hstuMaskAllowed is hstuAllowed (every small case)', () => {
    let n = 0;
    for (const causal of [true, false]) {
      for (let len = 0; len <= 9; len++) {
        for (let t = 0; t <= len; t++) {
          for (let c = 0; c <= 3; c++) {
            for (let m = 0; m <= 3; m++) {
              for (let f = 0; f <= 2; f++) {
                const mask: HstuMaskHook = {
                  kind: 'hstu',
                  numTargets: Int32Array.of(7, t),
                  contextual: c,
                  maxAttnLen: m,
                  minFull: f,
                  causal,
                };
                const rule = {
                  causal,
                  numTargets: t,
                  contextualSeqLen: c,
                  maxAttnLen: m,
                  minFullAttnSeqLen: f,
                };
                for (let i = 0; i < len; i++) {
                  for (let j = 0; j < len; j++) {
                    expect(hstuMaskAllowed(mask, 1, i, j, len)).toBe(hstuAllowed(i, j, len, rule));
                    n++;
                  }
                }
              }
            }
          }
        }
      }
    }
    expect(n).toBeGreaterThan(10000);
  });

  const rng = new Rng(11);
  const lens = [13, 0, 29, 7];
  const cu = new Int32Array(lens.length + 1);
  for (let b = 0; b < lens.length; b++) cu[b + 1] = cu[b]! + lens[b]!;
  const L = cu[lens.length]!;
  const q = rng.randn([L, 2, 16]);
  const k = rng.randn([L, 2, 16]);
  const v = rng.randn([L, 2, 8]);
  const dO = rng.randn([L, 2, 8]);
  const mask: HstuMaskHook = {
    kind: 'hstu',
    numTargets: Int32Array.of(4, 0, 29, 2),
    contextual: 2,
    maxAttnLen: 3,
    minFull: 1,
    causal: true,
  };
  const base = { layout: 'THD' as const, cuSeqlensQ: cu, cuSeqlensK: cu, scale: 0.3 };
  // The contextual prefix sees later tokens: the band is the whole sequence (as the family passes it).
  const p = resolveAttentionProblem(q, k, v, { ...base, causal: false });
  const hooks: TiledHooks = { ...SOFTMAX_HOOKS, mask };
  const asMod = {
    ...base,
    maskMod: {
      name: 'hstu',
      ts: (b: number, _h: number, i: number, j: number) => hstuMaskAllowed(mask, b, i, j, lens[b]!),
      blockSize: 1,
      perBatch: true,
    },
  };
  const ref = softmaxAttentionReference(q, k, v, asMod);

  for (const algorithm of ['fa1', 'fa2'] as const) {
    test(`softmax forward (${algorithm}, odd tiles) equals the reference with the rule as a mask mod`, () => {
      const { o, lse } = tiledForwardTs(p, hooks, q, k, v, { algorithm, blockQ: 5, blockK: 7 });
      expectClose(o, ref.o, 1e-5, `o ${algorithm}`);
      expectClose(lse!, ref.lse, 1e-5, `lse ${algorithm}`);
    });
  }

  test('softmax backward (odd tiles) equals the reference', () => {
    const { o, lse } = tiledForwardTs(p, hooks, q, k, v);
    const g = tiledBackwardTs(p, hooks, q, k, v, o, lse, dO, { blockQ: 6, blockK: 5 });
    const r = softmaxAttentionReferenceBackward(q, k, v, dO, asMod);
    expectClose(g.dq, r.dq, 1e-5, 'dq');
    expectClose(g.dk, r.dk, 1e-5, 'dk');
    expectClose(g.dv, r.dv, 1e-5, 'dv');
  });
});
