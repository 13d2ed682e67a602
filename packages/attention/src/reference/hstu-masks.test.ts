import { Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { dot, numericGrad, randn, relL2 } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import {
  type HstuBucketedRab,
  type HstuMaskRule,
  type HstuOptions,
  hstuAllowed,
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
  hstuBucketedRabDense,
  hstuCachedReference,
  hstuPositionBucket,
  hstuTimeBucket,
} from './hstu.js';

const rng = new Rng(0x4571);

/** Random sequence lengths in [0, n], the first few forced odd, and their offsets. */
function jagged(batch: number, n: number): number[] {
  const offsets = [0];
  for (let b = 0; b < batch; b++) {
    let len = rng.int(0, n + 1);
    if (b < 2 && len % 2 === 0) len = Math.max(1, len - 1);
    offsets.push(offsets[b]! + len);
  }
  return offsets;
}

/** Non-decreasing integer timestamps with repeats (dt = 0) and a wide spread of gaps. */
function stamps(L: number): number[] {
  const out = [rng.int(0, 1_000_000)];
  for (let t = 1; t < L; t++)
    out.push(out[t - 1]! + (rng.uniform() < 0.2 ? 0 : rng.int(1, 20_000)));
  return out;
}

/** Y = (silu(alpha Q K^T + bias) / N masked by `allowed`) V, written out pair by pair. */
function brute(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  offsets: readonly number[],
  N: number,
  alpha: number,
  allowed: (b: number, i: number, j: number, len: number) => boolean,
  bias: (b: number, h: number, i: number, j: number) => number = () => 0,
): Float64Array {
  const [L, H, D] = q.shape as [number, number, number];
  const Dv = v.shape[2]!;
  const out = new Float64Array(L * H * Dv);
  for (let b = 0; b + 1 < offsets.length; b++) {
    const s0 = offsets[b]!;
    const len = offsets[b + 1]! - s0;
    for (let i = 0; i < len; i++) {
      for (let j = 0; j < len; j++) {
        if (!allowed(b, i, j, len)) continue;
        for (let h = 0; h < H; h++) {
          let z = bias(b, h, i, j);
          for (let c = 0; c < D; c++) z += alpha * q.get(s0 + i, h, c) * k.get(s0 + j, h, c);
          const a = z / (1 + Math.exp(-z)) / N;
          for (let c = 0; c < Dv; c++) out[((s0 + i) * H + h) * Dv + c]! += a * v.get(s0 + j, h, c);
        }
      }
    }
  }
  return out;
}

function maskRows(n: number, rule: HstuMaskRule): string[] {
  return Array.from({ length: n }, (_, i) =>
    Array.from({ length: n }, (_, j) => (hstuAllowed(i, j, n, rule) ? '1' : '0')).join(''),
  );
}

describe('hstuAllowed', () => {
  // Printed by generative-recommenders' _get_valid_attn_mask (pt_hstu_attention.py) for one
  // sequence of length N = maxSeqLen; rows are queries, '1' = allowed.
  test.each([
    [
      'numTargets 2',
      7,
      { numTargets: 2 },
      ['1000000', '1100000', '1110000', '1111000', '1111100', '1111110', '1111101'],
    ],
    [
      'contextualSeqLen 2',
      7,
      { contextualSeqLen: 2 },
      ['1111111', '1111111', '1110000', '1111000', '1111100', '1111110', '1111111'],
    ],
    [
      'maxAttnLen 2',
      7,
      { maxAttnLen: 2 },
      ['1000000', '1100000', '1110000', '0111000', '0011100', '0001110', '0000111'],
    ],
    [
      'numTargets 2, contextualSeqLen 2, maxAttnLen 2',
      8,
      { numTargets: 2, contextualSeqLen: 2, maxAttnLen: 2 },
      [
        '11111100',
        '11111100',
        '11100000',
        '11110000',
        '00111000',
        '00011100',
        '00001110',
        '00001101',
      ],
    ],
    [
      'numTargets 1, maxAttnLen 1, minFullAttnSeqLen 2',
      7,
      { numTargets: 1, maxAttnLen: 1, minFullAttnSeqLen: 2 },
      ['1000000', '1100000', '0110000', '0011000', '1111100', '1111110', '1111111'],
    ],
    [
      'non-causal, numTargets 2',
      6,
      { causal: false, numTargets: 2 },
      ['111111', '111111', '111111', '111111', '111110', '111101'],
    ],
  ] as const)('%s: the upstream matrix', (_name, n, rule, rows) => {
    expect(maskRows(n, rule)).toEqual(rows);
  });

  test('no options: j <= i (causal) or everything (non-causal); numTargets 0 changes nothing', () => {
    for (const n of [1, 4, 7]) {
      for (const causal of [true, false]) {
        const want = Array.from({ length: n }, (_, i) =>
          Array.from({ length: n }, (_, j) => (!causal || j <= i ? '1' : '0')).join(''),
        );
        expect(maskRows(n, { causal })).toEqual(want);
        expect(maskRows(n, { causal, numTargets: 0 })).toEqual(want);
      }
    }
  });
});

describe('hstuAttentionReference with masks (vs a brute-force loop over an explicit mask)', () => {
  const N = 9;
  const offsets = jagged(4, N);
  const L = offsets[4]!;
  const [H, D, Dv] = [2, 3, 5];
  const q = randn(rng, [L, H, D]);
  const k = randn(rng, [L, H, D]);
  const v = randn(rng, [L, H, Dv]);
  const lens = offsets.slice(1).map((o, b) => o - offsets[b]!);
  const targets = lens.map((n) => rng.int(0, n + 1));
  // Independent statements of each mask on its own (causal).
  const single: [
    string,
    Partial<HstuOptions>,
    (b: number, i: number, j: number, n: number) => boolean,
  ][] = [
    // History is causal; a target sees the whole history and itself.
    [
      'numTargets',
      { numTargets: targets },
      (b, i, j, n) => (i < n - targets[b]! ? j <= i : j < n - targets[b]! || j === i),
    ],
    // The first 3 rows see every token; the others are causal (and so see the prefix).
    ['contextualSeqLen 3', { contextualSeqLen: 3 }, (_b, i, j) => i < 3 || j <= i],
    ['maxAttnLen 2', { maxAttnLen: 2 }, (_b, i, j) => j <= i && i - j <= 2],
  ];
  test.each(single)('%s', (_name, extra, allowed) => {
    const opts: HstuOptions = { seqOffsets: offsets, maxSeqLen: N, alpha: 0.7, ...extra };
    const want = brute(q, k, v, offsets, N, 0.7, allowed);
    expect(relL2(hstuAttentionReference(q, k, v, opts).o.toFloat64Array(), want)).toBeLessThan(
      1e-14,
    );
  });

  test.each([
    ['all masks, causal', true, { contextualSeqLen: 2, maxAttnLen: 3 }],
    [
      'all masks with minFullAttnSeqLen',
      true,
      { contextualSeqLen: 1, maxAttnLen: 1, minFullAttnSeqLen: 2 },
    ],
    ['targets and window, non-causal', false, { maxAttnLen: 2 }],
  ] as const)('%s: hstuAllowed per sequence, with a dense rab', (_name, causal, extra) => {
    const rab = randn(rng, [4, H, N, N]);
    const opts: HstuOptions = {
      seqOffsets: Int32Array.from(offsets),
      maxSeqLen: N,
      alpha: 0.5,
      causal,
      rab,
      numTargets: Int32Array.from(targets),
      ...extra,
    };
    const rule = (b: number): HstuMaskRule => ({ causal, numTargets: targets[b]!, ...extra });
    const want = brute(
      q,
      k,
      v,
      offsets,
      N,
      0.5,
      (b, i, j, n) => hstuAllowed(i, j, n, rule(b)),
      (b, h, i, j) => rab.get(b, h, i, j),
    );
    expect(relL2(hstuAttentionReference(q, k, v, opts).o.toFloat64Array(), want)).toBeLessThan(
      1e-14,
    );
  });
});

describe('bucketised rab', () => {
  test('hstuPositionBucket reads upstream _pos_w[N - 1 + j - i] for P = 2N - 1 and clamps smaller tables', () => {
    expect(hstuPositionBucket(0, 0, 9)).toBe(4);
    expect(hstuPositionBucket(4, 0, 9)).toBe(0);
    expect(hstuPositionBucket(0, 4, 9)).toBe(8);
    expect(hstuPositionBucket(7, 1, 5)).toBe(0);
    expect(hstuPositionBucket(1, 7, 5)).toBe(4);
  });

  test('hstuTimeBucket: trunc(ln(max(|dt|, 1)) / 0.301) or trunc(sqrt(|dt|) / divisor), clamped to T - 1', () => {
    expect([0, 1, -1, 2, -2, 3, 1e9].map((dt) => hstuTimeBucket(dt, 129))).toEqual([
      0, 0, 0, 2, 2, 3, 68,
    ]);
    expect(hstuTimeBucket(1e9, 10)).toBe(9);
    expect(hstuTimeBucket(100, 129, 'log', 1)).toBe(4);
    expect([0, 15, 16, -16, 99, 100].map((dt) => hstuTimeBucket(dt, 50, 'sqrt'))).toEqual([
      0, 3, 4, 4, 9, 10,
    ]);
    expect(hstuTimeBucket(400, 50, 'sqrt', 5)).toBe(4);
  });

  test('hstuBucketedRabDense: pos[h, N - 1 + j - i] + ts[h, bucket(ts(i + 1) - ts(j))], last token uses its own time', () => {
    const N = 7;
    const offsets = [0, 5, 5, 12];
    const ts = stamps(12);
    const positionTable = randn(rng, [1, 2 * N - 1]);
    const timestampTable = randn(rng, [3, 17]);
    const rab = hstuBucketedRabDense(offsets, N, { positionTable, timestampTable, timestamps: ts });
    expect(rab.shape).toEqual([3, 3, N, N]);
    for (let b = 0; b < 3; b++) {
      const s0 = offsets[b]!;
      const n = offsets[b + 1]! - s0;
      for (let h = 0; h < 3; h++) {
        for (let i = 0; i < N; i++) {
          for (let j = 0; j < N; j++) {
            let want = 0;
            if (i < n && j < n) {
              const next = ts[s0 + (i + 1 < n ? i + 1 : i)]!;
              const dt = Math.abs(next - ts[s0 + j]!);
              const bucket = Math.min(16, Math.floor(Math.log(Math.max(dt, 1)) / 0.301));
              want = positionTable.get(0, N - 1 + j - i) + timestampTable.get(h, bucket);
            }
            expect(rab.get(b, h, i, j)).toBe(want);
          }
        }
      }
    }
  });

  const cases: [string, boolean, number, number, Partial<HstuBucketedRab>, Partial<HstuOptions>][] =
    [
      ['log, tables per head, causal', true, 2, 2, {}, {}],
      ['log, shared position table, masks', true, 1, 2, {}, { contextualSeqLen: 2, maxAttnLen: 3 }],
      [
        'sqrt / 40, shared time table, non-causal',
        false,
        2,
        1,
        { bucketFn: 'sqrt', bucketDivisor: 40 },
        {},
      ],
    ];
  test.each(cases)(
    '%s: equals the dense reference with hstuBucketedRabDense, forward and backward',
    (_n, causal, ph, th, fn, extra) => {
      const N = 9;
      const offsets = jagged(3, N);
      const L = offsets[3]!;
      const H = 2;
      const q = randn(rng, [L, H, 4]);
      const k = randn(rng, [L, H, 4]);
      const v = randn(rng, [L, H, 3]);
      const dO = randn(rng, [L, H, 3]);
      const lens = offsets.slice(1).map((o, b) => o - offsets[b]!);
      const bucketedRab: HstuBucketedRab = {
        positionTable: randn(rng, [ph, 2 * N - 1]),
        timestampTable: randn(rng, [th, 11]),
        timestamps: Int32Array.from(stamps(L)),
        ...fn,
      };
      const base: HstuOptions = {
        seqOffsets: offsets,
        maxSeqLen: N,
        alpha: 0.6,
        causal,
        numTargets: lens.map((n) => Math.min(n, 2)),
        ...extra,
      };
      const rab = hstuBucketedRabDense(offsets, N, bucketedRab);
      const a = hstuAttentionReference(q, k, v, { ...base, bucketedRab }).o.toFloat64Array();
      const want = hstuAttentionReference(q, k, v, { ...base, rab }).o.toFloat64Array();
      expect(relL2(a, want)).toBeLessThan(1e-14);
      const g = hstuAttentionReferenceBackward(q, k, v, dO, { ...base, bucketedRab });
      const gd = hstuAttentionReferenceBackward(q, k, v, dO, { ...base, rab });
      for (const key of ['dq', 'dk', 'dv'] as const) {
        expect(relL2(g[key].toFloat64Array(), gd[key].toFloat64Array())).toBeLessThan(1e-14);
      }
      // drab summed into the column each entry reads (over the batch, and over the heads where
      // a table is shared) is the table gradient; drab is zero outside the mask.
      const P = 2 * N - 1;
      const dPos = new Float64Array(ph * P);
      const dTs = new Float64Array(th * 11);
      const ts = bucketedRab.timestamps as Int32Array;
      const drab = gd.drab!;
      for (let b = 0; b < 3; b++) {
        const s0 = offsets[b]!;
        const n = lens[b]!;
        for (let h = 0; h < H; h++) {
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < n; j++) {
              const x = drab.get(b, h, i, j);
              dPos[(ph === 1 ? 0 : h) * P + N - 1 + j - i]! += x;
              const dt = ts[s0 + Math.min(i + 1, n - 1)]! - ts[s0 + j]!;
              dTs[
                (th === 1 ? 0 : h) * 11 + hstuTimeBucket(dt, 11, fn.bucketFn, fn.bucketDivisor)
              ]! += x;
            }
          }
        }
      }
      expect(g.dPositionTable?.shape).toEqual([ph, P]);
      expect(g.dTimestampTable?.shape).toEqual([th, 11]);
      expect(relL2(g.dPositionTable!.toFloat64Array(), dPos)).toBeLessThan(1e-13);
      expect(relL2(g.dTimestampTable!.toFloat64Array(), dTs)).toBeLessThan(1e-13);
      expect(g.drab).toBeUndefined();
    },
  );
});

