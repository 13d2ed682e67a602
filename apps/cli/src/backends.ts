import {
  type Golden,
  type GoldenKind,
  goldenAttentionOptions,
  runReference,
} from '@attnkit/attention';
import {
  flashAttention,
  flashAttentionBackward,
  flashAttentionBackwardNative,
  flashAttentionBackwardTs,
  flashAttentionNative,
  flashAttentionTs,
  nativeAvailable,
} from '@attnkit/flash-attention';
import { type Tensor, ValueError } from '@attnkit/tensor';
import { getWebGpuContext, toWebGpu } from '@attnkit/webgpu';

/**
 * What `attnkit verify` can run a golden on. Each backend lists the golden kinds it
 * implements; a kind with no fast implementation yet is still verifiable on `reference`
 * (the float64 reference of @attnkit/attention). New backends (webgpu, native) add entries here.
 */
export interface GoldenBackend {
  name: string;
  kinds: readonly GoldenKind[];
  /** Computes the golden's reference tensors (forward, and backward when it has `do`). */
  run(golden: Golden, options: { algorithm?: 'fa1' | 'fa2' }): Promise<Record<string, Tensor>>;
}

const ALL_KINDS: readonly GoldenKind[] = ['softmax', 'softmax_varlen', 'sigmoid', 'gla', 'hstu'];

const ts: GoldenBackend = {
  name: 'ts',
  kinds: ['softmax', 'softmax_varlen'],
  async run(g, { algorithm }) {
    const { q, k, v } = g.tensors as Record<string, Tensor>;
    const options = { ...goldenAttentionOptions(g), algorithm };
    const { o, lse } = flashAttentionTs(q!, k!, v!, options);
    const out: Record<string, Tensor> = { o, lse };
    const dO = g.tensors.do;
    if (g.hasBackward && dO) {
      Object.assign(out, flashAttentionBackwardTs(q!, k!, v!, o, lse, dO, options));
    }
    return out;
  },
};

/** The WGSL kernels: uploads the golden's inputs, runs forward (and backward), reads the results back. */
const webgpu: GoldenBackend = {
  name: 'webgpu',
  kinds: ['softmax', 'softmax_varlen'],
  async run(g, { algorithm }) {
    const ctx = await getWebGpuContext();
    const options = { ...goldenAttentionOptions(g), algorithm, backend: 'webgpu' as const };
    const [q, k, v] = (['q', 'k', 'v'] as const).map((n) => toWebGpu(g.tensors[n]!, ctx));
    const { o, lse } = await flashAttention(q!, k!, v!, options);
    const out: Record<string, Tensor> = { o: await o.toCpu(), lse: await lse.toCpu() };
    const uploaded = [q!, k!, v!, o, lse];
    if (g.hasBackward && g.tensors.do) {
      const dO = toWebGpu(g.tensors.do, ctx);
      const grads = await flashAttentionBackward(q!, k!, v!, o, lse, dO, options);
      for (const [name, t] of Object.entries(grads)) out[name] = await t.toCpu();
      uploaded.push(dO, grads.dq, grads.dk, grads.dv);
    }
    for (const t of uploaded) t.dispose();
    return out;
  },
};

/** The C++ FlashAttention-2 kernels of @attnkit/native (threads + SIMD; FA2 only). */
const native: GoldenBackend = {
  name: 'native',
  kinds: ['softmax', 'softmax_varlen'],
  async run(g, { algorithm }) {
    const { q, k, v } = g.tensors as Record<string, Tensor>;
    const options = { ...goldenAttentionOptions(g), algorithm };
    const { o, lse } = await flashAttentionNative(q!, k!, v!, options);
    const out: Record<string, Tensor> = { o, lse };
    const dO = g.tensors.do;
    if (g.hasBackward && dO) {
      Object.assign(out, await flashAttentionBackwardNative(q!, k!, v!, o, lse, dO, options));
    }
    return out;
  },
};

const reference: GoldenBackend = {
  name: 'reference',
  kinds: ALL_KINDS,
  async run(g) {
    return runReference(g);
  },
};

export const GOLDEN_BACKENDS: readonly GoldenBackend[] = [native, ts, reference, webgpu];

/**
 * The backend used when none is named, as the library picks for cpu tensors: native when the
 * addon loads, else the pure-TS kernels, else (kinds with no fast implementation yet) the
 * float64 reference. WebGPU is used only when named.
 */
export function defaultBackendFor(kind: GoldenKind, algorithm?: 'fa1' | 'fa2'): GoldenBackend {
  // The native kernels are FA2's only.
  const order =
    algorithm !== 'fa1' && nativeAvailable() ? [native, ts, reference] : [ts, reference];
  return order.find((b) => b.kinds.includes(kind))!;
}

export function goldenBackend(
  name: string | undefined,
  kind: GoldenKind,
  algorithm?: 'fa1' | 'fa2',
): GoldenBackend {
  if (name === undefined) return defaultBackendFor(kind, algorithm);
  const backend = GOLDEN_BACKENDS.find((b) => b.name === name);
  if (!backend) {
    throw new ValueError(
      `--backend: expected one of ${GOLDEN_BACKENDS.map((b) => b.name).join(', ')}, got "${name}"`,
      'backend',
    );
  }
  if (!backend.kinds.includes(kind)) {
    const able = GOLDEN_BACKENDS.filter((b) => b.kinds.includes(kind)).map((b) => b.name);
    throw new ValueError(
      `--backend: "${name}" does not implement golden kind "${kind}" (available: ${able.join(', ')})`,
      'backend',
    );
  }
  return backend;
}
