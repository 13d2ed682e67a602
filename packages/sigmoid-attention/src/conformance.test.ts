import {
  alibiSlopes,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  softcap,
} from '@attnkit/attention';
import { ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { describeConformance, randomPermutations } from '@attnkit/testing';
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
      // FlashDecoding's split-K schedule: few query rows, the key tiles cut into parallel ranges.
      {
        name: 'split-K decode',
        lengths: 'decode',
        options: (rng) => ({ numSplits: rng.int(2, 9), causal: true }),
      },
      { name: 'split-K varlen', layout: 'THD', options: { numSplits: 3 } },
      // Permuted tiles (HyperAttention's sorted order): rows read and written through an index.
      {
        name: 'permuted rows, causal',
        options: (rng, d) => ({
          causal: true,
          permute: { q: randomPermutations(rng, d, 'q'), k: randomPermutations(rng, d, 'k') },
        }),
      },
      {
        name: 'permuted keys, varlen, split-K',
        layout: 'THD',
        options: (rng, d) => ({ numSplits: 2, permute: { k: randomPermutations(rng, d, 'k') } }),
      },
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
    {
      name: 'checkFinite rejects a NaN in q',
      options: { checkFinite: true },
      tensors: (t) => {
        const data = t.q!.toFloat32Array().slice();
        data[data.length - 1] = Number.NaN;
        return { ...t, q: Tensor.from(data, t.q!.shape) };
      },
      error: ValueError,
      argument: 'q',
    },
    {
      name: 'checkFinite must be a boolean',
      options: { checkFinite: 1 },
      error: ValueError,
      argument: 'checkFinite',
    },
    { name: 'bias not a number', options: { bias: 'x' }, error: ValueError, argument: 'bias' },
    {
      name: 'sinks are softmax-only',
      options: { sinks: [0] },
      error: ValueError,
      argument: 'sinks',
    },
    {
      name: 'window of one number',
      options: { window: [3] },
      error: ValueError,
      argument: 'window',
    },
    {
      name: 'k with another head dim',
      tensors: (t) => ({ ...t, k: Tensor.from(new Float32Array(11 * 8), [1, 1, 11, 8]) }),
      error: ShapeError,
      argument: 'k',
    },
  ],
});
