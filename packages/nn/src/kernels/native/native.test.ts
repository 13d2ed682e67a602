import { UnsupportedError } from '@attnkit/attention';
import { DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backendFor,
  deviceBackendOf,
  kernelsFor,
  registeredKernelNames,
  setDeviceBackend,
} from '../../dispatch.js';
import { exp } from '../../ops/elementwise.js';
import type { BinaryOp, Kernels, UnaryOp } from '../table.js';
import { tsKernels } from '../ts/index.js';
import { setOutputPoison } from './engine.js';
import { nativeKernels, registerNativeKernels } from './index.js';

// Every native kernel against the ts kernels (the spec) on the same f32 inputs, and against ts
// in float64 on the same values, over odd and broadcast shapes; outputs are NaN-poisoned before
// each engine call, so an element a kernel leaves unwritten fails the comparison.

const available = registerNativeKernels() === true;
const nk = nativeKernels;
const ts = tsKernels;

const rng = new Rng(1234);
const rand = (shape: number[], lo = -2, hi = 2) => {
  const t = rng.rand(shape);
  const d = t.data() as Float32Array;
  for (let i = 0; i < d.length; i++) d[i] = lo + (hi - lo) * d[i]!;
  return t;
};
const f64 = (t: Tensor) => t.astype('f64');
const ints = (values: number[], shape = [values.length]) =>
  Tensor.from(Int32Array.from(values), shape);

/** |a - b| <= atol + rtol |b| elementwise, same shape; NaN only where the reference has one. */
function expectClose(got: Tensor, want: Tensor, tol = { rtol: 2e-5, atol: 2e-6 }, what = '') {
  expect(got.shape, what).toEqual(want.shape);
  const g = got.toFloat64Array();
  const w = want.toFloat64Array();
  let worst = 0;
  let at = -1;
  for (let i = 0; i < w.length; i++) {
    if (Number.isNaN(w[i]!) || Number.isNaN(g[i]!)) {
      if (!(Number.isNaN(w[i]!) && Number.isNaN(g[i]!))) {
        worst = Number.POSITIVE_INFINITY;
        at = i;
      }
      continue;
    }
    if (w[i] === g[i]) continue;
    const err = Math.abs(g[i]! - w[i]!) / (tol.atol + tol.rtol * Math.abs(w[i]!));
    if (err > worst) [worst, at] = [err, i];
  }
  expect(worst, `${what} at ${at}: got ${g[at]}, want ${w[at]}`).toBeLessThanOrEqual(1);
}

/** A kernel on native (f32), ts (f32) and ts (f64 of the same values): all three agree. */
function agree<T>(
  name: string,
  call: (k: Kernels, cast: (t: Tensor) => Tensor) => T,
  pick: (r: T) => Tensor[],
  tol = { rtol: 2e-5, atol: 2e-6 },
) {
  const got = pick(call(nk, (t) => t));
  const ref = pick(call(ts, (t) => t));
  const ref64 = pick(call(ts, f64));
  got.forEach((g, i) => {
    expect(g.dtype, `${name}[${i}]`).toBe('f32');
    expectClose(g, ref[i]!, tol, `${name}[${i}] vs ts f32`);
    expectClose(
      g,
      ref64[i]!,
      { rtol: tol.rtol * 5, atol: tol.atol * 5 },
      `${name}[${i}] vs ts f64`,
    );
  });
}
const one = (t: Tensor) => [t];

