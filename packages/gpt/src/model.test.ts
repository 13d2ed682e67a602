import { AdamW } from '@attnkit/nn';
import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { Gpt } from './model.js';

const tiny = { nLayer: 2, nHead: 4, nKvHead: 2, nEmbd: 32, blockSize: 64, vocabSize: 11 };

function randomIds(rng: Rng, b: number, t: number, vocab: number): Tensor {
  return Tensor.from(
    Int32Array.from({ length: b * t }, () => rng.int(0, vocab)),
    [b, t],
  );
}

describe('Gpt', () => {
  test.each(['learned', 'rope'] as const)(
    'a tiny model overfits one batch on ts (%s positions)',
    (positional) => {
      const model = new Gpt({ ...tiny, blockSize: 16, positional }, { seed: 1 });
      const rng = new Rng(7);
      const x = randomIds(rng, 2, 13, tiny.vocabSize);
      const y = randomIds(rng, 2, 13, tiny.vocabSize);
      const opt = new AdamW(model.parameters(), { lr: 3e-2, weightDecay: 0 });
      const losses: number[] = [];
      for (let step = 0; step < 40; step++) {
        opt.zeroGrad();
        const { loss } = model.forward(x, y);
        loss!.backward();
        opt.step();
        losses.push(loss!.item());
      }
      // Starts near ln(11) = 2.40 (uniform guess); memorising 26 random targets drives it down.
      expect(losses[0]).toBeGreaterThan(2.2);
      expect(losses[0]).toBeLessThan(2.6);
      expect(losses.at(-1)).toBeLessThan(0.3);
    },
  );

  test.each([
    ['learned', false],
    ['rope', true],
  ] as const)(
    'generation with the KV cache equals generation without it, 50 tokens (%s, tied %s)',
    (positional, tieWeights) => {
      // GQA (4 query heads over 2 kv heads); biases on the untied model.
      const model = new Gpt({ ...tiny, positional, tieWeights, bias: !tieWeights }, { seed: 3 });
      const run = (cache: boolean) => {
        const logits: Float32Array[] = [];
        const tokens = model.generate([1, 5, 2], {
          maxNewTokens: 50,
          temperature: 0.8,
          topK: 5,
          seed: 9,
          cache,
          onToken: (_t, l) => logits.push(l),
        });
        return { tokens, logits };
      };
      const cached = run(true);
      const plain = run(false);
      expect(cached.tokens).toHaveLength(50);
      expect(cached.tokens).toEqual(plain.tokens);
      let worst = 0;
      cached.logits.forEach((l, i) => {
        l.forEach((v, j) => {
          worst = Math.max(worst, Math.abs(v - plain.logits[i]![j]!));
        });
      });
      // f32 with a different summation order (FA2 over a cache vs over the whole prefix).
      expect(worst).toBeLessThan(1e-4);
    },
  );

  test('the cache is cut and refilled past blockSize', () => {
    const model = new Gpt({ ...tiny, blockSize: 8 }, { seed: 2 });
    const out = model.generate([0, 1, 2], { maxNewTokens: 20, temperature: 0 });
    expect(out).toHaveLength(20);
    for (const t of out) expect(t).toBeGreaterThanOrEqual(0);
  });

  test('bad configs and inputs are typed errors naming the field', () => {
    const bad: [Record<string, unknown>, string][] = [
      [{ nHead: 3 }, 'nHead'],
      [{ nKvHead: 3 }, 'nKvHead'],
      [{ nLayer: 0 }, 'nLayer'],
      [{ blockSize: 2.5 }, 'blockSize'],
      [{ dropout: 1 }, 'dropout'],
      [{ positional: 'alibi' }, 'positional'],
      [{ bias: 'yes' }, 'bias'],
      [{ nEmbed: 32 }, 'nEmbed'],
      [{ vocabSize: -1 }, 'vocabSize'],
    ];
    for (const [patch, field] of bad) {
      let err: unknown;
      try {
        new Gpt({ ...tiny, ...patch } as never);
      } catch (e) {
        err = e;
      }
      expect(err, field).toBeInstanceOf(ValueError);
      expect((err as ValueError).argument).toBe(field);
      expect((err as Error).message).toContain(field);
    }
    const model = new Gpt({ ...tiny, blockSize: 4 });
    expect(() => model.forward(Tensor.from(new Int32Array(5), [1, 5]))).toThrow(/blockSize = 4/);
    expect(() => model.generate([99], { maxNewTokens: 1 })).toThrow(ValueError);
    expect(() => model.generate([1], { maxNewTokens: 1, topK: 0 })).toThrow(/topK/);
  });
});
