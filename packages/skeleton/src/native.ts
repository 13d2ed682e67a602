import type { AttentionProblem, ResolvedScoreMod } from '@attnkit/attention';
// Types only: the package itself is an optional dependency, imported lazily below.
import type * as NativePackage from '@attnkit/native';
import type {
  NativeAttentionProblem,
  NativeEngine,
  NativeHstuRab,
  NativePermutation,
  NativeRabGrads,
  NativeScoreMod,
} from '@attnkit/native';
import {
  BackendUnavailableError,
  bitsToBf16,
  bitsToF16,
  describe,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { allocF32, allocF32Written } from './cpu/alloc.js';
import { checkCpuQ, checkLike, encodeOutput } from './cpu/run.js';
import { resolveSchedule } from './cpu/schedule.js';
import { biasGradLayout, biasGradMod, reduceBiasGrad, type TiledHooks } from './hooks.js';
import type { HstuRabHook } from './hstu-rab.js';
import { planNativeTiles } from './plan.js';

/**
 * The skeleton's native backend: @attnkit/native's C++ FA2 kernels, templated on the same hooks
 * as the TS kernel and the WGSL generator (normalize: softmax with optional sinks, sigmoid or silu;
 * the built-in score mods softcap, alibi and bias). A resolved AttentionProblem already is the
 * engine's problem (same fields and meaning); the hooks join it. Inputs go to the engine as f32
 * (contiguous f32 tensors without a copy), results come back in q's dtype (lse, dsinks f32).
 *
 * @attnkit/native is an optional dependency (browsers and installs without a C++ toolchain do
 * without it), so it is never imported statically: loadNativeBackend() imports it, in Node
 * only, on the first need (a family call on cpu tensors, a native run, or this function), and
 * its addon loads on the first native call after that. When it is absent the native backend is
 * declined with the reason and the install command; a browser bundle never contains it.
 */

export interface NativeTileOptions {
  /** Backward query rows per block (default: planNativeTiles from the I/O model); 1..1024. */
  blockQ?: number;
  /** Forward keys per tile (default: the engine's); 1..1024. */
  blockK?: number;
  /** The native engine implements 'fa2' only. */
  algorithm?: 'fa1' | 'fa2';
}

type NativeModule = typeof NativePackage;

/** What a user runs to get the native backend. */
export const NATIVE_INSTALL_COMMAND = 'npm install @attnkit/native';

// A computed specifier: bundlers (esbuild, Vite, webpack) do not follow it, so no browser bundle
// pulls the Node-only package in, and a missing optional package is not a bundling error.
const NATIVE_PACKAGE = '@attnkit/native';
const importNativePackage = (): Promise<unknown> =>
  import(/* @vite-ignore */ /* webpackIgnore: true */ NATIVE_PACKAGE);

let importer: () => Promise<unknown> = importNativePackage;
let nativePackage: NativeModule | undefined;
let packageError: string | undefined;
let loading: Promise<void> | undefined;

function inNode(): boolean {
  const proc = (globalThis as { process?: { versions?: { node?: unknown } } }).process;
  return typeof proc?.versions?.node === 'string';
}

function isMissingPackage(e: unknown): boolean {
  const { code, message } = (e ?? {}) as { code?: unknown; message?: unknown };
  return (
    (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') &&
    String(message).includes(NATIVE_PACKAGE)
  );
}

function startLoading(): Promise<void> {
  loading ??= (async () => {
    // Settled synchronously outside Node, so nativeAvailable() answers at once in a browser.
    if (!inNode()) {
      packageError = 'the native engine runs in Node only';
      return;
    }
    try {
      const m = (await importer()) as Partial<NativeModule> | undefined;
      if (typeof m?.loadNative !== 'function' || typeof m.nativeLoadError !== 'function') {
        throw new Error('it exports no loadNative / nativeLoadError');
      }
      nativePackage = m as NativeModule;
    } catch (e) {
      packageError = isMissingPackage(e)
        ? `${NATIVE_PACKAGE} is not installed (an optional dependency; install it with \`${NATIVE_INSTALL_COMMAND}\`)`
        : `${NATIVE_PACKAGE} failed to import: ${(e as Error)?.message ?? String(e)}`;
    }
  })();
  return loading;
}

/**
 * Imports @attnkit/native (once; Node only) and answers as nativeAvailable(). The family
 * functions call it before they pick a backend for cpu tensors; call it yourself before a
 * synchronous nativeAvailable() or registry query (declineReason, selectKernel) that should
 * see the native backend.
 */
export async function loadNativeBackend(): Promise<true | string> {
  await startLoading();
  return nativeAvailable();
}

/**
 * Replaces how @attnkit/native is imported and forgets what was loaded (tests simulate an
 * absent or broken package with it); no argument restores the real import.
 * @internal
 */
export function setNativeImporter(load?: () => Promise<unknown>): void {
  importer = load ?? importNativePackage;
  nativePackage = undefined;
  packageError = undefined;
  loading = undefined;
}

/**
 * true when the addon loads, else why not (loads it on the first call; Node only). Synchronous:
 * until loadNativeBackend() (or a family call) has imported @attnkit/native it answers that the
 * package is still loading, and starts loading it. When the addon does not load,
 * @attnkit/native warns once why: the registry then falls back to ts silently.
 */
export function nativeAvailable(): true | string {
  if (!nativePackage) {
    // Outside Node this settles at once (packageError); in Node the import takes a while.
    void startLoading();
    return `the native engine is unavailable: ${
      packageError ??
      `${NATIVE_PACKAGE} is still loading (await loadNativeBackend() before asking synchronously)`
    }`;
  }
  return nativePackage.loadNative()
    ? true
    : `the native engine is unavailable: ${nativePackage.nativeLoadError()}`;
}

/**
 * The loaded engine, or undefined when the addon is unavailable or still loading (await
 * loadNativeBackend() first). For families that call engine ops beside attention (gathers,
 * GEMMs) on the native backend.
 */
export function nativeEngine(): NativeEngine | undefined {
  return nativePackage?.loadNative() ?? undefined;
}

/** The engine for an explicit `backend: 'native'`, which never falls back silently. */
async function requireNativeEngine(): Promise<NativeEngine> {
  await startLoading();
  const engine = nativeEngine();
  if (!engine) {
    throw new BackendUnavailableError(
      `backend: expected the native engine, but it is unavailable: ${packageError ?? nativePackage?.nativeLoadError()}`,
      'backend',
    );
  }
  return engine;
}

/** At most this many score mods per call (the engine's fixed-size list). */
const MAX_MODS = 8;

/** Why these hooks cannot run natively: the argument at fault, its message and a reason. */
function unsupported(
  p: AttentionProblem,
  hooks: TiledHooks,
  algorithm: unknown,
): { argument: string; message: string; why: string } | undefined {
  if (algorithm !== undefined && algorithm !== 'fa1' && algorithm !== 'fa2') {
    return {
      argument: 'algorithm',
      message: `algorithm: expected "fa1" or "fa2", got ${describe(algorithm)}`,
      why: `unknown algorithm ${describe(algorithm)}`,
    };
  }
  if (algorithm === 'fa1') {
    return {
      argument: 'algorithm',
      message:
        'algorithm: expected "fa2" with the native backend (it implements FA2 only), got "fa1"',
      why: 'the native engine implements FA2 only',
    };
  }
  const custom = hooks.scoreMods.find((m) => m.kind === 'custom');
  if (custom) {
    return {
      argument: 'scoreMod',
      message: `scoreMod: expected built-in score mods (softcap, alibi, bias) with the native backend, got custom mod "${custom.name}"`,
      why: 'the native engine runs built-in score mods only (softcap, alibi, bias); custom mods run on ts and webgpu',
    };
  }
  if (hooks.scoreMods.length > MAX_MODS) {
    return {
      argument: 'scoreMod',
      message: `scoreMod: expected at most ${MAX_MODS} score mods with the native backend, got ${hooks.scoreMods.length}`,
      why: `the native engine runs at most ${MAX_MODS} score mods`,
    };
  }
  const perm = hooks.permute;
  if (hooks.rab && perm && (perm.q !== undefined || perm.k !== undefined)) {
    return {
      argument: 'permute',
      message:
        "permute: expected no permuted tiles with HSTU's bucketed rab on the native backend (the rab reads the sequence order's positions), got a permutation",
      why: "the native engine runs HSTU's bucketed rab on unpermuted tiles only",
    };
  }
  if (p.maskMod !== undefined) {
    return {
      argument: 'maskMod',
      message: `maskMod: expected no mask mod with the native backend (mask mods are TS / WGSL functions), got "${p.maskMod.name}"`,
      why: 'the native engine runs no user mask mods (they are TS / WGSL functions); mask mods run on ts and webgpu',
    };
  }
  return undefined;
}

/**
 * true, or why the native backend cannot run this problem with these hooks: custom score mods
 * and mask mods (TS / WGSL functions) and FA1 are not native.
 */
export function nativeSupports(
  p: AttentionProblem,
  hooks: TiledHooks,
  algorithm?: string,
): true | string {
  return unsupported(p, hooks, algorithm)?.why ?? true;
}

/**
 * The engine's problem for a resolved problem and hooks (normalisation, score mods, HSTU's mask
 * and rab, split-K / stream-K, the planned query block), as tiledForwardNative and
 * tiledBackwardNative pass it: for a caller that runs 'attention.forward' / 'attention.backward'
 * synchronously on its own engine handle (@attnkit/nn's attention op, for any tiled family).
 * Permuted tiles go to the engine as inputs (permQ / permK), not in the problem: the caller
 * passes them or refuses them. A ValueError for what nativeSupports() rejects.
 */
export function nativeAttentionProblem(
  p: AttentionProblem,
  hooks: TiledHooks,
): NativeAttentionProblem {
  const no = unsupported(p, hooks, undefined);
  if (no) throw new ValueError(no.message, no.argument);
  return nativeProblem(p, hooks, {});
}

function checkTile(value: unknown, name: 'blockQ' | 'blockK'): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new ValueError(`${name}: expected a positive integer, got ${describe(value)}`, name);
  }
  // The engine's kernels take tile hints up to 1024.
  return Math.min(value, 1024);
}

