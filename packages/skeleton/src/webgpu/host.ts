import { type AttentionProblem, lseBase, type MaskMod, UnsupportedError } from '@attnkit/attention';
import {
  bytesPerElement,
  DeviceError,
  DTypeError,
  describe,
  formatShape,
  numel,
  ShapeError,
  sameShape,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import {
  BINDING_OFFSET_ALIGNMENT,
  type BindingResource,
  bindBuffers,
  bindingBuffer,
  bindingKinds,
  bindingSize,
  type CompiledProgram,
  type ComputeStep,
  compileFirstInTime,
  emptyWebGpu,
  type GpuProfiler,
  PipelineFallbackError,
  storageBindingCount,
  toWebGpu,
  type UniformField,
  type WebGpuContext,
  WebGpuStorage,
  webGpuStorageOf,
} from '@attnkit/webgpu';
import { resolveSchedule } from '../cpu/schedule.js';
import { biasGradLayout, biasGradMod, reduceBiasGrad, type TiledHooks } from '../hooks.js';
import { type AuxTables, buildAux, buildParams, buildStreamK } from './aux.js';
import { type BindingChunk, planBindingChunks } from './chunks.js';
import {
  buildDecodeStreamK,
  DECODE_BK,
  DECODE_MAX_ROWS,
  type DecodePartition,
  type DecodeSpec,
  decodeShader,
  decodeSpecFor,
  inDecodeRegime,
} from './decode.js';
import { type HookResources, hookResources } from './hooks.js';
import { packParams } from './params.js';
import {
  planWebGpuFlash,
  type WebGpuFlashKernel,
  type WebGpuFlashPlan,
  type WebGpuTileConfig,
} from './plan.js';
import {
  COMBINE_ROWS,
  combineShader,
  dkdvShader,
  dqShader,
  forwardShader,
  RAB_TIME_COLS,
  type ShaderSpec,
  SPLITS_FIELD,
  STREAMK_FIELDS,
  type StorageDType,
  statsShader,
  type WgslKernel,
} from './shaders.js';
import { SPLIT_F16_WORKGROUPS, splitF16Layout, splitF16Shader } from './split-f16.js';
import { tcAutoSelect } from './tc-auto.js';
import {
  TC_BACKWARD_TILES,
  type TcBackwardConfig,
  type TcBackwardTile,
  tcBackwardConfigFor,
  tcBackwardStorageBuffers,
  tcBackwardWorkgroupBytes,
  tcDkdvShader,
  tcDqShader,
} from './tc-backward.js';
import {
  TC_SPLIT_FIELDS,
  type TcForwardConfig,
  tcAdapterGap,
  tcForwardShader,
  tcForwardWorkgroupBytes,
} from './tc-forward.js';
import { tcQDirectFits } from './tc-plan.js';

/** WebGPU's buffer type, named through @attnkit/webgpu so this package needs no WebGPU typings of its own. */
type GpuBuffer = WebGpuStorage['buffer'];

type Pass = 'forward' | 'backward';

export interface WebGpuTileOptions {
  /** Tile sizes per kernel instead of the planner's (benchmarks sweep these). */
  tiles?: Partial<Record<WebGpuFlashKernel, Partial<WebGpuTileConfig>>>;
  /**
   * The forward on tensor cores (./tc-forward.ts; f16 softmax without mods, sinks, block
   * sparsity, permutation or split-K, D and Dv multiples of 16, an adapter with f16 x f16 -> f32
   * 16x16x16 subgroup matrices and 32-wide subgroups): true (the default config) or a config.
   * EXPERIMENTAL and unverified (issue 20 is open): the last kernel version has not yet passed
   * its device verification (benchmarks/gpu/results/tc-wip/VARIANTS.md); nothing selects it
   * automatically and no family option reaches it. A ValueError says why when the problem or
   * the adapter does not qualify.
   */
  tensorCores?: boolean | Partial<Omit<TcForwardConfig, 'd' | 'dv'>>;
  /**
   * Tiles of the tensor-core backward's passes (./tc-backward.ts), which `tensorCores` selects
   * in tiledBackwardWebGpu (f16 softmax, the forward's conditions; of its config only `emulate`
   * applies there): per pass subgroups, keyMatrices and pad; unset fields come from the
   * largest default tile that fits the device's workgroup memory (tcBackwardConfigs).
   * EXPERIMENTAL: emulated runs only so far, no device verification yet.
   */
  tensorCoreBackward?: { dq?: Partial<TcBackwardTile>; dkdv?: Partial<TcBackwardTile> };
  /** Times each kernel's pass with timestamp queries (when the device has them). */
  profiler?: GpuProfiler;
  /** The WGSL kernels implement FA2 only. */
  algorithm?: 'fa1' | 'fa2';
}

interface Unsupported {
  argument: string;
  /** Why not, as webGpuSupports says it. */
  reason: string;
  /** What the argument would need (the typed error's "expected ..."). */
  expected: string;
}

/** What keeps the WGSL kernels from running these hooks, if anything. */
function unsupported(
  hooks: TiledHooks,
  maskMod: Pick<MaskMod, 'wgsl'> | undefined,
  pass: Pass,
): Unsupported | undefined {
  for (const [n, m] of hooks.scoreMods.entries()) {
    if (m.kind !== 'custom') continue;
    const name = modName(n, hooks.scoreMods.length);
    if (typeof m.wgsl !== 'string')
      return {
        argument: `${name}.wgsl`,
        reason: `custom score mod "${m.name}" has no wgsl source`,
        expected: `WGSL source of custom score mod "${m.name}" (the webgpu backend runs it)`,
      };
    if (pass === 'backward' && typeof m.wgslGrad !== 'string')
      return {
        argument: `${name}.wgslGrad`,
        reason: `custom score mod "${m.name}" has no wgslGrad source for the backward`,
        expected: `WGSL source of the derivative of custom score mod "${m.name}" (the webgpu backward runs it)`,
      };
  }
  if (maskMod !== undefined && typeof maskMod.wgsl !== 'string')
    return {
      argument: 'maskMod.wgsl',
      reason: 'the mask mod has no wgsl source',
      expected: 'WGSL source of the mask mod (the webgpu backend runs it)',
    };
  return undefined;
}

/**
 * Whether the WGSL kernels run these hooks in this pass: true, or why not (a custom score mod
 * without `wgsl`, or without `wgslGrad` for the backward; a mask mod without `wgsl`). Every
 * normalisation, built-in mod and storage dtype (f32, f16, bf16) is supported in both passes.
 */
export function webGpuSupports(
  hooks: TiledHooks,
  maskMod: Pick<MaskMod, 'wgsl'> | undefined,
  pass: Pass,
): true | string {
  return unsupported(hooks, maskMod, pass)?.reason ?? true;
}

function modName(n: number, count: number): string {
  return count === 1 ? 'scoreMod' : `scoreMod[${n}]`;
}

interface Prepared {
  p: AttentionProblem;
  ctx: WebGpuContext;
  dtype: StorageDType;
  /** Whole buffers, or for a binding chunk's views (CHUNK_VIEWS) the ranges their elements occupy. */
  buffers: { q: BindingResource; k: BindingResource; v: BindingResource };
  /** Elements of q, k, v (their buffers may be larger: pooled sizes). */
  elements: { q: number; k: number; v: number };
  hooks: HookResources;
}

/** The normalize hook's per-head sinks and per-batch sigmoid bias: Float32Arrays of p's sizes. */
function checkNormalizeArrays(p: AttentionProblem, norm: TiledHooks['normalize']): void {
  if (norm.kind === 'softmax' && norm.sinks !== undefined)
    checkF32Array(norm.sinks, 'sinks', p.hq, 'one logit per query head');
  if (norm.kind === 'sigmoid')
    checkF32Array(norm.bias, 'bias', p.batch, 'sigmoid bias per batch entry');
}

function checkF32Array(x: unknown, name: string, length: number, what: string): void {
  if (!(x instanceof Float32Array) || x.length !== length)
    throw new ValueError(
      `${name}: expected a Float32Array of length ${length} (${what}), got ${describe(x)}`,
      name,
    );
}

/** Validates the launch (typed errors naming the argument) and resolves the hooks' resources. */
function prepare(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: WebGpuTileOptions,
  pass: Pass,
): Prepared {
  if (opts === null || typeof opts !== 'object') {
    throw new ValueError(`options: expected an object, got ${describe(opts)}`, 'options');
  }
  if (opts.algorithm !== undefined && opts.algorithm !== 'fa2') {
    throw new ValueError(
      `algorithm: the webgpu backend implements "fa2" only, got ${describe(opts.algorithm)}`,
      'algorithm',
    );
  }
  const norm = hooks?.normalize;
  if (
    !norm ||
    (norm.kind !== 'softmax' && norm.kind !== 'sigmoid' && norm.kind !== 'silu') ||
    !Array.isArray(hooks.scoreMods)
  )
    throw new ValueError(
      `hooks: expected { normalize: softmax | sigmoid | silu, scoreMods: [] }, got ${describe(hooks)}`,
      'hooks',
    );
  const why = unsupported(hooks, p.maskMod, pass);
  if (why)
    throw new ValueError(`${why.argument}: expected ${why.expected}, got undefined`, why.argument);
  const dtype = q.dtype;
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16') {
    throw new DTypeError(`q: expected f32, f16 or bf16 on webgpu, got ${dtype}`, 'q');
  }
  const views = CHUNK_VIEWS.has(q);
  const sq = views ? chunkViewStorage(q) : webGpuStorageOf(q, 'q');
  const sk = views ? chunkViewStorage(k) : webGpuStorageOf(k, 'k');
  const sv = views ? chunkViewStorage(v) : webGpuStorageOf(v, 'v');
  for (const [t, s, name] of [
    [k, sk, 'k'],
    [v, sv, 'v'],
  ] as const) {
    if (s.ctx !== sq.ctx) {
      throw new DeviceError(
        `${name}: expected a tensor on q's WebGPU device, got one on another device`,
        name,
      );
    }
    if (t.dtype !== dtype)
      throw new DTypeError(`${name}: expected dtype ${dtype} (as q), got ${t.dtype}`, name);
  }
  if (dtype !== 'f32' && (p.d % 2 !== 0 || p.dv % 2 !== 0)) {
    throw new ValueError(
      `q: ${dtype} tensors are stored as u32 pairs on webgpu, so head dims must be even, got D = ${p.d}, Dv = ${p.dv}`,
      'q',
    );
  }
  checkNormalizeArrays(p, norm);
  if (norm.kind === 'silu' && !Number.isFinite(norm.factor))
    throw new ValueError(
      `factor: expected a finite number (w = factor silu(s)), got ${describe(norm.factor)}`,
      'factor',
    );
  for (const [n, m] of hooks.scoreMods.entries()) {
    const name = modName(n, hooks.scoreMods.length);
    if (m.kind === 'alibi') checkF32Array(m.slopes, `${name}.slopes`, p.hq, 'one per query head');
    if (m.kind !== 'bias') continue;
    const s = webGpuStorageOf(m.bias, `${name}.bias`);
    if (s.ctx !== sq.ctx)
      throw new DeviceError(
        `${name}.bias: expected a tensor on q's WebGPU device, got one on another device`,
        `${name}.bias`,
      );
    if (m.bias.dtype !== 'f32')
      throw new DTypeError(`${name}.bias: expected dtype f32, got ${m.bias.dtype}`, `${name}.bias`);
    const last =
      (p.batch - 1) * m.batchStride +
      (p.hq - 1) * m.headStride +
      (p.maxSeqQ - 1) * m.rowStride +
      p.maxSeqK;
    if (p.maxSeqQ > 0 && p.maxSeqK > 0 && m.bias.size < last)
      throw new ShapeError(
        `${name}.bias: expected at least ${last} elements for its strides, got shape ${formatShape(m.bias.shape)}`,
        `${name}.bias`,
      );
  }
  checkPermute(p, hooks);
  checkRab(p, hooks, sq.ctx);
  sq.ctx.checkAlive();
  return {
    p,
    ctx: sq.ctx,
    dtype,
    buffers: views
      ? { q: chunkViewRange(q), k: chunkViewRange(k), v: chunkViewRange(v) }
      : { q: sq.buffer, k: sk.buffer, v: sv.buffer },
    elements: { q: q.size, k: k.size, v: v.size },
    hooks: withPaged(hookResources(hooks, p.maskMod, pass, p), p),
  };
}

/**
 * Paged K/V (AttentionProblem.paged): the block table as the u32 binding `pagetab` and its
 * page size and columns as uniforms pgSize / pgPages, beside the hooks' own (ShaderSpec.paged).
 */
