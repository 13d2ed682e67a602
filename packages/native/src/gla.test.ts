import { Rng } from '@attnkit/tensor';
import { engineOrSkip, poisoned } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { loadNative, type NativeEngine, type NativeGlaProblem } from './index.js';

/**
 * gla.forward / gla.backward (the GLA chunk form) on every ISA this CPU runs, against a float64
 * recurrence written here from KERNELS.md's definition (S_t = diag(e^{gk_t}) S_{t-1} + k_t^T v_t,
 * o_t = scale q_t S_t) and its reverse-mode gradient (back-propagation through the states),
 * on poisoned outputs: odd lengths, K != V, h0 and dht on and off, varlen, every chunk size,
 * strongly negative gates; and the descriptor's errors.
 */

const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];

interface Case {
  B: number;
  T: number;
  H: number;
  K: number;
  V: number;
  cu?: number[];
}

function seqsOf(c: Case): Array<[number, number, number]> {
  if (c.cu) return c.cu.slice(0, -1).map((s, n) => [0, s, c.cu![n + 1]!]);
  return Array.from({ length: c.B }, (_, b) => [b, 0, c.T]);
}

/** Float64 recurrence and its gradients (dht, dO given). */
function reference(
  c: Case,
  scale: number,
  x: Record<string, Float32Array | undefined>,
  reverse = false,
): Record<string, Float64Array> {
  const { T, H, K, V } = c;
  const seqs = seqsOf(c);
  const N = seqs.length;
  const o = new Float64Array(c.B * T * H * V);
  const ht = new Float64Array(N * H * K * V);
  const dq = new Float64Array(c.B * T * H * K);
  const dk = new Float64Array(dq.length);
  const dgk = new Float64Array(dq.length);
  const dv = new Float64Array(o.length);
  const dh0 = new Float64Array(ht.length);
  const { q, k, v, gk, h0, dO, dht } = x as Record<string, Float32Array>;
  for (const [n, [b, bos, eos]] of seqs.entries()) {
    for (let h = 0; h < H; h++) {
      const sb = (n * H + h) * K * V;
      const states: Float64Array[] = [];
      let S = new Float64Array(K * V);
      if (h0) for (let i = 0; i < K * V; i++) S[i] = h0[sb + i]!;
      // The processing order: t = order(i) for the i-th token.
      const order = (i: number) => (reverse ? eos - 1 - i : bos + i);
      const len = eos - bos;
      for (let i = 0; i < len; i++) {
        const t = order(i);
        states.push(S);
        const r = (b * T + t) * H + h;
        const next = new Float64Array(K * V);
        for (let i = 0; i < K; i++) {
          const a = Math.exp(gk![r * K + i]!);
          for (let j = 0; j < V; j++)
            next[i * V + j] = a * S[i * V + j]! + k![r * K + i]! * v![r * V + j]!;
        }
        S = next;
        for (let j = 0; j < V; j++) {
          let s = 0;
          for (let i = 0; i < K; i++) s += q![r * K + i]! * S[i * V + j]!;
          o[r * V + j] = scale * s;
        }
      }
      ht.set(S, sb);
      const dS = new Float64Array(K * V);
      if (dht) for (let i = 0; i < K * V; i++) dS[i] = dht[sb + i]!;
      for (let i = len - 1; i >= 0; i--) {
        const r = (b * T + order(i)) * H + h;
        const prev = states[i]!;
        // S_t = a prev + k^T v, recomputed.
        for (let i = 0; i < K; i++)
          for (let j = 0; j < V; j++) dS[i * V + j] += scale * q![r * K + i]! * dO![r * V + j]!;
        for (let i = 0; i < K; i++) {
          const a = Math.exp(gk![r * K + i]!);
          let sq = 0;
          let sk = 0;
          let sg = 0;
          for (let j = 0; j < V; j++) {
            const St = a * prev[i * V + j]! + k![r * K + i]! * v![r * V + j]!;
            sq += St * dO![r * V + j]!;
            sk += dS[i * V + j]! * v![r * V + j]!;
            sg += dS[i * V + j]! * prev[i * V + j]!;
          }
          dq[r * K + i] = scale * sq;
          dk[r * K + i] = sk;
          dgk[r * K + i] = a * sg;
        }
        for (let j = 0; j < V; j++) {
          let s = 0;
          for (let i = 0; i < K; i++) s += k![r * K + i]! * dS[i * V + j]!;
          dv[r * V + j] = s;
        }
        for (let i = 0; i < K; i++) {
          const a = Math.exp(gk![r * K + i]!);
          for (let j = 0; j < V; j++) dS[i * V + j] *= a;
        }
      }
      dh0.set(dS, sb);
    }
  }
  return { o, ht, dq, dk, dv, dgk, dh0 };
}

