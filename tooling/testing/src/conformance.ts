import { readFileSync } from 'node:fs';
import {
  accuracy,
  declineReason,
  type Golden,
  type GoldenKind,
  goldenAttentionOptions,
  goldenGlaOptions,
  goldenHstuOptions,
  goldenSigmoidOptions,
  type KernelPass,
  type KernelRegistration,
  type KernelTensors,
  parseGolden,
  registeredKernels,
  selectKernel,
  toleranceFor,
} from '@attnkit/attention';
import { loadNativeBackend } from '@attnkit/skeleton';
import { Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { afterAll, beforeAll, describe, expect, type TestContext, test } from 'vitest';
import { poisonAllocations } from './poison.js';
import { webGpuTestContext } from './webgpu.js';

/**
 * The shared conformance runner (DESIGN.md "Tests"): one call per family test file generates,
 * for every backend the registry holds for the family, a seeded random-shape grid compared with
 * the family's float64 reference, runs on poisoned (NaN-filled) outputs, every golden of the
 * family's kinds, and the family's bad inputs. README.md beside this file documents the API.
 */

// The skeleton imports @attnkit/native (an optional dependency) lazily; the runner asks the
// registry synchronously while vitest collects the tests, so import it before that.
await loadNativeBackend();

/** Storage dtypes of the inputs; KERNELS.md "Tolerances" is keyed by these. */
export type StorageDType = 'f32' | 'f16' | 'bf16';

/** A family's options, as its public function and its registrations take them. */
export type ConformanceOptions = Record<string, unknown>;

/** Dimensions of one grid case (for THD: the per-sequence lengths in seqQ / seqK). */
export interface CaseDims {
  layout: 'BHND' | 'THD';
  batch: number;
  hq: number;
  hkv: number;
  /** Longest query / key sequence (BHND: Nq / Nk). */
  nq: number;
  nk: number;
  d: number;
  dv: number;
  /** THD only: the lengths behind cuSeqlensQ / cuSeqlensK. */
  seqQ?: readonly number[];
  seqK?: readonly number[];
}

/** One row of the grid: the features its cases must exercise; the rest is drawn at random. */
export interface GridSet {
  /** Appears in the test names. */
  name: string;
  /**
   * Query and key lengths (odd, from 1 to ~70): 'square' Nq = Nk; 'nq<nk' / 'nq>nk' (with
   * causal: rows with no key); 'decode' Nq = 1; 'any' (default) independent.
   */
  lengths?: 'any' | 'square' | 'nq<nk' | 'nq>nk' | 'decode';
  /** 'mha' Hq = Hkv; 'gqa' groups of 2..4; 'mqa' one kv head; default: either of 1 or 2. */
  heads?: 'any' | 'mha' | 'gqa' | 'mqa';
  /** 'THD': packed sequences with cuSeqlensQ / cuSeqlensK, one of them empty on a side. */
  layout?: 'BHND' | 'THD';
  /** 'different': Dv != D; 'same': Dv = D; default: Dv != D in one case of five. */
  dv?: 'any' | 'same' | 'different';
  /** Options of this set (family-specific ones too), fixed or drawn from the case's rng. */
  options?: ConformanceOptions | ((rng: Rng, dims: CaseDims) => ConformanceOptions);
}

/** The options of KERNELS.md "Common" that every FA-shaped family takes. */
export const COMMON_GRID: readonly GridSet[] = [
  { name: 'plain', lengths: 'square' },
  { name: 'nq!=nk', lengths: 'any' },
  { name: 'nq<nk causal', lengths: 'nq<nk', options: { causal: true } },
  { name: 'nq>nk causal', lengths: 'nq>nk', options: { causal: true } },
  { name: 'decode', lengths: 'decode', options: { causal: true } },
  { name: 'gqa', heads: 'gqa', options: (rng) => ({ causal: rng.uniform() < 0.5 }) },
  { name: 'mqa', heads: 'mqa', lengths: 'any' },
  // left >= 1: a one-key window makes softmax's dQ exactly 0, where a relative error means nothing.
  { name: 'window', options: (rng) => ({ window: [rng.int(1, 30), rng.int(0, 30)] }) },
  {
    name: 'window causal',
    options: (rng) => ({ causal: true, window: [rng.int(1, 30), pick(rng, [-1, 0, 5])] }),
  },
  { name: 'varlen', layout: 'THD' },
  { name: 'varlen causal', layout: 'THD', options: { causal: true } },
  { name: 'dv!=d', dv: 'different', options: (rng) => ({ causal: rng.uniform() < 0.5 }) },
];

export interface GridSpec {
  /** Default 20261122. */
  seed?: number;
  /** Default COMMON_GRID. */
  sets?: readonly GridSet[];
  /** Family-specific rows added after `sets`. */
  extraSets?: readonly GridSet[];
  /** f32 cases per set (default 2); f16 / bf16 get one case per set. */
  casesPerSet?: number;
  /** Default ['f32', 'f16', 'bf16']; a backend whose supports() declines a dtype skips it. */
  dtypes?: readonly StorageDType[];
}

/** The family's float64 oracle, by tensor name. */
export interface ConformanceReference {
  /** Inputs by name (q, k, v, ...) -> at least every output the forward kernels list. */
  forward(inputs: KernelTensors, options: ConformanceOptions): KernelTensors;
  /** The forward inputs plus `do` (the upstream gradient of o) -> the gradients (dq, dk, dv...). */
  backward?(inputs: KernelTensors, options: ConformanceOptions): KernelTensors;
}

/** A call that must fail with a typed error naming the argument at fault. */
export interface BadInput {
  name: string;
  /** Default 'forward'. Backward calls get the valid forward's outputs and `do` as inputs. */
  pass?: KernelPass;
  /** Merged over the valid problem's options. */
  options?: ConformanceOptions;
  /** The tensors to pass, made from the valid cpu inputs (moved to the backend's device after). */
  tensors?: (valid: KernelTensors) => KernelTensors;
  /** The AttnkitError subclass expected (ShapeError, DTypeError, ValueError...). */
  error: abstract new (
    ...args: never[]
  ) => Error;
  /** The `argument` the error must name. */
  argument: string;
  /** Only these backends (default: all). */
  backends?: readonly string[];
}

export interface ToleranceQuery {
  backend: string;
  pass: KernelPass;
  output: string;
  /** Storage dtype of the inputs. */
  dtype: StorageDType;
  maxSeqLen: number;
  /** 'grid' or the golden's name. */
  source: string;
}

export interface ConformanceSpec {
  /** The registry's family name ('softmax', 'sigmoid', ...). */
  family: string;
  reference: ConformanceReference;
  grid?: GridSpec;
  /** Random inputs of a grid case (default q, k, v of KERNELS.md "Common" in `dims`' layout). */
  makeInputs?: (rng: Rng, dims: CaseDims, dtype: StorageDType) => KernelTensors;
  /** Golden kinds (shared/goldens) to run; every reference tensor in them must be produced. */
  goldenKinds?: readonly GoldenKind[];
  /** A golden's options (default: goldenAttentionOptions / goldenSigmoidOptions / ... by kind). */
  goldenOptions?: (g: Golden) => ConformanceOptions;
  badInputs?: readonly BadInput[];
  /** The valid problem bad inputs start from (default q [1, 2, 9, 16], k and v [1, 1, 11, 16]). */
  validProblem?: () => { inputs: KernelTensors; options: ConformanceOptions };
  /** Default: KERNELS.md's toleranceFor({ dtype, maxSeqLen }). */
  tolerance?: (q: ToleranceQuery) => number;
  /**
   * How a pass is called (default: the registration's run). Give the family's public function
   * (with `backend`) to check its validation as well.
   */
  call?: (
    reg: KernelRegistration,
    inputs: KernelTensors,
    options: ConformanceOptions,
  ) => Promise<KernelTensors>;
  /** Only these backends (default: every backend registered for the family). */
  backends?: readonly string[];
}

/** Where a backend's tensors live; webgpu carries the (poisoning) test context. */
export type BackendEnv = { device: 'cpu' } | { device: 'webgpu'; ctx: WebGpuContext };

/** What one check found: failures (empty = pass), or why the backend declined the case. */
export interface CheckResult {
  failures: string[];
  /** The backend's supports() reason when it declined the whole case. */
  skipped?: string;
  /** The reason when the backend declined the case (and refused it with an UnsupportedError). */
  declined?: string;
  /** One line per compared tensor (name, relative L2, tolerance). */
  checked: string[];
}

export interface GridCase {
  /** `set dtype q[..] k[..] v[..] options`. */
  name: string;
  set: string;
  dtype: StorageDType;
  dims: CaseDims;
  inputs: KernelTensors;
  options: ConformanceOptions;
  /** Seed of the upstream gradient `do`, drawn with the reference output's shape. */
  gradSeed: number;
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(0, xs.length)]!;
}

