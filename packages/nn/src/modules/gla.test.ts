import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { glaReference } from '@attnkit/linear-attention';
import { Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { expectTypedError as expectError, relL2, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { noGrad, scope, Var } from '../autograd.js';
import { deviceBackendOf, setDeviceBackend } from '../dispatch.js';
import { gradcheck } from '../gradcheck.js';
import { registerNativeKernels } from '../kernels/native/index.js';
import { registerWebGpuKernels } from '../kernels/webgpu/index.js';
import { logsigmoid } from '../ops/gla.js';
import { crossEntropy } from '../ops/nn.js';
import { sum } from '../ops/reduce.js';
import { concat, reshape, slice } from '../ops/shape.js';
import { AdamW } from '../optim/adamw.js';
import { GatedLinearAttention, GlaState } from './gla.js';
import { Embedding, Linear } from './layers.js';
import { Module } from './module.js';

// The GLA layer against an independent float64 composition (plain loops + linear-attention's
// reference), its parameter names, logsigmoid's stability, a tiny model that learns, decoding
// with a GlaState (prefill, then token by token) against the whole sequence at once on ts,
// native and webgpu, and the typed errors.

const cpuBackend = deviceBackendOf('cpu')!;
afterAll(() => setDeviceBackend('cpu', cpuBackend));
const rel = (a: Tensor, b: Tensor) => relL2(a.toFloat64Array(), b.toFloat64Array());

/** y [N, out] = x [N, in] W^T + b, in float64. */
function linear(x: Float64Array, n: number, l: Linear): Float64Array {
  const w = l.weight.data.toFloat64Array();
  const b = l.bias?.data.toFloat64Array();
  const [o, i] = [l.outFeatures, l.inFeatures];
  const y = new Float64Array(n * o);
  for (let r = 0; r < n; r++)
    for (let c = 0; c < o; c++) {
      let s = b ? b[c]! : 0;
      for (let j = 0; j < i; j++) s += x[r * i + j]! * w[c * i + j]!;
      y[r * o + c] = s;
    }
  return y;
}

/** The layer as fla writes it, in float64 loops (the GLA core: linear-attention's reference). */
function composed(layer: GatedLinearAttention, x: Tensor): Float64Array {
  const [b, t] = x.shape as [number, number, number];
  const n = b * t;
  const { heads: h, headKDim: dk, headVDim: dv } = layer;
  const xs = x.toFloat64Array();
  const q = linear(xs, n, layer.q_proj);
  const k = linear(xs, n, layer.k_proj);
  const v = linear(xs, n, layer.v_proj);
  const [g0, g1] = layer.gk_proj.layers as [Linear, Linear];
  const gk = linear(linear(xs, n, g0), n, g1).map(
    (z) => -Math.log1p(Math.exp(-z)) / layer.gateLogitNormalizer,
  );
  const t4 = (a: Float64Array, d: number) => Tensor.from(a, [b, t, h, d], 'f64');
  const o = glaReference(t4(q, dk), t4(k, dk), t4(v, dv), t4(gk, dk)).o.toFloat64Array();
  const g = linear(xs, n, layer.g_proj);
  const w = layer.g_norm_swish_gate.weight.data.toFloat64Array();
  const gated = new Float64Array(n * h * dv);
  for (let r = 0; r < n * h; r++) {
    let ms = 0;
    for (let c = 0; c < dv; c++) ms += o[r * dv + c]! ** 2 / dv;
    const rstd = 1 / Math.sqrt(ms + layer.normEps);
    for (let c = 0; c < dv; c++) {
      const z = g[r * dv + c]!;
      gated[r * dv + c] = o[r * dv + c]! * rstd * w[c]! * (z / (1 + Math.exp(-z)));
    }
  }
  return linear(gated, n, layer.o_proj);
}

describe('GatedLinearAttention', () => {
  it("has fla's parameters and shapes (expandK 0.5, expandV 1, low-rank gate 16)", () => {
    const layer = new GatedLinearAttention(32, 4);
    expect(layer.namedParameters().map(([n, p]) => `${n}:${p.shape}`)).toEqual([
      'q_proj.weight:16,32',
      'k_proj.weight:16,32',
      'v_proj.weight:32,32',
      'g_proj.weight:32,32',
      'gk_proj.0.weight:16,32',
      'gk_proj.1.weight:16,16',
      'gk_proj.1.bias:16',
      'g_norm_swish_gate.weight:8',
      'o_proj.weight:32,32',
    ]);
    expect([layer.keyDim, layer.valueDim, layer.headKDim, layer.headVDim]).toEqual([16, 32, 4, 8]);
    const biased = new GatedLinearAttention(8, 2, { bias: true, expandV: 2, gateLowRankDim: 4 });
    expect(Object.keys(biased.stateDict())).toContain('o_proj.bias');
    expect(biased.stateDict()['v_proj.weight']!.shape).toEqual([16, 8]);
  });

  it('equals the float64 composition (projections, logsigmoid gates, GLA, gated RMSNorm)', () => {
    setDeviceBackend('cpu', 'ts');
    for (const [dim, heads, T, opts] of [
      [16, 2, 7, {}],
      [12, 3, 70, { expandK: 1, expandV: 0.5, gateLogitNormalizer: 4, bias: true }],
    ] as const) {
      const rng = new Rng(dim * 31 + T);
      const layer = new GatedLinearAttention(dim, heads, { ...opts, rng, dtype: 'f64' });
      // A norm weight away from 1, so that a wrong broadcast shows.
      layer.g_norm_swish_gate.weight.data = rng.randn([layer.headVDim], 'f64');
      const x = rng.randn([2, T, dim], 'f64');
      const y = layer.forward(x);
      expect(y.shape).toEqual([2, T, dim]);
      expect(relL2(y.data.toFloat64Array(), composed(layer, x)), `dim ${dim} T ${T}`).toBeLessThan(
        1e-10,
      );
    }
  });

  it('gradients w.r.t. x and every parameter reach them; x-gradients match central differences', () => {
    setDeviceBackend('cpu', 'ts');
    const layer = new GatedLinearAttention(8, 2, {
      rng: new Rng(3),
      dtype: 'f64',
      gateLowRankDim: 4,
      gateLogitNormalizer: 2,
    });
    const res = gradcheck((x) => layer.forward(x!), [new Rng(4).randn([1, 3, 8], 'f64')]);
    expect(res.worst, JSON.stringify(res.at)).toBeLessThan(1);
    for (const [n, p] of layer.namedParameters()) {
      expect(p.grad, n).not.toBeNull();
      expect(
        p.grad!.toFloat64Array().some((g) => g !== 0),
        n,
      ).toBe(true);
    }
  });

  it('logsigmoid is finite and <= 0 everywhere; its gradient is sigmoid(-x)', () => {
    setDeviceBackend('cpu', 'ts');
    const xs = [-1e30, -1e4, -100, -20, -1, -1e-8, 0, 1e-8, 1, 20, 100, 1e4, 1e30];
    for (const dtype of ['f32', 'f64'] as const) {
      const x = new Var(Tensor.from(xs, [xs.length], 'f64').astype(dtype), true);
      const y = logsigmoid(x);
      sum(y).backward();
      const got = y.data.toFloat64Array();
      const grad = x.grad!.toFloat64Array();
      xs.forEach((v, i) => {
        const xv = dtype === 'f32' ? Math.fround(v) : v;
        const want = xv < 0 ? xv - Math.log1p(Math.exp(xv)) : -Math.log1p(Math.exp(-xv));
        expect(Number.isFinite(got[i]!), `${dtype} ${v}`).toBe(true);
        expect(got[i]!, `${dtype} ${v}`).toBeLessThanOrEqual(0);
        expect(Math.abs(got[i]! - want), `${dtype} ${v}`).toBeLessThanOrEqual(
          (dtype === 'f32' ? 1e-6 : 1e-14) * Math.max(1, Math.abs(want)),
        );
        const wantGrad = 1 / (1 + Math.exp(xv));
        expect(Math.abs(grad[i]! - wantGrad), `${dtype} grad ${v}`).toBeLessThanOrEqual(
          dtype === 'f32' ? 1e-6 : 1e-14,
        );
      });
    }
  });

  it('a tiny GLA language model learns to recall the previous token (AdamW, ts)', () => {
    setDeviceBackend('cpu', 'ts');
    const rng = new Rng(7);
    const [vocab, dim, b, t] = [8, 16, 4, 12];
    class Tiny extends Module {
      emb = this.child('emb', new Embedding(vocab, dim, { rng }));
      attn = this.child('attn', new GatedLinearAttention(dim, 2, { rng, gateLowRankDim: 4 }));
      head = this.child('head', new Linear(dim, vocab, { rng }));
      forward(ids: Tensor) {
        return this.head.forward(this.attn.forward(this.emb.forward(ids)));
      }
    }
    const model = new Tiny();
    const ids = Int32Array.from({ length: b * t }, () => rng.int(0, vocab));
    // Target at position i: the token at i - 1 (position 0: itself).
    const targets = ids.map((id, i) => (i % t === 0 ? id : ids[i - 1]!));
    const [x, y] = [Tensor.from(ids, [b, t]), Tensor.from(targets, [b * t])];
    const opt = new AdamW(model.parameters(), { lr: 3e-2, weightDecay: 0 });
    const losses: number[] = [];
    for (let step = 0; step < 40; step++) {
      opt.zeroGrad();
      const loss = crossEntropy(reshape(model.forward(x), [b * t, vocab]), y);
      loss.backward();
      opt.step();
      losses.push(loss.item());
    }
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses.at(-1)!, losses.map((l) => l.toFixed(3)).join(' ')).toBeLessThan(
      0.5 * losses[0]!,
    );
  });
});

/** Prefill `split[0]` tokens, then chunks of the given sizes; outputs concatenated along T. */
function decode(layer: GatedLinearAttention, x: Var | Tensor, sizes: readonly number[]) {
  const state = new GlaState();
  const outs: Var[] = [];
  let at = 0;
  for (const n of sizes) {
    // Each step in its own scope, as a generation loop runs: the kept state survives it.
    outs.push(scope(() => layer.forward(slice(x, 1, at, at + n), { state })));
    at += n;
  }
  expect(state.length).toBe(at);
  return { y: noGrad(() => concat(outs, 1)), state };
}

describe('decoding with a GlaState equals the whole sequence at once', () => {
  const cases: [string, boolean][] = [
    ['ts', true],
    ['native', registerNativeKernels() === true],
  ];
  for (const [backend, available] of cases)
    it.runIf(available)(
      `${backend}: prefill (chunk form) then token by token (recurrent form)`,
      () => {
        setDeviceBackend('cpu', backend);
        const layer = new GatedLinearAttention(16, 2, { rng: new Rng(21) });
        const x = new Rng(22).randn([2, 75, 16]);
        const whole = noGrad(() => layer.forward(x));
        // 70 tokens: more than one 64-token chunk; then a step, a 3-token chunk, a step.
        const sizes = [70, 1, 3, 1];
        const { y, state } = decode(layer, x, sizes);
        expect(y.shape).toEqual([2, 75, 16]);
        expect(rel(y.data, whole.data)).toBeLessThan(1e-5);
        expect(state.state!.shape).toEqual([2, 2, 4, 8]);
        // The state is the sequence's: one more token decoded equals the 76-token sequence.
        const next = new Rng(23).randn([2, 1, 16]);
        const y76 = noGrad(() => layer.forward(concat([x, next], 1)));
        const step = layer.forward(next, { state });
        expect(rel(step.data, slice(y76, 1, 75, 76).data)).toBeLessThan(1e-5);
        // A step records no graph even though the parameters require gradients.
        expect(step.requiresGrad).toBe(false);
        // Without the state each chunk would start from zero: the comparison can fail.
        const fresh = noGrad(() => layer.forward(slice(x, 1, 70, 71)));
        expect(rel(fresh.data, slice(whole, 1, 70, 71).data)).toBeGreaterThan(1e-2);
        state.reset();
        expect([state.state, state.length]).toEqual([null, 0]);
      },
    );
});

describe('GatedLinearAttention errors', () => {
  it('constructor: heads must divide keyDim and valueDim; positive sizes', () => {
    expectError(
      () => new GatedLinearAttention(16, 3),
      ValueError,
      'heads',
      /divide keyDim = dim \* expandK = 8, got heads = 3/,
    );
    expectError(
      () => new GatedLinearAttention(16, 8, { expandV: 0.75, expandK: 1 }),
      ValueError,
      'heads',
      /divide valueDim = dim \* expandV = 12, got heads = 8/,
    );
    expectError(
      () => new GatedLinearAttention(16, 0),
      ValueError,
      'heads',
      /positive integer, got 0/,
    );
    expectError(() => new GatedLinearAttention(16.5, 2), ValueError, 'dim', /positive integer/);
    expectError(
      () => new GatedLinearAttention(16, 2, { gateLogitNormalizer: 0 }),
      ValueError,
      'gateLogitNormalizer',
      /positive number, got 0/,
    );
    expectError(
      () => new GatedLinearAttention(16, 2, { gateLowRankDim: 2.5 }),
      ValueError,
      'gateLowRankDim',
      /positive integer/,
    );
    expectError(
      () => new GatedLinearAttention(16, 2, { normEps: -1 }),
      ValueError,
      'normEps',
      /non-negative/,
    );
  });

  it('forward: x [B, T, dim]; state a GlaState of this layer and batch', () => {
    setDeviceBackend('cpu', 'ts');
    const layer = new GatedLinearAttention(8, 2, { gateLowRankDim: 4 });
    const rng = new Rng(1);
    expectError(
      () => layer.forward(rng.randn([2, 3, 6])),
      ShapeError,
      'x',
      /\[B, T, 8\], got \[2, 3, 6\]/,
    );
    expectError(() => layer.forward(rng.randn([3, 8])), ShapeError, 'x', /got \[3, 8\]/);
    expectError(
      () => layer.forward(rng.randn([1, 2, 8]), { state: {} as GlaState }),
      ValueError,
      'state',
      /a GlaState, got/,
    );
    const state = new GlaState();
    layer.forward(rng.randn([2, 3, 8]), { state });
    expectError(
      () => layer.forward(rng.randn([1, 1, 8]), { state }),
      ShapeError,
      'state',
      /\[1, 2, 2, 4\].*got \[2, 2, 2, 4\]/,
    );
  });
});

const ctx = await webGpuTestContext();
if (ctx) registerWebGpuKernels(ctx);

describe.runIf(ctx !== undefined)('GatedLinearAttention on webgpu (llvmpipe: small)', () => {
  it('forward equals ts; prefill + steps with a GlaState equal the whole sequence', async () => {
    setDeviceBackend('cpu', 'ts');
    const cpu = new GatedLinearAttention(8, 2, { rng: new Rng(31), gateLowRankDim: 4 });
    const gpu = new GatedLinearAttention(8, 2, { rng: new Rng(31), gateLowRankDim: 4 });
    // The same weights, moved (loadStateDict keeps each parameter's device).
    const weights = cpu.stateDict();
    for (const [n, p] of gpu.namedParameters()) p.data = toWebGpu(weights[n]!, ctx!);
    const x = new Rng(32).randn([1, 6, 8]);
    const want = noGrad(() => cpu.forward(x));
    const xg = toWebGpu(x, ctx!);
    const whole = await noGrad(() => gpu.forward(xg)).data.toCpu();
    expect(rel(whole, want.data)).toBeLessThan(1e-4);
    const { y, state } = decode(gpu, xg, [4, 1, 1]);
    expect(state.state!.device).toBe('webgpu');
    expect(rel(await y.data.toCpu(), want.data)).toBeLessThan(1e-4);
  });

  it('f16 parameters and activations: the state stays f32 and feeds the next step (prefill + steps)', async () => {
    setDeviceBackend('cpu', 'ts');
    const cpu = new GatedLinearAttention(8, 2, { rng: new Rng(41), gateLowRankDim: 4 });
    const gpu = new GatedLinearAttention(8, 2, { rng: new Rng(41), gateLowRankDim: 4 });
    // f16 weights on the GPU; the ts reference in f32 on the same rounded weights and input.
    const weights = cpu.stateDict();
    for (const [n, p] of cpu.namedParameters()) p.data = weights[n]!.astype('f16').astype('f32');
    for (const [n, p] of gpu.namedParameters()) p.data = toWebGpu(weights[n]!.astype('f16'), ctx!);
    const x = new Rng(42).randn([1, 6, 8]).astype('f16');
    const want = noGrad(() => cpu.forward(x.astype('f32')));
    const xg = toWebGpu(x, ctx!);
    const { y, state } = decode(gpu, xg, [4, 1, 1]);
    expect(state.state!.dtype).toBe('f32');
    const got = await y.data.toCpu();
    expect(got.dtype).toBe('f16');
    // f16 rounding of every projection and of o between the ops: KERNELS.md's f16 scale.
    expect(rel(got.astype('f32'), want.data)).toBeLessThan(2e-2);
  });
});

it("runs the README's gated linear attention example and prints what its comments say", async () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const code = /## Gated linear attention\n[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(code).toBeDefined();
  const dir = mkdtempSync(join(tmpdir(), 'nn-gla-readme-'));
  const logged: unknown[][] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    logged.push(args);
  });
  setDeviceBackend('cpu', cpuBackend);
  try {
    writeFileSync(join(dir, 'example.ts'), code!);
    await import(join(dir, 'example.ts'));
  } finally {
    spy.mockRestore();
    rmSync(dir, { recursive: true, force: true });
  }
  expect(logged).toEqual([
    [
      [2, 100, 4, 32],
      [2, 4, 16, 32],
      [2, 100, 4, 16],
    ],
    [12, true],
  ]);
});
