import { UnsupportedError } from '@attnkit/attention';
import { DTypeError, describe, ShapeError, ValueError } from '@attnkit/tensor';
import {
  bindBuffers,
  bindingKinds,
  type CompiledProgram,
  type ComputeStep,
  type GpuProfiler,
  GpuValidationError,
  PipelineFallbackError,
  packUniform,
  storageBindingCount,
  WebGpuContext,
  type WebGpuStorage,
} from '@attnkit/webgpu';
import { generatedKernel } from '../webgpu/host.js';
import type { WgslKernel } from '../webgpu/shaders.js';
import { tcAdapterGap } from '../webgpu/tc-forward.js';
import {
  checkSageConfig,
  type SageCodecCpu,
  type SageDims,
  type SageGranularity,
  type SageKernelOptions,
  type SageQuantConfig,
  sageGroupCounts,
  sageProblem,
} from './codec.js';
import { sageTcAutoSelect } from './tc-auto.js';
import { SAGE_TC_SUBGROUP, sageTcForward, sageTcWorkgroupBytes } from './tensor-cores.js';
import { checkSageTcF16Storage, sageTcF16Configs, sageTcF16Forward } from './tensor-cores-f16.js';
import {
  SAGE_FORWARD_FIELDS,
  SAGE_LSE_FIELDS,
  SAGE_LSE_ROWS,
  type SageForwardSpec,
  sageForwardShader,
  sageForwardWorkgroupBytes,
  sageLseShiftShader,
} from './webgpu-forward.js';
import {
  SAGE_BIAS_KEYS,
  SAGE_FLAG,
  SAGE_QUANT_FIELDS,
  SAGE_QUANT_THREADS,
  type SageQuantPass,
  type SageQuantSpec,
  sageBiasRows,
  sageColumnChunkRows,
  sageQuantShader,
} from './webgpu-quantize.js';

/**
 * SageAttention2 on WebGPU, the portable path (packages/sage-attention/ARITHMETIC.md; the
 * kernels in ./webgpu-quantize.ts and ./webgpu-forward.ts): the pre-pass from f32 / f16 / bf16 input
 * buffers to the codec on the GPU, and the forward from the codec (integer Q.K with
 * dot4I8Packed, P~.V with dot4U8Packed). Needs the WGSL language feature
 * packed_4x8_integer_dot_product (core WGSL, in every current browser and in Dawn, llvmpipe
 * included) and nothing optional. The forward can instead run the int8 tensor-core kernel
 * (./tensor-cores.ts; opt-in `tensorCores`, slower than the portable one on the H200 today).
 *
 * The codec in GPU buffers (SageCodecGpu) has exactly the bytes of the CPU codec
 * (SageCodecCpu, ARITHMETIC.md "Storage"): codes int8 row-major, 4 to a u32 word (channel
 * 4w + m at byte m, little-endian), scales and the bias f32. sageCodecToGpu is a plain upload
 * and sageCodecFromGpu a plain read; every backend's kernel can take any backend's codes.
 *
 * Buffers handed out (the codec's, the forward's o and lse) come from the context's pool:
 * give them back with disposeSageCodecGpu / ctx.pool.release once done.
 */

/** WebGPU's buffer type, named through @attnkit/webgpu so this package needs no WebGPU typings of its own. */
type GpuBuffer = WebGpuStorage['buffer'];

/** The codec on the GPU (layouts as SageCodecCpu; codes packed 4 x i8 per u32). */
export interface SageCodecGpu {
  dims: SageDims;
  granularity: SageGranularity;
  pvBits: 8 | 32;
  /** i8 [B, Hq, Nq, D], 4 per u32. */
  qCodes: GpuBuffer;
  /** f32 [B, Hq, nQG]. */
  qScale: GpuBuffer;
  /** i8 [B, Hkv, Nk, D], 4 per u32. */
  kCodes: GpuBuffer;
  /** f32 [B, Hkv, nKG]. */
  kScale: GpuBuffer;
  /** pvBits 8: i8 [B, Hkv, Nk, Dv], 4 per u32. */
  vCodes?: GpuBuffer | undefined;
  /** pvBits 8: f32 [B, Hkv, Dv] = dV (1/255 folded in). */
  vScale?: GpuBuffer | undefined;
  /** pvBits 32: V f32 [B, Hkv, Nk, Dv]. */
  v?: GpuBuffer | undefined;
  /** smoothQ: f32 [B, Hq, nQB, Nk]. */
  bias?: GpuBuffer | undefined;
  /**
   * smoothK (quantizeSageWebGpu's codecs): K's mean over the keys, f32 [B, Hkv, D], the km of
   * ARITHMETIC.md. The kernels never read it; sageForwardWebGpu's `lseShift` adds
   * scale q_i . km back to the LSE with it.
   */
  kMean?: GpuBuffer | undefined;
}

/** The WGSL language feature of dot4I8Packed / dot4U8Packed. */
export const SAGE_WGSL_FEATURE = 'packed_4x8_integer_dot_product';

export interface SageQuantizeWebGpuOptions {
  /**
   * Read back the pre-pass's non-finite flags and throw a ValueError naming q, k or v when an
   * input holds NaN or Infinity (default true; ARITHMETIC.md). Reading them waits for the GPU;
   * false skips the wait (the codes of non-finite inputs are then meaningless).
   */
  checkFinite?: boolean;
  profiler?: GpuProfiler;
}

