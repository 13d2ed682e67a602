import { type AttentionProblem, resolveAttentionProblem } from '@attnkit/attention';
import { DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { expectClose } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { SOFTMAX_HOOKS, type TiledHooks } from '../hooks.js';
import {
  type HstuRabHook,
  hstuPositionColumn,
  hstuRabTimes,
  hstuTimeColumn,
  hstuTimeThresholds,
} from '../hstu-rab.js';
import { tiledBackwardTs, tiledForwardTs } from './run.js';

/**
 * The built-in bucketed rab hook (HstuRabHook) in the TS kernels, under softmax (so FA1 and the
 * split-K schedule run it too; the hstu family tests it under silu against the float64
 * reference): equal to a dense bias mod holding the same values, and its table gradients equal
 * that bias's dbias summed per column; with Nq < Nk (query row r is position r + Nk - Nq) and
 * tiles smaller than the sequences. Malformed hooks are typed errors naming the field.
 */
const rng = new Rng(5);
const lensK = [11, 0, 23, 6];
const lensQ = [11, 0, 9, 6]; // sequence 2: its last 9 tokens query (bottom-right)
const H = 2;
const N = 23;
const cu = (lens: number[]) =>
  Int32Array.from([0, ...lens.map((_, b) => lens.slice(0, b + 1).reduce((a, x) => a + x, 0))]);
const cuK = cu(lensK);
const cuQ = cu(lensQ);
const Lk = cuK[lensK.length]!;
const Lq = cuQ[lensQ.length]!;
const q = rng.randn([Lq, H, 8]);
const k = rng.randn([Lk, H, 8]);
const v = rng.randn([Lk, H, 8]);
const dO = rng.randn([Lq, H, 8]);
const options = {
  layout: 'THD' as const,
  cuSeqlensQ: cuQ,
  cuSeqlensK: cuK,
  causal: true,
  scale: 0.4,
};
const p: AttentionProblem = resolveAttentionProblem(q, k, v, options);
const stamps = Array.from({ length: Lk }, (_, i) => 1_700_000_000 + i * 977 + (i % 3) * 50_000);
const { keyTime, nextTime } = hstuRabTimes(cuK, stamps);

function hook(posRows: number, timeRows: number): HstuRabHook {
  return {
    kind: 'hstuRab',
    positionTable: rng.randn([posRows, 9]),
    timestampTable: rng.randn([timeRows, 20]),
    keyTime,
    nextTime,
    thresholds: hstuTimeThresholds(20),
    grad: true,
  };
}

/** Columns (pc, tc) of query row r, key j of sequence b (position i = r + nk - nq). */
function columns(r: HstuRabHook, b: number, row: number, j: number): [number, number] {
  const i = row + lensK[b]! - lensQ[b]!;
  const dt = Math.abs(nextTime[cuK[b]! + i]! - keyTime[cuK[b]! + j]!);
  return [hstuPositionColumn(i, j, 9), hstuTimeColumn(r.thresholds!, dt)];
}

/** The dense bias the hook adds, [B, H, N, N] indexed by (query row, key) as a bias mod is. */
function dense(r: HstuRabHook): Tensor {
  const P = r.positionTable!.toFloat32Array();
  const T = r.timestampTable!.toFloat32Array();
  const ps = r.positionTable!.shape[0] === 1 ? 0 : 9;
  const ts = r.timestampTable!.shape[0] === 1 ? 0 : 20;
  const out = new Float32Array(lensK.length * H * N * N);
  for (let b = 0; b < lensK.length; b++)
    for (let h = 0; h < H; h++)
      for (let row = 0; row < lensQ[b]!; row++)
        for (let j = 0; j < lensK[b]!; j++) {
          const [pc, tc] = columns(r, b, row, j);
          out[((b * H + h) * N + row) * N + j] = P[h * ps + pc]! + T[h * ts + tc]!;
        }
  return Tensor.from(out, [lensK.length, H, N, N]);
}

const withRab = (r: HstuRabHook): TiledHooks => ({ ...SOFTMAX_HOOKS, rab: r });
const withBias = (r: HstuRabHook): TiledHooks => ({
  ...SOFTMAX_HOOKS,
  scoreMods: [
    {
      kind: 'bias',
      bias: dense(r),
      batchStride: H * N * N,
      headStride: N * N,
      rowStride: N,
      grad: true,
    },
  ],
});

describe('hstu rab hook (ts kernels, softmax)', () => {
  for (const [name, pr, tr] of [
    ['per-head tables', H, H],
    ['shared position, per-head time', 1, H],
  ] as const) {
    for (const tiles of [
      { algorithm: 'fa2' as const, blockQ: 4, blockK: 5 },
      { algorithm: 'fa1' as const, blockQ: 3, blockK: 7 },
      { algorithm: 'fa2' as const, blockQ: 64, blockK: 64 },
    ]) {
      test(`${name}, ${tiles.algorithm} ${tiles.blockQ}x${tiles.blockK}: equals the dense bias, grads per column`, () => {
        const r = hook(pr, tr);
        const a = tiledForwardTs(p, withRab(r), q, k, v, tiles);
        const d = tiledForwardTs(p, withBias(r), q, k, v, tiles);
        expectClose(a.o.toFloat32Array(), d.o.toFloat32Array(), 1e-5, 'x');
        expectClose(a.lse!.toFloat32Array(), d.lse!.toFloat32Array(), 1e-5, 'x');
        const ga = tiledBackwardTs(p, withRab(r), q, k, v, a.o, a.lse, dO, tiles);
        const gd = tiledBackwardTs(p, withBias(r), q, k, v, d.o, d.lse, dO, tiles);
        for (const n of ['dq', 'dk', 'dv'] as const)
          expectClose(ga[n].toFloat32Array(), gd[n].toFloat32Array(), 1e-5, n);
        const db = gd.dbias!.toFloat32Array();
        const pos = new Float64Array(pr * 9);
        const time = new Float64Array(tr * 20);
        for (let b = 0; b < lensK.length; b++)
          for (let h = 0; h < H; h++)
            for (let row = 0; row < lensQ[b]!; row++)
              for (let j = 0; j < lensK[b]!; j++) {
                const [pc, tc] = columns(r, b, row, j);
                const x = db[((b * H + h) * N + row) * N + j]!;
                pos[(pr === 1 ? 0 : h * 9) + pc] += x;
                time[(tr === 1 ? 0 : h * 20) + tc] += x;
              }
        expect(ga.dPositionTable!.shape).toEqual([pr, 9]);
        expect(ga.dTimestampTable!.shape).toEqual([tr, 20]);
        expectClose(ga.dPositionTable!.toFloat32Array(), Float32Array.from(pos), 1e-5, 'x');
        expectClose(ga.dTimestampTable!.toFloat32Array(), Float32Array.from(time), 1e-5, 'x');
        // Without grad: no table gradients.
        const ng = tiledBackwardTs(
          p,
          withRab({ ...r, grad: false }),
          q,
          k,
          v,
          a.o,
          a.lse,
          dO,
          tiles,
        );
        expect(ng.dPositionTable).toBeUndefined();
        expect(ng.dTimestampTable).toBeUndefined();
      });
    }
  }

  test('the split-K schedule gives the band result', () => {
    const r = hook(H, 1);
    const band = tiledForwardTs(p, withRab(r), q, k, v, { blockQ: 4, blockK: 3 });
    const split = tiledForwardTs(
      p,
      { ...withRab(r), schedule: { kind: 'splitK', splits: 3 } },
      q,
      k,
      v,
      {
        blockQ: 4,
        blockK: 3,
      },
    );
    expectClose(split.o.toFloat32Array(), band.o.toFloat32Array(), 1e-5, 'x');
  });

  test('malformed hooks: typed errors naming the field', () => {
    const r = hook(H, H);
    const run = (x: unknown) => () =>
      tiledForwardTs(p, { ...SOFTMAX_HOOKS, rab: x as HstuRabHook }, q, k, v);
    const cases: Array<[unknown, typeof ValueError | typeof ShapeError, string]> = [
      [{ ...r, kind: 'rab' }, ValueError, 'hooks.rab'],
      [{ ...r, positionTable: undefined, timestampTable: undefined }, ValueError, 'hooks.rab'],
      [{ ...r, grad: 1 }, ValueError, 'hooks.rab.grad'],
      [{ ...r, positionTable: rng.randn([H, 8]) }, ShapeError, 'hooks.rab.positionTable'],
      [{ ...r, positionTable: rng.randn([3, 9]) }, ShapeError, 'hooks.rab.positionTable'],
      [
        { ...r, positionTable: rng.randn([H, 9]).astype('f16') },
        DTypeError,
        'hooks.rab.positionTable',
      ],
      [{ ...r, timestampTable: rng.randn([H, 20, 1]) }, ShapeError, 'hooks.rab.timestampTable'],
      [{ ...r, keyTime: keyTime.slice(1) }, ValueError, 'hooks.rab.keyTime'],
      [{ ...r, keyTime: Float64Array.from(keyTime) }, ValueError, 'hooks.rab.keyTime'],
      [
        { ...r, nextTime: Int32Array.from(nextTime, (x) => x - 1e9) },
        ValueError,
        'hooks.rab.nextTime',
      ],
      [{ ...r, thresholds: Int32Array.of(1, 5) }, ValueError, 'hooks.rab.thresholds'],
      [{ ...r, thresholds: Int32Array.of(0, 5, 4) }, ValueError, 'hooks.rab.thresholds'],
      [{ ...r, thresholds: new Int32Array(21) }, ValueError, 'hooks.rab.thresholds'],
    ];
    for (const [x, error, argument] of cases) {
      expect(run(x), argument).toThrow(error);
      try {
        run(x)();
      } catch (e) {
        expect((e as ValueError).argument, argument).toBe(argument);
      }
    }
    // Permuted tiles: refused (the rab's positions and times are the sequence order's).
    const ident = new Int32Array(H * Lq);
    for (let h = 0; h < H; h++)
      for (let b = 0; b < lensQ.length; b++)
        for (let t = cuQ[b]!; t < cuQ[b + 1]!; t++) ident[h * Lq + t] = t - cuQ[b]!;
    expect(() =>
      tiledForwardTs(p, { ...SOFTMAX_HOOKS, rab: r, permute: { q: ident } }, q, k, v),
    ).toThrow(/^permute: expected no permuted tiles with HSTU's bucketed rab/);
    // The time term needs the THD layout (times per token of the key axis).
    const bq = rng.randn([1, H, 5, 8]);
    const pb = resolveAttentionProblem(bq, bq, bq, {});
    expect(() => tiledForwardTs(pb, { ...SOFTMAX_HOOKS, rab: r }, bq, bq, bq)).toThrow(
      /^hooks.rab.timestampTable: expected the THD layout/,
    );
  });
});
