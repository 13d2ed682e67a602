import { describe, FormatError, readSafetensors, type Tensor, ValueError } from '@attnkit/tensor';
import {
  type GlaOptions,
  glaRecurrentReference,
  glaRecurrentReferenceBackward,
} from './reference/gla.js';
import {
  type HstuOptions,
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
} from './reference/hstu.js';
import {
  type SigmoidAttentionOptions,
  sigmoidAttentionReference,
  sigmoidAttentionReferenceBackward,
} from './reference/sigmoid.js';
import {
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
} from './reference/softmax.js';
import type { AttentionOptions } from './spec.js';

/**
 * Golden references (the project's goldens/ and the larger ../shared/goldens): one attention
 * problem per safetensors file, inputs stored as F32 and PyTorch float64 references as F64; the
 * header metadata `params` is JSON with the problem's parameters. This module reads them and maps params to our options.
 */

export type GoldenKind = 'softmax' | 'softmax_varlen' | 'sigmoid' | 'gla' | 'hstu';

export interface Golden {
  name: string;
  kind: GoldenKind;
  params: Record<string, unknown>;
  tensors: Record<string, Tensor>;
  /** Names of the input tensors present (q, k, v, gk, h0, rab, do, dht, the block mask). */
  inputs: string[];
  /** Names of the reference tensors present: every tensor that is not an input (o, lse, dq, dk, dv, dgk, dh0, ht, drab, ...). */
  references: string[];
  /** Whether the file carries dO (and so gradients). */
  hasBackward: boolean;
}

const KINDS: readonly GoldenKind[] = ['softmax', 'softmax_varlen', 'sigmoid', 'gla', 'hstu'];
const INPUT_NAMES = ['q', 'k', 'v', 'gk', 'h0', 'rab', 'do', 'dht'];
/** Order in which references are listed (a name not here comes after, alphabetically). */
const REFERENCE_ORDER = ['o', 'lse', 'dq', 'dk', 'dv', 'dgk', 'dh0', 'ht', 'drab'];
const GRADIENT_NAMES = new Set(['dq', 'dk', 'dv', 'dgk', 'dh0', 'drab']);

function bad(g: { name: string }, what: string, expected: string, got: unknown): never {
  throw new FormatError(`${g.name}: ${what}: expected ${expected}, got ${describe(got)}`, g.name);
}

function num(g: Golden, key: string): number {
  const x = g.params[key];
  if (typeof x !== 'number' || !Number.isFinite(x)) bad(g, `params.${key}`, 'a finite number', x);
  return x;
}

function optNum(g: Golden, key: string): number | undefined {
  return g.params[key] === undefined ? undefined : num(g, key);
}

function optBool(g: Golden, key: string): boolean | undefined {
  const x = g.params[key];
  if (x !== undefined && typeof x !== 'boolean') bad(g, `params.${key}`, 'a boolean', x);
  return x as boolean | undefined;
}

function ints(g: Golden, key: string): number[] {
  const x = g.params[key];
  if (!Array.isArray(x) || !x.every((e) => Number.isInteger(e)))
    bad(g, `params.${key}`, 'an array of integers', x);
  return x as number[];
}

function window(g: Golden): readonly [number, number] | undefined {
  if (g.params.window === undefined) return undefined;
  const w = ints(g, 'window');
  if (w.length !== 2) bad(g, 'params.window', '[left, right]', w);
  return [w[0]!, w[1]!];
}

function causalOf(g: Golden): boolean | undefined {
  const align = g.params.causal_alignment;
  // Our causal mask is FlashAttention >= 2.1's bottom-right one; anything else would be silently wrong.
  if (align !== undefined && align !== 'bottom_right')
    bad(g, 'params.causal_alignment', '"bottom_right"', align);
  return optBool(g, 'causal');
}

function requireKind(g: Golden, kinds: readonly GoldenKind[], fn: string): void {
  if (g === null || typeof g !== 'object' || typeof g.kind !== 'string' || !g.params) {
    throw new ValueError(
      `g: expected a Golden (from parseGolden/loadGolden), got ${describe(g)}`,
      'g',
    );
  }
  if (!kinds.includes(g.kind)) {
    throw new ValueError(
      `g: ${fn} expected a golden of kind ${kinds.join(' or ')}, got ${describe(g.kind)} (${g.name})`,
      'g',
    );
  }
}