export interface SageForwardWebGpuOptions extends SageKernelOptions {
  /**
   * Query rows per workgroup of the portable kernel: 16, 32 or 64 (default: the largest the
   * device's limits fit, at most Nq rounded up). Not used with tensorCores.
   */
  rows?: number;
  /**
   * With returnLse and a codec quantized with smoothK: the LSE of the scores asked for. The
   * kernels see K - km, whose scores are shifted by -scale q_i . km along row i (O is
   * unchanged), so their LSE is that of the smoothed scores; a small pass after the kernel adds
   * scale q_i . km (f32 dot product) to every finite entry (-Infinity rows stay). `q` is the
   * original Q buffer [B, Hq, Nq, D] of `dtype`, as given to quantizeSageWebGpu; km is the
   * codec's kMean (a ValueError naming lseShift when the codec has none). Ignored without
   * returnLse.
   */
  lseShift?: { q: GpuBuffer; dtype: 'f32' | 'f16' | 'bf16' } | undefined;
  /**
   * Run a tensor-core kernel instead of the portable dot4I8Packed one. Unset (and no `rows`):
   * the f16 engine where the H200 measured it faster (./tc-auto.ts: NVIDIA, D = Dv = 128,
   * pvBits 8, Nq and Nk of 4096 or more) and the adapter qualifies, else the portable kernel
   * (also when no tile of the engine compiles in time); false: the portable kernel; true or an
   * object: a tensor-core kernel, a ValueError naming tensorCores where it cannot run.
   * `engine` (default 'f16'): 'f16', the FlashAttention-2 tensor-core forward's Sage hooks
   * (./tensor-cores-f16.ts: the codes as f16 halves on f16 x f16 -> f32 matrices, exact integers;
   * O kept in the matrices across tiles), verified on the H200 and its fastest Sage kernel
   * (2026-12-05: 32.1 TOPS at (4, 32, 4096, 128) against the portable kernel's 27.2); it needs
   * the f16 16x16x16 config, 32-wide subgroups, D and Dv multiples of 16 and pvBits 8;
   * `subgroups` 1, 2 or 4 (default the largest that fits). 'i8', the int8 kernel
   * (./tensor-cores.ts: Q K^T on i8 x i8 -> i32 and P~ V on u8 x u8 -> u32 subgroup matrices,
   * 16x16x32): 14.2-15.7 TOPS on the H200, slower than the portable kernel. It needs an adapter with both configs
   * (ctx.features.subgroupMatrixConfigs), 32-wide subgroups, D and Dv multiples of 32 and
   * pvBits 8; otherwise a ValueError naming tensorCores says which is missing. `subgroups`:
   * 16-row subgroups per workgroup (1-8; default the largest of 4, 2, 1 whose workgroup memory
   * fits the device). `emulate` (a test aid, as the f16 tensor-core kernels have): the two
   * products in plain WGSL loops, so any device (llvmpipe) runs the rest of the kernel.
   * A combination the adapter or codec cannot run is a ValueError naming tensorCores.
   */
  tensorCores?:
    | boolean
    | { engine?: 'i8' | 'f16'; subgroups?: number; emulate?: boolean }
    | undefined;
  profiler?: GpuProfiler;
}

const CODE_NAMES = [
  'qCodes',
  'qScale',
  'kCodes',
  'kScale',
  'vCodes',
  'vScale',
  'v',
  'bias',
] as const;
type CodecName = (typeof CODE_NAMES)[number];

function isInt(x: unknown, min: number): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= min;
}

function checkContext(ctx: unknown): WebGpuContext {
  if (!(ctx instanceof WebGpuContext))
    throw new ValueError(
      `ctx: expected a WebGpuContext (createWebGpuContext), got ${describe(ctx)}`,
      'ctx',
    );
  ctx.checkAlive();
  return ctx;
}

/** Dims the integer kernels take (ARITHMETIC.md: D and Dv multiples of 16 in [16, 256]). */
function checkDims(dims: unknown, argument: string): SageDims {
  if (dims === null || typeof dims !== 'object')
    throw new ValueError(
      `${argument}: expected an object of SageDims, got ${describe(dims)}`,
      argument,
    );
  const x = dims as SageDims;
  for (const [key, min] of [
    ['batch', 1],
    ['hq', 1],
    ['hkv', 1],
    ['nq', 0],
    ['nk', 0],
  ] as const) {
    if (!isInt(x[key], min))
      throw new ValueError(
        `${argument}.${key}: expected an integer >= ${min}, got ${describe(x[key])}`,
        `${argument}.${key}`,
      );
  }
  if (x.hq % x.hkv !== 0)
    throw new ValueError(
      `${argument}.hq: expected a multiple of hkv (${x.hkv}, GQA), got ${x.hq}`,
      `${argument}.hq`,
    );
  for (const key of ['d', 'dv'] as const) {
    const n = x[key];
    if (!isInt(n, 16) || n > 256 || n % 16 !== 0)
      throw new ValueError(
        `${argument}.${key}: expected a multiple of 16 in [16, 256] (the int32 sums of the integer kernels stay exact in f32), got ${describe(n)}`,
        `${argument}.${key}`,
      );
  }
  return x;
}

function checkGranularity(g: unknown, argument: string): SageGranularity {
  if (g !== 'block' && g !== 'warp' && g !== 'thread')
    throw new ValueError(
      `${argument}: expected "block", "warp" or "thread", got ${describe(g)}`,
      argument,
    );
  return g;
}

function checkPvBits(p: unknown, argument: string): 8 | 32 {
  if (p !== 8 && p !== 32)
    throw new ValueError(`${argument}: expected 8 or 32, got ${describe(p)}`, argument);
  return p;
}

function isBuffer(x: unknown): x is GpuBuffer {
  return (
    x !== null &&
    typeof x === 'object' &&
    typeof (x as GpuBuffer).size === 'number' &&
    typeof (x as GpuBuffer).usage === 'number'
  );
}

/**
 * A storage buffer of at least `bytes` bytes that one binding may hold on this device: a
 * ShapeError when it is smaller, a ValueError naming it when it is past the binding limit.
 */
function checkBuffer(
  ctx: WebGpuContext,
  x: unknown,
  name: string,
  bytes: number,
  what: string,
): GpuBuffer {
  if (!isBuffer(x))
    throw new ValueError(`${name}: expected a GPUBuffer (${what}), got ${describe(x)}`, name);
  if ((x.usage & GPUBufferUsage.STORAGE) === 0)
    throw new ValueError(
      `${name}: expected a buffer with STORAGE usage, got usage ${x.usage}`,
      name,
    );
  if (x.size < bytes)
    throw new ShapeError(
      `${name}: expected at least ${bytes} bytes (${what}), got a buffer of ${x.size}`,
      name,
    );
  checkBindingBytes(ctx, name, bytes, what);
  return x;
}

function checkBindingBytes(ctx: WebGpuContext, name: string, bytes: number, what: string): void {
  const max = ctx.limits.maxStorageBufferBindingSize;
  if (bytes > max)
    throw new ValueError(
      `${name}: ${what} takes ${bytes} bytes, more than one binding may hold on this device (${max})`,
      name,
    );
}

/** Workgroups along one dispatch dimension: at most the device's count (ValueError naming `argument`). */
function checkGrid(ctx: WebGpuContext, n: number, argument: string, what: string): void {
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (n > max)
    throw new ValueError(
      `${argument}: expected at most ${max} ${what} (the device's workgroups per dimension), got ${n}`,
      argument,
    );
}