function withPaged(r: HookResources, p: AttentionProblem): HookResources {
  const pg = p.paged;
  if (!pg) return r;
  const t = pg.blockTable;
  return {
    hooks: {
      ...r.hooks,
      bindings: [...r.hooks.bindings, { name: 'pagetab', kind: 'read', type: 'array<u32>' }],
      uniforms: [...r.hooks.uniforms, ['pgSize', 'u32'], ['pgPages', 'u32']],
    },
    // No binding may be empty: one zero for a table of no columns (every length 0).
    data: {
      ...r.data,
      pagetab:
        t.length === 0 ? new Uint32Array(1) : new Uint32Array(t.buffer, t.byteOffset, t.length),
    },
    values: { ...r.values, pgSize: pg.pageSize, pgPages: pg.maxPages },
  };
}

/** hooks.permute's index arrays: Int32Array in the LSE layout (q) or its key analogue (k). */
function checkPermute(p: AttentionProblem, hooks: TiledHooks): void {
  const perm = hooks.permute;
  if (perm === undefined) return;
  const bhnd = p.layout === 'BHND';
  const sizes = {
    q: bhnd ? p.batch * p.hq * p.maxSeqQ : p.hq * p.totalQ,
    k: bhnd ? p.batch * p.hkv * p.maxSeqK : p.hkv * p.totalK,
  };
  for (const side of ['q', 'k'] as const) {
    const x = perm[side];
    if (x !== undefined && (!(x instanceof Int32Array) || x.length !== sizes[side]))
      throw new ValueError(
        `permute.${side}: expected an Int32Array of length ${sizes[side]} (the ${side === 'q' ? 'LSE' : 'key index'} layout), got ${describe(x)}`,
        `permute.${side}`,
      );
  }
}

/**
 * hooks.rab (HstuRabHook, built by the family layer, which has validated the user's options):
 * its tables f32 [H or 1, cols] (P odd) on the cpu or q's device, the time term's int32 arrays
 * of the key axis and its thresholds; typed errors naming `rab.<field>`. Permuted tiles would
 * need the rab's positions through the index: declined.
 */
function checkRab(p: AttentionProblem, hooks: TiledHooks, ctx: WebGpuContext): void {
  const r = hooks.rab;
  if (r === undefined) return;
  if (r.positionTable === undefined && r.timestampTable === undefined)
    throw new ValueError(
      'rab: expected a positionTable or a timestampTable, got neither',
      'rab.positionTable',
    );
  if (hooks.permute !== undefined)
    throw new ValueError(
      'permute: expected no permuted tiles with the bucketed rab hook (its positions are sequence positions), got a permutation',
      'permute',
    );
  for (const [t, name] of [
    [r.positionTable, 'rab.positionTable'],
    [r.timestampTable, 'rab.timestampTable'],
  ] as const) {
    if (t === undefined) continue;
    if (!(t instanceof Tensor))
      throw new ValueError(`${name}: expected a Tensor, got ${describe(t)}`, name);
    if (t.dtype !== 'f32')
      throw new DTypeError(`${name}: expected dtype f32, got ${t.dtype}`, name);
    const s = t.shape;
    const odd = name === 'rab.positionTable';
    if (s.length !== 2 || (s[0] !== 1 && s[0] !== p.hq) || s[1]! < 1 || (odd && s[1]! % 2 !== 1))
      throw new ShapeError(
        `${name}: expected shape [${p.hq} or 1, ${odd ? 'P (odd)' : 'T'}], got ${formatShape(s)}`,
        name,
      );
    if (t.device !== 'cpu' && webGpuStorageOf(t, name).ctx !== ctx)
      throw new DeviceError(
        `${name}: expected a tensor on q's WebGPU device (or the cpu), got one on another device`,
        name,
      );
  }
  if (r.timestampTable === undefined) return;
  for (const name of ['keyTime', 'nextTime'] as const) {
    const x = r[name];
    if (!(x instanceof Int32Array) || x.length !== p.totalK)
      throw new ValueError(
        `rab.${name}: expected an Int32Array of length ${p.totalK} (one per key token), got ${describe(x)}`,
        `rab.${name}`,
      );
  }
  const th = r.thresholds;
  const cols = r.timestampTable.shape[1]!;
  if (!(th instanceof Int32Array) || th.length < 1 || th.length > cols || th[0] !== 0)
    throw new ValueError(
      `rab.thresholds: expected an Int32Array of 1 to ${cols} entries starting at 0 (hstuTimeThresholds), got ${describe(th)}`,
      'rab.thresholds',
    );
}

/** Workgroup bytes the dQ pass's table-gradient partials take with `plan` (see shaders.ts rabGradDecls). */
function rabGradBytes(pr: Prepared, kernel: WebGpuFlashKernel, fp: WebGpuFlashPlan): number {
  const r = pr.hooks.hooks.rab;
  if (kernel !== 'dq' || !r?.grad) return 0;
  return 4 * ((r.pos ? fp.br + fp.bc - 1 : 0) + (r.time ? RAB_TIME_COLS : 0));
}

/**
 * The kernel's tile plan; the dQ pass with the rab's table gradients keeps room for their
 * workgroup partials (planned again under the smaller budget when the first plan leaves none).
 */
function plan(pr: Prepared, kernel: WebGpuFlashKernel, opts: WebGpuTileOptions): WebGpuFlashPlan {
  const limit = pr.ctx.limits.maxComputeWorkgroupStorageSize;
  let fp = planOnce(pr, kernel, opts, limit);
  for (let n = 0; n < 3; n++) {
    const extra = rabGradBytes(pr, kernel, fp);
    if (fp.workgroupBytes + extra <= limit) break;
    fp = planOnce(pr, kernel, opts, limit - extra);
  }
  return fp;
}

function planOnce(
  pr: Prepared,
  kernel: WebGpuFlashKernel,
  opts: WebGpuTileOptions,
  storage: number,
): WebGpuFlashPlan {
  const { ctx, p } = pr;
  return planWebGpuFlash({
    kernel,
    d: p.d,
    dv: p.dv,
    maxComputeWorkgroupStorageSize: storage,
    maxComputeInvocationsPerWorkgroup: Math.min(
      ctx.limits.maxComputeInvocationsPerWorkgroup,
      ctx.limits.maxComputeWorkgroupSizeX,
    ),
    subgroupMinSize: ctx.features.subgroups ? ctx.features.subgroupMinSize : 0,
    tiles: opts.tiles?.[kernel],
  });
}

function spec(pr: Prepared, plan: WebGpuFlashPlan): ShaderSpec {
  return {
    plan,
    dtype: pr.dtype,
    vecD: pr.p.d % 4 === 0,
    vecV: pr.p.dv % 4 === 0,
    blockSparse: pr.p.blockSparse !== undefined,
    hooks: pr.hooks.hooks,
    ...(pr.p.paged ? { paged: true } : {}),
  };
}

/**
 * Generated kernels by (generator, arguments). A decode-sized call spends more host time making
 * its WGSL (~20 KB of text from the template functions) and hashing that text into the pipeline
 * cache's key than the GPU spends on the work, so each spec's kernel is generated once and its
 * pipeline is then found by the kernel object's identity (`compile`). Bounded: cleared past
 * 512 specs. The specs are plain data (plans, flags, the hooks' names and WGSL sources), so
 * their JSON is the key.
 */
const KERNELS = new Map<string, WgslKernel>();
const PROGRAMS = new WeakMap<WgslKernel, WeakMap<WebGpuContext, Promise<CompiledProgram>>>();

export function generatedKernel<A extends unknown[]>(
  name: string,
  make: (...args: A) => WgslKernel,
  ...args: A
): WgslKernel {
  const key = `${name}|${JSON.stringify(args)}`;
  let kernel = KERNELS.get(key);
  if (kernel === undefined) {
    kernel = make(...args);
    if (KERNELS.size >= 512) KERNELS.clear();
    KERNELS.set(key, kernel);
  }
  return kernel;
}

/**
 * The kernel's pipeline (cached by its code and layout; a kernel from `generatedKernel` is found
 * by identity first); `config` (its tile plan) is named in a PipelineTimeoutError should the
 * compile not come back in time.
 */
function compile(
  ctx: WebGpuContext,
  kernel: WgslKernel,
  label: string,
  config?: unknown,
): Promise<CompiledProgram> {
  const max = ctx.limits.maxStorageBuffersPerShaderStage;
  const n = storageBindingCount(kernel.bindings);
  if (n > max) {
    throw new ValueError(
      `scoreMod: expected hooks that leave ${label} at most ${max} storage buffers (this device's limit), got ones that need ${n}`,
      'scoreMod',
    );
  }
  let byContext = PROGRAMS.get(kernel);
  const known = byContext?.get(ctx);
  if (known) return known;
  const program = ctx.pipelines.get({
    code: kernel.code,
    bindings: bindingKinds(kernel.bindings),
    label,
    config,
  });
  if (!byContext) PROGRAMS.set(kernel, (byContext = new WeakMap()));
  byContext.set(ctx, program);
  // A compile that failed (or timed out) is not remembered: the next call asks the cache again.
  program.then(
    (c) => {
      let ready = READY.get(kernel);
      if (!ready) READY.set(kernel, (ready = new WeakMap()));
      ready.set(ctx, c);
    },
    () => byContext.delete(ctx),
  );
  return program;
}

/** Uniform fields a schedule adds after the hooks' (split-K's count, stream-K's tables). */
interface ScheduleUniforms {
  fields: readonly UniformField[];
  values: Readonly<Record<string, number>>;
}

/**
 * Uniform and aux buffers of one launch; released to the pool once the work is queued.
 * `aux` replaces tables.aux (stream-K appends its plan to it; the offsets stay valid).
 */
function launchBuffers(
  pr: Prepared,
  tables: AuxTables,
  schedule?: ScheduleUniforms,
  aux: Uint32Array = tables.aux,
): [GpuBuffer, GpuBuffer] {
  const { hooks } = pr.hooks;
  const params =
    schedule === undefined
      ? packParams(buildParams(pr.p, tables), hooks.uniforms, pr.hooks.values)
      : packParams(buildParams(pr.p, tables), [...hooks.uniforms, ...schedule.fields], {
          ...pr.hooks.values,
          ...schedule.values,
        });
  const uniform = pr.ctx.createUniform(new Uint8Array(params));
  return [uniform, pr.ctx.createFromData(aux)];
}

/** Buffers of the hooks' bindings by name; `owned` are the uploads to release after the launch. */
function hookBuffers(pr: Prepared, owned: GpuBuffer[]): Record<string, GpuBuffer> {
  const out: Record<string, GpuBuffer> = {};
  for (const [name, data] of Object.entries(pr.hooks.data)) {
    if (data instanceof Tensor) {
      out[name] = buf(data);
    } else {
      out[name] = pr.ctx.createFromData(data, name);
      owned.push(out[name]);
    }
  }
  return out;
}

function checkBindingSizes(
  ctx: WebGpuContext,
  tensors: Record<string, Tensor>,
  hooks: TiledHooks,
): void {
  const all = { ...tensors };
  hooks.scoreMods.forEach((m, n) => {
    if (m.kind === 'bias') all[`${modName(n, hooks.scoreMods.length)}.bias`] = m.bias;
  });
  const max = ctx.limits.maxStorageBufferBindingSize;
  for (const [name, t] of Object.entries(all)) {
    const bytes = CHUNK_VIEWS.has(t)
      ? t.size * bytesPerElement(t.dtype)
      : (t.storage as WebGpuStorage).byteLength;
    if (bytes > max || t.size >= 2 ** 32) {
      throw new ValueError(
        `${name}: ${formatShape(t.shape)} takes ${bytes} bytes, more than one binding may hold on this device (${max})`,
        name,
      );
    }
  }
}

/**
 * o and lse are bound whole too: a ValueError naming `q` (whose rows they have) when either
 * would pass one binding, instead of WebGPU's validation error at dispatch. BHND problems are
 * cut into chunks before this (forwardChunks); THD and paged ones are not.
 */
function checkOutputBindings(
  ctx: WebGpuContext,
  p: AttentionProblem,
  dtype: StorageDType,
  softmax: boolean,
): void {
  const max = ctx.limits.maxStorageBufferBindingSize;
  const outs: [string, readonly number[], number][] = [['o', p.oShape, bytesPerElement(dtype)]];
  if (softmax) outs.push(['lse', p.lseShape, 4]);
  for (const [name, shape, e] of outs) {
    const bytes = numel(shape) * e;
    if (bytes > max || numel(shape) >= 2 ** 32)
      throw new ValueError(
        `q: its output ${name} ${formatShape(shape)} would take ${bytes} bytes, more than one binding may hold on this device (${max})`,
        'q',
      );
  }
}

function buf(t: Tensor): GpuBuffer {
  return (t.storage as WebGpuStorage).buffer;
}

/**
 * Views of q, k and v that a binding-chunked forward (chunkedForward) made: contiguous tensors
 * at an element offset into the caller's storage, which prepare() binds as the range they
 * occupy (every other entry point takes whole tensors at offset 0: webGpuStorageOf).
 */
const CHUNK_VIEWS = new WeakSet<Tensor>();

function chunkViewStorage(t: Tensor): WebGpuStorage {
  const s = t.storage;
  if (!(s instanceof WebGpuStorage) || !t.isContiguous())
    throw new Error('internal: a binding chunk view must be a contiguous webgpu tensor');
  s.checkLive('tensor');
  return s;
}