/** An odd length in [lo, hi] (lo, hi odd). */
function odd(rng: Rng, lo: number, hi: number): number {
  return lo + 2 * rng.int(0, (hi - lo) / 2 + 1);
}

const DS = [16, 40, 64, 80];

function cumulative(lens: readonly number[]): number[] {
  const out = [0];
  for (const n of lens) out.push(out[out.length - 1]! + n);
  return out;
}

/** Draws the dimensions (and the layout options) of one case of `set`. */
export function drawDims(rng: Rng, set: GridSet): { dims: CaseDims; options: ConformanceOptions } {
  const batch = rng.int(1, 3);
  let hkv = pick(rng, [1, 2]);
  let group = pick(rng, [1, 2]);
  if (set.heads === 'mha') group = 1;
  if (set.heads === 'gqa') group = pick(rng, [2, 3, 4]);
  if (set.heads === 'mqa') {
    hkv = 1;
    group = pick(rng, [4, 6]);
  }
  const hq = hkv * group;
  // Small heads keep the many-head cases fast.
  const d = hq > 4 ? pick(rng, [16, 40]) : pick(rng, DS);
  const dvMode = set.dv ?? 'any';
  const dv =
    dvMode === 'different'
      ? pick(
          rng,
          DS.filter((x) => x !== d),
        )
      : dvMode === 'any' && rng.uniform() < 0.2
        ? pick(rng, DS)
        : d;
  const options: ConformanceOptions = {};
  if (set.layout === 'THD') {
    // Three sequences; the middle one lacks queries, keys or both, and must disturb nothing.
    const seqQ = [odd(rng, 1, 49), 0, odd(rng, 1, 49)];
    const seqK = [odd(rng, 3, 49), 0, odd(rng, 3, 49)];
    const empty = pick(rng, ['both', 'queries', 'keys']);
    if (empty === 'queries') seqK[1] = odd(rng, 1, 19);
    if (empty === 'keys') seqQ[1] = odd(rng, 1, 19);
    options.layout = 'THD';
    options.cuSeqlensQ = cumulative(seqQ);
    options.cuSeqlensK = Int32Array.from(cumulative(seqK));
    const dims: CaseDims = {
      layout: 'THD',
      batch: 3,
      hq,
      hkv,
      nq: Math.max(...seqQ),
      nk: Math.max(...seqK),
      d,
      dv,
      seqQ,
      seqK,
    };
    return { dims, options };
  }
  // At least 3 keys: with one key softmax's dQ is exactly 0 (a relative error means nothing).
  let nq = odd(rng, 1, 69);
  let nk = odd(rng, 3, 69);
  switch (set.lengths ?? 'any') {
    case 'square':
      nq = nk;
      break;
    case 'nq<nk':
      nq = odd(rng, 1, 39);
      nk = nq + rng.int(2, 41);
      break;
    case 'nq>nk':
      nk = odd(rng, 3, 39);
      nq = nk + rng.int(2, 41);
      break;
    case 'decode':
      nq = 1;
      nk = rng.int(3, 100);
      break;
  }
  return { dims: { layout: 'BHND', batch, hq, hkv, nq, nk, d, dv }, options };
}

