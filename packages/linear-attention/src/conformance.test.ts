import { type KernelTensors, toleranceFor } from '@attnkit/attention';
import { DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import {
  type BadInput,
  type CaseDims,
  type ConformanceOptions,
  describeConformance,
  type GridSet,
  type StorageDType,
} from '@attnkit/testing';
import { toWebGpu, WebGpuStorage } from '@attnkit/webgpu';
import {
  chunkGla,
  chunkGlaBackward,
  fusedRecurrentGla,
  fusedRecurrentGlaBackward,
  glaFormOf,
  glaReference,
  glaReferenceBackward,
} from './index.js'; // also registers the 'gla' kernels

/**
 * The 'gla' family through the shared conformance runner: every registered backend, a seeded
 * grid of BTHK problems (both forms, T not a multiple of the chunk, varlen with an empty
 * sequence, h0, K != V, strongly negative gates, f32/f16/bf16) against the float64 reference on
 * poisoned outputs, the gla goldens of both golden sets, and the bad inputs, all through the
 * public functions (their validation included).
 */

type Gates = 'logsigmoid' | 'strong';
/** The runner's dims, rewritten into a GLA problem: batch B, nq = T, hq = H, d = K, dv = V. */
type GlaDims = { -readonly [P in keyof CaseDims]: CaseDims[P] } & { gates?: Gates };

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(0, xs.length)]!;
}

/**
 * Draws T, H, K, V into `d` (the runner then calls makeInputs with it) and the case's options:
 * outputFinalState always (the forward's outputs o and ht are both compared).
 */
function glaCase(
  rng: Rng,
  dims: CaseDims,
  o: {
    form: 'chunk' | 'recurrent';
    varlen?: boolean;
    h0?: boolean;
    kv?: 'same' | 'different';
    reverse?: boolean;
    gates?: Gates;
  },
): ConformanceOptions {
  const d = dims as GlaDims;
  d.layout = 'BHND';
  d.hq = d.hkv = pick(rng, [1, 2, 3]);
  d.d = pick(rng, [4, 8, 16, 24]);
  d.dv =
    o.kv === 'different'
      ? pick(
          rng,
          [4, 8, 16, 24].filter((x) => x !== d.d),
        )
      : d.d;
  d.gates = o.gates ?? 'logsigmoid';
  const options: ConformanceOptions = { form: o.form, outputFinalState: true };
  let N = (d.batch = rng.int(1, 3));
  if (o.varlen) {
    // Four sequences, one of them empty (its state passes through), packed on T with B = 1.
    const lens = [rng.int(1, 90), 0, rng.int(1, 90), rng.int(1, 40)];
    for (let i = lens.length - 1; i > 0; i--) {
      const j = rng.int(0, i + 1);
      [lens[i], lens[j]] = [lens[j]!, lens[i]!];
    }
    const cu = [0];
    for (const n of lens) cu.push(cu[cu.length - 1]! + n);
    d.batch = 1;
    N = lens.length;
    d.nq = d.nk = cu[cu.length - 1]!;
    options.cuSeqlens = rng.uniform() < 0.5 ? Int32Array.from(cu) : cu;
  } else {
    d.nq = d.nk = rng.int(1, 160);
  }
  if (o.form === 'chunk') options.chunkSize = pick(rng, [4, 16, 32, 64]);
  if (o.reverse) options.reverse = true;
  if (o.h0) options.initialState = rng.randn([N, d.hq, d.d, d.dv]);
  return options;
}

function glaInputs(rng: Rng, dims: CaseDims, dtype: StorageDType): KernelTensors {
  const d = dims as GlaDims;
  const [B, T, H, K, V] = [d.batch, d.nq, d.hq, d.d, d.dv];
  const n = B * T * H * K;
  const g = new Float32Array(n);
  const z = rng.randn([n], 'f64').toFloat64Array();
  for (let i = 0; i < n; i++) {
    // fla's gates: log sigmoid of a normal (mostly in [-3, 0]); 'strong': half of the channels
    // at -20 per step (exp(-20) = 2e-9: the state forgets at once), the rest log sigmoid.
    const ls = -Math.log1p(Math.exp(-z[i]!));
    g[i] = d.gates === 'strong' && i % 2 === 0 ? -20 * (0.5 + 0.5 * rng.uniform()) : ls;
  }
  return {
    q: rng.randn([B, T, H, K], dtype),
    k: rng.randn([B, T, H, K], dtype),
    v: rng.randn([B, T, H, V], dtype),
    gk: Tensor.from(g, [B, T, H, K]).astype(dtype),
  };
}

