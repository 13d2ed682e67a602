import { ValueError } from '@attnkit/tensor';
import {
  bindBuffers,
  bindingKinds,
  type ComputeStep,
  compileFirstInTime,
  type GpuProfiler,
  storageBindingCount,
  type WebGpuContext,
} from '@attnkit/webgpu';
import { buildAux, buildParams } from '../webgpu/aux.js';
import { generatedKernel } from '../webgpu/host.js';
import { packParams } from '../webgpu/params.js';
import type { WgslKernel } from '../webgpu/shaders.js';
import {
  TC_SAGE_FIELDS,
  TC_SUBGROUP_SIZE,
  type TcForwardConfig,
  tcForwardShader,
  tcForwardWorkgroupBytes,
} from '../webgpu/tc-forward.js';
import {
  SAGE_KEY_TILE,
  type SageDims,
  type SageGranularity,
  type SageKernelOptions,
  sageGroupCounts,
  sageProblem,
} from './codec.js';
import type { SageTcBuffers } from './tensor-cores.js';

/**
 * SageAttention2's forward on the f16 tensor-core engine (issue 11 item 5): the FlashAttention-2
 * tensor-core forward of ../webgpu/tc-forward.ts with its `sage` hooks (TcForwardConfig.sage),
 * not a kernel of its own. The codec's int8 codes become f16 halves (exact: |code| <= 127), so
 * the f16 x f16 -> f32 subgroup matrices give the exact integer dots of ARITHMETIC.md (every
 * partial sum an integer below 2^24) and add P~ V's exact integer products onto O's running
 * accumulators (the spec's acc up to how the tensor cores round f32 additions), while the
 * engine's staging, Q matrices straight from storage, softmax from registers and O in result
 * matrices across tiles carry over. Why not the i8 / u8 configs (./tensor-cores.ts): through
 * WGSL they ran no faster than f16 ones on the H200 (GEMM probes 55.2 TOPS i8 against 55.3
 * TFLOP/s f16), and their i32 / u32 results cannot join an f32 accumulator without a round trip
 * through workgroup memory every tile, where this engine's O stays in its matrices and makes the
 * trip only when a row's max moves.
 *
 * The conversion (`sage codes to f16`: 4 codes a thread) runs before the kernel, once per call,
 * into pooled buffers; Q's has 16 rows of slack so that every 16-row block of Q's matrices lies
 * within it (qDirect, tcQDirectFits).
 */

/** The engine's tile config for a codec: 64-key tiles (the spec's), lazy 0, Q from storage. */
export function sageTcF16Config(
  d: number,
  dv: number,
  granularity: SageGranularity,
  bias: boolean,
  subgroups: number,
  emulate = false,
): TcForwardConfig {
  return {
    d,
    dv,
    subgroups,
    keyMatrices: 4,
    lazy: 0,
    pad: 8,
    swizzle: true,
    regSoftmax: true,
    constOffsets: true,
    batchLoads: true,
    qDirect: true,
    // One staging buffer for K and V (two would not fit 64-key tiles at D = 128 in 48 KiB).
    kvLayout: 'single',
    sage: { granularity, bias },
    emulate,
  };
}

/**
 * Engine options over sageTcF16Config's (a device A/B, or a test's cheaper emulated kernel: the
 * defaults' unrolled softmax takes llvmpipe ~a minute to compile cold). The Sage fields, the
 * tile shape (keyMatrices, lazy) and the emulation stay the engine's.
 */
export type SageTcF16Tuning = Partial<
  Pick<
    TcForwardConfig,
    'regSoftmax' | 'constOffsets' | 'batchLoads' | 'swizzle' | 'pad' | 'kvLayout' | 'qDirect'
  >
>;

/** Subgroups per workgroup tried, largest first (16 query rows each). */
export const SAGE_TC_F16_SUBGROUPS = [4, 2, 1] as const;

