import {
  type AttentionOptions,
  type AttentionProblem,
  type KernelRequest,
  registerKernel,
  resolveAttentionProblem,
  selectKernel,
} from '@attnkit/attention';
import {
  SOFTMAX_HOOKS,
  tiledBackwardTs,
  tiledBackwardWebGpu,
  tiledForwardTs,
  tiledForwardWebGpu,
} from '@attnkit/skeleton';
import { DTypeError, describe, type Tensor, ValueError } from '@attnkit/tensor';
import { type WebGpuContext, webGpuStorageOf } from '@attnkit/webgpu';
import {
  CPU_L2_256K,
  type CpuDeviceClass,
  type DeviceClass,
  resolveDevice,
  type WebGpuDeviceClass,
} from './devices.js';
import { planTwoLevel, type TwoLevelPlan } from './planner.js';

/**
 * FastAttention's forward (and backward) on the skeleton's FA2 kernels with the two-level
 * planner's tiles: a thin wrapper (no tiling loop of its own). On webgpu tensors the WGSL
 * kernels run with `planTwoLevel`'s tile config per kernel for the device's own limits (or a
 * device class the caller names, which must fit the device); on cpu tensors the TS kernel runs
 * with the CPU plan's outer tile.
 */

export type FastBackend = 'webgpu' | 'ts';

export interface FastAttentionOptions extends AttentionOptions {
  /** Default: webgpu for webgpu tensors, ts for cpu tensors. */
  backend?: FastBackend;
  /**
   * The device class to plan for (a DEVICE_CLASSES name or an object). Default: webgpu, the
   * tensors' device limits (deviceClassOf); cpu, 'cpu-256k'.
   */
  device?: DeviceClass | string;
}

export interface FastAttentionResult {
  o: Tensor;
  lse: Tensor;
  /** The plan the kernels ran with. */
  plan: TwoLevelPlan;
}

export interface FastAttentionGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  plan: TwoLevelPlan;
}

/**
 * The device class of a WebGPU context: its workgroup storage, invocations (the smaller of
 * maxComputeInvocationsPerWorkgroup and maxComputeWorkgroupSizeX: the kernels' workgroups are
 * one-dimensional), subgroups and f16 as the device reports them; `registerFloats` is the
 * planner's budget (WebGPU does not report registers; default 128, a mobile GPU's).
 */
export function deviceClassOf(ctx: WebGpuContext, registerFloats = 128): WebGpuDeviceClass {
  return {
    kind: 'webgpu',
    name: `webgpu:${ctx.adapterInfo.device || ctx.adapterInfo.vendor || 'adapter'}`,
    description: 'the limits and features of this WebGPU device',
    maxComputeWorkgroupStorageSize: ctx.limits.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: Math.min(
      ctx.limits.maxComputeInvocationsPerWorkgroup,
      ctx.limits.maxComputeWorkgroupSizeX,
    ),
    subgroups: ctx.features.subgroups,
    ...(ctx.features.subgroups ? { subgroupMinSize: ctx.features.subgroupMinSize } : {}),
    f16: ctx.features.shaderF16,
    registerFloats,
  };
}

function splitOptions(options: FastAttentionOptions): {
  attn: AttentionOptions;
  backend: FastBackend | undefined;
  device: DeviceClass | string | undefined;
} {
  if (options === null || typeof options !== 'object') {
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  }
  const { backend, device, ...attn } = options;
  if (backend !== undefined && backend !== 'webgpu' && backend !== 'ts') {
    throw new ValueError(`backend: expected "webgpu" or "ts", got ${describe(backend)}`, 'backend');
  }
  return { attn, backend, device };
}

/** The plan for this problem on the tensors' device (or the named class, checked against the device). */
function planFor(p: AttentionProblem, q: Tensor, device: DeviceClass | string | undefined) {
  const problem = {
    seqQ: Math.max(1, p.maxSeqQ),
    seqK: Math.max(1, p.maxSeqK),
    headDim: p.d,
    headDimV: p.dv,
    // The problem's band, causal already folded in (right <= 0).
    window: [p.left, p.right] as [number, number],
  };
  if (q.device === 'webgpu') {
    const ctx = webGpuStorageOf(q, 'q').ctx;
    const own = deviceClassOf(ctx);
    const dev = device === undefined ? own : resolveDevice(device);
    if (dev.kind !== 'webgpu') {
      throw new ValueError(
        `device: expected a webgpu device class for webgpu tensors, got the ${dev.kind} class ${dev.name}`,
        'device',
      );
    }
    if (
      dev.maxComputeWorkgroupStorageSize > own.maxComputeWorkgroupStorageSize ||
      dev.maxComputeInvocationsPerWorkgroup > own.maxComputeInvocationsPerWorkgroup
    ) {
      throw new ValueError(
        `device: expected a class within this device's limits (${own.maxComputeWorkgroupStorageSize} bytes, ${own.maxComputeInvocationsPerWorkgroup} invocations), got ${dev.name} (${dev.maxComputeWorkgroupStorageSize} bytes, ${dev.maxComputeInvocationsPerWorkgroup} invocations)`,
        'device',
      );
    }
    // Subgroup reductions only where the device has them, whatever the class says.
    const planned = dev.subgroups && !own.subgroups ? { ...dev, subgroups: false } : dev;
    return planTwoLevel(planned, problem);
  }
  const dev = device === undefined ? CPU_L2_256K : resolveDevice(device);
  if (dev.kind !== 'cpu') {
    throw new ValueError(
      `device: expected a cpu device class for cpu tensors, got the ${dev.kind} class ${dev.name}`,
      'device',
    );
  }
  return planTwoLevel(dev as CpuDeviceClass, problem);
}

