import { join } from 'node:path';
import { goldenAttentionOptions, loadGolden, toleranceFor } from '@attnkit/attention';
import { expectClose } from '@attnkit/testing';
import { goldenNames, goldenSets } from '@attnkit/vitest-config';
import { describe, expect, test } from 'vitest';
import { type FlashAttentionOptions, flashAttentionBackwardTs, flashAttentionTs } from './index.js';

// Every golden set: the project's goldens/ and, when present, ../shared/goldens.
for (const { name: setName, dir: GOLDENS } of goldenSets()) {
  const files = goldenNames('softmax', GOLDENS);

  describe(`PyTorch float64 goldens (${setName})`, () => {
    test('every softmax golden is here', () => {
      expect(files.length).toBe(11);
    });

    test.each(files)('%s: FA1 and FA2 forward, FA2 backward', async (file) => {
      const g = await loadGolden(join(GOLDENS, file));
      const t = g.tensors;
      const base = goldenAttentionOptions(g);
      const tol = toleranceFor({
        dtype: 'f32',
        maxSeqLen: Math.max(t.q!.shape.at(-2)!, t.k!.shape.at(-2)!),
      });
      // The planner's tiles, and odd ones that split every sequence unevenly (dividing the mask
      // blocks when the file is block-sparse).
      const tiles = base.blockSparse
        ? [{}, { blockQ: 16, blockK: 8 }]
        : [{}, { blockQ: 13, blockK: 7 }];
      for (const tile of tiles) {
        for (const algorithm of ['fa1', 'fa2'] as const) {
          const options: FlashAttentionOptions = { ...base, ...tile, algorithm };
          const label = `${algorithm} ${JSON.stringify(tile)}`;
          const { o, lse } = flashAttentionTs(t.q!, t.k!, t.v!, options);
          expectClose(o, t.o!, tol, `${label} o`);
          if (t.lse) expectClose(lse, t.lse, tol, `${label} lse`);
          if (!g.hasBackward) continue;
          const grads = flashAttentionBackwardTs(t.q!, t.k!, t.v!, o, lse, t.do!, options);
          for (const name of ['dq', 'dk', 'dv'] as const) {
            expectClose(grads[name], t[name]!, tol, `${label} ${name}`);
          }
        }
      }
    });
  });
}
