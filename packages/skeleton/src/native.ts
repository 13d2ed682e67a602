import type { AttentionProblem } from '@attnkit/attention';
import {
  loadNative,
  type NativeAttentionProblem,
  type NativeEngine,
  nativeLoadError,
} from '@attnkit/native';
import { BackendUnavailableError, type Tensor } from '@attnkit/tensor';
import { allocF32 } from './cpu/alloc.js';
import { planNativeTiles } from './plan.js';

/**
 * Binding of this family to @attnkit/native's C++ FlashAttention-2 kernels (threads + SIMD). A
 * resolved AttentionProblem already is the engine's NativeAttentionProblem (same fields and
 * meaning); inputs go to the engine as f32 (contiguous f32 tensors without a copy), results
 * come back as f32.
 */

/** The engine when the addon loads; otherwise undefined, and @attnkit/native warns once why. */
export function nativeEngine(): NativeEngine | undefined {
  return loadNative();
}

/** The engine for an explicit `backend: 'native'`, which never falls back silently. */
export function requireNativeEngine(): NativeEngine {
  const engine = loadNative();
  if (!engine) {
    throw new BackendUnavailableError(
      `backend: expected the native engine, but it is unavailable: ${nativeLoadError()}`,
      'backend',
    );
  }
  return engine;
}

/** User tile sizes become the engine's hints (its kernels accept 1..1024). */
function problem(
  p: AttentionProblem,
  tiles: { blockQ?: number; blockK?: number },
): NativeAttentionProblem {
  const hint = (x: number | undefined) => (x === undefined ? undefined : Math.min(x, 1024));
  // The backward's query-row block comes from the I/O model (io-complexity's planTiles, L2
  // budget): in three A/B runs it was within +-5% of the engine's default (noise on this
  // shared 2-core machine; benchmarks/2026-11-22-native-tile-hints-ab.jsonl). The forward key
  // tile stays the engine's: the model ignores causal tile skipping, and its larger key tiles
  // ran 1-10% slower causal in every run.
  const plan = planNativeTiles({ nq: p.maxSeqQ, nk: p.maxSeqK, d: p.d, dv: p.dv });
  return { ...p, blockQ: hint(tiles.blockQ) ?? plan.blockQ, blockK: hint(tiles.blockK) };
}

const count = (shape: readonly number[]) => shape.reduce((a, x) => a * x, 1);

/**
 * The f32 elements the engine reads: a contiguous f32 tensor's own storage (a view, no copy;
 * the engine only reads its inputs), else a gathered or decoded copy (strided, f16, bf16).
 */
function engineInput(t: Tensor): Float32Array {
  return t.dtype === 'f32' ? t.data<'f32'>() : t.toFloat32Array();
}

export async function nativeForward(
  engine: NativeEngine,
  p: AttentionProblem,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  tiles: { blockQ?: number; blockK?: number },
): Promise<{ o: Float32Array; lse: Float32Array }> {
  const o = allocF32(count(p.oShape), 'output');
  const lse = allocF32(count(p.lseShape), 'output');
  await engine.flashForward(
    problem(p, tiles),
    engineInput(q),
    engineInput(k),
    engineInput(v),
    o,
    lse,
  );
  return { o, lse };
}

export async function nativeBackward(
  engine: NativeEngine,
  p: AttentionProblem,
  inputs: { q: Tensor; k: Tensor; v: Tensor; o: Tensor; lse: Tensor; dO: Tensor },
  tiles: { blockQ?: number; blockK?: number },
): Promise<{ dq: Float32Array; dk: Float32Array; dv: Float32Array }> {
  const { q, k, v, o, lse, dO } = inputs;
  const dq = allocF32(q.size, 'output');
  const dk = allocF32(k.size, 'output');
  const dv = allocF32(v.size, 'output');
  await engine.flashBackward(
    problem(p, tiles),
    engineInput(q),
    engineInput(k),
    engineInput(v),
    engineInput(o),
    engineInput(lse),
    engineInput(dO),
    dq,
    dk,
    dv,
  );
  return { dq, dk, dv };
}
