import { basename } from 'node:path';
import {
  accuracy,
  goldenGlaOptions,
  loadGolden,
  registeredKernels,
  selectKernel,
  toleranceFor,
  UnsupportedError,
} from '@attnkit/attention';
import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { poisonAllocations, relL2 } from '@attnkit/testing';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { describe, expect, test } from 'vitest';
import {
  chunkGla,
  chunkGlaBackward,
  fusedRecurrentGla,
  fusedRecurrentGlaBackward,
  glaBackwardNativeSync,
  glaForwardNativeSync,
  glaReference,
  glaReferenceBackward,
  resolveGla,
} from '../index.js';
import { glaNativeReady } from './native.js';

/**
 * The native backend (gla.forward / gla.backward on @attnkit/native) as golden.test.ts and
 * long.test.ts run the ts one: the gla goldens at chunk sizes 16, 64 and 128 on poisoned outputs,
 * gk = -20 per step and gates in [-20, 0], T = 16384, against the float64 references; f16 / bf16
 * storage, varlen, h0 off, T not a multiple of C and K != V against the ts backend on the same
 * inputs; the registry's choices and declines. Skipped (with the reason) where the addon does
 * not load, unless CI requires it (ATTNKIT_ALLOW_NO_NATIVE unset: then the load must work).
 */

const available = await glaNativeReady();
if (available !== true && process.env.ATTNKIT_ALLOW_NO_NATIVE !== '1')
  throw new Error(`the native GLA backend must load for these tests: ${available}`);
const native = describe.skipIf(available !== true);

const files = goldenFiles('gla');
const forms = [
  ['chunk C 64', chunkGla, chunkGlaBackward, { chunkSize: 64 }],
  ['chunk C 16', chunkGla, chunkGlaBackward, { chunkSize: 16 }],
  ['chunk C 128', chunkGla, chunkGlaBackward, { chunkSize: 128 }],
  ['recurrent', fusedRecurrentGla, fusedRecurrentGlaBackward, {}],
] as const;

native.each(files.map((f) => [goldenLabel(f), f]))('%s on native', (_label, file) => {
  test.each(forms)('%s: o, ht, dq, dk, dv, dgk, dh0', async (_name, fwd, bwd, extra) => {
    const g = await loadGolden(file);
    const t = g.tensors;
    const options = { ...goldenGlaOptions(g), ...extra, backend: 'native' };
    const acct = poisonAllocations();
    let produced: Record<string, unknown>;
    try {
      const r = await fwd(t.q!, t.k!, t.v!, t.gk!, options);
      const grads = await bwd(t.q!, t.k!, t.v!, t.gk!, t.do!, {
        ...options,
        dht: t.dht,
      });
      produced = { o: r.o, ht: r.finalState, ...grads };
    } finally {
      acct.restore();
    }
    expect(acct.count.output).toBeGreaterThanOrEqual(7);
    const tol = toleranceFor({ dtype: 'f32', chunked: true });
    for (const name of g.references) {
      const got = produced[name] as Parameters<typeof accuracy>[0];
      expect(got?.shape, name).toEqual(t[name]!.shape);
      const acc = accuracy(got, t[name]!);
      expect(acc.nonFinite, name).toBe(0);
      expect(acc.relL2, `${name} of ${basename(file)}`).toBeLessThan(tol);
    }
  });
});

const rng = new Rng(0x6a7e);
const logsigmoid = (x: number) => -Math.log1p(Math.exp(-x));

function problem(
  T: number,
  H: number,
  K: number,
  V: number,
  gate: (x: number, c: number) => number,
) {
  const z = rng.randn([1, T, H, K], 'f64').toFloat64Array();
  return {
    q: rng.randn([1, T, H, K]),
    k: rng.randn([1, T, H, K]),
    v: rng.randn([1, T, H, V]),
    gk: Tensor.from(
      Float32Array.from(z, (x, i) => gate(x, i % K)),
      [1, T, H, K],
    ),
    h0: rng.randn([1, H, K, V]),
    dO: rng.randn([1, T, H, V]),
    dht: rng.randn([1, H, K, V]),
  };
}