function nativeMod(m: ResolvedScoreMod): NativeScoreMod {
  switch (m.kind) {
    case 'softcap':
      return { kind: 'softcap', cap: m.cap };
    case 'alibi':
      return { kind: 'alibi', slopes: m.slopes };
    case 'bias': {
      const { batchStride, headStride, rowStride } = m;
      return { kind: 'bias', bias: engineInput(m.bias), batchStride, headStride, rowStride };
    }
    default:
      // unsupported() rejected custom mods before.
      throw new ValueError(
        `scoreMod: expected a built-in score mod, got ${describe(m)}`,
        'scoreMod',
      );
  }
}

/**
 * HSTU's bucketed rab hook as the engine's problem.hstuRab: the tables' f32 data with their
 * shapes (the family layer validated them: [1 or Hq, P odd], [1 or Hq, T]), the per-token times
 * and the thresholds as they are (the engine checks lengths and ranges: RangeError naming them).
 */
function nativeRab(r: HstuRabHook): NativeHstuRab {
  const out: NativeHstuRab = {};
  if (r.positionTable) {
    const [heads, cols] = r.positionTable.shape as [number, number];
    out.posTable = engineInput(r.positionTable);
    out.posHeads = heads;
    out.numPos = cols;
  }
  if (r.timestampTable) {
    const [heads, cols] = r.timestampTable.shape as [number, number];
    out.timeTable = engineInput(r.timestampTable);
    out.timeHeads = heads;
    out.numTime = cols;
    out.keyTime = r.keyTime;
    out.nextTime = r.nextTime;
    out.thresholds = r.thresholds;
  }
  return out;
}

