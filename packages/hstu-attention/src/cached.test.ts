import { accuracy, hstuCachedReference, toleranceFor } from '@attnkit/attention';
import { Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { poisonAllocations, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  type HstuAttentionOptions,
  type HstuCachedAttentionOptions,
  hstuAttention,
  hstuCachedAttention,
} from './index.js';

// M-FALCON cached inference (hstuCachedAttention): the candidates' queries against the whole
// sequences' k, v on every backend, against the float64 reference (hstuCachedReference), and
// equal to the full-sequence call's last rows, which is what makes one call scoring many
// candidates the same as scoring each alone. Outputs start poisoned (NaN) on every backend.
const rng = new Rng(31);

let ctx: WebGpuContext | undefined;
beforeAll(async () => {
  ctx = await webGpuTestContext();
});
afterAll(() => ctx?.destroy());

const BACKENDS = ['ts', 'native', 'webgpu'] as const;
type Backend = (typeof BACKENDS)[number];
const onDevice = (t: Tensor, backend: Backend) => (backend === 'webgpu' ? toWebGpu(t, ctx!) : t);
const toCpu = async (t: Tensor) => (t.device === 'cpu' ? t : t.toCpu());

/** Runs `f` with poisoned outputs (cpu: NaN-filled allocations; webgpu: NaN-filled buffers). */
async function poisoned<T>(backend: Backend, f: () => Promise<T>): Promise<T> {
  if (backend === 'webgpu') {
    ctx!.poisonOutputs = true;
    return f();
  }
  const acct = poisonAllocations();
  try {
    return await f();
  } finally {
    acct.restore();
  }
}

/** A jagged batch: history lengths (odd, one empty history) plus candidates per sequence. */
function problem(history: number[], candidates: number[], h: number, d: number, dv: number) {
  const lens = history.map((n, b) => n + candidates[b]!);
  const seqOffsets = new Int32Array(lens.length + 1);
  const deltaOffsets = new Int32Array(lens.length + 1);
  for (let b = 0; b < lens.length; b++) {
    seqOffsets[b + 1] = seqOffsets[b]! + lens[b]!;
    deltaOffsets[b + 1] = deltaOffsets[b]! + candidates[b]!;
  }
  const L = seqOffsets[lens.length]!;
  const Ld = deltaOffsets[lens.length]!;
  // The full sequences' q (the candidates' rows are deltaQ's), k and v.
  const q = rng.randn([L, h, d]);
  const k = rng.randn([L, h, d]);
  const v = rng.randn([L, h, dv]);
  const rows: number[] = [];
  for (let b = 0; b < lens.length; b++)
    for (let r = 0; r < candidates[b]!; r++) rows.push(seqOffsets[b + 1]! - candidates[b]! + r);
  const qd = q.toFloat32Array();
  const deltaQ = new Float32Array(Ld * h * d);
  rows.forEach((row, i) => {
    deltaQ.set(qd.subarray(row * h * d, (row + 1) * h * d), i * h * d);
  });
  const maxSeqLen = Math.max(...lens) + 2;
  return {
    q,
    k,
    v,
    deltaQ: Tensor.from(deltaQ, [Ld, h, d]),
    seqOffsets,
    deltaOffsets,
    rows,
    maxSeqLen,
  };
}

/** Rows `rows` of an [L, H, Dv] tensor. */
function gather(t: Tensor, rows: number[]): Float32Array {
  const [, h, dv] = t.shape as [number, number, number];
  const a = t.toFloat32Array();
  const out = new Float32Array(rows.length * h * dv);
  rows.forEach((row, i) => {
    out.set(a.subarray(row * h * dv, (row + 1) * h * dv), i * h * dv);
  });
  return out;
}

const CASES: Array<{ name: string; extra: Partial<HstuCachedAttentionOptions> }> = [
  { name: 'default (candidates are the targets)', extra: {} },
  { name: 'contextual prefix 3', extra: { contextualSeqLen: 3 } },
  { name: 'window 9, last 4 full', extra: { maxAttnLen: 9, minFullAttnSeqLen: 4 } },
  { name: 'non-causal', extra: { causal: false } },
  { name: 'split-K (numSplits 3)', extra: { numSplits: 3 } },
];

describe('hstuCachedAttention (M-FALCON) on every backend', () => {
  for (const backend of BACKENDS) {
    for (const { name, extra } of CASES) {
      test(`${backend}: ${name}`, async (c) => {
        if (backend === 'webgpu' && !ctx) c.skip('no WebGPU adapter');
        // History 0 (candidates only), odd lengths, a sequence with no candidates; D != Dv.
        const p = problem([37, 0, 20, 11, 64], [5, 3, 1, 0, 17], 2, 16, 12);
        const options: HstuCachedAttentionOptions = {
          seqOffsets: p.seqOffsets,
          deltaOffsets: p.deltaOffsets,
          maxSeqLen: p.maxSeqLen,
          alpha: 0.35,
          ...extra,
        };
        const { o } = await poisoned(backend, () =>
          hstuCachedAttention(
            onDevice(p.deltaQ, backend),
            onDevice(p.k, backend),
            onDevice(p.v, backend),
            { ...options, backend },
          ),
        );
        const got = await toCpu(o);
        expect(got.shape).toEqual([p.rows.length, 2, 12]);
        const ref = hstuCachedReference(p.deltaQ, p.k, p.v, options).o;
        expect(accuracy(got, ref).relL2).toBeLessThanOrEqual(toleranceFor({ dtype: 'f32' }));
        // Every element written (poisoned outputs would be NaN) and no candidate row all zero.
        expect(got.toFloat32Array().every(Number.isFinite)).toBe(true);
        // The full-sequence call with the candidates as targets gives the same rows.
        const nt = Array.from(
          { length: p.seqOffsets.length - 1 },
          (_, b) => p.deltaOffsets[b + 1]! - p.deltaOffsets[b]!,
        );
        const full: HstuAttentionOptions = { ...options, numTargets: nt, backend };
        delete (full as { deltaOffsets?: unknown }).deltaOffsets;
        const whole = await hstuAttention(
          onDevice(p.q, backend),
          onDevice(p.k, backend),
          onDevice(p.v, backend),
          full,
        );
        const rows = gather(await toCpu(whole.o), p.rows);
        expect(accuracy(got, rows).relL2).toBeLessThanOrEqual(toleranceFor({ dtype: 'f32' }));
      });
    }
  }

  test('one call equals scoring each candidate alone (native)', async () => {
    const p = problem([45], [9], 2, 16, 16);
    const options = { seqOffsets: p.seqOffsets, maxSeqLen: 60, alpha: 0.3 };
    const all = (
      await hstuCachedAttention(p.deltaQ, p.k, p.v, { ...options, deltaOffsets: p.deltaOffsets })
    ).o.toFloat32Array();
    const kd = p.k.toFloat32Array();
    const vd = p.v.toFloat32Array();
    const qd = p.deltaQ.toFloat32Array();
    const row = 2 * 16;
    for (let c = 0; c < 9; c++) {
      // The history plus candidate c alone: one query, 46 keys.
      const keep = [...Array.from({ length: 45 }, (_, j) => j), 45 + c];
      const pick = (a: Float32Array, w: number) => {
        const out = new Float32Array(keep.length * w);
        keep.forEach((j, i) => {
          out.set(a.subarray(j * w, (j + 1) * w), i * w);
        });
        return out;
      };
      const one = await hstuCachedAttention(
        Tensor.from(qd.slice(c * row, (c + 1) * row), [1, 2, 16]),
        Tensor.from(pick(kd, row), [46, 2, 16]),
        Tensor.from(pick(vd, row), [46, 2, 16]),
        { ...options, seqOffsets: [0, 46], deltaOffsets: [0, 1] },
      );
      const alone = one.o.toFloat32Array();
      const batched = all.subarray(c * row, (c + 1) * row);
      expect(accuracy(alone, batched).relL2, `candidate ${c}`).toBeLessThanOrEqual(1e-6);
    }
  });

  test('typed errors name the argument', async () => {
    const p = problem([10, 6], [3, 2], 1, 8, 8);
    const base = {
      seqOffsets: p.seqOffsets,
      deltaOffsets: p.deltaOffsets,
      maxSeqLen: 13,
      alpha: 1,
    };
    const call = (o: unknown, q = p.deltaQ) =>
      hstuCachedAttention(q, p.k, p.v, o as HstuCachedAttentionOptions);
    await expect(call({ ...base, deltaOffsets: undefined })).rejects.toThrow(
      /^deltaOffsets: expected B\+1 offsets into deltaQ \(required\)/,
    );
    await expect(call({ ...base, deltaOffsets: [0, 3] })).rejects.toThrow(ValueError);
    await expect(call({ ...base, deltaOffsets: [0, 3] })).rejects.toThrow(
      /^deltaOffsets: .*got length 2 \(seqOffsets has 3\)/,
    );
    await expect(call({ ...base, deltaOffsets: [0, 3, 4] })).rejects.toThrow(
      /^deltaOffsets: .*last entry 4/,
    );
    // 14 candidates in a sequence of length 13.
    await expect(
      call(
        { ...base, deltaOffsets: [0, 14, 16] },
        Tensor.from(new Float32Array(16 * 8), [16, 1, 8]),
      ),
    ).rejects.toThrow(
      /^deltaOffsets: expected at most the sequence's length of queries per sequence \(sequence 0 has length 13\), got 14 queries/,
    );
    await expect(call({ ...base, rab: p.k })).rejects.toThrow(/^rab: expected no rab/);
    await expect(call(base, p.k)).rejects.toThrow(/^deltaOffsets: .*last entry 5/);
    await expect(call(base, Tensor.from(new Float32Array(5 * 4), [5, 1, 4]))).rejects.toThrow(
      ShapeError,
    );
    // The plain entry point refuses deltaOffsets by name.
    await expect(
      hstuAttention(p.q, p.k, p.v, base as unknown as HstuAttentionOptions),
    ).rejects.toThrow(/^deltaOffsets: expected no deltaOffsets option in hstuAttention/);
  });
});
