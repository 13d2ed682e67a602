import { glaReference, glaReferenceBackward } from '@attnkit/linear-attention';
import { DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import {
  expectTypedError as expectError,
  poisonAllocations,
  relL2,
  webGpuTestContext,
} from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, it } from 'vitest';
import { Var } from '../autograd.js';
import { deviceBackendOf, setDeviceBackend } from '../dispatch.js';
import { gradcheck } from '../gradcheck.js';
import { registerNativeKernels } from '../kernels/native/index.js';
import { registerWebGpuKernels } from '../kernels/webgpu/index.js';
import { type GlaOptions, gla } from './gla.js';
import { sum } from './reduce.js';

// The gla op against @attnkit/linear-attention's float64 reference (forward and backward), on
// each cpu backend and on webgpu, with poisoned kernel outputs; f64 gradients against central
// differences (gradcheck); the typed errors.

const rng = new Rng(0x61a);
const cpuBackend = deviceBackendOf('cpu')!;
afterAll(() => setDeviceBackend('cpu', cpuBackend));

type Dt = 'f32' | 'f64';

/** Fresh random inputs; gates logsigmoid(z) (some strong: -8) so the products span decades. */
function problem(B: number, T: number, H: number, K: number, V: number, dtype: Dt = 'f32') {
  const z = rng.randn([B, T, H, K], 'f64').toFloat64Array();
  const g = z.map((x, i) => (i % 7 === 3 ? -8 : -Math.log1p(Math.exp(-x))));
  return {
    q: rng.randn([B, T, H, K], dtype),
    k: rng.randn([B, T, H, K], dtype),
    v: rng.randn([B, T, H, V], dtype),
    gk: Tensor.from(g, [B, T, H, K], 'f64').astype(dtype),
    h0: rng.randn([B, H, K, V], dtype),
    dO: rng.randn([B, T, H, V], dtype),
  };
}

const rel = (a: Tensor, b: Tensor) => relL2(a.toFloat64Array(), b.toFloat64Array());

/** Forward and backward through the op (leaves requiring grad), on the cpu backend in force. */
function run(x: ReturnType<typeof problem>, options: GlaOptions) {
  const vars = [x.q, x.k, x.v, x.gk].map((t) => new Var(t, true));
  const [q, k, v, gk] = vars as [Var, Var, Var, Var];
  const r = gla(q, k, v, gk, options);
  r.o.backward(x.dO);
  return {
    o: r.o.data,
    finalState: r.finalState,
    dq: q.grad!,
    dk: k.grad!,
    dv: v.grad!,
    dgk: gk.grad!,
  };
}

const SHAPES: [number, number, number, number, number][] = [
  [1, 1, 1, 1, 1],
  [2, 67, 2, 8, 5], // T > the chunk size (64) and not a multiple of it, K != V
  [1, 33, 3, 4, 6],
  [3, 9, 1, 5, 3],
];
const FORMS = ['chunk', 'recurrent'] as const;
const GRADS = ['dq', 'dk', 'dv', 'dgk'] as const;

function checkAgainstReference(backend: 'ts' | 'native', tol: number) {
  setDeviceBackend('cpu', backend);
  for (const [B, T, H, K, V] of SHAPES)
    for (const form of FORMS)
      for (const withState of [false, true]) {
        const x = problem(B, T, H, K, V);
        const label = `${backend} ${form} [${B}, ${T}, ${H}, ${K}, ${V}] h0 ${withState}`;
        const options: GlaOptions = { form, outputFinalState: true };
        if (withState) options.initialState = x.h0;
        const acct = poisonAllocations();
        let got: ReturnType<typeof run>;
        try {
          got = run(x, options);
        } finally {
          acct.restore();
        }
        // The kernels wrote into poisoned (NaN) arrays: every output came through them.
        expect(acct.count.output, label).toBeGreaterThanOrEqual(6);
        const refOptions = { initialState: withState ? x.h0 : undefined, outputFinalState: true };
        const ref = glaReference(x.q, x.k, x.v, x.gk, refOptions);
        const refB = glaReferenceBackward(x.q, x.k, x.v, x.gk, x.dO, refOptions);
        expect(got.o.dtype, label).toBe('f32');
        expect([...got.o.shape], label).toEqual([B, T, H, V]);
        expect([...got.finalState!.shape], label).toEqual([B, H, K, V]);
        expect(rel(got.o, ref.o), `${label} o`).toBeLessThan(tol);
        expect(rel(got.finalState!, ref.finalState!), `${label} finalState`).toBeLessThan(tol);
        for (const n of GRADS) expect(rel(got[n], refB[n]), `${label} ${n}`).toBeLessThan(tol);
      }
}