/** The engine's problem: the resolved problem, its hooks and the tile hints. */
function nativeProblem(
  p: AttentionProblem,
  hooks: TiledHooks | undefined,
  tiles: { blockQ?: number | undefined; blockK?: number | undefined },
): NativeAttentionProblem {
  // The backward's query-row block comes from the I/O model (io-complexity's planTiles, L2
  // budget): in three A/B runs it was within +-5% of the engine's default (noise on this
  // shared 2-core machine; benchmarks/2026-11-22-native-tile-hints-ab.jsonl). The forward key
  // tile stays the engine's: the model ignores causal tile skipping, and its larger key tiles
  // ran 1-10% slower causal in every run.
  const plan = planNativeTiles({ nq: p.maxSeqQ, nk: p.maxSeqK, d: p.d, dv: p.dv });
  const out: NativeAttentionProblem = {
    ...p,
    blockQ: checkTile(tiles.blockQ, 'blockQ') ?? plan.blockQ,
    blockK: checkTile(tiles.blockK, 'blockK'),
  };
  if (hooks) {
    const n = hooks.normalize;
    out.normalize =
      n.kind === 'softmax'
        ? { kind: 'softmax', sinks: n.sinks }
        : n.kind === 'sigmoid'
          ? { kind: 'sigmoid', bias: n.bias }
          : { kind: 'silu', factor: n.factor };
    out.scoreMods = hooks.scoreMods.map(nativeMod);
    const m = hooks.mask;
    if (m) {
      const { numTargets, contextual, maxAttnLen, minFull, causal } = m;
      out.hstuMask = { numTargets, contextual, maxAttnLen, minFull, causal };
    }
    if (hooks.rab) out.hstuRab = nativeRab(hooks.rab);
    // More splits than key tiles only adds empty ranges; the engine takes up to 65536.
    const schedule = resolveSchedule(hooks.schedule);
    const splits = Math.min(schedule.splits, 65536);
    if (splits > 1) out.splits = splits;
    // Stream-K: the engine plans it from its own tiling (its units and key tiles are not the
    // TS kernel's), with the same rule as planDecodePartition. It takes up to 2^24 workers;
    // clamping changes the plan only past 2^24 key tiles in total (below, the extra workers
    // would be idle).
    if (schedule.streamKWorkers !== undefined)
      out.streamK = { workers: Math.min(schedule.streamKWorkers, 1 << 24) };
  }
  return out;
}

