import type { AttentionProblem, ResolvedScoreMod } from '@attnkit/attention';
import { ValueError } from '@attnkit/tensor';
import type { HstuRabHook } from './hstu-rab.js';
import type { SageCodecCpu } from './sage/codec.js';

/**
 * The skeleton's hooks, shared by its three backends (TS kernel, WGSL generator, C++
 * templates). The mask rule is not a hook: it is spec.ts's `allowed` (band, block sparsity,
 * mask mod), carried by the AttentionProblem.
 *
 * - `normalize`: how a row of scores becomes weights.
 *     softmax: online max/sum, O = acc / l, LSE = m + log l (FA2 Algorithm 1); optional
 *              per-head sinks join l as e^(sink - m) (zero value vector). Backward:
 *              dS = P (dP - D), D_i = dO_i . O_i.
 *     sigmoid: w = sigmoid(s + bias[b]) (FlashSigmoid): no row statistics, no LSE, O = sum w v.
 *              Backward: dS = dP w (1 - w), no D pre-pass.
 *     silu:    w = factor silu(s) = factor s sigmoid(s) (HSTU: factor = 1 / maxSeqLen, the
 *              problem's scale = alpha): pointwise like sigmoid. Backward:
 *              dS = dP factor sig(s) (1 + s (1 - sig(s))). A masked score (-inf) weighs 0.
 *   sigmoid and silu are the pointwise normalisations: the same code paths on every backend
 *   (no row statistics, split-K partials are plain sums), differing only in w(s) and dw/ds.
 * - `scoreMods`: applied in order to each score after the scale (mods.ts semantics); the
 *   backward multiplies dS by each mod's derivative at its input.
 * - `schedule`: how each Q tile's key tiles are cut into work (see ScheduleHook); absent =
 *   'band'. It never changes the math, only the order of the reduction.
 * - `operands` (storage codec) is the dtype of the tensors (f32, f16/bf16 packed); the TS FA2
 *   loop also takes SageAttention2's int8 codec (OperandsHook below).
 */
export type NormalizeHook =
  | { kind: 'softmax'; sinks?: Float32Array | undefined }
  | { kind: 'sigmoid'; bias: Float32Array }
  | { kind: 'silu'; factor: number };

/** The normalisations without row statistics or LSE (weights final per tile). */
export type PointwiseKind = 'sigmoid' | 'silu';

/** Whether `n` is a pointwise normalisation (sigmoid, silu): no LSE, no D pre-pass. */
export function isPointwise(n: NormalizeHook | undefined): boolean {
  return n?.kind === 'sigmoid' || n?.kind === 'silu';
}

/**
 * The forward's work schedule over the key tiles of each (b, h, Q tile).
 * - `band` (default, also when `schedule` is absent): one pass over the key tiles the mask rule
 *   allows (the causal / window band; block-sparse and mask-mod blocks skipped), one online
 *   softmax state per row.
 * - `splitK` (fixed split-K, FlashDecoding): the same band's key tiles cut into `splits`
 *   contiguous, balanced ranges (cpu/schedule.ts splitKeyTiles; empty ranges when there are
 *   fewer tiles than splits); each range yields a partial (m, l, acc) (pointwise: a partial sum
 *   of w v) and a combine pass merges them with the associative online-softmax rule
 *   (KERNELS.md "LeanAttention"); sinks join once, after the combine. `splits` is a positive
 *   integer (ValueError naming `schedule.splits` otherwise). Equal to 'band' up to f32 rounding.
 * - `streamK` (stream-K, LeanAttention): the work units are every (b, h, Q tile) of the call,
 *   each with its band's key tiles (the tiles 'band' visits); their tiles, concatenated in
 *   unit order, are cut into `workers` contiguous ranges balanced to one tile
 *   (cpu/partition.ts planDecodePartition), a range crossing a unit boundary split into one
 *   piece per unit. Each piece yields a partial (m, l, acc) like a split-K range, and a fix-up
 *   pass merges the pieces of each unit with the same associative rule (combinePartials;
 *   pointwise normalisations sum the partials; sinks join once, after the fix-up). A unit with
 *   no tiles (an empty sequence) has no piece: O = 0, LSE = -inf as in 'band'. `workers` is a
 *   positive integer (ValueError naming `schedule.workers` otherwise); more workers than tiles
 *   leaves some idle. Same math as 'band', only the order of the reduction differs: O and LSE
 *   equal 'band' up to f32 rounding.
 *
 * `splitK` is implemented by the FA2 forward of every backend (TS cpu/fa2.ts, WGSL
 * webgpu/host.ts + combineShader, C++ flash_forward.h); not by the TS FA1 loop order, whose key
 * tiles are the outer loop (the family layer declines it there). Users set it with the
 * `numSplits` option. `streamK` is implemented by the FA2 forward of every backend (TS
 * cpu/fa2.ts with planDecodePartition; C++ stream_k.h + flash_forward.h with the same
 * balanced-contiguous rule over the engine's own tiles, one pool task per worker; WGSL one
 * workgroup per worker over a plan in `aux`, combineShader as the fix-up); FA1 declines it, and
 * WGSL refuses it with block sparsity or a mask mod (UnsupportedError naming `schedule`). Users
 * set it with the `streamKWorkers` option. The backward ignores `schedule` (it does not change
 * the math: the backward recomputes P from the forward's LSE, whichever schedule produced it).
 */