async function againstReference(
  x: ReturnType<typeof problem>,
  tol: number,
  strongChannels?: (c: number) => boolean,
) {
  const options = { initialState: x.h0, outputFinalState: true };
  const ref = glaReference(x.q, x.k, x.v, x.gk, options);
  const refB = glaReferenceBackward(x.q, x.k, x.v, x.gk, x.dO, { ...options, dht: x.dht });
  for (const [form, fwd, bwd] of [
    ['chunk', chunkGla, chunkGlaBackward],
    ['recurrent', fusedRecurrentGla, fusedRecurrentGlaBackward],
  ] as const) {
    const r = await fwd(x.q, x.k, x.v, x.gk, { ...options, backend: 'native' });
    const g = await bwd(x.q, x.k, x.v, x.gk, x.dO, { ...options, dht: x.dht, backend: 'native' });
    const got = { o: r.o, ht: r.finalState!, ...g } as Record<string, Tensor>;
    const want = { o: ref.o, ht: ref.finalState!, ...refB } as Record<string, Tensor>;
    for (const n of ['o', 'ht', 'dq', 'dk', 'dv', 'dgk', 'dh0']) {
      const a = got[n]!.toFloat64Array();
      expect(a.every(Number.isFinite), `${form} ${n} finite`).toBe(true);
      expect(relL2(a, want[n]!.toFloat64Array()), `${form} ${n}`).toBeLessThan(tol);
    }
    if (strongChannels) {
      const K = x.gk.shape[3]!;
      const pick = (t: Tensor) => t.toFloat64Array().filter((_, i) => strongChannels(i % K));
      const a = pick(g.dgk);
      const b = pick(refB.dgk);
      expect(Math.max(...b.map(Math.abs))).toBeLessThan(1e-6);
      expect(relL2(a, b), `${form} dgk of the gk = -20 channels`).toBeLessThan(1e-5);
    }
  }
}

native('numerics on native against the float64 recurrent reference', () => {
  test('gk = -20 per step in half the key channels (T 300, C 64: chunk G down to -1280)', async () => {
    const strong = (c: number) => c % 2 === 0;
    const x = problem(300, 2, 16, 16, (z, c) => (strong(c) ? -20 : logsigmoid(z)));
    await againstReference(x, toleranceFor({ chunked: true }), strong);
  });

  test('gates drawn in [-20, 0] everywhere', async () => {
    const x = problem(200, 1, 8, 12, () => -20 * rng.uniform());
    await againstReference(x, toleranceFor({ chunked: true }));
  });

  // The float64 reference takes most of the time; limits as long.test.ts's (a hang only).
  test('T = 16384: every output and gradient', { timeout: 180_000 }, async () => {
    const x = problem(16384, 2, 16, 16, (z, c) => (c === 3 ? -20 : logsigmoid(z) / 16));
    await againstReference(x, toleranceFor({ chunked: true, maxSeqLen: 16384 }));
  });
});

/** Runs both backends on the same inputs and compares every output. */
async function againstTs(
  x: { q: Tensor; k: Tensor; v: Tensor; gk: Tensor; dO: Tensor; dht?: Tensor },
  options: Record<string, unknown>,
  tol: number,
  recurrent = false,
) {
  const fwd = recurrent ? fusedRecurrentGla : chunkGla;
  const bwd = recurrent ? fusedRecurrentGlaBackward : chunkGlaBackward;
  const run = async (backend: string) => {
    const r = await fwd(x.q, x.k, x.v, x.gk, { ...options, backend });
    const g = await bwd(x.q, x.k, x.v, x.gk, x.dO, {
      ...options,
      ...(x.dht && options.initialState ? { dht: x.dht } : {}),
      backend,
    });
    return { o: r.o, ht: r.finalState, ...g } as Record<string, Tensor | undefined>;
  };
  const a = await run('native');
  const b = await run('ts');
  for (const [n, want] of Object.entries(b)) {
    if (!want) continue;
    const got = a[n];
    expect(got?.dtype, n).toBe(want.dtype);
    expect(got?.shape, n).toEqual(want.shape);
    expect(relL2(got!.toFloat64Array(), want.toFloat64Array()), n).toBeLessThan(tol);
  }
}

