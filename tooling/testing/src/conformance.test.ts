import {
  type KernelRegistration,
  type KernelTensors,
  registerKernel,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
} from '@attnkit/attention';
import { allocF32 } from '@attnkit/skeleton';
import { encodeHalfArray, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { emptyWebGpu, webGpuStorageOf } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import {
  type BackendEnv,
  type BadInput,
  COMMON_GRID,
  type ConformanceSpec,
  checkBadInput,
  checkGolden,
  checkGridCase,
  describeConformance,
  drawDims,
  goldenParts,
  gridCases,
  loadGoldensOfKinds,
} from './conformance.js';
import { webGpuTestContext } from './webgpu.js';

/**
 * The runner on a tiny fake softmax family whose "kernels" copy the float64 reference into
 * f32 outputs: the correct one passes the generated suite; each deliberately broken one is
 * caught by a direct call of the checking function.
 */

type Mutation = (name: string, data: Float32Array) => void;

interface FakeKernelOptions {
  /** Changes an output after it is written (data is the poisoned array). */
  mutate?: Mutation;
  /** Writes every element but the last of `o` (the rest stays poisoned). */
  skipLast?: boolean;
  /** Allocates with new Float32Array, not through allocF32 (so nothing is poisoned). */
  plainAlloc?: boolean;
  /** Output names the kernel returns (default: all). */
  returns?: readonly string[];
}

/** An output tensor written element by element from the f64 reference, in `dtype`. */
function write(
  ref: Tensor,
  dtype: string,
  name: string,
  k: FakeKernelOptions,
  forceF32 = false,
): Tensor {
  const src = ref.toFloat64Array();
  const out = k.plainAlloc ? new Float32Array(src.length) : allocF32(src.length, 'output');
  const n = k.skipLast && name === 'o' ? src.length - 1 : src.length;
  for (let i = 0; i < n; i++) out[i] = src[i]!;
  k.mutate?.(name, out);
  if (!forceF32 && (dtype === 'f16' || dtype === 'bf16')) {
    return Tensor.from(encodeHalfArray(dtype, out), ref.shape, dtype);
  }
  return Tensor.from(out, ref.shape);
}

function fakeKernels(family: string, backend: string, k: FakeKernelOptions = {}): void {
  const common = {
    family,
    backend,
    priority: 0,
    devices: ['cpu'] as const,
    supports: () => true as const,
  };
  const keep = (all: KernelTensors): KernelTensors =>
    Object.fromEntries(Object.entries(all).filter(([n]) => !k.returns || k.returns.includes(n)));
  registerKernel({
    ...common,
    pass: 'forward',
    outputs: ['o', 'lse'],
    run: async ({ q, k: kk, v }, options) => {
      const ref = softmaxAttentionReference(q!, kk!, v!, options);
      return keep({
        o: write(ref.o, q!.dtype, 'o', k),
        lse: write(ref.lse, q!.dtype, 'lse', k, true),
      });
    },
  } satisfies KernelRegistration);
  registerKernel({
    ...common,
    pass: 'backward',
    outputs: ['dq', 'dk', 'dv'],
    run: async ({ q, k: kk, v, do: dO }, options) => {
      const ref = softmaxAttentionReferenceBackward(q!, kk!, v!, dO!, options);
      return keep({
        dq: write(ref.dq, q!.dtype, 'dq', k),
        dk: write(ref.dk, q!.dtype, 'dk', k),
        dv: write(ref.dv, q!.dtype, 'dv', k),
      });
    },
  });
}

const reference: ConformanceSpec['reference'] = {
  forward: ({ q, k, v }, options) => softmaxAttentionReference(q!, k!, v!, options),
  backward: ({ q, k, v, do: dO }, options) =>
    softmaxAttentionReferenceBackward(q!, k!, v!, dO!, options),
};

const BAD_INPUTS: readonly BadInput[] = [
  {
    name: 'k with another head dim',
    tensors: ({ q, k, v }) => ({ q: q!, k: new Rng(1).randn([1, 1, k!.shape[2]!, 8]), v: v! }),
    error: ShapeError,
    argument: 'k',
  },
  { name: 'window of one number', options: { window: [3] }, error: ValueError, argument: 'window' },
  {
    name: 'backward: do of the wrong shape',
    pass: 'backward',
    tensors: (valid) => ({ ...valid, do: new Rng(2).randn([1, 2, 9, 15]) }),
    error: ShapeError,
    argument: 'dO',
  },
];

// The correct fake: the whole generated suite must pass (f32, f16, bf16, goldens, bad inputs).
fakeKernels('conformance-fake', 'ts');
const spec: ConformanceSpec = {
  family: 'conformance-fake',
  reference,
  grid: { casesPerSet: 1 },
  goldenKinds: ['softmax', 'softmax_varlen'],
  badInputs: BAD_INPUTS,
};
describeConformance(spec);

// The broken fakes, one backend each, in a family of their own (no suite is generated for it).
const BROKEN = 'conformance-broken';
/** Scales output `name` by 1.001 (0.1% off: 100x the f32 tolerance). */
const scale =
  (name: string): Mutation =>
  (n, d) => {
    if (n === name) for (let i = 0; i < d.length; i++) d[i] = d[i]! * 1.001;
  };
fakeKernels(BROKEN, 'scaled-o', { mutate: scale('o') });
fakeKernels(BROKEN, 'scaled-dk', { mutate: scale('dk') });
fakeKernels(BROKEN, 'unwritten', { skipLast: true });
fakeKernels(BROKEN, 'plain-alloc', { plainAlloc: true });
fakeKernels(BROKEN, 'no-lse', { returns: ['o', 'dq', 'dk', 'dv'] });
fakeKernels(BROKEN, 'no-dv', { returns: ['o', 'lse', 'dq', 'dk'] });
registerKernel({
  family: BROKEN,
  pass: 'forward',
  backend: 'lse-unlisted',
  priority: 0,
  devices: ['cpu'],
  supports: () => true,
  outputs: ['o'],
  run: async ({ q, k, v }, options) => ({
    o: write(softmaxAttentionReference(q!, k!, v!, options).o, 'f32', 'o', {}),
  }),
});
registerKernel({
  family: BROKEN,
  pass: 'forward',
  backend: 'lenient',
  priority: 0,
  devices: ['cpu'],
  supports: () => true,
  outputs: ['o', 'lse'],
  // Validates nothing: a wrong k gives garbage instead of a typed error.
  run: async ({ q }) => ({ o: q!, lse: q! }),
});
registerKernel({
  family: BROKEN,
  pass: 'forward',
  backend: 'names-q',
  priority: 0,
  devices: ['cpu'],
  supports: () => true,
  outputs: ['o', 'lse'],
  run: async () => {
    throw new ShapeError('q: something is wrong', 'q');
  },
});

const broken: ConformanceSpec = { ...spec, family: BROKEN };
const cpu: BackendEnv = { device: 'cpu' };
const f32Cases = gridCases({ ...spec, grid: { casesPerSet: 1, dtypes: ['f32'] } });
const causalCase = f32Cases.find((c) => c.set === 'nq>nk causal')!;
const varlenCase = f32Cases.find((c) => c.set === 'varlen')!;

describe('the checks catch deliberately wrong kernels', () => {
  test('the correct fake passes the direct checks', async () => {
    for (const c of [causalCase, varlenCase]) {
      const r = await checkGridCase(spec, 'ts', c, cpu);
      expect(r.failures).toEqual([]);
      expect(r.checked.map((l) => l.split(':')[0])).toEqual([
        'forward o',
        'forward lse',
        'backward dq',
        'backward dk',
        'backward dv',
      ]);
    }
  });

  test('an output 0.1% off fails the tolerance (forward and backward)', async () => {
    const o = await checkGridCase(broken, 'scaled-o', causalCase, cpu);
    expect(o.failures).toHaveLength(1);
    expect(o.failures[0]).toMatch(/^forward o: relative L2 .* > tolerance 0.00001$/);
    const dk = await checkGridCase(broken, 'scaled-dk', causalCase, cpu);
    expect(dk.failures).toHaveLength(1);
    expect(dk.failures[0]).toMatch(/^backward dk: relative L2/);
  });

  test('one unwritten element of a poisoned output fails', async () => {
    const r = await checkGridCase(broken, 'unwritten', varlenCase, cpu);
    expect(r.failures).toEqual([
      'forward o: 1 NaN/Infinity values the reference does not have (unwritten or overflowed elements)',
    ]);
  });

  test('outputs allocated around the poisoning hook fail', async () => {
    const r = await checkGridCase(broken, 'plain-alloc', causalCase, cpu);
    expect(r.failures.length).toBe(2);
    for (const f of r.failures) expect(f).toMatch(/allocated no output through .*allocF32/);
  });

  test('a listed output the kernel does not return fails', async () => {
    const r = await checkGridCase(broken, 'no-lse', causalCase, cpu);
    expect(r.failures).toEqual(['forward lse: not produced by the kernel']);
  });

  test('goldens: a reference tensor no pass produces fails, listed or not', async () => {
    const [g] = loadGoldensOfKinds(['softmax']).filter((x) => x.name === 'project/softmax_gqa');
    expect((await checkGolden(spec, 'ts', g!, cpu)).failures).toEqual([]);
    const unlisted = await checkGolden(broken, 'lse-unlisted', g!, cpu);
    expect(unlisted.failures.join('\n')).toMatch(
      /reference tensor 'lse' is produced by no pass of lse-unlisted/,
    );
    // Without a backward kernel the gradients are missing too.
    expect(unlisted.failures).toContainEqual(expect.stringMatching(/^backward: threw ValueError/));
    for (const n of ['dq', 'dk', 'dv']) {
      expect(unlisted.failures).toContainEqual(
        expect.stringContaining(`reference tensor '${n}' is produced by no pass`),
      );
    }
    const noDv = await checkGolden(broken, 'no-dv', g!, cpu);
    expect(noDv.failures).toEqual(['backward dv: not produced by the kernel']);
  });

  test('bad inputs: a call that succeeds or names another argument fails', async () => {
    const [wrongK] = BAD_INPUTS;
    expect((await checkBadInput(spec, 'ts', wrongK!, cpu)).failures).toEqual([]);
    const lenient = await checkBadInput(broken, 'lenient', wrongK!, cpu);
    expect(lenient.failures).toEqual([
      "k with another head dim: expected ShapeError naming 'k', but the call succeeded",
    ]);
    const namesQ = await checkBadInput(broken, 'names-q', wrongK!, cpu);
    expect(namesQ.failures[0]).toMatch(/expected ShapeError naming 'k', got one naming 'q'/);
  });
});

describe('the grid', () => {
  test('covers the options of KERNELS.md "Common" with every dtype', () => {
    const cases = gridCases(spec);
    expect(new Set(cases.map((c) => c.dtype))).toEqual(new Set(['f32', 'f16', 'bf16']));
    expect(cases.length).toBe(3 * COMMON_GRID.length);
    const has = (p: (c: (typeof cases)[number]) => boolean) => cases.some(p);
    expect(has((c) => c.dims.nq !== c.dims.nk)).toBe(true);
    expect(has((c) => c.dims.nq % 2 === 1 && c.dims.nk % 2 === 1)).toBe(true);
    expect(has((c) => c.dims.hq > c.dims.hkv && c.dims.hkv > 1)).toBe(true);
    expect(has((c) => c.dims.hkv === 1 && c.dims.hq >= 4)).toBe(true);
    expect(
      has((c) => c.options.layout === 'THD' && c.options.cuSeqlensK instanceof Int32Array),
    ).toBe(true);
    expect(has((c) => c.options.causal === true && c.dims.nq > c.dims.nk)).toBe(true);
    expect(has((c) => Array.isArray(c.options.window))).toBe(true);
    expect(has((c) => c.dims.dv !== c.dims.d)).toBe(true);
    // Seeded: the same cases every run.
    expect(gridCases(spec).map((c) => c.name)).toEqual(cases.map((c) => c.name));
  });

  test('length modes', () => {
    const rng = new Rng(3);
    for (let n = 0; n < 50; n++) {
      const gt = drawDims(rng, { name: 'x', lengths: 'nq>nk' }).dims;
      expect(gt.nq).toBeGreaterThan(gt.nk);
      const lt = drawDims(rng, { name: 'x', lengths: 'nq<nk' }).dims;
      expect(lt.nq).toBeLessThan(lt.nk);
      expect(drawDims(rng, { name: 'x', lengths: 'decode' }).dims.nq).toBe(1);
      const sq = drawDims(rng, { name: 'x', lengths: 'square' }).dims;
      expect(sq.nq).toBe(sq.nk);
    }
  });

  test('goldens: every tensor of the file that is not an input is a reference', () => {
    const [rab] = loadGoldensOfKinds(['hstu']).filter((g) => g.name === 'project/hstu_rab');
    const parts = goldenParts({ family: 'x', reference }, rab!);
    // drab is not among the loader's reference names, and must still be produced.
    expect(parts.references).toContain('drab');
    expect(parts.references).not.toContain('rab');
    expect(Object.keys(parts.forwardInputs).sort()).toEqual(['k', 'q', 'v']);
    expect(Object.keys(parts.gradInputs)).toEqual(['do']);
    const [sparse] = loadGoldensOfKinds(['softmax']).filter(
      (g) => g.name === 'project/softmax_blocksparse',
    );
    const sp = goldenParts({ family: 'x', reference }, sparse!);
    expect(sp.references).toEqual(['dk', 'dq', 'dv', 'lse', 'o']);
  });
});

// A fake WebGPU backend: the reference computed on the CPU, written into outputs from
// emptyWebGpu (which the test context poisons), all of them or all but o's last element.
const GPU = 'conformance-fake-webgpu';
for (const [backend, skipLast] of [
  ['full', false],
  ['unwritten', true],
] as const) {
  const upload = (ref: Tensor, like: Tensor, name: string): Tensor => {
    const ctx = webGpuStorageOf(like, 'q').ctx;
    const data = Float32Array.from(ref.toFloat64Array());
    const out = emptyWebGpu(ref.shape, 'f32', ctx);
    const count = skipLast && name === 'o' ? data.length - 1 : data.length;
    if (count > 0)
      ctx.device.queue.writeBuffer(webGpuStorageOf(out, name).buffer, 0, data, 0, count);
    return out;
  };
  const common = {
    family: GPU,
    backend,
    priority: 0,
    devices: ['webgpu'],
    supports: (r: { dtype: string }) => r.dtype === 'f32' || 'f32 only',
  };
  registerKernel({
    ...common,
    pass: 'forward',
    outputs: ['o', 'lse'],
    run: async (inputs, options) => {
      const [q, k, v] = await Promise.all([inputs.q!, inputs.k!, inputs.v!].map((t) => t.toCpu()));
      const ref = softmaxAttentionReference(q!, k!, v!, options);
      return { o: upload(ref.o, inputs.q!, 'o'), lse: upload(ref.lse, inputs.q!, 'lse') };
    },
  });
}

const gpu = await webGpuTestContext();
afterAll(() => gpu?.destroy());

describe.skipIf(!gpu)('webgpu: outputs on a poisoning context', () => {
  test('an unwritten element of a WebGPU output fails; the full write passes', async () => {
    const env: BackendEnv = { device: 'webgpu', ctx: gpu! };
    const gpuSpec: ConformanceSpec = { family: GPU, reference: { forward: reference.forward } };
    for (const c of [causalCase, varlenCase]) {
      expect((await checkGridCase(gpuSpec, 'full', c, env)).failures).toEqual([]);
      expect((await checkGridCase(gpuSpec, 'unwritten', c, env)).failures).toEqual([
        'forward o: 1 NaN/Infinity values the reference does not have (unwritten or overflowed elements)',
      ]);
    }
    const half = gridCases({ ...spec, grid: { casesPerSet: 1, dtypes: ['f16'] } })[0]!;
    // A declined case passes only when the registry refuses it with an UnsupportedError.
    const declined = await checkGridCase(gpuSpec, 'full', half, env);
    expect(declined.declined).toBe('f32 only');
    expect(declined.failures).toEqual([]);
  });
});