/** Softmax params -> AttentionOptions (scale, causal, window, THD offsets, block sparsity). */
export function goldenAttentionOptions(g: Golden): AttentionOptions {
  requireKind(g, ['softmax', 'softmax_varlen'], 'goldenAttentionOptions');
  const opts: AttentionOptions = {};
  const scale = optNum(g, 'scale');
  if (scale !== undefined) opts.scale = scale;
  const causal = causalOf(g);
  if (causal !== undefined) opts.causal = causal;
  const w = window(g);
  if (w) opts.window = w;
  const layout = g.params.layout ?? (g.kind === 'softmax_varlen' ? 'THD' : 'BHND');
  if (layout !== 'BHND' && layout !== 'THD') bad(g, 'params.layout', '"BHND" or "THD"', layout);
  if (layout === 'THD') {
    opts.layout = 'THD';
    const both = g.params.cu_seqlens === undefined ? undefined : ints(g, 'cu_seqlens');
    const cq = g.params.cu_seqlens_q === undefined ? both : ints(g, 'cu_seqlens_q');
    const ck = g.params.cu_seqlens_k === undefined ? both : ints(g, 'cu_seqlens_k');
    if (!cq || !ck) bad(g, 'params.cu_seqlens', 'cumulative offsets for layout THD', undefined);
    opts.cuSeqlensQ = Int32Array.from(cq);
    opts.cuSeqlensK = Int32Array.from(ck);
  }
  const bs = g.params.block_sparse as Record<string, unknown> | undefined;
  if (bs !== undefined) {
    if (bs === null || typeof bs !== 'object')
      bad(g, 'params.block_sparse', '{blockQ, blockK, mask_tensor}', bs);
    const { blockQ, blockK, mask_tensor: maskName } = bs;
    if (!Number.isInteger(blockQ) || !Number.isInteger(blockK)) {
      bad(g, 'params.block_sparse', 'integer blockQ and blockK', [blockQ, blockK]);
    }
    if (typeof maskName !== 'string' || !g.tensors[maskName]) {
      bad(g, 'params.block_sparse.mask_tensor', 'the name of a tensor in the file', maskName);
    }
    opts.blockSparse = {
      blockQ: blockQ as number,
      blockK: blockK as number,
      mask: g.tensors[maskName]!,
    };
  }
  return opts;
}

export function goldenSigmoidOptions(g: Golden): SigmoidAttentionOptions {
  requireKind(g, ['sigmoid'], 'goldenSigmoidOptions');
  const opts: SigmoidAttentionOptions = {};
  const scale = optNum(g, 'scale');
  if (scale !== undefined) opts.scale = scale;
  const bias = optNum(g, 'bias');
  if (bias !== undefined) opts.bias = bias;
  const causal = causalOf(g);
  if (causal !== undefined) opts.causal = causal;
  const w = window(g);
  if (w) opts.window = w;
  return opts;
}

/** scale, initialState = h0 when present, outputFinalState when the file holds ht. */
export function goldenGlaOptions(g: Golden): GlaOptions {
  requireKind(g, ['gla'], 'goldenGlaOptions');
  const opts: GlaOptions = {};
  const scale = optNum(g, 'scale');
  if (scale !== undefined) opts.scale = scale;
  if (g.tensors.h0) opts.initialState = g.tensors.h0;
  if (g.references.includes('ht')) opts.outputFinalState = true;
  return opts;
}

export function goldenHstuOptions(g: Golden): HstuOptions {
  requireKind(g, ['hstu'], 'goldenHstuOptions');
  const opts: HstuOptions = {
    seqOffsets: Int32Array.from(ints(g, 'seq_offsets')),
    maxSeqLen: num(g, 'max_seq_len'),
    alpha: num(g, 'alpha'),
  };
  const causal = optBool(g, 'causal');
  if (causal !== undefined) opts.causal = causal;
  if (g.tensors.rab) opts.rab = g.tensors.rab;
  return opts;
}

function required(kind: GoldenKind, hasBackward: boolean): string[] {
  const names = ['q', 'k', 'v', 'o'];
  if (kind === 'gla') names.push('gk');
  if (kind === 'softmax') names.push('lse');
  if (hasBackward) names.push('dq', 'dk', 'dv');
  if (hasBackward && kind === 'gla') names.push('dgk');
  return names;
}

