import { loadNativeBackend, nativeEngine } from '@attnkit/skeleton';
import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { describe, expect, it, vi } from 'vitest';
import { AngularLsh, grayCode, grayRank, sortByBucket } from './index.js';

const popcount = (x: number): number => {
  let n = 0;
  for (let y = x >>> 0; y; y &= y - 1) n++;
  return n;
};

describe('Gray order', () => {
  it('grayRank inverts grayCode and neighbouring ranks differ in exactly one bit', () => {
    for (let r = 0; r < 1 << 12; r++) {
      expect(grayRank(grayCode(r))).toBe(r);
      expect(grayCode(grayRank(r))).toBe(r);
      if (r > 0) expect(popcount(grayCode(r) ^ grayCode(r - 1))).toBe(1);
    }
    expect(grayRank(grayCode(2 ** 30 - 1))).toBe(2 ** 30 - 1);
    // The exact mapping (documented in lsh.ts): ranks 0..7 hold codes 0 1 3 2 6 7 5 4.
    expect([0, 1, 2, 3, 4, 5, 6, 7].map(grayCode)).toEqual([0, 1, 3, 2, 6, 7, 5, 4]);
  });
});

describe('AngularLsh', () => {
  const D = 16;

  it('gives each row the Gray rank of its sign pattern against the hyperplanes', () => {
    const lsh = new AngularLsh({ numProjections: 5, dim: D, seed: 3 });
    const x = new Rng(4).randn([40, D]);
    const got = lsh.buckets(x);
    const X = x.toFloat64Array();
    for (let i = 0; i < 40; i++) {
      let code = 0;
      for (let p = 0; p < 5; p++) {
        let dot = 0;
        for (let c = 0; c < D; c++) dot += X[i * D + c]! * lsh.projections[p * D + c]!;
        if (dot > 0) code |= 1 << p;
      }
      expect(got[i]).toBe(grayRank(code));
    }
  });

  it('puts identical rows (and positive multiples: the hash is angular) in one bucket', () => {
    const rng = new Rng(5);
    const base = new Float32Array(D);
    rng.fillNormal(base);
    const rows = new Float32Array(6 * D);
    for (let r = 0; r < 6; r++)
      for (let c = 0; c < D; c++) rows[r * D + c] = base[c]! * (r < 3 ? 1 : 2 ** r);
    const lsh = new AngularLsh({ numProjections: 8, dim: D, seed: rng.int(0, 1e9) });
    const b = lsh.buckets(Tensor.from(rows, [6, D]));
    expect(new Set(b).size).toBe(1);
    // The opposite row lands in the opposite cell: every bit flipped (ties aside).
    const neg = lsh.buckets(
      Tensor.from(
        base.map((x) => -x),
        [1, D],
      ),
    );
    expect(grayCode(neg[0]!) ^ grayCode(b[0]!)).toBe(2 ** 8 - 1);
  });

  it('is deterministic for a seed and differs between seeds', () => {
    const x = new Rng(6).randn([2, 3, 50, D]);
    const a = new AngularLsh({ numProjections: 7, dim: D, seed: 11 }).sort(x);
    const b = new AngularLsh({ numProjections: 7, dim: D, seed: 11 }).sort(x);
    const c = new AngularLsh({ numProjections: 7, dim: D, seed: 12 }).sort(x);
    expect(a.buckets).toEqual(b.buckets);
    expect(a.perm).toEqual(b.perm);
    expect(a.buckets).not.toEqual(c.buckets);
    // An rng argument advances that generator (the same draws as a seed's own Rng).
    const rng = new Rng(11);
    expect(new AngularLsh({ numProjections: 7, dim: D, rng }).sort(x).perm).toEqual(a.perm);
  });

  it('sorts each (batch, head) stably by bucket: a permutation with non-decreasing buckets', () => {
    const [B, H, N] = [2, 3, 77];
    const x = new Rng(7).randn([B, H, N, D], 'f16');
    const { buckets, perm } = new AngularLsh({ numProjections: 4, dim: D, seed: 1 }).sort(x);
    expect(buckets.length).toBe(B * H * N);
    for (let s = 0; s < B * H; s++) {
      const p = perm.subarray(s * N, (s + 1) * N);
      expect([...p].sort((a, b) => a - b)).toEqual([...Array(N).keys()]);
      for (let i = 1; i < N; i++) {
        const prev = buckets[s * N + p[i - 1]!]!;
        const cur = buckets[s * N + p[i]!]!;
        expect(prev <= cur).toBe(true);
        if (prev === cur) expect(p[i - 1]! < p[i]!).toBe(true);
      }
    }
  });

  it('hashRowsWith (dot products on a GEMM in f32) gives the buckets of hashRows bit for bit', async () => {
    await loadNativeBackend();
    const engine = nativeEngine();
    // A GEMM in f32 that sums in the reverse order (another rounding than the engine's), and
    // the engine's own GEMM and nn.sumSquares when the addon loads.
    const f32 = {
      gemm: (m: number, a: Float32Array, b: Float32Array, c: Float32Array) => {
        const [np, d] = [c.length / m, a.length / m];
        for (let i = 0; i < m; i++)
          for (let p = 0; p < np; p++) {
            let s = 0;
            for (let e = d - 1; e >= 0; e--)
              s = Math.fround(s + Math.fround(a[i * d + e]! * b[p * d + e]!));
            c[i * np + p] = s;
          }
      },
      sumSquares: (m: number, a: Float32Array, out: Float32Array) => {
        const d = a.length / m;
        for (let i = 0; i < m; i++) {
          let s = 0;
          for (let e = 0; e < d; e++) s += a[i * d + e]! ** 2;
          out[i] = s;
        }
      },
    };
    const kernels = [['f32 reverse', f32] as const];
    if (engine) {
      kernels.push([
        'engine',
        {
          gemm: (m, a, b, c) =>
            engine.runSync(
              'gemm',
              { m, n: b.length / (a.length / m), k: a.length / m, transB: true },
              { a, b },
              { c },
            ),
          sumSquares: (m, a, out) =>
            engine.runSync(
              'nn.sumSquares',
              { count: a.length, chunks: m },
              { x: a },
              { partials: out },
            ),
        },
      ] as const);
    }
    const seed = Math.floor(Math.random() * 2 ** 31);
    const rng = new Rng(seed);
    for (const [d, np] of [
      [16, 5],
      [128, 7],
      [64, 9],
    ] as const) {
      const lsh = new AngularLsh({ numProjections: np, dim: d, seed: rng.int(0, 1e9) });
      const rows = 300;
      const x = new Float32Array(rows * d);
      rng.fillNormal(x);
      // Rows on a hyperplane (their dot with it is rounding noise around 0: the cases where f32
      // and f64 can disagree), a zero row, a NaN row and an infinite row.
      for (let i = 0; i < 40; i++) {
        const p = i % np;
        const r = lsh.projections.subarray(p * d, (p + 1) * d);
        let xr = 0;
        let rr = 0;
        for (let c = 0; c < d; c++) {
          xr += x[i * d + c]! * r[c]!;
          rr += r[c]! ** 2;
        }
        for (let c = 0; c < d; c++) x[i * d + c] = x[i * d + c]! - (xr / rr) * r[c]!;
      }
      x.fill(0, 40 * d, 41 * d);
      x[41 * d + 3] = Number.NaN;
      x[42 * d + 1] = Number.POSITIVE_INFINITY;
      const want = lsh.hashRows(x, 0, rows, new Int32Array(rows));
      for (const [name, k] of kernels) {
        const spy = vi.spyOn(lsh, 'hashRows');
        const got = lsh.hashRowsWith(k, x, rows, new Int32Array(rows));
        // The rows near a plane and the non-finite ones went to the f64 path, the rest not.
        const redone = spy.mock.calls.length;
        spy.mockRestore();
        expect([...got], `${name} d ${d} (seed ${seed})`).toEqual([...want]);
        expect(redone, `${name} d ${d}: rows hashed again (seed ${seed})`).toBeGreaterThanOrEqual(
          43,
        );
        expect(redone, `${name} d ${d}: rows hashed again (seed ${seed})`).toBeLessThan(60);
      }
    }
  });

  it('sortByBucket equals a stable comparison sort for every digit count (P up to 30)', () => {
    const rng = new Rng(8);
    for (const P of [1, 7, 8, 9, 17, 30]) {
      const n = 500;
      const bucket = new Int32Array(n);
      // Few distinct values so ties (stability) matter.
      const values = Array.from({ length: 9 }, () => rng.int(0, 2 ** P));
      for (let i = 0; i < n; i++) bucket[i] = values[rng.int(0, values.length)]!;
      const ids = new Int32Array(n);
      for (let i = 0; i < n; i++) ids[i] = (i * 37) % n;
      const want = [...ids].sort((a, b) => bucket[a]! - bucket[b]!);
      expect([...sortByBucket(ids, bucket, P)]).toEqual(want);
    }
  });

  it('rejects bad options with typed errors naming the argument', () => {
    for (const [opts, arg] of [
      [{ numProjections: 0, dim: 4 }, 'numProjections'],
      [{ numProjections: 31, dim: 4 }, 'numProjections'],
      [{ numProjections: 2.5, dim: 4 }, 'numProjections'],
      [{ numProjections: 3, dim: 0 }, 'dim'],
      [{ numProjections: 3, dim: 4, seed: 0.5 }, 'seed'],
      [{ numProjections: 3, dim: 4, rng: {} }, 'rng'],
    ] as const) {
      expect(() => new AngularLsh(opts as never)).toThrow(
        expect.objectContaining({ name: 'ValueError', argument: arg }),
      );
    }
    const lsh = new AngularLsh({ numProjections: 3, dim: 4 });
    expect(() => lsh.buckets(Tensor.zeros([5, 3]))).toThrow(
      expect.objectContaining({ name: 'ShapeError', argument: 'x' }),
    );
    expect(() => lsh.buckets(Tensor.zeros([5, 4], 'i32'))).toThrow(
      expect.objectContaining({ name: 'DTypeError', argument: 'x' }),
    );
    expect(() => sortByBucket(new Int32Array(1), [0], 0)).toThrow(ValueError);
    const k = { gemm: () => {}, sumSquares: () => {} };
    const x = new Float32Array(5 * 4);
    for (const [call, arg] of [
      [
        () => lsh.hashRowsWith({ gemm: k.gemm } as never, x, 5, new Int32Array(5)),
        'kernels.sumSquares',
      ],
      [() => lsh.hashRowsWith(null as never, x, 5, new Int32Array(5)), 'kernels.gemm'],
      [() => lsh.hashRowsWith(k, x, -1, new Int32Array(5)), 'rows'],
      [() => lsh.hashRowsWith(k, x, 2.5, new Int32Array(5)), 'rows'],
      [() => lsh.hashRowsWith(k, x, 6, new Int32Array(6)), 'data'],
      [() => lsh.hashRowsWith(k, new Float64Array(20) as never, 5, new Int32Array(5)), 'data'],
      [() => lsh.hashRowsWith(k, x, 5, new Int32Array(4)), 'out'],
    ] as const) {
      expect(call).toThrow(expect.objectContaining({ name: 'ValueError', argument: arg }));
    }
  });
});