/** The bytes a chunk view occupies, as a binding (planBindingChunks aligned its offset). */
function chunkViewRange(t: Tensor): BindingResource {
  const e = bytesPerElement(t.dtype);
  const offset = t.offset * e;
  if (offset % BINDING_OFFSET_ALIGNMENT !== 0)
    throw new Error(`internal: a binding chunk view at byte ${offset} is not aligned`);
  // Bindings are sized in whole words; a view's last half-word is read by no kernel.
  return {
    buffer: (t.storage as WebGpuStorage).buffer,
    offset,
    size: Math.ceil((t.size * e) / 4) * 4,
  };
}

/**
 * The forward's tile schedule (TiledHooks.schedule): the split count of split-K, or undefined
 * for band and stream-K (streamKWorkersOf). Validates every kind (ValueError naming `schedule`,
 * `schedule.kind`, `schedule.splits` or `schedule.workers`); never throws for a valid one.
 */
export function splitsOf(hooks: TiledHooks): number | undefined {
  const r = resolveSchedule(hooks.schedule);
  return hooks.schedule?.kind === 'splitK' ? r.splits : undefined;
}

/** Stream-K's worker count (TiledHooks.schedule { kind: 'streamK', workers }), else undefined. */
export function streamKWorkersOf(hooks: TiledHooks): number | undefined {
  return resolveSchedule(hooks.schedule).streamKWorkers;
}

/**
 * Compiled programs by kernel and context once their compile has resolved, so that the
 * synchronous entry points (encodeForwardWebGpu, encodeBackwardWebGpu) find them without
 * awaiting a promise.
 */
const READY = new WeakMap<WgslKernel, WeakMap<WebGpuContext, CompiledProgram>>();

function readyProgram(ctx: WebGpuContext, kernel: WgslKernel): CompiledProgram | undefined {
  return READY.get(kernel)?.get(ctx);
}

/**
 * The tile compileFirstInTime chose, per context and candidate list: the synchronous entry
 * points repeat the async path's choice instead of guessing which candidate would have
 * compiled. A list none of whose tiles compiled is not remembered (the sync path then declines
 * and the async path tries again).
 */
const TC_CHOICE = new WeakMap<WebGpuContext, Map<string, unknown>>();

function rememberChoice(ctx: WebGpuContext, key: string, config: unknown): void {
  let m = TC_CHOICE.get(ctx);
  if (!m) TC_CHOICE.set(ctx, (m = new Map()));
  if (m.size >= 256) m.clear();
  m.set(key, config);
}

function forgetChoice(ctx: WebGpuContext, key: string): void {
  TC_CHOICE.get(ctx)?.delete(key);
}

function choiceOf<C>(ctx: WebGpuContext, key: string): C | undefined {
  return TC_CHOICE.get(ctx)?.get(key) as C | undefined;
}

/** The passes of one launch, built synchronously once its programs are compiled. */
interface Launch<R> {
  steps: ComputeStep[];
  result: R;
  /** Uniform and aux uploads, released to the pool once the steps are queued. */
  owned: GpuBuffer[];
  /** Outputs made here (not the caller's): disposed when the launch fails. */
  made: Tensor[];
}

/** Dispatches a launch as its own submit; on failure nothing it made survives. */
async function dispatchLaunch<R>(
  ctx: WebGpuContext,
  launch: Launch<R>,
  profiler: GpuProfiler | undefined,
): Promise<R> {
  try {
    await ctx.dispatch(launch.steps, profiler);
  } catch (e) {
    for (const t of launch.made) t.dispose();
    throw e;
  } finally {
    for (const b of launch.owned) ctx.pool.release(b);
  }
  return launch.result;
}

/**
 * Hands a launch's steps, and its scratch buffers, to the caller (WebGpuEncodeTarget.sink).
 * Grids are checked first (as ctx.dispatch does), so that the sink never gets a launch it
 * cannot encode whole.
 */
function sinkLaunch<R>(ctx: WebGpuContext, launch: Launch<R>, target: WebGpuEncodeTarget): R {
  try {
    ctx.checkSteps(launch.steps);
    target.sink(launch.steps, launch.owned);
  } catch (e) {
    for (const t of launch.made) t.dispose();
    for (const b of launch.owned) ctx.pool.release(b);
    throw e;
  }
  return launch.result;
}

/** A typed error unless `target` is a WebGpuEncodeTarget (checked before anything is made). */
function checkTarget(target: WebGpuEncodeTarget): void {
  if (target === null || typeof target !== 'object' || typeof target.sink !== 'function')
    throw new ValueError(
      `target.sink: expected a function (steps, scratch) => void, got ${describe(target?.sink)}`,
      'target.sink',
    );
}

/**
 * Where the synchronous entry points put their work: `sink` receives the launch's compute
 * steps (compiled pipelines, buffers in binding order, workgroups) to encode into the caller's
 * own command encoder, in the caller's order, and submit with the caller's error scopes, and
 * the launch's `scratch` buffers (uniforms, tables, uploads the steps bind), which are the
 * caller's from then on: release each to the context's pool (`ctx.pool.release`) once the
 * command buffer holding the steps is submitted, not before (the pool would hand them out
 * again). `outputs` are tensors the results are written into (same shape and dtype as the
 * ones the kernels would make: o, lse; dq, dk, dv) instead of new ones, each with a buffer of
 * its own (one shared with an input or another output is a ValueError).
 */
export interface WebGpuEncodeTarget {
  sink: (steps: readonly ComputeStep[], scratch: readonly GpuBuffer[]) => void;
  outputs?: Readonly<Partial<Record<'o' | 'lse' | 'dq' | 'dk' | 'dv', Tensor>>>;
}

/** The caller's output `name` (checked against shape, dtype and device), or a new one. */
function outputLike(
  given: Tensor | undefined,
  name: string,
  shape: readonly number[],
  dtype: StorageDType | 'f32',
  ctx: WebGpuContext,
  made: Tensor[],
  /** Buffers the launch reads or already writes: a given output may not share one. */
  taken: GpuBuffer[],
): Tensor {
  if (given !== undefined) {
    const b = checkLike(given, `outputs.${name}`, shape, dtype, ctx);
    if (taken.includes(b))
      throw new ValueError(
        `outputs.${name}: expected a tensor of its own, got one that shares its buffer with an input or another output`,
        `outputs.${name}`,
      );
    taken.push(b);
    return given;
  }
  const t = emptyWebGpu(shape, dtype, ctx);
  made.push(t);
  return t;
}

interface ForwardSetup {
  pr: Prepared;
  hooks: TiledHooks;
  fp: WebGpuFlashPlan;
  /** Tensor-core candidates, best first (undefined: the SIMT kernel). */
  tcs: TcForwardConfig[] | undefined;
  /** The decode kernel's spec, for decode-sized problems without a split (one workgroup per kv head). */
  decode?: DecodeSpec;
  /** Split-K and stream-K forwards (decode-sized or not): two dispatches of their own (async only). */
  special?: () => Promise<{ o: Tensor; lse: Tensor | undefined }>;
}

/** Validation, plan and route of a forward (typed errors naming the argument). */
function forwardSetup(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: WebGpuTileOptions,
): ForwardSetup {
  // prepare() first: it checks the hooks object itself (ValueError naming `hooks`).
  const pr = prepare(p, hooks, q, k, v, opts, 'forward');
  const splits = splitsOf(hooks);
  const workers = streamKWorkersOf(hooks);
  const { ctx } = pr;
  checkBindingSizes(ctx, { q, k, v }, hooks);
  checkOutputBindings(ctx, p, pr.dtype, hooks.normalize.kind === 'softmax');
  const fp = plan(pr, 'forward', opts);
  if (p.paged && opts.tensorCores)
    throw new ValueError(
      'paged: expected no tensorCores with paged K/V (the tensor-core forward reads contiguous K/V), got both',
      'paged',
    );
  const base = { pr, hooks, fp, tcs: undefined };
  if (inDecodeRegime(p, hooks, opts, ctx.limits.maxComputeWorkgroupStorageSize)) {
    if (splits === undefined && workers === undefined) {
      // The lanes of a key reduce with subgroup shuffles when the device's subgroups hold them.
      const hookShape = {
        uniforms: pr.hooks.hooks.uniforms,
        bindings: pr.hooks.hooks.bindings,
        normalize: pr.hooks.hooks.normalize,
      };
      return {
        ...base,
        decode: decodeSpecFor(p, pr.dtype, 'fa2', hookShape, ctx.features, ctx.limits),
      };
    }
    return { ...base, special: () => decodeForward(pr, fp, splits, workers, opts) };
  }
  if (splits !== undefined) return { ...base, special: () => splitKForward(pr, fp, splits, opts) };
  if (workers !== undefined)
    return { ...base, special: () => streamKForward(pr, fp, workers, opts) };
  const tcs = opts.tensorCores
    ? tcConfigs(pr, hooks, opts.tensorCores)
    : opts.tensorCores === undefined &&
        tcAutoSelect('forward', tcAutoProblem(pr), ctx.adapterInfo.vendor, ctx.robustAccess)
      ? qualifying(() => tcConfigs(pr, hooks, true))
      : undefined;
  return { ...base, tcs };
}

interface ForwardPrograms {
  tc: TcForwardConfig | undefined;
  kernel: WgslKernel;
  program: CompiledProgram;
  /** presplit: the pass that splits q, k, v into [hi | lo] halves first. */
  split?: CompiledProgram;
  /** presplit: the SIMT forward as its range guard (ShaderSpec.guard), queued after it. */
  guard?: { kernel: WgslKernel; program: CompiledProgram };
}

const SPLIT_F16_KERNEL = (): WgslKernel => generatedKernel('split f16', splitF16Shader);
const guardKernel = (s: ForwardSetup) =>
  generatedKernel('forward', forwardShader, { ...spec(s.pr, s.fp), guard: true });

/** What tcAutoSelect weighs of a prepared problem (both passes ask it alike). */
const tcAutoProblem = ({ p, dtype }: Prepared) => ({
  d: p.d,
  dv: p.dv,
  dtype,
  maxSeqQ: p.maxSeqQ,
  maxSeqK: p.maxSeqK,
  paged: p.paged !== undefined,
});

/** TC_CHOICE's key of a forward's tensor-core candidate list (backwardKey: the backward's). */
const forwardKey = (tcs: readonly TcForwardConfig[]) => `forward|${JSON.stringify(tcs)}`;

const tcForwardKernel = (c: TcForwardConfig) => generatedKernel('tc forward', tcForwardShader, c);
const simtForwardKernel = (s: ForwardSetup) =>
  s.decode
    ? generatedKernel('decode', decodeShader, s.decode)
    : generatedKernel('forward', forwardShader, spec(s.pr, s.fp));

/**
 * Tensor-core tiles best first: a pipeline that does not compile in time (the cache's limit,
 * PipelineTimeoutError) or is rejected falls back to the next tile (issue 20 item 4). When
 * every tile fails, an explicit request rejects with PipelineFallbackError listing them; an
 * automatic choice runs the SIMT kernel instead.
 */
async function forwardPrograms(s: ForwardSetup, opts: WebGpuTileOptions): Promise<ForwardPrograms> {
  const { ctx } = s.pr;
  if (s.tcs) {
    const key = forwardKey(s.tcs);
    try {
      const r = await compileFirstInTime(
        s.tcs,
        (c) => compile(ctx, tcForwardKernel(c), TC_FORWARD_LABEL, c),
        { kernel: TC_FORWARD_LABEL, timeoutMs: Number.POSITIVE_INFINITY },
      );
      rememberChoice(ctx, key, r.config);
      const split = r.config.presplit
        ? await compile(ctx, SPLIT_F16_KERNEL(), 'split-f16 operands')
        : undefined;
      const gk = r.config.presplit ? guardKernel(s) : undefined;
      const guard = gk && {
        kernel: gk,
        program: await compile(ctx, gk, 'flash-attention forward (split-f16 range guard)', s.fp),
      };
      return {
        tc: r.config,
        kernel: tcForwardKernel(r.config),
        program: r.value,
        ...(split ? { split } : {}),
        ...(guard ? { guard } : {}),
      };
    } catch (e) {
      // Not remembered: a tile that timed out is compiled again next time (compile() forgets
      // failures), and an explicit request must still get the PipelineFallbackError.
      forgetChoice(ctx, key);
      if (opts.tensorCores || !(e instanceof PipelineFallbackError)) throw e;
    }
  }
  const kernel = simtForwardKernel(s);
  return {
    tc: undefined,
    kernel,
    program: s.decode
      ? await compile(ctx, kernel, 'flash-attention decode', s.decode)
      : await compile(ctx, kernel, 'flash-attention forward', s.fp),
  };
}

