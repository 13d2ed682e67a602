import {
  type AttentionOptions,
  type AttentionProblem,
  type KernelPass,
  type KernelRequest,
  type KernelTensors,
  type PermuteOptions,
  type ResolvedScoreMod,
  registerKernel,
  resolveAttentionProblem,
  resolvePermute,
  resolveScoreMods,
  type ScoreMod,
  selectKernel,
} from '@attnkit/attention';
import { describe, ShapeError, type Tensor, ValueError } from '@attnkit/tensor';
import type { GpuProfiler } from '@attnkit/webgpu';
import { tiledBackwardTs, tiledForwardTs } from './cpu/run.js';
import { biasGradMod, type HstuMaskHook, type NormalizeHook, type TiledHooks } from './hooks.js';
import type { HstuRabHook } from './hstu-rab.js';
import {
  loadNativeBackend,
  nativeAvailable,
  tiledBackwardNative,
  tiledForwardNative,
} from './native.js';
import {
  encodeBackwardWebGpu,
  encodeForwardWebGpu,
  tiledBackwardWebGpu,
  tiledForwardWebGpu,
  type WebGpuEncodeTarget,
  type WebGpuTileOptions,
} from './webgpu/host.js';
import type { WebGpuFlashKernel, WebGpuTileConfig } from './webgpu/plan.js';

/**
 * A family on the skeleton is its hooks plus registrations: `defineTiledFamily` registers the
 * family's forward and backward on every backend of the skeleton (ts, native, webgpu) and
 * returns the dispatching public functions. Dispatch reads the registry, so `attnkit verify`,
 * `attnkit bench` and the conformance runner select exactly as the public functions do.
 */

export type TiledBackend = 'ts' | 'native' | 'webgpu';

/** Options every family on the skeleton takes (KERNELS.md "Common" plus mods and tiling). */
export interface TiledOptions extends AttentionOptions {
  /** One score mod or a list applied in order (softcap, alibi, bias, custom). */
  scoreMod?: ScoreMod | readonly ScoreMod[];
  /** Default: the registry's choice for the inputs' device (webgpu; cpu: native, else ts). */
  backend?: TiledBackend;
  /** 'fa2' (default) or 'fa1' (ts backend): the paper's two loop orders. */
  algorithm?: 'fa1' | 'fa2';
  /**
   * Query rows per tile, the same meaning on every cpu backend: ts (both passes); native (the
   * backward's query block; its forward's query tile is the SIMD register block, fixed per ISA).
   * webgpu sizes its tiles per kernel with `tiles` and declines blockQ/blockK.
   */
  blockQ?: number;
  /** Key rows per tile: ts (both passes); native (the forward's key tile). See blockQ. */
  blockK?: number;
  /**
   * Split each query tile's key tiles into this many contiguous ranges computed in parallel
   * and merged by a combine pass (FlashDecoding's split-K; the skeleton's `splitK` schedule):
   * for decode-like shapes (few query rows, long keys) where one worker per (batch, head)
   * leaves the device idle. Default 1 (the band schedule). Forward only; the result is the
   * same up to f32 rounding.
   */
  numSplits?: number;
  /**
   * Stream-K partition (LeanAttention; the skeleton's `streamK` schedule): the key tiles of every
   * (batch, head, query tile) of the call, concatenated, are cut into this many contiguous
   * ranges balanced to one tile (planDecodePartition), one per worker; a range crossing a head
   * boundary yields partials that a fix-up pass merges. Balances a decode batch whose sequences
   * differ in length, or few heads with a long context, where numSplits' per-head split cannot.
   * A positive integer (the device's concurrent workers); forward only; the result is the same
   * up to f32 rounding. Every backend's FA2 forward (FA1 declines it; WGSL refuses it with
   * block sparsity or a mask mod). Not together with numSplits (ValueError).
   */
  streamKWorkers?: number;
  /**
   * Tile the rows in a permuted order without copying them (the schedule sorted-order
   * families such as HyperAttention use): `q` [B, Hq, Nq] (or [Hq, totalQ]) and `k` [B, Hkv, Nk]
   * (or [Hkv, totalK]) Int32 index arrays whose (b, h) slices are permutations; the result is
   * attention of the gathered rows (every position rule sees the tiled order) scattered back.
   */
  permute?: PermuteOptions;
  /**
   * Reject non-finite inputs (q, k, v; o and dO for the backward) with a ValueError naming the
   * tensor instead of computing with them (default false: a NaN propagates to the outputs as in
   * the float64 reference). Scans every element (webgpu tensors are read back for it). An lse
   * with NaN or +Inf is always rejected by a backward on cpu tensors (on webgpu only with this).
   */
  checkFinite?: boolean;
  /** webgpu: tile sizes per kernel instead of the planner's. */
  tiles?: Partial<Record<WebGpuFlashKernel, Partial<WebGpuTileConfig>>>;
  /** webgpu: times each kernel's pass with timestamp queries. */
  profiler?: GpuProfiler;
  /**
   * webgpu: the tensor-core (subgroup-matrix) kernels. true, or a partial forward config, uses
   * them (a ValueError naming tensorCores when the adapter or the problem does not qualify; f32
   * tensors run split-f16); false keeps the SIMT kernels; unset uses them where they were
   * measured faster (webgpu/tc-auto.ts: f16 forward and backward at D = Dv = 64 and 128,
   * NVIDIA, sequences of 1024 rows or more). Experimental: see the skeleton README.
   */
  tensorCores?: WebGpuTileOptions['tensorCores'];
  /** webgpu: tiles of the tensor-core backward's passes (webgpu/tc-backward.ts). */
  tensorCoreBackward?: WebGpuTileOptions['tensorCoreBackward'];
}

