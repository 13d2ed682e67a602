import { fromSafetensors, type Optimizer, toSafetensors } from '@attnkit/nn';
import { describe, FormatError, readSafetensors, type Tensor } from '@attnkit/tensor';
import { type GptConfig, gptConfig } from './config.js';
import { Gpt } from './model.js';
import { type Tokenizer, tokenizerFromJson } from './tokenizer.js';

/**
 * A checkpoint is one safetensors file: the model's state under `model.`, the optimizer's
 * (AdamW's moments and step) under `optim.`, and in the metadata the config, the tokenizer and
 * whatever the trainer needs to continue (`extra`, JSON). Tensors on a GPU are read back first
 * (hence async); the file does not depend on the backend that wrote it.
 */
export async function saveCheckpoint(parts: {
  model: Gpt;
  tokenizer: Tokenizer;
  optimizer?: Optimizer;
  extra?: Record<string, unknown>;
}): Promise<Uint8Array> {
  const tensors: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(parts.model.stateDict()))
    tensors[`model.${k}`] = await t.toCpu();
  for (const [k, t] of Object.entries(parts.optimizer?.stateDict() ?? {}))
    tensors[`optim.${k}`] = await t.toCpu();
  return toSafetensors(tensors, {
    format: 'attnkit-gpt',
    config: JSON.stringify(parts.model.config),
    // The model's seed seeds its dropout masks: a resumed run draws the same ones.
    seed: String(parts.model.seed),
    tokenizer: JSON.stringify(parts.tokenizer.toJSON()),
    extra: JSON.stringify(parts.extra ?? {}),
  });
}

export interface Checkpoint {
  model: Gpt;
  tokenizer: Tokenizer;
  /** For `optimizer.loadStateDict` (empty when saved without one). */
  optimizerState: Record<string, Tensor>;
  extra: Record<string, unknown>;
}

/**
 * A model (weights loaded), its tokenizer and the optimizer state, from saveCheckpoint's
 * bytes, on the cpu whatever backend wrote them (`model.toWebGpu(ctx)` moves it; upload the
 * optimizer state too before `loadStateDict`).
 */
export async function loadCheckpoint(bytes: Uint8Array): Promise<Checkpoint> {
  const { metadata } = readSafetensors(bytes);
  if (metadata?.format !== 'attnkit-gpt' || !metadata.config || !metadata.tokenizer)
    throw new FormatError(
      `loadCheckpoint: expected an attnkit-gpt checkpoint (metadata format, config, tokenizer), got metadata ${describe(metadata)}`,
      'checkpoint',
    );
  const parse = (field: string) => {
    try {
      return JSON.parse(metadata[field] ?? '{}');
    } catch {
      throw new FormatError(`loadCheckpoint: metadata ${field} is not JSON`, field);
    }
  };
  const config = gptConfig(parse('config') as GptConfig);
  const tokenizer = await tokenizerFromJson(parse('tokenizer'));
  const model = new Gpt(config, { seed: Number(metadata.seed ?? 0) });
  const modelState: Record<string, Tensor> = {};
  const optimizerState: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(fromSafetensors(bytes))) {
    if (k.startsWith('model.')) modelState[k.slice(6)] = t;
    else if (k.startsWith('optim.')) optimizerState[k.slice(6)] = t;
    else throw new FormatError(`loadCheckpoint: unexpected tensor '${k}'`, k);
  }
  model.loadStateDict(modelState);
  return { model, tokenizer, optimizerState, extra: parse('extra') };
}