describe('gla on the ts backend', () => {
  it('forward, final state and dq, dk, dv, dgk equal the float64 reference (f32)', () => {
    // linear-attention's own tolerance for its chunked f32 kernels (toleranceFor chunked).
    checkAgainstReference('ts', 2e-5);
  });

  it('f64 inputs run in f64: equal to the reference to 1e-10, final state in f64', () => {
    setDeviceBackend('cpu', 'ts');
    const x = problem(2, 70, 2, 3, 4, 'f64');
    for (const form of FORMS) {
      const got = run(x, { form, initialState: x.h0, outputFinalState: true });
      const opts = { initialState: x.h0, outputFinalState: true };
      const ref = glaReference(x.q, x.k, x.v, x.gk, opts);
      const refB = glaReferenceBackward(x.q, x.k, x.v, x.gk, x.dO, opts);
      expect(got.o.dtype).toBe('f64');
      expect(got.finalState!.dtype).toBe('f64');
      expect(rel(got.o, ref.o), form).toBeLessThan(1e-10);
      expect(rel(got.finalState!, ref.finalState!), form).toBeLessThan(1e-10);
      for (const n of GRADS) expect(rel(got[n], refB[n]), `${form} ${n}`).toBeLessThan(1e-10);
    }
  });

  it('gradients match central differences of the op itself (gradcheck, f64), with a scale', () => {
    setDeviceBackend('cpu', 'ts');
    const x = problem(1, 5, 2, 3, 2, 'f64');
    for (const form of FORMS)
      for (const initialState of [undefined, x.h0]) {
        const res = gradcheck(
          (q, k, v, gk) => gla(q!, k!, v!, gk!, { form, scale: 0.7, initialState }).o,
          [x.q, x.k, x.v, x.gk],
        );
        expect(res.worst, `${form} h0 ${!!initialState} at ${JSON.stringify(res.at)}`).toBeLessThan(
          1,
        );
      }
  });

  it('the initial state changes the gradients (the backward reads it)', () => {
    setDeviceBackend('cpu', 'ts');
    const x = problem(1, 6, 1, 3, 2);
    const a = run(x, { initialState: x.h0 });
    const b = run(x, {});
    expect(rel(a.dq, b.dq)).toBeGreaterThan(1e-2);
    expect(rel(a.dgk, b.dgk)).toBeGreaterThan(1e-2);
  });

  it('chunk and recurrent forms agree; no final state unless asked; only Vars get gradients', () => {
    setDeviceBackend('cpu', 'ts');
    const x = problem(1, 20, 2, 4, 4);
    const c = gla(x.q, x.k, x.v, x.gk);
    const r = gla(x.q, x.k, x.v, x.gk, { form: 'recurrent' });
    expect(c.finalState).toBeUndefined();
    expect(c.o.requiresGrad).toBe(false);
    expect(rel(c.o.data, r.o.data)).toBeLessThan(2e-5);
    const q = new Var(x.q, true);
    const o = gla(q, x.k, x.v, x.gk, { outputFinalState: true });
    sum(o.o).backward();
    expect(q.grad).not.toBeNull();
    expect([...q.grad!.shape]).toEqual([1, 20, 2, 4]);
  });
});

describe.runIf(registerNativeKernels() === true)('gla on the native backend', () => {
  it('equals the float64 reference at the ts tolerance, on poisoned outputs', () => {
    checkAgainstReference('native', 2e-5);
  });

  it('equals the ts backend on the same inputs (forward, state, every gradient)', () => {
    const x = problem(2, 100, 2, 16, 8);
    const options: GlaOptions = { initialState: x.h0, outputFinalState: true };
    setDeviceBackend('cpu', 'native');
    const n = run(x, options);
    setDeviceBackend('cpu', 'ts');
    const t = run(x, options);
    for (const name of ['o', 'finalState', ...GRADS] as const)
      expect(rel(n[name]!, t[name]!), name).toBeLessThan(2e-5);
  });

  it('f64 runs on the ts kernels (the engine is f32)', () => {
    setDeviceBackend('cpu', 'native');
    const x = problem(1, 4, 1, 2, 2, 'f64');
    const r = gla(x.q, x.k, x.v, x.gk, { outputFinalState: true });
    expect(r.o.dtype).toBe('f64');
    expect(rel(r.o.data, glaReference(x.q, x.k, x.v, x.gk).o)).toBeLessThan(1e-10);
  });

  it('a positive gate is the ValueError naming gk, as on ts', () => {
    setDeviceBackend('cpu', 'native');
    const x = problem(1, 3, 1, 2, 2);
    const g = x.gk.toFloat32Array();
    g[3] = 0.5;
    expect(() => gla(x.q, x.k, x.v, Tensor.from(g, x.gk.shape))).toThrow(
      expect.objectContaining({ name: 'ValueError', argument: 'gk' }),
    );
  });
});