const count = (shape: readonly number[]) => shape.reduce((a, x) => a * x, 1);

/**
 * The permuted-tiles hook as the engine's optional inputs permQ / permK (Int32Arrays in the LSE
 * layout; the family layer validated them as permutations, the engine checks their lengths).
 */
function nativePermutation(hooks: TiledHooks): NativePermutation | undefined {
  const perm = hooks.permute;
  if (perm === undefined || (perm.q === undefined && perm.k === undefined)) return undefined;
  return { permQ: perm.q, permK: perm.k };
}

/**
 * The f32 elements the engine reads: a contiguous f32 tensor's own storage (a view, no copy;
 * the engine only reads its inputs), else a gathered or decoded copy (strided, f16, bf16).
 */
function engineInput(t: Tensor, engine?: NativeEngine, taken?: Float32Array[]): Float32Array {
  if (t.dtype === 'f32') return t.data<'f32'>();
  if (engine && (t.dtype === 'f16' || t.dtype === 'bf16') && t.isContiguous()) {
    const decoded = decodeHalvesNative(engine, t.data<'f16'>(), t.dtype, taken);
    if (decoded) return decoded;
  }
  return t.toFloat32Array();
}

// The f32 copies of decoded halves, kept for the next native call: a decode loop calls with
// the same sizes every token, and a fresh copy's first touch of its pages took longer than the
// decoding (B 1, Hkv 8, 32K keys of D 128: 32-40 ms a tensor into fresh memory, 12-19 into a
// reused buffer). At most HALF_SCRATCH_MAX buffers, all dropped after HALF_SCRATCH_IDLE_MS
// without a native call, so an idle process holds none.
const halfScratch: Float32Array[] = [];
const HALF_SCRATCH_MAX = 8;
const HALF_SCRATCH_IDLE_MS = 1000;
let halfScratchTimer: ReturnType<typeof setTimeout> | undefined;

/** A buffer for n floats: a kept one of n to 2n (the smallest), else a new one; noted in `taken`. */
function takeHalfScratch(n: number, taken: Float32Array[] | undefined): Float32Array {
  if (!taken) return allocF32Written(n, 'output');
  let best = -1;
  for (let i = 0; i < halfScratch.length; i++) {
    const len = halfScratch[i]!.length;
    if (len >= n && len <= 2 * n && (best < 0 || len < halfScratch[best]!.length)) best = i;
  }
  const buf = best >= 0 ? halfScratch.splice(best, 1)[0]! : allocF32Written(n, 'output');
  taken.push(buf);
  return buf.length === n ? buf : buf.subarray(0, n);
}

/**
 * Runs an engine call on q, k and v as the engine reads them (engineInput), giving the decoded
 * halves' buffers back once the call has settled, so the next call reuses them.
 */
async function withEngineQkv<R>(
  engine: NativeEngine,
  qkv: readonly [Tensor, Tensor, Tensor],
  call: (q: Float32Array, k: Float32Array, v: Float32Array) => Promise<R>,
): Promise<R> {
  const taken: Float32Array[] = [];
  try {
    const [q, k, v] = qkv.map((t) => engineInput(t, engine, taken)) as [
      Float32Array,
      Float32Array,
      Float32Array,
    ];
    return await call(q, k, v);
  } finally {
    releaseHalfScratch(taken);
  }
}