/** Parses a golden file's bytes; FormatError when params are missing or the kind's tensors are absent. */
export function parseGolden(bytes: Uint8Array, name = 'golden'): Golden {
  if (!(bytes instanceof Uint8Array)) {
    throw new ValueError(`bytes: expected a Uint8Array, got ${describe(bytes)}`, 'bytes');
  }
  if (typeof name !== 'string')
    throw new ValueError(`name: expected a string, got ${describe(name)}`, 'name');
  const file = readSafetensors(bytes);
  const where = { name };
  const raw = file.metadata.params;
  if (raw === undefined) bad(where, 'metadata.params', 'a JSON object', undefined);
  let params: unknown;
  try {
    params = JSON.parse(raw);
  } catch (e) {
    bad(where, 'metadata.params', 'valid JSON', (e as Error).message);
  }
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    bad(where, 'metadata.params', 'a JSON object', params);
  }
  const p = params as Record<string, unknown>;
  const kind = p.kind as GoldenKind;
  if (!KINDS.includes(kind)) bad(where, 'params.kind', KINDS.join(', '), p.kind);
  const tensors = file.tensors;
  const hasBackward = tensors.do !== undefined;
  for (const t of required(kind, hasBackward)) {
    if (!tensors[t])
      bad(
        where,
        `tensor "${t}"`,
        `present in a ${kind} golden${hasBackward ? ' with gradients' : ''}`,
        Object.keys(tensors),
      );
  }
  // Every tensor that is not an input (nor the block mask) is a reference: a backend (or
  // `attnkit verify`) that does not produce one of them fails, never skips it.
  const maskName = (p.block_sparse as { mask_tensor?: string } | undefined)?.mask_tensor;
  const references = Object.keys(tensors)
    .filter((t) => !INPUT_NAMES.includes(t) && t !== maskName)
    .sort((a, b) => {
      const ia = REFERENCE_ORDER.indexOf(a) >>> 0;
      const ib = REFERENCE_ORDER.indexOf(b) >>> 0;
      return ia === ib ? a.localeCompare(b) : ia - ib;
    });
  for (const t of references) {
    if (GRADIENT_NAMES.has(t) && !hasBackward)
      bad(where, `tensor "${t}"`, 'a gradient only with the input "do"', references);
  }
  if (kind === 'gla' && tensors.dh0 && !tensors.h0)
    bad(where, 'tensor "dh0"', 'only with the input "h0"', Object.keys(tensors));
  const inputs = INPUT_NAMES.filter((t) => tensors[t]);
  const g: Golden = { name, kind, params: p, tensors, inputs, references, hasBackward };
  // Validates the kind's params now, so a bad file fails at load time.
  if (kind === 'softmax' || kind === 'softmax_varlen') {
    const opts = goldenAttentionOptions(g);
    if (opts.blockSparse && maskName) inputs.push(maskName);
  } else if (kind === 'sigmoid') goldenSigmoidOptions(g);
  else if (kind === 'gla') goldenGlaOptions(g);
  else goldenHstuOptions(g);
  return g;
}

/** Reads and parses a golden file (Node only: node:fs is imported on demand, so browsers can bundle this module). */
export async function loadGolden(path: string): Promise<Golden> {
  if (typeof path !== 'string' || path.length === 0) {
    throw new ValueError(`path: expected a file path, got ${describe(path)}`, 'path');
  }
  const { readFile } = await import('node:fs/promises');
  let bytes: Uint8Array;
  try {
    const buf = await readFile(path);
    bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (e) {
    throw new ValueError(
      `path: expected a readable golden file, got ${describe(path)} (${(e as Error).message})`,
      'path',
    );
  }
  const base = path.split(/[\\/]/).pop()!;
  return parseGolden(bytes, base.replace(/\.safetensors$/, ''));
}

/** Every reference tensor of the golden recomputed with the float64 references, keyed by the golden's names. */
export function runReference(g: Golden): Record<string, Tensor> {
  requireKind(g, KINDS, 'runReference');
  const t = g.tensors;
  const all: Record<string, Tensor | undefined> = {};
  if (g.kind === 'softmax' || g.kind === 'softmax_varlen') {
    const opts = goldenAttentionOptions(g);
    Object.assign(all, softmaxAttentionReference(t.q!, t.k!, t.v!, opts));
    if (g.hasBackward)
      Object.assign(all, softmaxAttentionReferenceBackward(t.q!, t.k!, t.v!, t.do!, opts));
  } else if (g.kind === 'sigmoid') {
    const opts = goldenSigmoidOptions(g);
    Object.assign(all, sigmoidAttentionReference(t.q!, t.k!, t.v!, opts));
    if (g.hasBackward)
      Object.assign(all, sigmoidAttentionReferenceBackward(t.q!, t.k!, t.v!, t.do!, opts));
  } else if (g.kind === 'hstu') {
    const opts = goldenHstuOptions(g);
    Object.assign(all, hstuAttentionReference(t.q!, t.k!, t.v!, opts));
    if (g.hasBackward)
      Object.assign(all, hstuAttentionReferenceBackward(t.q!, t.k!, t.v!, t.do!, opts));
  } else {
    const opts = goldenGlaOptions(g);
    const fwd = glaRecurrentReference(t.q!, t.k!, t.v!, t.gk!, opts);
    all.o = fwd.o;
    all.ht = fwd.finalState;
    if (g.hasBackward) {
      Object.assign(
        all,
        glaRecurrentReferenceBackward(t.q!, t.k!, t.v!, t.gk!, t.do!, {
          ...opts,
          dFinalState: t.dht,
        }),
      );
    }
  }
  const out: Record<string, Tensor> = {};
  for (const name of g.references) {
    const x = all[name];
    if (!x)
      throw new FormatError(
        `${g.name}: tensor "${name}": expected one the references can compute, got none`,
        g.name,
      );
    out[name] = x;
  }
  return out;
}
