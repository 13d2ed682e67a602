import { FormatError, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { DataLoader } from './data.js';
import { CharTokenizer, Gpt2Tokenizer, tokenizerFromJson } from './tokenizer.js';

describe('CharTokenizer', () => {
  test('vocabulary from a text, encode / decode and a JSON round trip', async () => {
    const text = 'First Citizen:\nBefore we proceed — any further, hear me speak. 🎭';
    const tok = CharTokenizer.fromText(text);
    expect(tok.vocabSize).toBe(new Set(text).size);
    expect(tok.chars).toEqual([...tok.chars].sort());
    const ids = tok.encode(text);
    expect(ids).toHaveLength([...text].length);
    expect(tok.decode(ids)).toBe(text);
    const back = await tokenizerFromJson(JSON.parse(JSON.stringify(tok)));
    expect(back.decode(ids)).toBe(text);
    expect(back.encode(text)).toEqual(ids);
  });

  test('unknown characters and ids are ValueErrors', async () => {
    const tok = CharTokenizer.fromText('abc');
    expect(() => tok.encode('abd')).toThrow(ValueError);
    expect(() => tok.decode([3])).toThrow(ValueError);
    expect(() => new CharTokenizer(['a', 'a'])).toThrow(/distinct/);
    await expect(tokenizerFromJson({ kind: 'sentencepiece' })).rejects.toBeInstanceOf(FormatError);
  });
});

test('GPT-2 BPE (gpt-tokenizer r50k_base) round trips and knows GPT-2 ids', async () => {
  const tok = await Gpt2Tokenizer.load();
  expect(tok.vocabSize).toBe(50257);
  // "Hello world" is [15496, 995] in GPT-2's vocabulary (tiktoken's gpt2 encoding).
  expect(tok.encode('Hello world')).toEqual([15496, 995]);
  const text = 'ROMEO:\nBut, soft! what light through yonder window breaks? <|endoftext|> é';
  expect(tok.decode(tok.encode(text))).toBe(text);
  expect((await tokenizerFromJson(tok.toJSON())).encode('Hello world')).toEqual([15496, 995]);
});

describe('DataLoader', () => {
  const tokens = Array.from({ length: 200 }, (_, i) => i % 50);
  test('train/val split and seeded batches of blockSize + 1 tokens', () => {
    const data = new DataLoader(tokens, { blockSize: 7, batchSize: 3, valFraction: 0.2, seed: 1 });
    expect(data.train.length).toBe(160);
    expect(data.val.length).toBe(40);
    const { x, y } = data.batch('train', 0);
    expect(x.shape).toEqual([3, 7]);
    const xs = x.toFloat64Array();
    const ys = y.toFloat64Array();
    for (let i = 0; i < xs.length; i++) expect(ys[i]).toBe((xs[i]! + 1) % 50);
    // Same (seed, split, step): same batch; another step or split: another.
    const again = new DataLoader(tokens, { blockSize: 7, batchSize: 3, valFraction: 0.2, seed: 1 });
    expect(again.batch('train', 0).x.toFloat64Array()).toEqual(xs);
    expect(data.batch('train', 1).x.toFloat64Array()).not.toEqual(xs);
    expect(data.batch('val', 0).x.toFloat64Array()).not.toEqual(xs);
  });
  test('too little text or a bad option is a ValueError naming it', () => {
    expect(() => new DataLoader(tokens.slice(0, 20), { blockSize: 7, batchSize: 1 })).toThrow(
      /val window/,
    );
    expect(() => new DataLoader(tokens, { blockSize: 0, batchSize: 1 })).toThrow(/blockSize/);
    expect(() => new DataLoader(tokens, { blockSize: 4, batchSize: 1, valFraction: 1 })).toThrow(
      /valFraction/,
    );
  });
});