describe('gla errors (before any work)', () => {
  setDeviceBackend('cpu', 'ts');
  const x = problem(2, 5, 2, 3, 4);

  it('shapes: ShapeError naming the argument, what was expected and what came', () => {
    expectError(
      () => gla(x.q.reshape([2, 5, 6]), x.k, x.v, x.gk),
      ShapeError,
      'q',
      /rank 4.*got \[2, 5, 6\]/,
    );
    expectError(
      () => gla(x.q, x.k.slice(1, 0, 4), x.v, x.gk),
      ShapeError,
      'k',
      /\[2, 5, 2, 3\] \(as q\), got \[2, 4, 2, 3\]/,
    );
    expectError(
      () => gla(x.q, x.k, x.v, x.gk.slice(0, 0, 1)),
      ShapeError,
      'gk',
      /got \[1, 5, 2, 3\]/,
    );
    expectError(
      () => gla(x.q, x.k, x.v.slice(2, 0, 1), x.gk),
      ShapeError,
      'v',
      /\[2, 5, 2, V\].*got \[2, 5, 1, 4\]/,
    );
    expectError(
      () => gla(x.q, x.k, x.v, x.gk, { initialState: x.h0.slice(0, 0, 1) }),
      ShapeError,
      'initialState',
      /\[2, 2, 3, 4\].*got \[1, 2, 3, 4\]/,
    );
  });

  it('options: ValueError naming the option', () => {
    expectError(
      () => gla(x.q, x.k, x.v, x.gk, { form: 'fused' as 'chunk' }),
      ValueError,
      'form',
      /'chunk' or 'recurrent', got/,
    );
    expectError(
      () => gla(x.q, x.k, x.v, x.gk, { scale: Number.NaN }),
      ValueError,
      'scale',
      /finite/,
    );
    expectError(
      () => gla(x.q, x.k, x.v, x.gk, { outputFinalState: 1 as unknown as boolean }),
      ValueError,
      'outputFinalState',
      /boolean/,
    );
    expectError(
      () => gla(x.q, x.k, x.v, x.gk, { initialState: new Var(x.h0, true) as unknown as Tensor }),
      ValueError,
      'initialState',
      /a Tensor.*got a Var/,
    );
    expectError(
      () => gla(x.q, x.k, x.v, x.gk, { chunkSize: 16 } as GlaOptions),
      ValueError,
      'options.chunkSize',
      /unknown option/,
    );
    expectError(
      () => gla(x.q, x.k, x.v, x.gk, null as unknown as GlaOptions),
      ValueError,
      'options',
      /an object/,
    );
    expectError(
      () => gla(x.q, x.k, x.v, 3 as unknown as Tensor),
      ValueError,
      'gk',
      /a Var or Tensor/,
    );
  });

  it('dtypes: one float dtype over q, k, v, gk (DTypeError); gates must be <= 0 (ValueError gk)', () => {
    expect(() => gla(x.q, x.k, x.v.astype('f64'), x.gk)).toThrow(DTypeError);
    const g = x.gk.toFloat32Array();
    g[7] = 1e-3;
    expectError(
      () => gla(x.q, x.k, x.v, Tensor.from(g, x.gk.shape)),
      ValueError,
      'gk',
      /<= 0.*got 0\.001/,
    );
    g[7] = Number.NEGATIVE_INFINITY;
    expectError(() => gla(x.q, x.k, x.v, Tensor.from(g, x.gk.shape)), ValueError, 'gk', /finite/);
  });
});

const ctx = await webGpuTestContext();
if (ctx) registerWebGpuKernels(ctx);

describe.runIf(ctx !== undefined)('gla on webgpu (llvmpipe here: small shapes)', () => {
  it('equals the ts backend: o, final state and every gradient, both forms, h0 on and off', async () => {
    for (const [B, T, H, K, V] of [
      [1, 5, 2, 4, 3],
      [2, 19, 1, 8, 8],
    ] as const)
      for (const form of FORMS)
        for (const withState of [false, true]) {
          const x = problem(B, T, H, K, V);
          const label = `webgpu ${form} [${B}, ${T}, ${H}, ${K}, ${V}] h0 ${withState}`;
          setDeviceBackend('cpu', 'ts');
          const want = run(x, {
            form,
            outputFinalState: true,
            ...(withState ? { initialState: x.h0 } : {}),
          });
          const up = (t: Tensor) => toWebGpu(t, ctx!);
          const vars = [x.q, x.k, x.v, x.gk].map((t) => new Var(up(t), true));
          const [q, k, v, gk] = vars as [Var, Var, Var, Var];
          const r = gla(q, k, v, gk, {
            form,
            outputFinalState: true,
            ...(withState ? { initialState: up(x.h0) } : {}),
          });
          expect(r.o.device, label).toBe('webgpu');
          r.o.backward(up(x.dO));
          const got = {
            o: await r.o.data.toCpu(),
            finalState: await r.finalState!.toCpu(),
            dq: await q.grad!.toCpu(),
            dk: await k.grad!.toCpu(),
            dv: await v.grad!.toCpu(),
            dgk: await gk.grad!.toCpu(),
          };
          for (const name of ['o', 'finalState', ...GRADS] as const)
            expect(rel(got[name], want[name]!), `${label} ${name}`).toBeLessThan(1e-4);
        }
  });
});