const sets: GridSet[] = [
  { name: 'chunk', options: (rng, d) => glaCase(rng, d, { form: 'chunk' }) },
  { name: 'chunk h0', options: (rng, d) => glaCase(rng, d, { form: 'chunk', h0: true }) },
  { name: 'chunk k!=v', options: (rng, d) => glaCase(rng, d, { form: 'chunk', kv: 'different' }) },
  {
    name: 'chunk varlen h0',
    options: (rng, d) => glaCase(rng, d, { form: 'chunk', varlen: true, h0: true }),
  },
  {
    name: 'chunk strong gates',
    options: (rng, d) => glaCase(rng, d, { form: 'chunk', h0: true, gates: 'strong' }),
  },
  { name: 'recurrent', options: (rng, d) => glaCase(rng, d, { form: 'recurrent' }) },
  {
    name: 'recurrent h0 k!=v',
    options: (rng, d) => glaCase(rng, d, { form: 'recurrent', h0: true, kv: 'different' }),
  },
  {
    name: 'recurrent varlen reverse',
    options: (rng, d) =>
      glaCase(rng, d, { form: 'recurrent', varlen: true, h0: true, reverse: true }),
  },
];

/** A pass through the public functions (validation included), outputs named as the registry's. */
async function call(
  pass: 'forward' | 'backward',
  backend: string,
  t: KernelTensors,
  options: ConformanceOptions,
): Promise<KernelTensors> {
  const recurrent = glaFormOf(options) === 'recurrent';
  const { form: _form, ...rest } = options;
  const o = { ...rest, backend };
  // The runner moves the inputs only: initialState (an option) follows q onto webgpu.
  const h0 = o.initialState;
  const moved =
    h0 instanceof Tensor && h0.device === 'cpu' && t.q!.storage instanceof WebGpuStorage
      ? toWebGpu(h0, t.q!.storage.ctx)
      : undefined;
  if (moved) o.initialState = moved;
  try {
    if (pass === 'forward') {
      const r = await (recurrent ? fusedRecurrentGla : chunkGla)(t.q!, t.k!, t.v!, t.gk!, o);
      return r.finalState ? { o: r.o, ht: r.finalState } : { o: r.o };
    }
    const b = recurrent ? fusedRecurrentGlaBackward : chunkGlaBackward;
    return { ...(await b(t.q!, t.k!, t.v!, t.gk!, t.do!, { ...o, dht: t.dht })) };
  } finally {
    moved?.dispose();
  }
}

/** B 1, T 9, H 2, K 8, V 4. */
function validProblem() {
  const dims = { layout: 'BHND', batch: 1, hq: 2, hkv: 2, nq: 9, nk: 9, d: 8, dv: 4 } as CaseDims;
  return {
    inputs: glaInputs(new Rng(11), dims, 'f32'),
    options: { outputFinalState: true } as ConformanceOptions,
  };
}

const replace =
  (name: string, make: (t: KernelTensors) => Tensor) =>
  (t: KernelTensors): KernelTensors => ({ ...t, [name]: make(t) });
const gate = (value: number) =>
  replace('gk', (t) => {
    const g = t.gk!.toFloat32Array();
    g[37] = value;
    return Tensor.from(g, t.gk!.shape);
  });