/** forwardPrograms' result when every program it needs has compiled before, else undefined. */
function readyForwardPrograms(s: ForwardSetup): ForwardPrograms | undefined {
  const { ctx } = s.pr;
  if (s.tcs) {
    const c = choiceOf<TcForwardConfig>(ctx, forwardKey(s.tcs));
    if (c === undefined) return undefined;
    const kernel = tcForwardKernel(c);
    const program = readyProgram(ctx, kernel);
    if (!c.presplit) return program && { tc: c, kernel, program };
    const split = readyProgram(ctx, SPLIT_F16_KERNEL());
    const gk = guardKernel(s);
    const gp = readyProgram(ctx, gk);
    return (
      program &&
      split &&
      gp && { tc: c, kernel, program, split, guard: { kernel: gk, program: gp } }
    );
  }
  const kernel = simtForwardKernel(s);
  const program = readyProgram(ctx, kernel);
  return program && { tc: undefined, kernel, program };
}

function forwardLaunch(
  s: ForwardSetup,
  progs: ForwardPrograms,
  given: WebGpuEncodeTarget['outputs'] = {},
): Launch<{ o: Tensor; lse: Tensor | undefined }> {
  const { pr, fp } = s;
  const { p, ctx } = pr;
  const { tc, kernel, program } = progs;
  const br = tc ? 16 * tc.subgroups : fp.br;
  const made: Tensor[] = [];
  const owned: GpuBuffer[] = [];
  try {
    const taken = Object.values(pr.buffers).map(bindingBuffer);
    const o = outputLike(given.o, 'o', p.oShape, pr.dtype, ctx, made, taken);
    const lse =
      s.hooks.normalize.kind === 'softmax'
        ? outputLike(given.lse, 'lse', p.lseShape, 'f32', ctx, made, taken)
        : undefined;
    const bc = tc ? 16 * tc.keyMatrices : fp.bc;
    const tile = s.decode
      ? { tileQ: Math.max(1, p.maxSeqQ), tileK: DECODE_BK }
      : { tileQ: br, tileK: bc };
    // presplit: q, k, v split into [hi | lo] halves by a pass of their own, bound in their place.
    // The hooks' buffers (uploads among them), bound by the kernel and by split-f16's guard.
    const hooked = hookBuffers(pr, owned);
    const pre: ComputeStep[] = [];
    const post: ComputeStep[] = [];
    const halves: Partial<Record<'q' | 'k' | 'v', GpuBuffer>> = {};
    const loOffs = { qLo: 0, kLo: 0, vLo: 0 };
    if (tc?.presplit && progs.split && progs.guard) {
      const splitKernel = SPLIT_F16_KERNEL();
      // Word 0: set by the split pass when an input lies outside split-f16's domain (|x| >=
      // 32768, infinities, NaN; split-f16.ts); the guard kernel, after the tensor-core one, then
      // writes o and lse with the SIMT arithmetic, and otherwise returns at once. No read-back.
      const flag = ctx.createFromData(new Uint32Array([0]), 'split-f16 range flag');
      owned.push(flag);
      for (const name of ['q', 'k', 'v'] as const) {
        const src = pr.buffers[name];
        const lay = splitF16Layout(bindingSize(src) - (bindingSize(src) % 4));
        const dst = ctx.createStorageBuffer(lay.bytes, `split-f16 ${name}`);
        // The whole buffer is split (qDirect's 16-row blocks may reach past the tensor), but
        // only the tensor's elements are checked: a pooled buffer's tail holds stale words.
        const u = ctx.createUniform(
          new Uint32Array([lay.n, lay.loOff, Math.min(pr.elements[name], lay.n), 0]),
          `split-f16 ${name} U`,
        );
        owned.push(dst, u);
        halves[name] = dst;
        loOffs[`${name}Lo`] = lay.loOff;
        pre.push({
          program: progs.split,
          buffers: bindBuffers(splitKernel.bindings, { U: u, x: src, y: dst, flag }),
          workgroups: [Math.min(SPLIT_F16_WORKGROUPS, Math.ceil(lay.n / 512))],
          label: `split-f16 ${name}`,
        });
      }
      const [gu, ga] = launchBuffers(pr, buildAux(p, { tileQ: fp.br, tileK: fp.bc }));
      owned.push(gu, ga);
      post.push({
        program: progs.guard.program,
        buffers: bindBuffers(progs.guard.kernel.bindings, {
          ...hooked,
          ...pr.buffers,
          P: gu,
          aux: ga,
          o: buf(o),
          lse: lse && buf(lse),
          guard: flag,
        }),
        workgroups: [Math.ceil(p.maxSeqQ / fp.br), p.hq, p.batch],
        label: 'flash forward (split-f16 range guard)',
      });
    }
    const [uniform, aux] = tc?.presplit
      ? launchBuffers(pr, buildAux(p, tile), { fields: TC_SPLIT_FIELDS, values: loOffs })
      : launchBuffers(pr, buildAux(p, tile));
    owned.push(uniform, aux);
    const buffers = {
      ...hooked,
      ...pr.buffers,
      ...halves,
      // The tensor-core forward's qDirect binds q's buffer a second time, as halves.
      q16: halves.q ?? pr.buffers.q,
      P: uniform,
      aux,
      o: buf(o),
      lse: lse && buf(lse),
    };
    const steps: ComputeStep[] = [
      ...pre,
      {
        program,
        buffers: bindBuffers(kernel.bindings, buffers),
        // The decode kernel: one workgroup per (kv head, batch) holding its group's rows.
        workgroups: s.decode ? [1, p.hkv, p.batch] : [Math.ceil(p.maxSeqQ / br), p.hq, p.batch],
        label: s.decode ? 'flash decode' : 'flash forward',
      },
      ...post,
    ];
    return { steps, result: { o, lse }, owned, made };
  } catch (e) {
    for (const t of made) t.dispose();
    for (const b of owned) ctx.pool.release(b);
    throw e;
  }
}

/**
 * The tiled FlashAttention-2 forward in WGSL with the skeleton's hooks (normalisation, score
 * mods, the problem's mask mod). `p` is already resolved by the caller (resolveAttentionProblem)
 * from q, k, v: webgpu tensors (f32, or f16/bf16 packed in u32) of one context, in the layouts
 * of KERNELS.md "Common". Returns o (q's dtype) and, for softmax, lse (f32) as webgpu tensors;
 * lse is undefined for the pointwise sigmoid and silu. Resolves once the work is queued and validated. With
 * `hooks.schedule` { kind: 'splitK', splits } (FlashDecoding) each (query tile, head, batch)'s
 * key tiles are split among `splits` workgroups and a combine kernel merges their partials;
 * with { kind: 'streamK', workers } (LeanAttention) all of them, concatenated, are cut among
 * `workers` workgroups and a fix-up kernel merges each unit's pieces (streamKForward).
 * Decode-sized plain-softmax problems (decode.ts inDecodeRegime: group x maxSeqQ <= 64 rows per
 * kv head) take the decode kernel under all three schedules instead (decodeForward).
 */
export async function tiledForwardWebGpu(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: WebGpuTileOptions = {},
): Promise<{ o: Tensor; lse: Tensor | undefined }> {
  const chunks = forwardChunks(p, hooks, q, k, v);
  if (chunks) return chunkedForward(p, hooks, q, k, v, opts, chunks);
  return runForward(forwardSetup(p, hooks, q, k, v, opts), opts);
}

/** A set-up forward's launch: its special route (split-K, stream-K), else its kernel's. */
async function runForward(
  s: ForwardSetup,
  opts: WebGpuTileOptions,
): Promise<{ o: Tensor; lse: Tensor | undefined }> {
  if (s.special) return s.special();
  const progs = await forwardPrograms(s, opts);
  return dispatchLaunch(s.pr.ctx, forwardLaunch(s, progs), opts.profiler);
}

/**
 * tiledForwardWebGpu, synchronously, into the caller's encoder (WebGpuEncodeTarget): the same
 * validation, plan and kernel, for a caller that records work in order and cannot await
 * (@attnkit/nn's queue, which then submits attention with the passes around it). Undefined,
 * with nothing made, when it cannot: a program not compiled yet (the async path compiles it and
 * remembers the tensor-core tile it chose), the split-K / stream-K routes, decode-sized or not (several
 * dispatches), a profiler. Typed errors as the async path.
 */
export function encodeForwardWebGpu(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: WebGpuTileOptions,
  target: WebGpuEncodeTarget,
): { o: Tensor; lse: Tensor | undefined } | undefined {
  checkTarget(target);
  if (opts.profiler) return undefined;
  // Binding chunks are several launches with copies between: the async path's.
  if (forwardChunks(p, hooks, q, k, v)) return undefined;
  const s = forwardSetup(p, hooks, q, k, v, opts);
  if (s.special) return undefined;
  const progs = readyForwardPrograms(s);
  if (!progs) return undefined;
  return sinkLaunch(s.pr.ctx, forwardLaunch(s, progs, target.outputs), target);
}

/**
 * The binding chunks of a forward (chunks.ts), or undefined when q, k, v, o and lse each fit
 * one storage binding, or when the problem is not one chunkedForward cuts (it then meets
 * checkBindingSizes' ValueError naming the tensor). Cut: BHND, contiguous K/V (not paged), no
 * block mask, mask mod, score mod, HSTU mask or rab, no permutation; softmax (sinks sliced per
 * query head), sigmoid (bias sliced per batch entry) or silu. Views it made are never cut again.
 */
function forwardChunks(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
): BindingChunk[] | undefined {
  if (CHUNK_VIEWS.has(q) || p.layout !== 'BHND' || p.paged) return undefined;
  // Malformed hooks are prepare()'s ValueError naming `hooks`, on the one-launch path.
  if (hooks === null || typeof hooks !== 'object' || !Array.isArray(hooks.scoreMods))
    return undefined;
  if (p.blockSparse || p.maskMod || hooks.scoreMods.length || hooks.mask || hooks.rab)
    return undefined;
  if (hooks.permute) return undefined;
  // Halves need even head dims (prepare's error says so; it comes first).
  if (q.dtype !== 'f32' && (p.d % 2 !== 0 || p.dv % 2 !== 0)) return undefined;
  // Whole tensors at offset 0 (the errors prepare() would give, before anything is cut).
  const ctx = webGpuStorageOf(q, 'q').ctx;
  webGpuStorageOf(k, 'k');
  webGpuStorageOf(v, 'v');
  const g = p.group;
  const [eq, ek, ev] = [q, k, v].map((t) => bytesPerElement(t.dtype)) as [number, number, number];
  const rows = g * p.maxSeqQ;
  // The whole o is still one buffer (chunks write into it): past maxBufferSize nothing holds it.
  const oBytes = numel(p.oShape) * eq;
  if (oBytes > ctx.limits.maxBufferSize)
    throw new ValueError(
      `q: its output o ${formatShape(p.oShape)} would take ${oBytes} bytes, more than one buffer may hold on this device (${ctx.limits.maxBufferSize})`,
      'q',
    );
  // Split-K's partials are bindings too (partialBytes): Dv f32 and (m, l) per row and split.
  const splits = splitsOf(hooks) ?? 0;
  const partials = {
    "split-K's partials": {
      bytes: rows * splits * p.dv * 4,
      elements: rows * splits * p.dv,
      bound: false,
      argument: 'schedule',
    },
    "split-K's stats": {
      bytes: rows * splits * 8,
      elements: rows * splits * 2,
      bound: false,
      argument: 'schedule',
    },
  };
  return planBindingChunks({
    batch: p.batch,
    hkv: p.hkv,
    maxBinding: ctx.limits.maxStorageBufferBindingSize,
    align: BINDING_OFFSET_ALIGNMENT,
    slices: {
      q: { bytes: rows * p.d * eq, elements: rows * p.d, bound: true },
      k: { bytes: p.maxSeqK * p.d * ek, elements: p.maxSeqK * p.d, bound: true },
      v: { bytes: p.maxSeqK * p.dv * ev, elements: p.maxSeqK * p.dv, bound: true },
      // o and lse have q's rows: an error about them names q (as checkOutputBindings does).
      o: { bytes: rows * p.dv * eq, elements: rows * p.dv, bound: false, argument: 'q' },
      lse: { bytes: rows * 4, elements: rows, bound: false, argument: 'q' },
      ...(splits > 0 ? partials : {}),
    },
  });
}

/**
 * A forward too large for one binding a tensor, as several launches (chunks.ts): each chunk's
 * q, k and v bound where they lie (views, CHUNK_VIEWS), its o and lse written to buffers of
 * their own and copied into place. The chunks run one after another through
 * tiledForwardWebGpu, so each takes the route (decode, split-K, stream-K, tensor cores) its
 * own problem would. On failure o and lse are disposed; nothing half-written is returned.
 */
