/**
 * Pure planning for GLA (no tensors, no device): where the sequences lie on the T axis, how a
 * sequence splits into chunks and a chunk into secondary sub-chunks, and what a pass costs.
 * Every backend plans with these, so their chunk boundaries agree.
 */

/** One sequence: rows [bos, eos) of batch row `batch` on the T axis; `index` is its n in h0 [N, H, K, V]. */
export interface GlaSequence {
  index: number;
  batch: number;
  bos: number;
  eos: number;
}

/**
 * The sequences of a [B, T, ...] problem: B rows of T tokens, or with `cuSeqlens` (B = 1, fla's
 * varlen) the packed sequences [cu[n], cu[n+1]). Assumes cuSeqlens was validated (resolveGla).
 */
export function glaSequences(B: number, T: number, cuSeqlens?: ArrayLike<number>): GlaSequence[] {
  if (cuSeqlens === undefined)
    return Array.from({ length: B }, (_, b) => ({ index: b, batch: b, bos: 0, eos: T }));
  return Array.from({ length: cuSeqlens.length - 1 }, (_, n) => ({
    index: n,
    batch: 0,
    bos: cuSeqlens[n]!,
    eos: cuSeqlens[n + 1]!,
  }));
}

/** [start, end) offsets (relative to the sequence) of the chunks of a sequence of `length` tokens. */
export function glaChunks(length: number, chunkSize: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let s = 0; s < length; s += chunkSize) out.push([s, Math.min(length, s + chunkSize)]);
  return out;
}

/** Default chunk size C (fla's BT). */
export const GLA_CHUNK_SIZE = 64;

/**
 * Secondary-level sub-chunk size inside a chunk of C (fla's BC = 16 inside BT = 64): the
 * off-diagonal sub-chunk blocks are products of gate-rescaled q and k whose exponents stay <= 0
 * (the paper's secondary-level chunking), the diagonal ones are computed element by element.
 */
export function glaSubChunkSize(chunkSize: number): number {
  return Math.min(16, chunkSize);
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && (n & (n - 1)) === 0 && n <= 2 ** 30;
}

/** Shape of a GLA problem for counting: N sequences' lengths, H heads, K and V head dims. */
export interface GlaCountProblem {
  /** Length of each sequence (B equal lengths T, or the cuSeqlens differences). */
  lengths: readonly number[];
  H: number;
  K: number;
  V: number;
}

/**
 * Multiply-adds x 2 of the chunkwise form with chunk size C, as the algorithm does them (the
 * causal half of each intra-chunk square; exps and gate scalings not counted):
 *   forward per chunk of L tokens: intra scores L(L+1)/2 K, A V L(L+1)/2 V, inter q S L K V,
 *   state update L K V;
 *   backward: the forward's state pass L K V, scores again L(L+1)/2 K, dA L(L+1)/2 V,
 *   dv intra L(L+1)/2 V, dq and dk intra 2 L(L-1)/2 K, dq inter, dk inter, dv inter and the
 *   state gradient 4 L K V.
 * The recurrent form does 2 T K V (state update and read-out) forward and 6 T K V backward
 * (recomputed states, dq, dk, dv, dgk, dS).
 */
export function glaFlops(
  p: GlaCountProblem,
  form: 'chunk' | 'recurrent',
  pass: 'forward' | 'backward',
  chunkSize = GLA_CHUNK_SIZE,
): number {
  const { H, K, V } = p;
  let macs = 0;
  for (const T of p.lengths) {
    if (form === 'recurrent') {
      macs += (pass === 'forward' ? 2 : 6) * T * K * V;
      continue;
    }
    for (const [s, e] of glaChunks(T, chunkSize)) {
      const L = e - s;
      const tri = (L * (L + 1)) / 2;
      macs +=
        pass === 'forward'
          ? tri * K + tri * V + 2 * L * K * V
          : L * K * V + tri * K + 2 * tri * V + L * (L - 1) * K + 4 * L * K * V;
    }
  }
  return 2 * H * macs;
}

/**
 * Bytes a pass must move at least, with `bytesPerElement` storage for the tensors and f32
 * states: forward reads q, k, gk (T K each), v (T V), writes o (T V), reads h0 and writes hT
 * when present (K V each); backward reads q, k, gk, v, dO and writes dq, dk, dgk, dv (and dh0).
 */
export function glaBytes(
  p: GlaCountProblem,
  pass: 'forward' | 'backward',
  bytesPerElement: number,
  states: { initialState?: boolean; finalState?: boolean } = {},
): number {
  const { H, K, V } = p;
  const T = p.lengths.reduce((a, x) => a + x, 0);
  const N = p.lengths.length;
  const tokens = pass === 'forward' ? 3 * K + 2 * V : 6 * K + 3 * V;
  const stateCount =
    (states.initialState ? (pass === 'forward' ? 1 : 2) : 0) + (states.finalState ? 1 : 0);
  return H * (T * tokens * bytesPerElement + N * stateCount * K * V * 4);
}
