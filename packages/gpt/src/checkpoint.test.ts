import { AdamW } from '@attnkit/nn';
import { FormatError, Tensor, writeSafetensors } from '@attnkit/tensor';
import { expect, test } from 'vitest';
import { loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { DataLoader } from './data.js';
import { Gpt } from './model.js';
import { CharTokenizer } from './tokenizer.js';

const text = 'to be, or not to be, that is the question: whether tis nobler in the mind to suffer';

test.each([
  ['flash', 1],
  ['sigmoid', 1],
  ['gla', 2],
] as const)(
  'a checkpoint round trips and a resumed run gives the same next losses (attention %s)',
  async (attention, nKvHead) => {
    const tokenizer = CharTokenizer.fromText(text);
    const config = {
      nLayer: 2,
      nHead: 2,
      nKvHead,
      nEmbd: 16,
      blockSize: 12,
      vocabSize: tokenizer.vocabSize,
      dropout: 0.1,
      attention,
    };
    const data = new DataLoader(tokenizer.encode(text), {
      blockSize: 12,
      batchSize: 3,
      valFraction: 0.2,
      seed: 5,
    });
    const step = (model: Gpt, opt: AdamW, i: number) => {
      // Dropout masks from a per-step seed, as the trainer does: a resumed run draws the same.
      model.reseedDropout(i);
      opt.zeroGrad();
      const { x, y } = data.batch('train', i);
      const { loss } = model.forward(x, y);
      loss!.backward();
      opt.step();
      return loss!.item();
    };
    const model = new Gpt(config, { seed: 4 });
    const opt = new AdamW(model.parameters(), { lr: 1e-2 });
    for (let i = 0; i < 3; i++) step(model, opt, i);
    const bytes = await saveCheckpoint({ model, tokenizer, optimizer: opt, extra: { step: 3 } });
    const ahead = [3, 4].map((i) => step(model, opt, i));

    const ck = await loadCheckpoint(bytes);
    expect(ck.extra).toEqual({ step: 3 });
    expect(ck.tokenizer.decode(ck.tokenizer.encode('nobler'))).toBe('nobler');
    expect(ck.model.config).toEqual(model.config);
    const opt2 = new AdamW(ck.model.parameters(), { lr: 1e-2 });
    opt2.loadStateDict(ck.optimizerState);
    expect(opt2.stepCount).toBe(3);
    const resumed = [3, 4].map((i) => step(ck.model, opt2, i));
    expect(resumed).toEqual(ahead);
  },
);

test('bytes that are not a gpt checkpoint are a FormatError', async () => {
  const bytes = writeSafetensors({ w: Tensor.zeros([2]) });
  await expect(loadCheckpoint(bytes)).rejects.toBeInstanceOf(FormatError);
});