/** Gives a call's buffers back once the engine is done with them (its promise settled). */
function releaseHalfScratch(taken: Float32Array[]): void {
  if (taken.length === 0) return;
  halfScratch.push(...taken);
  while (halfScratch.length > HALF_SCRATCH_MAX) halfScratch.shift();
  if (halfScratchTimer !== undefined) clearTimeout(halfScratchTimer);
  halfScratchTimer = setTimeout(() => {
    halfScratch.length = 0;
    halfScratchTimer = undefined;
  }, HALF_SCRATCH_IDLE_MS);
  (halfScratchTimer as { unref?: () => void }).unref?.();
}

/**
 * f16 / bf16 halves to f32 on the engine's threads (op nn.decodeHalf; an addon without it:
 * undefined). Decoding in JS (a table lookup an element) was most of a decode call over an f16
 * KV cache (B 1, Hkv 8, 32K keys of D 128: 224-228 ms against the f32 call's 15-22; 88-90 with
 * the op). The output is allocated as kind 'output' (the op writes all of it; tests poison it).
 * The op reads the halves' bytes as floats (two a float), so they must start 4-byte aligned;
 * an odd last half is decoded here.
 */
function decodeHalvesNative(
  engine: NativeEngine,
  h: Uint16Array,
  dtype: 'f16' | 'bf16',
  taken: Float32Array[] | undefined,
): Float32Array | undefined {
  if (h.byteOffset % 4 !== 0 || !('nn.decodeHalf' in engine.ops())) return undefined;
  const out = takeHalfScratch(h.length, taken);
  const even = h.length - (h.length % 2);
  if (even > 0)
    engine.runSync(
      'nn.decodeHalf',
      { count: even, bf16: dtype === 'bf16' ? 1 : 0 },
      { x: new Float32Array(h.buffer, h.byteOffset, even / 2) },
      { out: out.subarray(0, even) },
    );
  if (even < h.length) out[even] = (dtype === 'f16' ? bitsToF16 : bitsToBf16)(h[even]!);
  return out;
}

/** Options, algorithm, hooks and q: typed errors naming the argument, then the engine. */
async function prepare(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  opts: NativeTileOptions | undefined,
): Promise<{ engine: NativeEngine; problem: NativeAttentionProblem }> {
  if (opts !== undefined && (opts === null || typeof opts !== 'object')) {
    throw new ValueError(`options: expected an object, got ${describe(opts)}`, 'options');
  }
  const options = opts ?? {};
  const no = unsupported(p, hooks, options.algorithm);
  if (no) throw new ValueError(no.message, no.argument);
  checkCpuQ(q, 'native');
  const problem = nativeProblem(p, hooks, options);
  const engine = await requireNativeEngine();
  // An addon built before problem.hstuRab would ignore it and return attention without the rab:
  // its op registry (the backward's outputs) says whether it knows the hook.
  if (hooks.rab && !engine.ops()['attention.backward'].outputs.includes('dPositionTable')) {
    throw new BackendUnavailableError(
      "backend: expected a native addon that runs HSTU's bucketed rab (problem.hstuRab), but the loaded one predates it; rebuild it (`pnpm --filter @attnkit/native build:addon`, or reinstall @attnkit/native)",
      'backend',
    );
  }
  return { engine, problem };
}

/**
 * The skeleton's forward on the native engine: o in q's dtype (f16/bf16 encoded from f32), lse
 * f32 (softmax; undefined for the pointwise sigmoid and silu). Throws ValueError for what nativeSupports() rejects,
 * BackendUnavailableError when the addon does not load.
 */
export async function tiledForwardNative(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts?: NativeTileOptions,
): Promise<{ o: Tensor; lse: Tensor | undefined }> {
  const { engine, problem } = await prepare(p, hooks, q, opts);
  const pointwise = hooks.normalize.kind !== 'softmax';
  // Not zero-filled: the engine writes every element of o and lse (rows without keys too; its
  // tests run every schedule, mask and pointwise weight on NaN-poisoned outputs). Except with a
  // query permutation: its rows are written where the index says, and an index that is not a
  // permutation (the families check; the skeleton takes it as given) would leave rows unwritten.
  const alloc = hooks.permute?.q === undefined ? allocF32Written : allocF32;
  const o = alloc(count(p.oShape), 'output');
  const lse = pointwise ? undefined : alloc(count(p.lseShape), 'output');
  await withEngineQkv(engine, [q, k, v], (q32, k32, v32) =>
    engine.flashForward(problem, q32, k32, v32, o, lse, nativePermutation(hooks)),
  );
  return {
    o: encodeOutput(o, p.oShape, q.dtype),
    lse: lse === undefined ? undefined : Tensor.from(lse, p.lseShape),
  };
}