function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

function normal(rng: Rng, n: number): Float32Array {
  const x = new Float32Array(n);
  rng.fillNormal(x);
  return x;
}

function inputs(rng: Rng, c: Case, gate: (r: Rng) => number) {
  const rows = c.B * c.T * c.H;
  const N = seqsOf(c).length;
  const state = N * c.H * c.K * c.V;
  return {
    q: normal(rng, rows * c.K),
    k: normal(rng, rows * c.K),
    v: normal(rng, rows * c.V),
    gk: Float32Array.from({ length: rows * c.K }, () => gate(rng)),
    h0: normal(rng, state),
    dO: normal(rng, rows * c.V),
    dht: normal(rng, state),
  };
}

const logsigmoid = (x: number) => -Math.log1p(Math.exp(-x));

function problemOf(c: Case, scale: number, C: number): NativeGlaProblem {
  const p: NativeGlaProblem = { batch: c.B, t: c.T, h: c.H, k: c.K, v: c.V, scale, chunkSize: C };
  if (c.cu) p.sequences = c.cu.length - 1;
  return p;
}

/** C = 0: the recurrent form (reverse with `reverse`). */
async function run(
  e: NativeEngine,
  c: Case,
  C: number,
  x: ReturnType<typeof inputs>,
  withStates: boolean,
  reverse = false,
) {
  const scale = 1 / Math.sqrt(c.K);
  const p = problemOf(c, scale, C);
  if (C === 0) {
    delete p.chunkSize;
    p.form = 'recurrent';
    p.reverse = reverse;
  }
  const rows = c.B * c.T * c.H;
  const state = x.h0.length;
  const cuSeqlens = c.cu ? Int32Array.from(c.cu) : undefined;
  const o = poisoned(rows * c.V);
  const ht = poisoned(state);
  const h0 = withStates ? x.h0 : undefined;
  await e.run('gla.forward', p, { q: x.q, k: x.k, v: x.v, gk: x.gk, h0, cuSeqlens }, { o, ht });
  const g = {
    dq: poisoned(rows * c.K),
    dk: poisoned(rows * c.K),
    dv: poisoned(rows * c.V),
    dgk: poisoned(rows * c.K),
    dh0: poisoned(state),
  };
  const dht = withStates ? x.dht : undefined;
  await e.run(
    'gla.backward',
    p,
    { q: x.q, k: x.k, v: x.v, gk: x.gk, h0, dO: x.dO, dht, cuSeqlens },
    g,
  );
  const want = reference(c, scale, { ...x, h0, dht }, reverse);
  return { got: { o, ht, ...g } as Record<string, Float32Array>, want };
}

const cases: Array<[string, Case, number]> = [
  ['B 2, T 100, H 2, K 16, V 24, C 64', { B: 2, T: 100, H: 2, K: 16, V: 24 }, 64],
  ['B 1, T 37, H 3, K 5, V 7, C 16', { B: 1, T: 37, H: 3, K: 5, V: 7 }, 16],
  ['B 1, T 130, H 1, K 32, V 20, C 32', { B: 1, T: 130, H: 1, K: 32, V: 20 }, 32],
  ['B 1, T 300, H 1, K 20, V 33, C 128', { B: 1, T: 300, H: 1, K: 20, V: 33 }, 128],
  ['B 1, T 260, H 1, K 8, V 8, C 256', { B: 1, T: 260, H: 1, K: 8, V: 8 }, 256],
  [
    'varlen [0, 17, 17, 90, 161], H 2, K 12, V 9, C 32',
    { B: 1, T: 161, H: 2, K: 12, V: 9, cu: [0, 17, 17, 90, 161] },
    32,
  ],
];

