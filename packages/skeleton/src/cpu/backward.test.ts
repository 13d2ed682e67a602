import {
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  softmaxAttentionReferenceBackward,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { sinkGradients, tiledBackwardTs, tiledForwardTs } from './run.js';
import {
  type Accounting,
  biasCases,
  expectClose,
  type HookCase,
  makeCase,
  poisonAllocations,
  randomHookCase,
  SHAPES,
  VARIANTS,
} from './testing.js';

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

const F32 = toleranceFor({ dtype: 'f32' });

/** The forward's o and lse (softmax) from the kernel under test, as a training step has them. */
function forward(c: HookCase): { o: Tensor | undefined; lse: Tensor | undefined } {
  if (c.hooks.normalize.kind === 'sigmoid') return { o: undefined, lse: undefined };
  const { o, lse } = tiledForwardTs(c.p, c.hooks, c.q, c.k, c.v, c.tiles);
  return { o, lse };
}

function check(c: HookCase): void {
  const ref = moddedAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.ref);
  const { o, lse } = forward(c);
  const g = tiledBackwardTs(c.p, c.hooks, c.q, c.k, c.v, o, lse, c.dO, c.tiles);
  const tol = toleranceFor({ dtype: c.q.dtype as 'f32' });
  for (const name of ['dq', 'dk', 'dv'] as const) {
    expect(g[name].dtype).toBe(c.q.dtype);
    expect(g[name].shape).toEqual(ref[name].shape);
    expectClose(g[name], ref[name], tol, name);
  }
  if (c.hooks.normalize.kind === 'softmax' && c.hooks.normalize.sinks) {
    expect(g.dsinks!.dtype).toBe('f32');
    expect(g.dsinks!.shape).toEqual([c.p.hq]);
    // From the forward's o, stored in q's dtype.
    expectClose(g.dsinks!, ref.dsinks!, tol, 'dsinks');
  } else {
    expect(g.dsinks).toBeUndefined();
  }
}

describe('tiled backward vs the float64 modded reference (seeded random shapes x hooks)', () => {
  const rng = new Rng(20250302);
  const cases: HookCase[] = [];
  VARIANTS.forEach((variant, n) => {
    for (let t = 0; t < 3; t++)
      cases.push(randomHookCase(rng, SHAPES[(n + 3 * t + 1) % SHAPES.length]!, variant));
  });
  test.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => check(c));
});

describe('special cases', () => {
  test('plain softmax equals softmaxAttentionReferenceBackward within 1e-5', () => {
    const rng = new Rng(31);
    for (const shape of ['gqa', 'varlen', 'sparse'] as const) {
      const c = randomHookCase(rng, shape, 'softmax');
      const ref = softmaxAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.attn);
      const { o, lse } = forward(c);
      const g = tiledBackwardTs(c.p, c.hooks, c.q, c.k, c.v, o, lse, c.dO, c.tiles);
      for (const name of ['dq', 'dk', 'dv'] as const) expectClose(g[name], ref[name], F32, name);
    }
  });

  test('half-precision inputs: grads in q dtype within its tolerance', () => {
    const rng = new Rng(32);
    for (const dtype of ['f16', 'bf16'] as const) {
      for (const variant of ['sinks+custom', 'sigmoid+softcap+bias'] as const)
        check(randomHookCase(rng, 'gqa', variant, dtype));
    }
  });

  test('fully masked rows (mask mod) get zero dq and no NaN anywhere, with and without sinks', () => {
    const rng = new Rng(33);
    const [B, H, N, D] = [1, 2, 26, 8];
    const t = {
      q: rng.randn([B, H, N, D]),
      k: rng.randn([B, 1, N, D]),
      v: rng.randn([B, 1, N, D]),
      dO: rng.randn([B, H, N, D]),
    };
    const holes = {
      name: 'holes',
      ts: (_b: number, _h: number, i: number, j: number) =>
        (i < 8 || i >= 16) && i !== 3 && (j < 8 || j <= i),
      blockSize: 8,
    };
    for (const hookOpts of [
      {},
      { sinks: Float32Array.from([1, -2]) },
      { normalize: 'sigmoid' as const },
    ]) {
      const c = makeCase('holes', t, { maskMod: holes }, hookOpts, { blockQ: 4, blockK: 8 });
      check(c);
      const { o, lse } = forward(c);
      const g = tiledBackwardTs(c.p, c.hooks, c.q, c.k, c.v, o, lse, c.dO, c.tiles);
      for (const i of [3, 8, 15]) for (let x = 0; x < D; x++) expect(g.dq.get(0, 1, i, x)).toBe(0);
    }
  });

  test('sigmoid ignores o and lse (undefined is fine)', () => {
    const rng = new Rng(34);
    const c = randomHookCase(rng, 'window causal', 'sigmoid');
    const ref = moddedAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.ref);
    const g = tiledBackwardTs(c.p, c.hooks, c.q, c.k, c.v, undefined, undefined, c.dO, c.tiles);
    expectClose(g.dq, ref.dq, F32, 'dq');
    expect(acct.bytes.rows).toBe(0);
  });
});

describe('sinkGradients', () => {
  test('equals the reference dsinks; rows with LSE = -Infinity contribute nothing', () => {
    const rng = new Rng(35);
    const c = randomHookCase(rng, 'nq>nk causal', 'sinks');
    const ref = moddedAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.ref);
    const fwd = moddedAttentionReference(c.q, c.k, c.v, c.ref);
    const sinks = (c.hooks.normalize as { sinks: Float32Array }).sinks;
    const ds = sinkGradients(
      c.p,
      sinks,
      fwd.o.toFloat32Array(),
      fwd.lse!.toFloat32Array(),
      c.dO.toFloat32Array(),
    );
    expect(ds).toBeInstanceOf(Float32Array);
    expectClose(ds, ref.dsinks!, F32, 'dsinks');
    // -Infinity LSE: the row is skipped, not exp(+inf) * 0 = NaN.
    const lse = fwd.lse!.toFloat32Array().fill(Number.NEGATIVE_INFINITY);
    const none = sinkGradients(c.p, sinks, fwd.o.toFloat32Array(), lse, c.dO.toFloat32Array());
    expect([...none]).toEqual(new Array(c.p.hq).fill(0));
  });
});

describe('bias mods', () => {
  test.each(biasCases(new Rng(23)).map((c) => [c.name, c] as const))('%s', (_name, c) => check(c));
});