/** The language feature of the integer dot products, or an UnsupportedError saying it is missing. */
function checkDot4(ctx: WebGpuContext): void {
  const f = ctx.wgslLanguageFeatures;
  if (f === undefined || f.has(SAGE_WGSL_FEATURE)) return;
  const why = `this WebGPU implementation lacks the WGSL language feature ${SAGE_WGSL_FEATURE} (dot4I8Packed / dot4U8Packed, the Sage kernels' integer products)`;
  throw new UnsupportedError(
    `ctx: expected a WebGPU implementation with the WGSL language feature ${SAGE_WGSL_FEATURE}, got one without it (it reports: ${[...f].join(', ') || 'none'})`,
    'ctx',
    { webgpu: why },
  );
}

/**
 * The pipeline (the context's cache: time-limited createComputePipelineAsync, timeouts
 * remembered); an implementation that does not report its WGSL language features and rejects
 * the integer builtins gets the UnsupportedError checkDot4 would have given.
 */
async function compile(
  ctx: WebGpuContext,
  kernel: WgslKernel,
  label: string,
  config: unknown,
): Promise<CompiledProgram> {
  const max = ctx.limits.maxStorageBuffersPerShaderStage;
  const n = storageBindingCount(kernel.bindings);
  if (n > max)
    throw new UnsupportedError(
      `ctx: expected a device with at least ${n} storage buffers per shader stage (${label}), got ${max}`,
      'ctx',
      { webgpu: `${label} binds ${n} storage buffers, the device allows ${max}` },
    );
  try {
    return await ctx.pipelines.get({
      code: kernel.code,
      bindings: bindingKinds(kernel.bindings),
      label,
      config,
    });
  } catch (e) {
    if (
      ctx.wgslLanguageFeatures === undefined &&
      e instanceof GpuValidationError &&
      /dot4[IU]8Packed|packed_4x8/.test(e.message)
    )
      throw new UnsupportedError(
        `ctx: expected a WebGPU implementation with the WGSL language feature ${SAGE_WGSL_FEATURE}, got one whose compiler rejects it (${e.message.split('\n')[0]})`,
        'ctx',
        { webgpu: `the WGSL compiler rejects ${SAGE_WGSL_FEATURE}` },
      );
    throw e;
  }
}

/** Bytes of each codec buffer for these dims (packed codes: 1 byte per code). */
function codecBytes(
  dims: SageDims,
  granularity: SageGranularity,
  pvBits: 8 | 32,
  smoothQ: boolean,
): Record<CodecName, number> {
  const { batch: B, hq, hkv, nq, nk, d, dv } = dims;
  const g = sageGroupCounts(nq, nk, granularity);
  return {
    qCodes: B * hq * nq * d,
    qScale: 4 * B * hq * g.nQG,
    kCodes: B * hkv * nk * d,
    kScale: 4 * B * hkv * g.nKG,
    vCodes: pvBits === 8 ? B * hkv * nk * dv : 0,
    vScale: pvBits === 8 ? 4 * B * hkv * dv : 0,
    v: pvBits === 32 ? 4 * B * hkv * nk * dv : 0,
    bias: smoothQ ? 4 * B * hq * g.nQB * nk : 0,
  };
}

/** Which optional parts a codec with these options holds. */
function present(pvBits: 8 | 32, smoothQ: boolean): Record<CodecName, boolean> {
  return {
    qCodes: true,
    qScale: true,
    kCodes: true,
    kScale: true,
    vCodes: pvBits === 8,
    vScale: pvBits === 8,
    v: pvBits === 32,
    bias: smoothQ,
  };
}

const WHAT: Record<CodecName, string> = {
  qCodes: 'i8 [B, Hq, Nq, D]',
  qScale: 'f32 [B, Hq, nQG]',
  kCodes: 'i8 [B, Hkv, Nk, D]',
  kScale: 'f32 [B, Hkv, nKG]',
  vCodes: 'i8 [B, Hkv, Nk, Dv]',
  vScale: 'f32 [B, Hkv, Dv]',
  v: 'f32 [B, Hkv, Nk, Dv]',
  bias: 'f32 [B, Hq, nQB, Nk]',
};

/** Gives a GPU codec's buffers back to the context's pool. */
export function disposeSageCodecGpu(ctx: WebGpuContext, codec: SageCodecGpu): void {
  checkContext(ctx);
  for (const name of CODE_NAMES) {
    const b = codec[name];
    if (b !== undefined) ctx.pool.release(b);
  }
  if (codec.kMean !== undefined) ctx.pool.release(codec.kMean);
}

/**
 * The pre-pass on the GPU (ARITHMETIC.md "Pre-pass"; kernels in ./webgpu-quantize.ts): q, k, v
 * are storage buffers holding contiguous BHND tensors q [B, Hq, Nq, D], k [B, Hkv, Nk, D],
 * v [B, Hkv, Nk, Dv] of `dtype` (f16 / bf16 packed two to a u32 and widened exactly in the
 * shader: unpack2x16float, a shift; so f16 needs no shader-f16 feature). Returns the codec in new buffers
 * (codes and scales equal to quantizeSageTs's except near f32 rounding ties of the means,
 * ARITHMETIC.md "WebGPU"; the smoothQ bias an f32 dot product, within (D + 1) 2^-24
 * sum_c |qm Ks| of the binary64 one; with smoothK, K's mean as `kMean` for lseShift).
 * Non-finite inputs: ValueError naming q, k or v (unless options.checkFinite is false).
 */
