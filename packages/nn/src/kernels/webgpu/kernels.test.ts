import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { createWebGpuContext, toWebGpu } from '@attnkit/webgpu';
import { describe, expect, it } from 'vitest';
import type { Var } from '../../autograd.js';
import { noGrad, Param } from '../../autograd.js';
import { addLayerNorm } from '../../ops/nn.js';
import type { Kernels, UnaryOp } from '../table.js';
import { tsKernels } from '../ts/index.js';
import {
  copyIntoWebGpu,
  readWebGpuNow,
  registerWebGpuKernels,
  syncWebGpu,
  webGpuQueueStats,
  webgpuKernels,
} from './index.js';
import { simtBuffers, simtPlan, simtProgram, simtTile, skinnyProgram } from './matmul.js';
import {
  emulateTensorCores,
  splitK,
  stagedBuffers,
  stagedBytes,
  stagedMaxR,
  TC_BK,
  tensorCorePlan,
} from './matmul-tc.js';
import { memoProgram } from './program.js';
import { output, type QueuedStorage } from './queue.js';
import { rowsLayout, rowsPlan, setRowsGridX } from './reduce.js';
import { positionsKey } from './shape.js';

// Every webgpu kernel against the ts kernel in float64 on the same (storage-rounded) inputs,
// on random odd shapes, with poisoned (NaN-filled) outputs: an element a kernel forgets to
// write fails the comparison.

const ctx = await webGpuTestContext();
if (ctx) registerWebGpuKernels(ctx);
const gpu = webgpuKernels as Kernels;
const ts = tsKernels;

type Dt = 'f32' | 'f16';
const rng = new Rng(1234);

function rand(shape: readonly number[], lo = -1, hi = 1): Tensor {
  const u = rng.rand(shape).toFloat64Array();
  return Tensor.from(
    u.map((x) => lo + (hi - lo) * x),
    shape,
    'f64',
  );
}
/** The values as the storage holds them (f16 rounds), in f64 for the reference. */
const rounded = (t: Tensor, dt: Dt) =>
  (dt === 'f32' ? t.astype('f32') : t.astype('f16')).astype('f64');
const up = (t: Tensor, dt: Dt) => toWebGpu(t.dtype === 'i32' ? t : t.astype(dt), ctx!);
const ids = (shape: readonly number[], hi: number) =>
  Tensor.from(
    Int32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.int(0, hi)),
    shape,
  );