/** q, k, v of KERNELS.md "Common" for `dims`, standard normal in `dtype`. */
export function commonInputs(rng: Rng, dims: CaseDims, dtype: StorageDType): KernelTensors {
  const { batch, hq, hkv, nq, nk, d, dv } = dims;
  if (dims.layout === 'THD') {
    const tq = (dims.seqQ ?? []).reduce((a, x) => a + x, 0);
    const tk = (dims.seqK ?? []).reduce((a, x) => a + x, 0);
    return {
      q: rng.randn([tq, hq, d], dtype),
      k: rng.randn([tk, hkv, d], dtype),
      v: rng.randn([tk, hkv, dv], dtype),
    };
  }
  return {
    q: rng.randn([batch, hq, nq, d], dtype),
    k: rng.randn([batch, hkv, nk, d], dtype),
    v: rng.randn([batch, hkv, nk, dv], dtype),
  };
}

function describeValue(x: unknown): string {
  if (x instanceof Tensor) return `${x.dtype}[${x.shape}]`;
  if (ArrayBuffer.isView(x) || Array.isArray(x)) return `[${Array.from(x as ArrayLike<unknown>)}]`;
  return String(x);
}

function describeCase(inputs: KernelTensors, options: ConformanceOptions): string {
  const parts = Object.entries(inputs).map(([n, t]) => `${n}[${t.shape}]`);
  for (const [key, value] of Object.entries(options)) {
    if (key === 'layout' || value === undefined || value === false) continue;
    parts.push(value === true ? key : `${key}=${describeValue(value)}`);
  }
  return parts.join(' ');
}

/** The grid's cases, drawn once (the same cases for every backend). */
export function gridCases(spec: ConformanceSpec): GridCase[] {
  const grid = spec.grid ?? {};
  const sets = [...(grid.sets ?? COMMON_GRID), ...(grid.extraSets ?? [])];
  const dtypes = grid.dtypes ?? ['f32', 'f16', 'bf16'];
  const perSet = grid.casesPerSet ?? 2;
  const seed = grid.seed ?? 20261122;
  const rng = new Rng(seed);
  const makeInputs = spec.makeInputs ?? commonInputs;
  const cases: GridCase[] = [];
  for (const dtype of dtypes) {
    for (const set of sets) {
      for (let n = 0; n < (dtype === 'f32' ? perSet : 1); n++) {
        const { dims, options } = drawDims(rng, set);
        const extra = typeof set.options === 'function' ? set.options(rng, dims) : set.options;
        Object.assign(options, extra);
        // Scores of a few units, as trained models have: exercises the online max shifts.
        if (options.scale === undefined)
          options.scale = (rng.uniform() * 2 + 0.5) / Math.sqrt(dims.d);
        const inputs = makeInputs(rng, dims, dtype);
        const name = `${set.name} ${dtype} ${describeCase(inputs, options)}`;
        cases.push({
          name,
          set: set.name,
          dtype,
          dims,
          inputs,
          options,
          gradSeed: seed * 7919 + cases.length,
        });
      }
    }
  }
  return cases;
}

const referenceCache = new WeakMap<
  GridCase,
  { forward: KernelTensors; backward?: KernelTensors; dO: Tensor }
>();