export async function quantizeSageWebGpu(
  ctx: WebGpuContext,
  q: GpuBuffer,
  k: GpuBuffer,
  v: GpuBuffer,
  dims: SageDims,
  config: SageQuantConfig,
  dtype: 'f32' | 'f16' | 'bf16',
  options: SageQuantizeWebGpuOptions = {},
): Promise<SageCodecGpu> {
  checkContext(ctx);
  // The checks (and argument names) of every backend's pre-pass.
  checkSageConfig(dims, config);
  const dm = dims;
  const cfg = config;
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16')
    throw new DTypeError(`dtype: expected "f32", "f16" or "bf16", got ${describe(dtype)}`, 'dtype');
  if (options === null || typeof options !== 'object')
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  const checkFinite = options.checkFinite ?? true;
  if (typeof checkFinite !== 'boolean')
    throw new ValueError(
      `options.checkFinite: expected a boolean, got ${describe(checkFinite)}`,
      'options.checkFinite',
    );
  checkDot4(ctx);
  const { batch: B, hq, hkv, nq, nk, d, dv } = dm;
  const el = dtype === 'f32' ? 4 : 2;
  const bq = checkBuffer(ctx, q, 'q', B * hq * nq * d * el, `${dtype} [B, Hq, Nq, D]`);
  const bk = checkBuffer(ctx, k, 'k', B * hkv * nk * d * el, `${dtype} [B, Hkv, Nk, D]`);
  const bv = checkBuffer(ctx, v, 'v', B * hkv * nk * dv * el, `${dtype} [B, Hkv, Nk, Dv]`);
  checkGrid(ctx, B, 'dims.batch', 'batch entries');
  checkGrid(ctx, hq, 'dims.hq', 'query heads');
  const { granularity, smoothK, smoothQ, pvBits } = cfg;
  const counts = sageGroupCounts(nq, nk, granularity);
  const bytes = codecBytes(dm, granularity, pvBits, smoothQ);
  const has = present(pvBits, smoothQ);
  for (const name of CODE_NAMES)
    if (has[name]) checkBindingBytes(ctx, name, bytes[name], `the codec's ${name} (${WHAT[name]})`);
  const kch = smoothK ? Math.ceil(nk / sageColumnChunkRows(d)) : 0;
  const vch = pvBits === 8 ? Math.ceil(nk / sageColumnChunkRows(dv)) : 0;
  const mRows = (hq / hkv) * counts.nQB;
  const biasRows = sageBiasRows(mRows);
  const mTiles = Math.ceil(mRows / biasRows);
  const kMeanBytes = smoothK ? 4 * B * hkv * d : 0;
  if (smoothK) checkBindingBytes(ctx, 'kMean', kMeanBytes, "the codec's kMean (f32 [B, Hkv, D])");
  const tmpBytes = {
    kp: 32 * B * hkv * kch * (d / 4),
    vp: 16 * B * hkv * vch * (dv / 4),
    qm: 4 * B * hq * counts.nQB * d,
    svt: 8 * B * hkv * dv,
  };
  for (const [name, n] of Object.entries(tmpBytes))
    checkBindingBytes(ctx, name, n, 'a pre-pass intermediate');

  const spec: SageQuantSpec = { dtype, d, dv, granularity, smoothK, smoothQ, pvBits, biasRows };
  const passes: SageQuantPass[] = [
    ...(smoothK ? (['kpart'] as const) : []),
    ...(pvBits === 8 ? (['vpart'] as const) : []),
    ...(smoothK || pvBits === 8 ? (['colfinal'] as const) : []),
    'qblock',
    'kcode',
    ...(smoothQ ? (['bias'] as const) : []),
    ...(pvBits === 8 ? (['vcode'] as const) : (['vcopy'] as const)),
  ];
  const kernels = passes.map((pass) =>
    generatedKernel(`sage ${pass}`, sageQuantShader, pass, spec),
  );
  const programs = await Promise.all(
    kernels.map((kernel, n) => compile(ctx, kernel, `sage pre-pass ${passes[n]}`, spec)),
  );

  const maxX = ctx.limits.maxComputeWorkgroupsPerDimension;
  const x = (n: number) => Math.min(maxX, n);
  checkGrid(ctx, mTiles * hkv, 'dims.hkv', `kv heads x ${mTiles} bias row tiles`);
  const k64 = Math.ceil(nk / SAGE_BIAS_KEYS);
  checkGrid(ctx, k64, 'dims.nk', 'key tiles of 64 (the bias pass)');
  const grid: Record<SageQuantPass, [number, number, number]> = {
    kpart: [x(kch), hkv, B],
    vpart: [x(vch), hkv, B],
    colfinal: [1, hkv, B],
    qblock: [x(counts.nQB), hq, B],
    kcode: [x(k64), hkv, B],
    bias: [k64, mTiles * hkv, B],
    vcode: [x(Math.ceil((nk * dv) / 4 / SAGE_QUANT_THREADS)), hkv, B],
    vcopy: [x(Math.ceil((nk * dv) / 4 / SAGE_QUANT_THREADS)), hkv, B],
  };

  const out: Partial<Record<CodecName, GpuBuffer>> = {};
  let kMean: GpuBuffer | undefined;
  const temps: GpuBuffer[] = [];
  try {
    for (const name of CODE_NAMES)
      if (has[name]) out[name] = ctx.createOutput(bytes[name], `sage codec ${name}`);
    if (smoothK) kMean = ctx.createOutput(Math.max(16, kMeanBytes), 'sage codec kMean');
    // Intermediates: at least 16 bytes (a binding of an empty head still needs a buffer).
    const tmp = (n: number, label: string) => {
      const b = ctx.createStorageBuffer(Math.max(16, n), label);
      temps.push(b);
      return b;
    };
    const qmax = new Uint32Array(hq + hkv);
    const group = hq / hkv;
    for (let h = 0; h < hq; h++) qmax[h] = cfg.qBits[h] === 8 ? 127 : 7;
    // K of kv head hk: 8 bits if any query head of its group uses 8 (ARITHMETIC.md).
    for (let hk = 0; hk < hkv; hk++)
      qmax[hq + hk] = cfg.qBits.subarray(hk * group, (hk + 1) * group).some((b) => b === 8)
        ? 127
        : 7;
    const qmaxBuf = ctx.createFromData(qmax, 'sage qmax');
    temps.push(qmaxBuf);
    const flags = ctx.createFromData(new Uint32Array(4), 'sage non-finite flags');
    temps.push(flags);
    const uniform = ctx.createUniform(
      new Uint8Array(
        packUniform(SAGE_QUANT_FIELDS, {
          hq,
          hkv,
          group,
          nq,
          nk,
          nQG: counts.nQG,
          nKG: counts.nKG,
          nQB: counts.nQB,
          zero: 0,
          kch,
          vch,
          mTiles,
        }),
      ),
      'sage pre-pass params',
    );
    temps.push(uniform);
    const buffers: Record<string, GpuBuffer | undefined> = {
      P: uniform,
      q: bq,
      k: bk,
      v: bv,
      kp: smoothK ? tmp(tmpBytes.kp, 'sage K partial sums') : undefined,
      vp: pvBits === 8 ? tmp(tmpBytes.vp, 'sage V partial max') : undefined,
      km: kMean,
      qm: smoothQ ? tmp(tmpBytes.qm, 'sage qm') : undefined,
      svt: pvBits === 8 ? tmp(tmpBytes.svt, 'sage sV') : undefined,
      qmax: qmaxBuf,
      flags,
      qc: out.qCodes,
      qs: out.qScale,
      kc: out.kCodes,
      ks: out.kScale,
      vc: out.vCodes,
      vs: out.vScale,
      vout: out.v,
      bias: out.bias,
    };
    const steps: ComputeStep[] = passes.map((pass, n) => ({
      program: programs[n]!,
      buffers: bindBuffers(kernels[n]!.bindings, buffers),
      workgroups: grid[pass],
      label: `sage pre-pass ${pass}`,
    }));
    await ctx.dispatch(steps, options.profiler);
    if (checkFinite) {
      const f = new Uint32Array(await ctx.readBuffer(flags, 16));
      for (const [name, slot] of Object.entries(SAGE_FLAG))
        if (f[slot] !== 0)
          throw new ValueError(
            `${name}: expected finite values (the scales of non-finite inputs are meaningless), got NaN or Infinity`,
            name,
          );
    }
  } catch (e) {
    for (const b of Object.values(out)) ctx.pool.release(b);
    if (kMean) ctx.pool.release(kMean);
    throw e;
  } finally {
    for (const b of temps) ctx.pool.release(b);
  }
  return {
    dims: { ...dm },
    granularity,
    pvBits,
    qCodes: out.qCodes!,
    qScale: out.qScale!,
    kCodes: out.kCodes!,
    kScale: out.kScale!,
    vCodes: out.vCodes,
    vScale: out.vScale,
    v: out.v,
    bias: out.bias,
    ...(kMean ? { kMean } : {}),
  };
}