export type ScheduleHook =
  | { kind: 'band' }
  | { kind: 'splitK'; splits: number }
  | { kind: 'streamK'; workers: number };

/**
 * Built-in mask hook: generative-recommenders' HSTU masks (issue 10 item 3), one rule per
 * sequence of a jagged batch. Design:
 *
 * (a) Element rule: `hstuMaskAllowed(mask, b, i, j, n)` with i, j positions within sequence b
 *     (n its length = its key count Nk; the queries are its last Nq <= Nk tokens, so query row
 *     r is position i = r + Nk - Nq: M-FALCON's candidates when Nq < Nk) is exactly @attnkit/attention's `hstuAllowed(i, j, n, {causal,
 *     numTargets: numTargets[b], contextualSeqLen: contextual, maxAttnLen, minFullAttnSeqLen:
 *     minFull})` (same integer arithmetic, re-typed here so the skeleton has no reference import).
 *     The rule is complete by itself: it includes the causal direction, so the problem's band
 *     only has to be a superset of it.
 * (b) Tile classification (conservative: never skips an allowed pair). The family passes the
 *     problem's band as the superset: the causal band (j <= i) when `causal` and no contextual
 *     prefix (every HSTU mask is then a subset of j <= i: targets and windows only remove
 *     pairs), and no band at all (every key) when `causal` is false or contextual > 0 (the
 *     prefix rows r == 0 see later history tokens, j > i). Tiles the band skips are skipped;
 *     every tile the band visits is PARTIAL: the element rule runs on every pair of it (masked
 *     score -inf: weight 0, dS 0). Skipping tiles by the window (maxAttnLen) or by the target
 *     block is left for later; it only saves work.
 * A hook is built only when a mask option is active (some numTargets > 0, contextual > 0 or
 * maxAttnLen > 0): without one the problem runs the plain band path, at no cost.
 * Backends: ts (cpu/scores.ts applyHstuMask: forward FA1/FA2 and backward) and native
 * (engine.h AttnProblem.hstuTargets...: flash_common.h hstuAllowed, classifyTile makes every
 * visited tile partial, fwdHstuMask / the backward's P and W passes mask per pair; problems
 * without it run the unchanged code) and webgpu (webgpu/hooks.ts: numTargets as the u32
 * binding `hstut`, the counts as uniforms, `hk_hstu` run by shaders.ts maskCode on every pair
 * of every visited tile; kernels without it generate unchanged text) implement it.
 */
export interface HstuMaskHook {
  kind: 'hstu';
  /** Targets per sequence (length B), each in [0, its length]. */
  numTargets: Int32Array;
  /** contextualSeqLen (0: none). */
  contextual: number;
  /** maxAttnLen (0: no window). */
  maxAttnLen: number;
  /** minFullAttnSeqLen (read only with maxAttnLen > 0). */
  minFull: number;
  /** The rule's direction (the problem's band may be wider, see above). */
  causal: boolean;
}

