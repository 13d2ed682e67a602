import { Rng, Tensor } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { createWebGpuContext, toWebGpu } from '@attnkit/webgpu';
import { describe, expect, it } from 'vitest';
import { noGrad, Param, type Var } from '../../autograd.js';
import { MultiHeadAttention } from '../../modules/attention.js';
import { Linear, MLP } from '../../modules/layers.js';
import type { Module } from '../../modules/module.js';
import { type LinearActivation, linears } from '../../ops/matmul.js';
import type { Kernels } from '../table.js';
import { tsKernels as ts } from '../ts/index.js';
import { registerWebGpuKernels, syncWebGpu, webGpuQueueStats, webgpuKernels } from './index.js';

// The fused decode linear (nn's `linears` where no gradient is recorded): one pass for up to
// three weights with bias and activation, against the float64 reference and bit for bit
// against the composition it replaces (matmul's skinny kernel, add, the unary kernel: the same
// sums in the same order). Outputs are NaN-poisoned (the test context), so a column the kernel
// forgets to write fails.

const ctx = await webGpuTestContext();
if (ctx) registerWebGpuKernels(ctx);
const gpu = webgpuKernels as Kernels;
const rng = new Rng(77);

const rand = (shape: readonly number[]) =>
  Tensor.from(
    rng
      .rand(shape)
      .toFloat64Array()
      .map((u) => 2 * u - 1),
    shape,
    'f64',
  );
const up = (t: Tensor) => toWebGpu(t.astype('f32'), ctx!);
const f64 = async (t: Tensor) => (await t.toCpu()).toFloat64Array();
/** The module with its parameters uploaded (what Gpt.toWebGpu does). */
function onGpu<M extends Module>(m: M): M {
  for (const p of m.parameters()) p.data = up(p.data);
  return m;
}

async function passes(f: () => unknown): Promise<number> {
  await syncWebGpu(ctx!);
  const before = webGpuQueueStats(ctx!).passes;
  f();
  await syncWebGpu(ctx!);
  return webGpuQueueStats(ctx!).passes - before;
}

/** x W^T + b then act, in float64 on the f32-rounded inputs. */
function reference(x: Tensor, w: Tensor, b: Tensor | null, act: LinearActivation | undefined) {
  const [xr, wr] = [x, w].map((t) => t.astype('f32').astype('f64'));
  const rows = ts.reshape(xr!, [-1, x.shape.at(-1)!]);
  let y = ts.matmul(rows, wr!, false, true);
  if (b) y = ts.binary('add', y, b.astype('f32').astype('f64'));
  if (act) y = ts.unary(act, y);
  return ts.reshape(y, [...x.shape.slice(0, -1), w.shape[0]!]);
}