/**
 * The band [left, right] (-1 unbounded) with causal folded in, from @attnkit/attention's
 * problem (the one mask rule, as forward-ts.ts builds it): it also validates scale, causal and
 * window (ValueError naming them).
 */
function band(dims: SageDims, opts: SageKernelOptions): [number, number] {
  const p = sageProblem(dims, opts);
  return [p.left, p.right];
}

function checkKernelOptions(opts: unknown): SageForwardWebGpuOptions {
  if (opts === null || typeof opts !== 'object')
    throw new ValueError(`opts: expected SageKernelOptions, got ${describe(opts)}`, 'opts');
  const o = opts as SageForwardWebGpuOptions;
  if (typeof o.scale !== 'number' || !Number.isFinite(o.scale))
    throw new ValueError(`scale: expected a finite number, got ${describe(o.scale)}`, 'scale');
  if (typeof o.causal !== 'boolean')
    throw new ValueError(`causal: expected a boolean, got ${describe(o.causal)}`, 'causal');
  if (typeof o.returnLse !== 'boolean')
    throw new ValueError(
      `returnLse: expected a boolean, got ${describe(o.returnLse)}`,
      'returnLse',
    );
  if (o.rows !== undefined && o.rows !== 16 && o.rows !== 32 && o.rows !== 64)
    throw new ValueError(`rows: expected 16, 32 or 64, got ${describe(o.rows)}`, 'rows');
  return o;
}

/** The codec's fields checked against its dims (ValueError / ShapeError naming `codec.<field>`). */
function checkCodecGpu(ctx: WebGpuContext, codec: unknown): SageCodecGpu {
  if (codec === null || typeof codec !== 'object')
    throw new ValueError(`codec: expected a SageCodecGpu, got ${describe(codec)}`, 'codec');
  const c = codec as SageCodecGpu;
  const dims = checkDims(c.dims, 'codec.dims');
  const granularity = checkGranularity(c.granularity, 'codec.granularity');
  const pvBits = checkPvBits(c.pvBits, 'codec.pvBits');
  const smoothQ = c.bias !== undefined;
  const bytes = codecBytes(dims, granularity, pvBits, smoothQ);
  const has = present(pvBits, smoothQ);
  for (const name of CODE_NAMES) {
    if (has[name]) checkBuffer(ctx, c[name], `codec.${name}`, bytes[name], WHAT[name]);
    else if (c[name] !== undefined && name !== 'bias')
      throw new ValueError(
        `codec.${name}: expected undefined with pvBits ${pvBits}, got ${describe(c[name])}`,
        `codec.${name}`,
      );
  }
  if (c.kMean !== undefined)
    checkBuffer(ctx, c.kMean, 'codec.kMean', 4 * dims.batch * dims.hkv * dims.d, 'f32 [B, Hkv, D]');
  return c;
}

/** Query rows per workgroup: the largest of 64, 32, 16 the device fits, no larger than Nq needs. */
function pickRows(ctx: WebGpuContext, spec: Omit<SageForwardSpec, 'rows'>, nq: number): number {
  const threads = Math.min(
    ctx.limits.maxComputeInvocationsPerWorkgroup,
    ctx.limits.maxComputeWorkgroupSizeX,
  );
  const fits = (rows: number) =>
    4 * rows <= threads &&
    sageForwardWorkgroupBytes({ ...spec, rows }) <= ctx.limits.maxComputeWorkgroupStorageSize;
  let rows = [64, 32, 16].find(fits);
  if (rows === undefined)
    throw new UnsupportedError(
      `ctx: expected a device with ${sageForwardWorkgroupBytes({ ...spec, rows: 16 })} bytes of workgroup memory and 64 invocations per workgroup (the Sage forward at D ${spec.d}, Dv ${spec.dv}), got ${ctx.limits.maxComputeWorkgroupStorageSize} bytes and ${threads} invocations`,
      'ctx',
      { webgpu: 'the Sage forward does not fit the device’s workgroup limits' },
    );
  while (rows > 16 && rows / 2 >= nq) rows /= 2;
  return rows;
}