/** `hstuAllowed` of @attnkit/attention for sequence b of length n (see HstuMaskHook). */
export function hstuMaskAllowed(
  mask: HstuMaskHook,
  b: number,
  i: number,
  j: number,
  n: number,
): boolean {
  const c = mask.contextual;
  const m = mask.maxAttnLen;
  const f = mask.minFull;
  const top = (c > 0 ? n - c + 1 : n) - mask.numTargets[b]!;
  const r = Math.min(c > 0 ? Math.max(i - c + 1, 0) : i, top);
  const s = Math.min(c > 0 ? Math.max(j - c + 1, 0) : j, top);
  let d = r - s;
  if (!mask.causal) d = Math.abs(d);
  let ok = i === j || d > 0;
  if (m > 0) ok = ok && (d <= m || (f > 0 && r >= top - f));
  if (c > 0) ok = ok || (r === 0 && s < top);
  return ok;
}

/**
 * The `operands` hook of the TS FA2 forward (cpu/fa2.ts, bound as CpuHooks.operands by
 * cpu/int8.ts compileInt8Operands): SageAttention2's codec instead of float Q, K (and V).
 * Per 64-key tile (ARITHMETIC.md, packages/sage-attention): S = f32(int32 dot of the Q and K
 * codes) x f32(sQ sK) (+ the smoothQ bias) x scale; the online softmax as for floats; with V
 * codes (pvBits 8) P~ is quantized to u8 (rint(255 p)) and P~ V accumulated in int32 per tile,
 * then rescaled by V's per-channel scale; without (pvBits 32) P V runs on the codec's f32 V
 * through the float path. The key tile must be 64 (P's quantization depends on the running max
 * per tile), the problem BHND and unpaged, the schedule 'band', no permuted tiles.
 * Only the TS loop reads it: the generic entry points (tiledForwardTs / Native / WebGpu) take
 * float tensors; native and WebGPU run Sage through their own kernels (sage/native.ts,
 * sage/webgpu.ts), tested against this one (sage/forward-ts.ts sageForwardTs).
 */
export interface Int8OperandsHook {
  kind: 'int8';
  codec: SageCodecCpu;
}

export type OperandsHook = Int8OperandsHook;

export interface TiledHooks {
  normalize: NormalizeHook;
  /** Built-in HSTU mask, on top of the problem's band (absent: none); see HstuMaskHook. */
  mask?: HstuMaskHook | undefined;
  /** Built-in HSTU bucketed relative attention bias (absent: none); see HstuRabHook. */
  rab?: HstuRabHook | undefined;
  scoreMods: readonly ResolvedScoreMod[];
  /** Key-tile work schedule of the forward (absent = 'band'); see ScheduleHook. */
  schedule?: ScheduleHook | undefined;
  /** Rows tiled in a permuted order (absent = sequence order); see PermuteHook. */
  permute?: PermuteHook | undefined;
}

/** Plain FlashAttention: softmax, no mods. */
export const SOFTMAX_HOOKS: TiledHooks = { normalize: { kind: 'softmax' }, scoreMods: [] };

/** Sigmoid's bias per batch entry: the given constant, or -log(Nk) of each sequence (KERNELS.md). */
export function sigmoidBias(p: AttentionProblem, bias?: number): Float32Array {
  const out = new Float32Array(p.batch);
  for (let b = 0; b < p.batch; b++) {
    const nk = p.seqK[b]!;
    out[b] = bias ?? (nk > 0 ? -Math.log(nk) : 0);
  }
  return out;
}

/**
 * Permuted tiles (the schedule of sorted-order families such as HyperAttention's sortLSH): the
 * kernel tiles the rows in a permuted order instead of the sequence order. Row i of the tiled
 * order is query `q[...]` position within its sequence; key j is key `k[...]` position. The
 * result is exactly attention of the gathered tensors Q'_i = Q[q_i], K'_j = K[k_j],
 * V'_j = V[k_j] — every position rule (the causal/window band, block sparsity, mask mods,
 * ALiBi and bias mods) sees the tiled positions i, j — scattered back: O[q_i] = O'_i,
 * LSE[q_i] = LSE'_i; the backward scatters dQ likewise and accumulates dK, dV at k_j. No
 * permuted copy of Q, K, V is ever made: rows are read through the index.
 *
 * Layout of the index arrays (Int32, the LSE layout): `q` [B, Hq, Nq] (BHND) or [Hq, totalQ]
 * (THD: entry h * totalQ + startQ[b] + i); `k` [B, Hkv, Nk] or [Hkv, totalK]. Each (b, h) slice
 * is a permutation of 0..n-1 (validated by the family layer: @attnkit/attention's
 * resolvePermute). Absent = identity. Implemented by every backend's forward (band and split-K)
 * and backward (TS cpu/tile.ts stageTile/scatterTile, WGSL row mappings, C++ index pointers);
 * users set it with the `permute` option.
 */
