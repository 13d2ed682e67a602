import { join } from 'node:path';
import {
  goldenAttentionOptions,
  loadGolden,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
  toleranceFor,
  UnsupportedError,
} from '@attnkit/attention';
import { loadNative, nativeLoadError } from '@attnkit/native';
import { Rng } from '@attnkit/tensor';
import {
  type Accounting,
  expectClose,
  FLAVORS,
  poisonAllocations,
  randomCase,
} from '@attnkit/testing';
import { goldenNames, goldenSets } from '@attnkit/vitest-config';
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import {
  flashAttention,
  flashAttentionBackward,
  flashAttentionBackwardNative,
  flashAttentionNative,
  flashAttentionTs,
  planNativeTiles,
} from './index.js';

// The property-test cases and every softmax golden, run on backend 'native'. Without the addon
// this file fails, unless ATTNKIT_ALLOW_NO_NATIVE=1 (then one visibly skipped test says why).
const engine = loadNative();
if (!engine) {
  const why = nativeLoadError();
  if (process.env.ATTNKIT_ALLOW_NO_NATIVE === '1') {
    test.skip(`native backend unavailable (ATTNKIT_ALLOW_NO_NATIVE=1): ${why}`, () => {});
  } else {
    test('the native backend loads', () => {
      throw new Error(`@attnkit/native did not load: ${why}`);
    });
  }
}

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

describe.runIf(engine)('native backend vs the float64 reference (property-test cases)', () => {
  const rng = new Rng(20240611);
  const cases = Array.from({ length: 33 }, (_, i) => randomCase(rng, FLAVORS[i % FLAVORS.length]!));
  const tol = toleranceFor({ dtype: 'f32' });
  test.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const ref = softmaxAttentionReference(c.q, c.k, c.v, c.options);
    const grads = softmaxAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.options);
    const { o, lse } = await flashAttentionNative(c.q, c.k, c.v, c.options);
    expect(o.shape).toEqual(ref.o.shape);
    expect(lse.shape).toEqual(ref.lse.shape);
    expectClose(o, ref.o, tol, 'o');
    expectClose(lse, ref.lse, tol, 'lse');
    const g = await flashAttentionBackwardNative(c.q, c.k, c.v, o, lse, c.dO, c.options);
    for (const name of ['dq', 'dk', 'dv'] as const) expectClose(g[name], grads[name], tol, name);
  });

  test.each(['f16', 'bf16'] as const)(
    '%s inputs: o in the same dtype, lse in f32',
    async (dtype) => {
      const c = randomCase(new Rng(8), 'gqa', dtype);
      const ref = softmaxAttentionReference(c.q, c.k, c.v, c.options);
      const { o, lse } = await flashAttentionNative(c.q, c.k, c.v, c.options);
      expect(o.dtype).toBe(dtype);
      expect(lse.dtype).toBe('f32');
      expectClose(o, ref.o, toleranceFor({ dtype }), 'o');
      expectClose(lse, ref.lse, toleranceFor({ dtype: 'f32' }), 'lse');
    },
  );
});

describe.runIf(engine)('dispatch', () => {
  test("cpu tensors default to 'native'; algorithm 'fa1' and backend 'ts' stay in TypeScript", async () => {
    const c = randomCase(new Rng(2), 'window causal');
    const native = await flashAttentionNative(c.q, c.k, c.v, c.options);
    const ts = flashAttentionTs(c.q, c.k, c.v, c.options);
    const byDefault = await flashAttention(c.q, c.k, c.v, c.options);
    expect(byDefault.o.toFloat32Array()).toEqual(native.o.toFloat32Array());
    const fa1 = await flashAttention(c.q, c.k, c.v, { ...c.options, algorithm: 'fa1' });
    const fa1Ts = flashAttentionTs(c.q, c.k, c.v, { ...c.options, algorithm: 'fa1' });
    expect(fa1.o.toFloat32Array()).toEqual(fa1Ts.o.toFloat32Array());
    const named = await flashAttention(c.q, c.k, c.v, { ...c.options, backend: 'ts' });
    expect(named.o.toFloat32Array()).toEqual(ts.o.toFloat32Array());
    const g = await flashAttentionBackward(c.q, c.k, c.v, native.o, native.lse, c.dO, c.options);
    const gn = await flashAttentionBackwardNative(
      c.q,
      c.k,
      c.v,
      native.o,
      native.lse,
      c.dO,
      c.options,
    );
    expect(g.dk.toFloat32Array()).toEqual(gn.dk.toFloat32Array());
  });

  test("backend 'native' with algorithm 'fa1': UnsupportedError saying FA2 only", async () => {
    const c = randomCase(new Rng(3), 'plain');
    const options = { ...c.options, backend: 'native' as const, algorithm: 'fa1' as const };
    await expect(flashAttention(c.q, c.k, c.v, options)).rejects.toThrow(UnsupportedError);
    await expect(flashAttention(c.q, c.k, c.v, options)).rejects.toMatchObject({
      argument: 'backend',
      message: expect.stringMatching(/implements FA2 only/),
    });
    // The backward refuses it the same way (it used to run FA2 regardless).
    const { o, lse } = await flashAttentionNative(c.q, c.k, c.v, c.options);
    for (const run of [
      () => flashAttentionBackward(c.q, c.k, c.v, o, lse, c.dO, options),
      () => flashAttentionBackwardNative(c.q, c.k, c.v, o, lse, c.dO, options),
    ]) {
      await expect(run()).rejects.toThrow(UnsupportedError);
      await expect(run()).rejects.toMatchObject({ argument: 'backend' });
    }
  });
});