export interface TiledForwardResult {
  /** Layout of q, dtype of q. */
  o: Tensor;
  /** Softmax families: natural-log LSE (f32). */
  lse?: Tensor;
}

export interface TiledGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  /** With attention sinks: d loss / d sink per query head (f32 [Hq]). */
  dsinks?: Tensor;
  /**
   * With a bias score mod that asks for it (`scoreBias(bias, { grad: true })`): d loss / d bias,
   * f32 in the bias's shape (summed over the dims it broadcasts over; 0 where no sequence's
   * allowed (i, j) reads it).
   */
  dbias?: Tensor;
  /**
   * With a bucketed rab hook with grad (TiledHooks.rab, HSTU's `bucketedRab`): d loss / d
   * position table (f32, its shape): dZ summed per column over the pairs the mask allows.
   */
  dPositionTable?: Tensor;
  /** Likewise for the time table of the bucketed rab hook. */
  dTimestampTable?: Tensor;
}

/** The backward outputs of a bucketed rab hook with grad (listed when a family has `rab`). */
export const RAB_GRAD_OUTPUTS = ['dPositionTable', 'dTimestampTable'] as const;

export interface TiledFamilyDef<O extends TiledOptions> {
  /** Registry name (also the golden kind it verifies). */
  family: string;
  /** The family's normalisation from its options (validated here: typed errors). */
  normalize: (p: AttentionProblem, options: O) => NormalizeHook;
  /** Option names of this family beyond TiledOptions (anything else is a typo: ValueError). */
  extraOptions: readonly string[];
  /** Forward outputs: ['o', 'lse'] for softmax families, ['o'] for pointwise ones. */
  forwardOutputs: readonly string[];
  /**
   * A family whose options are not the skeleton's maps them here (after the unknown-key check,
   * before anything else reads them), validating its own with typed errors: e.g. HSTU's jagged
   * `seqOffsets` and `alpha` become THD `cuSeqlensQ/K` and `scale`. Absent: the options are
   * TiledOptions as they come. `normalize` still gets the family's own options.
   */
  toTiled?: (options: O, q: Tensor, k: Tensor, v: Tensor) => TiledOptions;
  /** Common options the family does not take (`toTiled` derives them): passing one is a ValueError. */
  omitOptions?: readonly string[];
  /**
   * Score mods the family adds from its own options, applied before the user's `scoreMod` (e.g.
   * HSTU's dense `rab`: a bias mod with its own strides, `grad: true`), validated here with
   * typed errors. `q` is the caller's (its device).
   */
  scoreMods?: (p: AttentionProblem, options: O, q: Tensor) => ResolvedScoreMod[];
  /**
   * The backward registration's name for the gradient of a bias mod with grad (listed in its
   * outputs, so the conformance runner compares it), e.g. HSTU's 'drab'. Absent: the public
   * backward returns it as `dbias`, unlisted.
   */
  biasGradOutput?: string;
  /**
   * The family's built-in mask hook from its own options (e.g. HSTU's numTargets /
   * contextualSeqLen / maxAttnLen, see HstuMaskHook), validated here with typed errors;
   * undefined when no mask option is active (the plain band path).
   */
  mask?: (p: AttentionProblem, options: O) => HstuMaskHook | undefined;
  /**
   * The family's built-in bucketed rab hook from its own options (HSTU's `bucketedRab`, see
   * HstuRabHook), validated here with typed errors (`q` is the caller's: the tables' device);
   * undefined when the option is absent. Its table gradients are backward outputs
   * (RAB_GRAD_OUTPUTS).
   */
  rab?: (p: AttentionProblem, options: O, q: Tensor) => HstuRabHook | undefined;
}

