import {
  type AttentionOptions,
  moddedAttentionReference,
  resolveAttentionProblem,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
} from '@attnkit/attention';
import { engineOrSkip, expectSamePattern, type Poison, poisonedInputs } from '@attnkit/testing';
import { describe, test } from 'vitest';
import { loadNative, type NativeAttentionProblem, type NativeEngine } from './index.js';

/**
 * Non-finite inputs (issue 9 item 1) on every ISA this CPU has: the native forward gives the
 * same NaN / +-Inf pattern per element of O and LSE as the float64 reference, and the same
 * values (relL2) on the finite elements; softmax (band and split-K) and sigmoid, causal and
 * not. A NaN score (or a +Inf one: exp(inf - inf)) poisons its row; the backward never gives a
 * finite value where the reference has NaN.
 */

const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];

const B = 1 as const;
const N = 37;
const H = 2;
const D = 8;

const CASES: [string, Poison][] = [
  ['NaN in one q row', { t: 'q', row: 5, head: 0, col: 3, x: Number.NaN }],
  ['NaN in one k row', { t: 'k', row: 20, head: 1, col: 2, x: Number.NaN }],
  ['+Inf in a k row', { t: 'k', row: 20, head: 0, col: 2, x: Number.POSITIVE_INFINITY }],
  ['-Inf in a q element', { t: 'q', row: 24, head: 1, col: 0, x: Number.NEGATIVE_INFINITY }],
  ['NaN in v', { t: 'v', row: 33, head: 0, col: 1, x: Number.NaN }],
];

const SIZE = B * H * N * D;

describe.each(engines.map((e) => [e.isa, e] as const))('non-finite inputs, %s', (_isa, e) => {
  describe.each([false, true])('causal %s', (causal) => {
    const attn: AttentionOptions = { causal };
    test.each(CASES)('softmax: %s', async (_name, poison) => {
      const { q, k, v } = poisonedInputs(21, [B, H, N, D], poison);
      const p = resolveAttentionProblem(q, k, v, attn) as unknown as NativeAttentionProblem;
      const ref = softmaxAttentionReference(q, k, v, attn);
      for (const splits of [1, 3]) {
        const o = new Float32Array(SIZE);
        const lse = new Float32Array(B * H * N);
        const problem = { ...p, blockK: 8, splits };
        await e.flashForward(
          problem,
          q.toFloat32Array(),
          k.toFloat32Array(),
          v.toFloat32Array(),
          o,
          lse,
        );
        expectSamePattern(o, ref.o, 1e-5, `splits ${splits} o`);
        expectSamePattern(lse, ref.lse, 1e-5, `splits ${splits} lse`);
      }
    });

    test.each(CASES)('sigmoid: %s', async (_name, poison) => {
      const { q, k, v } = poisonedInputs(22, [B, H, N, D], poison);
      const p = resolveAttentionProblem(q, k, v, attn) as unknown as NativeAttentionProblem;
      const ref = moddedAttentionReference(q, k, v, { ...attn, normalize: 'sigmoid' });
      const bias = Float32Array.of(-Math.log(N));
      for (const splits of [1, 3]) {
        const o = new Float32Array(SIZE);
        const problem: NativeAttentionProblem = {
          ...p,
          blockK: 8,
          splits,
          normalize: { kind: 'sigmoid', bias },
        };
        await e.flashForward(
          problem,
          q.toFloat32Array(),
          k.toFloat32Array(),
          v.toFloat32Array(),
          o,
          undefined,
        );
        expectSamePattern(o, ref.o, 1e-5, `sigmoid splits ${splits} o`);
      }
    });

    test.each(CASES)(
      'softmax backward: no finite value where the reference is NaN (%s)',
      async (_n, poison) => {
        const { q, k, v, dO } = poisonedInputs(23, [B, H, N, D], poison);
        const p = resolveAttentionProblem(q, k, v, attn) as unknown as NativeAttentionProblem;
        const ref = softmaxAttentionReferenceBackward(q, k, v, dO, attn);
        const [qa, ka, va] = [q, k, v].map((t) => t.toFloat32Array()) as [
          Float32Array,
          Float32Array,
          Float32Array,
        ];
        const o = new Float32Array(SIZE);
        const lse = new Float32Array(B * H * N);
        await e.flashForward(p, qa, ka, va, o, lse);
        const got = {
          dq: new Float32Array(SIZE),
          dk: new Float32Array(SIZE),
          dv: new Float32Array(SIZE),
        };
        await e.flashBackward(p, qa, ka, va, o, lse, dO.toFloat32Array(), got.dq, got.dk, got.dv);
        for (const name of ['dq', 'dk', 'dv'] as const) {
          const a = got[name];
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
});
