import {
  alibiSlopes,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  softcap,
} from '@attnkit/attention';
import { ValueError } from '@attnkit/tensor';
import { describeConformance, TILED_BAD_INPUTS, TILED_SCHEDULE_SETS } from '@attnkit/testing';
import './index.js'; // registers the sigmoid kernels (ts, native, webgpu)

const sigmoid = (o: Record<string, unknown>) => ({ ...o, normalize: 'sigmoid' as const });

describeConformance({
  family: 'sigmoid',
  reference: {
    // The modded reference with a sigmoid normalisation: THD varlen too (b = -log Nk per sequence).
    forward: ({ q, k, v }, o) => ({ o: moddedAttentionReference(q!, k!, v!, sigmoid(o)).o }),
    backward: ({ q, k, v, do: dO }, o) => ({
      ...moddedAttentionReferenceBackward(q!, k!, v!, dO!, sigmoid(o)),
    }),
  },
  grid: {
    extraSets: [
      { name: 'explicit bias', options: { bias: -1.5, causal: true } },
      { name: 'odd tiles', options: (rng) => ({ blockQ: rng.int(1, 40), blockK: rng.int(1, 40) }) },
      { name: 'softcap', options: { scoreMod: softcap(1.5) } },
      ...TILED_SCHEDULE_SETS,
      {
        name: 'alibi, window, varlen',
        layout: 'THD',
        options: (_rng, d) => ({
          scoreMod: { kind: 'alibi', slopes: alibiSlopes(d.hq) },
          window: [7, 2],
        }),
      },
      {
        name: 'mask mod (banded)',
        lengths: 'square',
        options: {
          maskMod: {
            name: 'band3',
            ts: (_b: number, _h: number, i: number, j: number) => Math.abs(i - j) <= 3,
            wgsl: 'fn band3(b: u32, h: u32, i: u32, j: u32) -> bool { return max(i, j) - min(i, j) <= 3u; }',
            blockSize: 16,
          },
        },
      },
    ],
  },
  goldenKinds: ['sigmoid'],
  badInputs: [
    ...TILED_BAD_INPUTS,
    { name: 'bias not a number', options: { bias: 'x' }, error: ValueError, argument: 'bias' },
    {
      name: 'sinks are softmax-only',
      options: { sinks: [0] },
      error: ValueError,
      argument: 'sinks',
    },
  ],
});