describe('hstuAttentionReferenceBackward with masks and tables (central finite differences)', () => {
  test.each([
    ['dense rab, all masks', false],
    ['bucketised rab, all masks', true],
  ] as const)('%s', (_name, bucketed) => {
    const N = 7;
    const offsets = [0, 5, 12, 15];
    const L = 15;
    const [H, D, Dv] = [2, 3, 2];
    const q = randn(rng, [L, H, D]);
    const k = randn(rng, [L, H, D]);
    const v = randn(rng, [L, H, Dv]);
    const dO = randn(rng, [L, H, Dv]);
    const ts = stamps(L);
    const tables = [randn(rng, [H, 2 * N - 1]), randn(rng, [1, 9])];
    const rab = randn(rng, [3, 1, N, N]);
    const opts = (r: Tensor[]): HstuOptions => ({
      seqOffsets: offsets,
      maxSeqLen: N,
      alpha: 0.9,
      numTargets: [2, 1, 3],
      contextualSeqLen: 2,
      maxAttnLen: 2,
      ...(bucketed
        ? { bucketedRab: { positionTable: r[0]!, timestampTable: r[1]!, timestamps: ts } }
        : { rab: r[0]! }),
    });
    const extra = bucketed ? tables : [rab];
    const g = hstuAttentionReferenceBackward(q, k, v, dO, opts(extra));
    const loss = (x: Tensor[]) =>
      dot(hstuAttentionReference(x[0]!, x[1]!, x[2]!, opts(x.slice(3))).o, dO);
    const grads = bucketed
      ? [g.dq, g.dk, g.dv, g.dPositionTable!, g.dTimestampTable!]
      : [g.dq, g.dk, g.dv, g.drab!];
    grads.forEach((grad, w) => {
      expect(relL2(grad.toFloat64Array(), numericGrad(loss, [q, k, v, ...extra], w))).toBeLessThan(
        1e-6,
      );
    });
  });
});