/** The float64 reference of a case (computed once, shared by the backends). */
export function caseReference(
  spec: ConformanceSpec,
  c: GridCase,
): { forward: KernelTensors; backward?: KernelTensors; dO: Tensor } {
  let r = referenceCache.get(c);
  if (!r) {
    const forward = spec.reference.forward(c.inputs, c.options);
    const o = forward.o;
    const dO = new Rng(c.gradSeed).randn(o ? o.shape : [0], c.dtype);
    const backward = spec.reference.backward?.({ ...c.inputs, do: dO }, c.options);
    r = { forward, backward, dO };
    referenceCache.set(c, r);
  }
  return r;
}

/** The registration of (family, pass, backend), if any. */
export function registrationOf(
  family: string,
  pass: KernelPass,
  backend: string,
): KernelRegistration | undefined {
  return registeredKernels({ family, pass }).find((r) => r.backend === backend);
}

/** Backends registered for the family (any pass), in priority order of their forward. */
export function conformanceBackends(spec: Pick<ConformanceSpec, 'family' | 'backends'>): string[] {
  const names = [...new Set(registeredKernels({ family: spec.family }).map((r) => r.backend))];
  return spec.backends ? names.filter((b) => spec.backends!.includes(b)) : names;
}

/** The device a registration reads: cpu when it can, else webgpu. */
export function deviceOf(reg: KernelRegistration): 'cpu' | 'webgpu' {
  if (reg.devices.includes('cpu')) return 'cpu';
  if (reg.devices.includes('webgpu')) return 'webgpu';
  throw new Error(
    `conformance: ${reg.family} ${reg.pass} ${reg.backend} reads ${reg.devices.join('/')} tensors; the runner moves tensors to cpu or webgpu only`,
  );
}

function toDevice(t: Tensor, env: BackendEnv): Tensor {
  return env.device === 'webgpu' && t.device === 'cpu' ? toWebGpu(t, env.ctx) : t;
}

async function toCpu(t: Tensor): Promise<Tensor> {
  return t.device === 'cpu' ? t : t.toCpu();
}

function disposeAll(tensors: Iterable<Tensor>, keep: ReadonlySet<Tensor>): void {
  for (const t of tensors) if (t.device !== 'cpu' && !keep.has(t)) t.dispose();
}

/**
 * Runs one pass on poisoned outputs: the cpu paths under a NaN-filling allocation hook (and
 * the pass must allocate its outputs through it, or unwritten elements would pass unnoticed),
 * webgpu on a context whose outputs start as NaN. Inputs are moved to the backend's device.
 */
export async function runPoisoned(
  spec: Pick<ConformanceSpec, 'call'>,
  reg: KernelRegistration,
  inputs: KernelTensors,
  options: ConformanceOptions,
  env: BackendEnv,
  failures: string[],
  /** Collects the device copies of the inputs made here, for the caller to dispose. */
  created?: Set<Tensor>,
): Promise<KernelTensors> {
  const moved: KernelTensors = {};
  for (const [name, t] of Object.entries(inputs)) {
    moved[name] = toDevice(t, env);
    if (moved[name] !== t) created?.add(moved[name]!);
  }
  const call = spec.call ?? ((r, i, o) => r.run(i, o));
  if (env.device === 'webgpu') {
    env.ctx.poisonOutputs = true;
    return call(reg, moved, options);
  }
  const acct = poisonAllocations();
  try {
    const out = await call(reg, moved, options);
    if (acct.count.output === 0) {
      failures.push(
        `${reg.pass}: poisoned outputs: the ${reg.backend} kernel allocated no output through @attnkit/skeleton's allocF32 (setAllocHook), so an unwritten element could pass unnoticed`,
      );
    }
    return out;
  } finally {
    acct.restore();
  }
}

/** Compares `names` of `actual` (cpu) with `expected`; appends failures and checked lines. */
export function compareOutputs(
  label: string,
  names: readonly string[],
  actual: KernelTensors,
  expected: KernelTensors,
  tol: (name: string) => number,
  result: CheckResult,
): void {
  for (const name of names) {
    const a = actual[name];
    const e = expected[name];
    if (!a) {
      result.failures.push(`${label} ${name}: not produced by the kernel`);
      continue;
    }
    if (!e) {
      result.failures.push(`${label} ${name}: the reference has no '${name}' to compare with`);
      continue;
    }
    if (a.shape.length !== e.shape.length || a.shape.some((n, i) => n !== e.shape[i])) {
      result.failures.push(`${label} ${name}: shape [${a.shape}], expected [${e.shape}]`);
      continue;
    }
    const acc = accuracy(a, e);
    const t = tol(name);
    result.checked.push(`${label} ${name}: relL2 ${acc.relL2.toExponential(2)} (tol ${t})`);
    if (acc.nonFinite > 0) {
      result.failures.push(
        `${label} ${name}: ${acc.nonFinite} NaN/Infinity values the reference does not have (unwritten or overflowed elements)`,
      );
    } else if (!(acc.relL2 <= t)) {
      result.failures.push(`${label} ${name}: relative L2 ${acc.relL2} > tolerance ${t}`);
    }
  }
}

function defaultTolerance(q: ToleranceQuery): number {
  return toleranceFor({ dtype: q.dtype, maxSeqLen: q.maxSeqLen });
}

