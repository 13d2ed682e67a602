import { describe, expect, it } from 'vitest';
import { diagonalBlocks, planHyperJobs } from './index.js';

describe('planHyperJobs', () => {
  it('non-causal: one job, exact below minSeqLen queries', () => {
    expect(planHyperJobs(100, 300, false, 101)).toEqual([
      { kind: 'exact', causal: false, q0: 0, q1: 100, k0: 0, k1: 300 },
    ]);
    expect(planHyperJobs(100, 30, false, 100)[0]!.kind).toBe('hyper');
    expect(planHyperJobs(0, 30, false, 1)).toEqual([]);
  });

  it('causal: covers every allowed (i, j) exactly once and nothing else', () => {
    for (const [nq, nk, minSeqLen] of [
      [64, 64, 8],
      [61, 61, 5],
      [37, 50, 4],
      [50, 37, 3],
      [33, 33, 1],
      [16, 16, 16],
      [1, 9, 2],
    ] as const) {
      const jobs = planHyperJobs(nq, nk, true, minSeqLen);
      const seen = new Uint8Array(nq * nk);
      for (const j of jobs) {
        for (let i = j.q0; i < j.q1; i++) {
          for (let k = j.k0; k < j.k1; k++) {
            if (j.causal && k - j.k0 > i - j.q0) continue;
            seen[i * nk + k]!++;
          }
        }
        if (j.causal) {
          expect(j.kind).toBe('exact');
          expect(j.q1 - j.q0).toBe(j.k1 - j.k0);
          expect(j.q1 - j.q0).toBeLessThanOrEqual(minSeqLen);
        } else expect(j.kind).toBe(j.q1 - j.q0 < minSeqLen ? 'exact' : 'hyper');
      }
      for (let i = 0; i < nq; i++)
        for (let k = 0; k < nk; k++) expect(seen[i * nk + k]).toBe(k <= i + nk - nq ? 1 : 0);
    }
  });

  it('causal at or below minSeqLen is one exact causal job', () => {
    expect(planHyperJobs(40, 40, true, 40)).toEqual([
      { kind: 'exact', causal: true, q0: 0, q1: 40, k0: 0, k1: 40 },
    ]);
  });
});

describe('diagonalBlocks', () => {
  it('partitions the sorted keys into blockSize runs and the queries into as many balanced runs', () => {
    for (const [nq, nk, bs] of [
      [256, 256, 64],
      [100, 70, 16],
      [5, 70, 16],
      [70, 70, 100],
    ] as const) {
      const b = diagonalBlocks(nq, nk, bs);
      expect(b.count).toBe(Math.ceil(nk / bs));
      let q = 0;
      let k = 0;
      for (let c = 0; c < b.count; c++) {
        const [qa, qb] = b.q(c);
        const [ka, kb] = b.k(c);
        expect([qa, ka]).toEqual([q, k]);
        expect(kb - ka).toBe(Math.min(bs, nk - ka));
        expect(qb - qa).toBeGreaterThanOrEqual(Math.floor(nq / b.count));
        expect(qb - qa).toBeLessThanOrEqual(Math.ceil(nq / b.count));
        [q, k] = [qb, kb];
      }
      expect([q, k]).toEqual([nq, nk]);
    }
    expect(diagonalBlocks(256, 256, 64).q(1)).toEqual([64, 128]);
  });
});