describe.runIf(engine)('inputs reach the engine without copies', () => {
  test('contiguous f32 tensors are passed as their own storage, and left unchanged', async () => {
    const e = engine!;
    const rng = new Rng(11);
    const [q, k, v, dO] = [0, 1, 2, 3].map(() => rng.randn([2, 2, 37, 16]));
    const before = [q, k, v, dO].map((t) => t.toFloat32Array());
    const fwd = vi.spyOn(e, 'flashForward');
    const bwd = vi.spyOn(e, 'flashBackward');
    try {
      const { o, lse } = await flashAttention(q!, k!, v!, { backend: 'native', causal: true });
      const f = fwd.mock.calls[0]!;
      expect(f[1]).toBe(q!.data());
      expect(f[2]).toBe(k!.data());
      expect(f[3]).toBe(v!.data());
      await flashAttentionBackward(q!, k!, v!, o, lse, dO!, { backend: 'native', causal: true });
      const b = bwd.mock.calls[0]!;
      const inputs = [q!, k!, v!, o, lse, dO!];
      for (const [i, t] of inputs.entries()) {
        expect(b[i + 1], `argument ${i + 1}`).toBe(t.data());
      }
      for (const [i, t] of [q!, k!, v!, dO!].entries()) {
        expect(t.toFloat32Array()).toEqual(before[i]);
      }
      // Tile hints: the backward's query block from the I/O planner, the forward key tile left
      // to the engine; an explicit option wins.
      const planned = planNativeTiles({ nq: 37, nk: 37, d: 16, dv: 16 });
      expect(planned.blockQ).toBeGreaterThan(0);
      expect(b[0]).toMatchObject({ blockQ: planned.blockQ, blockK: undefined });
      await flashAttention(q!, k!, v!, { backend: 'native', blockQ: 8, blockK: 24 });
      expect(fwd.mock.calls[1]![0]).toMatchObject({ blockQ: 8, blockK: 24 });
    } finally {
      fwd.mockRestore();
      bwd.mockRestore();
    }
  });

  test('strided (transposed-view) and f16 inputs are gathered / decoded and give the same result', async () => {
    const e = engine!;
    const rng = new Rng(12);
    const q = rng.randn([1, 3, 29, 16]);
    const v = rng.randn([1, 3, 29, 16]);
    const kStrided = rng.randn([1, 29, 3, 16]).transpose(1, 2);
    expect(kStrided.isContiguous()).toBe(false);
    const kDense = kStrided.contiguous();
    const fwd = vi.spyOn(e, 'flashForward');
    try {
      const strided = await flashAttention(q, kStrided, v, { backend: 'native' });
      const passed = fwd.mock.calls[0]![2];
      expect(passed).not.toBe(kDense.data());
      expect(passed).toEqual(kDense.toFloat32Array());
      const dense = await flashAttention(q, kDense, v, { backend: 'native' });
      expect(strided.o.toFloat32Array()).toEqual(dense.o.toFloat32Array());
      const ref = softmaxAttentionReference(q, kDense, v);
      expectClose(strided.o, ref.o, 1e-5, 'strided o');
      const half = await flashAttention(q.astype('f16'), kStrided.astype('f16'), v.astype('f16'), {
        backend: 'native',
      });
      expect(half.o.dtype).toBe('f16');
      expectClose(half.o, ref.o, 1e-2, 'f16 o');
    } finally {
      fwd.mockRestore();
    }
  });
});

describe('native unavailable', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
    vi.resetModules();
  });
  test("backend 'native' throws BackendUnavailableError; the default falls back to ts", async () => {
    vi.stubEnv('ATTNKIT_NATIVE_ADDON', '/nonexistent/attnkit_native.node');
    vi.resetModules();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    // A fresh module graph (a new @attnkit/tensor too, hence no instanceof on its errors).
    const fresh = await import('./index.js');
    const c = randomCase(new Rng(4), 'plain');
    await expect(
      fresh.flashAttention(c.q, c.k, c.v, { ...c.options, backend: 'native' }),
    ).rejects.toMatchObject({ name: 'BackendUnavailableError', argument: 'backend' });
    const { o } = await fresh.flashAttention(c.q, c.k, c.v, c.options);
    expect(o.toFloat32Array()).toEqual(
      fresh.flashAttentionTs(c.q, c.k, c.v, c.options).o.toFloat32Array(),
    );
    expect(warn).toHaveBeenCalledTimes(1);
    warn.mockRestore();
  });
});

// Every golden set: the project's goldens/ and, when present, ../shared/goldens.
for (const { name: setName, dir: GOLDENS } of goldenSets()) {
  const files = goldenNames('softmax', GOLDENS);

  describe.runIf(engine)(`PyTorch float64 goldens on native (${setName})`, () => {
    test.each(files)('%s', async (file) => {
      const g = await loadGolden(join(GOLDENS, file));
      const t = g.tensors;
      const options = goldenAttentionOptions(g);
      const tol = toleranceFor({
        dtype: 'f32',
        maxSeqLen: Math.max(t.q!.shape.at(-2)!, t.k!.shape.at(-2)!),
      });
      const { o, lse } = await flashAttentionNative(t.q!, t.k!, t.v!, options);
      expectClose(o, t.o!, tol, 'o');
      if (t.lse) expectClose(lse, t.lse, tol, 'lse');
      if (!g.hasBackward) return;
      const grads = await flashAttentionBackwardNative(t.q!, t.k!, t.v!, o, lse, t.do!, options);
      for (const name of ['dq', 'dk', 'dv'] as const) expectClose(grads[name], t[name]!, tol, name);
    });
  });
}
