import { describe, ValueError } from '@attnkit/tensor';
import type { AttentionProblem } from './spec.js';

/**
 * Permuted tiles (the skeleton's PermuteHook): rows tiled in a permuted order. Index arrays in
 * the LSE layout — q: [B, Hq, Nq] (BHND) or [Hq, totalQ] (THD); k: [B, Hkv, Nk] or [Hkv,
 * totalK] — whose (b, h) slices are permutations of 0..n-1: entry i is the position (within its
 * sequence) of the row tiled i-th. Attention is computed on the gathered rows (every position
 * rule sees the tiled positions) and scattered back to the original positions.
 */
export interface PermuteOptions {
  q?: Int32Array | readonly number[];
  k?: Int32Array | readonly number[];
}

export interface ResolvedPermute {
  q: Int32Array | undefined;
  k: Int32Array | undefined;
}

/** Offset of (b, h)'s slice of a q-side (LSE-layout) index array. */
export function permQBase(p: AttentionProblem, b: number, h: number): number {
  return p.layout === 'BHND' ? (b * p.hq + h) * p.maxSeqQ : h * p.totalQ + p.startQ[b]!;
}

/** Offset of (b, kv head h)'s slice of a k-side index array. */
export function permKBase(p: AttentionProblem, b: number, h: number): number {
  return p.layout === 'BHND' ? (b * p.hkv + h) * p.maxSeqK : h * p.totalK + p.startK[b]!;
}

function checkSide(
  v: unknown,
  name: 'permute.q' | 'permute.k',
  p: AttentionProblem,
): Int32Array | undefined {
  if (v === undefined) return undefined;
  if (!(v instanceof Int32Array) && !Array.isArray(v)) {
    throw new ValueError(`${name}: expected an Int32Array or number[], got ${describe(v)}`, name);
  }
  const a = Int32Array.from(v as ArrayLike<number>);
  const q = name === 'permute.q';
  const heads = q ? p.hq : p.hkv;
  const len =
    p.layout === 'BHND'
      ? p.batch * heads * (q ? p.maxSeqQ : p.maxSeqK)
      : heads * (q ? p.totalQ : p.totalK);
  if (a.length !== len || (v as ArrayLike<number>).length !== len) {
    throw new ValueError(
      `${name}: expected length ${len} (the ${q ? 'LSE' : 'key-side LSE'} layout), got length ${(v as ArrayLike<number>).length}`,
      name,
    );
  }
  for (let b = 0; b < p.batch; b++) {
    const n = q ? p.seqQ[b]! : p.seqK[b]!;
    const seen = new Uint8Array(n);
    for (let h = 0; h < heads; h++) {
      seen.fill(0);
      const base = q ? permQBase(p, b, h) : permKBase(p, b, h);
      for (let i = 0; i < n; i++) {
        const x = (v as ArrayLike<number>)[base + i]!;
        if (!Number.isInteger(x) || x < 0 || x >= n || seen[x]) {
          throw new ValueError(
            `${name}: expected each (batch, head) slice to be a permutation of 0..${n - 1}, got ${describe(x)} at batch ${b}, head ${h}, row ${i}`,
            name,
          );
        }
        seen[x] = 1;
      }
    }
  }
  return a;
}

/** Validates `permute` against the problem (typed errors naming permute.q / permute.k). */
export function resolvePermute(permute: unknown, p: AttentionProblem): ResolvedPermute | undefined {
  if (permute === undefined) return undefined;
  if (permute === null || typeof permute !== 'object' || Array.isArray(permute)) {
    throw new ValueError(
      `permute: expected { q?, k? } index arrays, got ${describe(permute)}`,
      'permute',
    );
  }
  const o = permute as PermuteOptions;
  const q = checkSide(o.q, 'permute.q', p);
  const k = checkSide(o.k, 'permute.k', p);
  return q || k ? { q, k } : undefined;
}