describe('hstuCachedReference (M-FALCON)', () => {
  const N = 11;
  const [H, D, Dv] = [2, 3, 4];

  test.each([
    ['no rab', {}],
    ['bucketised rab, contextual prefix and window', { contextualSeqLen: 2, maxAttnLen: 3 }],
    ['dense rab, window with minFullAttnSeqLen', { maxAttnLen: 1, minFullAttnSeqLen: 2 }],
  ] as const)(
    '%s: equals the candidates rows of the full forward with numTargets',
    (name, extra) => {
      const hist = [4, 0, 7];
      const cand = [3, 1, 4];
      const offsets = [0];
      const dOffsets = [0];
      hist.forEach((n, b) => {
        offsets.push(offsets[b]! + n + cand[b]!);
        dOffsets.push(dOffsets[b]! + cand[b]!);
      });
      const L = offsets[3]!;
      const q = randn(rng, [L, H, D]);
      const k = randn(rng, [L, H, D]);
      const v = randn(rng, [L, H, Dv]);
      const opts: HstuOptions = { seqOffsets: offsets, maxSeqLen: N, alpha: 0.8, ...extra };
      if (name.startsWith('bucketised'))
        opts.bucketedRab = {
          positionTable: randn(rng, [H, 2 * N - 1]),
          timestampTable: randn(rng, [1, 13]),
          timestamps: stamps(L),
        };
      if (name.startsWith('dense')) opts.rab = randn(rng, [1, H, N, N]);
      const rows = hist.flatMap((n, b) =>
        Array.from({ length: cand[b]! }, (_, r) => offsets[b]! + n + r),
      );
      const deltaQ = pick(q, rows);
      const o = hstuCachedReference(deltaQ, k, v, { ...opts, deltaOffsets: dOffsets }).o;
      const full = hstuAttentionReference(q, k, v, { ...opts, numTargets: cand }).o;
      expect([...o.toFloat64Array()]).toEqual([...pick(full, rows).toFloat64Array()]);
    },
  );

  test('candidates are independent: one call over many equals one call per candidate', () => {
    const histLen = 6;
    const nc = 5;
    const hk = randn(rng, [histLen, H, D]);
    const hv = randn(rng, [histLen, H, Dv]);
    const cq = randn(rng, [nc, H, D]);
    const ck = randn(rng, [nc, H, D]);
    const cv = randn(rng, [nc, H, Dv]);
    const extra = { maxSeqLen: N, alpha: 1.1, contextualSeqLen: 2, maxAttnLen: 3 };
    const all = hstuCachedReference(cq, cat(hk, ck), cat(hv, cv), {
      ...extra,
      seqOffsets: [0, histLen + nc],
      deltaOffsets: [0, nc],
    }).o;
    for (let c = 0; c < nc; c++) {
      const one = hstuCachedReference(
        pick(cq, [c]),
        cat(hk, pick(ck, [c])),
        cat(hv, pick(cv, [c])),
        {
          ...extra,
          seqOffsets: [0, histLen + 1],
          deltaOffsets: [0, 1],
        },
      ).o;
      expect(relL2(one.toFloat64Array(), pick(all, [c]).toFloat64Array())).toBeLessThan(1e-15);
    }
  });

  test('errors name the argument', () => {
    const k = randn(rng, [6, H, D]);
    const v = randn(rng, [6, H, Dv]);
    const base = { seqOffsets: [0, 2, 6], maxSeqLen: 6, alpha: 1, deltaOffsets: [0, 1, 3] };
    const dq = randn(rng, [3, H, D]);
    expect(() => hstuCachedReference(dq, k, v, { ...base, deltaOffsets: [0, 3] })).toThrow(
      /^deltaOffsets: expected length B\+1 = 3/,
    );
    expect(() => hstuCachedReference(dq, k, v, { ...base, deltaOffsets: [0, 3, 3] })).toThrow(
      /^deltaOffsets: expected at most the sequence length/,
    );
    expect(() => hstuCachedReference(dq, k, v, { ...base, deltaOffsets: [0, 1, 4] })).toThrow(
      /^deltaOffsets: expected last entry/,
    );
    expect(() => hstuCachedReference(randn(rng, [3, H, D + 1]), k, v, base)).toThrow(ShapeError);
  });
});

