import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, Rng, type Tensor, ValueError, writeSafetensors } from '@attnkit/tensor';
import { goldenNames, goldenSets, projectGoldensDir } from '@attnkit/vitest-config';
import { describe, expect, test } from 'vitest';
import {
  type Golden,
  goldenAttentionOptions,
  goldenGlaOptions,
  goldenHstuOptions,
  goldenSigmoidOptions,
  loadGolden,
  parseGolden,
  runReference,
} from './golden.js';
import { accuracy } from './metrics.js';

const GOLDENS = projectGoldensDir;

// Every golden set: the project's goldens/ and, when present, ../shared/goldens.
for (const set of goldenSets()) {
  const files = goldenNames('', set.dir);
  describe(`${set.name} goldens: float64 references reproduce the PyTorch references`, () => {
    test('the goldens directory holds every file its README lists', () => {
      const readme = readFileSync(join(set.dir, 'README.md'), 'utf8');
      const listed = [...readme.matchAll(/^\| ([a-z_, ]+) \| [a-z_]+ \|/gm)]
        .flatMap((m) => m[1]!.split(', '))
        .filter((name) => name !== 'file');
      expect(listed.length).toBe(18);
      for (const name of listed) expect(files).toContain(`${name}.safetensors`);
    });

    test.each(files)('%s', async (file) => {
      const g = await loadGolden(join(set.dir, file));
      expect(g.name).toBe(file.replace('.safetensors', ''));
      const got = runReference(g);
      expect(Object.keys(got).sort()).toEqual([...g.references].sort());
      expect(g.references).toContain('o');
      // The shared GLA golden was computed in float32 internally by its generator (its README):
      // ~1.4e-7. The project's GLA goldens are float64 throughout.
      const tol = g.kind === 'gla' && set.name === 'shared' ? 1e-5 : 1e-10;
      for (const name of g.references) {
        const ref = g.tensors[name]!;
        expect(got[name]!.shape, name).toEqual(ref.shape);
        const acc = accuracy(got[name]!, ref);
        expect(acc.nonFinite, `${name} nonFinite`).toBe(0);
        expect(acc.relL2, `${name} relL2`).toBeLessThanOrEqual(tol);
      }
    });
  });
}

// The loader's mapping, on the project's goldens (always present in a clone).
describe('golden metadata', () => {
  const load = (name: string) =>
    parseGolden(new Uint8Array(readFileSync(join(GOLDENS, `${name}.safetensors`))), name);

  test('softmax params map to options: window, block sparsity, THD offsets', () => {
    const w = load('softmax_window_causal');
    expect(goldenAttentionOptions(w)).toMatchObject({
      causal: true,
      window: [20, -1],
      scale: 0.25,
    });
    const bs = load('softmax_blocksparse');
    const o = goldenAttentionOptions(bs);
    expect(o.blockSparse?.blockQ).toBe(32);
    expect(o.blockSparse?.mask.shape).toEqual([3, 3]);
    expect(bs.inputs).toEqual(['q', 'k', 'v', 'do', 'block_mask']);
    const vl = load('softmax_varlen');
    const ov = goldenAttentionOptions(vl);
    expect(ov.layout).toBe('THD');
    expect([...(ov.cuSeqlensQ as Int32Array)]).toEqual([0, 5, 38, 55]);
    expect([...(ov.cuSeqlensK as Int32Array)]).toEqual([0, 5, 38, 55]);
    expect(vl.references).toEqual(['o', 'dq', 'dk', 'dv']);
    const dec = load('softmax_decode');
    expect(dec.hasBackward).toBe(false);
    expect(dec.references).toEqual(['o', 'lse']);
  });

  test('sigmoid, GLA and HSTU params map to options', () => {
    expect(goldenSigmoidOptions(load('sigmoid_causal'))).toMatchObject({
      causal: true,
      scale: 0.25,
      bias: -Math.log(40),
    });
    const gla = load('gla');
    const go = goldenGlaOptions(gla);
    expect(go.scale).toBe(0.25);
    expect(go.initialState).toBe(gla.tensors.h0);
    expect(go.outputFinalState).toBe(true);
    expect(gla.inputs).toEqual(['q', 'k', 'v', 'gk', 'h0', 'do', 'dht']);
    expect(gla.references.sort()).toEqual(['dgk', 'dh0', 'dk', 'dq', 'dv', 'ht', 'o']);
    const ho = goldenHstuOptions(load('hstu_causal'));
    expect([...(ho.seqOffsets as Int32Array)]).toEqual([0, 7, 30, 48]);
    expect(ho).toMatchObject({ maxSeqLen: 23, alpha: 0.25, causal: true });
  });

  test('options of the wrong kind are a ValueError naming g', () => {
    const gla = load('gla');
    expect(() => goldenAttentionOptions(gla)).toThrow(ValueError);
    expect(() => goldenHstuOptions(gla)).toThrow(
      /^g: goldenHstuOptions expected a golden of kind hstu, got "gla"/,
    );
    expect(() => runReference({} as Golden)).toThrow(ValueError);
  });
});