export interface TiledFamily<O extends TiledOptions> {
  /** Validates q, k, v and the options (typed errors naming the argument) into problem + hooks. */
  resolve: (
    q: Tensor,
    k: Tensor,
    v: Tensor,
    options?: O,
  ) => { p: AttentionProblem; hooks: TiledHooks };
  forward: (q: Tensor, k: Tensor, v: Tensor, options?: O) => Promise<TiledForwardResult>;
  /** o and lse: the forward's results (softmax families); pointwise families ignore them. */
  backward: (
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor | undefined,
    lse: Tensor | undefined,
    dO: Tensor,
    options?: O,
  ) => Promise<TiledGrads>;
  /**
   * forward() for webgpu tensors, synchronously: its passes go to `target.sink` (to be encoded
   * into the caller's command encoder, in the caller's order) and its results into
   * `target.outputs` where given. For a caller that records work and cannot await
   * (@attnkit/nn's queue). Undefined, with nothing made, where only forward() can run it: cpu
   * tensors, another backend chosen, `checkFinite` (a read-back), pipelines not compiled yet
   * (forward() compiles them), several dispatches (split-K, stream-K). The same typed
   * errors as forward().
   */
  encodeForward: (
    q: Tensor,
    k: Tensor,
    v: Tensor,
    options: O | undefined,
    target: WebGpuEncodeTarget,
  ) => TiledForwardResult | undefined;
  /** backward() likewise (undefined also where its result needs a read-back: sinks, a broadcast bias's grad). */
  encodeBackward: (
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor | undefined,
    lse: Tensor | undefined,
    dO: Tensor,
    options: O | undefined,
    target: WebGpuEncodeTarget,
  ) => TiledGrads | undefined;
}

const COMMON_OPTIONS = [
  'scale',
  'causal',
  'window',
  'layout',
  'cuSeqlensQ',
  'cuSeqlensK',
  'blockSparse',
  'maskMod',
  'scoreMod',
  'backend',
  'algorithm',
  'blockQ',
  'blockK',
  'tiles',
  'profiler',
  'tensorCores',
  'tensorCoreBackward',
  'numSplits',
  'streamKWorkers',
  'permute',
  'checkFinite',
  'paged',
];

const BACKENDS: Record<TiledBackend, { priority: number; devices: string[] }> = {
  webgpu: { priority: 30, devices: ['webgpu'] },
  native: { priority: 20, devices: ['cpu'] },
  ts: { priority: 10, devices: ['cpu'] },
};

