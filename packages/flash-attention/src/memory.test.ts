import { toleranceFor } from '@attnkit/attention';
import { Rng } from '@attnkit/tensor';
import { type Accounting, expectClose, poisonAllocations } from '@attnkit/testing';
import { afterEach, beforeEach, expect, test } from 'vitest';
import {
  flashAttentionBackwardTs,
  flashAttentionTs,
  planFlashTiles,
  workspaceBytes,
} from './index.js';

/**
 * FlashAttention's memory claim (Dao et al. 2022, Theorem 1: O(N) extra memory): at N = 8192
 * an N x N score matrix would take 256 MB; the kernels must get by with tile scratch.
 */

const N = 8192;
const D = 16;
const SCALE = 1 / Math.sqrt(D);
const MB = 2 ** 20;

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

const rng = new Rng(2024);
const q = rng.randn([1, 1, N, D]);
const k = rng.randn([1, 1, N, D]);
const v = rng.randn([1, 1, N, D]);
const dO = rng.randn([1, 1, N, D]);
const Q = q.toFloat64Array();
const K = k.toFloat64Array();
const V = v.toFloat64Array();
const G = dO.toFloat64Array();
const plan = planFlashTiles({ nq: N, nk: N, d: D, dv: D });

function dot(a: Float64Array, ao: number, b: Float64Array, bo: number): number {
  let t = 0;
  for (let c = 0; c < D; c++) t += a[ao + c]! * b[bo + c]!;
  return t;
}

/** Float64 softmax of query row i over keys [0, hi): probabilities and o_i. */
function row(i: number, hi: number): { p: Float64Array; o: Float64Array; lse: number } {
  const p = new Float64Array(hi);
  let m = Number.NEGATIVE_INFINITY;
  for (let j = 0; j < hi; j++) {
    p[j] = SCALE * dot(Q, i * D, K, j * D);
    m = Math.max(m, p[j]!);
  }
  let l = 0;
  for (let j = 0; j < hi; j++) l += p[j] = Math.exp(p[j]! - m);
  const o = new Float64Array(D);
  for (let j = 0; j < hi; j++) {
    p[j] = p[j]! / l;
    for (let c = 0; c < D; c++) o[c] = o[c]! + p[j]! * V[j * D + c]!;
  }
  return { p, o, lse: m + Math.log(l) };
}

function arrayBuffers(): number {
  return process.memoryUsage().arrayBuffers;
}

test(`forward at N = ${N}: tile scratch only, and exact on sampled rows`, () => {
  const before = arrayBuffers();
  const { o, lse } = flashAttentionTs(q, k, v);
  const grown = arrayBuffers() - before;
  const outputs = acct.bytes.output;
  expect(outputs).toBe((N * D + N) * 4);
  expect(acct.bytes.tile).toBeGreaterThan(0);
  expect(acct.bytes.tile).toBeLessThanOrEqual(workspaceBytes(plan, D, D));
  expect(acct.bytes.rows).toBe(0);
  expect(workspaceBytes(plan, D, D)).toBeLessThan((N * N * 4) / 1000);
  // Decoded input copies (1.5 MB) may still await collection; an N x N buffer would be 256 MB.
  expect(grown - outputs).toBeLessThan(16 * MB);

  const O = o.toFloat64Array();
  const L = lse.toFloat64Array();
  const got: number[] = [];
  const want: number[] = [];
  for (const i of [0, 1, 2047, N / 2, N - 2, N - 1]) {
    const r = row(i, N);
    got.push(...O.subarray(i * D, (i + 1) * D), L[i]!);
    want.push(...r.o, r.lse);
  }
  expectClose(got, want, toleranceFor({ dtype: 'f32', maxSeqLen: N }), 'sampled rows');
});

test(`causal backward at N = ${N}: tile scratch plus one D per row, exact where sampled`, () => {
  const { o, lse } = flashAttentionTs(q, k, v, { causal: true });
  const outBefore = acct.bytes.output;
  const tileBefore = acct.bytes.tile;
  const before = arrayBuffers();
  const g = flashAttentionBackwardTs(q, k, v, o, lse, dO, { causal: true });
  const grown = arrayBuffers() - before;
  const outputs = acct.bytes.output - outBefore;
  expect(outputs).toBe(3 * N * D * 4);
  expect(acct.bytes.tile - tileBefore).toBeLessThanOrEqual(workspaceBytes(plan, D, D));
  expect(acct.bytes.rows).toBe(N * 4);
  expect(grown - outputs).toBeLessThan(16 * MB);

  // dQ rows: dq_i = scale sum_j P_ij (dO_i . v_j - D_i) k_j over keys j <= i.
  const dq = g.dq.toFloat64Array();
  const got: number[] = [];
  const want: number[] = [];
  for (const i of [0, 5, N / 2, N - 1]) {
    const r = row(i, i + 1);
    const Di = dot(G, i * D, r.o, 0);
    const ref = new Float64Array(D);
    for (let j = 0; j <= i; j++) {
      const ds = r.p[j]! * (dot(G, i * D, V, j * D) - Di);
      for (let c = 0; c < D; c++) ref[c] = ref[c]! + SCALE * ds * K[j * D + c]!;
    }
    got.push(...dq.subarray(i * D, (i + 1) * D));
    want.push(...ref);
  }
  // dK, dV of the last keys: only rows i >= j see key j.
  const dk = g.dk.toFloat64Array();
  const dv = g.dv.toFloat64Array();
  const keys = [N - 64, N - 9, N - 1];
  const refK = keys.map(() => new Float64Array(D));
  const refV = keys.map(() => new Float64Array(D));
  for (let i = keys[0]!; i < N; i++) {
    const r = row(i, i + 1);
    const Di = dot(G, i * D, r.o, 0);
    keys.forEach((j, t) => {
      if (j > i) return;
      const ds = r.p[j]! * (dot(G, i * D, V, j * D) - Di);
      for (let c = 0; c < D; c++) {
        refV[t]![c] = refV[t]![c]! + r.p[j]! * G[i * D + c]!;
        refK[t]![c] = refK[t]![c]! + SCALE * ds * Q[i * D + c]!;
      }
    });
  }
  keys.forEach((j, t) => {
    got.push(...dk.subarray(j * D, (j + 1) * D), ...dv.subarray(j * D, (j + 1) * D));
    want.push(...refK[t]!, ...refV[t]!);
  });
  expectClose(got, want, toleranceFor({ dtype: 'f32', maxSeqLen: N }), 'sampled rows and keys');
});
