import { describe, ValueError } from '@attnkit/tensor';

/** A GPT's shape (nanoGPT's GPTConfig, plus GQA and the choice of positions). */
export interface GptConfig {
  /** Transformer blocks. */
  nLayer: number;
  /** Query heads; divides nEmbd. */
  nHead: number;
  /** Key/value heads (GQA); divides nHead. nHead is plain multi-head attention. */
  nKvHead: number;
  /** Embedding width. */
  nEmbd: number;
  /** Longest context the model sees (the learned position table's length). */
  blockSize: number;
  vocabSize: number;
  /** Dropout after the embeddings and on each residual branch, in training only; in [0, 1). */
  dropout: number;
  /** Biases in the Linear layers (the norms keep theirs: nn's LayerNorm is affine or not). */
  bias: boolean;
  /** 'learned': a position table added to the tokens (GPT-2); 'rope': q and k rotated (Llama). */
  positional: 'learned' | 'rope';
  /** The lm head shares the token embedding's matrix (GPT-2, Press & Wolf 2017). */
  tieWeights: boolean;
  /**
   * 'flash': FlashAttention-2's kernels (default); 'standard': the N x N scores materialised
   * through nn's matmul and softmax (nn's attention family 'standard'), the baseline the
   * FlashAttention paper measures against. Same function, same weights.
   */
  attention: 'flash' | 'standard';
}

const DEFAULTS: Omit<GptConfig, 'vocabSize'> = {
  nLayer: 4,
  nHead: 4,
  nKvHead: 4,
  nEmbd: 128,
  blockSize: 64,
  dropout: 0,
  bias: false,
  positional: 'learned',
  tieWeights: true,
  attention: 'flash',
};

/**
 * Named shapes for the command line: 'tiny' (~0.2M parameters at 65 chars), 'small' (~1.0M,
 * the character model), 'gpt2' (GPT-2 small's shape: 12 layers, 12 heads, 768 wide,
 * context 1024; 85M parameters besides the embeddings).
 */
export const PRESETS = {
  tiny: { nLayer: 4, nHead: 4, nKvHead: 4, nEmbd: 64, blockSize: 64 },
  small: { nLayer: 5, nHead: 4, nKvHead: 4, nEmbd: 128, blockSize: 128 },
  gpt2: { nLayer: 12, nHead: 12, nKvHead: 12, nEmbd: 768, blockSize: 1024 },
} as const satisfies Record<string, Partial<GptConfig>>;

export type PresetName = keyof typeof PRESETS;

function positiveInt(config: Record<string, unknown>, field: string): void {
  const v = config[field];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
    throw new ValueError(
      `GptConfig: ${field} expected a positive integer, got ${describe(v)}`,
      field,
    );
}

/**
 * A full, checked config: the defaults under `config`; every field is checked and a bad one is
 * a ValueError naming it (`error.argument`), what was expected and what came.
 */
export function gptConfig(config: Partial<GptConfig> & { vocabSize: number }): GptConfig {
  if (config === null || typeof config !== 'object')
    throw new ValueError(`GptConfig: expected an object, got ${describe(config)}`, 'config');
  const known = new Set([...Object.keys(DEFAULTS), 'vocabSize']);
  for (const key of Object.keys(config))
    if (!known.has(key))
      throw new ValueError(
        `GptConfig: unknown field '${key}' (expected one of ${[...known].join(', ')})`,
        key,
      );
  const nHead = config.nHead ?? DEFAULTS.nHead;
  const c = { ...DEFAULTS, nKvHead: nHead, ...config } as GptConfig;
  const r = c as unknown as Record<string, unknown>;
  for (const f of ['nLayer', 'nHead', 'nKvHead', 'nEmbd', 'blockSize', 'vocabSize'])
    positiveInt(r, f);
  if (c.nEmbd % c.nHead !== 0)
    throw new ValueError(
      `GptConfig: nHead expected a divisor of nEmbd = ${c.nEmbd}, got ${c.nHead}`,
      'nHead',
    );
  if (c.nHead % c.nKvHead !== 0)
    throw new ValueError(
      `GptConfig: nKvHead expected a divisor of nHead = ${c.nHead}, got ${c.nKvHead}`,
      'nKvHead',
    );
  if ((c.nEmbd / c.nHead) % 2 !== 0 && c.positional === 'rope')
    throw new ValueError(
      `GptConfig: nEmbd / nHead expected even with positional 'rope' (pairs are rotated), got ${c.nEmbd / c.nHead}`,
      'nEmbd',
    );
  if (typeof c.dropout !== 'number' || !(c.dropout >= 0 && c.dropout < 1))
    throw new ValueError(
      `GptConfig: dropout expected a number in [0, 1), got ${describe(c.dropout)}`,
      'dropout',
    );
  for (const f of ['bias', 'tieWeights'] as const)
    if (typeof c[f] !== 'boolean')
      throw new ValueError(`GptConfig: ${f} expected a boolean, got ${describe(c[f])}`, f);
  if (c.positional !== 'learned' && c.positional !== 'rope')
    throw new ValueError(
      `GptConfig: positional expected 'learned' or 'rope', got ${describe(c.positional)}`,
      'positional',
    );
  if (c.attention !== 'flash' && c.attention !== 'standard')
    throw new ValueError(
      `GptConfig: attention expected 'flash' or 'standard', got ${describe(c.attention)}`,
      'attention',
    );
  return c;
}

/** A preset's config for a vocabulary; an unknown name is a ValueError listing the presets. */
export function presetConfig(name: string, vocabSize: number): GptConfig {
  if (!Object.hasOwn(PRESETS, name))
    throw new ValueError(
      `config: expected one of ${Object.keys(PRESETS).join(', ')}, got ${describe(name)}`,
      'config',
    );
  return gptConfig({ ...PRESETS[name as PresetName], vocabSize });
}