async function chunkedForward(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: WebGpuTileOptions,
  chunks: readonly BindingChunk[],
): Promise<{ o: Tensor; lse: Tensor | undefined }> {
  const ctx = webGpuStorageOf(q, 'q').ctx;
  const norm = hooks.normalize;
  // Before slicing them per chunk (the chunks' own prepare() sees only their slices).
  checkNormalizeArrays(p, norm);
  const g = p.group;
  const [nq, nk] = [p.maxSeqQ, p.maxSeqK];
  /** The chunk's problem, hooks and views of q, k, v (its own launch's inputs). */
  const chunkCall = (ch: BindingChunk) => {
    const hq = ch.nh * g;
    // The chunk's first kv head, counted over (batch, kv head) pairs: BHND keeps them in order.
    const first = ch.b0 * p.hkv + ch.h0;
    const view = (t: Tensor, shape: number[], perHead: number) => {
      const x = new Tensor(t.storage, shape, undefined, first * perHead);
      CHUNK_VIEWS.add(x);
      return x;
    };
    const sub: AttentionProblem = {
      ...p,
      batch: ch.nb,
      hq,
      hkv: ch.nh,
      seqQ: p.seqQ.slice(ch.b0, ch.b0 + ch.nb),
      seqK: p.seqK.slice(ch.b0, ch.b0 + ch.nb),
      startQ: new Int32Array(ch.nb),
      startK: new Int32Array(ch.nb),
      totalQ: ch.nb * nq,
      totalK: ch.nb * nk,
      oShape: [ch.nb, hq, nq, p.dv],
      lseShape: [ch.nb, hq, nq],
    };
    const h0 = ch.h0 * g;
    const subHooks: TiledHooks = {
      ...hooks,
      normalize:
        norm.kind === 'softmax' && norm.sinks !== undefined
          ? { ...norm, sinks: norm.sinks.slice(h0, h0 + hq) }
          : norm.kind === 'sigmoid'
            ? { ...norm, bias: norm.bias.slice(ch.b0, ch.b0 + ch.nb) }
            : norm,
    };
    return {
      first,
      sub,
      subHooks,
      q: view(q, [ch.nb, hq, nq, p.d], g * nq * p.d),
      k: view(k, [ch.nb, ch.nh, nk, p.d], nk * p.d),
      v: view(v, [ch.nb, ch.nh, nk, p.dv], nk * p.dv),
    };
  };
  // Every chunk set up (options, hooks, inputs and its plan: forwardSetup's typed errors; it
  // allocates nothing) before o and lse are allocated.
  const calls = chunks.map(chunkCall);
  const setups = calls.map((c) => forwardSetup(c.sub, c.subHooks, c.q, c.k, c.v, opts));
  const o = emptyWebGpu(p.oShape, q.dtype, ctx);
  const lse = norm.kind === 'softmax' ? emptyWebGpu(p.lseShape, 'f32', ctx) : undefined;
  const eo = bytesPerElement(q.dtype);
  try {
    for (const [i, c] of calls.entries()) {
      const r = await runForward(setups[i]!, opts);
      try {
        await ctx.scoped('binding chunk copy', () => {
          const enc = ctx.device.createCommandEncoder();
          const rows = c.first * g * nq;
          enc.copyBufferToBuffer(buf(r.o), 0, buf(o), rows * p.dv * eo, r.o.size * eo);
          if (lse && r.lse)
            enc.copyBufferToBuffer(buf(r.lse), 0, buf(lse), rows * 4, r.lse.size * 4);
          ctx.device.queue.submit([enc.finish()]);
        });
      } finally {
        r.o.dispose();
        r.lse?.dispose();
      }
    }
  } catch (e) {
    o.dispose();
    lse?.dispose();
    throw e;
  }
  return { o, lse };
}

/**
 * A tensor-core config chosen without being asked (tc-auto.ts), or undefined (the SIMT kernels)
 * when the problem or adapter does not qualify: the ValueError an explicit request would get.
 */
function qualifying<T>(config: () => T): T | undefined {
  try {
    return config();
  } catch (e) {
    if (e instanceof ValueError) return undefined;
    throw e;
  }
}

/** Tiles of the tensor-core forward tried by default, best first (subgroups x keyMatrices). */
const TC_DEFAULT_TILES = [
  { subgroups: 4, keyMatrices: 2 },
  { subgroups: 4, keyMatrices: 1 },
  { subgroups: 2, keyMatrices: 2 },
  { subgroups: 2, keyMatrices: 1 },
  { subgroups: 1, keyMatrices: 1 },
];
/** With qDirect (no Q block in workgroup memory): 8 subgroups first (128 query rows). */
const TC_DIRECT_TILES = [{ subgroups: 8, keyMatrices: 2 }, ...TC_DEFAULT_TILES];
/**
 * split-f16 with qDirect: its hi and lo K/V tiles double the memory, so 8 subgroups fit only
 * with one key matrix at D 128 (47.6 KB of the H200's 48 KB); that tile ran 57.5 TFLOP/s at
 * (4, 16, 4096, 128) against 43.7 for the 4 x 1 tile the list above gave (H200, session 28).
 */
const TC_SPLIT_DIRECT_TILES = [
  { subgroups: 8, keyMatrices: 2 },
  { subgroups: 8, keyMatrices: 1 },
  ...TC_DEFAULT_TILES,
];
/**
 * split-f16 with qDirect at D, Dv <= 64: 4 x 1 first. At (16, 16, 1024, 64) on the H100 it ran
 * 37.4 TFLOP/s against 30.0 for 4 x 2 and 20.2 for the 8 x 1 the list above gives first there
 * (8 x 2 needs 72 KB); SIMT f32 22.8; each 1.7e-6 from SIMT (session 30, BENCHMARKS.md "WebGPU
 * tensor cores, session 30").
 */
const TC_SPLIT_DIRECT_TILES_D64 = [
  { subgroups: 4, keyMatrices: 1 },
  ...TC_SPLIT_DIRECT_TILES.filter((t) => t.subgroups !== 4 || t.keyMatrices !== 1),
];

const TC_FORWARD_LABEL = 'flash-attention forward (tensor cores)';

/**
 * The tensor-core forward's configs for this problem, best first (tcConfig's, then the other
 * tiles of TC_DEFAULT_TILES that fit the device, each with the caller's other fields): the
 * fallbacks when a pipeline does not compile in time. A caller that names the tile
 * (subgroups / keyMatrices) gets that tile only.
 */
function tcConfigs(
  pr: Prepared,
  hooks: TiledHooks,
  want: true | Partial<Omit<TcForwardConfig, 'd' | 'dv'>>,
): TcForwardConfig[] {
  const first = tcConfig(pr, hooks, want);
  if (want !== true && (want.subgroups !== undefined || want.keyMatrices !== undefined))
    return [first];
  const limit = pr.ctx.limits.maxComputeWorkgroupStorageSize;
  const rest = TC_DEFAULT_TILES.map((t) => ({ ...first, ...t })).filter(
    (c) =>
      (c.subgroups !== first.subgroups || c.keyMatrices !== first.keyMatrices) &&
      tcForwardWorkgroupBytes(c) <= limit,
  );
  return [first, ...rest];
}

/**
 * The tensor-core forward's config for this problem (WebGpuTileOptions.tensorCores), or a
 * ValueError naming `tensorCores` with the reason the problem or the adapter does not qualify.
 */
function tcConfig(
  pr: Prepared,
  hooks: TiledHooks,
  want: true | Partial<Omit<TcForwardConfig, 'd' | 'dv'>>,
): TcForwardConfig {
  const { ctx, p } = pr;
  const f = ctx.features;
  const no = (why: string): never => {
    throw new ValueError(
      `tensorCores: expected a problem and adapter the tensor-core forward runs, got one where ${why}`,
      'tensorCores',
    );
  };
  // The emulated kernel (a test aid: TcForwardConfig.emulate) needs none of the features.
  const emulate = want !== true && want.emulate === true;
  const gap = emulate ? undefined : tcAdapterGap(f);
  if (gap) no(gap);
  // f32 inputs run as split-f16 (TcForwardConfig.split); bf16 has no subgroup-matrix config.
  if (pr.dtype !== 'f16' && pr.dtype !== 'f32') no(`the inputs are ${pr.dtype}, not f16 or f32`);
  const split = pr.dtype === 'f32';
  if (hooks.normalize.kind !== 'softmax' || hooks.normalize.sinks)
    no('the normalisation is not plain softmax');
  if (hooks.scoreMods.length > 0 || hooks.mask || hooks.rab || hooks.permute || p.maskMod)
    no('score mods, masks or a permutation are set');
  if (p.paged) no('K/V are paged (the tensor-core forward reads contiguous K/V)');
  if (p.d % 16 !== 0 || p.dv % 16 !== 0) no(`D = ${p.d}, Dv = ${p.dv} are not multiples of 16`);
  // Defaults: the fastest verified variant on the H200 (benchmarks/gpu/results/tc-wip/
  // VARIANTS.md, run 12), with the largest tile of TC_DEFAULT_TILES that fits the device's
  // workgroup memory; fields the caller gives win.
  const given = want === true ? {} : want;
  // split-f16's operands split by a pass of their own before the kernel (presplit: the kernel
  // then stages halves as the f16 one does), and P split by masking (splitMask), unless the
  // caller says otherwise. On the H200 (session 28) rounding conversions were what cost the
  // in-kernel split its precision: the compiler folds f32(f16(x)) back to x in registers, so
  // lo = x - hi came out 0 while hi reached the tensor cores rounded (o 3-4e-4 against float64);
  // masked his gave 4.6e-7, and presplit with the masked P met 1e-5 on every verification case.
  const presplit = split && given.presplit !== false;
  const limit = ctx.limits.maxComputeWorkgroupStorageSize;
  // Q's matrices straight from storage (qDirect) wherever every 16-row block of q lies within
  // its buffer (tcQDirectFits; not split-f16, which stages Q as hi and lo): the Q block's
  // workgroup memory it frees takes 8 subgroups (128 query rows) per workgroup, 88.3 -> 117.3
  // TFLOP/s at (4, 16, 4096, 128) on the H200, verified there (2026-12-05, BENCHMARKS.md
  // "WebGPU tensor cores, session 23"). Elsewhere Q is staged, with the tiles as before. Not by
  // default for causal attention at D <= 64: there the 128-row workgroups ran slower at (16, 16,
  // 1024, 64) (1.05 ms against session 18's 0.85 with Q staged, 4 x 32), though faster without
  // the mask (1.05 against 1.38), so that case keeps the measured staged tile.
  if (given.qDirect === true && split && !presplit)
    throw new ValueError(
      'tensorCores.qDirect: expected false or undefined without presplit (the in-kernel split-f16 stages Q as hi and lo halves), got true',
      'tensorCores.qDirect',
    );
  // q's halves: its buffer's (f16), or the hi part of presplit's [hi | lo] (one per f32).
  const canDirect =
    (!split || presplit) &&
    given.qDirect !== false &&
    tcQDirectFits(p, bindingSize(pr.buffers.q) / (split ? 4 : 2));
  const direct = canDirect && (given.qDirect === true || !(p.causal && p.d <= 64));
  const splitTiles = p.d <= 64 && p.dv <= 64 ? TC_SPLIT_DIRECT_TILES_D64 : TC_SPLIT_DIRECT_TILES;
  const tiles = direct ? (split ? splitTiles : TC_DIRECT_TILES) : TC_DEFAULT_TILES;
  const base = {
    d: p.d,
    dv: p.dv,
    lazy: 8,
    pad: 8,
    swizzle: true,
    split,
    ...(presplit ? { presplit } : {}),
    ...(split ? { splitMask: true } : {}),
  };
  const fits = (t: { subgroups: number; keyMatrices: number }) =>
    tcForwardWorkgroupBytes({ ...base, ...t, ...given, split, qDirect: direct }) <= limit;
  const tile = tiles.find(fits) ?? tiles[0]!;
  const c: TcForwardConfig = {
    ...base,
    ...tile,
    ...given,
    split,
    qDirect: direct,
    ...(p.blockSparse ? { blockSparse: true } : {}),
  };
  // A caller's tile that fits only beside qDirect, where qDirect was not chosen: with qDirect
  // where q's buffer takes it (causal at D <= 64), else the largest default tile that fits with
  // Q staged, rather than a ValueError that depends on the sequence lengths. A tile too large
  // even for qDirect (or qDirect: false) stays an error.
  if (
    !direct &&
    !split &&
    given.qDirect !== false &&
    tcForwardWorkgroupBytes(c) > limit &&
    tcForwardWorkgroupBytes({ ...c, qDirect: true }) <= limit
  ) {
    if (canDirect) c.qDirect = true;
    else {
      const t = TC_DEFAULT_TILES.find((t) => tcForwardWorkgroupBytes({ ...c, ...t }) <= limit);
      if (t) Object.assign(c, t);
    }
  }
  // Staging with every load issued before the stores: 27.7 -> 35.1 TFLOP/s at (4, 16, 4096,
  // 128) on the H200, verified there (2026-12-04, BENCHMARKS.md "WebGPU tensor cores, session
  // 17"); not beside split / narrow (their own staging), and a caller's choice wins.
  c.batchLoads ??= (!c.split || presplit) && !c.narrow;
  // Matrix offsets that are compile-time constants (scratch as arrays of per-subgroup arrays):
  // robustness then checks them at compile time instead of branching around every load; 35.2
  // -> 61.2 TFLOP/s at (4, 16, 4096, 128) on the H200 with robust access, verified there
  // (2026-12-04, BENCHMARKS.md "WebGPU tensor cores, session 18").
  c.constOffsets ??= true;
  // The softmax from registers (each score read once) and Q's matrices held in registers: 61.2
  // -> 89.7 TFLOP/s there (same run of record; qRegs is not available beside split-f16).
  c.regSoftmax ??= true;
  c.qRegs ??= !c.split || presplit;
  if (tcForwardWorkgroupBytes(c) > ctx.limits.maxComputeWorkgroupStorageSize)
    no(
      `the config needs ${tcForwardWorkgroupBytes(c)} bytes of workgroup memory (limit ${ctx.limits.maxComputeWorkgroupStorageSize})`,
    );
  return c;
}