function storageDType(t: Tensor | undefined): StorageDType {
  const d = t?.dtype;
  return d === 'f16' || d === 'bf16' ? d : 'f32';
}

/**
 * One grid case on one backend: forward (and backward when the spec has a backward reference
 * and the backend registers one), every output the registration lists compared with the
 * float64 reference at the KERNELS.md tolerance, on poisoned outputs.
 */
export async function checkGridCase(
  spec: ConformanceSpec,
  backend: string,
  c: GridCase,
  env: BackendEnv,
): Promise<CheckResult> {
  const result: CheckResult = { failures: [], checked: [] };
  const fwd = registrationOf(spec.family, 'forward', backend);
  if (!fwd) {
    result.failures.push(`no forward kernel is registered for ${spec.family} on ${backend}`);
    return result;
  }
  const request = (pass: KernelPass) => ({
    family: spec.family,
    pass,
    device: env.device,
    dtype: c.dtype,
    options: c.options,
  });
  const why = declineReason(fwd, request('forward'));
  if (why !== undefined) {
    // A declined case is not skipped: the registry must refuse it with a typed error that
    // carries the backend's reason (what a user who names this backend gets).
    let caught: unknown;
    try {
      selectKernel(request('forward'), backend);
    } catch (e) {
      caught = e;
    }
    const reasons = (caught as { reasons?: Record<string, string> } | undefined)?.reasons;
    if ((caught as Error | undefined)?.name !== 'UnsupportedError' || reasons?.[backend] !== why) {
      result.failures.push(
        `${backend} declines (${why}) but selecting it explicitly gave ${String(caught)} instead of an UnsupportedError with that reason`,
      );
    }
    result.checked.push(`forward declined with an UnsupportedError: ${why}`);
    result.declined = why;
    return result;
  }
  const ref = caseReference(spec, c);
  const tolerance = spec.tolerance ?? defaultTolerance;
  const maxSeqLen = Math.max(c.dims.nq, c.dims.nk);
  const tol = (pass: KernelPass) => (output: string) =>
    tolerance({ backend, pass, output, dtype: c.dtype, maxSeqLen, source: 'grid' });
  const created = new Set<Tensor>();
  const keep = new Set(Object.values(c.inputs));
  try {
    const out = await runPoisoned(spec, fwd, c.inputs, c.options, env, result.failures, created);
    for (const t of Object.values(out)) created.add(t);
    const cpu: KernelTensors = {};
    for (const [n, t] of Object.entries(out)) cpu[n] = await toCpu(t);
    compareOutputs('forward', fwd.outputs, cpu, ref.forward, tol('forward'), result);
    const bwd = registrationOf(spec.family, 'backward', backend);
    if (ref.backward && bwd) {
      const whyB = declineReason(bwd, request('backward'));
      if (whyB !== undefined) {
        result.checked.push(`backward declined: ${whyB}`);
      } else {
        const inputs = { ...c.inputs, ...out, do: ref.dO };
        const grads = await runPoisoned(
          spec,
          bwd,
          inputs,
          c.options,
          env,
          result.failures,
          created,
        );
        for (const t of Object.values(grads)) created.add(t);
        const gcpu: KernelTensors = {};
        for (const [n, t] of Object.entries(grads)) gcpu[n] = await toCpu(t);
        // An output the case has no use for (e.g. HSTU's drab without rab) is in neither the
        // kernel's result nor the reference: the reference says which outputs a case has.
        const refB = ref.backward;
        const names = bwd.outputs.filter((n) => gcpu[n] !== undefined || refB[n] !== undefined);
        compareOutputs('backward', names, gcpu, refB, tol('backward'), result);
      }
    }
  } catch (e) {
    result.failures.push(`threw ${(e as Error).name}: ${(e as Error).message}`);
  } finally {
    disposeAll(created, keep);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Goldens

const GOLDEN_OPTIONS: Partial<Record<string, (g: Golden) => ConformanceOptions>> = {
  softmax: (g) => ({ ...goldenAttentionOptions(g) }),
  softmax_varlen: (g) => ({ ...goldenAttentionOptions(g) }),
  sigmoid: (g) => ({ ...goldenSigmoidOptions(g) }),
  gla: (g) => ({ ...goldenGlaOptions(g) }),
  hstu: (g) => ({ ...goldenHstuOptions(g) }),
};

/** The options of a golden for `spec` (its goldenOptions, else the loader's mapping by kind). */
export function goldenOptionsFor(spec: ConformanceSpec, g: Golden): ConformanceOptions {
  const map = spec.goldenOptions ?? GOLDEN_OPTIONS[g.kind];
  if (!map)
    throw new Error(
      `conformance: no options mapping for golden kind ${g.kind}; give spec.goldenOptions`,
    );
  return map(g);
}

/** Names of the golden's tensors that `options` holds (block mask, rab, h0...), two levels deep. */
function tensorsInOptions(g: Golden, options: ConformanceOptions): Set<string> {
  const held = new Set<Tensor>();
  for (const value of Object.values(options)) {
    if (value instanceof Tensor) held.add(value);
    else if (value && typeof value === 'object' && !ArrayBuffer.isView(value)) {
      for (const inner of Object.values(value)) if (inner instanceof Tensor) held.add(inner);
    }
  }
  return new Set(Object.keys(g.tensors).filter((n) => held.has(g.tensors[n]!)));
}

/**
 * A golden split into what the kernels get and what they must reproduce: forward inputs (its
 * inputs but the upstream gradients and tensors passed in options), the upstream gradients,
 * and EVERY other tensor of the file as a reference (including ones the loader does not name).
 */
export function goldenParts(
  spec: ConformanceSpec,
  g: Golden,
): {
  options: ConformanceOptions;
  forwardInputs: KernelTensors;
  gradInputs: KernelTensors;
  references: string[];
} {
  const options = goldenOptionsFor(spec, g);
  const inOptions = tensorsInOptions(g, options);
  const inputs = new Set([...g.inputs, ...inOptions]);
  const forwardInputs: KernelTensors = {};
  const gradInputs: KernelTensors = {};
  for (const name of g.inputs) {
    if (inOptions.has(name)) continue;
    if (name === 'do' || name === 'dht') gradInputs[name] = g.tensors[name]!;
    else forwardInputs[name] = g.tensors[name]!;
  }
  const references = Object.keys(g.tensors)
    .filter((n) => !inputs.has(n))
    .sort();
  return { options, forwardInputs, gradInputs, references };
}

/** Longest sequence of a golden from its params (KERNELS.md: the f32 tolerance doubles from 4096). */
function goldenMaxSeqLen(g: Golden): number {
  const p = g.params;
  const lens = ['N', 'Nq', 'Nk', 'T', 'max_seq_len'].map((key) => Number(p[key] ?? 0));
  for (const key of ['cu_seqlens', 'cu_seqlens_q', 'cu_seqlens_k', 'seq_offsets']) {
    const cu = p[key];
    if (Array.isArray(cu)) for (let i = 1; i < cu.length; i++) lens.push(cu[i] - cu[i - 1]);
  }
  return Math.max(0, ...lens.filter(Number.isFinite));
}

/**
 * One golden on one backend through the registry (selectKernel with the backend named):
 * forward, then backward when the file has gradients; every reference tensor of the file must
 * be produced by one of the passes and match at the f32 tolerance. A backend that declines a
 * golden of its family's kinds fails.
 */
export async function checkGolden(
  spec: ConformanceSpec,
  backend: string,
  g: Golden,
  env: BackendEnv,
): Promise<CheckResult> {
  const result: CheckResult = { failures: [], checked: [] };
  const created = new Set<Tensor>();
  const compared = new Set<string>();
  let parts: ReturnType<typeof goldenParts>;
  try {
    parts = goldenParts(spec, g);
  } catch (e) {
    result.failures.push(`${g.name}: ${(e as Error).message}`);
    return result;
  }
  const { options, forwardInputs, gradInputs, references } = parts;
  const dtype = storageDType(forwardInputs.q ?? Object.values(forwardInputs)[0]);
  const maxSeqLen = goldenMaxSeqLen(g);
  const tolerance = spec.tolerance ?? defaultTolerance;
  const tol = (pass: KernelPass) => (output: string) =>
    tolerance({ backend, pass, output, dtype, maxSeqLen, source: g.name });
  const request = (pass: KernelPass) => ({
    family: spec.family,
    pass,
    device: env.device,
    dtype,
    options,
  });
  /** Runs a pass through the registry and compares the references it lists; its outputs. */
  const pass = async (
    which: KernelPass,
    inputs: KernelTensors,
  ): Promise<KernelTensors | undefined> => {
    try {
      const reg = selectKernel(request(which), backend);
      const out = await runPoisoned(spec, reg, inputs, options, env, result.failures, created);
      for (const t of Object.values(out)) created.add(t);
      const mine = references.filter((n) => reg.outputs.includes(n) && !compared.has(n));
      const cpu: KernelTensors = {};
      for (const n of mine) if (out[n]) cpu[n] = await toCpu(out[n]!);
      compareOutputs(which, mine, cpu, g.tensors, tol(which), result);
      for (const n of mine) compared.add(n);
      return out;
    } catch (e) {
      result.failures.push(`${which}: threw ${(e as Error).name}: ${(e as Error).message}`);
      return undefined;
    }
  };
  try {
    const out = await pass('forward', forwardInputs);
    if (out && Object.keys(gradInputs).length > 0) {
      await pass('backward', { ...forwardInputs, ...out, ...gradInputs });
    }
  } finally {
    disposeAll(created, new Set());
  }
  const produced = [
    ...new Set([
      ...(registrationOf(spec.family, 'forward', backend)?.outputs ?? []),
      ...(registrationOf(spec.family, 'backward', backend)?.outputs ?? []),
    ]),
  ];
  for (const n of references) {
    if (compared.has(n)) continue;
    result.failures.push(
      `${g.name}: reference tensor '${n}' is produced by no pass of ${backend} (its outputs: ${produced.join(', ') || 'none'})`,
    );
  }
  return result;
}

/** Every golden of `kinds` in every golden set, parsed (synchronously, at collection). */
export function loadGoldensOfKinds(kinds: readonly GoldenKind[]): Golden[] {
  const out: Golden[] = [];
  // Every golden set (the project's goldens/, and ../shared/goldens when present); a golden is
  // named with its set ("project/softmax_gqa") so test names and failures say which.
  for (const path of goldenFiles()) {
    const buf = readFileSync(path);
    const name = goldenLabel(path);
    const g = parseGolden(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), name);
    if (kinds.includes(g.kind)) out.push(g);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Bad inputs

function defaultValidProblem(): { inputs: KernelTensors; options: ConformanceOptions } {
  const rng = new Rng(5);
  const dims: CaseDims = { layout: 'BHND', batch: 1, hq: 2, hkv: 1, nq: 9, nk: 11, d: 16, dv: 16 };
  return { inputs: commonInputs(rng, dims, 'f32'), options: {} };
}

/**
 * One bad input on one backend: the call must reject (or throw) an instance of `bad.error`
 * whose `argument` is `bad.argument`. Backward bad inputs start from the valid forward's
 * outputs and an upstream gradient.
 */
export async function checkBadInput(
  spec: ConformanceSpec,
  backend: string,
  bad: BadInput,
  env: BackendEnv,
): Promise<CheckResult> {
  const result: CheckResult = { failures: [], checked: [] };
  const pass = bad.pass ?? 'forward';
  const reg = registrationOf(spec.family, pass, backend);
  if (!reg) {
    result.failures.push(`${bad.name}: no ${pass} kernel is registered on ${backend}`);
    return result;
  }
  const call = spec.call ?? ((r, i, o) => r.run(i, o));
  const valid = (spec.validProblem ?? defaultValidProblem)();
  const created = new Set<Tensor>();
  try {
    let base: KernelTensors = valid.inputs;
    if (pass === 'backward') {
      const fwd = registrationOf(spec.family, 'forward', backend);
      if (!fwd) throw new Error(`no forward kernel is registered on ${backend}`);
      const moved: KernelTensors = {};
      for (const [n, t] of Object.entries(valid.inputs)) moved[n] = toDevice(t, env);
      const out = await call(fwd, moved, valid.options);
      const cpu: KernelTensors = {};
      for (const [n, t] of Object.entries(out)) {
        created.add(t);
        cpu[n] = await toCpu(t);
      }
      for (const t of Object.values(moved)) created.add(t);
      const o = cpu.o;
      base = {
        ...valid.inputs,
        ...cpu,
        do: new Rng(6).randn(o ? o.shape : [0], o?.dtype ?? 'f32'),
      };
    }
    const tensors = bad.tensors ? bad.tensors(base) : base;
    const inputs: KernelTensors = {};
    for (const [n, t] of Object.entries(tensors)) {
      inputs[n] = toDevice(t, env);
      created.add(inputs[n]!);
    }
    const options = { ...valid.options, ...bad.options };
    let error: unknown;
    let outputs: KernelTensors | undefined;
    try {
      outputs = await call(reg, inputs, options);
    } catch (e) {
      error = e;
    }
    for (const t of Object.values(outputs ?? {})) created.add(t);
    const expected = `${bad.error.name} naming '${bad.argument}'`;
    if (error === undefined) {
      result.failures.push(`${bad.name}: expected ${expected}, but the call succeeded`);
    } else if (!(error instanceof bad.error)) {
      const e = error as Error;
      result.failures.push(`${bad.name}: expected ${expected}, got ${e?.name}: ${e?.message}`);
    } else {
      const argument = (error as { argument?: unknown }).argument;
      if (argument !== bad.argument) {
        result.failures.push(
          `${bad.name}: expected ${expected}, got one naming '${String(argument)}': ${(error as Error).message}`,
        );
      } else {
        result.checked.push(`${bad.name}: ${(error as Error).message}`);
      }
    }
  } catch (e) {
    result.failures.push(`${bad.name}: the valid problem failed: ${(e as Error).message}`);
  } finally {
    disposeAll(created, new Set(Object.values(valid.inputs)));
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// The vitest suite

/** Fails the test with every failure listed, or skips it with the backend's reason. */
export function reportCheck(result: CheckResult, ctx: TestContext): void {
  if (result.failures.length === 0 && result.skipped !== undefined) ctx.skip(result.skipped);
  expect(result.failures, result.failures.join('\n')).toEqual([]);
}

function allowMissing(backend: string, device: string): boolean {
  const env = (name: string) => process.env[`ATTNKIT_ALLOW_NO_${name.toUpperCase()}`] === '1';
  return env(backend) || env(device);
}

/**
 * Generates the conformance suite of `spec.family`: per registered backend (ts; native when
 * its addon loads; webgpu when a Dawn adapter is found), the random-shape grid, the goldens of
 * `spec.goldenKinds` and `spec.badInputs`. Call once at the top level of the family's test file,
 * after importing the family (which registers its kernels).
 *
 * A backend that is unavailable fails one test saying why, unless ATTNKIT_ALLOW_NO_<BACKEND>=1
 * (or ATTNKIT_ALLOW_NO_WEBGPU=1 for a webgpu device) declares that machine, when its tests are
 * skipped visibly.
 */
export function describeConformance(spec: ConformanceSpec): void {
  const backends = conformanceBackends(spec);
  describe(`conformance: ${spec.family}`, () => {
    if (backends.length === 0) {
      test('kernels are registered', () => {
        throw new Error(
          `no kernel is registered for family '${spec.family}'${spec.backends ? ` on ${spec.backends.join(', ')}` : ''} (import the family's package first)`,
        );
      });
      return;
    }
    const cases = gridCases(spec);
    const goldens = spec.goldenKinds ? loadGoldensOfKinds(spec.goldenKinds) : [];
    for (const backend of backends) {
      describe(backend, () => describeBackend(spec, backend, cases, goldens));
    }
  });
}

function describeBackend(
  spec: ConformanceSpec,
  backend: string,
  cases: readonly GridCase[],
  goldens: readonly Golden[],
): void {
  const fwd = registrationOf(spec.family, 'forward', backend);
  if (!fwd) {
    test('registers a forward kernel', () => {
      throw new Error(`${spec.family}: ${backend} registers no forward kernel`);
    });
    return;
  }
  const device = deviceOf(fwd);
  const available = fwd.available?.() ?? true;
  if (available !== true) {
    if (allowMissing(backend, device)) {
      test.skip(`${backend} unavailable (ATTNKIT_ALLOW_NO_${backend.toUpperCase()}=1): ${available}`, () => {});
    } else {
      test(`${backend} is available`, () => {
        throw new Error(
          `${spec.family} on ${backend} is unavailable here: ${available} (set ATTNKIT_ALLOW_NO_${backend.toUpperCase()}=1 to skip)`,
        );
      });
    }
    return;
  }
  let env: BackendEnv | undefined = device === 'cpu' ? { device: 'cpu' } : undefined;
  let missing: string | undefined;
  if (device === 'webgpu') {
    beforeAll(async () => {
      const ctx = await webGpuTestContext();
      if (ctx) env = { device: 'webgpu', ctx };
      else missing = 'no WebGPU adapter (ATTNKIT_ALLOW_NO_WEBGPU=1)';
    });
    afterAll(() => {
      if (env?.device === 'webgpu') env.ctx.destroy();
    });
  }
  const withEnv = (ctx: TestContext): BackendEnv => {
    if (!env) ctx.skip(missing ?? 'no device context');
    return env!;
  };

  if (spec.reference.backward && !registrationOf(spec.family, 'backward', backend)) {
    test('registers a backward kernel', () => {
      throw new Error(
        `${spec.family}: ${backend} registers no backward kernel, but the family has a backward reference`,
      );
    });
  }

  let ranF32 = 0;
  test.for(cases.map((c) => [c.name, c] as const))('grid %s', async ([, c], ctx) => {
    const r = await checkGridCase(spec, backend, c, withEnv(ctx));
    if (r.skipped === undefined && r.declined === undefined && c.dtype === 'f32') ranF32++;
    reportCheck(r, ctx);
  });
  if (cases.some((c) => c.dtype === 'f32')) {
    test('grid: the backend runs f32 cases (not all declined)', (ctx) => {
      withEnv(ctx);
      expect(ranF32, `${backend} declined every f32 grid case`).toBeGreaterThan(0);
    });
  }

  if (spec.goldenKinds) {
    if (goldens.length === 0) {
      test('goldens exist', () => {
        throw new Error(
          `no golden of kinds ${spec.goldenKinds!.join(', ')} in the goldens directory`,
        );
      });
    }
    test.for(goldens.map((g) => [g.name, g] as const))('golden %s', async ([, g], ctx) => {
      reportCheck(await checkGolden(spec, backend, g, withEnv(ctx)), ctx);
    });
  }

  const bads = (spec.badInputs ?? []).filter((b) => !b.backends || b.backends.includes(backend));
  test.for(bads.map((b) => [b.name, b] as const))('bad input: %s', async ([, b], ctx) => {
    reportCheck(await checkBadInput(spec, backend, b, withEnv(ctx)), ctx);
  });
}

/** Random permutations in the LSE layout ([B, H, N] or, THD, [H, total]) for a grid case. */
export function randomPermutations(rng: Rng, d: CaseDims, side: 'q' | 'k'): Int32Array {
  const heads = side === 'q' ? d.hq : d.hkv;
  const lens =
    d.layout === 'THD'
      ? [...((side === 'q' ? d.seqQ : d.seqK) ?? [])]
      : Array.from({ length: d.batch }, () => (side === 'q' ? d.nq : d.nk));
  const slice = (n: number) => {
    const a = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = rng.int(0, i + 1);
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  };
  const out: number[] = [];
  if (d.layout === 'THD')
    for (let h = 0; h < heads; h++) for (const n of lens) out.push(...slice(n));
  else for (const n of lens) for (let h = 0; h < heads; h++) out.push(...slice(n));
  return Int32Array.from(out);
}

/**
 * Grid rows for the skeleton's schedules, which every family on it takes: split-K (decode and
 * varlen) and permuted rows / keys (BHND causal; THD with split-K).
 */
export const TILED_SCHEDULE_SETS: readonly GridSet[] = [
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
];

/** Bad inputs every family on the skeleton must refuse with a typed error naming the argument. */
export const TILED_BAD_INPUTS: readonly BadInput[] = [
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
];