native('native against ts on the same inputs', () => {
  test.each([
    ['T 77 (not a multiple of C), K 24 != V 40, C 32, h0', 77, 3, 24, 40, 32, true],
    ['T 200, K 64, V 64, C 64, no h0', 200, 2, 64, 64, 64, false],
    ['T 129, K 8, V 100, C 128, h0', 129, 1, 8, 100, 128, true],
    ['T 50, K 33, V 17, C 16, h0', 50, 2, 33, 17, 16, true],
  ] as const)('%s', async (_n, T, H, K, V, C, withH0) => {
    const x = problem(T, H, K, V, (z) => logsigmoid(z) / 8);
    const options: Record<string, unknown> = { chunkSize: C, outputFinalState: true };
    if (withH0) options.initialState = x.h0;
    await againstTs(x, options, 2e-5);
  });

  test('varlen: cuSeqlens with an empty sequence, h0 and dht per sequence', async () => {
    const cu = [0, 40, 40, 111, 190];
    const T = 190;
    const x = problem(T, 2, 12, 20, (z) => logsigmoid(z) / 4);
    const h0 = rng.randn([4, 2, 12, 20]);
    const dht = rng.randn([4, 2, 12, 20]);
    await againstTs(
      { ...x, dht },
      { cuSeqlens: cu, initialState: h0, outputFinalState: true, chunkSize: 32 },
      2e-5,
    );
  });

  test.each([false, true])('recurrent, reverse %s: varlen, h0, dht, K != V', async (reverse) => {
    const cu = [0, 33, 33, 140];
    const x = problem(140, 2, 10, 18, (z) => logsigmoid(z) / 4);
    const h0 = rng.randn([3, 2, 10, 18]);
    const dht = rng.randn([3, 2, 10, 18]);
    await againstTs(
      { ...x, dht },
      { cuSeqlens: cu, initialState: h0, outputFinalState: true, reverse },
      2e-5,
      true,
    );
  });

  test.each(['f16', 'bf16'] as const)(
    '%s storage: decoded, results in the input dtypes',
    async (dt) => {
      const x = problem(90, 2, 16, 24, (z) => logsigmoid(z) / 4);
      const cast = (t: Tensor) => t.astype(dt);
      const y = { q: cast(x.q), k: cast(x.k), v: cast(x.v), gk: x.gk, dO: cast(x.dO) };
      const h0 = cast(x.h0);
      // Both backends compute from the same decoded values; only the final rounding differs.
      await againstTs(y, { initialState: h0, outputFinalState: true }, dt === 'f16' ? 2e-3 : 1e-2);
    },
  );
});