/** tiledBackwardNative's result: with HSTU's rab with grad, the tables' gradients (f32). */
export interface NativeGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  dsinks?: Tensor;
  dbias?: Tensor;
  dPositionTable?: Tensor;
  dTimestampTable?: Tensor;
}

/**
 * The skeleton's backward on the native engine. Softmax needs the forward's o (q's dtype) and
 * lse (f32); the pointwise sigmoid and silu ignore them. dO in q's dtype. ShapeError / DTypeError / DeviceError name
 * o, lse or dO. Returns dq, dk, dv in q's dtype and, with sinks, dsinks f32 [Hq]
 * (-sum over rows e^(sink_h - LSE_i) (dO_i . O_i), computed by the engine).
 */
export async function tiledBackwardNative(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor | undefined,
  lse: Tensor | undefined,
  dO: Tensor,
  opts?: NativeTileOptions,
): Promise<NativeGrads> {
  const { engine, problem } = await prepare(p, hooks, q, opts);
  const softmax = hooks.normalize.kind === 'softmax';
  const O = softmax
    ? engineInput(checkLike(o, 'o', p.oShape, q.dtype, 'native'), engine)
    : undefined;
  const LSE = softmax ? engineInput(checkLike(lse, 'lse', p.lseShape, 'f32', 'native')) : undefined;
  const G = engineInput(checkLike(dO, 'dO', p.oShape, q.dtype, 'native'), engine);
  const dq = allocF32(q.size, 'output');
  const dk = allocF32(k.size, 'output');
  const dv = allocF32(v.size, 'output');
  const sinks = hooks.normalize.kind === 'softmax' ? hooks.normalize.sinks : undefined;
  const dsinks = sinks ? allocF32(p.hq, 'output') : undefined;
  // A bias with grad: the engine stores dS per (b, h) (no atomics), into dbias itself when no
  // dim is broadcast, else into a [B, Hq, R, C] buffer summed here over the broadcast dims.
  const grad = biasGradMod(hooks.scoreMods);
  const layout = grad && biasGradLayout(p, grad.mod);
  const dbias = grad ? allocF32(grad.mod.bias.size, 'output').fill(0) : undefined;
  const dbFull = layout && !layout.direct ? new Float32Array(layout.size) : dbias;
  if (grad && layout && dbFull) {
    const m = problem.scoreMods![grad.index] as Extract<NativeScoreMod, { kind: 'bias' }>;
    problem.scoreMods = problem.scoreMods!.map((x, n) =>
      n === grad.index
        ? {
            ...m,
            dbias: dbFull,
            dbiasBatchStride: layout.batchStride,
            dbiasHeadStride: layout.headStride,
          }
        : x,
    );
  }
  // HSTU's rab with grad: the engine sums dZ per table column (per-thread f64 partials).
  const rab = hooks.rab?.grad ? hooks.rab : undefined;
  const rabGrads: NativeRabGrads = {};
  if (rab?.positionTable) rabGrads.dPositionTable = allocF32(rab.positionTable.size, 'output');
  if (rab?.timestampTable) rabGrads.dTimestampTable = allocF32(rab.timestampTable.size, 'output');
  await withEngineQkv(engine, [q, k, v], (q32, k32, v32) =>
    engine.flashBackward(
      problem,
      q32,
      k32,
      v32,
      O,
      LSE,
      G,
      dq,
      dk,
      dv,
      dsinks,
      nativePermutation(hooks),
      rabGrads,
    ),
  );
  const out: NativeGrads = {
    dq: encodeOutput(dq, q.shape, q.dtype),
    dk: encodeOutput(dk, k.shape, q.dtype),
    dv: encodeOutput(dv, v.shape, q.dtype),
  };
  if (dsinks) out.dsinks = Tensor.from(dsinks, [p.hq]);
  if (grad && dbias && dbFull) {
    if (dbFull !== dbias) reduceBiasGrad(p, grad.mod, dbFull, dbias);
    out.dbias = Tensor.from(dbias, grad.mod.bias.shape);
  }
  if (rab?.positionTable && rabGrads.dPositionTable)
    out.dPositionTable = Tensor.from(rabGrads.dPositionTable, rab.positionTable.shape);
  if (rab?.timestampTable && rabGrads.dTimestampTable)
    out.dTimestampTable = Tensor.from(rabGrads.dTimestampTable, rab.timestampTable.shape);
  return out;
}
