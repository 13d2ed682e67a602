import { DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { describe, expect, it } from 'vitest';
import {
  ConcatKvCache,
  Dropout,
  fromSafetensors,
  LayerNorm,
  Linear,
  MLP,
  MultiHeadAttention,
  mul,
  noGrad,
  RMSNorm,
  Sequential,
  slice,
  sum,
  TransformerBlock,
  toSafetensors,
} from '../index.js';

describe('Module', () => {
  it('names parameters through children, in order; train/eval reaches every child', () => {
    const mlp = new MLP(4, { activation: 'swiglu', hidden: 6, rng: new Rng(1) });
    expect(mlp.namedParameters().map(([n, p]) => `${n}:${p.shape}`)).toEqual([
      'fc1.weight:6,4',
      'gate.weight:6,4',
      'fc2.weight:4,6',
    ]);
    const seq = new Sequential(
      new Linear(3, 5),
      new Dropout(0.5),
      new Linear(5, 2, { bias: false }),
    );
    expect(Object.keys(seq.stateDict())).toEqual(['0.weight', '0.bias', '2.weight']);
    seq.eval();
    expect(seq.layers.every((l) => !l.training)).toBe(true);
    const x = Tensor.from([1, 2, 3], [1, 3]);
    // Dropout is the identity in eval mode.
    expect(Array.from(seq.forward(x).data.toFloat32Array())).toEqual(
      Array.from(
        noGrad(() =>
          seq.layers[2]!.forward(seq.layers[0]!.forward(x as never)),
        ).data.toFloat32Array(),
      ),
    );
  });

  it('state dict round trip through safetensors bytes', () => {
    const a = new TransformerBlock(8, 2, { rng: new Rng(3) });
    const b = new TransformerBlock(8, 2, { rng: new Rng(4) });
    const bytes = toSafetensors(a.stateDict(), { format: 'attnkit-nn' });
    b.loadStateDict(fromSafetensors(bytes));
    for (const [n, p] of b.namedParameters())
      expect(Array.from(p.data.toFloat32Array()), n).toEqual(
        Array.from(a.stateDict()[n]!.toFloat32Array()),
      );
    const x = new Rng(5).randn([1, 3, 8]);
    expect(b.forward(x).data.toFloat32Array()).toEqual(a.forward(x).data.toFloat32Array());
  });

  it('loadStateDict: missing, extra, mis-shaped, wrong dtype keys are typed errors and load nothing', () => {
    const m = new MLP(4, { hidden: 3 });
    const before = m.stateDict();
    const good = new MLP(4, { hidden: 3, rng: new Rng(9) }).stateDict();
    const attempt = (state: Record<string, Tensor>) => () => m.loadStateDict(state);
    const { 'fc2.bias': _, ...missing } = good;
    expect(attempt(missing)).toThrowError(ValueError);
    expect(attempt(missing)).toThrowError(/missing keys \["fc2.bias"\]/);
    expect(attempt({ ...good, extra: Tensor.zeros([1]) })).toThrowError(
      /unexpected keys \["extra"\]/,
    );
    expect(attempt({ ...good, 'fc2.weight': Tensor.zeros([4, 4]) })).toThrowError(ShapeError);
    expect(attempt({ ...good, 'fc2.weight': Tensor.zeros([4, 4]) })).toThrowError(
      /fc2.weight expected shape \[4, 3\]/,
    );
    expect(attempt({ ...good, 'fc2.bias': Tensor.zeros([4], 'f64') })).toThrowError(DTypeError);
    for (const [n, t] of Object.entries(m.stateDict())) expect(t, n).toBe(before[n]);
  });
});

describe('module gradients vs finite differences (f64)', () => {
  it('MLP (swiglu and gelu), LayerNorm, RMSNorm through their parameters', () => {
    const rng = new Rng(21);
    for (const activation of ['swiglu', 'gelu'] as const) {
      const mlp = new MLP(5, { activation, hidden: 7, dtype: 'f64', rng });
      const norm = new LayerNorm(5, { dtype: 'f64' });
      const rms = new RMSNorm(5, { dtype: 'f64' });
      const params = [...norm.parameters(), ...mlp.parameters(), ...rms.parameters()];
      // Non-trivial norm affines, so their gradients are not the ones of 1 and 0.
      for (const p of [...norm.parameters(), ...rms.parameters()])
        p.data = rng.randn(p.shape as number[], 'f64');
      const x = rng.randn([2, 3, 5], 'f64');
      const r = rng.randn([2, 3, 5], 'f64').toFloat64Array();
      const value = () =>
        noGrad(() => rms.forward(mlp.forward(norm.forward(x))))
          .data.toFloat64Array()
          .reduce((a, y, i) => a + y * r[i]!, 0);
      const y = rms.forward(mlp.forward(norm.forward(x)));
      y.backward(Tensor.from(r, [2, 3, 5], 'f64'));
      const h = 1e-6;
      for (const p of params) {
        const base = p.data;
        const g = p.grad!.toFloat64Array();
        for (let e = 0; e < base.size; e++) {
          const probe = (d: number) => {
            const v = base.toFloat64Array();
            v[e]! += d;
            p.data = Tensor.from(v, base.shape as number[], 'f64');
            return value();
          };
          const numeric = (probe(h) - probe(-h)) / (2 * h);
          p.data = base;
          expect(Math.abs(g[e]! - numeric)).toBeLessThan(1e-6 + 1e-5 * Math.abs(numeric));
        }
      }
    }
  });
});

describe('MultiHeadAttention / TransformerBlock', () => {
  it("projections go through linears with each layer's own bias, and through a subclass's forward where one overrides it", () => {
    const x = new Rng(3).randn([2, 3, 16]);
    const mha = new MultiHeadAttention(16, 4, {
      kvHeads: 2,
      bias: true,
      rope: false,
      rng: new Rng(4),
    });
    // One layer without a bias: the others keep theirs.
    (mha.wk as { bias: unknown }).bias = null;
    const y = noGrad(() => mha.forward(x)).data.toFloat64Array();
    // The same projections one by one (what MultiHeadAttention did before linears).
    class ByLayer extends Linear {
      override forward(v: Parameters<Linear['forward']>[0]) {
        return super.forward(v);
      }
    }
    const proto = Object.getPrototypeOf(mha.wq);
    for (const l of [mha.wq, mha.wk, mha.wv]) Object.setPrototypeOf(l, ByLayer.prototype);
    const want = noGrad(() => mha.forward(x)).data.toFloat64Array();
    expect([...y]).toEqual([...want]);
    // A subclass's forward is called (here it scales the output of q).
    class Doubled extends Linear {
      override forward(v: Parameters<Linear['forward']>[0]) {
        return mul(super.forward(v), 2);
      }
    }
    Object.setPrototypeOf(mha.wq, Doubled.prototype);
    const doubled = noGrad(() => mha.forward(x)).data.toFloat64Array();
    expect([...doubled]).not.toEqual([...want]);
    for (const l of [mha.wq, mha.wk, mha.wv]) Object.setPrototypeOf(l, proto);
    const mlp = new MLP(16, { rng: new Rng(5) });
    const plain = noGrad(() => mlp.forward(x)).data.toFloat64Array();
    Object.setPrototypeOf(mlp.fc1, Doubled.prototype);
    expect([...noGrad(() => mlp.forward(x)).data.toFloat64Array()]).not.toEqual([...plain]);
  });

  it('decoding through a KV cache gives the full causal forward, token by token (GQA, RoPE)', () => {
    const block = new TransformerBlock(16, 4, {
      kvHeads: 2,
      mlp: 'swiglu',
      norm: 'rms',
      rng: new Rng(7),
    });
    const x = new Rng(8).randn([2, 7, 16]);
    const full = noGrad(() => block.forward(x)).data.toFloat32Array();
    const cache = new ConcatKvCache();
    const parts = noGrad(() => [
      block.forward(slice(x, 1, 0, 4), { kvCache: cache }),
      block.forward(slice(x, 1, 4, 5), { kvCache: cache }),
      block.forward(slice(x, 1, 5, 7), { kvCache: cache }),
    ]);
    expect(cache.length).toBe(7);
    const got = new Float32Array(full.length);
    // Reassemble [B, T, C] from the three chunks along T.
    let t0 = 0;
    for (const p of parts) {
      const tp = p.shape[1]!;
      const d = p.data.toFloat32Array();
      for (let b = 0; b < 2; b++)
        for (let t = 0; t < tp; t++)
          got.set(d.subarray((b * tp + t) * 16, (b * tp + t + 1) * 16), (b * 7 + t0 + t) * 16);
      t0 += tp;
    }
    for (let i = 0; i < full.length; i++) expect(got[i]).toBeCloseTo(full[i]!, 5);
  });

  it('AdaLN-zero starts as the identity and its modulation gets a gradient', () => {
    const block = new TransformerBlock(8, 2, { adaLNZero: 5, rng: new Rng(2) });
    const x = new Rng(3).randn([2, 3, 8]);
    const cond = new Rng(4).randn([2, 5]);
    const y = block.forward(x, { cond });
    expect(y.data.toFloat32Array()).toEqual(x.toFloat32Array());
    sum(y).backward();
    const g = block.modulation!.weight.grad!.toFloat32Array();
    expect(g.some((v) => v !== 0)).toBe(true);
    expect(() => block.forward(x)).toThrowError(/cond expected/);
    expect(() => new TransformerBlock(8, 3)).toThrowError(/heads expected a positive divisor/);
    expect(() => block.attn.forward(new Rng(1).randn([2, 3, 6]))).toThrowError(ShapeError);
    expect(() => block.attn.forward(new Rng(1).randn([2, 3, 6]))).toThrowError(
      /MultiHeadAttention: x expected \[B, T, 8\], got \[2, 3, 6\]/,
    );
  });
});