native('registry', () => {
  const req = (options: Record<string, unknown>, dtype = 'f32') =>
    ({ family: 'gla', pass: 'forward', device: 'cpu', dtype, options }) as const;

  test('native (priority 20) wins on cpu for the chunk form, both passes', () => {
    for (const pass of ['forward', 'backward'] as const) {
      const reg = registeredKernels({ family: 'gla', pass }).find((r) => r.backend === 'native');
      expect(reg?.priority).toBe(20);
      expect(reg?.devices).toEqual(['cpu']);
    }
    expect(selectKernel(req({ form: 'chunk' })).backend).toBe('native');
    expect(selectKernel(req({ form: 'recurrent' })).backend).toBe('native');
  });

  test('declines with a sentence what it does not run; the default falls back to ts', () => {
    for (const [options, dtype, pattern] of [
      [{ form: 'chunk' }, 'f64', /f32/],
      [{ form: 'chunk', chunkSize: 512 }, 'f32', /\[16, 256\]/],
      [{ form: 'chunk', chunkSize: 8 }, 'f32', /\[16, 256\]/],
    ] as const) {
      expect(selectKernel(req(options, dtype)).backend).toBe('ts');
      expect(() => selectKernel(req(options, dtype), 'native')).toThrow(UnsupportedError);
      expect(() => selectKernel(req(options, dtype), 'native')).toThrow(pattern);
    }
  });

  test('the default cpu backend runs what ts runs: C 8 and f64 (on ts)', async () => {
    const x = problem(40, 1, 4, 4, (z) => logsigmoid(z));
    const ref = glaReference(x.q, x.k, x.v, x.gk, {});
    const tol = toleranceFor({ chunked: true });
    for (const r of [
      await fusedRecurrentGla(x.q, x.k, x.v, x.gk),
      await chunkGla(x.q, x.k, x.v, x.gk, { chunkSize: 8 }),
    ])
      expect(relL2(r.o.toFloat64Array(), ref.o.toFloat64Array())).toBeLessThan(tol);
    const f64 = (t: Tensor) => Tensor.from(t.toFloat64Array(), t.shape, 'f64');
    const r = await chunkGla(f64(x.q), f64(x.k), f64(x.v), f64(x.gk));
    expect(r.o.dtype).toBe('f64');
  });

  test('a positive gate: the same typed ValueError as ts, naming gk and its index', async () => {
    const x = problem(20, 1, 4, 4, () => -0.5);
    const g = x.gk.toFloat32Array();
    g[4 * 3 + 1] = 0.25;
    const gk = Tensor.from(g, x.gk.shape);
    for (const backend of ['native', 'ts']) {
      const e = await chunkGla(x.q, x.k, x.v, gk, { backend }).catch((err) => err);
      expect(e).toBeInstanceOf(ValueError);
      expect(e.argument).toBe('gk');
      expect(e.message).toMatch(/got 0\.25 at \[0, 3, 0, 1\]/);
    }
  });
});

native('synchronous entry points (glaForwardNativeSync, glaBackwardNativeSync)', () => {
  test('equal the async native path bit for bit, both forms, h0 and dht; poisoned outputs', async () => {
    const { loadNative } = await import('@attnkit/native');
    const engine = loadNative()!;
    const x = problem(77, 2, 12, 20, (z) => logsigmoid(z) / 4);
    for (const form of ['chunk', 'recurrent'] as const) {
      const options = { initialState: x.h0, outputFinalState: true };
      const p = resolveGla(x.q, x.k, x.v, x.gk, options, form);
      const pb = resolveGla(x.q, x.k, x.v, x.gk, options, form, { dO: x.dO, dht: x.dht });
      const acct = poisonAllocations();
      let sync: Record<string, Tensor | undefined>;
      try {
        const r = glaForwardNativeSync(engine, p, x);
        const g = glaBackwardNativeSync(engine, pb, { ...x, do: x.dO, dht: x.dht });
        sync = { o: r.o, ht: r.ht, ...g };
      } finally {
        acct.restore();
      }
      expect(acct.count.output).toBe(7);
      const [fwd, bwd] =
        form === 'chunk'
          ? [chunkGla, chunkGlaBackward]
          : [fusedRecurrentGla, fusedRecurrentGlaBackward];
      const r = await fwd(x.q, x.k, x.v, x.gk, { ...options, backend: 'native' });
      const g = await bwd(x.q, x.k, x.v, x.gk, x.dO, { ...options, dht: x.dht, backend: 'native' });
      const want = { o: r.o, ht: r.finalState, ...g } as Record<string, Tensor | undefined>;
      for (const n of ['o', 'ht', 'dq', 'dk', 'dv', 'dgk', 'dh0'])
        expect(Array.from(sync[n]!.toFloat32Array()), `${form} ${n}`).toEqual(
          Array.from(want[n]!.toFloat32Array()),
        );
    }
  });

  test('a positive gate is the typed ValueError naming gk, as the async path', async () => {
    const { loadNative } = await import('@attnkit/native');
    const x = problem(20, 1, 4, 4, () => -0.5);
    const g = x.gk.toFloat32Array();
    g[4 * 3 + 1] = 0.25;
    const gk = Tensor.from(g, x.gk.shape);
    const p = resolveGla(x.q, x.k, x.v, gk, {}, 'chunk');
    expect(() => glaForwardNativeSync(loadNative()!, p, { ...x, gk })).toThrow(
      /gk: expected finite log-space gates.*got 0\.25 at \[0, 3, 0, 1\]/,
    );
  });
});