/** A tensor-core config the adapter and the problem qualify for, or a ValueError naming tensorCores. */
function tensorCorePlan(
  ctx: WebGpuContext,
  c: SageCodecGpu,
  want: true | { engine?: 'i8' | 'f16'; subgroups?: number; emulate?: boolean },
): { engine: 'i8' | 'f16'; subgroups: number; fewest: number; emulate: boolean } {
  const given = want === true ? {} : want;
  // f16 by default: verified on the H200 and the fastest Sage kernel there (session 25: 32.1
  // TOPS at (4, 32, 4096, 128) against the int8 kernel's 14.2 and the portable one's 27.2).
  const engine = given.engine ?? 'f16';
  if (engine !== 'i8' && engine !== 'f16')
    throw new ValueError(
      `tensorCores.engine: expected "i8" or "f16", got ${describe(engine)}`,
      'tensorCores.engine',
    );
  const no = (why: string): never => {
    throw new ValueError(
      `tensorCores: expected a codec and adapter the ${engine === 'f16' ? 'f16' : 'int8'} tensor-core kernel runs, got one where ${why}`,
      'tensorCores',
    );
  };
  const emulate = given.emulate ?? false;
  if (typeof emulate !== 'boolean')
    throw new ValueError(
      `tensorCores.emulate: expected a boolean, got ${describe(emulate)}`,
      'tensorCores.emulate',
    );
  const f = ctx.features;
  if (engine === 'f16') {
    // The FA2 tensor-core kernels' needs (the engine is theirs).
    const gap = emulate ? undefined : tcAdapterGap(f);
    if (gap) no(gap);
    if (c.dims.d % 16 !== 0 || c.dims.dv % 16 !== 0)
      no(`D = ${c.dims.d}, Dv = ${c.dims.dv} are not multiples of 16`);
    if (c.pvBits !== 8) no('pvBits is 32 (the kernel multiplies 8-bit P~ and V codes)');
    const sg = given.subgroups;
    if (sg !== undefined && !(sg === 1 || sg === 2 || sg === 4))
      throw new ValueError(
        `tensorCores.subgroups: expected 1, 2 or 4 with engine "f16", got ${describe(sg)}`,
        'tensorCores.subgroups',
      );
    const fits = sageTcF16Configs(
      ctx,
      c.dims.d,
      c.dims.dv,
      c.granularity,
      c.bias !== undefined,
      sg,
      emulate,
    );
    checkSageTcF16Storage(ctx, fits[0]!);
    // A pipeline that does not compile in time falls back to a smaller tile: the grid must
    // hold the smallest one's (`fewest`).
    return { engine, subgroups: fits[0]!.subgroups, fewest: fits.at(-1)!.subgroups, emulate };
  }
  const has = (comp: string, result: string) =>
    f.subgroupMatrixConfigs.some(
      (m) => m.component === comp && m.result === result && m.M === 16 && m.N === 16 && m.K === 32,
    );
  // The emulated kernel (a test aid) needs none of the features.
  if (!emulate && !(has('i8', 'i32') && has('u8', 'u32')))
    no(
      'the adapter lacks the i8 x i8 -> i32 or u8 x u8 -> u32 16x16x32 subgroup-matrix configs (ctx.features.subgroupMatrixConfigs)',
    );
  if (
    !emulate &&
    (f.subgroupMinSize !== SAGE_TC_SUBGROUP || f.subgroupMaxSize !== SAGE_TC_SUBGROUP)
  )
    no(
      `the subgroups are ${f.subgroupMinSize}-${f.subgroupMaxSize} wide, not ${SAGE_TC_SUBGROUP} (two lanes per row of 16)`,
    );
  const { d, dv } = c.dims;
  if (d % 32 !== 0 || dv % 32 !== 0)
    no(`D = ${d}, Dv = ${dv} are not multiples of 32 (K = 32 per product)`);
  if (c.pvBits !== 8) no('pvBits is 32 (the kernel multiplies 8-bit P~ and V codes)');
  const fits = (sg: number) =>
    sageTcWorkgroupBytes({ d, dv, subgroups: sg }) <= ctx.limits.maxComputeWorkgroupStorageSize &&
    SAGE_TC_SUBGROUP * sg <= ctx.limits.maxComputeInvocationsPerWorkgroup;
  if (given.subgroups !== undefined) {
    const sg = given.subgroups;
    if (!Number.isInteger(sg) || sg < 1 || sg > 8)
      throw new ValueError(
        `tensorCores.subgroups: expected an integer in [1, 8], got ${describe(sg)}`,
        'tensorCores.subgroups',
      );
    if (!fits(sg))
      throw new ValueError(
        `tensorCores.subgroups: expected a tile whose workgroup fits the device (${ctx.limits.maxComputeWorkgroupStorageSize} bytes), got ${sg} subgroups needing ${sageTcWorkgroupBytes({ d, dv, subgroups: sg })} bytes`,
        'tensorCores.subgroups',
      );
    return { engine, subgroups: sg, fewest: sg, emulate };
  }
  const sg = [4, 2, 1].find(fits);
  if (sg === undefined)
    no(
      `one subgroup's tile needs ${sageTcWorkgroupBytes({ d, dv, subgroups: 1 })} bytes of workgroup memory (limit ${ctx.limits.maxComputeWorkgroupStorageSize})`,
    );
  return { engine, subgroups: sg!, fewest: sg!, emulate };
}

/** The LSE shift's inputs checked (ValueError / DTypeError / ShapeError naming lseShift...). */
function checkLseShift(
  ctx: WebGpuContext,
  c: SageCodecGpu,
  shift: unknown,
): { q: GpuBuffer; dtype: 'f32' | 'f16' | 'bf16'; km: GpuBuffer } {
  if (shift === null || typeof shift !== 'object')
    throw new ValueError(
      `lseShift: expected { q: GPUBuffer, dtype } (the original Q), got ${describe(shift)}`,
      'lseShift',
    );
  const { q, dtype } = shift as { q: unknown; dtype: unknown };
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16')
    throw new DTypeError(
      `lseShift.dtype: expected "f32", "f16" or "bf16", got ${describe(dtype)}`,
      'lseShift.dtype',
    );
  const { batch: B, hq, nq, d } = c.dims;
  const el = dtype === 'f32' ? 4 : 2;
  const qb = checkBuffer(ctx, q, 'lseShift.q', B * hq * nq * d * el, `${dtype} [B, Hq, Nq, D]`);
  if (c.kMean === undefined)
    throw new ValueError(
      'lseShift: expected a codec with kMean (quantizeSageWebGpu with smoothK: true; a codec without K smoothing needs no shift), got a codec without it',
      'lseShift',
    );
  return { q: qb, dtype, km: c.kMean };
}

/**
 * The Sage forward on the GPU (ARITHMETIC.md "Kernel") from a codec (quantizeSageWebGpu's, or
 * sageCodecToGpu of a CPU codec): the portable kernel (./webgpu-forward.ts), or with
 * `tensorCores` the int8 tensor-core one (./tensor-cores.ts). Returns o f32 [B, Hq, Nq, Dv]
 * and, with returnLse, lse f32 [B, Hq, Nq] (natural log; -Infinity and O = 0 for rows without
 * keys; with `lseShift`, of the unsmoothed scores) in new buffers of the context's pool. Mask:
 * KERNELS.md "Common" (causal bottom-right, window).
 */