/**
 * Split-K (FlashDecoding): the forward kernel with schedule 'splitK' over (query tiles, heads,
 * batch x splits) workgroups writes per-(row, split) partials to scratch buffers, and the
 * combine kernel merges them into o and lse; both queued in one command buffer.
 */
async function splitKForward(
  pr: Prepared,
  fp: WebGpuFlashPlan,
  splits: number,
  opts: WebGpuTileOptions,
): Promise<{ o: Tensor; lse: Tensor | undefined }> {
  const { ctx, p } = pr;
  const s: ShaderSpec = { ...spec(pr, fp), schedule: 'splitK' };
  const kernel = generatedKernel('forward', forwardShader, s);
  const combine = generatedKernel('combine', combineShader, s);
  const [program, combineProgram] = await Promise.all([
    compile(ctx, kernel, 'flash-attention forward split-K', fp),
    compile(ctx, combine, 'flash-attention split-K combine', fp),
  ]);
  const accBytes = partialBytes(pr, splits, 'splitK');
  // batch x splits workgroups along z: a device limit, said before anything is queued.
  const maxZ = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (p.batch * splits > maxZ)
    throw new ValueError(
      `schedule.splits: expected batch (${p.batch}) x splits <= ${maxZ} (the device's workgroups per dimension), got ${splits} splits`,
      'schedule.splits',
    );
  return launchWithPartials(pr, opts, {
    name: 'split-K',
    combineName: 'combine',
    partial: {
      kernel,
      program,
      workgroups: [Math.ceil(p.maxSeqQ / fp.br), p.hq, p.batch * splits],
    },
    combine: { kernel: combine, program: combineProgram },
    slots: splits,
    accBytes,
    tables: buildAux(p, { tileQ: fp.br, tileK: fp.bc }),
    schedule: { fields: [SPLITS_FIELD], values: { splits } },
  });
}

/**
 * Bytes of the f32 partial accumulators, `slots` per output row (split-K's splits, stream-K's
 * pieces of one unit), for the generic and the decode kernels alike; a ValueError naming
 * `schedule` when one binding cannot hold them.
 */
function partialBytes(pr: Prepared, slots: number, kind: 'splitK' | 'streamK'): number {
  const { ctx, p } = pr;
  const rows = p.lseShape.reduce((a, x) => a * x, 1);
  const accBytes = rows * slots * p.dv * 4;
  const max = ctx.limits.maxStorageBufferBindingSize;
  if (accBytes > max)
    throw new ValueError(
      kind === 'splitK'
        ? `schedule: split-K's partials take ${accBytes} bytes (${rows} rows x ${slots} splits x Dv ${p.dv} f32), more than one binding may hold on this device (${max})`
        : `schedule: stream-K's partials take ${accBytes} bytes (${rows} rows x ${slots} pieces of one unit x Dv ${p.dv} f32), more than one binding may hold on this device (${max})`,
      'schedule',
    );
  return accBytes;
}

/** Stream-K runs one workgroup per worker that holds key tiles: at most the device's per-dimension count. */
function checkStreamKWorkers(ctx: WebGpuContext, workers: number): void {
  const maxX = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (workers > maxX)
    throw new ValueError(
      `schedule.workers: expected at most ${maxX} workers that hold key tiles (the device's workgroups per dimension), got ${workers}`,
      'schedule.workers',
    );
}

/**
 * Stream-K (LeanAttention, KERNELS.md "LeanAttention"): the key tiles of every (b, h, query
 * tile) unit, concatenated, cut among `workers` by planDecodePartition (aux.ts buildStreamK);
 * the forward kernel with schedule 'streamK' runs one workgroup per worker over its pieces,
 * writing each piece's partial (m, l, acc) into slot (row, piece of its unit) of split-K's
 * scratch layout, and the fix-up (combineShader with schedule 'streamK') merges each row's
 * pieces; both queued in one command buffer. Block sparsity is declined (UnsupportedError
 * naming `schedule`): the plan counts the band's tiles, not the mask's kept ones.
 */
async function streamKForward(
  pr: Prepared,
  fp: WebGpuFlashPlan,
  workers: number,
  opts: WebGpuTileOptions,
): Promise<{ o: Tensor; lse: Tensor | undefined }> {
  const { ctx, p } = pr;
  if (p.blockSparse !== undefined) {
    // A mask mod brings its block mask here too (resolveAttentionProblem).
    const why =
      'the WGSL stream-K plan counts the band key tiles, not the block mask kept ones; use band or splitK with block sparsity or a mask mod';
    throw new UnsupportedError(
      `schedule: expected { kind: "band" } or { kind: "splitK", splits } with a block-sparse mask or a mask mod on webgpu (${why}), got { kind: "streamK", workers: ${workers} }`,
      'schedule',
      { webgpu: why },
    );
  }
  const s: ShaderSpec = { ...spec(pr, fp), schedule: 'streamK' };
  const tables = buildAux(p, { tileQ: fp.br, tileK: fp.bc });
  const sk = buildStreamK(p, tables, { tileQ: fp.br, tileK: fp.bc }, workers);
  checkStreamKWorkers(ctx, sk.workers);
  const slots = sk.values.splits;
  const accBytes = partialBytes(pr, slots, 'streamK');
  const kernel = generatedKernel('forward', forwardShader, s);
  const fixup = generatedKernel('combine', combineShader, s);
  const [program, fixupProgram] = await Promise.all([
    compile(ctx, kernel, 'flash-attention forward stream-K', fp),
    compile(ctx, fixup, 'flash-attention stream-K fix-up', fp),
  ]);
  // Every slot the fix-up reads (slot < the row's unit's piece count) is written by a piece.
  return launchWithPartials(pr, opts, {
    name: 'stream-K',
    combineName: 'fix-up',
    partial: { kernel, program, workgroups: [sk.workers, 1, 1] },
    combine: { kernel: fixup, program: fixupProgram },
    slots,
    accBytes,
    tables,
    schedule: { fields: STREAMK_FIELDS, values: sk.values },
    aux: sk.aux,
  });
}

/**
 * Decode (decode.ts, the regime of inDecodeRegime: softmax without sinks or a pointwise weight,
 * group x maxSeqQ <= 64): one
 * workgroup per (b, kv head, piece) over all the query rows of the kv head, so K/V are read
 * once per kv head per piece. Without a schedule one piece per (b, kv head) writes o and lse
 * (forwardSetup's `decode` route, one dispatch, which the synchronous path also takes); here
 * split-K's `splits` equal key ranges and stream-K's plan (buildDecodeStreamK: the (b, kv head)
 * units cut among `workers`) write partials in the split-K layout that the generic combine
 * (fix-up) merges through launchWithPartials.
 */
async function decodeForward(
  pr: Prepared,
  fp: WebGpuFlashPlan,
  splits: number | undefined,
  workers: number | undefined,
  opts: WebGpuTileOptions,
): Promise<{ o: Tensor; lse: Tensor | undefined }> {
  const { ctx, p } = pr;
  // The unsplit decode (partition 'fa2') is forwardSetup's `decode` route.
  const partition: DecodePartition = splits !== undefined ? 'splitK' : 'streamK';
  // The lanes of a key reduce with subgroup shuffles when the device's subgroups hold them.
  const ds: DecodeSpec = decodeSpecFor(
    p,
    pr.dtype,
    partition,
    {
      uniforms: pr.hooks.hooks.uniforms,
      bindings: pr.hooks.hooks.bindings,
      normalize: pr.hooks.hooks.normalize,
    },
    ctx.features,
    ctx.limits,
  );
  const kernel = generatedKernel('decode', decodeShader, ds);
  const tables = buildAux(p, { tileQ: Math.max(1, p.maxSeqQ), tileK: DECODE_BK });
  const maxDim = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (partition === 'splitK') {
    const n = splits!;
    const accBytes = partialBytes(pr, n, 'splitK');
    // As the generic split-K's bound (batch x splits workgroups along z there), so the limit
    // does not depend on which kernel the problem gets.
    if (p.batch * n > maxDim)
      throw new ValueError(
        `schedule.splits: expected batch (${p.batch}) x splits <= ${maxDim} (the device's workgroups per dimension), got ${n} splits`,
        'schedule.splits',
      );
    const combine = generatedKernel('combine', combineShader, {
      ...spec(pr, fp),
      schedule: 'splitK',
    });
    const [program, combineProgram] = await Promise.all([
      compile(ctx, kernel, 'flash-attention decode split-K', ds),
      compile(ctx, combine, 'flash-attention split-K combine', fp),
    ]);
    return launchWithPartials(pr, opts, {
      name: 'decode split-K',
      combineName: 'combine',
      partial: { kernel, program, workgroups: [n, p.hkv, p.batch] },
      combine: { kernel: combine, program: combineProgram },
      slots: n,
      accBytes,
      tables,
      schedule: { fields: [SPLITS_FIELD], values: { splits: n } },
    });
  }
  const sk = buildDecodeStreamK(p, tables, workers!);
  checkStreamKWorkers(ctx, sk.workers);
  const slots = sk.values.splits;
  const accBytes = partialBytes(pr, slots, 'streamK');
  // The fix-up finds a row's unit as (b, h)'s first unit + row / br: one unit per (b, kv head)
  // holds every row, so any br >= maxSeqQ (DECODE_MAX_ROWS bounds it in the regime).
  const fixup = generatedKernel('combine', combineShader, {
    ...spec(pr, { ...fp, br: DECODE_MAX_ROWS }),
    schedule: 'streamK',
  });
  const [program, fixupProgram] = await Promise.all([
    compile(ctx, kernel, 'flash-attention decode stream-K', ds),
    compile(ctx, fixup, 'flash-attention stream-K fix-up', fp),
  ]);
  return launchWithPartials(pr, opts, {
    name: 'decode stream-K',
    combineName: 'fix-up',
    partial: { kernel, program, workgroups: [sk.workers, 1, 1] },
    combine: { kernel: fixup, program: fixupProgram },
    slots,
    accBytes,
    tables,
    schedule: { fields: STREAMK_FIELDS, values: sk.values },
    aux: sk.aux,
  });
}

/**
 * The launch split-K and stream-K share: o (and lse), the partials' scratch (`slots` per row:
 * Dv f32 accumulators, and (m, l) for softmax), the uniforms with the schedule's fields, then the
 * partial kernel and the combine (fix-up) kernel queued in one command buffer. On failure o and
 * lse are disposed; the scratch and launch buffers always go back to the pool.
 */
async function launchWithPartials(
  pr: Prepared,
  opts: WebGpuTileOptions,
  l: {
    name: string;
    combineName: string;
    partial: { kernel: WgslKernel; program: CompiledProgram; workgroups: [number, number, number] };
    combine: { kernel: WgslKernel; program: CompiledProgram };
    slots: number;
    accBytes: number;
    tables: AuxTables;
    schedule: ScheduleUniforms;
    aux?: Uint32Array;
  },
): Promise<{ o: Tensor; lse: Tensor | undefined }> {
  const { ctx, p } = pr;
  const softmax = pr.hooks.hooks.normalize === 'softmax';
  const rows = p.lseShape.reduce((a, x) => a * x, 1);
  const o = emptyWebGpu(p.oShape, pr.dtype, ctx);
  const lse = softmax ? emptyWebGpu(p.lseShape, 'f32', ctx) : undefined;
  const owned: GpuBuffer[] = [];
  try {
    const pacc = ctx.createOutput(Math.max(16, l.accBytes), `flash ${l.name} acc`);
    owned.push(pacc);
    const pstat = softmax
      ? ctx.createOutput(Math.max(16, rows * l.slots * 8), `flash ${l.name} stats`)
      : undefined;
    if (pstat) owned.push(pstat);
    const [uniform, aux] = launchBuffers(pr, l.tables, l.schedule, l.aux);
    owned.push(uniform, aux);
    const buffers = {
      ...hookBuffers(pr, owned),
      ...pr.buffers,
      P: uniform,
      aux,
      pacc,
      pstat,
      o: buf(o),
      lse: lse && buf(lse),
    };
    await ctx.dispatch(
      [
        {
          program: l.partial.program,
          buffers: bindBuffers(l.partial.kernel.bindings, buffers),
          workgroups: l.partial.workgroups,
          label: `flash forward ${l.name}`,
        },
        {
          program: l.combine.program,
          buffers: bindBuffers(l.combine.kernel.bindings, buffers),
          workgroups: [
            Math.min(
              Math.ceil(p.maxSeqQ / COMBINE_ROWS),
              ctx.limits.maxComputeWorkgroupsPerDimension,
            ),
            p.hq,
            p.batch,
          ],
          label: `flash ${l.name} ${l.combineName}`,
        },
      ],
      opts.profiler,
    );
  } catch (e) {
    o.dispose();
    lse?.dispose();
    throw e;
  } finally {
    for (const b of owned) ctx.pool.release(b);
  }
  return { o, lse };
}