describe.skipIf(!ctx)('webgpu linears (the fused decode linear)', () => {
  const cases: [number[], number[], boolean, LinearActivation | undefined][] = [
    [[1, 1, 37], [13, 5, 8], false, undefined],
    [[1, 1, 64], [64, 16, 16], true, undefined],
    [[3, 37], [29], true, 'gelu'],
    [[8, 24], [7, 9], false, 'silu'],
    [[2, 1, 40], [160], false, 'gelu'],
  ];
  for (const [xs, ns, bias, act] of cases) {
    it(`x ${xs}, weights N ${ns}, ${bias ? 'bias' : 'no bias'}, ${act ?? 'no activation'}: one pass, the float64 reference, the composition bit for bit`, async () => {
      const x = rand(xs);
      const k = xs.at(-1)!;
      const ws = ns.map((n) => rand([n, k]));
      const bs = bias ? ns.map((n) => rand([n])) : null;
      const [xg, wg, bg] = [up(x), ws.map(up), bs?.map(up) ?? null];
      let fused: Tensor[] | undefined;
      expect(await passes(() => (fused = gpu.linears!(xg, wg, bg, act)))).toBe(1);
      expect(fused).toHaveLength(ns.length);
      const composed = ws.map((_, j) => {
        const rows = gpu.reshape(xg, [-1, k]);
        let y = gpu.matmul(rows, wg[j]!, false, true);
        if (bg) y = gpu.binary('add', y, bg[j]!);
        if (act) y = gpu.unary(act, y);
        return gpu.reshape(y, [...xs.slice(0, -1), ns[j]!]);
      });
      for (const [j, f] of fused!.entries()) {
        expect([...f.shape], `y${j} shape`).toEqual([...xs.slice(0, -1), ns[j]!]);
        const [got, same] = [await f64(f), await f64(composed[j]!)];
        const want = reference(x, ws[j]!, bs?.[j] ?? null, act).toFloat64Array();
        let worst = 0;
        for (let i = 0; i < want.length; i++)
          worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!)));
        expect(worst, `y${j} vs float64`).toBeLessThanOrEqual(2e-5);
        expect(
          got.findIndex((v, i) => !Object.is(v, same[i])),
          `y${j} vs matmul + add + act`,
        ).toBe(-1);
      }
    });
  }

  it('declines (undefined, nothing queued) what it does not fuse: more than 8 rows, 4 weights, f16, a strided x', async () => {
    const w = up(rand([6, 16]));
    const none = async (f: () => Tensor[] | undefined) => {
      let r: Tensor[] | undefined = [];
      expect(await passes(() => (r = f()))).toBe(0);
      expect(r).toBeUndefined();
    };
    await none(() => gpu.linears!(up(rand([9, 16])), [w], null, undefined));
    await none(() => gpu.linears!(up(rand([1, 16])), [w, w, w, w], null, undefined));
    await none(() =>
      gpu.linears!(toWebGpu(rand([1, 16]).astype('f16'), ctx!), [w], null, undefined),
    );
    await none(() =>
      gpu.linears!(
        up(rand([2, 16]))
          .reshape([16, 2])
          .transpose(0, 1),
        [w],
        null,
        undefined,
      ),
    );
    registerWebGpuKernels(ctx!, { fuseLinear: false });
    try {
      await none(() => gpu.linears!(up(rand([1, 16])), [w], null, undefined));
    } finally {
      registerWebGpuKernels(ctx!);
    }
  });

  it("on a device with WebGPU's default 8 storage bindings, q, k, v with biases (10 bindings) fuse the products and add the biases (and apply the activation) after: 7 passes, not 9, the same values", async () => {
    const small = await createWebGpuContext({ limits: 'default', features: [] });
    try {
      expect(small.limits.maxStorageBuffersPerShaderStage).toBe(8);
      registerWebGpuKernels(small);
      const put = (t: Tensor) => toWebGpu(t.astype('f32'), small);
      const [x, ...ws] = [rand([1, 1, 40]), rand([40, 40]), rand([8, 40]), rand([8, 40])].map(put);
      const bs = [rand([40]), rand([8]), rand([8])].map(put);
      await syncWebGpu(small);
      const before = webGpuQueueStats(small).passes;
      const fused = gpu.linears!(x!, ws, bs, 'gelu')!;
      await syncWebGpu(small);
      expect(webGpuQueueStats(small).passes - before).toBe(1 + 3 + 3);
      for (const [j, f] of fused.entries()) {
        const rows = gpu.reshape(x!, [-1, 40]);
        const y = gpu.unary(
          'gelu',
          gpu.binary('add', gpu.matmul(rows, ws[j]!, false, true), bs[j]!),
        );
        const [got, want] = [await f64(f), await f64(y)];
        expect([...f.shape]).toEqual([1, 1, ws[j]!.shape[0]!]);
        expect(
          got.findIndex((v, i) => !Object.is(v, want[i])),
          `y${j}`,
        ).toBe(-1);
      }
    } finally {
      registerWebGpuKernels(ctx!);
      small.destroy();
    }
  });

  it("nn's linears: one pass where no gradient is recorded, the composition where one is, the same values", async () => {
    const x = up(rand([1, 1, 48]));
    const ws = [rand([48, 48]), rand([16, 48]), rand([16, 48])].map(up);
    const bs = [rand([48]), rand([16]), rand([16])].map(up);
    let inference: Var[] = [];
    let recorded: Var[] = [];
    expect(await passes(() => (inference = noGrad(() => linears(x, ws, bs, 'gelu'))))).toBe(1);
    const params = ws.map((w) => new Param(w));
    expect(await passes(() => (recorded = linears(x, params, bs, 'gelu')))).toBe(9);
    expect(recorded[0]!.requiresGrad).toBe(true);
    expect(inference[0]!.requiresGrad).toBe(false);
    for (let j = 0; j < 3; j++)
      expect([...(await f64(inference[j]!.data))], `y${j}`).toEqual([
        ...(await f64(recorded[j]!.data)),
      ]);
  });

  it('Linear, MLP and MultiHeadAttention decode a token in fewer passes with the same values', async () => {
    const x = up(rand([1, 1, 32]));
    const lin = onGpu(new Linear(32, 24, { rng: new Rng(1) }));
    const mlp = onGpu(new MLP(32, { rng: new Rng(2) }));
    const mha = onGpu(
      new MultiHeadAttention(32, 4, { kvHeads: 2, rope: false, bias: true, rng: new Rng(3) }),
    );
    for (const [name, run, fusedPasses] of [
      ['Linear', () => lin.forward(x), 1],
      ['MLP', () => mlp.forward(x), 2],
    ] as const) {
      let a: Var | undefined;
      let b: Var | undefined;
      expect(await passes(() => (a = noGrad(run))), name).toBe(fusedPasses);
      registerWebGpuKernels(ctx!, { fuseLinear: false });
      try {
        expect(await passes(() => (b = noGrad(run))), name).toBeGreaterThan(fusedPasses);
      } finally {
        registerWebGpuKernels(ctx!);
      }
      expect([...(await f64(a!.data))], name).toEqual([...(await f64(b!.data))]);
    }
    // Warm: the first attention call compiles its pipeline (an async launch, no queued pass).
    await passes(() => noGrad(() => mha.forward(x)));
    const fused = await passes(() => noGrad(() => mha.forward(x)));
    registerWebGpuKernels(ctx!, { fuseLinear: false });
    let unfused: number;
    let y0: Var | undefined;
    try {
      unfused = await passes(() => noGrad(() => mha.forward(x)));
      y0 = noGrad(() => mha.forward(x));
    } finally {
      registerWebGpuKernels(ctx!);
    }
    // With biases: q, k, v (3 matmuls + 3 adds) one pass, wo (matmul + add) one.
    expect([fused, unfused!], 'passes fused, unfused').toEqual([3, 9]);
    const y1 = noGrad(() => mha.forward(x));
    expect([...(await f64(y1.data))]).toEqual([...(await f64(y0!.data))]);
  });
});