async function close(got: Tensor, want: Tensor, tol: number, label: string) {
  expect(got.device, label).toBe('webgpu');
  expect([...got.shape], label).toEqual([...want.shape]);
  const g = (await got.toCpu()).toFloat64Array();
  const w = want.toFloat64Array();
  let worst = 0;
  let at = -1;
  for (let i = 0; i < w.length; i++) {
    const d = Math.abs(g[i]! - w[i]!) / (1 + Math.abs(w[i]!));
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  expect(worst, `${label}: worst at ${at}: got ${g[at]}, want ${w[at]}`).toBeLessThanOrEqual(tol);
}

const TOL: Record<Dt, number> = { f32: 2e-5, f16: 4e-3 };

describe('matmul plans', () => {
  it('splits a long K under few output tiles (weight gradients), never a short K or a full grid', () => {
    // GPT-2 small's weight gradients at B 8, T 1024 (K = 8192): 36 and 144 tiles of 128.
    expect(splitK(36, 8192, 8)).toEqual({ splits: 16, kLen: 512 });
    expect(splitK(144, 8192, 8)).toEqual({ splits: 4, kLen: 2048 });
    expect(splitK(264, 8192, 8)).toEqual({ splits: 1, kLen: 8192 });
    expect(splitK(36, 2047, 8)).toEqual({ splits: 1, kLen: 2047 });
    // An odd K: slices of whole K steps, the last one short, none empty.
    const odd = splitK(1, 2085, 8);
    expect(odd.kLen % 8).toBe(0);
    expect(odd.splits).toBe(Math.ceil(2085 / odd.kLen));
    expect((odd.splits - 1) * odd.kLen).toBeLessThan(2085);
    expect(odd.kLen).toBeGreaterThanOrEqual(512);
    expect(simtPlan(768, 768, 8192, 1)).toEqual({ tile: 128, splits: 16, kLen: 512 });
    expect(simtPlan(8192, 768, 768, 1)).toEqual({ tile: 128, splits: 1, kLen: 768 });
    expect(simtPlan(768, 768, 768, 1)).toEqual({ tile: 64, splits: 1, kLen: 768 });
    expect(tensorCorePlan(768, 3072, 8192, 1)).toEqual({ r: 4, splits: 4, kLen: 2048 });
    expect(tensorCorePlan(8192, 768, 768, 1)).toEqual({ r: 4, splits: 1, kLen: 768 });
  });

  it('SIMT tiles of 128 only with a full wave of workgroups; tensor-core tiles by 16s', () => {
    expect(simtTile(8192, 768, 1)).toBe(128);
    expect(simtTile(768, 768, 1)).toBe(64);
    expect(simtTile(130, 129, 40)).toBe(128);
    expect(tensorCorePlan(8192, 768, 768, 1)?.r).toBe(4);
    // A long K under few tiles: the largest R with K split (below), not a smaller R.
    expect(tensorCorePlan(768, 768, 8192, 1)?.r).toBe(4);
    expect(tensorCorePlan(768, 768, 768, 1)?.r).toBe(2);
    expect(tensorCorePlan(64, 64, 64, 1)?.r).toBe(1);
    expect(tensorCorePlan(64, 64, 60, 1)).toBeUndefined();
    expect(tensorCorePlan(48, 64, 64, 1)).toBeUndefined();
  });

  it('staged tensor-core tiles: two buffers where workgroup memory holds them, K slices of whole steps', () => {
    // The H200's 48 KiB: R 4 with two buffers in every layout (40 KiB of tiles + 4 KiB epilogue).
    for (const [ta, tb] of [
      [false, false],
      [false, true],
      [true, false],
      [true, true],
    ] as const) {
      expect(stagedBuffers(4, ta, tb, 49152)).toBe(2);
      expect(stagedMaxR(ta, tb, 49152)).toBe(4);
      // WebGPU's default 16 KiB: R 2, one buffer.
      expect(stagedMaxR(ta, tb, 16384)).toBe(2);
      expect(stagedBuffers(2, ta, tb, 16384)).toBe(1);
    }
    expect(stagedBytes(4, false, true, 2)).toBe(2 * 2 * 128 * 40 * 2 + 4096);
    expect(stagedBytes(4, true, false, 2)).toBe(2 * 2 * 32 * 136 * 2 + 4096);
    expect(stagedMaxR(false, false, 4096)).toBe(0);
    // A K slice of the staged kernel is a multiple of its step (32), the last one shorter.
    const p = tensorCorePlan(768, 768, 8208, 1, { step: TC_BK, maxR: 4 })!;
    expect(p.kLen % TC_BK).toBe(0);
    expect(p.splits).toBe(Math.ceil(8208 / p.kLen));
    expect(tensorCorePlan(8192, 768, 768, 1, { maxR: 2 })?.r).toBe(2);
  });

  it('programs are built once per source and reused (the pipeline cache finds the object)', () => {
    const a = simtProgram(false, true, 'f32', 'f32', 'f32', 64);
    expect(simtProgram(false, true, 'f32', 'f32', 'f32', 64)).toBe(a);
    expect(simtProgram(false, true, 'f32', 'f32', 'f32', 128)).not.toBe(a);
    expect(skinnyProgram(true, false, 'f16', 'f32')).toBe(skinnyProgram(true, false, 'f16', 'f32'));
    let made = 0;
    const make = () => {
      made++;
      return { code: 'x', bindings: [] };
    };
    const key = `test ${Math.random()}`;
    expect(memoProgram(key, make)).toBe(memoProgram(key, make));
    expect(made).toBe(1);
  });
});

describe('rope table keys', () => {
  it('runs by start and step, anything else by a hash of its values', () => {
    expect(positionsKey(Float64Array.from({ length: 1024 }, (_, i) => i))).toBe('a1024:0:1');
    expect(positionsKey(Float64Array.of(8191))).toBe('a1:8191:0');
    expect(positionsKey(Float64Array.of(3, 5, 7))).toBe('a3:3:2');
    const a = positionsKey(Float64Array.of(4, 0, 6, 1));
    expect(a).toMatch(/^h4:[0-9a-f]+$/);
    expect(positionsKey(Float64Array.of(4, 0, 6, 1))).toBe(a);
    expect(positionsKey(Float64Array.of(4, 0, 1, 6))).not.toBe(a);
    expect(positionsKey(new Float64Array(0))).toBe('n0');
  });
});

describe('row reductions', () => {
  it('layouts: [N] or [B, N] kept with N contiguous and one reduced dim of stride N', () => {
    const k = (shape: number[], strides: number[]) => ({ shape, strides: [strides] });
    expect(rowsLayout(k([768], [1]), k([8192], [768]))).toEqual({ b: 1, r: 8192, n: 768 });
    expect(rowsLayout(k([4, 36], [180, 1]), k([5], [36]))).toEqual({ b: 4, r: 5, n: 36 });
    // Row sums (kept stride != 1), two reduced dims, a gap between batches: the general kernel.
    expect(rowsLayout(k([21], [5]), k([5], [1]))).toBeUndefined();
    expect(rowsLayout(k([8], [1]), k([3, 2], [16, 8]))).toBeUndefined();
    expect(rowsLayout(k([4, 36], [200, 1]), k([5], [36]))).toBeUndefined();
  });

  it('plans: the fewest lanes that fill the GPU, rows in chunks only where it stays part-idle', () => {
    // Split-K partials of a 768 x 2304 weight gradient: one pass, 4 lanes, 4 columns a thread.
    expect(rowsPlan({ b: 1, r: 8, n: 768 * 2304 })).toEqual({
      vec: 4,
      lanes: 4,
      gx: 6912,
      chunks: 1,
      per: 8,
    });
    // A bias gradient over B T = 8192 rows of 768: 64 lanes, 48 workgroups, 6 chunks of rows.
    expect(rowsPlan({ b: 1, r: 8192, n: 768 })).toEqual({
      vec: 4,
      lanes: 64,
      gx: 48,
      chunks: 6,
      per: 1366,
    });
    // Its second pass: 6 rows take 16 lanes (no more than the rows need), one chunk.
    expect(rowsPlan({ b: 1, r: 6, n: 768 })).toMatchObject({ lanes: 16, chunks: 1, per: 6 });
    // Odd N: a column a thread.
    expect(rowsPlan({ b: 1, r: 300, n: 33 })).toMatchObject({ vec: 1, lanes: 64, chunks: 1 });
    // More column blocks than a grid dimension: walked grid-stride (the LM head's split-K
    // partials, 768 x 50257 columns: 150,771 blocks of 256 columns).
    expect(rowsPlan({ b: 1, r: 8, n: 768 * 50257 })).toMatchObject({ gx: 150771, chunks: 1 });
    // Chunks or B past 65535: undefined (the general kernel).
    expect(rowsPlan({ b: 70000, r: 2, n: 4 })).toBeUndefined();
  });
});

describe('SIMT staging buffers', () => {
  it('two alternating buffers only where workgroup memory holds both padded sets', () => {
    // WebGPU's default 16 KiB is just short of two sets (2 x 8,448 and 2 x 8,704 bytes).
    expect(simtBuffers(128, 16384)).toBe(1);
    expect(simtBuffers(64, 16384)).toBe(1);
    expect(simtBuffers(128, 16896)).toBe(2);
    expect(simtBuffers(64, 16896)).toBe(1);
    expect(simtBuffers(64, 32768)).toBe(2);
  });

  it.skipIf(!ctx)(
    'on a device with the default 16 KiB the one-buffer kernel runs, and agrees',
    async () => {
      const small = await createWebGpuContext({ limits: 'default', features: [] });
      try {
        registerWebGpuKernels(small);
        for (const [sa, sb, ta, tb] of [
          [[129, 80], [80, 65], false, false],
          [[40, 37, 130], [37, 129], true, false],
          [[40, 130, 37], [129, 37], false, true],
        ] as [number[], number[], boolean, boolean][]) {
          const a = rand(sa);
          const b = rand(sb);
          await close(
            gpu.matmul(toWebGpu(a.astype('f32'), small), toWebGpu(b.astype('f32'), small), ta, tb),
            ts.matmul(rounded(a, 'f32'), rounded(b, 'f32'), ta, tb),
            TOL.f32 * Math.sqrt(80),
            `matmul [${sa}]${ta ? '^T' : ''} [${sb}]${tb ? '^T' : ''} at 16 KiB`,
          );
        }
      } finally {
        registerWebGpuKernels(ctx!);
        small.destroy();
      }
    },
  );
});

describe.skipIf(!ctx)('registerWebGpuKernels options', () => {
  it('a non-boolean option is a ValueError naming it, and changes nothing', () => {
    for (const name of [
      'tensorCores',
      'splitK',
      'encodeEagerly',
      'reuseBindings',
      'sharePasses',
      'fuseLinear',
    ])
      expect(() => registerWebGpuKernels(ctx!, { [name]: 'yes' } as never)).toThrow(
        expect.objectContaining({
          name: 'ValueError',
          argument: `options.${name}`,
          message: expect.stringMatching(`options.${name} expected a boolean, got`),
        }),
      );
    expect(() => registerWebGpuKernels(ctx!, { stageTensorCores: 'some' } as never)).toThrow(
      expect.objectContaining({
        argument: 'options.stageTensorCores',
        message: expect.stringMatching("expected a boolean or 'unsplit', got"),
      }),
    );
    expect(() => registerWebGpuKernels(ctx!, { stageTensorCores: 'unsplit' })).not.toThrow();
    expect(() => registerWebGpuKernels(ctx!, null as never)).toThrow(/options expected an object/);
    registerWebGpuKernels(ctx!);
  });

  it('sharePasses: passes that share a compute pass, ended before each copy, give what a pass each gives', async () => {
    const x = toWebGpu(rand([3, 40]).astype('f32'), ctx!);
    const results: number[][] = [];
    for (const sharePasses of [true, false]) {
      registerWebGpuKernels(ctx!, { sharePasses });
      try {
        await syncWebGpu(ctx!);
        // exp, a copy of it into a buffer the next pass reads, then two more passes.
        const a = gpu.unary('exp', x);
        const dst = gpu.binary('mul', x, x);
        copyIntoWebGpu(dst, 7, a, 3, 50);
        const y = gpu.binary('add', gpu.unary('tanh', dst), a);
        results.push([...(await y.toCpu()).toFloat64Array()]);
      } finally {
        registerWebGpuKernels(ctx!);
      }
    }
    const [xs, ex] = [(await x.toCpu()).toFloat64Array(), [] as number[]];
    for (let i = 0; i < xs.length; i++) {
      const d = i >= 7 && i < 57 ? Math.fround(Math.exp(xs[i - 4]!)) : xs[i]! * xs[i]!;
      ex.push(Math.tanh(d) + Math.exp(xs[i]!));
    }
    expect(results[0]).toEqual(results[1]);
    for (const [i, v] of results[0]!.entries()) expect(v, `element ${i}`).toBeCloseTo(ex[i]!, 4);
  });
});

describe.skipIf(!ctx)('nn webgpu kernels vs ts (float64)', () => {
  for (const dt of ['f32', 'f16'] as const) {
    const tol = TOL[dt];
    it(`${dt}: full, affine, binary with broadcasting, broadcastTo`, async () => {
      await close(gpu.full([3, 5], 0.25, dt), ts.full([3, 5], 0.25, 'f64'), tol, 'full');
      const x = rand([3, 7, 5]);
      await close(
        gpu.affine(up(x, dt), -1.5, 0.5),
        ts.affine(rounded(x, dt), -1.5, 0.5),
        tol,
        'affine',
      );
      const shapes: [number[], number[]][] = [
        [
          [3, 7, 5],
          [3, 7, 5],
        ],
        [[3, 7, 5], [5]],
        [
          [3, 1, 5],
          [7, 1],
        ],
        [[1], [2, 3]],
        [
          [4, 1, 3, 1],
          [1, 5, 1, 2],
        ],
      ];
      for (const [sa, sb] of shapes)
        for (const op of ['add', 'sub', 'mul', 'div'] as const) {
          const a = rand(sa);
          const b = rand(sb, 0.5, 2);
          await close(
            gpu.binary(op, up(a, dt), up(b, dt)),
            ts.binary(op, rounded(a, dt), rounded(b, dt)),
            2 * tol,
            `${op} [${sa}] [${sb}]`,
          );
        }
      const s = rand([3, 1, 5]);
      await close(
        gpu.broadcastTo(up(s, dt), [2, 3, 4, 5]),
        ts.broadcastTo(rounded(s, dt), [2, 3, 4, 5]),
        tol,
        'broadcastTo',
      );
    });

    it(`${dt}: unary forward and backward`, async () => {
      for (const op of ['exp', 'log', 'relu', 'gelu', 'silu', 'sigmoid', 'tanh'] as UnaryOp[]) {
        const x = op === 'log' ? rand([5, 9], 0.2, 3) : rand([5, 9], -4, 4);
        const dy = rand([5, 9]);
        const [xg, xr] = [up(x, dt), rounded(x, dt)];
        const yg = gpu.unary(op, xg);
        const yr = ts.unary(op, xr);
        await close(yg, yr, 2 * tol, op);
        // The backward gets the same y on both sides (the rounded reference).
        await close(
          gpu.unaryBackward(op, xg, up(yr, dt), up(dy, dt)),
          ts.unaryBackward(op, xr, rounded(yr, dt), rounded(dy, dt)),
          4 * tol,
          `${op} backward`,
        );
      }
    });

    it(`${dt}: sumTo, maxTo and its backward`, async () => {
      const cases: [number[], number[]][] = [
        [[3, 7, 5], [5]],
        [
          [3, 7, 5],
          [3, 1, 1],
        ],
        [
          [3, 7, 5],
          [3, 7, 1],
        ],
        [
          [3, 7, 5],
          [1, 7, 1],
        ],
        [[300, 33], [33]],
        [
          [2, 3000],
          [2, 1],
        ],
        // The rows kernel (reduce.ts rowsPlan): 4 columns a thread, chunks of rows summed by
        // a second pass, a batch of [R, N] (split-K partials), few rows, odd N.
        [[2000, 12], [12]],
        [[3, 700, 20], [20]],
        [
          [3, 5, 36],
          [3, 1, 36],
        ],
        [
          [2, 3, 1, 8],
          [2, 1, 1, 8],
        ],
        [[1100, 7], [7]],
      ];
      for (const [sx, sk] of cases) {
        const x = rand(sx);
        const [xg, xr] = [up(x, dt), rounded(x, dt)];
        const red = sx.reduce((a, b) => a * b, 1) / sk.reduce((a, b) => a * b, 1);
        await close(
          gpu.sumTo(xg, sk),
          ts.sumTo(xr, sk),
          tol * Math.sqrt(red),
          `sumTo [${sx}] -> [${sk}]`,
        );
        const keep = [...new Array(sx.length - sk.length).fill(1), ...sk];
        const yr = ts.maxTo(xr, keep);
        await close(gpu.maxTo(xg, keep), yr, tol, `maxTo [${sx}] -> [${keep}]`);
        const dy = rand(keep);
        await close(
          gpu.maxToBackward(xg, up(yr, dt), up(dy, dt)),
          ts.maxToBackward(xr, rounded(yr, dt), rounded(dy, dt)),
          tol,
          `maxTo backward [${sx}]`,
        );
      }
      // Column blocks walked grid-stride (as past 65535 blocks): a grid of 2 blocks in x.
      try {
        setRowsGridX(2);
        for (const [sx, sk] of [
          [[40, 3000], [3000]],
          [[3, 50, 1001], [1001]],
        ] as [number[], number[]][]) {
          const x = rand(sx);
          const rows = sx.reduce((a, b) => a * b, 1) / sk[0]!;
          await close(
            gpu.sumTo(up(x, dt), sk),
            ts.sumTo(rounded(x, dt), sk),
            tol * Math.sqrt(rows),
            `sumTo [${sx}] -> [${sk}], 2 blocks a grid`,
          );
          await close(
            gpu.maxTo(up(x, dt), [...new Array(sx.length - 1).fill(1), ...sk]),
            ts.maxTo(rounded(x, dt), [...new Array(sx.length - 1).fill(1), ...sk]),
            tol,
            `maxTo [${sx}], 2 blocks a grid`,
          );
        }
      } finally {
        setRowsGridX(undefined);
      }
      // Ties: the gradient goes to the first maximal element only.
      const tie = Tensor.from(Float64Array.of(1, 3, 3, 2, 2, 0), [2, 3], 'f64');
      const y = ts.maxTo(tie, [2, 1]);
      const dy = Tensor.from(Float64Array.of(5, 7), [2, 1], 'f64');
      await close(
        gpu.maxToBackward(up(tie, dt), up(y, dt), up(dy, dt)),
        ts.maxToBackward(tie, y, dy),
        0,
        'ties',
      );
    });

    it(`${dt}: matmul (transposes, batch broadcasting, odd sizes)`, async () => {
      const cases: [number[], number[], boolean, boolean][] = [
        [[67, 33], [33, 70], false, false],
        [[33, 67], [33, 70], true, false],
        [[67, 33], [71, 33], false, true],
        [[33, 67], [71, 33], true, true],
        [[2, 3, 17, 9], [9, 13], false, false],
        [[3, 1, 17, 9], [2, 13, 9], false, true],
        [[1, 4, 5], [5, 2, 4, 3], true, false],
        [[129, 80], [80, 65], false, false],
        // Enough workgroups for the 128 x 128 tiles (simtTile).
        [[40, 130, 20], [20, 129], false, false],
        [[40, 20, 130], [129, 20], true, true],
        // ... with the other transposes, over several K steps (the staging buffers alternate).
        [[40, 37, 130], [37, 129], true, false],
        [[40, 130, 37], [129, 37], false, true],
        // At most SKINNY_MAX_M rows: the skinny kernel (decoding), every transpose, K past the
        // lanes and not a multiple of them, batches broadcast, N not a multiple of the columns.
        [[1, 100], [301, 100], false, true],
        [[3, 1001], [1001, 67], false, false],
        [[1001, 3], [1001, 67], true, false],
        [[200, 8], [67, 200], true, true],
        [[2, 3, 8, 37], [3, 129, 37], false, true],
        [[4, 1, 1, 5], [2, 5, 70], false, false],
        [[1, 7], [7, 1], false, false],
        // K split in slices (splitK): a weight gradient's shape, odd sizes, a batch broadcast.
        [[2085, 13], [2085, 11], true, false],
        [[2, 9, 2100], [2100, 17], false, false],
        [[2100, 10], [19, 2100], true, true],
      ];
      for (const [sa, sb, ta, tb] of cases) {
        const a = rand(sa);
        const b = rand(sb);
        const k = ta ? sa[sa.length - 2]! : sa[sa.length - 1]!;
        await close(
          gpu.matmul(up(a, dt), up(b, dt), ta, tb),
          ts.matmul(rounded(a, dt), rounded(b, dt), ta, tb),
          tol * Math.sqrt(k),
          `matmul [${sa}]${ta ? '^T' : ''} [${sb}]${tb ? '^T' : ''}`,
        );
      }
    });

    it(`${dt}: softmax, logSoftmax and their backward`, async () => {
      for (const shape of [
        [3, 7, 5],
        [4, 300],
        [2, 1],
      ]) {
        const x = rand(shape, -5, 5);
        const dy = rand(shape);
        const xr = rounded(x, dt);
        for (const [f, b] of [
          ['softmax', 'softmaxBackward'],
          ['logSoftmax', 'logSoftmaxBackward'],
        ] as const) {
          const yr = ts[f](xr);
          await close(gpu[f](up(x, dt)), yr, 2 * tol, `${f} [${shape}]`);
          await close(
            gpu[b](up(yr, dt), up(dy, dt)),
            ts[b](rounded(yr, dt), rounded(dy, dt)),
            4 * tol,
            `${b} [${shape}]`,
          );
        }
      }
      const masked = Tensor.from(Float64Array.of(-Infinity, -Infinity, 1, 2), [2, 2], 'f64');
      await close(gpu.softmax(up(masked, dt)), ts.softmax(masked), tol, 'softmax of a masked row');
    });

    it(`${dt}: addLayerNorm equals binary add then layerNorm (f32 bitwise: one fused pass), with and without affine; other shapes are a ShapeError naming r`, async () => {
      for (const [shape, affine] of [
        [[3, 7, 33], true],
        [[5, 300], false],
        [[1, 768], true],
      ] as const) {
        const c = shape[shape.length - 1]!;
        const [x, r] = [up(rand(shape, -2, 3), dt), up(rand(shape, -1, 1), dt)];
        const w = affine ? up(rand([c]), dt) : null;
        const b = affine ? up(rand([c]), dt) : null;
        await syncWebGpu(ctx!);
        const passes = webGpuQueueStats(ctx!).passes;
        const fused = gpu.addLayerNorm!(x, r, w, b, 1e-5);
        await syncWebGpu(ctx!);
        if (dt === 'f32') expect(webGpuQueueStats(ctx!).passes - passes, 'one pass').toBe(1);
        const sum = gpu.binary('add', x, r);
        const ln = gpu.layerNorm(sum, w, b, 1e-5);
        const [fs, fy, ws, wy] = await Promise.all(
          [fused.sum, fused.y, sum, ln.y].map(async (t) => (await t.toCpu()).toFloat64Array()),
        );
        expect(fused.sum.dtype).toBe(dt);
        expect(
          fs.findIndex((v, i) => !Object.is(v, ws[i])),
          `${shape} sum`,
        ).toBe(-1);
        expect(
          fy.findIndex((v, i) => !Object.is(v, wy[i])),
          `${shape} y`,
        ).toBe(-1);
        // And what ts computes in float64, at the kernels' tolerance.
        const want = ts.layerNorm(
          ts.binary('add', (await x.toCpu()).astype('f64'), (await r.toCpu()).astype('f64')),
          w && (await w.toCpu()).astype('f64'),
          b && (await b.toCpu()).astype('f64'),
          1e-5,
        );
        await close(fused.y, want.y, 8 * tol, 'addLayerNorm y');
      }
      expect(() =>
        gpu.addLayerNorm!(up(rand([2, 4]), dt), up(rand([2, 5]), dt), null, null, 1e-5),
      ).toThrow(expect.objectContaining({ name: 'ShapeError', argument: 'r' }));
    });

    it(`${dt}: nn's addLayerNorm op takes the fused kernel where no gradient is recorded, add + layerNorm where one is, with the same values`, async () => {
      const [x, y, w, b] = [[4, 96], [4, 96], [96], [96]].map((s) => up(rand(s), dt));
      await syncWebGpu(ctx!);
      const count = async (f: () => unknown) => {
        const before = webGpuQueueStats(ctx!).passes;
        const out = f();
        await syncWebGpu(ctx!);
        return { out, passes: webGpuQueueStats(ctx!).passes - before };
      };
      const inference = await count(() => noGrad(() => addLayerNorm(x!, y!, w, b)));
      const wp = new Param(w!);
      const recorded = await count(() => addLayerNorm(x!, y!, wp, b));
      const [a, c] = [inference.out, recorded.out] as { sum: Var; normed: Var }[];
      expect(c!.normed.requiresGrad).toBe(true);
      expect(a!.normed.requiresGrad).toBe(false);
      if (dt === 'f32') expect([inference.passes, recorded.passes]).toEqual([1, 2]);
      for (const k of ['sum', 'normed'] as const) {
        const [u, v] = await Promise.all([a![k].data.toCpu(), c![k].data.toCpu()]);
        expect([...u.toFloat64Array()], k).toEqual([...v.toFloat64Array()]);
      }
    });

    it(`${dt}: layerNorm and rmsNorm, forward and backward`, async () => {
      for (const [shape, affine] of [
        [[3, 7, 33], true],
        [[5, 300], false],
        [[1, 9], true],
      ] as const) {
        const c = shape[shape.length - 1]!;
        const x = rand(shape, -2, 3);
        const w = affine ? rand([c]) : null;
        const b = affine ? rand([c]) : null;
        const dy = rand(shape);
        const [xg, xr, dyg, dyr] = [up(x, dt), rounded(x, dt), up(dy, dt), rounded(dy, dt)];
        const wg = w && up(w, dt);
        const wr = w && rounded(w, dt);
        const ln = ts.layerNorm(xr, wr, b && rounded(b, dt), 1e-5);
        const lg = gpu.layerNorm(xg, wg, b && up(b, dt), 1e-5);
        await close(lg.y, ln.y, 4 * tol, 'layerNorm y');
        await close(lg.mean, ln.mean, tol, 'layerNorm mean');
        await close(lg.rstd, ln.rstd, 4 * tol, 'layerNorm rstd');
        const lb = ts.layerNormBackward(xr, wr, ln.mean, ln.rstd, dyr);
        const gb = gpu.layerNormBackward(xg, wg, lg.mean, lg.rstd, dyg);
        const rows = x.size / c;
        await close(gb.dx, lb.dx, 8 * tol, 'layerNorm dx');
        await close(gb.dweight, lb.dweight, 4 * tol * Math.sqrt(rows), 'layerNorm dweight');
        await close(gb.dbias, lb.dbias, 4 * tol * Math.sqrt(rows), 'layerNorm dbias');
        const rn = ts.rmsNorm(xr, wr, 1e-6);
        const rg = gpu.rmsNorm(xg, wg, 1e-6);
        await close(rg.y, rn.y, 4 * tol, 'rmsNorm y');
        await close(rg.rstd, rn.rstd, 4 * tol, 'rmsNorm rstd');
        const rb = ts.rmsNormBackward(xr, wr, rn.rstd, dyr);
        const rgb = gpu.rmsNormBackward(xg, wg, rg.rstd, dyg);
        await close(rgb.dx, rb.dx, 8 * tol, 'rmsNorm dx');
        await close(rgb.dweight, rb.dweight, 4 * tol * Math.sqrt(rows), 'rmsNorm dweight');
      }
      // A weight without a bias (the one-pass f32 kernel binds only what is given).
      const x = rand([2, 257], -2, 3);
      const w = rand([257]);
      await close(
        gpu.layerNorm(up(x, dt), up(w, dt), null, 1e-5).y,
        ts.layerNorm(rounded(x, dt), rounded(w, dt), null, 1e-5).y,
        4 * tol,
        'layerNorm y, weight only',
      );
    });

    it(`${dt}: embedding gather / scatterAdd, crossEntropy with ignoreIndex`, async () => {
      const w = rand([11, 7]);
      const i = ids([3, 9], 11);
      await close(gpu.gather(up(w, dt), up(i, dt)), ts.gather(rounded(w, dt), i), 0, 'gather');
      const dy = rand([3, 9, 7]);
      await close(
        gpu.scatterAdd(up(i, dt), up(dy, dt), 11),
        ts.scatterAdd(i, rounded(dy, dt), 11),
        4 * tol,
        'scatterAdd',
      );
      const logits = rand([4, 5, 13], -3, 3);
      const t = ids([4, 5], 13);
      const td = t.data() as Int32Array;
      td[3] = -100;
      td[7] = -100;
      const lr = rounded(logits, dt);
      const ref = ts.crossEntropy(lr, t, -100);
      const got = gpu.crossEntropy(up(logits, dt), up(t, dt), -100);
      await close(got.loss, ref.loss, 2 * tol, 'crossEntropy loss');
      const dl = Tensor.from(Float64Array.of(1.7), [], 'f64');
      await close(
        gpu.crossEntropyBackward(up(logits, dt), up(t, dt), got.lse, up(dl, dt), -100, got.count),
        ts.crossEntropyBackward(lr, t, ref.lse, rounded(dl, dt), -100, ref.count),
        2 * tol,
        'crossEntropy backward',
      );
      // Every row ignored: loss 0 and zero gradients, as ts.
      const none = Tensor.from(new Int32Array(20).fill(-100), [4, 5]);
      const z = gpu.crossEntropy(up(logits, dt), up(none, dt), -100);
      await close(z.loss, ts.crossEntropy(lr, none, -100).loss, 0, 'all ignored');
    });

    it(`${dt}: rope (1D and 3D sections, inverse), permute, slice, sliceBackward, concat`, async () => {
      const x = rand([2, 3, 7, 12]);
      const pos = Float64Array.from({ length: 7 }, (_, i) => 3 + i);
      const secs = [
        [{ dim: 12, positions: pos }],
        [
          { dim: 4, positions: pos },
          { dim: 4, positions: pos.map((p) => p % 3) },
          { dim: 2, positions: pos.map((p) => p * 2) },
        ],
      ];
      for (const s of secs)
        for (const inv of [false, true])
          await close(
            gpu.rope(up(x, dt), s, 10000, inv),
            ts.rope(rounded(x, dt), s, 10000, inv),
            2 * tol,
            `rope ${s.length} ${inv}`,
          );
      // Tables are cached by a short key of the positions: same-length positions that differ
      // (not runs, so hashed) each get their own table, never another's.
      for (const shuffled of [
        Float64Array.of(4, 0, 6, 1, 5, 2, 3),
        Float64Array.of(4, 0, 6, 1, 5, 3, 2),
        Float64Array.of(4, 0, 6, 1, 5, 2, 3),
      ])
        await close(
          gpu.rope(up(x, dt), [{ dim: 12, positions: shuffled }], 10000, false),
          ts.rope(rounded(x, dt), [{ dim: 12, positions: shuffled }], 10000, false),
          2 * tol,
          `rope at positions ${shuffled}`,
        );
      const xr = rounded(x, dt);
      await close(gpu.permute(up(x, dt), [2, 0, 3, 1]), ts.permute(xr, [2, 0, 3, 1]), 0, 'permute');
      // Contiguous innermost runs of whole 16-byte words: copied a word a thread (attention's
      // [B, T, H, D] -> [B, H, T, D]); 8 f16 or 4 f32 a word, so 12 qualifies for f32 only.
      for (const [shape, dims] of [
        [
          [2, 5, 3, 16],
          [0, 2, 1, 3],
        ],
        [
          [3, 4, 24],
          [1, 0, 2],
        ],
        [
          [2, 3, 7, 12],
          [1, 0, 2, 3],
        ],
      ] as const) {
        const w = rand(shape);
        await close(
          gpu.permute(up(w, dt), dims),
          ts.permute(rounded(w, dt), dims),
          0,
          `permute [${shape}] by [${dims}]`,
        );
      }
      const wide = rand([2, 3, 7, 16]);
      await close(
        gpu.slice(up(wide, dt), 2, 2, 6),
        ts.slice(rounded(wide, dt), 2, 2, 6),
        0,
        'slice of whole rows',
      );
      // Only size-1 dims move: a view of the same buffer, equal to the copy.
      const one = rand([2, 1, 3, 5]);
      const oneGpu = up(one, dt);
      const view = gpu.permute(oneGpu, [0, 2, 1, 3]);
      expect(view.storage).toBe(oneGpu.storage);
      await close(view, ts.permute(rounded(one, dt), [0, 2, 1, 3]), 0, 'permute of a size-1 dim');
      const moved = gpu.permute(oneGpu, [0, 3, 2, 1]);
      expect(moved.storage).not.toBe(oneGpu.storage);
      await close(
        moved,
        ts.permute(rounded(one, dt), [0, 3, 2, 1]),
        0,
        'permute past a size-1 dim',
      );
      await close(gpu.slice(up(x, dt), 2, 1, 6), ts.slice(xr, 2, 1, 6), 0, 'slice');
      const d = rand([2, 3, 5, 12]);
      await close(
        gpu.sliceBackward(up(d, dt), [2, 3, 7, 12], 2, 1),
        ts.sliceBackward(rounded(d, dt), [2, 3, 7, 12], 2, 1),
        0,
        'sliceBackward',
      );
      const parts = [1, 3, 2, 1, 1, 2, 1, 3].map((n) => rand([2, n, 5]));
      for (const k of [2, 8])
        await close(
          gpu.concat(
            parts.slice(0, k).map((p) => up(p, dt)),
            1,
          ),
          ts.concat(
            parts.slice(0, k).map((p) => rounded(p, dt)),
            1,
          ),
          0,
          `concat of ${k}`,
        );
    });

    it(`${dt}: sgd and adamw steps`, async () => {
      const p = rand([5, 7]);
      const g = rand([5, 7]);
      const m = rand([5, 7], -0.1, 0.1);
      const v = rand([5, 7], 0, 0.01);
      const h = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 3 };
      const r = ts.adamwStep(rounded(p, dt), rounded(g, dt), m, v, h);
      const o = gpu.adamwStep(up(p, dt), up(g, dt), up(m, 'f32'), up(v, 'f32'), h);
      await close(o.p, r.p, tol, 'adamw p');
      await close(o.m, r.m, 1e-6, 'adamw m');
      await close(o.v, r.v, 1e-6, 'adamw v');
      for (const nesterov of [false, true]) {
        const hs = { lr: 0.1, momentum: 0.9, dampening: 0.1, weightDecay: 0.01, nesterov };
        const buf = rand([5, 7]);
        const s = ts.sgdStep(rounded(p, dt), rounded(g, dt), buf, hs);
        const sg = gpu.sgdStep(up(p, dt), up(g, dt), up(buf, 'f32'), hs);
        await close(sg.p, s.p, 2 * tol, 'sgd p');
        await close(sg.buf!, s.buf!, 1e-6, 'sgd buf');
      }
      const plain = { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false };
      const sp = gpu.sgdStep(up(p, dt), up(g, dt), null, plain);
      expect(sp.buf).toBeNull();
      await close(sp.p, ts.sgdStep(rounded(p, dt), rounded(g, dt), null, plain).p, 2 * tol, 'sgd');
    });
  }

  it("argmax: the ts kernel's indices (ties, -Infinity and NaN rows, rows wider than a workgroup), f32 and f16", async () => {
    for (const [rows, cols] of [
      [9, 33],
      [3, 1000],
      [1, 50257],
    ] as const) {
      const x = rand([rows, cols], -4, 4);
      const d = x.toFloat32Array();
      if (rows > 1) {
        d.fill(3.75, cols, 2 * cols); // a row of ties: the first
        d.fill(Number.NEGATIVE_INFINITY, 2 * cols, 3 * cols);
        d[2 * cols + cols - 1] = Number.NaN;
        // NaN first, then -Infinity only: 0, as the ts scan.
        d.fill(Number.NEGATIVE_INFINITY, 3 * cols, 4 * cols);
        d[3 * cols] = Number.NaN;
      }
      d[cols - 1] = 100; // the last column of row 0
      for (const dt of ['f32', 'f16'] as const) {
        const t = rounded(Tensor.from(d, [rows, cols]), dt);
        const want = ts.argmax(t.astype('f32'));
        const got = gpu.argmax(up(t, dt));
        expect(got.dtype).toBe('i32');
        expect([...(await got.toCpu()).toFloat64Array()], `${rows}x${cols} ${dt}`).toEqual([
          ...want.toFloat64Array(),
        ]);
      }
    }
  });

  it('readWebGpuNow: the values toCpu gives, read behind the work queued so far; a non-tensor is a ValueError naming t', async () => {
    const x = up(rand([5, 9]), 'f32');
    const y = gpu.binary('mul', x, x);
    const early = await readWebGpuNow(y);
    expect(early.device).toBe('cpu');
    expect([...early.toFloat64Array()]).toEqual([...(await y.toCpu()).toFloat64Array()]);
    const cpu = rand([2]);
    expect(await readWebGpuNow(cpu)).toBe(cpu);
    await expect(readWebGpuNow([1, 2] as unknown as Tensor)).rejects.toThrow(
      /readWebGpuNow: t expected a Tensor/,
    );
  });

  it('copyIntoWebGpu: writes a range in place, in order with the passes queued around it; bad arguments are typed errors naming them, nothing queued', async () => {
    for (const dt of ['f32', 'f16'] as const) {
      const base = rounded(rand([6, 10]), dt);
      const dst = up(base, dt);
      const x = up(rounded(rand([3, 8]), dt), dt);
      // src made by a pass queued just before the copy; a pass after it reads dst.
      const src = gpu.binary('mul', x, x);
      copyIntoWebGpu(dst, 12, src, 4, 16);
      const after = gpu.affine(dst, 1, 0);
      const want = base.toFloat64Array().slice();
      const sq = (await src.toCpu()).toFloat64Array();
      want.set(sq.subarray(4, 20), 12);
      expect([...(await dst.toCpu()).toFloat64Array()], dt).toEqual([...want]);
      expect([...(await after.toCpu()).toFloat64Array()], `${dt}: the pass after`).toEqual([
        ...want,
      ]);
      // The whole of src at an offset (count and srcOffset defaulted); a view's offset counts.
      const row = gpu.full([10], 7, 'f32');
      const fromRow = dt === 'f32' ? row : gpu.affine(up(rounded(rand([10]), dt), dt), 0, 7);
      copyIntoWebGpu(dst.reshape([60]).slice(0, 20, 60), 10, fromRow);
      want.fill(7, 30, 40);
      // dst is no nn output (toWebGpu made it): its toCpu does not wait for nn's queue.
      await syncWebGpu(ctx!);
      expect([...(await dst.toCpu()).toFloat64Array()], `${dt}: defaults`).toEqual([...want]);
      await syncWebGpu(ctx!);
      const before = webGpuQueueStats(ctx!).copies;
      const bad: [() => void, string, RegExp][] = [
        [
          () => copyIntoWebGpu(dst, 55, src, 0, 10),
          'dstOffset',
          /dstOffset expected an integer in \[0, 50\]/,
        ],
        [() => copyIntoWebGpu(dst, 0, src, 20, 8), 'count', /count expected an integer/],
        [() => copyIntoWebGpu(dst, 0, src, -2, 4), 'srcOffset', /srcOffset expected/],
        [() => copyIntoWebGpu(dst, 1.5, src, 0, 4), 'dstOffset', /dstOffset expected/],
        [() => copyIntoWebGpu(dst, 0, dst, 0, 4), 'src', /another buffer/],
        [
          () => copyIntoWebGpu(dst, 0, rand([4]), 0, 4),
          'src',
          /expected a webgpu tensor, got one on cpu/,
        ],
        [
          () => copyIntoWebGpu([1] as unknown as Tensor, 0, src),
          'dst',
          /dst expected a webgpu Tensor/,
        ],
        [
          () =>
            copyIntoWebGpu(
              dst,
              0,
              up(rounded(rand([4]), dt === 'f32' ? 'f16' : 'f32'), dt === 'f32' ? 'f16' : 'f32'),
            ),
          'src',
          /dtype/,
        ],
        [
          () =>
            copyIntoWebGpu(dst, 0, gpu.permute(x, [1, 0]).reshape([8, 3]).transpose(0, 1), 0, 4),
          'src',
          /contiguous/,
        ],
      ];
      if (dt === 'f16')
        bad.push(
          [
            () => copyIntoWebGpu(dst, 1, src, 0, 4),
            'dstOffset',
            /4-byte words \(2 f16 elements\), got 1/,
          ],
          [() => copyIntoWebGpu(dst, 0, src, 0, 3), 'count', /4-byte words/],
          [() => copyIntoWebGpu(dst, 0, src, 3, 4), 'srcOffset', /4-byte words/],
        );
      for (const [call, argument, message] of bad) {
        let err: unknown;
        try {
          call();
        } catch (e) {
          err = e;
        }
        expect(err, `${dt} ${message}`).toMatchObject({
          argument,
          message: expect.stringMatching(message),
        });
      }
      await syncWebGpu(ctx!);
      expect(webGpuQueueStats(ctx!).copies - before, 'no copy queued by the refusals').toBe(0);
      expect([...(await dst.toCpu()).toFloat64Array()], `${dt}: unchanged by refusals`).toEqual([
        ...want,
      ]);
      // A source whose work failed: nothing copied, the failure reported at the next await.
      const failed = output(ctx!, [16], dt);
      (failed.storage as QueuedStorage).failure = new ValueError(
        'the work that wrote it failed',
        'x',
      );
      copyIntoWebGpu(dst, 0, failed);
      await expect(syncWebGpu(ctx!)).rejects.toThrow('the work that wrote it failed');
      expect(webGpuQueueStats(ctx!).copies - before, 'the failed source copied nothing').toBe(0);
      expect(
        [...(await dst.toCpu()).toFloat64Array()],
        `${dt}: unchanged by a failed source`,
      ).toEqual([...want]);
    }
  });

  it('dropoutMask: seeded, a fraction p of zeros, 1 / (1 - p) elsewhere', async () => {
    const a = await gpu.dropoutMask([40, 50], 0.3, new Rng(7), 'f32').toCpu();
    const b = await gpu.dropoutMask([40, 50], 0.3, new Rng(7), 'f32').toCpu();
    const x = a.toFloat64Array();
    expect([...b.toFloat64Array()]).toEqual([...x]);
    const zeros = x.filter((v) => v === 0).length / x.length;
    expect(Math.abs(zeros - 0.3)).toBeLessThan(0.04);
    expect(x.every((v) => v === 0 || Math.abs(v - 1 / 0.7) < 1e-6)).toBe(true);
  });

  it('attention with paged K/V (a shuffled page pool, Nq 1 and 5, GQA) vs the ts kernels', async () => {
    const [b, h, hkv, d, pageSize, numPages] = [2, 4, 2, 16, 8, 9];
    const lengths = Int32Array.from([13, 30]);
    // Sequence 0: pages 5, 2; sequence 1: pages 7, 0, 3, 8 (maxPages 4, unused slots -1).
    const blockTable = Int32Array.from([5, 2, -1, -1, 7, 0, 3, 8]);
    const paged = { pageSize, blockTable, lengths };
    const k = rand([numPages, pageSize, hkv, d]).astype('f32');
    const v = rand([numPages, pageSize, hkv, d]).astype('f32');
    for (const nq of [1, 5]) {
      const q = rand([b, h, nq, d]).astype('f32');
      const opts = { family: 'flash', causal: true, paged };
      const ref = ts.attention(q, k, v, opts);
      const got = gpu.attention(up(q, 'f32'), up(k, 'f32'), up(v, 'f32'), opts);
      await close(got.o, ref.o, 1e-5, `paged attention o, nq ${nq}`);
    }
  });

  it('attention: FlashAttention-2 forward (o, lse) and backward vs the ts kernels', async () => {
    const [b, h, hkv, nq, nk, d] = [2, 4, 2, 19, 23, 16];
    const f32 = (t: Tensor) => t.astype('f32');
    const q = f32(rand([b, h, nq, d]));
    const k = f32(rand([b, hkv, nk, d]));
    const v = f32(rand([b, hkv, nk, d]));
    const dO = f32(rand([b, h, nq, d]));
    for (const opts of [{ family: 'flash' }, { family: 'flash', causal: true, scale: 0.3 }]) {
      const ref = ts.attention(q, k, v, opts);
      const got = gpu.attention(up(q, 'f32'), up(k, 'f32'), up(v, 'f32'), opts);
      await close(got.o, ref.o, 1e-5, 'attention o');
      await close(got.lse, ref.lse, 1e-5, 'attention lse');
      const rb = ts.attentionBackward(q, k, v, ref.o, ref.lse, dO, opts);
      const gb = gpu.attentionBackward(
        up(q, 'f32'),
        up(k, 'f32'),
        up(v, 'f32'),
        got.o,
        got.lse,
        up(dO, 'f32'),
        opts,
      );
      await close(gb.dq, rb.dq, 1e-4, 'attention dq');
      await close(gb.dk, rb.dk, 1e-4, 'attention dk');
      await close(gb.dv, rb.dv, 1e-4, 'attention dv');
    }
    // f16 storage: the same FA2 kernels on rounded inputs, against ts in f32 on those inputs.
    const r16 = (t: Tensor) => t.astype('f16').astype('f32');
    const opts = { family: 'flash', causal: true };
    const ref = ts.attention(r16(q), r16(k), r16(v), opts);
    const got = gpu.attention(up(q, 'f16'), up(k, 'f16'), up(v, 'f16'), opts);
    expect(got.o.dtype).toBe('f16');
    await close(got.o, ref.o, 4e-3, 'attention f16 o');
    const rb = ts.attentionBackward(r16(q), r16(k), r16(v), r16(ref.o), ref.lse, r16(dO), opts);
    const gb = gpu.attentionBackward(
      up(q, 'f16'),
      up(k, 'f16'),
      up(v, 'f16'),
      got.o,
      got.lse,
      up(dO, 'f16'),
      opts,
    );
    await close(gb.dq, rb.dq, 1e-2, 'attention f16 dq');
    await close(gb.dk, rb.dk, 1e-2, 'attention f16 dk');
    await close(gb.dv, rb.dv, 1e-2, 'attention f16 dv');
    await syncWebGpu(ctx!);
  });

  it('attention: FlashSigmoid forward and backward (no lse) vs the ts kernels, paged too', async () => {
    const [b, h, hkv, nq, nk, d] = [2, 4, 2, 13, 21, 16];
    const f32 = (t: Tensor) => t.astype('f32');
    const q = f32(rand([b, h, nq, d]));
    const k = f32(rand([b, hkv, nk, d]));
    const v = f32(rand([b, hkv, nk, d]));
    const dO = f32(rand([b, h, nq, d]));
    for (const opts of [
      { family: 'sigmoid' },
      { family: 'sigmoid', causal: true, sigmoidBias: -2.5 },
    ]) {
      const ref = ts.attention(q, k, v, opts);
      // Twice: the first call compiles (async path), the second is encoded with the passes
      // (the family's encodeForward / encodeBackward: `recorded` counts them).
      for (const pass of [1, 2]) {
        const [gq, gk, gv, gdO] = [up(q, 'f32'), up(k, 'f32'), up(v, 'f32'), up(dO, 'f32')];
        const before = webGpuQueueStats(ctx!).recorded;
        const got = gpu.attention(gq, gk, gv, opts);
        expect(got.lse, 'a pointwise family has no lse').toBeUndefined();
        if (pass === 2) expect(webGpuQueueStats(ctx!).recorded - before, 'forward encoded').toBe(1);
        await close(got.o, ref.o, 1e-5, `sigmoid o (call ${pass})`);
        const rb = ts.attentionBackward(q, k, v, undefined, undefined, dO, opts);
        const mid = webGpuQueueStats(ctx!).recorded;
        const gb = gpu.attentionBackward(gq, gk, gv, undefined, undefined, gdO, opts);
        if (pass === 2) expect(webGpuQueueStats(ctx!).recorded - mid, 'backward encoded').toBe(1);
        await close(gb.dq, rb.dq, 1e-4, `sigmoid dq (call ${pass})`);
        await close(gb.dk, rb.dk, 1e-4, `sigmoid dk (call ${pass})`);
        await close(gb.dv, rb.dv, 1e-4, `sigmoid dv (call ${pass})`);
      }
    }
    // Paged K/V (decoding a sigmoid model from a page pool) against ts on the same pool.
    const [pageSize, numPages] = [8, 6];
    const paged = {
      pageSize,
      blockTable: Int32Array.from([4, 1, -1, 0, 5, 2]),
      lengths: Int32Array.from([11, 20]),
    };
    const kp = f32(rand([numPages, pageSize, hkv, d]));
    const vp = f32(rand([numPages, pageSize, hkv, d]));
    const q1 = f32(rand([b, h, 1, d]));
    // A given bias, and the default: -log of each sequence's own length (11 and 20 here).
    for (const opts of [
      { family: 'sigmoid', causal: true, sigmoidBias: -3, paged },
      { family: 'sigmoid', causal: true, paged },
    ]) {
      const ref = ts.attention(q1, kp, vp, opts);
      const got = gpu.attention(up(q1, 'f32'), up(kp, 'f32'), up(vp, 'f32'), opts);
      await close(got.o, ref.o, 1e-5, `paged sigmoid o (bias ${opts.sigmoidBias ?? 'default'})`);
    }
    // The ts kernels' default bias per sequence, against the same pages gathered contiguously
    // with sequence 0's bias given explicitly (-log 11): the defaults differ per sequence.
    const dense = (seq: number, len: number) => {
      const pages = [...paged.blockTable.slice(seq * 3, seq * 3 + 3)].filter((x) => x >= 0);
      const rows = (pool: Tensor) => {
        const x = pool.toFloat32Array();
        const outRows = new Float32Array(hkv * len * d);
        for (let j = 0; j < len; j++)
          for (let hh = 0; hh < hkv; hh++)
            for (let c = 0; c < d; c++)
              outRows[(hh * len + j) * d + c] =
                x[
                  ((pages[Math.floor(j / pageSize)]! * pageSize + (j % pageSize)) * hkv + hh) * d +
                    c
                ]!;
        return Tensor.from(outRows, [1, hkv, len, d]);
      };
      return { k: rows(kp), v: rows(vp) };
    };
    const pagedDefault = ts.attention(q1, kp, vp, { family: 'sigmoid', causal: true, paged }).o;
    const per = pagedDefault.toFloat32Array();
    for (const [seq, len] of [
      [0, 11],
      [1, 20],
    ] as const) {
      const { k: kd, v: vd } = dense(seq, len);
      const qs = Tensor.from(q1.toFloat32Array().slice(seq * h * d, (seq + 1) * h * d), [
        1,
        h,
        1,
        d,
      ]);
      const want = ts
        .attention(qs, kd, vd, {
          family: 'sigmoid',
          causal: true,
          sigmoidBias: -Math.log(len),
        })
        .o.toFloat32Array();
      const got = per.slice(seq * h * d, (seq + 1) * h * d);
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
      expect(worst, `paged default bias, sequence ${seq}`).toBeLessThan(1e-5);
    }
    await syncWebGpu(ctx!);
  });

  it('the staged tensor-core matmul (subgroup matrices emulated): every transpose, one and two buffers, K split and not a multiple of its step, batches; f16 results rounded by the kernel', async () => {
    emulateTensorCores(true);
    try {
      // [batch, M, K, N]: R 1 (two buffers on llvmpipe's 32 KiB), R 2 (a full wave of 64-tiles:
      // one buffer), K 2064 split into slices of 544 (the last 432: a half step zero-filled).
      const shapes = [
        [3, 32, 48, 64],
        [140, 64, 48, 64],
        [1, 32, 2064, 32],
      ] as const;
      for (const [batch, m, k, n] of shapes) {
        for (const [ta, tb] of [
          [false, false],
          [false, true],
          [true, false],
          [true, true],
        ] as const) {
          const a = rounded(rand(ta ? [batch, k, m] : [batch, m, k]), 'f16');
          const b = rounded(rand(tb ? [batch, n, k] : [batch, k, n]), 'f16');
          const want = ts.matmul(a, b, ta, tb);
          const got = gpu.matmul(up(a, 'f16'), up(b, 'f16'), ta, tb);
          expect(got.dtype).toBe('f16');
          expect(got.shape).toEqual([batch, m, n]);
          await close(got, rounded(want, 'f16'), 2e-3, `tc ${batch}x${m}x${k}x${n} ${ta} ${tb}`);
        }
      }
    } finally {
      emulateTensorCores(false);
    }
    await syncWebGpu(ctx!);
  });

  it("attention on compiled pipelines is encoded with the passes around it (recordAttention): at once when nothing is queued, else in its task; the async path's results", async () => {
    const c = ctx!;
    const [b, h, hkv, nq, nk, d] = [2, 4, 2, 37, 29, 16];
    const q = up(rand([b, h, nq, d]), 'f32');
    const k = up(rand([b, hkv, nk, d]), 'f32');
    const v = up(rand([b, hkv, nk, d]), 'f32');
    const dO = up(rand([b, h, nq, d]), 'f32');
    const opts = { family: 'flash', causal: true };
    // A pass before and after, as in a block: x2 = 2 q; attention; its backward; dq + dq.
    const step = () => {
      const q2 = gpu.binary('mul', q, up(Tensor.from(Float32Array.of(2), [1]), 'f32'));
      const f = gpu.attention(q2, k, v, opts);
      const g = gpu.attentionBackward(q2, k, v, f.o, f.lse, dO, opts);
      return [f.o, f.lse, g.dq, g.dk, g.dv, gpu.binary('add', g.dq, g.dq)];
    };
    const read = (ts: Tensor[]) =>
      Promise.all(ts.map(async (t) => [...(await t.toCpu()).toFloat64Array()]));
    try {
      registerWebGpuKernels(c, { recordAttention: false });
      const before0 = webGpuQueueStats(c);
      const slow = await read(step());
      expect(webGpuQueueStats(c).recorded).toBe(before0.recorded);
      registerWebGpuKernels(c);
      c.poisonOutputs = true;
      const before = webGpuQueueStats(c);
      const fast = step();
      const mid = webGpuQueueStats(c);
      // Both attention calls, and every pass (attention's too), encoded before step() returned.
      expect(mid.recorded - before.recorded).toBe(2);
      expect(mid.passes - before.passes).toBeGreaterThanOrEqual(6);
      expect(mid.immediate - before.immediate).toBe(mid.passes - before.passes);
      expect(await read(fast)).toEqual(slow);
      // With every pass queued (encodeEagerly: false) attention is recorded in its task.
      registerWebGpuKernels(c, { encodeEagerly: false });
      const late = webGpuQueueStats(c);
      const queued = step();
      expect(webGpuQueueStats(c).immediate).toBe(late.immediate);
      expect(webGpuQueueStats(c).recorded).toBe(late.recorded);
      expect(await read(queued)).toEqual(slow);
      expect(webGpuQueueStats(c).recorded - late.recorded).toBe(2);
    } finally {
      c.poisonOutputs = false;
      registerWebGpuKernels(c);
    }
  });
});