function checkLike(
  t: Tensor,
  name: string,
  shape: readonly number[],
  dtype: string,
  ctx: WebGpuContext,
): GpuBuffer {
  const s = webGpuStorageOf(t, name);
  if (!sameShape(t.shape, shape)) {
    throw new ShapeError(
      `${name}: expected shape ${formatShape(shape)}, got ${formatShape(t.shape)}`,
      name,
    );
  }
  if (t.dtype !== dtype)
    throw new DTypeError(`${name}: expected dtype ${dtype}, got ${t.dtype}`, name);
  if (s.ctx !== ctx) {
    throw new DeviceError(
      `${name}: expected a tensor on q's WebGPU device, got one on another device`,
      name,
    );
  }
  return s.buffer;
}

/**
 * d loss / d sink_h = -sum over the rows i of head h of e^(sink_h - LSE_i) D_i (the sink's
 * probability times D_i = dO_i . O_i), as cpu/run.ts's `sinkGradients`, but from the D pre-pass's
 * (LSE, D) row pairs: 8 bytes a row read back instead of o, lse and dO (on the H200 at
 * B4 H16 N4096 D128 reading those cost ~0.55 s a call, this ~1 ms). Sums in float64.
 */
function sinkGradientsFromStats(
  p: AttentionProblem,
  sinks: Float32Array,
  stats: Float32Array,
): Float32Array {
  const out = new Float32Array(p.hq);
  for (let h = 0; h < p.hq; h++) {
    const sink = sinks[h]!;
    let acc = 0;
    for (let b = 0; b < p.batch; b++) {
      const base = lseBase(p, b, h);
      for (let i = 0; i < p.seqQ[b]!; i++) {
        const d = stats[2 * (base + i) + 1]!;
        // D = 0 on rows without keys (O = 0), whose stored LSE is a placeholder.
        if (d !== 0) acc -= Math.exp(sink - stats[2 * (base + i)]!) * d;
      }
    }
    out[h] = acc;
  }
  return out;
}

/** The backward's outputs (webgpu tensors); the optional ones as their hooks ask. */
export interface WebGpuGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  dsinks?: Tensor;
  dbias?: Tensor;
  /** hooks.rab with grad and a position table: dZ summed per column (f32, the table's shape). */
  dPositionTable?: Tensor;
  /** hooks.rab with grad and a time table: likewise. */
  dTimestampTable?: Tensor;
}

interface BackwardSetup {
  pr: Prepared;
  hooks: TiledHooks;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  sinks: Float32Array | undefined;
  shared: { o: GpuBuffer | undefined; lse: GpuBuffer | undefined; dout: GpuBuffer };
  lseSize: number;
  qp: WebGpuFlashPlan;
  kp: WebGpuFlashPlan;
  statsKernel: WgslKernel | undefined;
  /** Tensor-core configs per pass (undefined: the SIMT passes). */
  tc: { dq: TcBackwardConfig; dkdv: TcBackwardConfig } | undefined;
  grad: ReturnType<typeof biasGradMod>;
  gradLayout: ReturnType<typeof biasGradLayout> | undefined;
}

function backwardSetup(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor | undefined,
  lse: Tensor | undefined,
  dO: Tensor,
  opts: WebGpuTileOptions,
): BackwardSetup {
  const pr = prepare(p, hooks, q, k, v, opts, 'backward');
  const { ctx } = pr;
  const norm = hooks.normalize;
  const softmax = norm.kind === 'softmax';
  let bo: GpuBuffer | undefined;
  let bl: GpuBuffer | undefined;
  if (softmax) {
    for (const [t, name] of [
      [o, 'o'],
      [lse, 'lse'],
    ] as const) {
      if (t === undefined)
        throw new ValueError(
          `${name}: expected the forward's ${name} (the softmax backward reads it), got undefined`,
          name,
        );
    }
    bo = checkLike(o!, 'o', p.oShape, pr.dtype, ctx);
    bl = checkLike(lse!, 'lse', p.lseShape, 'f32', ctx);
  }
  const bdo = checkLike(dO, 'dO', p.oShape, pr.dtype, ctx);
  checkBindingSizes(ctx, softmax ? { q, k, v, o: o!, dO } : { q, k, v, dO }, hooks);
  const qp = plan(pr, 'dq', opts);
  const kp = plan(pr, 'dkdv', opts);
  const statsKernel = softmax
    ? generatedKernel(
        'stats',
        statsShader,
        pr.dtype,
        p.dv % 4 === 0,
        pr.hooks.hooks.permute?.q === true,
      )
    : undefined;
  // The tensor-core passes (tc-backward.ts) replace the SIMT dQ and dK/dV kernels; the stats
  // pre-pass, buffers and uniforms stay.
  const tc = opts.tensorCores
    ? tcBackwardConfigs(pr, hooks, opts, bdo)
    : opts.tensorCores === undefined &&
        tcAutoSelect('backward', tcAutoProblem(pr), ctx.adapterInfo.vendor, ctx.robustAccess)
      ? qualifying(() => tcBackwardConfigs(pr, hooks, { ...opts, tensorCores: true }, bdo))
      : undefined;
  const grad = biasGradMod(hooks.scoreMods);
  return {
    pr,
    hooks,
    q,
    k,
    v,
    sinks: norm.kind === 'softmax' ? norm.sinks : undefined,
    shared: { o: bo, lse: bl, dout: bdo },
    lseSize: softmax ? lse!.size : 0,
    qp,
    kp,
    statsKernel,
    tc,
    grad,
    gradLayout: grad && biasGradLayout(p, grad.mod),
  };
}

interface BackwardPrograms {
  tc: { dq: TcBackwardConfig; dkdv: TcBackwardConfig } | undefined;
  dqKernel: WgslKernel;
  dkdvKernels: WgslKernel[];
  statsProgram: CompiledProgram | undefined;
  dqProgram: CompiledProgram;
  dkdvPrograms: CompiledProgram[];
}

const tcPassKernels = (pass: 'dq' | 'dkdv', c: TcBackwardConfig): WgslKernel[] =>
  pass === 'dq'
    ? [generatedKernel('tc dq', tcDqShader, c)]
    : // TcBackwardConfig.split: dK and dV in two passes (fewer accumulators per subgroup).
      c.split
      ? (['dk', 'dv'] as const).map((only) => generatedKernel('tc dkdv', tcDkdvShader, c, only))
      : [generatedKernel('tc dkdv', tcDkdvShader, c)];

const backwardKernels = (s: BackwardSetup, tc: BackwardPrograms['tc']) => ({
  dqKernel: tc ? tcPassKernels('dq', tc.dq)[0]! : generatedKernel('dq', dqShader, spec(s.pr, s.qp)),
  dkdvKernels: tc
    ? tcPassKernels('dkdv', tc.dkdv)
    : [generatedKernel('dkdv', dkdvShader, spec(s.pr, s.kp))],
});

const TC_DQ_LABEL = 'flash-attention dq (tensor cores)';
const TC_DKDV_LABEL = 'flash-attention dk dv (tensor cores)';
const backwardKey = (s: BackwardSetup, opts: WebGpuTileOptions) =>
  `backward|${JSON.stringify(
    s.tc && {
      dq: tcBackwardCandidates(s.pr, 'dq', s.tc.dq, opts),
      dkdv: tcBackwardCandidates(s.pr, 'dkdv', s.tc.dkdv, opts),
    },
  )}`;

async function backwardPrograms(
  s: BackwardSetup,
  opts: WebGpuTileOptions,
): Promise<BackwardPrograms> {
  const { pr } = s;
  const { ctx } = pr;
  let tc = s.tc;
  // Each pass tries its tiles best first, as the forward (a late or rejected pipeline falls
  // back to the next tile; all failing: PipelineFallbackError for an explicit request, the SIMT
  // passes for an automatic choice). The programs land in the cache the compiles below read.
  if (tc) {
    const key = backwardKey(s, opts);
    try {
      const pick = async (pass: 'dq' | 'dkdv', label: string) =>
        (
          await compileFirstInTime(
            tcBackwardCandidates(pr, pass, tc![pass], opts),
            (c) =>
              Promise.all(tcPassKernels(pass, c).map((kernel) => compile(ctx, kernel, label, c))),
            { kernel: label, timeoutMs: Number.POSITIVE_INFINITY },
          )
        ).config;
      tc = { dq: await pick('dq', TC_DQ_LABEL), dkdv: await pick('dkdv', TC_DKDV_LABEL) };
      rememberChoice(ctx, key, tc);
    } catch (e) {
      forgetChoice(ctx, key);
      if (opts.tensorCores || !(e instanceof PipelineFallbackError)) throw e;
      tc = undefined;
    }
  }
  const { dqKernel, dkdvKernels } = backwardKernels(s, tc);
  const [statsProgram, dqProgram, ...dkdvPrograms] = await Promise.all([
    s.statsKernel && compile(ctx, s.statsKernel, 'flash-attention backward stats'),
    compile(ctx, dqKernel, tc ? TC_DQ_LABEL : 'flash-attention dq', tc?.dq ?? s.qp),
    ...dkdvKernels.map((kernel) =>
      compile(ctx, kernel, tc ? TC_DKDV_LABEL : 'flash-attention dk dv', tc?.dkdv ?? s.kp),
    ),
  ]);
  return {
    tc,
    dqKernel,
    dkdvKernels,
    statsProgram,
    dqProgram: dqProgram!,
    dkdvPrograms: dkdvPrograms as CompiledProgram[],
  };
}

/** backwardPrograms' result when every program it needs has compiled before, else undefined. */
function readyBackwardPrograms(
  s: BackwardSetup,
  opts: WebGpuTileOptions,
): BackwardPrograms | undefined {
  const { ctx } = s.pr;
  let tc = s.tc;
  if (tc) {
    tc = choiceOf<{ dq: TcBackwardConfig; dkdv: TcBackwardConfig }>(ctx, backwardKey(s, opts));
    if (tc === undefined) return undefined;
  }
  const { dqKernel, dkdvKernels } = backwardKernels(s, tc);
  const statsProgram = s.statsKernel && readyProgram(ctx, s.statsKernel);
  const dqProgram = readyProgram(ctx, dqKernel);
  const dkdvPrograms = dkdvKernels.map((kernel) => readyProgram(ctx, kernel));
  if ((s.statsKernel && !statsProgram) || !dqProgram || dkdvPrograms.some((x) => !x))
    return undefined;
  return {
    tc,
    dqKernel,
    dkdvKernels,
    statsProgram,
    dqProgram,
    dkdvPrograms: dkdvPrograms as CompiledProgram[],
  };
}

/** What the launch leaves for the async path to finish after its dispatch (read-backs). */
interface BackwardAfter {
  grads: WebGpuGrads;
  stats: GpuBuffer | undefined;
  dbFull: GpuBuffer | undefined;
}