describe('parseGolden / loadGolden errors', () => {
  const rng = new Rng(7);
  const qkv = () => ({
    q: rng.randn([1, 1, 3, 2]),
    k: rng.randn([1, 1, 3, 2]),
    v: rng.randn([1, 1, 3, 2]),
    o: rng.randn([1, 1, 3, 2], 'f64'),
    lse: rng.randn([1, 1, 3], 'f64'),
  });
  const file = (tensors: Record<string, Tensor>, params?: unknown) =>
    writeSafetensors(
      tensors,
      params === undefined
        ? {}
        : { metadata: { params: typeof params === 'string' ? params : JSON.stringify(params) } },
    );

  test('a minimal softmax file parses and runs', () => {
    const g = parseGolden(file(qkv(), { kind: 'softmax', causal: true }), 'mini');
    expect(g.kind).toBe('softmax');
    expect(g.hasBackward).toBe(false);
    expect(runReference(g).o!.shape).toEqual([1, 1, 3, 2]);
  });

  test('missing params, bad JSON, unknown kind, missing tensors, bad param values', () => {
    expect(() => parseGolden(file(qkv()), 'x')).toThrow(FormatError);
    expect(() => parseGolden(file(qkv()), 'x')).toThrow(/^x: metadata.params: expected/);
    expect(() => parseGolden(file(qkv(), '{kind'), 'x')).toThrow(/valid JSON/);
    expect(() => parseGolden(file(qkv(), { kind: 'linear' }), 'x')).toThrow(/params.kind/);
    const { lse: _lse, ...noLse } = qkv();
    expect(() => parseGolden(file(noLse, { kind: 'softmax' }), 'x')).toThrow(/tensor "lse"/);
    const withDo = { ...qkv(), do: rng.randn([1, 1, 3, 2]) };
    expect(() => parseGolden(file(withDo, { kind: 'softmax' }), 'x')).toThrow(/tensor "dq"/);
    expect(() => parseGolden(file(qkv(), { kind: 'softmax', scale: 'big' }), 'x')).toThrow(
      /params.scale/,
    );
    expect(() =>
      parseGolden(file(qkv(), { kind: 'softmax', causal_alignment: 'top_left' }), 'x'),
    ).toThrow(FormatError);
    expect(() =>
      parseGolden(
        file(qkv(), {
          kind: 'softmax',
          block_sparse: { blockQ: 2, blockK: 2, mask_tensor: 'nope' },
        }),
        'x',
      ),
    ).toThrow(/mask_tensor/);
    expect(() => parseGolden(file(qkv(), { kind: 'hstu', max_seq_len: 3, alpha: 1 }), 'x')).toThrow(
      /params.seq_offsets/,
    );
    expect(() => parseGolden(new Uint8Array([1, 2, 3]), 'x')).toThrow(FormatError);
    expect(() => parseGolden('bytes' as unknown as Uint8Array)).toThrow(ValueError);
  });

  test('loadGolden of a missing file is a ValueError naming path', async () => {
    await expect(loadGolden(join(GOLDENS, 'no_such.safetensors'))).rejects.toThrow(
      /^path: expected a readable golden file/,
    );
    await expect(loadGolden('')).rejects.toThrow(ValueError);
  });
});
