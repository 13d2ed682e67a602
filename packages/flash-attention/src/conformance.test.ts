import {
  alibiSlopes,
  type MaskMod,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  softcap,
} from '@attnkit/attention';
import { DTypeError, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { describeConformance, TILED_BAD_INPUTS, TILED_SCHEDULE_SETS } from '@attnkit/testing';
import './index.js'; // registers the softmax kernels (ts, native, webgpu)

/** A prefix-LM mask: the first 5 keys are visible to every query, then causal (TS + WGSL). */
const prefixLm: MaskMod = {
  name: 'prefix_lm',
  ts: (_b, _h, i, j) => j < 5 || j <= i,
  wgsl: 'fn prefix_lm(b: u32, h: u32, i: u32, j: u32) -> bool { return j < 5u || j <= i; }',
  blockSize: 16,
};

describeConformance({
  family: 'softmax',
  reference: {
    forward: ({ q, k, v }, o) => ({ ...moddedAttentionReference(q!, k!, v!, o) }),
    backward: ({ q, k, v, do: dO }, o) => ({
      ...moddedAttentionReferenceBackward(q!, k!, v!, dO!, o),
    }),
  },
  grid: {
    extraSets: [
      // A backend whose supports() declines an option (native and webgpu: FA2 only) skips it.
      { name: 'fa1 causal', options: { algorithm: 'fa1', causal: true } },
      { name: 'odd tiles', options: (rng) => ({ blockQ: rng.int(1, 40), blockK: rng.int(1, 40) }) },
      {
        name: 'block-sparse',
        lengths: 'square',
        options: (rng, d) => ({
          blockSparse: {
            blockQ: 16,
            blockK: 16,
            mask: Tensor.from(
              Uint8Array.from({ length: Math.ceil(d.nq / 16) * Math.ceil(d.nk / 16) }, () =>
                rng.uniform() < 0.6 ? 1 : 0,
              ),
              [Math.ceil(d.nq / 16), Math.ceil(d.nk / 16)],
            ),
          },
        }),
      },
      { name: 'softcap', options: { scoreMod: softcap(1.5), causal: true } },
      {
        name: 'alibi, window',
        options: (_rng, d) => ({
          scoreMod: { kind: 'alibi', slopes: alibiSlopes(d.hq) },
          window: [9, 3],
        }),
      },
      {
        name: 'softcap then alibi, varlen',
        layout: 'THD',
        options: (_rng, d) => ({
          scoreMod: [softcap(2), { kind: 'alibi', slopes: alibiSlopes(d.hq) }],
        }),
      },
      {
        name: 'sinks',
        options: (rng, d) => ({
          sinks: Array.from({ length: d.hq }, () => rng.uniform() * 4 - 2),
          causal: true,
        }),
      },
      { name: 'mask mod (prefix LM)', lengths: 'square', options: { maskMod: prefixLm } },
      ...TILED_SCHEDULE_SETS,
    ],
  },
  goldenKinds: ['softmax', 'softmax_varlen'],
  badInputs: [
    ...TILED_BAD_INPUTS,
    { name: 'an unknown option', options: { causl: true }, error: ValueError, argument: 'causl' },
    {
      name: 'softcap of 0',
      options: { scoreMod: softcap(0) },
      error: ValueError,
      argument: 'scoreMod.cap',
    },
    {
      name: 'sinks of the wrong length',
      options: { sinks: [1] },
      error: ValueError,
      argument: 'sinks',
    },
    {
      name: 'v of another dtype',
      tensors: (t) => ({ ...t, v: Tensor.from(new Float64Array(t.v!.size), t.v!.shape, 'f64') }),
      error: DTypeError,
      argument: 'v',
      backends: ['ts', 'native'],
    },
    {
      name: 'an lse with NaN or +Inf (backward)',
      pass: 'backward',
      options: { checkFinite: true },
      tensors: (t) => {
        const data = t.lse!.toFloat32Array().slice();
        data[0] = Number.POSITIVE_INFINITY;
        return { ...t, lse: Tensor.from(data, t.lse!.shape) };
      },
      error: ValueError,
      argument: 'lse',
    },
    {
      name: 'lse of the wrong shape (backward)',
      pass: 'backward',
      tensors: (t) => ({ ...t, lse: Tensor.from(new Float32Array(3), [3]) }),
      error: ShapeError,
      argument: 'lse',
    },
  ],
});