export async function sageForwardWebGpu(
  ctx: WebGpuContext,
  codec: SageCodecGpu,
  opts: SageForwardWebGpuOptions,
): Promise<{ o: GpuBuffer; lse?: GpuBuffer }> {
  checkContext(ctx);
  const c = checkCodecGpu(ctx, codec);
  const o = checkKernelOptions(opts);
  const [left, right] = band(c.dims, o);
  const { batch: B, hq, hkv, nq, nk, d, dv } = c.dims;
  const asked = o.tensorCores;
  if (
    asked !== undefined &&
    typeof asked !== 'boolean' &&
    (asked === null || typeof asked !== 'object')
  )
    throw new ValueError(
      `tensorCores: expected a boolean or { engine?, subgroups?, emulate? }, got ${describe(asked)}`,
      'tensorCores',
    );
  // Unset: the f16 engine where it was measured faster and this adapter and codec qualify
  // (`rows` is the portable kernel's: a caller who names it gets that kernel).
  const auto =
    asked === undefined && o.rows === undefined ? sageAutoTensorCores(ctx, c) : undefined;
  const tc = asked ?? auto ?? false;
  const shift =
    o.returnLse && o.lseShift !== undefined ? checkLseShift(ctx, c, o.lseShift) : undefined;
  checkGrid(ctx, hq, 'codec.dims.hq', 'query heads');
  checkGrid(ctx, B, 'codec.dims.batch', 'batch entries');
  const oBytes = 4 * B * hq * nq * dv;
  checkBindingBytes(ctx, 'o', oBytes, 'the output f32 [B, Hq, Nq, Dv]');
  const counts = sageGroupCounts(nq, nk, c.granularity);
  // The LSE shift pass, queued after the kernel (its pipeline compiled up front).
  const shiftKernel = shift
    ? generatedKernel('sage lse shift', sageLseShiftShader, shift.dtype, d)
    : undefined;
  const shiftProgram =
    shift && shiftKernel
      ? await compile(ctx, shiftKernel, 'sage lse shift', { d, dtype: shift.dtype })
      : undefined;
  const shiftStep = async (lse: GpuBuffer, temps: GpuBuffer[]): Promise<ComputeStep[]> => {
    if (!shift || !shiftKernel || !shiftProgram) return [];
    const rows = B * hq * nq;
    const u = ctx.createUniform(
      new Uint8Array(
        packUniform(SAGE_LSE_FIELDS, { hq, hkv, group: hq / hkv, nq, rows, scale: o.scale }),
      ),
      'sage lse shift params',
    );
    temps.push(u);
    return [
      {
        program: shiftProgram,
        buffers: bindBuffers(shiftKernel.bindings, { P: u, q: shift.q, km: shift.km, lse }),
        workgroups: [
          Math.min(ctx.limits.maxComputeWorkgroupsPerDimension, Math.ceil(rows / SAGE_LSE_ROWS)),
          1,
          1,
        ],
        label: 'sage lse shift',
      },
    ];
  };

  if (tc !== false) {
    try {
      return await tensorCoreForward(tc);
    } catch (e) {
      // An automatic choice whose every tile failed to compile in time: the portable kernel.
      if (!(auto && e instanceof PipelineFallbackError)) throw e;
    }
  }
  return portableForward();

  async function tensorCoreForward(
    tc: true | { engine?: 'i8' | 'f16'; subgroups?: number; emulate?: boolean },
  ): Promise<{ o: GpuBuffer; lse?: GpuBuffer }> {
    const plan = tensorCorePlan(ctx, c, tc);
    checkGrid(
      ctx,
      Math.ceil(nq / (16 * plan.fewest)),
      'codec.dims.nq',
      `query tiles of ${16 * plan.fewest} rows`,
    );
    if (plan.engine === 'f16') checkF16CodeBindings(ctx, c);
    const tcBuffers = {
      qCodes: c.qCodes,
      qScale: c.qScale,
      kCodes: c.kCodes,
      kScale: c.kScale,
      vCodes: c.vCodes!,
      vScale: c.vScale!,
      bias: c.bias,
    };
    const r =
      plan.engine === 'f16'
        ? await sageTcF16Forward(
            ctx,
            tcBuffers,
            c.dims,
            c.granularity,
            { scale: o.scale, window: [left, right] },
            // A tile the caller named stays; otherwise the largest that fits, then smaller ones
            // should a pipeline not compile in time.
            {
              subgroups: tc === true ? undefined : tc.subgroups,
              emulate: plan.emulate,
            },
            o.profiler,
          )
        : await sageTcForward(
            ctx,
            tcBuffers,
            c.dims,
            c.granularity,
            // The band as the portable kernel reads it (causal folded in).
            { scale: o.scale, causal: false, window: [left, right] },
            { subgroups: plan.subgroups, emulate: plan.emulate },
            o.profiler,
          );
    if (!o.returnLse) {
      ctx.pool.release(r.lse);
      return { o: r.o };
    }
    const temps: GpuBuffer[] = [];
    try {
      const steps = await shiftStep(r.lse, temps);
      if (steps.length > 0) await ctx.dispatch(steps, o.profiler);
    } catch (e) {
      ctx.pool.release(r.o);
      ctx.pool.release(r.lse);
      throw e;
    } finally {
      for (const b of temps) ctx.pool.release(b);
    }
    return r;
  }

  async function portableForward(): Promise<{ o: GpuBuffer; lse?: GpuBuffer }> {
    checkDot4(ctx);
    const base = {
      d,
      dv,
      granularity: c.granularity,
      pvBits: c.pvBits,
      bias: c.bias !== undefined,
      lse: o.returnLse,
    };
    const rows = o.rows ?? pickRows(ctx, base, nq);
    const spec: SageForwardSpec = { ...base, rows };
    const wgBytes = sageForwardWorkgroupBytes(spec);
    if (
      4 * rows > ctx.limits.maxComputeInvocationsPerWorkgroup ||
      wgBytes > ctx.limits.maxComputeWorkgroupStorageSize
    )
      throw new ValueError(
        `rows: expected a row count whose workgroup fits the device (${ctx.limits.maxComputeInvocationsPerWorkgroup} invocations, ${ctx.limits.maxComputeWorkgroupStorageSize} bytes), got ${rows} (${4 * rows} invocations, ${wgBytes} bytes)`,
        'rows',
      );
    const tiles = Math.ceil(nq / rows);
    checkGrid(ctx, tiles, 'codec.dims.nq', `query tiles of ${rows} rows`);
    const kernel = generatedKernel('sage forward', sageForwardShader, spec);
    const program = await compile(ctx, kernel, 'sage forward', spec);
    const out = ctx.createOutput(oBytes, 'sage o');
    const lse = o.returnLse ? ctx.createOutput(4 * B * hq * nq, 'sage lse') : undefined;
    const temps: GpuBuffer[] = [];
    try {
      const uniform = ctx.createUniform(
        new Uint8Array(
          packUniform(SAGE_FORWARD_FIELDS, {
            hq,
            hkv,
            group: hq / hkv,
            nq,
            nk,
            nQG: counts.nQG,
            nKG: counts.nKG,
            nQB: counts.nQB,
            left,
            right,
            scale: o.scale,
            negInf: 0xff800000,
          }),
        ),
        'sage forward params',
      );
      temps.push(uniform);
      const buffers: Record<string, GpuBuffer | undefined> = {
        P: uniform,
        qc: c.qCodes,
        kc: c.kCodes,
        qsc: c.qScale,
        ksc: c.kScale,
        vc: c.vCodes,
        vsc: c.vScale,
        v: c.v,
        bias: c.bias,
        o: out,
        lse,
      };
      await ctx.dispatch(
        [
          {
            program,
            buffers: bindBuffers(kernel.bindings, buffers),
            workgroups: [tiles, hq, B],
            label: 'sage forward',
          },
          ...(lse ? await shiftStep(lse, temps) : []),
        ],
        o.profiler,
      );
    } catch (e) {
      ctx.pool.release(out);
      if (lse) ctx.pool.release(lse);
      throw e;
    } finally {
      for (const b of temps) ctx.pool.release(b);
    }
    return lse ? { o: out, lse } : { o: out };
  }
}

