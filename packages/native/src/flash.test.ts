import {
  resolveAttentionProblem,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import {
  type NativeCase as Case,
  engineOrSkip,
  expectClose,
  NATIVE_FLAVORS as FLAVORS,
  poisoned,
  randomNativeCase as randomCase,
} from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { loadNative, type NativeEngine } from './index.js';

const base = engineOrSkip();
// Every ISA this CPU has is checked against the same float64 references.
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];

async function forward(e: NativeEngine, c: Case) {
  const p = c.problem;
  const o = poisoned(p.oShape.reduce((a, x) => a * x, 1));
  const lse = poisoned(p.lseShape.reduce((a, x) => a * x, 1));
  await e.flashForward(p, c.q.toFloat32Array(), c.k.toFloat32Array(), c.v.toFloat32Array(), o, lse);
  return { o, lse };
}

async function backward(e: NativeEngine, c: Case, o: Float32Array, lse: Float32Array) {
  const dq = poisoned(c.q.size);
  const dk = poisoned(c.k.size);
  const dv = poisoned(c.v.size);
  await e.flashBackward(
    c.problem,
    c.q.toFloat32Array(),
    c.k.toFloat32Array(),
    c.v.toFloat32Array(),
    o,
    lse,
    c.dO.toFloat32Array(),
    dq,
    dk,
    dv,
  );
  return { dq, dk, dv };
}

describe.runIf(base)('FlashAttention-2 vs the float64 reference, every ISA', () => {
  const rng = new Rng(4242);
  const cases = Array.from({ length: 4 * FLAVORS.length }, (_, i) =>
    randomCase(rng, FLAVORS[i % FLAVORS.length]!),
  );
  const tol = toleranceFor({ dtype: 'f32' });
  test.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const ref = softmaxAttentionReference(c.q, c.k, c.v, c.options);
    const grads = softmaxAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.options);
    for (const e of engines) {
      const { o, lse } = await forward(e, c);
      expectClose(o, ref.o, tol, `${e.isa} o`);
      expectClose(lse, ref.lse, tol, `${e.isa} lse`);
      const g = await backward(e, c, o, lse);
      expectClose(g.dq, grads.dq, tol, `${e.isa} dq`);
      expectClose(g.dk, grads.dk, tol, `${e.isa} dk`);
      expectClose(g.dv, grads.dv, tol, `${e.isa} dv`);
    }
  });
});

describe.runIf(base)('several query and key blocks per head', () => {
  const rng = new Rng(77);
  test.each([
    ['causal d=128', 1, 2, 1, 333, 290, 128, { causal: true }],
    ['window d=64', 2, 2, 2, 260, 300, 64, { window: [70, 20] as [number, number] }],
    ['sparse 64x64', 1, 4, 2, 256, 256, 64, 'sparse'],
    // Enough query blocks that a forward task takes four of them, the last task fewer.
    ['4 blocks per task', 1, 8, 2, 300, 280, 16, { causal: true }],
  ] as const)('%s', async (_n, b, hq, hkv, nq, nk, d, opt) => {
    const q = rng.randn([b, hq, nq, d]);
    const k = rng.randn([b, hkv, nk, d]);
    const v = rng.randn([b, hkv, nk, d]);
    const dO = rng.randn([b, hq, nq, d]);
    const options =
      opt === 'sparse'
        ? {
            causal: true,
            blockSparse: {
              blockQ: 64,
              blockK: 64,
              mask: Tensor.from(
                Uint8Array.from({ length: hq * 16 }, () => (rng.uniform() < 0.5 ? 1 : 0)),
                [hq, 4, 4],
              ),
            },
          }
        : opt;
    const c: Case = {
      name: '',
      q,
      k,
      v,
      dO,
      options,
      problem: resolveAttentionProblem(q, k, v, options),
    };
    const ref = softmaxAttentionReference(q, k, v, options);
    const grads = softmaxAttentionReferenceBackward(q, k, v, dO, options);
    const e = base!;
    const { o, lse } = await forward(e, c);
    expectClose(o, ref.o, 1e-5, 'o');
    expectClose(lse, ref.lse, 1e-5, 'lse');
    const g = await backward(e, c, o, lse);
    expectClose(g.dq, grads.dq, 1e-5, 'dq');
    expectClose(g.dk, grads.dk, 1e-5, 'dk');
    expectClose(g.dv, grads.dv, 1e-5, 'dv');
  });
});