const badInputs: BadInput[] = [
  { name: 'a gate above 0 (not a decay)', tensors: gate(0.25), error: ValueError, argument: 'gk' },
  { name: 'a NaN gate', tensors: gate(Number.NaN), error: ValueError, argument: 'gk' },
  { name: 'a -Infinity gate', tensors: gate(-Infinity), error: ValueError, argument: 'gk' },
  {
    name: 'a gate above 0 in the backward',
    pass: 'backward',
    tensors: gate(1),
    error: ValueError,
    argument: 'gk',
  },
  {
    name: 'k of another K',
    tensors: replace('k', () => new Rng(1).randn([1, 9, 2, 6])),
    error: ShapeError,
    argument: 'k',
  },
  {
    name: 'gk of another T',
    tensors: replace('gk', () => Tensor.full([1, 8, 2, 8], -0.1)),
    error: ShapeError,
    argument: 'gk',
  },
  {
    name: 'v of another H',
    tensors: replace('v', () => new Rng(1).randn([1, 9, 3, 4])),
    error: ShapeError,
    argument: 'v',
  },
  {
    name: 'q of rank 3 (BTHK expected)',
    tensors: replace('q', (t) => t.q!.reshape([9, 2, 8])),
    error: ShapeError,
    argument: 'q',
  },
  {
    name: 'v of another dtype',
    tensors: replace('v', (t) => t.v!.astype('f16')),
    error: DTypeError,
    argument: 'v',
  },
  {
    name: 'integer q',
    tensors: replace('q', (t) => Tensor.zeros(t.q!.shape, 'i32')),
    error: DTypeError,
    argument: 'q',
  },
  { name: 'chunkSize 48', options: { chunkSize: 48 }, error: ValueError, argument: 'chunkSize' },
  { name: 'chunkSize 0', options: { chunkSize: 0 }, error: ValueError, argument: 'chunkSize' },
  {
    name: 'initialState of the wrong shape',
    options: { initialState: Tensor.zeros([1, 2, 4, 8]) },
    error: ShapeError,
    argument: 'initialState',
  },
  {
    name: 'initialState of an integer dtype',
    options: { initialState: Tensor.zeros([1, 2, 8, 4], 'i32') },
    error: DTypeError,
    argument: 'initialState',
  },
  {
    name: 'cuSeqlens not ending at T',
    options: { cuSeqlens: [0, 4, 8] },
    error: ValueError,
    argument: 'cuSeqlens',
  },
  {
    name: 'cuSeqlens decreasing',
    options: { cuSeqlens: Int32Array.of(0, 6, 3, 9) },
    error: ValueError,
    argument: 'cuSeqlens',
  },
  {
    name: 'cuSeqlens not starting at 0',
    options: { cuSeqlens: [2, 9] },
    error: ValueError,
    argument: 'cuSeqlens',
  },
  {
    name: 'cuSeqlens with B = 2',
    tensors: (t) => {
      const two = (x: Tensor) =>
        Tensor.from(new Float32Array(2 * x.size).fill(-0.1), [2, ...x.shape.slice(1)]);
      return { q: two(t.q!), k: two(t.k!), v: two(t.v!), gk: two(t.gk!) };
    },
    options: { cuSeqlens: [0, 9] },
    error: ValueError,
    argument: 'cuSeqlens',
  },
  { name: 'scale NaN', options: { scale: Number.NaN }, error: ValueError, argument: 'scale' },
  {
    name: 'reverse is no option of chunkGla',
    options: { reverse: true },
    error: ValueError,
    argument: 'reverse',
  },
  {
    name: 'chunkSize is no option of fusedRecurrentGla',
    options: { form: 'recurrent', chunkSize: 32 },
    error: ValueError,
    argument: 'chunkSize',
  },
  {
    name: 'tensorCores is no option of fusedRecurrentGla',
    options: { form: 'recurrent', tensorCores: true },
    error: ValueError,
    argument: 'options.tensorCores',
  },
  { name: 'an unknown form', options: { form: 'fused' }, error: ValueError, argument: 'form' },
  {
    name: 'an unknown option',
    options: { causal: true },
    error: ValueError,
    argument: 'options.causal',
  },
  {
    name: 'dO of the wrong shape',
    pass: 'backward',
    tensors: replace('do', () => new Rng(2).randn([1, 9, 2, 8])),
    error: ShapeError,
    argument: 'dO',
  },
  {
    name: 'dht of the wrong shape',
    pass: 'backward',
    tensors: replace('dht', () => new Rng(2).randn([2, 2, 8, 4])),
    error: ShapeError,
    argument: 'dht',
  },
];

describeConformance({
  family: 'gla',
  reference: {
    forward: ({ q, k, v, gk }, o) => {
      const r = glaReference(q!, k!, v!, gk!, withoutForm(o));
      return r.finalState ? { o: r.o, ht: r.finalState } : { o: r.o };
    },
    backward: ({ q, k, v, gk, do: dO, dht }, o) => ({
      ...glaReferenceBackward(q!, k!, v!, gk!, dO!, { ...withoutForm(o), dht }),
    }),
  },
  grid: { sets, casesPerSet: 2 },
  makeInputs: glaInputs,
  goldenKinds: ['gla'],
  badInputs,
  validProblem,
  // KERNELS.md: chunked GLA gets the 2e-5 f32 bound (its extra state passing); f16/bf16 inputs
  // their storage bounds.
  tolerance: (t) => toleranceFor({ dtype: t.dtype, maxSeqLen: t.maxSeqLen, chunked: true }),
  call: (reg, inputs, options) => call(reg.pass, reg.backend, inputs, options),
});

function withoutForm(o: ConformanceOptions): ConformanceOptions {
  const { form: _form, ...rest } = o;
  return rest;
}
