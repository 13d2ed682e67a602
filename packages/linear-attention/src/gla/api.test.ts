import { registeredKernels, selectKernel, toleranceFor } from '@attnkit/attention';
import { DeviceError, DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { poisonAllocations, relL2 } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import {
  chunkGla,
  chunkGlaBackward,
  fusedRecurrentGla,
  fusedRecurrentGlaBackward,
  GLA_FAMILY,
  glaReference,
  glaReferenceBackward,
} from '../index.js';

const rng = new Rng(0x9a1);

function problem(
  B: number,
  T: number,
  H: number,
  K: number,
  V: number,
  dtype: 'f32' | 'f16' | 'bf16' | 'f64' = 'f32',
) {
  const z = rng.randn([B, T, H, K], 'f64').toFloat64Array();
  return {
    q: rng.randn([B, T, H, K], dtype),
    k: rng.randn([B, T, H, K], dtype),
    v: rng.randn([B, T, H, V], dtype),
    gk: Tensor.from(Float32Array.from(z, (x) => -Math.log1p(Math.exp(-x))))
      .reshape([B, T, H, K])
      .astype(dtype),
    dO: rng.randn([B, T, H, V], dtype),
  };
}

const rel = (a: Tensor, b: Tensor) => relL2(a.toFloat64Array(), b.toFloat64Array());

describe('chunkGla and fusedRecurrentGla against the float64 reference', () => {
  test.each([
    [1, 1, 1, 1, 1, 64],
    [2, 65, 2, 16, 8, 64],
    [1, 200, 3, 8, 24, 32],
    [3, 33, 1, 5, 7, 16],
    [1, 129, 2, 4, 4, 128],
  ])(
    'B %i T %i H %i K %i V %i, C %i: T not a multiple of C, K != V, h0 on and off',
    async (B, T, H, K, V, C) => {
      const x = problem(B, T, H, K, V);
      for (const h0 of [undefined, rng.randn([B, H, K, V])]) {
        const options = { initialState: h0, outputFinalState: true };
        const ref = glaReference(x.q, x.k, x.v, x.gk, options);
        const refB = glaReferenceBackward(x.q, x.k, x.v, x.gk, x.dO, options);
        const tol = toleranceFor({ chunked: true });
        for (const [fwd, bwd, extra] of [
          [chunkGla, chunkGlaBackward, { chunkSize: C }],
          [fusedRecurrentGla, fusedRecurrentGlaBackward, {}],
        ] as const) {
          const r = await fwd(x.q, x.k, x.v, x.gk, { ...options, ...extra });
          const g = await bwd(x.q, x.k, x.v, x.gk, x.dO, { ...options, ...extra });
          expect(r.o.dtype).toBe('f32');
          expect(r.finalState!.dtype).toBe('f32');
          expect(rel(r.o, ref.o)).toBeLessThan(tol);
          expect(rel(r.finalState!, ref.finalState!)).toBeLessThan(tol);
          for (const n of ['dq', 'dk', 'dv', 'dgk'] as const)
            expect(rel(g[n], refB[n]), n).toBeLessThan(tol);
          if (h0) expect(rel(g.dh0!, refB.dh0!)).toBeLessThan(tol);
          else expect(g.dh0).toBeUndefined();
        }
      }
    },
  );

  test('varlen: cuSeqlens equals running each sequence on its own (an empty one keeps its h0)', async () => {
    const lens = [37, 0, 70, 5];
    const cu = [0, 37, 37, 107, 112];
    const [H, K, V] = [2, 8, 4];
    const x = problem(1, 112, H, K, V);
    const h0 = rng.randn([4, H, K, V]);
    const dht = rng.randn([4, H, K, V]);
    for (const [fwd, bwd, extra] of [
      [chunkGla, chunkGlaBackward, { chunkSize: 32 }],
      [fusedRecurrentGla, fusedRecurrentGlaBackward, {}],
    ] as const) {
      const options = { ...extra, cuSeqlens: cu, initialState: h0, outputFinalState: true };
      const r = await fwd(x.q, x.k, x.v, x.gk, options);
      const g = await bwd(x.q, x.k, x.v, x.gk, x.dO, { ...options, dht });
      expect(r.finalState!.shape).toEqual([4, H, K, V]);
      for (let n = 0; n < 4; n++) {
        const [a, e] = [cu[n]!, cu[n + 1]!];
        const part = (t: Tensor) => t.slice(1, a, e).contiguous();
        const one = { initialState: h0.slice(0, n, n + 1), outputFinalState: true };
        const alone = glaReference(part(x.q), part(x.k), part(x.v), part(x.gk), one);
        const state = r.finalState!.slice(0, n, n + 1);
        expect(rel(state, alone.finalState!)).toBeLessThan(1e-6);
        if (lens[n] === 0) {
          expect(state.toFloat64Array()).toEqual(h0.slice(0, n, n + 1).toFloat64Array());
          expect(g.dh0!.slice(0, n, n + 1).toFloat64Array()).toEqual(
            dht.slice(0, n, n + 1).toFloat64Array(),
          );
          continue;
        }
        expect(rel(part(r.o), alone.o)).toBeLessThan(1e-6);
        const gb = glaReferenceBackward(part(x.q), part(x.k), part(x.v), part(x.gk), part(x.dO), {
          ...one,
          dht: dht.slice(0, n, n + 1),
        });
        for (const k of ['dq', 'dk', 'dv', 'dgk'] as const)
          expect(rel(part(g[k]), gb[k]), k).toBeLessThan(1e-6);
        expect(rel(g.dh0!.slice(0, n, n + 1), gb.dh0!)).toBeLessThan(1e-6);
      }
    }
  });

  test('reverse runs each sequence from its end: equal to the forward form on flipped inputs', async () => {
    const x = problem(2, 23, 2, 4, 6);
    const flip = (t: Tensor) => {
      const [B, T] = t.shape as [number, number];
      const row = t.size / (B * T);
      const src = t.toFloat32Array();
      const out = new Float32Array(src.length);
      for (let b = 0; b < B; b++)
        for (let i = 0; i < T; i++)
          out.set(
            src.subarray((b * T + i) * row, (b * T + i + 1) * row),
            (b * T + T - 1 - i) * row,
          );
      return Tensor.from(out, t.shape);
    };
    const rev = await fusedRecurrentGla(x.q, x.k, x.v, x.gk, {
      reverse: true,
      outputFinalState: true,
    });
    const fwd = await fusedRecurrentGla(flip(x.q), flip(x.k), flip(x.v), flip(x.gk), {
      outputFinalState: true,
    });
    expect(rel(rev.o, flip(fwd.o))).toBeLessThan(1e-6);
    expect(rel(rev.finalState!, fwd.finalState!)).toBeLessThan(1e-6);
    const g = await fusedRecurrentGlaBackward(x.q, x.k, x.v, x.gk, x.dO, { reverse: true });
    const gf = await fusedRecurrentGlaBackward(
      flip(x.q),
      flip(x.k),
      flip(x.v),
      flip(x.gk),
      flip(x.dO),
    );
    for (const n of ['dq', 'dk', 'dv', 'dgk'] as const)
      expect(rel(g[n], flip(gf[n])), n).toBeLessThan(1e-6);
  });

  test('a decode step: T = 1 from the previous final state continues the sequence', async () => {
    const x = problem(1, 9, 2, 8, 8);
    const whole = await fusedRecurrentGla(x.q, x.k, x.v, x.gk, { outputFinalState: true });
    const first = await chunkGla(
      ...([x.q, x.k, x.v, x.gk].map((t) => t.slice(1, 0, 8)) as [Tensor, Tensor, Tensor, Tensor]),
      {
        outputFinalState: true,
      },
    );
    const step = await fusedRecurrentGla(
      ...([x.q, x.k, x.v, x.gk].map((t) => t.slice(1, 8, 9)) as [Tensor, Tensor, Tensor, Tensor]),
      {
        initialState: first.finalState!,
        outputFinalState: true,
      },
    );
    expect(rel(step.o, whole.o.slice(1, 8, 9))).toBeLessThan(1e-6);
    expect(rel(step.finalState!, whole.finalState!)).toBeLessThan(1e-6);
  });

  test.each([
    ['f16', 2e-3],
    ['bf16', 1e-2],
  ] as const)(
    '%s inputs: computed in f32, outputs in the input dtype, KERNELS.md bound %s',
    async (dtype, tol) => {
      const x = problem(1, 77, 2, 16, 8, dtype);
      const h0 = rng.randn([1, 2, 16, 8]);
      const options = { initialState: h0, outputFinalState: true, chunkSize: 16 };
      const ref = glaReference(x.q, x.k, x.v, x.gk, options);
      const refB = glaReferenceBackward(x.q, x.k, x.v, x.gk, x.dO, options);
      const r = await chunkGla(x.q, x.k, x.v, x.gk, options);
      const g = await chunkGlaBackward(x.q, x.k, x.v, x.gk, x.dO, options);
      expect([r.o.dtype, r.finalState!.dtype, g.dq.dtype, g.dgk.dtype, g.dh0!.dtype]).toEqual([
        dtype,
        'f32',
        dtype,
        dtype,
        'f32',
      ]);
      expect(rel(r.o, ref.o)).toBeLessThan(tol);
      expect(rel(r.finalState!, ref.finalState!)).toBeLessThan(2e-5);
      for (const n of ['dq', 'dk', 'dv', 'dgk'] as const)
        expect(rel(g[n], refB[n]), n).toBeLessThan(tol);
    },
  );

  test('f32 gates with f16 q, k, v: dgk in the gates dtype', async () => {
    const x = problem(1, 20, 1, 4, 4, 'f16');
    const g = await chunkGlaBackward(x.q, x.k, x.v, x.gk.astype('f32'), x.dO);
    expect([g.dq.dtype, g.dgk.dtype]).toEqual(['f16', 'f32']);
  });

  test('every output element is written (poisoned allocations), no final state unless asked', async () => {
    const x = problem(2, 41, 2, 8, 4);
    const acct = poisonAllocations();
    try {
      const r = await chunkGla(x.q, x.k, x.v, x.gk, { chunkSize: 16 });
      expect(r.finalState).toBeUndefined();
      const g = await chunkGlaBackward(x.q, x.k, x.v, x.gk, x.dO);
      const rr = await fusedRecurrentGla(x.q, x.k, x.v, x.gk);
      const gr = await fusedRecurrentGlaBackward(x.q, x.k, x.v, x.gk, x.dO);
      for (const t of [r.o, g.dq, g.dk, g.dv, g.dgk, rr.o, gr.dq, gr.dk, gr.dv, gr.dgk])
        expect(t.toFloat32Array().every(Number.isFinite)).toBe(true);
      expect(acct.count.output).toBe(10);
    } finally {
      acct.restore();
    }
  });

  test('empty problems: T = 0 gives an empty o and the final state h0; B = 0 nothing', async () => {
    const x = problem(1, 0, 2, 4, 3);
    const h0 = rng.randn([1, 2, 4, 3]);
    const r = await chunkGla(x.q, x.k, x.v, x.gk, { initialState: h0, outputFinalState: true });
    expect(r.o.shape).toEqual([1, 0, 2, 3]);
    expect(r.finalState!.toFloat64Array()).toEqual(h0.toFloat64Array());
    const e = problem(0, 5, 1, 2, 2);
    expect((await fusedRecurrentGla(e.q, e.k, e.v, e.gk)).o.shape).toEqual([0, 5, 1, 2]);
  });
});

describe('registry and dispatch', () => {
  test('family gla: ts forward and backward; cpu f32 picks ts; a webgpu tensor has no kernel yet', () => {
    const regs = registeredKernels({ family: GLA_FAMILY });
    expect(
      regs
        .filter((r) => r.backend === 'ts')
        .map((r) => r.pass)
        .sort(),
    ).toEqual(['backward', 'forward']);
    const ts = regs.find((r) => r.backend === 'ts' && r.pass === 'forward')!;
    expect(ts.outputs).toEqual(['o', 'ht']);
    const best = selectKernel({
      family: 'gla',
      pass: 'forward',
      device: 'cpu',
      dtype: 'f32',
      options: {},
    });
    expect(['ts', 'native']).toContain(best.backend);
  });

  test('a backend that is not registered is a ValueError naming backend', async () => {
    const x = problem(1, 4, 1, 2, 2);
    await expect(chunkGla(x.q, x.k, x.v, x.gk, { backend: 'cuda' })).rejects.toThrow(
      /^backend: expected one of .*ts.* for gla forward, got "cuda"/,
    );
  });
});

describe('bad input: typed errors naming the argument, the expected and what came', () => {
  const x = problem(1, 6, 2, 4, 3);
  const cases: [string, () => Promise<unknown>, typeof ValueError, RegExp][] = [
    [
      'a positive gate',
      () => chunkGla(x.q, x.k, x.v, Tensor.full([1, 6, 2, 4], 0.5)),
      ValueError,
      /^gk: expected finite log-space gates <= 0 \(gk = log alpha, a decay alpha in \(0, 1\]\), got 0\.5 at \[0, 0, 0, 0\]$/,
    ],
    [
      'a positive gate (recurrent backward)',
      () => {
        const g = x.gk.toFloat32Array();
        g[2 * 4 * 2 + 1 * 4 + 3] = 1e-3;
        return fusedRecurrentGlaBackward(x.q, x.k, x.v, Tensor.from(g, x.gk.shape), x.dO);
      },
      ValueError,
      /^gk: .* got 0\.00100\d* at \[0, 2, 1, 3\]$/,
    ],
    [
      'k of another K',
      () => chunkGla(x.q, rng.randn([1, 6, 2, 5]), x.v, x.gk),
      ShapeError,
      /^k: expected shape \[1, 6, 2, 4\] \[B, T, H, K\] \(as q\), got shape \[1, 6, 2, 5\]$/,
    ],
    [
      'v of another T',
      () => chunkGla(x.q, x.k, rng.randn([1, 5, 2, 3]), x.gk),
      ShapeError,
      /^v: expected shape \[1, 6, 2, V\] \(B, T, H as q\), got shape \[1, 5, 2, 3\]$/,
    ],
    [
      'chunkSize not a power of two',
      () => chunkGla(x.q, x.k, x.v, x.gk, { chunkSize: 24 }),
      ValueError,
      /^chunkSize: expected a power of two \(16, 32, 64, \.\.\.\), got 24$/,
    ],
    [
      'initialState of the wrong shape',
      () => chunkGla(x.q, x.k, x.v, x.gk, { initialState: Tensor.zeros([1, 2, 3, 4]) }),
      ShapeError,
      /^initialState: expected shape \[1, 2, 4, 3\] \[N, H, K, V\] \(N = B sequences\), got shape \[1, 2, 3, 4\]$/,
    ],
    [
      'initialState for a varlen batch of 2 sequences',
      () =>
        fusedRecurrentGla(x.q, x.k, x.v, x.gk, {
          cuSeqlens: [0, 2, 6],
          initialState: Tensor.zeros([1, 2, 4, 3]),
        }),
      ShapeError,
      /^initialState: expected shape \[2, 2, 4, 3\] \[N, H, K, V\] \(N = cuSeqlens.length - 1 sequences\)/,
    ],
    [
      'cuSeqlens past T',
      () => chunkGla(x.q, x.k, x.v, x.gk, { cuSeqlens: [0, 3, 7] }),
      ValueError,
      /^cuSeqlens: expected integers in \[0, T = 6\], got 7 at index 2$/,
    ],
    [
      'cuSeqlens not a list',
      () => chunkGla(x.q, x.k, x.v, x.gk, { cuSeqlens: 6 as never }),
      ValueError,
      /^cuSeqlens: expected an Int32Array or number\[\] of cumulative offsets, got 6$/,
    ],
    [
      'q of f64 and k of f32',
      () => chunkGla(x.q.astype('f64'), x.k, x.v, x.gk),
      DTypeError,
      /^k: expected dtype f64 \(as q\), got f32$/,
    ],
    [
      'a non-boolean outputFinalState',
      () => chunkGla(x.q, x.k, x.v, x.gk, { outputFinalState: 'yes' as never }),
      ValueError,
      /^outputFinalState: expected a boolean, got "yes"$/,
    ],
    [
      'options not an object',
      () => chunkGlaBackward(x.q, x.k, x.v, x.gk, x.dO, null as never),
      ValueError,
      /^options: expected an object, got null$/,
    ],
    [
      'dht of the wrong shape',
      () => chunkGlaBackward(x.q, x.k, x.v, x.gk, x.dO, { dht: Tensor.zeros([2, 2, 4, 3]) }),
      ShapeError,
      /^dht: expected shape \[1, 2, 4, 3\]/,
    ],
  ];
  test.each(cases)('%s', async (_name, run, Err, message) => {
    const e = await run().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(Err);
    expect((e as Error).message).toMatch(message);
  });

  test('a tensor on another device is a DeviceError naming it', async () => {
    const fake = Object.create(x.k, { device: { value: 'webgpu' } }) as Tensor;
    await expect(chunkGla(x.q, fake, x.v, x.gk)).rejects.toThrow(DeviceError);
    await expect(chunkGla(x.q, fake, x.v, x.gk)).rejects.toThrow(
      /^k: expected a tensor on cpu \(as q\), got one on webgpu$/,
    );
  });
});