describe.runIf(base)('masked rows and empty problems', () => {
  test('Nq > Nk causal: rows without keys are exactly 0 / -Infinity with zero gradients', async () => {
    const rng = new Rng(3);
    const [nq, nk] = [150, 70];
    const q = rng.randn([1, 2, nq, 40]);
    const k = rng.randn([1, 2, nk, 40]);
    const v = rng.randn([1, 2, nk, 24]);
    const dO = rng.randn([1, 2, nq, 24]);
    const c: Case = { name: '', q, k, v, dO, options: { causal: true }, problem: undefined! };
    c.problem = resolveAttentionProblem(q, k, v, c.options);
    const ref = softmaxAttentionReference(q, k, v, c.options);
    for (const e of engines) {
      const { o, lse } = await forward(e, c);
      for (let h = 0; h < 2; h++) {
        for (let i = 0; i < nq; i++) {
          const masked = i < nq - nk;
          expect(lse[h * nq + i] === Number.NEGATIVE_INFINITY, `${e.isa} lse row ${i}`).toBe(
            masked,
          );
          if (masked) for (let x = 0; x < 24; x++) expect(o[(h * nq + i) * 24 + x]).toBe(0);
        }
      }
      expectClose(o, ref.o, 1e-5, `${e.isa} o`);
      const { dq } = await backward(e, c, o, lse);
      for (let h = 0; h < 2; h++)
        for (let i = 0; i < (nq - nk) * 40; i++) expect(dq[h * nq * 40 + i]).toBe(0);
    }
  });

  test('Nk = 0: every row is 0 / -Infinity; Nq = 0: nothing to do', async () => {
    for (const [nq, nk] of [
      [9, 0],
      [0, 9],
    ] as const) {
      const q = Tensor.zeros([1, 1, nq, 16]);
      const k = Tensor.zeros([1, 1, nk, 16]);
      const v = Tensor.zeros([1, 1, nk, 16]);
      const p = resolveAttentionProblem(q, k, v);
      for (const e of engines) {
        const o = poisoned(nq * 16);
        const lse = poisoned(nq);
        await e.flashForward(p, q.toFloat32Array(), k.toFloat32Array(), v.toFloat32Array(), o, lse);
        expect([...o].every((x) => x === 0)).toBe(true);
        expect([...lse].every((x) => x === Number.NEGATIVE_INFINITY)).toBe(true);
        const dk = poisoned(nk * 16);
        const dv = poisoned(nk * 16);
        await e.flashBackward(
          p,
          q.toFloat32Array(),
          k.toFloat32Array(),
          v.toFloat32Array(),
          o,
          lse,
          new Float32Array(nq * 16),
          new Float32Array(nq * 16),
          dk,
          dv,
        );
        expect([...dk, ...dv].every((x) => x === 0)).toBe(true);
      }
    }
  });

  test('a block-sparse row of false blocks is a masked row', async () => {
    const rng = new Rng(11);
    const q = rng.randn([1, 1, 64, 16]);
    const k = rng.randn([1, 1, 64, 16]);
    const v = rng.randn([1, 1, 64, 16]);
    // Query block 1 (rows 32..63) keeps nothing.
    const mask = Tensor.from(Uint8Array.from([1, 0, 0, 0]), [2, 2]);
    const options = { blockSparse: { blockQ: 32, blockK: 32, mask } };
    const c: Case = {
      name: '',
      q,
      k,
      v,
      dO: q,
      options,
      problem: resolveAttentionProblem(q, k, v, options),
    };
    const ref = softmaxAttentionReference(q, k, v, options);
    for (const e of engines) {
      const { o, lse } = await forward(e, c);
      for (let i = 32; i < 64; i++) expect(lse[i]).toBe(Number.NEGATIVE_INFINITY);
      expectClose(o, ref.o, 1e-5, `${e.isa} o`);
      expectClose(lse, ref.lse, 1e-5, `${e.isa} lse`);
    }
  });
});