interface Resolved {
  p: AttentionProblem;
  hooks: TiledHooks;
  /** The skeleton's options (the family's, through `toTiled`). */
  o: TiledOptions;
}

function checkOptions(options: unknown, known: readonly string[]): Record<string, unknown> {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!known.includes(key) && o[key] !== undefined) {
      throw new ValueError(
        `options.${key}: expected one of ${known.join(', ')} (unknown option), got ${describe(o[key])}`,
        key,
      );
    }
  }
  if (o.backend !== undefined && !Object.hasOwn(BACKENDS, o.backend as string)) {
    throw new ValueError(
      `backend: expected one of ${Object.keys(BACKENDS).join(', ')}, got ${describe(o.backend)}`,
      'backend',
    );
  }
  if (o.checkFinite !== undefined && typeof o.checkFinite !== 'boolean')
    throw new ValueError(
      `checkFinite: expected a boolean, got ${describe(o.checkFinite)}`,
      'checkFinite',
    );
  const n = o.numSplits;
  if (n !== undefined && (typeof n !== 'number' || !Number.isInteger(n) || n < 1))
    throw new ValueError(`numSplits: expected a positive integer, got ${describe(n)}`, 'numSplits');
  const w = o.streamKWorkers;
  if (w !== undefined && (typeof w !== 'number' || !Number.isSafeInteger(w) || w < 1))
    throw new ValueError(
      `streamKWorkers: expected a positive integer, got ${describe(w)}`,
      'streamKWorkers',
    );
  if (w !== undefined && n !== undefined)
    throw new ValueError(
      `streamKWorkers: expected no numSplits with it (stream-K and split-K are two partitions of the same work; pick one), got streamKWorkers ${w} and numSplits ${n}`,
      'streamKWorkers',
    );
  if (o.algorithm !== undefined && o.algorithm !== 'fa1' && o.algorithm !== 'fa2')
    throw new ValueError(
      `algorithm: expected "fa1" or "fa2", got ${describe(o.algorithm)}`,
      'algorithm',
    );
  return o;
}

function checkTensorArg(t: unknown, name: string): Tensor {
  const tt = t as Tensor;
  if (!tt || typeof tt !== 'object' || !Array.isArray(tt.shape) || typeof tt.device !== 'string')
    throw new ShapeError(`${name}: expected a Tensor, got ${describe(t)}`, name);
  return tt;
}

function firstNonFinite(
  data: Float32Array,
  allow?: (x: number) => boolean,
): { at: number; value: number } | undefined {
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    if (!Number.isFinite(x) && !allow?.(x)) return { at: i, value: x };
  }
  return undefined;
}

const isTensor = (x: unknown): x is Tensor =>
  !!x && typeof x === 'object' && typeof (x as Tensor).toFloat32Array === 'function';

/**
 * `checkFinite`: q, k, v (and o, dO) must be finite (ValueError naming the tensor). An lse with
 * NaN or +Inf is never valid (a row without keys has -Inf): a backward always rejects it. `read`
 * gives a tensor's values: cpu tensors directly; webgpu ones only where the caller read them
 * back (checkFiniteInputs does, with `checkFinite`).
 */
export function checkFiniteValues(
  pass: KernelPass,
  t: KernelTensors,
  options: { checkFinite?: boolean | undefined },
  read: (x: Tensor) => Float32Array | undefined = (x) =>
    x.device === 'cpu' ? x.toFloat32Array() : undefined,
): void {
  const names = options.checkFinite
    ? ['q', 'k', 'v', ...(pass === 'backward' ? ['o', 'do'] : [])]
    : [];
  for (const name of names) {
    const x = t[name];
    const data = isTensor(x) ? read(x) : undefined;
    const bad = data && firstNonFinite(data);
    if (bad) {
      const arg = name === 'do' ? 'dO' : name;
      throw new ValueError(
        `${arg}: expected finite values (checkFinite), got ${bad.value} at flat index ${bad.at}`,
        arg,
      );
    }
  }
  const lse = pass === 'backward' && isTensor(t.lse) ? read(t.lse) : undefined;
  const bad = lse && firstNonFinite(lse, (x) => x === Number.NEGATIVE_INFINITY);
  if (bad) {
    throw new ValueError(
      `lse: expected the forward's log-sum-exp (finite, or -Infinity for a row without keys), got ${bad.value} at flat index ${bad.at}`,
      'lse',
    );
  }
}

