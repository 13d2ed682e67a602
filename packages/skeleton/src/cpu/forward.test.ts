import {
  moddedAttentionReference,
  softmaxAttentionReference,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { planFlashTiles } from '../plan.js';
import { fa1Forward } from './fa1.js';
import { fa2Forward } from './fa2.js';
import { tiledForwardTs } from './run.js';
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

function check(c: HookCase, algorithm: 'fa1' | 'fa2'): void {
  const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
  const { o, lse } = tiledForwardTs(c.p, c.hooks, c.q, c.k, c.v, { ...c.tiles, algorithm });
  expect(o.dtype).toBe(c.q.dtype);
  expect(o.shape).toEqual(ref.o.shape);
  expectClose(o, ref.o, toleranceFor({ dtype: c.q.dtype as 'f32' }), `${algorithm} o`);
  if (c.hooks.normalize.kind === 'sigmoid') {
    expect(lse).toBeUndefined();
  } else {
    expect(lse!.dtype).toBe('f32');
    expect(lse!.shape).toEqual(ref.lse!.shape);
    expectClose(lse!, ref.lse!, F32, `${algorithm} lse`);
  }
}

describe('tiled forward vs the float64 modded reference (seeded random shapes x hooks)', () => {
  const rng = new Rng(20250301);
  const cases: HookCase[] = [];
  VARIANTS.forEach((variant, n) => {
    // Three shapes per variant, rotating so every shape meets every kind of hook.
    for (let t = 0; t < 3; t++)
      cases.push(randomHookCase(rng, SHAPES[(n + 3 * t) % SHAPES.length]!, variant));
  });
  test.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    check(c, 'fa2');
    if (c.hooks.normalize.kind === 'softmax') check(c, 'fa1');
  });
});

describe('plain softmax', () => {
  test('equals softmaxAttentionReference within 1e-6 (both algorithms) and the old entry points', () => {
    const rng = new Rng(5);
    for (const shape of SHAPES) {
      const c = randomHookCase(rng, shape, 'softmax');
      const ref = softmaxAttentionReference(c.q, c.k, c.v, c.attn);
      for (const algorithm of ['fa1', 'fa2'] as const) {
        const { o, lse } = tiledForwardTs(c.p, c.hooks, c.q, c.k, c.v, { ...c.tiles, algorithm });
        expectClose(o, ref.o, 1e-6, `${algorithm} ${c.name} o`);
        expectClose(lse!, ref.lse, 1e-6, `${algorithm} ${c.name} lse`);
        // The pre-hooks exports run the same loops.
        const O = new Float32Array(o.size);
        const L = new Float32Array(lse!.size);
        const plan = planFlashTiles({ ...c.p, nq: c.p.maxSeqQ, nk: c.p.maxSeqK });
        const bq = Math.min(c.tiles.blockQ ?? plan.blockQ, Math.max(1, c.p.maxSeqQ));
        const bk = Math.min(c.tiles.blockK ?? plan.blockK, Math.max(1, c.p.maxSeqK));
        const kernel = algorithm === 'fa1' ? fa1Forward : fa2Forward;
        kernel(c.p, c.q.toFloat32Array(), c.k.toFloat32Array(), c.v.toFloat32Array(), O, L, bq, bk);
        expectClose(O, ref.o, 1e-6, `${algorithm} ${c.name} old o`);
        expectClose(L, ref.lse, 1e-6, `${algorithm} ${c.name} old lse`);
      }
    }
  });
});

describe('half-precision inputs', () => {
  test.each(['f16', 'bf16'] as const)('%s: o in the same dtype within its tolerance', (dtype) => {
    const rng = new Rng(8);
    for (const variant of ['sinks', 'sigmoid+softcap+bias', 'mask document'] as const) {
      const c = randomHookCase(rng, 'gqa', variant, dtype);
      const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
      const { o, lse } = tiledForwardTs(c.p, c.hooks, c.q, c.k, c.v, c.tiles);
      expect(o.dtype).toBe(dtype);
      expectClose(o, ref.o, toleranceFor({ dtype }), `${c.name} o`);
      if (lse) expectClose(lse, ref.lse!, F32, `${c.name} lse`);
    }
  });
});

/** Rows 3 and 8..15 see no key; blocks of value 0, 1 and 2 all occur (blockSize 8). */
const HOLES = {
  name: 'holes',
  ts: (_b: number, _h: number, i: number, j: number) =>
    (i < 8 || i >= 16) && i !== 3 && (j < 8 || j <= i),
  blockSize: 8,
};
const holeRow = (i: number) => i === 3 || (i >= 8 && i < 16);

