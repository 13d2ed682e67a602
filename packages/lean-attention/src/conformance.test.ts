import { softmaxAttentionReference } from '@attnkit/attention';
import { type Rng, ValueError } from '@attnkit/tensor';
import {
  type CaseDims,
  type ConformanceOptions,
  describeConformance,
  type GridSet,
} from '@attnkit/testing';
import './index.js'; // registers the 'lean' kernels (ts, native, webgpu)

/**
 * The 'lean' family through the shared conformance runner: every registered backend (ts,
 * native, webgpu on llvmpipe) x every partition, on random decode shapes, against the float64
 * reference, with poisoned (NaN-filled) outputs. The softmax_decode golden is golden.test.ts.
 */

type MutableDims = { -readonly [K in keyof CaseDims]: CaseDims[K] };

const cumulative = (lens: readonly number[]): Int32Array => {
  const out = new Int32Array(lens.length + 1);
  for (let i = 0; i < lens.length; i++) out[i + 1] = out[i]! + lens[i]!;
  return out;
};

/** Rewrites the drawn dims into a BHND decode case: hq / hkv heads, nq queries, nk keys. */
function decodeDims(
  d: MutableDims,
  o: { hq: number; hkv: number; nq: number; nk: number },
): ConformanceOptions {
  d.layout = 'BHND';
  d.hq = o.hq;
  d.hkv = o.hkv;
  d.nq = o.nq;
  d.nk = o.nk;
  // Many heads stay fast with small head dims.
  if (o.hq > 4) d.d = d.dv = 16;
  return {};
}

/**
 * A THD decode batch, in a random order: 2..4 sequences of 1..4 new queries over 1..200 keys,
 * one with queries but no keys (its rows: O 0, LSE -Infinity), one with neither, one with keys
 * but no queries (nothing to compute, nothing to write).
 */
function varlenDecode(rng: Rng, d: MutableDims): ConformanceOptions {
  const pairs: [number, number][] = [
    [rng.int(1, 3), 0],
    [0, 0],
    [0, rng.int(1, 50)],
  ];
  for (let b = rng.int(2, 5); b > 0; b--) pairs.push([rng.int(1, 5), rng.int(1, 201)]);
  for (let i = pairs.length - 1; i > 0; i--) {
    const j = rng.int(0, i + 1);
    [pairs[i], pairs[j]] = [pairs[j]!, pairs[i]!];
  }
  const seqQ = pairs.map((p) => p[0]);
  const seqK = pairs.map((p) => p[1]);
  d.layout = 'THD';
  d.batch = pairs.length;
  d.seqQ = seqQ;
  d.seqK = seqK;
  d.nq = Math.max(...seqQ);
  d.nk = Math.max(...seqK);
  return { layout: 'THD', cuSeqlensQ: cumulative(seqQ), cuSeqlensK: cumulative(seqK) };
}

const PARTITIONS = ['fa2', 'splitK', 'streamK'] as const;

/** A partition's options: explicit splits / workers in half the cases, the default otherwise. */
function partitionOptions(rng: Rng, partition: (typeof PARTITIONS)[number]): ConformanceOptions {
  const explicit = rng.uniform() < 0.5;
  if (partition === 'splitK')
    return explicit ? { partition, splits: rng.int(1, 9) } : { partition };
  if (partition === 'streamK')
    return explicit ? { partition, workers: rng.int(1, 40) } : { partition };
  return { partition };
}

function setsFor(partition: (typeof PARTITIONS)[number]): GridSet[] {
  const with_ =
    (f: (rng: Rng, d: MutableDims) => ConformanceOptions) =>
    (rng: Rng, d: CaseDims): ConformanceOptions => ({
      ...f(rng, d as MutableDims),
      ...partitionOptions(rng, partition),
    });
  return [
    {
      name: `${partition}: decode, Nk not a tile multiple`,
      options: with_((rng, d) => ({
        ...decodeDims(d, { hq: 2, hkv: 2, nq: 1, nk: 2 * rng.int(20, 200) + 1 }),
        causal: rng.uniform() < 0.5,
      })),
    },
    {
      name: `${partition}: GQA Hq 8 Hkv 2, causal`,
      options: with_((rng, d) => ({
        ...decodeDims(d, { hq: 8, hkv: 2, nq: rng.int(1, 5), nk: rng.int(30, 300) }),
        causal: true,
      })),
    },
    {
      name: `${partition}: MQA Hq 4 Hkv 1, window`,
      options: with_((rng, d) => ({
        ...decodeDims(d, { hq: 4, hkv: 1, nq: rng.int(1, 9), nk: rng.int(40, 260) }),
        window: [rng.int(1, 60), rng.int(0, 3)],
      })),
    },
    {
      name: `${partition}: Nq up to 16, causal window`,
      options: with_((rng, d) => ({
        ...decodeDims(d, { hq: 2, hkv: 1, nq: rng.int(2, 17), nk: rng.int(17, 200) }),
        causal: true,
        window: [rng.int(1, 80), -1],
      })),
    },
    {
      name: `${partition}: one key`,
      options: with_((rng, d) => ({
        ...decodeDims(d, { hq: 2, hkv: 1, nq: 1, nk: 1 }),
        causal: rng.uniform() < 0.5,
      })),
    },
    {
      name: `${partition}: long prefill-like Nq (more than one query tile)`,
      options: with_((rng, d) => ({
        ...decodeDims(d, { hq: 2, hkv: 2, nq: rng.int(40, 90), nk: rng.int(90, 160) }),
        causal: true,
      })),
    },
    { name: `${partition}: varlen decode with empty sequences`, options: with_(varlenDecode) },
    {
      name: `${partition}: varlen decode causal`,
      options: with_((rng, d) => ({ ...varlenDecode(rng, d), causal: true })),
    },
  ];
}

/** The reference takes KERNELS.md "Common" options only: the partition is not part of the math. */
const common = (o: ConformanceOptions): ConformanceOptions => {
  const { partition: _p, workers: _w, splits: _s, ...rest } = o;
  return rest;
};

describeConformance({
  family: 'lean',
  reference: {
    forward: ({ q, k, v }, o) => ({ ...softmaxAttentionReference(q!, k!, v!, common(o)) }),
  },
  grid: {
    sets: PARTITIONS.flatMap(setsFor),
    casesPerSet: 2,
    dtypes: ['f32', 'f16', 'bf16'],
  },
  badInputs: [
    {
      name: 'an unknown partition',
      options: { partition: 'flashDecoding' },
      error: ValueError,
      argument: 'partition',
    },
    {
      name: 'workers with the fa2 partition',
      options: { partition: 'fa2', workers: 4 },
      error: ValueError,
      argument: 'workers',
    },
    {
      name: 'workers with the splitK partition',
      options: { partition: 'splitK', workers: 4 },
      error: ValueError,
      argument: 'workers',
    },
    {
      name: 'splits with the streamK partition',
      options: { splits: 4 },
      error: ValueError,
      argument: 'splits',
    },
    {
      name: 'zero workers',
      options: { workers: 0 },
      error: ValueError,
      argument: 'workers',
    },
    {
      name: 'fractional splits',
      options: { partition: 'splitK', splits: 2.5 },
      error: ValueError,
      argument: 'splits',
    },
    {
      name: "the skeleton's numSplits (partition says it)",
      options: { numSplits: 2 },
      error: ValueError,
      argument: 'numSplits',
    },
    {
      name: "the skeleton's streamKWorkers (partition says it)",
      options: { streamKWorkers: 2 },
      error: ValueError,
      argument: 'streamKWorkers',
    },
  ],
});
