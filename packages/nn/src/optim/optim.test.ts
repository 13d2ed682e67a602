import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { describe, expect, it } from 'vitest';
import {
  AdamW,
  clipGradNorm,
  clipGradNormOnDevice,
  fromSafetensors,
  Param,
  SGD,
  toSafetensors,
  warmupCosine,
} from '../index.js';

const f64 = (values: number[]) => Tensor.from(values, [values.length], 'f64');
const vals = (p: Param) => Array.from(p.data.toFloat64Array());

function stepWith(opt: SGD | AdamW, p: Param, grad: number[]) {
  p.grad = f64(grad);
  opt.step();
}

describe('optimizers against hand-computed steps', () => {
  it('SGD with momentum (buf = g first, then 0.9 buf + g)', () => {
    const p = new Param(f64([1, 2]));
    const opt = new SGD([p], { lr: 0.1, momentum: 0.9 });
    stepWith(opt, p, [0.5, -1]);
    expect(vals(p)).toEqual([0.95, 2.1]);
    stepWith(opt, p, [0.5, -1]);
    // buf = [0.95, -1.9]
    expect(vals(p)[0]).toBeCloseTo(0.855, 14);
    expect(vals(p)[1]).toBeCloseTo(2.29, 14);
  });

  it('SGD weight decay is coupled (added to g)', () => {
    const p = new Param(f64([1]));
    stepWith(new SGD([p], { lr: 0.1, weightDecay: 0.1 }), p, [0.5]);
    expect(vals(p)[0]).toBeCloseTo(0.94, 15);
  });

  it('AdamW: decoupled decay, bias-corrected moments', () => {
    const p = new Param(f64([1]));
    const opt = new AdamW([p], { lr: 0.1, weightDecay: 0.01, eps: 0 });
    stepWith(opt, p, [0.5]);
    // m^ = 0.5, v^ = 0.25: p = 1 (1 - 0.1 * 0.01) - 0.1 * 0.5 / 0.5
    expect(vals(p)[0]).toBeCloseTo(0.899, 14);
    stepWith(opt, p, [0.5]);
    expect(vals(p)[0]).toBeCloseTo(0.899 * 0.999 - 0.1, 14);
    const none = new Param(f64([3]));
    new AdamW([none], { lr: 0.1 }).step();
    expect(vals(none)).toEqual([3]);
  });

  it('state dict round trip: a restored AdamW continues exactly', () => {
    const run = (steps: number, resume?: Uint8Array) => {
      const p = new Param(f64([1, -1, 0.5]));
      const opt = new AdamW([p], { lr: 0.05 });
      if (resume) {
        const state = fromSafetensors(resume);
        p.data = state.param!;
        const { param: _, ...rest } = state;
        opt.loadStateDict(rest);
      }
      for (let i = 0; i < steps; i++) stepWith(opt, p, [0.3 * i - 0.2, 0.1, -0.4 + i * 0.1]);
      return { p, bytes: toSafetensors({ ...opt.stateDict(), param: p.data }), opt };
    };
    const straight = run(3);
    const half = run(2);
    expect(half.opt.stepCount).toBe(2);
    // The resumed run's gradients: the schedule above keyed on i restarts, so replay step 2's.
    const resumed = run(0, half.bytes);
    expect(resumed.opt.stepCount).toBe(2);
    stepWith(resumed.opt, resumed.p, [0.3 * 2 - 0.2, 0.1, -0.4 + 2 * 0.1]);
    expect(vals(resumed.p)).toEqual(vals(straight.p));
    expect(() => resumed.opt.loadStateDict({ '0.bogus': f64([1, 2, 3]) })).toThrowError(ValueError);
    expect(() => resumed.opt.loadStateDict({ '0.exp_avg': f64([1]) })).toThrowError(
      /expected f64 \[3\]/,
    );
  });

  it('bad hyperparameters are ValueErrors naming them', () => {
    const p = new Param(f64([1]));
    expect(() => new AdamW([p], { lr: -1 })).toThrowError(/lr expected/);
    expect(() => new AdamW([p], { lr: 1, betas: [0.9, 2] })).toThrowError(/betas\[1\]/);
    expect(() => new SGD([f64([1]) as never], { lr: 1 })).toThrowError(
      /params\[0\] expected a Param/,
    );
  });
});

describe('schedule and clipping', () => {
  it('warmup then cosine to minLr', () => {
    const lr = warmupCosine({ lr: 1, warmup: 2, total: 6, minLr: 0.1 });
    expect([0, 1, 2].map(lr)).toEqual([0.5, 1, 1]);
    expect(lr(4)).toBeCloseTo(0.55, 15);
    expect(lr(6)).toBe(0.1);
    expect(lr(100)).toBe(0.1);
  });

  it('clipGradNorm scales by the global norm and returns it', () => {
    const a = new Param(f64([0]));
    const b = new Param(f64([0]));
    a.grad = f64([3]);
    b.grad = f64([4]);
    expect(clipGradNorm([a, b], 1)).toBe(5);
    expect(vals({ data: a.grad } as Param)[0]).toBeCloseTo(0.6, 6);
    expect(vals({ data: b.grad } as Param)[0]).toBeCloseTo(0.8, 6);
    expect(clipGradNorm([a, b], 10)).toBeCloseTo(1, 6);
    expect(vals({ data: a.grad } as Param)[0]).toBeCloseTo(0.6, 6);
  });

  it.each([0.5, 3, 100])(
    'clipGradNormOnDevice scales as clipGradNorm does and returns the norm as a tensor (maxNorm %s)',
    (maxNorm) => {
      const rng = new Rng(2);
      const grads = [rng.randn([3, 4]), rng.randn([5]), rng.randn([2, 2, 3])];
      const params = (): Param[] =>
        grads.map((g) => {
          const p = new Param(rng.randn(g.shape));
          p.grad = g;
          return p;
        });
      const [host, device] = [params(), params()];
      const want = clipGradNorm(host, maxNorm);
      const norm = clipGradNormOnDevice(device, maxNorm)!;
      expect(norm.toFloat32Array()[0]).toBeCloseTo(want, 4);
      host.forEach((p, i) => {
        const w = p.grad!.toFloat32Array();
        device[i]!.grad!.toFloat32Array().forEach((v, j) => {
          expect(v).toBeCloseTo(w[j]!, 5);
        });
      });
    },
  );

  it('clipGradNormOnDevice: no gradients, zero gradients and a bad maxNorm', () => {
    expect(clipGradNormOnDevice([new Param(Tensor.from([1, 2], [2]))], 1)).toBeUndefined();
    const z = new Param(Tensor.from([1, 2], [2]));
    z.grad = Tensor.from([0, 0], [2]);
    clipGradNormOnDevice([z], 1);
    expect(Array.from(z.grad!.toFloat32Array())).toEqual([0, 0]);
    expect(() => clipGradNormOnDevice([z], 0)).toThrow(ValueError);
    expect(() => clipGradNormOnDevice([z], Number.NaN)).toThrow(
      /^clipGradNormOnDevice: maxNorm expected a positive number/,
    );
  });
});
