import { readFileSync } from 'node:fs';
import { loadCheckpoint } from '@attnkit/gpt';
import { describe, ValueError } from '@attnkit/tensor';
import { openBackend } from './backend.js';
import { checkFile } from './train.js';

export interface SampleCommandOptions {
  ckpt: string;
  /** 'ts' | 'native' | 'webgpu'; default: the best available on the cpu (native, else ts). */
  backend?: string;
  prompt?: string;
  tokens?: number;
  temperature?: number;
  topK?: number;
  seed?: number;
  /** false: recompute the whole context every token (the comparison path). */
  cache?: boolean;
}

/**
 * Writes the prompt, then each new token's text as soon as it is drawn. Text is written when it
 * decodes cleanly: a GPT-2 token can end inside a multi-byte character, which waits for the next.
 */
export async function sample(
  options: SampleCommandOptions,
  write: (text: string) => void,
): Promise<string> {
  const { model, tokenizer } = await loadCheckpoint(
    new Uint8Array(readFileSync(checkFile(options.ckpt, 'ckpt'))),
  );
  // A checkpoint loads on the cpu whatever backend wrote it; webgpu uploads it.
  const { ctx } = await openBackend(options.backend);
  if (ctx) model.toWebGpu(ctx);
  const maxNewTokens = options.tokens ?? 200;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0)
    throw new ValueError(
      `--tokens expected a non-negative integer, got ${describe(maxNewTokens)}`,
      'tokens',
    );
  const prompt = options.prompt ?? '\n';
  let ids: number[];
  try {
    ids = tokenizer.encode(prompt);
  } catch (e) {
    throw new ValueError(`--prompt: ${(e as Error).message}`, 'prompt');
  }
  if (ids.length === 0) ids = [0];
  write(prompt);
  const generated: number[] = [];
  let shown = '';
  await model.generate(ids, {
    maxNewTokens,
    temperature: options.temperature ?? 0.8,
    ...(options.topK !== undefined ? { topK: options.topK } : {}),
    seed: options.seed ?? 0,
    cache: options.cache ?? true,
    onToken: (token) => {
      generated.push(token);
      const text = tokenizer.decode(generated);
      if (text.endsWith('\uFFFD')) return;
      write(text.slice(shown.length));
      shown = text;
    },
  });
  if (ctx) {
    for (const p of model.parameters()) p.data.dispose();
    ctx.destroy();
  }
  const all = tokenizer.decode(generated);
  if (all.length > shown.length) write(all.slice(shown.length));
  return prompt + all;
}
