import { softmaxAttentionReference, UnsupportedError } from '@attnkit/attention';
import { type Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import {
  type CaseDims,
  commonInputs,
  conformanceBackends,
  describeConformance,
  registrationOf,
  type StorageDType,
} from '@attnkit/testing';
import './index.js'; // registers the sage kernels (ts, native, webgpu)

/**
 * The shared conformance runner on family 'sage' (forward only): the common grid (odd lengths,
 * Nq != Nk, causal both ways, decode, GQA, MQA, windows, Dv != D; varlen declined with an
 * UnsupportedError) on poisoned outputs, plus Sage's own sets, against the float64 softmax
 * reference. Tolerance: relative L2 0.045 for o with INT8 Q·K, the cosine bar of KERNELS.md
 * (cos >= 0.999 <=> relL2 <~ 0.045 for outputs of equal norm).
 * Head dims are rounded up to multiples of 16 (the integer path's; others are a ValueError,
 * tested in errors.test.ts). Backends whose kernels are not built are left out here (the
 * registry reports them unavailable).
 */

const up16 = (n: number) => Math.ceil(n / 16) * 16;

function sageInputs(rng: Rng, dims: CaseDims, dtype: StorageDType) {
  return commonInputs(rng, { ...dims, d: up16(dims.d), dv: up16(dims.dv) }, dtype);
}

// The native addon and the skeleton's native / WebGPU Sage halves may be absent from this build:
// those registrations report themselves unavailable and are left out (their own tests say why).
const available = conformanceBackends({ family: 'sage' }).filter(
  (b) => (registrationOf('sage', 'forward', b)?.available?.() ?? true) === true,
);

describeConformance({
  family: 'sage',
  backends: available,
  reference: {
    forward: ({ q, k, v }, o) => {
      const { qkBits: _b, granularity: _g, smoothK: _k, smoothQ: _q, pvBits: _p, ...mask } = o;
      return softmaxAttentionReference(q!, k!, v!, mask);
    },
  },
  makeInputs: sageInputs,
  grid: {
    extraSets: [
      { name: 'thread granularity', options: { granularity: 'thread', causal: true } },
      { name: 'block granularity', heads: 'gqa', options: { granularity: 'block' } },
      { name: 'no smoothing', options: { smoothK: false, smoothQ: false } },
      { name: 'pvBits 32', options: { pvBits: 32, causal: true } },
      { name: 'long rows (several tiles, Q blocks)', lengths: 'square', options: { causal: true } },
    ],
  },
  tolerance: () => 0.045,
  validProblem: () => {
    const q = Tensor.from(
      new Float32Array(2 * 9 * 16).map((_, i) => Math.sin(i)),
      [1, 2, 9, 16],
    );
    const k = Tensor.from(
      new Float32Array(11 * 16).map((_, i) => Math.cos(i)),
      [1, 1, 11, 16],
    );
    const v = Tensor.from(
      new Float32Array(11 * 32).map((_, i) => Math.sin(3 * i)),
      [1, 1, 11, 32],
    );
    return { inputs: { q, k, v }, options: {} };
  },
  badInputs: [
    { name: 'unknown bits', options: { qkBits: 6 }, error: ValueError, argument: 'qkBits' },
    {
      name: 'bits per head of the wrong length',
      options: { qkBits: [8, 4, 8] },
      error: ValueError,
      argument: 'qkBits',
    },
    {
      name: 'unknown granularity',
      options: { granularity: 'row' },
      error: ValueError,
      argument: 'granularity',
    },
    { name: 'pvBits 16', options: { pvBits: 16 }, error: ValueError, argument: 'pvBits' },
    {
      name: 'D not a multiple of 16',
      tensors: (t) => ({
        q: Tensor.from(new Float32Array(2 * 9 * 40), [1, 2, 9, 40]),
        k: Tensor.from(new Float32Array(11 * 40), [1, 1, 11, 40]),
        v: t.v!,
      }),
      error: ValueError,
      argument: 'q',
    },
    {
      name: 'Dv above 256',
      tensors: (t) => ({ ...t, v: Tensor.from(new Float32Array(11 * 272), [1, 1, 11, 272]) }),
      error: ValueError,
      argument: 'v',
    },
    {
      name: 'NaN in k',
      tensors: (t) => {
        const data = t.k!.toFloat32Array();
        data[5] = Number.NaN;
        return { ...t, k: Tensor.from(data, t.k!.shape) };
      },
      error: ValueError,
      argument: 'k',
    },
    {
      name: 'Infinity in v',
      tensors: (t) => {
        const data = t.v!.toFloat32Array();
        data[data.length - 1] = Number.POSITIVE_INFINITY;
        return { ...t, v: Tensor.from(data, t.v!.shape) };
      },
      error: ValueError,
      argument: 'v',
    },
    {
      name: 'calibration for another head count',
      options: {
        calibration: { version: 1, kind: 'sage-calibration', heads: 3, qkBits: [4, 8, 8] },
      },
      error: ValueError,
      argument: 'calibration',
    },
    {
      name: 'varlen',
      options: { cuSeqlensQ: [0, 9] },
      error: UnsupportedError,
      argument: 'cuSeqlensQ',
    },
    {
      name: 'window of one number',
      options: { window: [3] },
      error: ValueError,
      argument: 'window',
    },
    {
      name: 'k with another head dim',
      tensors: (t) => ({ ...t, k: Tensor.from(new Float32Array(11 * 32), [1, 1, 11, 32]) }),
      error: ShapeError,
      argument: 'k',
    },
  ],
});