/**
 * The f16 engine for an unset `tensorCores` (./tc-auto.ts), or undefined: the portable kernel
 * where the choice does not apply or this adapter or codec cannot run the engine.
 */
export function sageAutoTensorCores(
  ctx: WebGpuContext,
  c: SageCodecGpu,
): { engine: 'f16' } | undefined {
  const { d, dv, nq, nk } = c.dims;
  if (!sageTcAutoSelect({ d, dv, nq, nk, pvBits: c.pvBits }, ctx.adapterInfo.vendor))
    return undefined;
  try {
    tensorCorePlan(ctx, c, { engine: 'f16' });
    checkF16CodeBindings(ctx, c);
  } catch (e) {
    if (e instanceof ValueError) return undefined;
    throw e;
  }
  return { engine: 'f16' };
}

/** The f16 engine's codes as halves, twice their bytes (Q with 16 rows of slack): each one binding. */
function checkF16CodeBindings(ctx: WebGpuContext, c: SageCodecGpu): void {
  const { batch: B, hq, hkv, nq, nk, d, dv } = c.dims;
  checkBindingBytes(
    ctx,
    'codec.qCodes',
    2 * (B * hq * nq + 16) * d,
    "the f16 engine's Q codes as halves",
  );
  checkBindingBytes(
    ctx,
    'codec.kCodes',
    2 * B * hkv * nk * d,
    "the f16 engine's K codes as halves",
  );
  checkBindingBytes(
    ctx,
    'codec.vCodes',
    2 * B * hkv * nk * dv,
    "the f16 engine's V codes as halves",
  );
}

/** The CPU codec's arrays checked against its dims (ValueError naming `codec.<field>`). */
function checkCodecCpu(codec: unknown): SageCodecCpu {
  if (codec === null || typeof codec !== 'object')
    throw new ValueError(`codec: expected a SageCodecCpu, got ${describe(codec)}`, 'codec');
  const c = codec as SageCodecCpu;
  const dims = checkDims(c.dims, 'codec.dims');
  const granularity = checkGranularity(c.granularity, 'codec.granularity');
  const pvBits = checkPvBits(c.pvBits, 'codec.pvBits');
  const smoothQ = c.bias !== undefined;
  const bytes = codecBytes(dims, granularity, pvBits, smoothQ);
  const has = present(pvBits, smoothQ);
  for (const name of CODE_NAMES) {
    if (!has[name]) continue;
    const x = c[name];
    const int8 = name === 'qCodes' || name === 'kCodes' || name === 'vCodes';
    const n = int8 ? bytes[name] : bytes[name] / 4;
    if (!(int8 ? x instanceof Int8Array : x instanceof Float32Array) || x?.length !== n)
      throw new ValueError(
        `codec.${name}: expected ${int8 ? 'an Int8Array' : 'a Float32Array'} of ${n} elements (${WHAT[name]}), got ${describe(x)}`,
        `codec.${name}`,
      );
  }
  return c;
}

/** Uploads a CPU codec (the same bytes: codes 4 to a u32 word) into new buffers of the context's pool. */
export function sageCodecToGpu(ctx: WebGpuContext, codec: SageCodecCpu): SageCodecGpu {
  checkContext(ctx);
  const c = checkCodecCpu(codec);
  const has = present(c.pvBits, c.bias !== undefined);
  const bytes = codecBytes(c.dims, c.granularity, c.pvBits, c.bias !== undefined);
  for (const name of CODE_NAMES)
    if (has[name]) checkBindingBytes(ctx, `codec.${name}`, bytes[name], WHAT[name]);
  const out: Partial<Record<CodecName, GpuBuffer>> = {};
  for (const name of CODE_NAMES) {
    const x = c[name];
    if (has[name] && x) out[name] = ctx.createFromData(x, `sage codec ${name}`);
  }
  return {
    dims: { ...c.dims },
    granularity: c.granularity,
    pvBits: c.pvBits,
    qCodes: out.qCodes!,
    qScale: out.qScale!,
    kCodes: out.kCodes!,
    kScale: out.kScale!,
    vCodes: out.vCodes,
    vScale: out.vScale,
    v: out.v,
    bias: out.bias,
  };
}

/** Reads a GPU codec back into a CPU codec (the same bytes). */
export async function sageCodecFromGpu(
  ctx: WebGpuContext,
  codec: SageCodecGpu,
): Promise<SageCodecCpu> {
  checkContext(ctx);
  const c = checkCodecGpu(ctx, codec);
  const bytes = codecBytes(c.dims, c.granularity, c.pvBits, c.bias !== undefined);
  const read = async (name: CodecName) => {
    const b = c[name];
    return b === undefined ? undefined : ctx.readBuffer(b, bytes[name]);
  };
  const [qCodes, qScale, kCodes, kScale, vCodes, vScale, v, bias] = await Promise.all(
    CODE_NAMES.map(read),
  );
  const i8 = (x: ArrayBuffer | undefined) => (x === undefined ? undefined : new Int8Array(x));
  const f32 = (x: ArrayBuffer | undefined) => (x === undefined ? undefined : new Float32Array(x));
  const out: SageCodecCpu = {
    dims: { ...c.dims },
    granularity: c.granularity,
    pvBits: c.pvBits,
    qCodes: i8(qCodes)!,
    qScale: f32(qScale)!,
    kCodes: i8(kCodes)!,
    kScale: f32(kScale)!,
  };
  if (vCodes) out.vCodes = i8(vCodes);
  if (vScale) out.vScale = f32(vScale);
  if (v) out.v = f32(v);
  if (bias) out.bias = f32(bias);
  return out;
}