/** The TS kernel's tiles: the plan's, cut to divisors of the block-sparse blocks (the TS kernel's tiles may not straddle them). */
function tsTiles(p: AttentionProblem, plan: TwoLevelPlan): { blockQ: number; blockK: number } {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  const bs = p.blockSparse;
  const { blockQ, blockK } = plan.outer;
  if (!bs) return { blockQ, blockK };
  return { blockQ: gcd(blockQ, bs.blockQ), blockK: gcd(blockK, bs.blockK) };
}

function f64Guard(q: Tensor): void {
  if (q?.dtype === 'f64') {
    throw new DTypeError(
      'q: expected f32, f16 or bf16 (the kernels compute in f32), got f64; for float64 results use softmaxAttentionReference from @attnkit/attention',
      'q',
    );
  }
}

async function forwardOn(
  backend: FastBackend,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FastAttentionOptions,
): Promise<FastAttentionResult> {
  const { attn, device } = splitOptions(options);
  f64Guard(q);
  const p = resolveAttentionProblem(q, k, v, attn);
  const plan = planFor(p, q, device);
  if (backend === 'webgpu') {
    const { o, lse } = await tiledForwardWebGpu(p, SOFTMAX_HOOKS, q, k, v, {
      tiles: plan.webgpu?.tiles,
      tensorCores: false,
    });
    return { o, lse: lse as Tensor, plan };
  }
  const { o, lse } = tiledForwardTs(p, SOFTMAX_HOOKS, q, k, v, tsTiles(p, plan));
  return { o, lse: lse as Tensor, plan };
}

async function backwardOn(
  backend: FastBackend,
  t: { q: Tensor; k: Tensor; v: Tensor; o: Tensor; lse: Tensor; dO: Tensor },
  options: FastAttentionOptions,
): Promise<FastAttentionGrads> {
  const { attn, device } = splitOptions(options);
  f64Guard(t.q);
  const p = resolveAttentionProblem(t.q, t.k, t.v, attn);
  const plan = planFor(p, t.q, device);
  if (backend === 'webgpu') {
    const g = await tiledBackwardWebGpu(p, SOFTMAX_HOOKS, t.q, t.k, t.v, t.o, t.lse, t.dO, {
      tiles: plan.webgpu?.tiles,
      tensorCores: false,
    });
    return { dq: g.dq, dk: g.dk, dv: g.dv, plan };
  }
  const g = tiledBackwardTs(p, SOFTMAX_HOOKS, t.q, t.k, t.v, t.o, t.lse, t.dO, tsTiles(p, plan));
  return { dq: g.dq, dk: g.dk, dv: g.dv, plan };
}

const supports = (req: KernelRequest): true | string => {
  if (req.dtype === 'f64')
    return 'f64 inputs: the kernels compute in f32 (softmaxAttentionReference is the float64 path)';
  for (const name of ['maskMod', 'scoreMod', 'paged', 'permute'] as const) {
    if (req.options[name] !== undefined)
      return `${name}: FastAttention runs the plain softmax FA2 (use flashAttention for ${name})`;
  }
  return true;
};

for (const backend of ['webgpu', 'ts'] as const) {
  const common = {
    family: 'fast',
    backend,
    priority: backend === 'webgpu' ? 30 : 10,
    devices: [backend === 'webgpu' ? 'webgpu' : 'cpu'],
    supports,
  } as const;
  registerKernel({
    ...common,
    pass: 'forward',
    outputs: ['o', 'lse'],
    run: async (t, options) => {
      const r = await forwardOn(backend, t.q as Tensor, t.k as Tensor, t.v as Tensor, options);
      return { o: r.o, lse: r.lse };
    },
  });
  registerKernel({
    ...common,
    pass: 'backward',
    outputs: ['dq', 'dk', 'dv'],
    run: async (t, options) => {
      const g = await backwardOn(
        backend,
        {
          q: t.q as Tensor,
          k: t.k as Tensor,
          v: t.v as Tensor,
          o: t.o as Tensor,
          lse: t.lse as Tensor,
          dO: t.do as Tensor,
        },
        options,
      );
      return { dq: g.dq, dk: g.dk, dv: g.dv };
    },
  });
}

function pick(q: Tensor, options: FastAttentionOptions, pass: 'forward' | 'backward'): FastBackend {
  const { backend } = splitOptions(options);
  const request: KernelRequest = {
    family: 'fast',
    pass,
    device: q?.device,
    dtype: q?.dtype,
    options: options as Record<string, unknown>,
  };
  return selectKernel(request, backend).backend as FastBackend;
}

/**
 * FastAttention forward: softmax attention (KERNELS.md "Common") on the skeleton's FA2 kernels
 * with the two-level planner's tiles. Returns o, lse and the plan used.
 */
export async function fastAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FastAttentionOptions = {},
): Promise<FastAttentionResult> {
  return forwardOn(pick(q, options, 'forward'), q, k, v, options);
}

/** FastAttention backward: dQ, dK, dV with the planner's tiles (webgpu: its dQ and dK/dV kernel configs). */
export async function fastAttentionBackward(
  inputs: { q: Tensor; k: Tensor; v: Tensor; o: Tensor; lse: Tensor; dO: Tensor },
  options: FastAttentionOptions = {},
): Promise<FastAttentionGrads> {
  if (inputs === null || typeof inputs !== 'object') {
    throw new ValueError(
      `inputs: expected { q, k, v, o, lse, dO }, got ${describe(inputs)}`,
      'inputs',
    );
  }
  return backwardOn(pick(inputs.q, options, 'backward'), inputs, options);
}
