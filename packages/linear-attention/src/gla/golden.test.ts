import { basename } from 'node:path';
import { accuracy, goldenGlaOptions, loadGolden, toleranceFor } from '@attnkit/attention';
import { poisonAllocations } from '@attnkit/testing';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { describe, expect, test } from 'vitest';
import {
  chunkGla,
  chunkGlaBackward,
  fusedRecurrentGla,
  fusedRecurrentGlaBackward,
} from '../index.js';

/**
 * The gla goldens (fla's naive recurrent GLA with h0, the final state and every gradient; the
 * project's set and ../shared/goldens) on both forms and several chunk sizes, every tensor at
 * KERNELS.md's chunked-GLA f32 bound (2e-5), on poisoned outputs.
 */
const files = goldenFiles('gla');

test('both golden sets hold gla and gla_long', () => {
  const names = files.map(goldenLabel);
  expect(names).toEqual(expect.arrayContaining(['project/gla', 'project/gla_long']));
  if (names.some((n) => n.startsWith('shared/')))
    expect(names).toEqual(expect.arrayContaining(['shared/gla', 'shared/gla_long']));
});

const forms = [
  ['chunk C 64', chunkGla, chunkGlaBackward, { chunkSize: 64 }],
  ['chunk C 16', chunkGla, chunkGlaBackward, { chunkSize: 16 }],
  ['chunk C 128', chunkGla, chunkGlaBackward, { chunkSize: 128 }],
  ['recurrent', fusedRecurrentGla, fusedRecurrentGlaBackward, {}],
] as const;

describe.each(files.map((f) => [goldenLabel(f), f]))('%s', (_label, file) => {
  test.each(forms)('%s: o, ht, dq, dk, dv, dgk, dh0', async (_name, fwd, bwd, extra) => {
    const g = await loadGolden(file);
    const t = g.tensors;
    const options = { ...goldenGlaOptions(g), ...extra, backend: 'ts' };
    const acct = poisonAllocations();
    let produced: Record<string, unknown>;
    try {
      const r = await fwd(t.q!, t.k!, t.v!, t.gk!, options);
      const grads = await bwd(t.q!, t.k!, t.v!, t.gk!, t.do!, { ...options, dht: t.dht });
      produced = { o: r.o, ht: r.finalState, ...grads };
    } finally {
      acct.restore();
    }
    expect(acct.count.output).toBeGreaterThanOrEqual(7);
    const tol = toleranceFor({ dtype: 'f32', chunked: true });
    expect(g.references.sort()).toEqual(['dgk', 'dh0', 'dk', 'dq', 'dv', 'ht', 'o']);
    for (const name of g.references) {
      const got = produced[name] as Parameters<typeof accuracy>[0];
      expect(got?.shape, name).toEqual(t[name]!.shape);
      const acc = accuracy(got, t[name]!);
      expect(acc.nonFinite, name).toBe(0);
      expect(acc.relL2, `${name} of ${basename(file)}`).toBeLessThan(tol);
    }
  });
});