describe('mask mods', () => {
  const rng = new Rng(21);
  const [B, H, N, D] = [2, 2, 30, 16];
  const q = rng.randn([B, H, N, D]);
  const k = rng.randn([B, H, N, D]);
  const v = rng.randn([B, H, N, D]);
  const dO = rng.randn([B, H, N, D]);

  test.each([
    ['4x8', 4, 8],
    ['8x2', 8, 2],
    ['planned', undefined, undefined],
  ] as const)('fully masked rows: O = 0, LSE = -Infinity, no NaN (tiles %s)', (_n, bq, bk) => {
    const c = makeCase(
      'holes',
      { q, k, v, dO },
      { maskMod: HOLES },
      {},
      { blockQ: bq, blockK: bk },
    );
    // The derived block mask has all three values, so all three tile paths run.
    expect(new Set(c.p.blockSparse!.mask)).toEqual(new Set([0, 1, 2]));
    const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
    for (const algorithm of ['fa1', 'fa2'] as const) {
      const { o, lse } = tiledForwardTs(c.p, c.hooks, q, k, v, { ...c.tiles, algorithm });
      expectClose(o, ref.o, F32, `${algorithm} o`);
      expectClose(lse!, ref.lse!, F32, `${algorithm} lse`);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          for (let i = 0; i < N; i++) {
            expect(lse!.get(b, h, i) === Number.NEGATIVE_INFINITY).toBe(holeRow(i));
            if (holeRow(i)) for (let x = 0; x < D; x++) expect(o.get(b, h, i, x)).toBe(0);
          }
        }
      }
    }
  });

  test('fully masked rows with sinks: O = 0, LSE = the sink', () => {
    const sinks = Float32Array.from([0.5, -1.25]);
    const c = makeCase('holes+sinks', { q, k, v, dO }, { maskMod: HOLES }, { sinks });
    const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
    for (const algorithm of ['fa1', 'fa2'] as const) {
      const { o, lse } = tiledForwardTs(c.p, c.hooks, q, k, v, { algorithm });
      expectClose(o, ref.o, F32, `${algorithm} o`);
      expectClose(lse!, ref.lse!, F32, `${algorithm} lse`);
      for (let h = 0; h < H; h++) {
        expect(lse!.get(1, h, 3)).toBe(sinks[h]);
        for (let x = 0; x < D; x++) expect(o.get(1, h, 9, x)).toBe(0);
      }
    }
  });

  test('sigmoid: masked pairs and fully masked rows contribute 0', () => {
    const c = makeCase(
      'holes sigmoid',
      { q, k, v, dO },
      { maskMod: HOLES },
      { normalize: 'sigmoid' },
    );
    const ref = moddedAttentionReference(c.q, c.k, c.v, c.ref);
    const { o, lse } = tiledForwardTs(c.p, c.hooks, q, k, v, { blockQ: 4, blockK: 4 });
    expect(lse).toBeUndefined();
    expectClose(o, ref.o, F32, 'o');
    for (let x = 0; x < D; x++) expect(o.get(0, 1, 3, x)).toBe(0);
  });

  test('a mask mod that passes everything equals no mask (value-2 path only)', () => {
    const all = { name: 'all', ts: () => true, blockSize: 16 };
    const c = makeCase('all', { q, k, v, dO }, { maskMod: all, causal: true }, {});
    expect([...c.p.blockSparse!.mask].every((x) => x === 2)).toBe(true);
    const plain = makeCase('plain', { q, k, v, dO }, { causal: true }, {});
    const a = tiledForwardTs(c.p, c.hooks, q, k, v, { blockQ: 8, blockK: 16 });
    const b = tiledForwardTs(plain.p, plain.hooks, q, k, v, { blockQ: 8, blockK: 16 });
    expect([...a.o.toFloat32Array()]).toEqual([...b.o.toFloat32Array()]);
  });
});

describe('sigmoid numerics', () => {
  test('huge scores (|s| ~ 1e3) neither overflow nor give NaN', () => {
    const rng = new Rng(9);
    const q = rng.randn([1, 2, 19, 8]);
    const k = rng.randn([1, 2, 23, 8]);
    const v = rng.randn([1, 2, 23, 8]);
    const dO = rng.randn([1, 2, 19, 8]);
    const c = makeCase('big', { q, k, v, dO }, { scale: 300 }, { normalize: 'sigmoid' });
    const ref = moddedAttentionReference(q, k, v, c.ref);
    const { o } = tiledForwardTs(c.p, c.hooks, q, k, v, { blockQ: 5, blockK: 7 });
    expectClose(o, ref.o, F32, 'o');
  });

  test('no keys at all (Nk = 0): O = 0', () => {
    const rng = new Rng(10);
    const q = rng.randn([1, 2, 5, 8]);
    const k = Tensor.zeros([1, 2, 0, 8]);
    const v = Tensor.zeros([1, 2, 0, 4]);
    for (const normalize of ['sigmoid', 'softmax'] as const) {
      const c = makeCase('empty', { q, k, v, dO: q }, {}, { normalize });
      const { o, lse } = tiledForwardTs(c.p, c.hooks, q, k, v);
      expect([...o.toFloat32Array()]).toEqual(new Array(2 * 5 * 4).fill(0));
      if (lse) expect([...lse.toFloat32Array()]).toEqual(new Array(10).fill(-Infinity));
    }
  });
});

describe('bias mods', () => {
  test.each(biasCases(new Rng(22)).map((c) => [c.name, c] as const))('%s', (_name, c) => {
    check(c, 'fa2');
    check(c, 'fa1');
  });
});