function backwardLaunch(
  s: BackwardSetup,
  progs: BackwardPrograms,
  given: WebGpuEncodeTarget['outputs'] = {},
): Launch<BackwardAfter> {
  const { pr, hooks, grad, gradLayout } = s;
  const { p, ctx } = pr;
  const { tc, dqKernel, dkdvKernels } = progs;
  const dqRows = tc ? 16 * tc.dq.subgroups : s.qp.br;
  const dkdvRows = tc ? 16 * tc.dkdv.subgroups : s.kp.br;
  const made: Tensor[] = [];
  const owned: GpuBuffer[] = [];
  try {
    const taken = [
      ...Object.values(pr.buffers).map(bindingBuffer),
      ...Object.values(s.shared),
    ].filter((b): b is GpuBuffer => b !== undefined);
    const dq = outputLike(given.dq, 'dq', s.q.shape, pr.dtype, ctx, made, taken);
    const dk = outputLike(given.dk, 'dk', s.k.shape, pr.dtype, ctx, made, taken);
    const dv = outputLike(given.dv, 'dv', s.v.shape, pr.dtype, ctx, made, taken);
    // A bias with grad: the dQ pass stores dS per (b, h) into zeros (pairs it never visits stay
    // 0): dbias itself when no dim of the bias is broadcast, else a [B, Hq, R, C] buffer that is
    // read back and summed over the broadcast dims on the CPU (as dsinks), then uploaded.
    let dbias: Tensor | undefined;
    let dbFull: GpuBuffer | undefined;
    if (grad && gradLayout?.direct) {
      dbias = toWebGpu(Tensor.from(new Float32Array(grad.mod.bias.size), grad.mod.bias.shape), ctx);
      made.push(dbias);
    }
    // The rab's table gradients: the dQ pass adds into zeros uploaded here (never a poisoned
    // output buffer: its atomics add to what is there).
    const zerosLike = (t: Tensor | undefined) => {
      if (!hooks.rab?.grad || !t) return undefined;
      const z = toWebGpu(Tensor.from(new Float32Array(t.size), t.shape), ctx);
      made.push(z);
      return z;
    };
    const dPositionTable = zerosLike(hooks.rab?.positionTable);
    const dTimestampTable = zerosLike(hooks.rab?.timestampTable);
    if (grad && gradLayout && !gradLayout.direct) {
      dbFull = ctx.createFromData(new Float32Array(gradLayout.size), 'flash backward dbias');
      owned.push(dbFull);
    }
    const stats = s.statsKernel
      ? ctx.createStorageBuffer(s.lseSize * 8, 'flash backward stats')
      : undefined;
    if (stats) owned.push(stats);
    // The block-sparse tile summaries follow the passes' own tilings (tensor cores: 16 x
    // subgroups rows by 16 x keyMatrices columns).
    const dqTile = tc
      ? { tileQ: 16 * tc.dq.subgroups, tileK: 16 * tc.dq.keyMatrices }
      : { tileQ: s.qp.br, tileK: s.qp.bc };
    const dkdvTile = tc
      ? { tileQ: 16 * tc.dkdv.keyMatrices, tileK: 16 * tc.dkdv.subgroups }
      : { tileQ: s.kp.bc, tileK: s.kp.br };
    const [uq, auxq] = launchBuffers(pr, buildAux(p, dqTile));
    const [uk, auxk] = launchBuffers(pr, buildAux(p, dkdvTile));
    owned.push(uq, auxq, uk, auxk);
    const shared = {
      ...hookBuffers(pr, owned),
      ...pr.buffers,
      ...s.shared,
      stats,
      // The tensor-core dQ pass's blockDirect binds q's and dO's buffers again, as halves.
      q16: pr.buffers.q,
      dout16: s.shared.dout,
    };
    const steps: ComputeStep[] = [];
    if (s.statsKernel && progs.statsProgram) {
      steps.push({
        program: progs.statsProgram,
        buffers: bindBuffers(s.statsKernel.bindings, { ...shared, P: uq, aux: auxq }),
        workgroups: [Math.ceil(p.maxSeqQ / 64), p.hq, p.batch],
        label: 'flash backward stats',
      });
    }
    for (const [n, kernel] of dkdvKernels.entries())
      steps.push({
        program: progs.dkdvPrograms[n]!,
        buffers: bindBuffers(kernel.bindings, {
          ...shared,
          P: uk,
          aux: auxk,
          dk: buf(dk),
          dv: buf(dv),
        }),
        workgroups: [Math.ceil(p.maxSeqK / dkdvRows), p.hkv, p.batch],
        label: 'flash backward dk dv',
      });
    steps.push({
      program: progs.dqProgram,
      buffers: bindBuffers(dqKernel.bindings, {
        ...shared,
        P: uq,
        aux: auxq,
        dq: buf(dq),
        dbias: dbias ? buf(dbias) : dbFull,
        drabp: dPositionTable && buf(dPositionTable),
        drabt: dTimestampTable && buf(dTimestampTable),
      }),
      workgroups: [Math.ceil(p.maxSeqQ / dqRows), p.hq, p.batch],
      label: 'flash backward dq',
    });
    const grads: WebGpuGrads = { dq, dk, dv };
    if (dbias) grads.dbias = dbias;
    if (dPositionTable) grads.dPositionTable = dPositionTable;
    if (dTimestampTable) grads.dTimestampTable = dTimestampTable;
    return { steps, result: { grads, stats, dbFull }, owned, made };
  } catch (e) {
    for (const t of made) t.dispose();
    for (const b of owned) ctx.pool.release(b);
    throw e;
  }
}

/**
 * The tiled FlashAttention-2 backward in WGSL with the skeleton's hooks: for softmax a
 * D = rowsum(dO * O) pre-pass, then a dK/dV pass parallel over key tiles and a dQ pass parallel
 * over query tiles, queued in one command buffer; the pointwise normalisations need no pre-pass, and ignore o and
 * lse. Returns dq, dk, dv (q's dtype) as webgpu tensors and, with sinks, dsinks (f32 [Hq]):
 * that one is reduced on the CPU from the pre-pass's row statistics read back, so this call then
 * waits for the GPU.
 */
export async function tiledBackwardWebGpu(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor | undefined,
  lse: Tensor | undefined,
  dO: Tensor,
  opts: WebGpuTileOptions = {},
): Promise<WebGpuGrads> {
  const s = backwardSetup(p, hooks, q, k, v, o, lse, dO, opts);
  const { ctx } = s.pr;
  const progs = await backwardPrograms(s, opts);
  const launch = backwardLaunch(s, progs);
  // The read-backs below need the buffers the launch owns until they are done.
  const owned = launch.owned;
  launch.owned = [];
  try {
    const { grads, stats, dbFull } = await dispatchLaunch(ctx, launch, opts.profiler);
    try {
      if (s.sinks && stats) {
        const rows = new Float32Array(await ctx.readBuffer(stats, s.lseSize * 8));
        grads.dsinks = toWebGpu(Tensor.from(sinkGradientsFromStats(p, s.sinks, rows), [p.hq]), ctx);
      }
      if (s.grad && s.gradLayout && dbFull) {
        const full = new Float32Array(await ctx.readBuffer(dbFull, s.gradLayout.size * 4));
        const sum = reduceBiasGrad(p, s.grad.mod, full, new Float32Array(s.grad.mod.bias.size));
        grads.dbias = toWebGpu(Tensor.from(sum, s.grad.mod.bias.shape), ctx);
      }
    } catch (e) {
      for (const t of launch.made) t.dispose();
      grads.dsinks?.dispose();
      throw e;
    }
    return grads;
  } finally {
    for (const b of owned) ctx.pool.release(b);
  }
}

/**
 * tiledBackwardWebGpu, synchronously, into the caller's encoder (WebGpuEncodeTarget): undefined,
 * with nothing made, when the programs have not compiled yet, a profiler is set, or the result
 * needs a read-back (sinks' gradient, a broadcast bias's gradient). Typed errors as the async
 * path.
 */
export function encodeBackwardWebGpu(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor | undefined,
  lse: Tensor | undefined,
  dO: Tensor,
  opts: WebGpuTileOptions,
  target: WebGpuEncodeTarget,
): WebGpuGrads | undefined {
  checkTarget(target);
  if (opts.profiler) return undefined;
  const s = backwardSetup(p, hooks, q, k, v, o, lse, dO, opts);
  if (s.sinks || (s.gradLayout && !s.gradLayout.direct)) return undefined;
  const progs = readyBackwardPrograms(s, opts);
  if (!progs) return undefined;
  return sinkLaunch(s.pr.ctx, backwardLaunch(s, progs, target.outputs), target).grads;
}

/**
 * A backward pass's tensor-core configs best first: `chosen`, then the other tiles of
 * TC_BACKWARD_TILES that fit the device (with chosen's other fields); a pass whose tile the
 * caller named (tensorCoreBackward[pass].subgroups / keyMatrices) gets that tile only.
 */
function tcBackwardCandidates(
  pr: Prepared,
  pass: 'dq' | 'dkdv',
  chosen: TcBackwardConfig,
  opts: WebGpuTileOptions,
): TcBackwardConfig[] {
  const named = opts.tensorCoreBackward?.[pass];
  if (named?.subgroups !== undefined || named?.keyMatrices !== undefined) return [chosen];
  const limit = pr.ctx.limits.maxComputeWorkgroupStorageSize;
  const rest = TC_BACKWARD_TILES.map((t) => ({ ...chosen, ...t })).filter(
    (c) =>
      (c.subgroups !== chosen.subgroups || c.keyMatrices !== chosen.keyMatrices) &&
      tcBackwardWorkgroupBytes(c, pass) <= limit,
  );
  return [chosen, ...rest];
}

/**
 * The tensor-core backward's configs for this problem (WebGpuTileOptions.tensorCores, tiles
 * from tensorCoreBackward), or a ValueError naming `tensorCores` with the reason the problem or
 * the adapter does not qualify (the forward's conditions; f16 only). Default tiles:
 * tc-backward.ts tcBackwardConfigFor under the device's workgroup memory.
 */
function tcBackwardConfigs(
  pr: Prepared,
  hooks: TiledHooks,
  opts: WebGpuTileOptions,
  dout: GpuBuffer,
): { dq: TcBackwardConfig; dkdv: TcBackwardConfig } {
  const { ctx, p } = pr;
  const f = ctx.features;
  const no = (why: string): never => {
    throw new ValueError(
      `tensorCores: expected a problem and adapter the tensor-core backward runs, got one where ${why}`,
      'tensorCores',
    );
  };
  const want = opts.tensorCores;
  const emulate = typeof want === 'object' && want !== null && want.emulate === true;
  const gap = emulate ? undefined : tcAdapterGap(f);
  if (gap) no(gap);
  if (pr.dtype !== 'f16') no(`the inputs are ${pr.dtype}, not f16`);
  if (hooks.normalize.kind !== 'softmax' || hooks.normalize.sinks)
    no('the normalisation is not plain softmax');
  if (hooks.scoreMods.length > 0 || hooks.mask || hooks.rab || hooks.permute || p.maskMod)
    no('score mods, masks or a permutation are set');
  if (p.paged) no('K/V are paged (the tensor-core passes read contiguous K/V)');
  if (p.d % 16 !== 0 || p.dv % 16 !== 0) no(`D = ${p.d}, Dv = ${p.dv} are not multiples of 16`);
  const limit = ctx.limits.maxComputeWorkgroupStorageSize;
  // The dQ pass's Q and dO matrices straight from storage (blockDirect) wherever every 16-row
  // block of both lies within its buffer: the freed workgroup memory takes 8 subgroups (2 with
  // the blocks staged at D = 128), backward 39.2 -> 52.0 TFLOP/s at (4, 16, 4096, 128) on the
  // H200, verified there (2026-12-05, BENCHMARKS.md "WebGPU tensor cores, session 23").
  // It binds two buffers more: 9 storage buffers, past WebGPU's default limit of 8.
  const directFits =
    tcBackwardStorageBuffers({ blockDirect: true }, 'dq') <=
      ctx.limits.maxStorageBuffersPerShaderStage &&
    tcQDirectFits(p, bindingSize(pr.buffers.q) / 2) &&
    tcQDirectFits(p, dout.size / 2, 'o');
  const pick = (pass: 'dq' | 'dkdv'): TcBackwardConfig => {
    const given = opts.tensorCoreBackward?.[pass];
    if (pass === 'dkdv' && given?.blockDirect === true)
      throw new ValueError(
        'tensorCoreBackward.dkdv.blockDirect: expected false or undefined (the dK/dV pass holds dK and dV in registers, none left for K and V), got true',
        'tensorCoreBackward.dkdv.blockDirect',
      );
    const direct = pass === 'dq' && (given?.blockDirect ?? true) && directFits;
    let c = tcBackwardConfigFor(
      pass,
      {
        d: p.d,
        dv: p.dv,
        emulate,
        ...given,
        // Defaults where the caller's field is absent or undefined (as the forward's ??=; a
        // spread would let an explicit undefined turn them off). Constant matrix offsets and
        // loads issued before stores: 8.9 -> 29.4 TFLOP/s at (4, 16, 4096, 128) on the H200
        // with robust access, verified there (2026-12-04, BENCHMARKS.md "WebGPU tensor cores,
        // session 18").
        constOffsets: given?.constOffsets ?? true,
        batchLoads: given?.batchLoads ?? true,
        // The scalar pass unrolled with its loads first: 29.2 -> 39.2 TFLOP/s there (run 6).
        regLoops: given?.regLoops ?? true,
        blockDirect: direct,
        ...(p.blockSparse ? { blockSparse: true } : {}),
      },
      limit,
    );
    // A dQ tile that fits only beside blockDirect where the buffers (or the device's storage
    // buffer limit) cannot take it: the default tile for the staged blocks instead, rather than
    // a ValueError that depends on the sequence lengths. A tile too large even for blockDirect
    // stays an error.
    if (
      pass === 'dq' &&
      (given?.blockDirect ?? true) &&
      !c.blockDirect &&
      tcBackwardWorkgroupBytes(c, pass) > limit &&
      tcBackwardWorkgroupBytes({ ...c, blockDirect: true }, pass) <= limit
    ) {
      const { subgroups: _s, keyMatrices: _k, ...fields } = c;
      c = tcBackwardConfigFor(pass, fields, limit);
    }
    const bytes = tcBackwardWorkgroupBytes(c, pass);
    if (bytes > limit)
      no(`the ${pass} config needs ${bytes} bytes of workgroup memory (limit ${limit})`);
    return c;
  };
  return { dq: pick('dq'), dkdv: pick('dkdv') };
}
