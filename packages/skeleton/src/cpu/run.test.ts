import { resolveScoreMods, type ScoreMod, softcap } from '@attnkit/attention';
import {
  type AttnkitError,
  DTypeError,
  Rng,
  ShapeError,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { SOFTMAX_HOOKS, type TiledHooks } from '../hooks.js';
import { planFlashTiles, workspaceBytes } from '../plan.js';
import { tiledBackwardTs, tiledForwardTs, tsSupports } from './run.js';
import { type Accounting, makeCase, poisonAllocations, WIGGLE } from './testing.js';

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

function expectError(call: () => unknown, Err: typeof AttnkitError, argument: string): void {
  expect(call, argument).toThrow(Err);
  expect(call).toThrow(expect.objectContaining({ argument }));
  expect(call).toThrow(new RegExp(`^${argument.replace('.', '\\.')}: expected`));
}

const rng = new Rng(41);
const t = {
  q: rng.randn([1, 2, 20, 8]),
  k: rng.randn([1, 2, 20, 8]),
  v: rng.randn([1, 2, 20, 8]),
  dO: rng.randn([1, 2, 20, 8]),
};
const { q, k, v, dO } = t;
const plain = makeCase('plain', t, {}, {});
const sig = makeCase('sigmoid', t, {}, { normalize: 'sigmoid' });
const NO_GRAD: ScoreMod = { kind: 'custom', name: 'nograd', ts: (s) => 2 * s };
const noGrad = makeCase('nograd', t, {}, { scoreMod: [NO_GRAD] });

describe('tsSupports', () => {
  test('softmax with any mods on both algorithms; sigmoid on FA2 only', () => {
    expect(tsSupports(SOFTMAX_HOOKS, 'forward')).toBe(true);
    expect(tsSupports(SOFTMAX_HOOKS, 'backward', 'fa1')).toBe(true);
    const mods = resolveScoreMods([softcap(2), WIGGLE], plain.p, 'cpu');
    const sinks: TiledHooks = {
      normalize: { kind: 'softmax', sinks: new Float32Array(2) },
      scoreMods: mods,
    };
    expect(tsSupports(sinks, 'forward', 'fa1')).toBe(true);
    expect(tsSupports(sinks, 'backward')).toBe(true);
    expect(tsSupports(sig.hooks, 'forward', 'fa2')).toBe(true);
    expect(tsSupports(sig.hooks, 'backward')).toBe(true);
    expect(tsSupports(sig.hooks, 'forward', 'fa1')).toMatch(/FA1.*softmax/);
  });

  test('a custom mod without tsGrad runs forward only', () => {
    expect(tsSupports(noGrad.hooks, 'forward')).toBe(true);
    expect(tsSupports(noGrad.hooks, 'backward')).toMatch(/nograd.*tsGrad/);
  });
});

describe('argument errors', () => {
  const { o, lse } = tiledForwardTs(plain.p, plain.hooks, q, k, v);
  const sparse = makeCase(
    'sparse',
    t,
    { maskMod: { name: 'm', ts: (_b, _h, i, j) => j <= i, blockSize: 8 } },
    {},
  );
  const bad: [string, () => unknown, typeof AttnkitError, string][] = [
    [
      'blockQ 0',
      () => tiledForwardTs(plain.p, plain.hooks, q, k, v, { blockQ: 0 }),
      ValueError,
      'blockQ',
    ],
    [
      'blockK 2.5',
      () => tiledForwardTs(plain.p, plain.hooks, q, k, v, { blockK: 2.5 }),
      ValueError,
      'blockK',
    ],
    [
      'blockQ not dividing the mask-mod block',
      () => tiledForwardTs(sparse.p, sparse.hooks, q, k, v, { blockQ: 3 }),
      ValueError,
      'blockQ',
    ],
    [
      'blockK not dividing the mask-mod block',
      () => tiledBackwardTs(sparse.p, sparse.hooks, q, k, v, o, lse, dO, { blockK: 16 }),
      ValueError,
      'blockK',
    ],
    [
      'algorithm',
      () => tiledForwardTs(plain.p, plain.hooks, q, k, v, { algorithm: 'fa3' as 'fa2' }),
      ValueError,
      'algorithm',
    ],
    [
      'fa1 with sigmoid',
      () => tiledForwardTs(sig.p, sig.hooks, q, k, v, { algorithm: 'fa1' }),
      ValueError,
      'algorithm',
    ],
    [
      'fa1 with sigmoid, backward',
      () =>
        tiledBackwardTs(sig.p, sig.hooks, q, k, v, undefined, undefined, dO, { algorithm: 'fa1' }),
      ValueError,
      'algorithm',
    ],
    [
      'f64',
      () => tiledForwardTs(plain.p, plain.hooks, q.astype('f64'), k.astype('f64'), v.astype('f64')),
      DTypeError,
      'q',
    ],
    [
      'custom mod without tsGrad',
      () => tiledBackwardTs(noGrad.p, noGrad.hooks, q, k, v, o, lse, dO),
      ValueError,
      'scoreMod.tsGrad',
    ],
    [
      'softmax backward without o',
      () => tiledBackwardTs(plain.p, plain.hooks, q, k, v, undefined, lse, dO),
      ShapeError,
      'o',
    ],
    [
      'o of the wrong shape',
      () => tiledBackwardTs(plain.p, plain.hooks, q, k, v, dO.reshape([1, 2, 8, 20]), lse, dO),
      ShapeError,
      'o',
    ],
    [
      'lse of the wrong dtype',
      () => tiledBackwardTs(plain.p, plain.hooks, q, k, v, o, (lse as Tensor).astype('f16'), dO),
      DTypeError,
      'lse',
    ],
    [
      'dO of the wrong dtype',
      () => tiledBackwardTs(sig.p, sig.hooks, q, k, v, undefined, undefined, dO.astype('bf16')),
      DTypeError,
      'dO',
    ],
    [
      'sinks of the wrong length',
      () =>
        tiledForwardTs(
          plain.p,
          { normalize: { kind: 'softmax', sinks: new Float32Array(3) }, scoreMods: [] },
          q,
          k,
          v,
        ),
      ValueError,
      'sinks',
    ],
    [
      'sigmoid without a bias per batch entry',
      () =>
        tiledForwardTs(
          plain.p,
          { normalize: { kind: 'sigmoid', bias: new Float32Array(0) }, scoreMods: [] },
          q,
          k,
          v,
        ),
      ValueError,
      'bias',
    ],
  ];
  test.each(bad)('%s', (_name, call, Err, argument) => expectError(call, Err, argument));

  test('options beyond the tile options are ignored (the families pass theirs through)', () => {
    const opts = { blockQ: 4, causal: true, scoreMod: softcap(1) } as never;
    expect(() => tiledForwardTs(plain.p, plain.hooks, q, k, v, opts)).not.toThrow();
  });
});

describe('tile scratch', () => {
  test('bounded by workspaceBytes (with the mods flag for the backward) and no per-row buffer for sigmoid', () => {
    const mods = makeCase('mods', t, {}, { scoreMod: [softcap(2)] });
    const plan = planFlashTiles({ nq: 20, nk: 20, d: 8, dv: 8 });
    const { o, lse } = tiledForwardTs(mods.p, mods.hooks, q, k, v);
    expect(acct.bytes.tile).toBeLessThanOrEqual(workspaceBytes(plan, 8, 8));
    const before = acct.bytes.tile;
    tiledBackwardTs(mods.p, mods.hooks, q, k, v, o, lse, dO);
    // The mods' chain-rule tile is the one buffer beyond the plain workspace.
    expect(acct.bytes.tile - before).toBeGreaterThan(workspaceBytes(plan, 8, 8));
    expect(acct.bytes.tile - before).toBeLessThanOrEqual(
      workspaceBytes(plan, 8, 8, { scoreMods: true }),
    );
    const rows = acct.bytes.rows;
    tiledBackwardTs(sig.p, sig.hooks, q, k, v, undefined, undefined, dO);
    expect(acct.bytes.rows).toBe(rows);
  });
});