/** checkFiniteValues; with `checkFinite`, webgpu tensors are read back for it. */
async function checkFiniteInputs(
  pass: KernelPass,
  t: KernelTensors,
  options: TiledOptions,
): Promise<void> {
  const host = new Map<Tensor, Float32Array>();
  if (options.checkFinite) {
    for (const x of Object.values(t)) {
      if (isTensor(x) && x.device !== 'cpu') host.set(x, (await x.toCpu()).toFloat32Array());
    }
  }
  checkFiniteValues(pass, t, options, (x) =>
    x.device === 'cpu' ? x.toFloat32Array() : host.get(x),
  );
}

/** Why a backend cannot run these options, from the options alone (no resolution needed). */
function declines(
  backend: TiledBackend,
  pass: KernelPass,
  options: Readonly<Record<string, unknown>>,
): string | undefined {
  const mods = options.scoreMod === undefined ? [] : [options.scoreMod].flat();
  const custom = mods.filter(
    (m): m is Extract<ScoreMod, { kind: 'custom' }> =>
      !!m && typeof m === 'object' && (m as ScoreMod).kind === 'custom',
  );
  const mask = options.maskMod as { wgsl?: unknown } | undefined;
  const fa1 = options.algorithm === 'fa1';
  const split = typeof options.numSplits === 'number' && options.numSplits > 1;
  if (fa1 && split)
    return "FA1's loop runs key tiles outside, so it has no per-query-tile key split (numSplits)";
  const streamK = options.streamKWorkers !== undefined;
  if (fa1 && streamK)
    return "FA1's loop runs key tiles outside, so it has no stream-K key partition (streamKWorkers)";
  if (backend === 'native') {
    if (custom.length > 0)
      return 'the native engine runs the built-in score mods only (softcap, alibi, bias); custom mods run on ts and webgpu';
    if (mask !== undefined)
      return 'the native engine runs no user mask mods (they are TS/WGSL functions); use ts or webgpu';
    if (fa1) return 'the native engine implements FA2 only';
  }
  if (backend === 'webgpu') {
    if (fa1) return 'the WGSL kernels implement FA2 only';
    if (options.blockQ !== undefined || options.blockK !== undefined)
      return "the WGSL kernels take their tile sizes per kernel from `tiles` (blockQ/blockK size the cpu backends' tiles)";
    const noWgsl = custom.find((m) => typeof m.wgsl !== 'string');
    if (noWgsl) return `custom score mod "${noWgsl.name}" has no wgsl source`;
    if (pass === 'backward') {
      const noGrad = custom.find((m) => typeof m.wgslGrad !== 'string');
      if (noGrad)
        return `custom score mod "${noGrad.name}" has no wgslGrad source for the backward`;
    }
    if (mask !== undefined && typeof mask.wgsl !== 'string')
      return 'the mask mod has no wgsl source';
  }
  if (backend === 'ts' && pass === 'backward') {
    const noGrad = custom.find((m) => typeof m.tsGrad !== 'function');
    if (noGrad) return `custom score mod "${noGrad.name}" has no tsGrad for the backward`;
  }
  return undefined;
}

/**
 * Paged K/V (AttentionOptions.paged) runs the forward's key-row addressing through the block
 * table on every backend; hooks that address keys by their own index layout (a key permutation,
 * HSTU's rab key times) and FA1's loop order do not take it: ValueError naming `paged`.
 */
