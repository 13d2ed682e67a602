/**
 * HyperAttention's work plan for one (batch, head): pure index arithmetic, no tensors.
 *
 * A job is a rectangle of the score matrix, queries [q0, q1) x keys [k0, k1):
 * - 'exact': softmax attention over the rectangle (causal: a square on the diagonal, key j seen
 *   by query i iff j - k0 <= i - q0);
 * - 'hyper': the non-causal approximation (sortLSH diagonal blocks + sampled residual).
 * Each query row's result is the softmax merge (combine.ts) of the jobs that contain it, which
 * together cover exactly its allowed keys once.
 *
 * Non-causal (Algorithm 2): one job, exact when Nq < minSeqLen (the paper's implementation's
 * test), else hyper. Causal (Algorithm 4, the recursion): a square of side n is exact causal
 * when n <= minSeqLen; else it splits at t = ceil(n / 2) into the causal top-left t x t square,
 * the causal bottom-right square and the non-causal bottom-left block (queries [t, n) x keys
 * [0, t)), which is itself exact when its n - t queries are fewer than minSeqLen. Bottom-right
 * alignment (KERNELS.md "Common") with Nk > Nq adds a non-causal job for the Nk - Nq keys every
 * query sees; with Nq > Nk the first Nq - Nk queries see no key (no job: O = 0, LSE = -inf).
 */
export interface HyperJob {
  kind: 'exact' | 'hyper';
  causal: boolean;
  q0: number;
  q1: number;
  k0: number;
  k1: number;
}

export function planHyperJobs(
  nq: number,
  nk: number,
  causal: boolean,
  minSeqLen: number,
): HyperJob[] {
  const jobs: HyperJob[] = [];
  if (nq === 0 || nk === 0) return jobs;
  const rect = (q0: number, q1: number, k0: number, k1: number): void => {
    if (q1 > q0 && k1 > k0)
      jobs.push({ kind: q1 - q0 < minSeqLen ? 'exact' : 'hyper', causal: false, q0, q1, k0, k1 });
  };
  const square = (q0: number, k0: number, n: number): void => {
    if (n <= minSeqLen) {
      jobs.push({ kind: 'exact', causal: true, q0, q1: q0 + n, k0, k1: k0 + n });
      return;
    }
    const t = Math.ceil(n / 2);
    square(q0, k0, t);
    square(q0 + t, k0 + t, n - t);
    rect(q0 + t, q0 + n, k0, k0 + t);
  };
  if (!causal) rect(0, nq, 0, nk);
  else if (nk >= nq) {
    rect(0, nq, 0, nk - nq);
    square(0, nk - nq, nq);
  } else square(nq - nk, 0, nk);
  return jobs;
}

/**
 * Diagonal blocks of a hyper job with nq queries and nk keys, both in LSH-sorted order: the keys
 * in blocks of `blockSize` (the last one shorter), nb = ceil(nk / blockSize); the queries in nb
 * balanced runs, block c = [floor(c nq / nb), floor((c + 1) nq / nb)). With nq = nk and
 * blockSize dividing it both are blocks of blockSize, as in the paper; the paper's
 * implementation needs that divisibility (it reshapes), this plan does not.
 */
export function diagonalBlocks(
  nq: number,
  nk: number,
  blockSize: number,
): { count: number; q: (c: number) => [number, number]; k: (c: number) => [number, number] } {
  const count = Math.ceil(nk / blockSize);
  return {
    count,
    q: (c) => [Math.floor((c * nq) / count), Math.floor(((c + 1) * nq) / count)],
    k: (c) => [c * blockSize, Math.min(nk, (c + 1) * blockSize)],
  };
}
