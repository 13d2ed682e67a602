import {
  type Golden,
  type HstuOptions,
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
  type KernelTensors,
} from '@attnkit/attention';
import { DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import {
  type BackendEnv,
  type CaseDims,
  type ConformanceOptions,
  type ConformanceSpec,
  checkGolden,
  conformanceBackends,
  describeConformance,
  deviceOf,
  type GridSet,
  loadGoldensOfKinds,
  registrationOf,
  reportCheck,
  TILED_BAD_INPUTS,
  webGpuTestContext,
} from '@attnkit/testing';
import { goldenSets } from '@attnkit/vitest-config';
import { toWebGpu, webGpuStorageOf } from '@attnkit/webgpu';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import './index.js'; // registers the hstu kernels (ts, native, webgpu)

/**
 * The grid's cases are jagged LHD batches: every set rewrites the runner's drawn dims into
 * B sequences of odd lengths (one empty where the set says so) with Nq = Nk per sequence and one
 * head count (HSTU has no GQA), and draws seqOffsets and maxSeqLen (the longest sequence or a
 * little more). The runner draws every case's `scale` (scores of a few units, as trained models
 * have); HSTU calls it `alpha`, so `hstuOnly` renames it for the calls and the reference.
 */
function jagged(
  rng: Rng,
  dims: CaseDims,
  opts: { empty?: boolean; batch?: [number, number] } = {},
): ConformanceOptions {
  const [lo, hi] = opts.batch ?? [1, 4];
  const lens: number[] = [];
  for (let b = rng.int(lo, hi + 1); b > 0; b--) lens.push(1 + 2 * rng.int(0, 25));
  if (opts.empty) lens.splice(rng.int(0, lens.length + 1), 0, 0);
  const longest = Math.max(...lens);
  const d = dims as { -readonly [K in keyof CaseDims]: CaseDims[K] };
  d.layout = 'THD';
  d.batch = lens.length;
  d.hkv = d.hq;
  d.seqQ = lens;
  d.seqK = lens;
  d.nq = longest;
  d.nk = longest;
  const seqOffsets = new Int32Array(lens.length + 1);
  for (let b = 0; b < lens.length; b++) seqOffsets[b + 1] = seqOffsets[b]! + lens[b]!;
  return { seqOffsets, maxSeqLen: longest + rng.int(0, 4) };
}

/**
 * A grid case's options as HSTU's: the runner's `scale` becomes `alpha`. Options that carry
 * `alpha` (goldens, bad inputs) pass as they are, so a stray `scale` there still reaches the
 * kernels (and must be refused).
 */
const hstuOnly = (o: ConformanceOptions): ConformanceOptions => {
  if (o.alpha !== undefined || o.scale === undefined) return o;
  const { scale, ...rest } = o;
  return { ...rest, alpha: scale };
};

/**
 * A dense rab for a jagged case: [B or 1, H or 1, maxSeqLen, maxSeqLen] (`broadcast` picks the
 * size-1 dims), values of a unit's size like the scores. Padding positions (past a sequence's
 * length) hold values too: no kernel may read them.
 */
function withRab(
  rng: Rng,
  o: ConformanceOptions,
  hq: number,
  broadcast: { batch?: boolean; heads?: boolean } = {},
): ConformanceOptions {
  const n = o.maxSeqLen as number;
  const batch = (o.seqOffsets as Int32Array).length - 1;
  const rab = rng.randn([broadcast.batch ? 1 : batch, broadcast.heads ? 1 : hq, n, n]);
  return { ...o, rab };
}

/**
 * A bucketed rab (the paper's position / time tables) for a jagged case: tables [H or 1, P] (P =
 * 2 maxSeqLen - 1, or a small odd P that clamps) and [H or 1, T] with values of a unit's size,
 * integer Unix-second timestamps with repeats and gaps from seconds to months, 'log' or 'sqrt'
 * buckets, as the set asks.
 */
function withBucketedRab(
  rng: Rng,
  o: ConformanceOptions,
  hq: number,
  b: { shared?: boolean; position?: boolean; time?: boolean; sqrt?: boolean } = {},
): ConformanceOptions {
  const so = o.seqOffsets as Int32Array;
  const n = o.maxSeqLen as number;
  const rows = b.shared ? 1 : hq;
  const br: Record<string, unknown> = {};
  if (b.position !== false)
    br.positionTable = rng.randn([rows, rng.int(0, 2) === 0 ? 2 * n - 1 : 2 * rng.int(0, 6) + 1]);
  if (b.time !== false) {
    br.timestampTable = rng.randn([rows, rng.int(1, 60)]);
    const stamps: number[] = [];
    for (let s = 0; s + 1 < so.length; s++) {
      let t = 1_700_000_000 + rng.int(0, 1e6);
      for (let i = so[s]!; i < so[s + 1]!; i++) {
        const u = rng.uniform();
        stamps.push((t += u < 0.25 ? 0 : Math.floor(10 ** (u * 7))));
      }
    }
    br.timestamps = stamps;
    if (b.sqrt) Object.assign(br, { bucketFn: 'sqrt', bucketDivisor: 30 });
  }
  return { ...o, bucketedRab: br };
}

/**
 * generative-recommenders' mask options for a jagged case: per-sequence numTargets drawn from
 * 0, the whole length and values between (an empty sequence gets 0), a contextual prefix, a
 * window (maxAttnLen) with minFullAttnSeqLen, as the set asks.
 */
function withMask(
  rng: Rng,
  o: ConformanceOptions,
  m: { targets?: boolean; contextual?: boolean; window?: boolean } = {},
): ConformanceOptions {
  const so = o.seqOffsets as Int32Array;
  const out: ConformanceOptions = { ...o };
  if (m.targets) {
    const nt: number[] = [];
    for (let b = 0; b + 1 < so.length; b++) {
      const len = so[b + 1]! - so[b]!;
      const pick = rng.int(0, 4);
      nt.push(pick === 0 ? 0 : pick === 1 ? len : rng.int(0, len + 1));
    }
    out.numTargets = Int32Array.from(nt);
  }
  if (m.contextual) out.contextualSeqLen = rng.int(1, 7);
  if (m.window) {
    out.maxAttnLen = rng.int(1, 12);
    out.minFullAttnSeqLen = rng.int(0, 6);
  }
  return out;
}

const SETS: readonly GridSet[] = [
  { name: 'causal', heads: 'mha', options: (rng, d) => jagged(rng, d) },
  {
    name: 'causal, an empty sequence',
    heads: 'mha',
    options: (rng, d) => jagged(rng, d, { empty: true }),
  },
  {
    name: 'not causal, an empty sequence',
    heads: 'mha',
    options: (rng, d) => ({ ...jagged(rng, d, { empty: true }), causal: false }),
  },
  {
    name: 'one sequence, dv!=d',
    heads: 'mha',
    dv: 'different',
    options: (rng, d) => jagged(rng, d, { batch: [1, 1] }),
  },
  {
    name: 'odd tiles',
    heads: 'mha',
    options: (rng, d) => ({ ...jagged(rng, d), blockQ: rng.int(1, 40), blockK: rng.int(1, 40) }),
  },
  {
    name: 'split-K',
    heads: 'mha',
    options: (rng, d) => ({ ...jagged(rng, d, { empty: true }), numSplits: rng.int(2, 5) }),
  },
  {
    name: 'rab [B, H], an empty sequence',
    heads: 'mha',
    options: (rng, d) => withRab(rng, jagged(rng, d, { empty: true }), d.hq),
  },
  {
    name: 'rab broadcast over the batch [1, H], not causal',
    heads: 'mha',
    options: (rng, d) => ({
      ...withRab(rng, jagged(rng, d, { empty: true, batch: [2, 4] }), d.hq, { batch: true }),
      causal: false,
    }),
  },
  {
    name: 'rab broadcast over the heads [B, 1], odd tiles',
    heads: 'mha',
    options: (rng, d) => ({
      ...withRab(rng, jagged(rng, d, { batch: [2, 4] }), d.hq, { heads: true }),
      blockQ: rng.int(1, 40),
      blockK: rng.int(1, 40),
    }),
  },
  {
    name: 'rab [1, 1], split-K',
    heads: 'mha',
    options: (rng, d) => ({
      ...withRab(rng, jagged(rng, d, { empty: true }), d.hq, { batch: true, heads: true }),
      numSplits: rng.int(2, 5),
    }),
  },
  {
    name: 'numTargets (0, whole lengths), an empty sequence',
    heads: 'mha',
    options: (rng, d) =>
      withMask(rng, jagged(rng, d, { empty: true, batch: [2, 5] }), { targets: true }),
  },
  {
    name: 'contextualSeqLen and numTargets',
    heads: 'mha',
    options: (rng, d) =>
      withMask(rng, jagged(rng, d, { batch: [2, 4] }), { targets: true, contextual: true }),
  },
  {
    name: 'maxAttnLen, minFullAttnSeqLen and numTargets, odd tiles',
    heads: 'mha',
    options: (rng, d) => ({
      ...withMask(rng, jagged(rng, d, { empty: true }), { targets: true, window: true }),
      blockQ: rng.int(1, 40),
      blockK: rng.int(1, 40),
    }),
  },
  {
    name: 'every mask option, not causal, split-K',
    heads: 'mha',
    options: (rng, d) => ({
      ...withMask(rng, jagged(rng, d, { empty: true }), {
        targets: true,
        contextual: true,
        window: true,
      }),
      causal: false,
      numSplits: rng.int(2, 5),
    }),
  },
  {
    name: 'every mask option with rab [B, H]',
    heads: 'mha',
    options: (rng, d) =>
      withMask(rng, withRab(rng, jagged(rng, d, { batch: [2, 4] }), d.hq), {
        targets: true,
        contextual: true,
        window: true,
      }),
  },
  {
    name: 'bucketedRab per-head tables, an empty sequence',
    heads: 'mha',
    options: (rng, d) => withBucketedRab(rng, jagged(rng, d, { empty: true }), d.hq),
  },
  {
    name: 'bucketedRab shared tables (sqrt), every mask option, odd tiles',
    heads: 'mha',
    options: (rng, d) => ({
      ...withMask(
        rng,
        withBucketedRab(rng, jagged(rng, d, { batch: [2, 4] }), d.hq, { shared: true, sqrt: true }),
        { targets: true, contextual: true, window: true },
      ),
      blockQ: rng.int(1, 40),
      blockK: rng.int(1, 40),
    }),
  },
  {
    name: 'bucketedRab time only, not causal, split-K',
    heads: 'mha',
    options: (rng, d) => ({
      ...withBucketedRab(rng, jagged(rng, d, { empty: true }), d.hq, { position: false }),
      causal: false,
      numSplits: rng.int(2, 5),
    }),
  },
  {
    name: 'bucketedRab position only, numTargets',
    heads: 'mha',
    options: (rng, d) =>
      withMask(
        rng,
        withBucketedRab(rng, jagged(rng, d, { batch: [2, 4] }), d.hq, { time: false }),
        {
          targets: true,
        },
      ),
  },
];

const reference = {
  forward: ({ q, k, v }: KernelTensors, o: ConformanceOptions) => ({
    o: hstuAttentionReference(q!, k!, v!, hstuOnly(o) as unknown as HstuOptions).o,
  }),
  backward: ({ q, k, v, do: dO }: KernelTensors, o: ConformanceOptions) => {
    const g = hstuAttentionReferenceBackward(
      q!,
      k!,
      v!,
      dO!,
      hstuOnly(o) as unknown as HstuOptions,
    );
    const out: KernelTensors = { dq: g.dq, dk: g.dk, dv: g.dv };
    for (const n of ['drab', 'dPositionTable', 'dTimestampTable'] as const)
      if (g[n]) out[n] = g[n]!;
    return out;
  },
};

/**
 * rab (and bucketedRab's tables) on q's device: the runner moves the tensor inputs to the backend's device but not the
 * tensors inside options (goldens and grid cases carry rab there, on the cpu).
 */
function rabOnDevice(o: ConformanceOptions, q: Tensor | undefined): ConformanceOptions {
  if (q?.device !== 'webgpu') return o;
  const move = (t: unknown) =>
    t instanceof Tensor && t.device === 'cpu' ? toWebGpu(t, webGpuStorageOf(q, 'q').ctx) : t;
  const out = { ...o };
  if (o.rab !== undefined) out.rab = move(o.rab);
  const br = o.bucketedRab as Record<string, unknown> | undefined;
  // bucketedRab's tables too (its timestamps stay host data).
  if (br)
    out.bucketedRab = {
      ...br,
      positionTable: move(br.positionTable),
      timestampTable: move(br.timestampTable),
    };
  return out;
}

/** The valid problem of the bad inputs: two sequences (9 and 11 tokens), H 2, D 16. */
function validProblem(): { inputs: KernelTensors; options: ConformanceOptions } {
  const rng = new Rng(5);
  return {
    inputs: { q: rng.randn([20, 2, 16]), k: rng.randn([20, 2, 16]), v: rng.randn([20, 2, 16]) },
    options: { seqOffsets: [0, 9, 20], maxSeqLen: 11, alpha: 0.25 },
  };
}

const spec: ConformanceSpec = {
  family: 'hstu',
  reference,
  grid: { sets: SETS },
  call: (reg, inputs, options) => reg.run(inputs, rabOnDevice(hstuOnly(options), inputs.q)),
  validProblem,
  badInputs: [
    // The skeleton's checks (checkFinite, window, k's head dim) reach HSTU's calls too.
    ...TILED_BAD_INPUTS,
    {
      name: 'seqOffsets missing',
      options: { seqOffsets: undefined },
      error: ValueError,
      argument: 'seqOffsets',
    },
    {
      name: 'seqOffsets not ending at L',
      options: { seqOffsets: [0, 9, 19] },
      error: ValueError,
      argument: 'seqOffsets',
    },
    {
      name: 'seqOffsets not from 0',
      options: { seqOffsets: [1, 9, 20] },
      error: ValueError,
      argument: 'seqOffsets',
    },
    {
      name: 'seqOffsets decreasing',
      options: { seqOffsets: [0, 12, 9, 20] },
      error: ValueError,
      argument: 'seqOffsets',
    },
    {
      name: 'seqOffsets of non-integers',
      options: { seqOffsets: [0, 9.5, 20] },
      error: ValueError,
      argument: 'seqOffsets',
    },
    {
      name: 'maxSeqLen below a sequence',
      options: { maxSeqLen: 10 },
      error: ValueError,
      argument: 'maxSeqLen',
    },
    {
      name: 'maxSeqLen not an integer',
      options: { maxSeqLen: 11.5 },
      error: ValueError,
      argument: 'maxSeqLen',
    },
    { name: 'alpha NaN', options: { alpha: Number.NaN }, error: ValueError, argument: 'alpha' },
    {
      name: 'alpha infinite',
      options: { alpha: Number.POSITIVE_INFINITY },
      error: ValueError,
      argument: 'alpha',
    },
    { name: 'alpha missing', options: { alpha: undefined }, error: ValueError, argument: 'alpha' },
    { name: 'causal not a boolean', options: { causal: 1 }, error: ValueError, argument: 'causal' },
    { name: 'unknown option', options: { alpah: 0.5 }, error: ValueError, argument: 'alpah' },
    // HSTU derives these from seqOffsets and alpha.
    {
      name: 'scale is not an HSTU option',
      options: { scale: 0.5 },
      error: ValueError,
      argument: 'scale',
    },
    {
      name: 'cuSeqlensQ is not an HSTU option',
      options: { cuSeqlensQ: [0, 9, 20] },
      error: ValueError,
      argument: 'cuSeqlensQ',
    },
    {
      name: 'numTargets negative',
      options: { numTargets: [-1, 0] },
      error: ValueError,
      argument: 'numTargets',
    },
    {
      name: 'numTargets above its sequence length',
      options: { numTargets: [0, 12] },
      error: ValueError,
      argument: 'numTargets',
    },
    {
      name: 'numTargets not integers',
      options: { numTargets: [1.5, 0] },
      error: ValueError,
      argument: 'numTargets',
    },
    {
      name: 'numTargets of the wrong length',
      options: { numTargets: [1, 2, 3] },
      error: ValueError,
      argument: 'numTargets',
    },
    {
      name: 'numTargets not an array',
      options: { numTargets: 3 },
      error: ValueError,
      argument: 'numTargets',
    },
    {
      name: 'contextualSeqLen negative',
      options: { contextualSeqLen: -1 },
      error: ValueError,
      argument: 'contextualSeqLen',
    },
    {
      name: 'maxAttnLen not an integer',
      options: { maxAttnLen: 2.5 },
      error: ValueError,
      argument: 'maxAttnLen',
    },
    {
      name: 'minFullAttnSeqLen negative',
      options: { minFullAttnSeqLen: -2 },
      error: ValueError,
      argument: 'minFullAttnSeqLen',
    },
    {
      name: 'k with fewer heads (HSTU has no GQA)',
      tensors: (t) => ({ ...t, k: Tensor.from(new Float32Array(20 * 16), [20, 1, 16]) }),
      error: ShapeError,
      argument: 'k',
    },
    {
      name: 'q in BHND',
      tensors: (t) => ({ ...t, q: Tensor.from(new Float32Array(40 * 16), [1, 2, 20, 16]) }),
      error: ShapeError,
      argument: 'q',
    },
    {
      name: 'q in f64',
      tensors: (t) => ({ ...t, q: new Rng(1).randn([20, 2, 16], 'f64') }),
      error: DTypeError,
      argument: 'q',
      backends: ['ts', 'native'],
    },
    {
      name: 'backward: dO of the wrong shape',
      pass: 'backward',
      tensors: (t) => ({ ...t, do: Tensor.from(new Float32Array(20 * 2 * 8), [20, 2, 8]) }),
      error: ShapeError,
      argument: 'dO',
    },
  ],
};

describeConformance(spec);

// The hstu goldens (hstu_causal, and hstu_rab with its drab) of every golden set, on every backend.
const goldens: Golden[] = loadGoldensOfKinds(['hstu']).filter((g) =>
  /\/hstu_(causal|rab)$/.test(g.name),
);

describe('hstu goldens', () => {
  test('every golden set has hstu_causal and hstu_rab', () => {
    expect(goldens.map((g) => g.name).sort()).toEqual(
      goldenSets()
        .flatMap((s) => [`${s.name}/hstu_causal`, `${s.name}/hstu_rab`])
        .sort(),
    );
  });
  for (const backend of conformanceBackends(spec)) {
    describe(backend, () => {
      const reg = registrationOf('hstu', 'forward', backend)!;
      const device = deviceOf(reg);
      let env: BackendEnv | undefined = device === 'cpu' ? { device: 'cpu' } : undefined;
      if (device === 'webgpu') {
        beforeAll(async () => {
          const ctx = await webGpuTestContext();
          if (ctx) env = { device: 'webgpu', ctx };
        });
        afterAll(() => {
          if (env?.device === 'webgpu') env.ctx.destroy();
        });
      }
      test.for(goldens.map((g) => [g.name, g] as const))('%s', async ([, g], ctx) => {
        const available = reg.available?.() ?? true;
        if (available !== true) ctx.skip(String(available));
        if (!env) ctx.skip('no WebGPU adapter (ATTNKIT_ALLOW_NO_WEBGPU=1)');
        reportCheck(await checkGolden(spec, backend, g, env!), ctx);
      });
    });
  }
});