/** The configs whose workgroup fits the device, best first (a ValueError when none does). */
export function sageTcF16Configs(
  ctx: Pick<WebGpuContext, 'limits'>,
  d: number,
  dv: number,
  granularity: SageGranularity,
  bias: boolean,
  subgroups?: number,
  emulate = false,
  tuning: SageTcF16Tuning = {},
): TcForwardConfig[] {
  const tiles = subgroups === undefined ? SAGE_TC_F16_SUBGROUPS : [subgroups];
  const all = tiles.map((sg) => ({
    ...sageTcF16Config(d, dv, granularity, bias, sg, emulate),
    ...tuning,
  }));
  const fit = all.filter(
    (c) =>
      tcForwardWorkgroupBytes(c) <= ctx.limits.maxComputeWorkgroupStorageSize &&
      TC_SUBGROUP_SIZE * c.subgroups <= ctx.limits.maxComputeInvocationsPerWorkgroup,
  );
  if (fit.length === 0)
    throw new ValueError(
      `tensorCores${subgroups === undefined ? '' : '.subgroups'}: expected a tile whose workgroup fits the device (${ctx.limits.maxComputeWorkgroupStorageSize} bytes), got ${all.map((c) => `${c.subgroups} subgroups needing ${tcForwardWorkgroupBytes(c)}`).join(', ')}`,
      subgroups === undefined ? 'tensorCores' : 'tensorCores.subgroups',
    );
  return fit;
}

/**
 * The engine's storage bindings against the device's limit (ValueError naming tensorCores): q,
 * k, v, aux, o, lse, Q's halves, three scales and the bias are above WebGPU's default limit of 8
 * storage buffers a stage (adapters such as the H200's allow 16 when asked).
 */
export function checkSageTcF16Storage(
  ctx: Pick<WebGpuContext, 'limits'>,
  config: TcForwardConfig,
): void {
  const needed = storageBindingCount(kernelOf(config).bindings);
  if (needed > ctx.limits.maxStorageBuffersPerShaderStage)
    throw new ValueError(
      `tensorCores: expected a device with ${needed} storage buffers per shader stage for the f16 engine's Sage kernel, got one with ${ctx.limits.maxStorageBuffersPerShaderStage}`,
      'tensorCores',
    );
}

const CONVERT = 256;
/** i8 codes (4 a word) -> f16 halves (4 a vec2<u32>); words past `n` untouched. */
const CONVERT_WGSL = `@group(0) @binding(0) var<uniform> U: vec4<u32>;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec2<u32>>;
@compute @workgroup_size(${CONVERT})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * U.y + wg.x) * ${CONVERT}u + lid;
  if (i >= U.x) { return; }
  // extractBits of an i32 sign-extends: the code in [-127, 127], exact in f16.
  let w = bitcast<i32>(src[i]);
  let c = vec4<f32>(f32(extractBits(w, 0u, 8u)), f32(extractBits(w, 8u, 8u)), f32(extractBits(w, 16u, 8u)), f32(extractBits(w, 24u, 8u)));
  dst[i] = vec2<u32>(pack2x16float(c.xy), pack2x16float(c.zw));
}`;

const kernelOf = (c: TcForwardConfig): WgslKernel =>
  generatedKernel('sage tc f16', tcForwardShader, c);

const LABEL = 'sage forward (f16 tensor cores)';

/**
 * Runs the engine over a codec on the device: o f32 [B, Hq, Nq, Dv] and lse f32 [B, Hq, Nq]
 * (natural log; -Infinity and O = 0 for a row without keys) in new buffers of the context's
 * pool (the caller owns them). The window follows KERNELS.md "Common" (causal folded in by the
 * caller: [left, right], -1 unbounded). `tile.subgroups` fixes the tile; otherwise the largest
 * that fits, falling back to smaller ones if a pipeline does not compile in time.
 */
