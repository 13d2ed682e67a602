import { describe, ValueError } from '@attnkit/tensor';

/** The attention families a GPT's blocks can use (GptConfig.attention). */
export const GPT_ATTENTIONS = ['flash', 'standard', 'sigmoid', 'gla'] as const;
export type GptAttention = (typeof GPT_ATTENTIONS)[number];

/** A GPT's shape (nanoGPT's GPTConfig, plus GQA, the choice of positions and of attention). */
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
   * The attention family of every block:
   * - 'flash': softmax attention on FlashAttention-2's kernels (default);
   * - 'standard': the same softmax attention with the N x N scores materialised through nn's
   *   matmul and softmax (nn's attention family 'standard'), the baseline the FlashAttention
   *   paper measures against: same function, same weights;
   * - 'sigmoid': sigmoid attention on the FlashSigmoid kernels (Ramapuram et al. 2024),
   *   sigmoid(q k^T / sqrt(D) - log(blockSize)) v: the paper's b = -log n with n fixed at the
   *   context length, so a token's weights do not change with how many tokens precede it and
   *   KV-cache decoding equals recomputation;
   * - 'gla': gated linear attention (Yang et al. 2024; nn's GatedLinearAttention, fla's layer
   *   defaults: key width nEmbd / 2, low-rank forget gates, output gate, per-head RMSNorm) in
   *   place of multi-head attention; decoding carries each layer's recurrent state instead of
   *   a KV cache. Needs nKvHead = nHead and learned positions.
   */
  attention: GptAttention;
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
 * the issue's character model), 'gpt2' (GPT-2 small's shape: 12 layers, 12 heads, 768 wide,
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
  if (!(GPT_ATTENTIONS as readonly unknown[]).includes(c.attention))
    throw new ValueError(
      `GptConfig: attention expected one of ${GPT_ATTENTIONS.map((a) => `'${a}'`).join(', ')}, got ${describe(c.attention)}`,
      'attention',
    );
  if (c.attention === 'gla') {
    // GLA's layer has its own heads (no shared K/V heads) and no rotation of q and k.
    if (c.nKvHead !== c.nHead)
      throw new ValueError(
        `GptConfig: nKvHead expected nHead = ${c.nHead} with attention 'gla' (its layer has no grouped K/V heads), got ${c.nKvHead}`,
        'nKvHead',
      );
    if (c.positional !== 'learned')
      throw new ValueError(
        `GptConfig: positional expected 'learned' with attention 'gla' (GLA rotates nothing), got ${describe(c.positional)}`,
        'positional',
      );
    if (c.nEmbd % (2 * c.nHead) !== 0)
      throw new ValueError(
        `GptConfig: nHead expected a divisor of the GLA key width nEmbd / 2 = ${c.nEmbd / 2}, got ${c.nHead}`,
        'nHead',
      );
  }
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