describe.runIf(base)('async calls', () => {
  test('concurrent calls give the results of one-at-a-time calls', async () => {
    const rng = new Rng(5);
    const cases = [randomCase(rng, 'gqa'), randomCase(rng, 'varlen'), randomCase(rng, 'window')];
    const e = base!;
    const sync = [];
    for (const c of cases) sync.push(await forward(e, c));
    const outs = cases.map((c) => ({
      o: poisoned(c.problem.oShape.reduce((a, x) => a * x, 1)),
      lse: poisoned(c.problem.lseShape.reduce((a, x) => a * x, 1)),
    }));
    await Promise.all(
      cases.map((c, i) =>
        e.flashForward(
          c.problem,
          c.q.toFloat32Array(),
          c.k.toFloat32Array(),
          c.v.toFloat32Array(),
          outs[i]!.o,
          outs[i]!.lse,
        ),
      ),
    );
    cases.forEach((_, i) => {
      expect(outs[i]!.o).toEqual(sync[i]!.o);
      expect(outs[i]!.lse).toEqual(sync[i]!.lse);
    });
    const c = cases[0]!;
    const g = await backward(e, c, sync[0]!.o, sync[0]!.lse);
    const dq = poisoned(c.q.size);
    const dk = poisoned(c.k.size);
    const dv = poisoned(c.v.size);
    await e.flashBackward(
      c.problem,
      c.q.toFloat32Array(),
      c.k.toFloat32Array(),
      c.v.toFloat32Array(),
      sync[0]!.o,
      sync[0]!.lse,
      c.dO.toFloat32Array(),
      dq,
      dk,
      dv,
    );
    // dQ sums per-thread partials whose split depends on scheduling: equal up to rounding.
    expectClose(dq, g.dq, 1e-6, 'dq');
    expect(dk).toEqual(g.dk);
    expect(dv).toEqual(g.dv);
  });
});

describe.runIf(base)('backward waves: dQ scratch O(maxSeqQ d) per thread', () => {
  // A problem object is all backwardScratch reads; no arrays of that size are allocated.
  const problem = (b: number, hq: number, hkv: number, n: number, d: number) => ({
    layout: 'BHND' as const,
    batch: b,
    hq,
    hkv,
    d,
    dv: d,
    scale: 1 / Math.sqrt(d),
    left: -1,
    right: 0,
    seqQ: new Int32Array(b).fill(n),
    seqK: new Int32Array(b).fill(n),
    startQ: new Int32Array(b),
    startK: new Int32Array(b),
    maxSeqQ: n,
    maxSeqK: n,
    totalQ: b * n,
    totalK: b * n,
  });

  test('per-thread scratch does not grow with batch x heads', () => {
    for (const e of engines) {
      for (const [n, d] of [
        [1024, 64],
        [4096, 128],
        [8192, 40],
      ] as const) {
        const sizes = [
          [1, 8],
          [2, 16],
          [8, 32],
        ].map(([b, h]) => e.backwardScratch(problem(b!, h!, h! / 2, n, d)).perThreadBytes);
        expect(new Set(sizes).size, `${e.isa} n=${n} d=${d}: ${sizes}`).toBe(1);
        // Two query heads' rows of (padded) d floats, plus small block buffers; allocating dQ
        // partial sums for every (batch, head) per thread would be B*H*N*d*4 bytes.
        const bound = 4 * (2 * Math.max(n, 4096) * (d + 16) + 64 * 1024);
        expect(sizes[0], `${e.isa} n=${n} d=${d}`).toBeLessThanOrEqual(bound);
        const { sharedBytes } = e.backwardScratch(problem(2, 16, 8, n, d));
        expect(sharedBytes).toBe(2 * 4 * 2 * 16 * n);
      }
    }
  });

  test('waves that split a GQA group and cross batches match the reference', async () => {
    const rng = new Rng(909);
    const lens = [1200, 0, 2300, 700];
    const cu = Int32Array.from([
      0,
      ...lens.map((_, i) => lens.slice(0, i + 1).reduce((a, x) => a + x, 0)),
    ]);
    const t = cu[4]!;
    const [hq, hkv, d] = [4, 2, 8];
    const q = rng.randn([t, hq, d]);
    const k = rng.randn([t, hkv, d]);
    const v = rng.randn([t, hkv, d]);
    const dO = rng.randn([t, hq, d]);
    const bhnd = {
      q: rng.randn([2, 4, 1100, d]),
      k: rng.randn([2, 1, 900, d]),
      v: rng.randn([2, 1, 900, d]),
      dO: rng.randn([2, 4, 1100, d]),
    };
    const cases: Case[] = [
      { name: 'THD', q, k, v, dO, options: { layout: 'THD', cuSeqlensQ: cu, causal: true } },
      { name: 'BHND group 4', ...bhnd, options: { causal: true } },
    ].map((c) => ({ ...c, problem: resolveAttentionProblem(c.q, c.k, c.v, c.options) }));
    for (const c of cases) {
      const grads = softmaxAttentionReferenceBackward(c.q, c.k, c.v, c.dO, c.options);
      for (const e of engines) {
        const { o, lse } = await forward(e, c);
        const g = await backward(e, c, o, lse);
        expectClose(g.dq, grads.dq, 1e-5, `${c.name} ${e.isa} dq`);
        expectClose(g.dk, grads.dk, 1e-5, `${c.name} ${e.isa} dk`);
        expectClose(g.dv, grads.dv, 1e-5, `${c.name} ${e.isa} dv`);
      }
    }
  });
});