export async function sageTcF16Forward(
  ctx: WebGpuContext,
  buffers: SageTcBuffers,
  dims: SageDims,
  granularity: SageGranularity,
  opts: Pick<SageKernelOptions, 'scale'> & { window: [number, number] },
  tile: {
    subgroups?: number | undefined;
    emulate?: boolean | undefined;
    tuning?: SageTcF16Tuning | undefined;
  } = {},
  profiler?: GpuProfiler,
): Promise<{ o: GPUBuffer; lse: GPUBuffer; config: TcForwardConfig }> {
  const { batch: B, hq, hkv, nq, nk, d, dv } = dims;
  const bias = buffers.bias !== undefined;
  const configs = sageTcF16Configs(
    ctx,
    d,
    dv,
    granularity,
    bias,
    tile.subgroups,
    tile.emulate,
    tile.tuning,
  );
  checkSageTcF16Storage(ctx, configs[0]!);
  const chosen = await compileFirstInTime(
    configs,
    (c) =>
      ctx.pipelines.get({
        code: kernelOf(c).code,
        bindings: bindingKinds(kernelOf(c).bindings),
        label: LABEL,
        config: c,
      }),
    { kernel: LABEL, timeoutMs: Number.POSITIVE_INFINITY },
  );
  const config = chosen.config;
  const kernel = kernelOf(config);
  const convert = await ctx.pipelines.get({
    code: CONVERT_WGSL,
    bindings: ['uniform', 'read', 'storage'],
    label: 'sage codes to f16',
  });
  const o = ctx.createOutput(Math.max(4, B * hq * nq * dv * 4), 'sage o');
  const lse = ctx.createOutput(Math.max(4, B * hq * nq * 4), 'sage lse');
  // No query rows: nothing to convert or run.
  if (nq === 0) return { o, lse, config };
  const g = sageGroupCounts(nq, nk, granularity);
  const maxX = ctx.limits.maxComputeWorkgroupsPerDimension;
  const temps: GPUBuffer[] = [];
  const steps: ComputeStep[] = [];
  // codes (count) -> halves, into a buffer of `count + slack` halves.
  const toF16 = (src: GPUBuffer, count: number, slack: number, what: string): GPUBuffer => {
    const words = count / 4;
    const dst = ctx.createStorageBuffer(
      Math.max(16, 2 * (count + slack)),
      `sage ${what} f16 codes`,
    );
    temps.push(dst);
    // The slack as zeros: a pooled buffer holds old bytes, and a NaN there would move the
    // (never written) rows' max every tile, each move a rescale of the whole workgroup's O.
    if (slack > 0) ctx.device.queue.writeBuffer(dst, 2 * count, new Uint8Array(2 * slack));
    const groups = Math.ceil(words / CONVERT);
    const x = Math.min(groups, maxX);
    const u = ctx.createUniform(new Uint32Array([words, x, 0, 0]), 'sage codes to f16 params');
    temps.push(u);
    if (words > 0)
      steps.push({
        program: convert,
        buffers: [u, src, dst],
        workgroups: [x, Math.ceil(groups / x), 1],
        label: 'sage codes to f16',
      });
    return dst;
  };
  const q16 = toF16(buffers.qCodes, B * hq * nq * d, 16 * d, 'q');
  const k16 = toF16(buffers.kCodes, B * hkv * nk * d, 0, 'k');
  const v16 = toF16(buffers.vCodes, B * hkv * nk * dv, 0, 'v');
  // The skeleton's uniforms and per-entry table for this problem (contiguous BHND; the
  // window with causal already folded in), as the FlashAttention hosts build them.
  const p = sageProblem(dims, { scale: opts.scale, causal: false, window: opts.window });
  const tables = buildAux(p, { tileQ: 16 * config.subgroups, tileK: SAGE_KEY_TILE });
  const params = packParams(buildParams(p, tables), TC_SAGE_FIELDS, {
    hq,
    hkv,
    nQG: g.nQG,
    nKG: g.nKG,
    nQB: g.nQB,
  });
  const P = ctx.createUniform(new Uint8Array(params), 'sage tc f16 params');
  temps.push(P);
  const aux = ctx.createFromData(tables.aux, 'sage tc f16 aux');
  temps.push(aux);
  steps.push({
    program: chosen.value,
    buffers: bindBuffers(kernel.bindings, {
      P,
      q: q16,
      k: k16,
      v: v16,
      aux,
      o,
      lse,
      q16,
      qsc: buffers.qScale,
      ksc: buffers.kScale,
      vsc: buffers.vScale,
      dsb: buffers.bias,
    }),
    workgroups: [Math.ceil(nq / (16 * config.subgroups)), hq, B],
    label: LABEL,
  });
  try {
    await ctx.dispatch(steps, profiler);
  } catch (e) {
    ctx.pool.release(o);
    ctx.pool.release(lse);
    throw e;
  } finally {
    for (const t of temps) ctx.pool.release(t);
  }
  return { o, lse, config };
}
