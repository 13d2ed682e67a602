import {
  type Golden,
  type GoldenKind,
  goldenAttentionOptions,
  runReference,
} from '@attnkit/attention';
import { flashAttentionBackwardTs, flashAttentionTs } from '@attnkit/flash-attention';
import { type Tensor, ValueError } from '@attnkit/tensor';

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

const reference: GoldenBackend = {
  name: 'reference',
  kinds: ALL_KINDS,
  async run(g) {
    return runReference(g);
  },
};

export const GOLDEN_BACKENDS: readonly GoldenBackend[] = [ts, reference];

/** The backend used when none is named: the fastest one that implements the kind. */
export function defaultBackendFor(kind: GoldenKind): GoldenBackend {
  return GOLDEN_BACKENDS.find((b) => b.kinds.includes(kind))!;
}

export function goldenBackend(name: string | undefined, kind: GoldenKind): GoldenBackend {
  if (name === undefined) return defaultBackendFor(kind);
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