describe.runIf(available)('native kernels vs ts', () => {
  beforeAll(() => setOutputPoison(true));
  afterAll(() => setOutputPoison(false));

  it('registers every kernel of the table', () => {
    expect(registeredKernelNames('native').sort()).toEqual(Object.keys(tsKernels).sort());
  });

  const shapes: [number[], number[]][] = [
    [
      [3, 5, 7],
      [3, 5, 7],
    ],
    [[3, 5, 7], [7]],
    [
      [3, 1, 7],
      [5, 1],
    ],
    [[1], [4, 33]],
    [
      [2, 3, 1, 5],
      [3, 4, 1],
    ],
    [[1037], [1037]],
  ];

  it('argmax equals ts (ties, -Infinity and NaN rows)', () => {
    const x = rand([7, 33]);
    const d = x.toFloat32Array();
    d.fill(d[5]!, 40, 50);
    d.fill(Number.NEGATIVE_INFINITY, 66, 99);
    d[100] = Number.NaN;
    const t = Tensor.from(d, [7, 33]);
    expect([...nk.argmax(t).toFloat64Array()]).toEqual([...tsKernels.argmax(t).toFloat64Array()]);
  });

  it('binary with broadcasting (and strided views as inputs)', () => {
    for (const op of ['add', 'sub', 'mul', 'div'] as BinaryOp[]) {
      for (const [sa, sb] of shapes) {
        const [a, b] = [rand(sa), rand(sb, 0.5, 2)];
        agree(`${op} ${sa} ${sb}`, (k, c) => k.binary(op, c(a), c(b)), one);
      }
      const a = rand([5, 6]).transpose(0, 1);
      const b = rand([7, 6, 5]).slice(0, 2, 5);
      agree(`${op} views`, (k, c) => k.binary(op, c(a), c(b)), one);
    }
  });

  it('unary forward and backward, affine', () => {
    for (const op of ['exp', 'log', 'relu', 'gelu', 'silu', 'sigmoid', 'tanh'] as UnaryOp[]) {
      for (const shape of [[3, 5, 7], [1], [1000, 17]]) {
        const x = op === 'log' ? rand(shape, 0.1, 5) : rand(shape, -6, 6);
        const dy = rand(shape);
        const tol = { rtol: 3e-5, atol: 3e-6 };
        agree(`${op} ${shape}`, (k, c) => k.unary(op, c(x)), one, tol);
        agree(
          `${op}' ${shape}`,
          (k, c) => k.unaryBackward(op, c(x), k.unary(op, c(x)), c(dy)),
          one,
          tol,
        );
      }
    }
    const x = rand([13, 9]);
    agree('affine', (k, c) => k.affine(c(x), -0.37, 1.5), one);
    // Non-finite scalars are data: inf and NaN propagate as on ts.
    expectClose(
      nk.affine(x, Number.POSITIVE_INFINITY, 0),
      ts.affine(x, Number.POSITIVE_INFINITY, 0),
    );
    expectClose(nk.affine(x, 1, Number.NaN), ts.affine(x, 1, Number.NaN));
  });

  it('sumTo, broadcastTo, maxTo and its backward', () => {
    const cases: [number[], number[]][] = [
      [[4, 6, 5], [5]],
      [
        [4, 6, 5],
        [4, 1, 1],
      ],
      [
        [4, 6, 5],
        [1, 6, 1],
      ],
      [[4, 6, 5], []],
      [
        [2, 3, 4, 5, 3],
        [3, 1, 5, 1],
      ],
    ];
    for (const [big, small] of cases) {
      const x = rand(big);
      agree(`sumTo ${big} -> ${small}`, (k, c) => k.sumTo(c(x), small), one);
      const s = rand(small);
      agree(`broadcastTo ${small} -> ${big}`, (k, c) => k.broadcastTo(c(s), big), one);
      // Ties: a coarse grid of values, so several elements share a group's maximum.
      const xt = Tensor.from(
        Float32Array.from(x.data() as Float32Array, (v) => Math.round(v * 2) / 2),
        big,
      );
      const dy = rand(small.length ? small : []);
      agree(`maxTo ${big} -> ${small}`, (k, c) => k.maxTo(c(xt), small), one);
      agree(
        `maxToBackward ${big} -> ${small}`,
        (k, c) => k.maxToBackward(c(xt), k.maxTo(c(xt), small), c(dy)),
        one,
      );
    }
  });

  it('matmul: transposes, batch broadcasting, odd sizes', () => {
    const cases: [number[], number[], boolean, boolean][] = [
      [[7, 5], [5, 3], false, false],
      [[5, 7], [5, 3], true, false],
      [[7, 5], [3, 5], false, true],
      [[5, 7], [3, 5], true, true],
      [[2, 3, 17, 33], [33, 65], false, false],
      [[2, 1, 17, 33], [3, 65, 33], false, true],
      [[4, 33, 17], [1, 33, 9], true, false],
      [[6, 129, 70], [6, 70, 31], false, false],
    ];
    for (const [sa, sb, ta, tb] of cases) {
      const [a, b] = [rand(sa), rand(sb)];
      agree(`matmul ${sa} ${sb} ${ta} ${tb}`, (k, c) => k.matmul(c(a), c(b), ta, tb), one, {
        rtol: 1e-4,
        atol: 1e-5,
      });
    }
  });

  it('softmax, logSoftmax and their backwards (incl. a fully masked row)', () => {
    for (const shape of [
      [3, 5, 7],
      [2, 300],
      [1, 1],
    ]) {
      const x = rand(shape, -8, 8);
      const dy = rand(shape);
      agree(`softmax ${shape}`, (k, c) => k.softmax(c(x)), one);
      agree(`logSoftmax ${shape}`, (k, c) => k.logSoftmax(c(x)), one);
      agree(`softmax' ${shape}`, (k, c) => k.softmaxBackward(k.softmax(c(x)), c(dy)), one);
      agree(
        `logSoftmax' ${shape}`,
        (k, c) => k.logSoftmaxBackward(k.logSoftmax(c(x)), c(dy)),
        one,
        {
          rtol: 3e-5,
          atol: 1e-5,
        },
      );
    }
    const masked = Tensor.from(Float32Array.of(-Infinity, -Infinity, 1, 2), [2, 2]);
    expectClose(nk.softmax(masked), ts.softmax(masked));
  });

  it('layerNorm and rmsNorm with and without affine parameters, forward and backward', () => {
    for (const [rows, cols] of [
      [7, 33],
      [64, 384],
      [3, 1],
      [0, 5],
    ] as const) {
      const x = rand([rows, cols], -3, 3);
      const dy = rand([rows, cols]);
      const [w, b] = [rand([cols]), rand([cols])];
      for (const affine of [true, false]) {
        const W = affine ? w : null;
        const B = affine ? b : null;
        agree(
          `layerNorm ${rows}x${cols} ${affine}`,
          (k, c) => k.layerNorm(c(x), W && c(W), B && c(B), 1e-5),
          (r) => [r.y, r.mean, r.rstd],
          { rtol: 1e-4, atol: 1e-5 },
        );
        agree(
          `layerNorm' ${rows}x${cols} ${affine}`,
          (k, c) => {
            const f = k.layerNorm(c(x), W && c(W), B && c(B), 1e-5);
            return k.layerNormBackward(c(x), W && c(W), f.mean, f.rstd, c(dy));
          },
          (r) => [r.dx, r.dweight, r.dbias],
          { rtol: 1e-4, atol: 1e-4 },
        );
        agree(
          `rmsNorm ${rows}x${cols} ${affine}`,
          (k, c) => k.rmsNorm(c(x), W && c(W), 1e-6),
          (r) => [r.y, r.rstd],
          { rtol: 1e-4, atol: 1e-5 },
        );
        agree(
          `rmsNorm' ${rows}x${cols} ${affine}`,
          (k, c) => {
            const f = k.rmsNorm(c(x), W && c(W), 1e-6);
            return k.rmsNormBackward(c(x), W && c(W), f.rstd, c(dy));
          },
          (r) => [r.dx, r.dweight],
          { rtol: 1e-4, atol: 1e-4 },
        );
      }
    }
  });

  it('gather / scatterAdd (repeated ids) and crossEntropy with ignoreIndex', () => {
    const w = rand([11, 6]);
    const ids = ints([3, 0, 10, 3, 3, 7], [2, 3]);
    agree('gather', (k, c) => k.gather(c(w), ids), one);
    const dy = rand([2, 3, 6]);
    agree('scatterAdd', (k, c) => k.scatterAdd(ids, c(dy), 11), one);

    const logits = rand([9, 13], -5, 5);
    const targets = ints([1, -100, 12, 0, 5, 5, -100, 3, 7]);
    agree(
      'crossEntropy',
      (k, c) => k.crossEntropy(c(logits), targets, -100),
      (r) => [r.loss, r.lse.slice(0, 0, 1)],
    );
    for (const [k, c] of [
      [nk, (t: Tensor) => t],
      [ts, (t: Tensor) => t],
    ] as const)
      expect(k.crossEntropy(c(logits), targets, -100).count).toBe(7);
    const dl = Tensor.from(Float32Array.of(1.7), []);
    agree(
      'crossEntropyBackward',
      (k, c) => {
        const f = k.crossEntropy(c(logits), targets, -100);
        return k.crossEntropyBackward(c(logits), targets, f.lse, c(dl), -100, f.count);
      },
      one,
    );
    const none = ints(new Array(9).fill(-1));
    expect(nk.crossEntropy(logits, none, -1).loss.data()[0]).toBe(0);
  });

  it('rope (1D with offset positions, 3 sections, inverse), shape ops', () => {
    const x = rand([2, 3, 7, 10]);
    const pos = (n: number, off: number) => Float64Array.from({ length: n }, (_, i) => i + off);
    agree('rope 1D', (k, c) => k.rope(c(x), [{ dim: 8, positions: pos(7, 5) }], 10000, false), one);
    const sections = [
      { dim: 2, positions: pos(7, 0) },
      { dim: 4, positions: pos(7, 3) },
      { dim: 4, positions: pos(7, 1) },
    ];
    agree('rope 3D inverse', (k, c) => k.rope(c(x), sections, 100, true), one);

    agree('permute', (k, c) => k.permute(c(x), [3, 0, 2, 1]), one);
    agree('permute of a view', (k, c) => k.permute(c(x).slice(2, 1, 6), [2, 1, 0, 3]), one);
    agree('slice', (k, c) => k.slice(c(x), 2, 2, 5), one);
    agree('slice last dim', (k, c) => k.slice(c(x), 3, 3, 10), one);
    const dy = rand([2, 3, 3, 10]);
    agree('sliceBackward', (k, c) => k.sliceBackward(c(dy), [2, 3, 7, 10], 2, 4), one);
    const parts = [rand([2, 1, 5]), rand([2, 4, 5]), rand([2, 2, 5])];
    agree('concat dim 1', (k, c) => k.concat(parts.map(c), 1), one);
    agree('concat dim 0', (k, c) => k.concat([c(x), c(x)], 0), one);
    agree('reshape', (k, c) => k.reshape(c(x), [6, 70]), one);
    agree('full', (k) => k.full([3, 5], -1.25, 'f32'), one);
    // The dropout mask is the host Rng's stream on both backends: the same seed, the same mask.
    const mask = (k: Kernels) => k.dropoutMask([7, 9], 0.3, new Rng(42), 'f32').toFloat32Array();
    expect([...mask(nk)]).toEqual([...mask(ts)]);
  });

  it('optimizer steps: sgd (momentum, nesterov) and adamw', () => {
    const [p, g, m, v] = [rand([37, 5]), rand([37, 5]), rand([37, 5]), rand([37, 5], 0, 1)];
    const h = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 3 };
    agree(
      'adamw',
      (k, c) => k.adamwStep(c(p), c(g), c(m), c(v), h),
      (r) => [r.p, r.m, r.v],
    );
    for (const sgd of [
      { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0.01, nesterov: false },
      { lr: 0.1, momentum: 0.9, dampening: 0.1, weightDecay: 0, nesterov: true },
    ]) {
      agree(
        'sgd first',
        (k, c) => k.sgdStep(c(p), c(g), null, sgd),
        (r) => [r.p, ...(r.buf ? [r.buf] : [])],
      );
      if (sgd.momentum)
        agree(
          'sgd',
          (k, c) => k.sgdStep(c(p), c(g), c(m), sgd),
          (r) => [r.p, r.buf!],
        );
    }
    const big = rand([70001]);
    expect(nk.sumSquares(big)).toBeCloseTo(ts.sumSquares(big), 1);
    expect(Math.abs(nk.sumSquares(big) / ts.sumSquares(big) - 1)).toBeLessThan(1e-6);
  });

  it('attention (flash, sigmoid) forward and backward, causal, GQA, odd lengths', () => {
    for (const [b, hq, hkv, nq, nkv, d, causal] of [
      [2, 4, 2, 37, 37, 16, true],
      [1, 3, 3, 20, 45, 8, false],
    ] as const) {
      const q = rand([b, hq, nq, d], -1, 1);
      const kk = rand([b, hkv, nkv, d], -1, 1);
      const v = rand([b, hkv, nkv, d], -1, 1);
      const dO = rand([b, hq, nq, d], -1, 1);
      for (const opts of [
        { family: 'flash', causal },
        { family: 'sigmoid', causal },
        { family: 'sigmoid', causal, sigmoidBias: -0.7 },
      ]) {
        const run = (k: Kernels) => {
          const f = k.attention(q, kk, v, opts);
          const g = k.attentionBackward(q, kk, v, f.o, f.lse, dO, opts);
          return [f.o, f.lse, g.dq, g.dk, g.dv];
        };
        const got = run(nk);
        const want = run(ts);
        // Sigmoid has no LSE: undefined on both.
        expect(got[1] === undefined, `${opts.family} lse`).toBe(opts.family === 'sigmoid');
        for (const [i, t] of got.entries())
          if (t) expectClose(t, want[i]!, { rtol: 1e-4, atol: 1e-5 }, `${opts.family} ${i}`);
      }
    }
  });

  it('attention with paged K/V (flash, sigmoid with its default per-sequence bias) equals ts', () => {
    const [b, h, hkv, d, pageSize] = [2, 4, 2, 16, 8];
    const paged = {
      pageSize,
      blockTable: Int32Array.from([4, 1, -1, 0, 5, 2]),
      lengths: Int32Array.from([11, 20]),
    };
    const kp = rand([6, pageSize, hkv, d], -1, 1);
    const vp = rand([6, pageSize, hkv, d], -1, 1);
    for (const nq of [1, 3]) {
      const q = rand([b, h, nq, d], -1, 1);
      for (const family of ['flash', 'sigmoid']) {
        const opts = { family, causal: true, paged };
        expectClose(
          nk.attention(q, kp, vp, opts).o,
          ts.attention(q, kp, vp, opts).o,
          { rtol: 1e-4, atol: 1e-5 },
          `paged ${family}, nq ${nq}`,
        );
      }
    }
  });

  it('f64 tensors run on the ts kernels (exactly their results)', () => {
    const a = f64(rand([3, 4]));
    const b = f64(rand([4, 5]));
    const got = nk.matmul(a, b, false, false);
    expect(got.dtype).toBe('f64');
    expect([...got.toFloat64Array()]).toEqual([...ts.matmul(a, b, false, false).toFloat64Array()]);
  });

  it('bad input: typed errors naming the op and argument', () => {
    const x = rand([2, 3]);
    expect(() => nk.matmul(x, rand([4, 2]), false, false)).toThrow(ShapeError);
    expect(() => nk.matmul(x, rand([4, 2]), false, false)).toThrow(/^matmul: inner dims differ/);
    expect(() => nk.binary('add', x, rand([4]))).toThrow(ShapeError);
    expect(() => nk.sumTo(x, [4])).toThrow(ShapeError);
    expect(() => nk.gather(rand([4, 3]), ints([0, 4]))).toThrow(ValueError);
    expect(() => nk.gather(rand([4, 3]), ints([0, 4]))).toThrow(
      /^embedding: ids expected entries in \[0, 3\], got 4 at 1/,
    );
    expect(() => nk.scatterAdd(ints([0, -1]), rand([2, 3]), 4)).toThrow(ValueError);
    expect(() => nk.crossEntropy(rand([2, 3]), ints([0, 3]), -100)).toThrow(
      /^crossEntropy: targets expected/,
    );
    expect(() => nk.gather(rand([4, 3]), Tensor.from(Float32Array.of(0), [1]))).toThrow(ValueError);
    expect(() => nk.layerNorm(x, rand([2]), null, 1e-5)).toThrow(
      /^layerNorm: weight expected \[3\]/,
    );
    expect(() => nk.concat([x, rand([2, 4])], 0)).toThrow(/^concat: xs\[1\] is \[2, 4\]/);
    expect(() => nk.unary('exp', Tensor.from(Int32Array.of(1), [1]))).toThrow(DTypeError);
    // Broadcasting that alternates over more than 8 dims does not merge into nn.map's 8.
    const alt = (first: number) => Array.from({ length: 10 }, (_, i) => ((i + first) % 2 ? 2 : 1));
    expect(() => nk.binary('add', rand(alt(0)), rand(alt(1)))).toThrow(UnsupportedError);
    expect(() => nk.binary('add', rand(alt(0)), rand(alt(1)))).toThrow(
      /^add: backend 'native' walks at most 8 dims that do not merge/,
    );
    expect(() =>
      nk.attention(rand([1, 1, 2, 4]), rand([1, 1, 2, 4]), rand([1, 1, 2, 4]), {
        family: 'hyper',
      }),
    ).toThrow(UnsupportedError);
  });
});

describe.runIf(available)('choosing the native backend', () => {
  it('cpu tensors run on native once the engine loads; setDeviceBackend forces ts and back', () => {
    const x = rand([2, 3]);
    expect(deviceBackendOf('cpu')).toBe('native');
    expect(backendFor('exp', [x])).toBe('native');
    const half = Tensor.from([1, 2], [2], 'f16');
    expect(() => exp(half)).toThrow(/^exp: backend 'native' takes f32/);
    setDeviceBackend('cpu', 'ts');
    try {
      expect(backendFor('exp', [x])).toBe('ts');
      expect(() => exp(half)).toThrow(/^exp: backend 'ts' takes f32 or f64/);
    } finally {
      setDeviceBackend('cpu', 'native');
    }
    expect(backendFor('exp', [x])).toBe('native');
  });

  it('a kernel the native table lacks is an UnsupportedError naming op and backend', () => {
    const k = kernelsFor('myOp', 'native') as unknown as Record<string, unknown>;
    expect(() => k.fusedThing).toThrow(UnsupportedError);
    expect(() => k.fusedThing).toThrow(/^myOp: backend 'native' has no 'fusedThing' kernel/);
  });
});