function checkPagedHooks(hooks: TiledHooks, o: TiledOptions): void {
  const why = hooks.permute
    ? 'permuted tiles (permute)'
    : hooks.rab
      ? "HSTU's bucketed rab (its key times are per stored row)"
      : o.algorithm === 'fa1'
        ? 'algorithm "fa1" (the paged kernels are the FA2 loop)'
        : undefined;
  if (why) throw new ValueError(`paged: expected no ${why} with paged K/V, got both`, 'paged');
}

function checkBackwardUnpaged(p: AttentionProblem): void {
  if (p.paged)
    throw new ValueError(
      'paged: expected contiguous K/V for the backward (paged K/V is a forward / decode path), got paged pools',
      'paged',
    );
}

/** A forward's results as the registry's tensors (lse only where the normalisation has one). */
function forwardTensors(res: { o: Tensor; lse?: Tensor | undefined }): KernelTensors {
  return res.lse ? { o: res.o, lse: res.lse } : { o: res.o };
}

/** A backward's inputs as the registry's tensors (o and lse only when given). */
function backwardTensors(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor | undefined,
  lse: Tensor | undefined,
  dO: Tensor,
): KernelTensors {
  const t: KernelTensors = { q, k, v, do: dO };
  if (o !== undefined) t.o = o;
  if (lse !== undefined) t.lse = lse;
  return t;
}

async function runOn(
  backend: TiledBackend,
  pass: KernelPass,
  r: Resolved,
  t: KernelTensors,
  options: TiledOptions,
): Promise<KernelTensors> {
  const { p, hooks } = r;
  if (pass === 'forward') {
    const res =
      backend === 'ts'
        ? tiledForwardTs(p, hooks, t.q!, t.k!, t.v!, options)
        : backend === 'native'
          ? await tiledForwardNative(p, hooks, t.q!, t.k!, t.v!, options)
          : await tiledForwardWebGpu(p, hooks, t.q!, t.k!, t.v!, options);
    return forwardTensors(res);
  }
  checkBackwardUnpaged(p);
  const args = [p, hooks, t.q!, t.k!, t.v!, t.o, t.lse, t.do!, options] as const;
  const g =
    backend === 'ts'
      ? tiledBackwardTs(...args)
      : backend === 'native'
        ? await tiledBackwardNative(...args)
        : await tiledBackwardWebGpu(...args);
  return { ...g } as KernelTensors;
}