describe('errors name the option', () => {
  const q = randn(rng, [6, 2, 3]);
  const k = randn(rng, [6, 2, 3]);
  const v = randn(rng, [6, 2, 4]);
  const base: HstuOptions = { seqOffsets: [0, 2, 6], maxSeqLen: 5, alpha: 1 };
  const ok: HstuBucketedRab = {
    positionTable: randn(rng, [2, 9]),
    timestampTable: randn(rng, [1, 4]),
    timestamps: [1, 2, 3, 4, 5, 6],
  };
  const run = (o: Partial<HstuOptions>) => () => hstuAttentionReference(q, k, v, { ...base, ...o });
  const br = (o: Partial<HstuBucketedRab>) => run({ bucketedRab: { ...ok, ...o } });
  test.each([
    [
      'negative numTargets',
      run({ numTargets: [0, -1] }),
      ValueError,
      /^numTargets: expected integers in \[0, sequence length\]/,
    ],
    [
      'numTargets above the length',
      run({ numTargets: [3, 0] }),
      ValueError,
      /^numTargets: .*sequence 0 has length 2/,
    ],
    [
      'numTargets of the wrong length',
      run({ numTargets: [1] }),
      ValueError,
      /^numTargets: expected length B = 2/,
    ],
    ['fractional numTargets', run({ numTargets: [0.5, 0] }), ValueError, /^numTargets: /],
    [
      'negative maxAttnLen',
      run({ maxAttnLen: -1 }),
      ValueError,
      /^maxAttnLen: expected a non-negative integer/,
    ],
    [
      'fractional contextualSeqLen',
      run({ contextualSeqLen: 1.5 }),
      ValueError,
      /^contextualSeqLen: /,
    ],
    [
      'negative minFullAttnSeqLen',
      run({ minFullAttnSeqLen: -2 }),
      ValueError,
      /^minFullAttnSeqLen: /,
    ],
    [
      'rab and bucketedRab',
      run({ rab: randn(rng, [1, 1, 5, 5]), bucketedRab: ok }),
      ValueError,
      /^bucketedRab: expected no dense rab/,
    ],
    [
      'no table',
      run({ bucketedRab: { timestamps: ok.timestamps } }),
      ValueError,
      /^bucketedRab: expected positionTable or timestampTable/,
    ],
    [
      'position table rank',
      br({ positionTable: randn(rng, [9]) }),
      ShapeError,
      /^bucketedRab\.positionTable: expected rank 2/,
    ],
    [
      'position table heads',
      br({ positionTable: randn(rng, [3, 9]) }),
      ShapeError,
      /^bucketedRab\.positionTable: expected shape \[2 or 1/,
    ],
    [
      'even position table',
      br({ positionTable: randn(rng, [1, 8]) }),
      ShapeError,
      /^bucketedRab\.positionTable: expected an odd number of columns/,
    ],
    [
      'time table heads',
      br({ timestampTable: randn(rng, [3, 4]) }),
      ShapeError,
      /^bucketedRab\.timestampTable: expected shape \[2 or 1/,
    ],
    [
      'timestamps length',
      br({ timestamps: [1, 2, 3] }),
      ShapeError,
      /^bucketedRab\.timestamps: expected length 6 \(one per token\), got length 3/,
    ],
    ['timestamps missing', br({ timestamps: undefined }), ValueError, /^bucketedRab\.timestamps: /],
    [
      'timestamps not finite',
      br({ timestamps: [1, 2, Number.NaN, 4, 5, 6] }),
      ValueError,
      /^bucketedRab\.timestamps: expected finite numbers, got NaN at 2/,
    ],
    ['bucketFn', br({ bucketFn: 'exp' as 'log' }), ValueError, /^bucketedRab\.bucketFn: /],
    [
      'bucketDivisor',
      br({ bucketDivisor: 0 }),
      ValueError,
      /^bucketedRab\.bucketDivisor: expected a positive number/,
    ],
  ] as const)('%s', (_name, f, Err, message) => {
    expect(f).toThrow(Err);
    expect(f).toThrow(message);
  });

  test('hstuBucketedRabDense checks its offsets and tables', () => {
    expect(() => hstuBucketedRabDense([0, 6, 3], 6, ok)).toThrow(
      /^seqOffsets: expected non-decreasing/,
    );
    expect(() => hstuBucketedRabDense([0, 2, 6], 3, ok)).toThrow(
      /^seqOffsets: expected sequence lengths <= maxSeqLen 3/,
    );
    expect(() => hstuBucketedRabDense([0, 2, 5], 5, ok)).toThrow(
      /^bucketedRab\.timestamps: expected length 5/,
    );
    expect(() =>
      hstuBucketedRabDense([0, 2, 6], 5, { ...ok, timestampTable: randn(rng, [3, 4]) }),
    ).toThrow(/^bucketedRab\.timestampTable: expected 2 or 1 heads/);
  });
});

function pick(t: Tensor, rows: readonly number[]): Tensor {
  return cat(...rows.map((r) => t.slice(0, r, r + 1)));
}

function cat(...ts: Tensor[]): Tensor {
  const parts = ts.map((t) => t.toFloat64Array());
  const out = new Float64Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  const rows = ts.reduce((s, t) => s + t.shape[0]!, 0);
  return Tensor.from(out, [rows, ...ts[0]!.shape.slice(1)], 'f64');
}