describe.each(engines.map((e) => [e.isa, e] as const))('%s', (_isa, e) => {
  test.each(cases)('%s: every output and gradient vs float64', async (_name, c, C) => {
    for (const withStates of [true, false]) {
      const rng = new Rng(1000 + c.T + C);
      const x = inputs(rng, c, (r) => logsigmoid(r.normal()) / 4);
      const { got, want } = await run(e, c, C, x, withStates);
      for (const name of ['o', 'ht', 'dq', 'dk', 'dv', 'dgk', 'dh0']) {
        const a = got[name]!;
        expect(
          a.every((y) => Number.isFinite(y)),
          `${name} finite`,
        ).toBe(true);
        expect(relL2(a, want[name]!), `${name} (states ${withStates})`).toBeLessThan(2e-5);
      }
    }
  });

  test.each([
    ['forward order', false],
    ['reverse', true],
  ] as const)('recurrent form, %s: every output and gradient vs float64', async (_n, reverse) => {
    for (const [, c] of cases) {
      const rng = new Rng(2000 + c.T);
      const x = inputs(rng, c, (r) => logsigmoid(r.normal()) / 4);
      const { got, want } = await run(e, c, 0, x, true, reverse);
      for (const name of ['o', 'ht', 'dq', 'dk', 'dv', 'dgk', 'dh0'])
        expect(relL2(got[name]!, want[name]!), `${name} T ${c.T}`).toBeLessThan(2e-5);
    }
  });

  test('gk = -20 per step in half the channels: no overflow, dgk kept to relative precision', async () => {
    const c: Case = { B: 1, T: 150, H: 1, K: 16, V: 16 };
    const rng = new Rng(77);
    const x = inputs(rng, c, (r) => logsigmoid(r.normal()));
    for (let i = 0; i < x.gk.length; i += 2) x.gk[i] = -20;
    for (const C of [64, 0]) {
      const { got, want } = await run(e, c, C, x, true);
      for (const name of ['o', 'ht', 'dq', 'dk', 'dv', 'dgk', 'dh0'])
        expect(relL2(got[name]!, want[name]!), `${name} C ${C}`).toBeLessThan(2e-5);
      const strong = (a: ArrayLike<number>) => Array.from(a).filter((_, i) => i % 2 === 0);
      expect(relL2(strong(got.dgk!), strong(want.dgk!)), `C ${C}`).toBeLessThan(1e-5);
    }
  });
});

describe.skipIf(!base)('descriptor errors', () => {
  const e = base!;
  const c: Case = { B: 1, T: 20, H: 1, K: 4, V: 4 };
  const x = () => inputs(new Rng(3), c, () => -0.1);
  const p = problemOf(c, 0.5, 16);
  test('a positive gate names inputs.gk[i]', async () => {
    const y = x();
    y.gk[7] = 0.5;
    await expect(
      e.run('gla.forward', p, { q: y.q, k: y.k, v: y.v, gk: y.gk }, { o: new Float32Array(80) }),
    ).rejects.toThrow(/^inputs\.gk\[7\]: expected a finite log-space gate <= 0/);
  });
  test('NaN, -inf and +inf gates are refused too, at their index', async () => {
    for (const [at, bad] of [
      [0, Number.NaN],
      [33, Number.NEGATIVE_INFINITY],
      [79, Number.POSITIVE_INFINITY],
    ] as const) {
      const y = x();
      y.gk[at] = bad;
      await expect(
        e.run('gla.forward', p, { q: y.q, k: y.k, v: y.v, gk: y.gk }, { o: new Float32Array(80) }),
      ).rejects.toThrow(new RegExp(`^inputs\\.gk\\[${at}\\]`));
    }
  });
  test('chunk sizes other than powers of two in [16, 256]', async () => {
    const y = x();
    for (const chunkSize of [8, 48, 512])
      await expect(
        e.run(
          'gla.forward',
          { ...p, chunkSize },
          { q: y.q, k: y.k, v: y.v, gk: y.gk },
          { o: new Float32Array(80) },
        ),
      ).rejects.toThrow(/^problem\.chunkSize/);
  });
  test('form: chunkSize only for the chunk form, reverse only for the recurrent one', async () => {
    const y = x();
    const io = [{ q: y.q, k: y.k, v: y.v, gk: y.gk }, { o: new Float32Array(80) }] as const;
    await expect(e.run('gla.forward', { ...p, form: 'recurrent' }, ...io)).rejects.toThrow(
      /^problem\.chunkSize: expected undefined/,
    );
    await expect(e.run('gla.forward', { ...p, reverse: true }, ...io)).rejects.toThrow(
      /^problem\.reverse: expected undefined/,
    );
    await expect(
      e.run('gla.forward', { ...p, form: 'sideways' as 'chunk' }, ...io),
    ).rejects.toThrow(/^problem\.form/);
  });
  test('cuSeqlens: required with sequences, checked', async () => {
    const y = x();
    const vp = { ...p, sequences: 2 };
    await expect(
      e.run('gla.forward', vp, { q: y.q, k: y.k, v: y.v, gk: y.gk }, { o: new Float32Array(80) }),
    ).rejects.toThrow(/^inputs\.cuSeqlens/);
    await expect(
      e.run(
        'gla.forward',
        vp,
        { q: y.q, k: y.k, v: y.v, gk: y.gk, cuSeqlens: Int32Array.from([0, 12, 19]) },
        { o: new Float32Array(80) },
      ),
    ).rejects.toThrow(/^inputs\.cuSeqlens\[2\]: expected t = 20/);
  });
});