/** Registers `def` on every backend and returns its dispatching forward and backward. */
export function defineTiledFamily<O extends TiledOptions>(def: TiledFamilyDef<O>): TiledFamily<O> {
  const omit = def.omitOptions ?? [];
  const known = [...COMMON_OPTIONS.filter((k) => !omit.includes(k)), ...def.extraOptions];
  const inputsOf = (t: KernelTensors): [Tensor, Tensor, Tensor] => [
    checkTensorArg(t.q, 'q'),
    checkTensorArg(t.k, 'k'),
    checkTensorArg(t.v, 'v'),
  ];
  const resolve = (t: KernelTensors, options: unknown): Resolved => {
    const fo = checkOptions(options === undefined ? {} : options, known) as O;
    const [q, k, v] = inputsOf(t);
    const o: TiledOptions = def.toTiled ? def.toTiled(fo, q, k, v) : fo;
    const p = resolveAttentionProblem(q, k, v, o);
    const scoreMods = [
      ...(def.scoreMods?.(p, fo, q) ?? []),
      ...resolveScoreMods(o.scoreMod, p, q.device),
    ];
    // Typed error now (not only in a backward) for a bias grad the kernels cannot give.
    biasGradMod(scoreMods);
    const hooks: TiledHooks = { normalize: def.normalize(p, fo), scoreMods };
    const mask = def.mask?.(p, fo);
    if (mask) hooks.mask = mask;
    const rab = def.rab?.(p, fo, q);
    if (rab) hooks.rab = rab;
    if (o.numSplits !== undefined && o.numSplits > 1)
      hooks.schedule = { kind: 'splitK', splits: o.numSplits };
    if (o.streamKWorkers !== undefined)
      hooks.schedule = { kind: 'streamK', workers: o.streamKWorkers };
    const permute = resolvePermute(o.permute, p);
    if (permute) hooks.permute = permute;
    if (p.paged) checkPagedHooks(hooks, o);
    return { p, hooks, o };
  };
  const gradName = def.biasGradOutput;
  const backwardOutputs = [
    'dq',
    'dk',
    'dv',
    ...(gradName ? [gradName] : []),
    ...(def.rab ? RAB_GRAD_OUTPUTS : []),
  ];
  const renameBiasGrad = (t: KernelTensors): KernelTensors => {
    if (!gradName || t.dbias === undefined) return t;
    const { dbias, ...rest } = t;
    return { ...rest, [gradName]: dbias };
  };
  for (const backend of Object.keys(BACKENDS) as TiledBackend[]) {
    for (const pass of ['forward', 'backward'] as const) {
      registerKernel({
        family: def.family,
        pass,
        backend,
        ...BACKENDS[backend],
        available: backend === 'native' ? nativeAvailable : undefined,
        supports: (req: KernelRequest) => declines(backend, pass, req.options) ?? true,
        outputs: pass === 'forward' ? def.forwardOutputs : backwardOutputs,
        run: async (t, options) => {
          const r = resolve(t, options);
          await checkFiniteInputs(pass, t, r.o);
          return renameBiasGrad(await runOn(backend, pass, r, t, r.o));
        },
      });
    }
  }
  const dispatch = async (pass: KernelPass, t: KernelTensors, options: O | undefined) => {
    const r = resolve(t, options);
    const q = t.q!;
    // @attnkit/native is optional and imported lazily: import it before the registry asks
    // (synchronously) whether the native backend is available for these cpu tensors.
    if (q.device === 'cpu' && (r.o.backend === undefined || r.o.backend === 'native')) {
      await loadNativeBackend();
    }
    const reg = backendFor(pass, q, r);
    await checkFiniteInputs(pass, t, r.o);
    return runOn(reg.backend as TiledBackend, pass, r, t, r.o);
  };
  /** The registry's kernel for this family's pass on q's device and dtype. */
  const backendFor = (pass: KernelPass, q: Tensor, r: Resolved) =>
    selectKernel(
      {
        family: def.family,
        pass,
        device: q.device,
        dtype: q.dtype,
        options: r.o as Record<string, unknown>,
      },
      r.o.backend,
    );
  /** The webgpu kernel the registry picks for these tensors, synchronously (undefined: another). */
  const webGpuResolved = (pass: KernelPass, t: KernelTensors, options: O | undefined) => {
    const r = resolve(t, options);
    const q = t.q!;
    if (q.device !== 'webgpu' || r.o.checkFinite) return undefined;
    return backendFor(pass, q, r).backend === 'webgpu' ? r : undefined;
  };
  return {
    resolve: (q, k, v, options) => resolve({ q, k, v } as KernelTensors, options),
    encodeForward: (q, k, v, options, target) => {
      const r = webGpuResolved('forward', { q, k, v }, options);
      const res = r && encodeForwardWebGpu(r.p, r.hooks, q, k, v, r.o, target);
      return res && (forwardTensors(res) as unknown as TiledForwardResult);
    },
    encodeBackward: (q, k, v, o, lse, dO, options, target) => {
      const r = webGpuResolved('backward', backwardTensors(q, k, v, o, lse, dO), options);
      if (!r) return undefined;
      checkBackwardUnpaged(r.p);
      const g = encodeBackwardWebGpu(r.p, r.hooks, q, k, v, o, lse, dO, r.o, target);
      return g && ({ ...g } as unknown as TiledGrads);
    },
    forward: async (q, k, v, options) =>
      (await dispatch('forward', { q, k, v }, options)) as unknown as TiledForwardResult,
    backward: async (q, k, v, o, lse, dO, options) =>
      (await dispatch(
        'backward',
        backwardTensors(q, k, v, o, lse, dO),
        options,
      )) as unknown as TiledGrads,
  };
}
