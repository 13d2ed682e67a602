import { Rng } from '@attnkit/tensor';
import { engineOrSkip, expectClose, poisoned } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { loadNative, type NativeEngine } from './index.js';

const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];

interface Gemm {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  alpha: number;
  beta: number;
  lda: number;
  ldb: number;
  ldc: number;
}

function filled(rng: Rng, n: number): Float32Array {
  const x = new Float32Array(n);
  rng.fillNormal(x);
  return x;
}

/** Float64 C = alpha op(A) op(B) + beta C, straight from the definition. */
function naive(g: Gemm, a: Float32Array, b: Float32Array, c: Float32Array): Float64Array {
  const out = Float64Array.from(c);
  for (let i = 0; i < g.m; i++) {
    for (let j = 0; j < g.n; j++) {
      let s = 0;
      for (let p = 0; p < g.k; p++) {
        const x = g.transA ? a[p * g.lda + i]! : a[i * g.lda + p]!;
        const y = g.transB ? b[j * g.ldb + p]! : b[p * g.ldb + j]!;
        s += x * y;
      }
      const at = i * g.ldc + j;
      out[at] = g.alpha * s + (g.beta === 0 ? 0 : g.beta * c[at]!);
    }
  }
  return out;
}

describe.runIf(base)('GEMM vs a float64 loop, every ISA', () => {
  const rng = new Rng(99);
  const cases: Gemm[] = [];
  for (const [m, n, k] of [
    [1, 1, 1],
    [7, 13, 5],
    [37, 45, 129],
    [130, 67, 300],
    [300, 517, 260],
    [5, 700, 33],
  ] as const) {
    for (const [transA, transB] of [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ] as const) {
      const pad = rng.int(0, 3);
      cases.push({
        m,
        n,
        k,
        transA,
        transB,
        alpha: rng.uniform() < 0.5 ? 1 : 0.75,
        beta: pick(rng),
        lda: (transA ? m : k) + pad,
        ldb: (transB ? k : n) + pad,
        ldc: n + pad,
      });
    }
  }
  test.each(
    cases.map(
      (g) =>
        [
          `${g.m}x${g.n}x${g.k} ${g.transA ? 'T' : 'N'}${g.transB ? 'T' : 'N'} beta ${g.beta} ld+${g.ldc - g.n}`,
          g,
        ] as const,
    ),
  )('%s', async (_name, g) => {
    const a = filled(rng, (g.transA ? g.k : g.m) * g.lda);
    const b = filled(rng, (g.transB ? g.n : g.k) * g.ldb);
    const c0 = g.beta === 0 ? poisoned(g.m * g.ldc) : filled(rng, g.m * g.ldc);
    const ref = naive(g, a, b, c0);
    for (const e of engines) {
      const c = c0.slice();
      await e.gemm({ ...g, a, b, c });
      // Only the m x n window is written: the padding columns keep their values.
      const window = (x: ArrayLike<number>) =>
        Array.from({ length: g.m * g.n }, (_, t) => x[Math.floor(t / g.n) * g.ldc + (t % g.n)]!);
      expectClose(window(c), window(ref), 1e-5, `${e.isa} C`);
      for (let i = 0; i < g.m; i++)
        for (let j = g.n; j < g.ldc; j++)
          expect(Object.is(c[i * g.ldc + j], c0[i * g.ldc + j])).toBe(true);
    }
  });

  test('k = 0 or alpha = 0 scales C by beta; the gemm shorthand is run("gemm")', async () => {
    const e = base!;
    const c = Float32Array.from([1, 2, 3, 4]);
    await e.gemm({
      m: 2,
      n: 2,
      k: 0,
      a: new Float32Array(0),
      b: new Float32Array(0),
      c,
      beta: 0.5,
    });
    expect([...c]).toEqual([0.5, 1, 1.5, 2]);
    const a = filled(rng, 64 * 80);
    const b = filled(rng, 80 * 96);
    const c1 = poisoned(64 * 96);
    const c2 = poisoned(64 * 96);
    await e.run('gemm', { m: 64, n: 96, k: 80 }, { a, b }, { c: c1 });
    await e.gemm({ m: 64, n: 96, k: 80, a, b, c: c2 });
    expect(c2).toEqual(c1);
  });
});

function pick(rng: Rng): number {
  return [0, 1, -0.5][rng.int(0, 3)]!;
}
