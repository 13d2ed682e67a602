import {
  type KernelPass,
  type KernelTensors,
  registeredKernels,
  selectKernel,
} from '@attnkit/attention';
import { loadNativeBackend } from '@attnkit/skeleton';
import type { Tensor } from '@attnkit/tensor';
import {
  type ChunkGlaOptions,
  type FusedRecurrentGlaOptions,
  type GlaForm,
  resolveGla,
} from './options.js';
import { GLA_FAMILY } from './register.js';

/**
 * The public GLA functions (fla's fla/ops/gla: chunk_gla, fused_recurrent_gla), each a forward
 * and an autograd-free backward as FlashAttention's flashAttention / flashAttentionBackward. They
 * validate first (typed errors before any work) and run through the family x backend registry:
 * the inputs' device picks the backend (cpu: native when it registers and its addon loads, else
 * ts) unless `backend` names one. Async: errors arrive as rejected promises.
 */

export interface GlaResult {
  /** [B, T, H, V] in q's dtype. */
  o: Tensor;
  /** [N, H, K, V] in f32, with outputFinalState. */
  finalState?: Tensor;
}

export interface GlaGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  /** Gradient of the log-space gates, in gk's dtype. */
  dgk: Tensor;
  /** With initialState: its gradient, [N, H, K, V]. */
  dh0?: Tensor;
}

/** Gradient of the final state (fla's dht), for a loss that reads finalState. */
export interface GlaBackwardOptions {
  dht?: Tensor;
}

async function dispatch(
  form: GlaForm,
  pass: KernelPass,
  inputs: KernelTensors,
  options: Record<string, unknown>,
): Promise<KernelTensors> {
  const q = inputs.q!;
  const backend = options.backend as string | undefined;
  const nativeRegistered = registeredKernels({ family: GLA_FAMILY, pass }).some(
    (r) => r.backend === 'native',
  );
  // The optional native addon loads lazily (browser-safe entry point), only when it could run.
  if (q.device === 'cpu' && nativeRegistered && (backend === undefined || backend === 'native'))
    await loadNativeBackend();
  const opts = { ...options, form };
  const reg = selectKernel(
    { family: GLA_FAMILY, pass, device: q.device, dtype: q.dtype, options: opts },
    backend,
  );
  return reg.run(inputs, opts);
}

function result(out: KernelTensors): GlaResult {
  const r: GlaResult = { o: out.o! };
  if (out.ht) r.finalState = out.ht;
  return r;
}

function grads(out: KernelTensors): GlaGrads {
  const g: GlaGrads = { dq: out.dq!, dk: out.dk!, dv: out.dv!, dgk: out.dgk! };
  if (out.dh0) g.dh0 = out.dh0;
  return g;
}

/**
 * Chunkwise-parallel GLA (Yang et al. 2024, fla's chunk_gla): chunks of `chunkSize` tokens,
 * intra-chunk causal attention with relative gates in secondary sub-chunks, states passed
 * between chunks. q, k, gk [B, T, H, K], v [B, T, H, V]; gk holds log-space gates <= 0.
 */
export async function chunkGla(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  options: ChunkGlaOptions = {},
): Promise<GlaResult> {
  resolveGla(q, k, v, gk, options, 'chunk');
  return result(await dispatch('chunk', 'forward', { q, k, v, gk }, { ...options }));
}

/** Gradients of chunkGla for the upstream gradient dO [B, T, H, V] (and dht of the final state). */
export async function chunkGlaBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  dO: Tensor,
  options: ChunkGlaOptions & GlaBackwardOptions = {},
): Promise<GlaGrads> {
  return backward('chunk', q, k, v, gk, dO, options);
}

/**
 * Recurrent GLA (fla's fused_recurrent_gla): the state S [K, V] per sequence and head, one token
 * at a time, S_t = diag(e^{gk_t}) S_{t-1} + k_t^T v_t, o_t = (scale q_t) S_t; `reverse` runs each
 * sequence from its end. The step form for decoding (T = 1 with initialState) and the exact form.
 */
export async function fusedRecurrentGla(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  options: FusedRecurrentGlaOptions = {},
): Promise<GlaResult> {
  resolveGla(q, k, v, gk, options, 'recurrent');
  return result(await dispatch('recurrent', 'forward', { q, k, v, gk }, { ...options }));
}

/** Gradients of fusedRecurrentGla for dO (and dht). */
export async function fusedRecurrentGlaBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  dO: Tensor,
  options: FusedRecurrentGlaOptions & GlaBackwardOptions = {},
): Promise<GlaGrads> {
  return backward('recurrent', q, k, v, gk, dO, options);
}

async function backward(
  form: GlaForm,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  dO: Tensor,
  options: (ChunkGlaOptions | FusedRecurrentGlaOptions) & GlaBackwardOptions,
): Promise<GlaGrads> {
  // A non-object is refused by resolveGla (ValueError naming options) before destructuring.
  if (options === null || typeof options !== 'object') resolveGla(q, k, v, gk, options, form);
  const { dht, ...rest } = options as Record<string, unknown> & GlaBackwardOptions;
  resolveGla(q, k, v, gk, rest, form, { dO, dht });
  const inputs: KernelTensors = { q, k, v, gk, do: dO };
  if (dht !== undefined) inputs.dht = dht;
  return grads(await dispatch(form, 'backward', inputs, rest));
}