export interface PermuteHook {
  q?: Int32Array | undefined;
  k?: Int32Array | undefined;
}

/** The score mod whose gradient the backward returns (BiasMod.grad), with its index. */
export type BiasGradMod = Extract<ResolvedScoreMod, { kind: 'bias' }> & { grad: true };

/**
 * The bias mod of `mods` that asks for its gradient (`grad: true`), or undefined. The backward
 * writes dS, the gradient at the score after the scale and the mods' chain rule, as that bias's
 * gradient: exact when every mod before it is additive (alibi, bias: derivative 1), so that is
 * required here, with at most one such mod (ValueError naming `scoreMod[n].grad` otherwise).
 * Every backend calls this, so all three agree on what they accept.
 */
export function biasGradMod(
  mods: readonly ResolvedScoreMod[],
): { index: number; mod: BiasGradMod } | undefined {
  let found: { index: number; mod: BiasGradMod } | undefined;
  for (const [n, m] of mods.entries()) {
    if (m.kind !== 'bias' || !m.grad) continue;
    const arg = `scoreMod[${n}].grad`;
    if (found)
      throw new ValueError(
        `${arg}: expected at most one bias mod with grad (scoreMod[${found.index}] has it), got a second`,
        arg,
      );
    const before = mods.slice(0, n).find((x) => x.kind !== 'alibi' && x.kind !== 'bias');
    if (before)
      throw new ValueError(
        `${arg}: expected only additive mods (alibi, bias) before a bias mod with grad (its gradient is the score's), got a ${before.kind} mod before it`,
        arg,
      );
    found = { index: n, mod: m as BiasGradMod };
  }
  return found;
}

/**
 * Where a backend writes dbias: (batch, head) strides of the buffer its kernel stores dS into
 * (row stride: the bias's). `direct`: no dim of the bias is broadcast over the problem, so each
 * element belongs to one (b, h) and the buffer is dbias itself (the bias's strides, `size` its
 * elements). Otherwise a [B, Hq, R, C] buffer (R, C: the bias's last two dims) in which every
 * (b, h) has its own plane, reduced over the broadcast dims afterwards (`reduceBiasGrad`): no
 * two workers ever add into one element, so plain stores suffice on every backend.
 */
export function biasGradLayout(
  p: Pick<AttentionProblem, 'batch' | 'hq'>,
  mod: BiasGradMod,
): { batchStride: number; headStride: number; direct: boolean; size: number } {
  const s = mod.bias.shape;
  const plane = (s.length >= 2 ? s[s.length - 2]! : 1) * mod.rowStride;
  const direct =
    (p.batch <= 1 || mod.batchStride === p.hq * plane) && (p.hq <= 1 || mod.headStride === plane);
  return direct
    ? { batchStride: mod.batchStride, headStride: mod.headStride, direct, size: mod.bias.size }
    : { batchStride: p.hq * plane, headStride: plane, direct, size: p.batch * p.hq * plane };
}

/** Sums a non-direct biasGradLayout buffer ([B, Hq, R, C]) into `out`, the bias's shape. */
export function reduceBiasGrad(
  p: Pick<AttentionProblem, 'batch' | 'hq'>,
  mod: BiasGradMod,
  full: Float32Array,
  out: Float32Array,
): Float32Array {
  const plane = biasGradLayout(p, mod).headStride;
  out.fill(0);
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.hq; h++) {
      const src = (b * p.hq + h) * plane;
      const dst = b * mod.batchStride + h * mod.headStride;
      for (let e = 0; e < plane; e++) out[dst + e] = out[dst + e]! + full[src + e]!;
    }
  }
  return out;
}
