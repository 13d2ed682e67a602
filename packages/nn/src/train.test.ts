import { Rng, Tensor } from '@attnkit/tensor';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AdamW,
  clipGradNorm,
  crossEntropy,
  deviceBackendOf,
  Embedding,
  LayerNorm,
  Linear,
  Module,
  registerNativeKernels,
  relu,
  setDeviceBackend,
  TransformerBlock,
  type Var,
  type VarLike,
  warmupCosine,
} from './index.js';

// Both models train on each cpu backend (ts, and native when its engine loads) from fixed
// seeds; the bounds hold with margin (the losses reached are in the comments, ts / native) and
// a regression in any op's gradient breaks them.

class TwoLayer extends Module {
  fc1: Linear;
  fc2: Linear;
  constructor(rng: Rng) {
    super();
    this.fc1 = this.child('fc1', new Linear(2, 32, { rng }));
    this.fc2 = this.child('fc2', new Linear(32, 2, { rng }));
  }
  forward(x: VarLike): Var {
    return this.fc2.forward(relu(this.fc1.forward(x)));
  }
}

class TinyGpt extends Module {
  tok: Embedding;
  block: TransformerBlock;
  norm: LayerNorm;
  head: Linear;
  constructor(vocab: number, dim: number, rng: Rng) {
    super();
    this.tok = this.child('tok', new Embedding(vocab, dim, { rng, std: 0.5 }));
    this.block = this.child('block', new TransformerBlock(dim, 4, { rng }));
    this.norm = this.child('norm', new LayerNorm(dim));
    this.head = this.child('head', new Linear(dim, vocab, { rng }));
  }
  forward(ids: Tensor): Var {
    return this.head.forward(this.norm.forward(this.block.forward(this.tok.forward(ids))));
  }
}

const backends = registerNativeKernels() === true ? ['ts', 'native'] : ['ts'];

describe.each(backends)('training on %s from a fixed seed', (backend) => {
  const before = deviceBackendOf('cpu')!;
  beforeAll(() => setDeviceBackend('cpu', backend));
  afterAll(() => setDeviceBackend('cpu', before));

  it('a two-layer MLP learns XOR-quadrants (cross-entropy < 0.05 after 300 AdamW steps)', () => {
    const rng = new Rng(11);
    const n = 64;
    const x = rng
      .rand([n, 2])
      .toFloat32Array()
      .map((u) => 2 * u - 1);
    const y = Int32Array.from({ length: n }, (_, i) => (x[2 * i]! * x[2 * i + 1]! > 0 ? 1 : 0));
    const [xs, ys] = [Tensor.from(x, [n, 2]), Tensor.from(y, [n])];
    const model = new TwoLayer(rng);
    const opt = new AdamW(model.parameters(), { lr: 0.03, weightDecay: 0 });
    let loss = Number.POSITIVE_INFINITY;
    for (let step = 0; step < 300; step++) {
      opt.zeroGrad();
      const l = crossEntropy(model.forward(xs), ys);
      l.backward();
      opt.step();
      loss = l.item();
    }
    expect(loss).toBeLessThan(0.05); // reaches 0.017948 / 0.017948
  });

  it('a one-block transformer (C 32, T 16) learns strided counting (loss < 0.05 after 100 steps)', () => {
    const rng = new Rng(5);
    const [vocab, b, t] = [16, 8, 16];
    const model = new TinyGpt(vocab, 32, rng);
    const steps = 100;
    const schedule = warmupCosine({ lr: 1e-2, warmup: 10, total: steps, minLr: 1e-3 });
    const opt = new AdamW(model.parameters(), { lr: schedule(0), weightDecay: 0.01 });
    let loss = Number.POSITIVE_INFINITY;
    for (let step = 0; step < steps; step++) {
      // Each sequence counts from a random start with a stride of 1, 2 or 3 (mod vocab): the
      // stride is only known from the previous tokens, so the model has to attend.
      const ids = new Int32Array(b * t);
      const targets = new Int32Array(b * t);
      for (let i = 0; i < b; i++) {
        const start = rng.int(0, vocab);
        const stride = rng.int(1, 4);
        for (let j = 0; j < t; j++) {
          ids[i * t + j] = (start + j * stride) % vocab;
          // The first prediction cannot know the stride: ignored (ignoreIndex -100).
          targets[i * t + j] = j === 0 ? -100 : (start + (j + 1) * stride) % vocab;
        }
      }
      opt.lr = schedule(step);
      opt.zeroGrad();
      const logits = model.forward(Tensor.from(ids, [b, t]));
      const l = crossEntropy(logits, Tensor.from(targets, [b, t]));
      l.backward();
      clipGradNorm(model.parameters(), 1);
      opt.step();
      loss = l.item();
    }
    expect(loss).toBeLessThan(0.05); // reaches 0.0096499 / 0.0096499
  });
});
