import type * as NodeFs from 'node:fs';
import type * as NodeModule from 'node:module';
import type * as NodePath from 'node:path';
import type * as NodeUrl from 'node:url';

/**
 * Loader and typed wrapper of attnkit's native CPU engine (attnkit_native.node: this package's
 * own build in build/Release, else the prebuilt in prebuilds/<platform>-<arch>; see
 * nativeAddonCandidates).
 * It takes plain numbers and TypedArrays (this package sits below @attnkit/attention), used in
 * place: a call reads and writes the arrays until its promise settles, so leave them alone
 * until then.
 *
 * The engine is a registry of ops ('attention.forward', 'attention.backward', 'gemm',
 * 'sage.quantize', 'sage.forward', 'gla.forward', 'gla.backward', and the nn.* ops of
 * @attnkit/nn's native backend), each with kernels per ISA; one generic entry point,
 * `run(op, problem, inputs, outputs)` (and its synchronous twin `runSync`), checks the
 * arrays against the op's descriptor and runs the kernel of the best ISA this CPU has for that
 * op (`ops()` lists them). Importing this module has no side effects and imports no Node
 * module: the addon is loaded by the first `loadNative()` (or `nativeLoadError()`), in Node
 * only, so browser bundles of the packages above it never pull it in.
 */

/**
 * The instruction sets with kernels, fastest first. 'avx512vnni' (AVX-512 with vpdpbusd) has the
 * int8 ops only (SageAttention2's sage.quantize and sage.forward); capping at it runs every other
 * op on the avx512 kernels.
 */
export type NativeIsa = 'avx512vnni' | 'avx512' | 'avx2' | 'scalar';

/** Every ISA the engine has kernels for, fastest first. */
export const NATIVE_ISAS: readonly NativeIsa[] = ['avx512vnni', 'avx512', 'avx2', 'scalar'];

/** Block-sparse mask, as `ResolvedBlockSparse` in @attnkit/attention's spec. */
export interface NativeBlockSparse {
  blockQ: number;
  blockK: number;
  nbq: number;
  nbk: number;
  /** Non-zero = keep; entry (b, h, qb, kb) at b * batchStride + h * headStride + qb * nbk + kb. */
  mask: Uint8Array;
  batchStride: number;
  headStride: number;
}

/**
 * How a row of scores becomes weights (the skeleton's NormalizeHook). softmax: FA2's online
 * softmax, O = P V, LSE; `sinks` (one logit per query head, finite) join every row's sum as
 * e^(sink - m) with a zero value vector. sigmoid: w = sigmoid(s + bias[b]) (one finite bias per
 * batch entry), O = sum w v, no LSE. silu: w = factor s sigmoid(s) (finite factor; HSTU's
 * 1 / maxSeqLen), O = sum w v, no LSE; a masked score weighs 0.
 */
export type NativeNormalize =
  | { kind: 'softmax'; sinks?: Float32Array | undefined }
  | { kind: 'sigmoid'; bias: Float32Array }
  | { kind: 'silu'; factor: number };

/**
 * The built-in score mods (@attnkit/attention's mods.ts semantics), applied in order to each
 * score s = scale q.k: softcap s <- cap tanh(s / cap); alibi s <- s - slopes[h] |i + nk - nq - j|
 * (slopes [Hq]); bias s <- s + bias[b * batchStride + h * headStride + i * rowStride + j] (i, j
 * positions within the sequence). A resolved ScoreMod of kind 'bias' carries the strides; pass
 * its tensor's f32 data as `bias`. flashBackward with `dbias` on a bias mod stores dS (the
 * gradient at the score after the scale and the mods' chain rule, 0 where masked) at
 * dbias[b * dbiasBatchStride + h * dbiasHeadStride + i * rowStride + j] for every (b, h, i, j)
 * a tile visits, leaving the other elements as they are: give each (b, h) its own elements
 * (a broadcast bias: a [B, Hq, R, C] buffer summed afterwards), the stores are not atomic.
 */
export type NativeScoreMod =
  | { kind: 'softcap'; cap: number }
  | { kind: 'alibi'; slopes: Float32Array }
  | {
      kind: 'bias';
      bias: Float32Array;
      batchStride: number;
      headStride: number;
      rowStride: number;
      /** Backward only: where dS goes (see above); absent = no bias gradient. */
      dbias?: Float32Array | undefined;
      dbiasBatchStride?: number;
      dbiasHeadStride?: number;
    };

/**
 * An attention problem with the fields and meaning of `AttentionProblem` in @attnkit/attention
 * (a resolved AttentionProblem can be passed as is), plus the skeleton's hooks. BHND:
 * q [B, Hq, maxSeqQ, D], lse [B, Hq, maxSeqQ]; THD: q [totalQ, Hq, D] with per-batch startQ /
 * seqQ, lse [Hq, totalQ].
 */
export interface NativeAttentionProblem {
  layout: 'BHND' | 'THD';
  batch: number;
  hq: number;
  hkv: number;
  d: number;
  dv: number;
  scale: number;
  /** Window bounds relative to the bottom-right diagonal, causal folded in (right = 0); -1 = unbounded. */
  left: number;
  right: number;
  seqQ: Int32Array;
  seqK: Int32Array;
  startQ: Int32Array;
  startK: Int32Array;
  maxSeqQ: number;
  maxSeqK: number;
  totalQ: number;
  totalK: number;
  blockSparse?: NativeBlockSparse | undefined;
  /**
   * Paged K/V (attention.forward only, layout BHND): k and v are page pools [totalK / pageSize,
   * pageSize, hkv, d | dv] and key j of sequence b is pool token blockTable[b * maxPages +
   * floor(j / pageSize)] * pageSize + j % pageSize; seqK[b] <= maxPages * pageSize, and every
   * slot a length needs names a page in [0, totalK / pageSize) (RangeError otherwise). The
   * kernels read the rows in place through the table (no gather into contiguous K/V).
   */
  paged?: { pageSize: number; maxPages: number; blockTable: Int32Array } | undefined;
  /** Tile hints (1..1024): query rows per backward block; keys per forward tile. */
  blockQ?: number | undefined;
  blockK?: number | undefined;
  /**
   * The forward's schedule (attention.forward only): 1 (default) = band, one task per
   * (b, h, query rows) walks its key band; > 1 = split-K (FlashDecoding): each such task's
   * visited key tiles are cut into `splits` contiguous ranges (balanced to one tile) whose
   * partial softmax statistics parallel tasks compute and a combine pass merges. Worth it for
   * decode (few query rows, long Nk), where the band schedule leaves threads idle. 1..65536.
   */
  splits?: number | undefined;
  /**
   * The forward's stream-K schedule (LeanAttention; attention.forward only; not with
   * splits > 1): the units are every (b, h, block of query rows) of the call, each with the key
   * tiles its band visits; their tiles, concatenated in unit order, are cut into `workers`
   * contiguous ranges balanced to one tile (planStreamK), one pool task per worker reduces its
   * pieces into partial softmax statistics, and a fix-up merges each unit's pieces (sinks join
   * once, after). Balanced across units whatever their lengths (decode over ragged KV
   * lengths). `workers` 1..2^24; more than the pool's threads queue, more than the tiles idle.
   * Same math as the band schedule, only the order of the reduction differs.
   */
  streamK?: { workers: number } | undefined;
  /** Default { kind: 'softmax' }. */
  normalize?: NativeNormalize | undefined;
  /** At most 8, applied in order. */
  scoreMods?: readonly NativeScoreMod[] | undefined;
  /**
   * HSTU's mask (the skeleton's HstuMaskHook; generative-recommenders' numTargets,
   * contextualSeqLen, maxAttnLen, minFullAttnSeqLen) on top of the band, per pair of sequence b
   * (seqQ[b] <= seqK[b]: the queries are the sequence's last seqQ[b] tokens, query row i is
   * position i + seqK[b] - seqQ[b], as M-FALCON's candidates; numTargets[b] in [0, seqK[b]]).
   * Default none.
   */
  hstuMask?: NativeHstuMask | undefined;
  /**
   * HSTU's bucketed relative attention bias (the skeleton's HstuRabHook), added to the scaled
   * score before the score mods. Default none. See NativeHstuRab.
   */
  hstuRab?: NativeHstuRab | undefined;
}

/**
 * HSTU's bucketed rab: per pair of sequence b (query row r is position i = r + seqK[b] -
 * seqQ[b], so seqQ[b] <= seqK[b]; key j), z = scale q.k + posTable[h', pc] + timeTable[h', tc]
 * with h' = h, or 0 for a table of one row (heads: 1 or hq), pc = clamp(j - i + (numPos - 1) / 2,
 * 0, numPos - 1) (numPos odd) and tc = the last t with thresholds[t] <= |nextTime[s + i] -
 * keyTime[s + j]|, s = startK[b] (THD; BHND: b maxSeqK), in int32 arithmetic (times >= 0:
 * @attnkit/skeleton hstuRabTimes; thresholds: hstuTimeThresholds, 1..numTime entries from 0,
 * non-decreasing). At least one table. attention.backward's optional outputs
 * `dPositionTable` / `dTimestampTable` (the tables' lengths) get dZ summed per column over the
 * allowed pairs. No permQ / permK with it (RangeError): positions are the sequence order's.
 */
export interface NativeHstuRab {
  /** [posHeads, numPos], row-major. */
  posTable?: Float32Array | undefined;
  posHeads?: number;
  numPos?: number;
  /** [timeHeads, numTime], row-major. */
  timeTable?: Float32Array | undefined;
  timeHeads?: number;
  numTime?: number;
  /** With timeTable: per token of the key axis (totalK; BHND: batch x maxSeqK), >= 0. */
  keyTime?: Int32Array | undefined;
  /** With timeTable: the time of the token after each key-axis token (the last: its own). */
  nextTime?: Int32Array | undefined;
  /** With timeTable: the time buckets' integer lower bounds. */
  thresholds?: Int32Array | undefined;
}

/** attention.backward's outputs of HstuRab's table gradients (NativeHstuRab). */
export interface NativeRabGrads {
  dPositionTable?: Float32Array | undefined;
  dTimestampTable?: Float32Array | undefined;
}

/** See NativeAttentionProblem.hstuMask; the rule is @attnkit/attention's `hstuAllowed`. */
export interface NativeHstuMask {
  numTargets: Int32Array;
  contextual: number;
  maxAttnLen: number;
  minFull: number;
  causal: boolean;
}

/**
 * SageAttention2's dimensions (packages/sage-attention/ARITHMETIC.md; the codec layouts of
 * @attnkit/skeleton's sage/codec.ts): one (b, head) has nq query rows and nk keys, BHND,
 * contiguous; d and dv multiples of 16 in [16, 256]; hq a multiple of hkv. The scale groups:
 * 'block' (128 query rows, 64-key tiles), 'warp' (16 rows, 64-key tiles), 'thread' (rows i and
 * i + 8 of 16, the keys of a tile with equal (j & 7) >> 1).
 */
export interface NativeSageDims {
  batch: number;
  hq: number;
  hkv: number;
  nq: number;
  nk: number;
  d: number;
  dv: number;
  granularity: 'block' | 'warp' | 'thread';
}

/** sage.quantize: the pre-pass, codes equal to the TS spec's (quantizeSageTs) bit for bit. */
export interface NativeSageQuantizeProblem extends NativeSageDims {
  smoothK: boolean;
  smoothQ: boolean;
  /** 8: V to codes and per-channel scales; 32: V stays f32 (no vCodes / vScale outputs). */
  pvBits: 8 | 32;
}

/** sage.forward: the kernel on a codec (ARITHMETIC.md "Kernel"). */
export interface NativeSageForwardProblem extends NativeSageDims {
  pvBits: 8 | 32;
  /** Whether the codec has the smoothQ bias (then the `bias` input is required, else absent). */
  smoothQ: boolean;
  /** Softmax scale (finite). */
  scale: number;
  /** The window with causal folded in (right = 0 when causal), -1 = unbounded. */
  left: number;
  right: number;
  /** At most this many pool threads work on the call (1..1024; default all). */
  threads?: number | undefined;
}

/**
 * Gated linear attention, chunk form or (form 'recurrent') recurrent form (KERNELS.md "Gated
 * linear attention"; the TS twins @attnkit/linear-attention's gla/chunk.ts and recurrent.ts). Layout BTHK: q, k, gk [batch, t, h, k], v and o
 * [batch, t, h, v]; states h0, ht, dht, dh0 [n, h, k, v] with n = batch, or with `sequences`
 * (batch 1, fla's varlen) n = sequences and the cuSeqlens input (sequences + 1 Int32 offsets,
 * 0 first, t last, non-decreasing). gk: finite log-space gates <= 0 (RangeError naming
 * inputs.gk[i] otherwise). k and v in [1, 4096].
 */
export interface NativeGlaProblem {
  batch: number;
  t: number;
  h: number;
  k: number;
  v: number;
  /** Multiplies q (finite). */
  scale: number;
  /** The chunk form's C: a power of two in [16, 256] (required there; absent for 'recurrent'). */
  chunkSize?: number | undefined;
  /** 'chunk' (default) or 'recurrent' (fla's fused_recurrent_gla: one token at a time). */
  form?: 'chunk' | 'recurrent' | undefined;
  /** Recurrent form only: each sequence from its last token to its first (fla's `reverse`). */
  reverse?: boolean | undefined;
  /** Varlen: the number of packed sequences (then batch = 1 and cuSeqlens is required). */
  sequences?: number | undefined;
}

/** C = alpha * op(A) op(B) + beta * C, row-major; op(A) is m x k, op(B) is k x n. */
export interface NativeGemmProblem {
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  /** Default 1. */
  alpha?: number;
  /** Default 0 (C is then only written, never read, as in BLAS). */
  beta?: number;
  /** Leading dimensions; default the row length of each stored matrix. */
  lda?: number;
  ldb?: number;
  ldc?: number;
}

/** The GEMM problem and its matrices in one object (the `gemm` shorthand). */
export interface NativeGemmArgs extends NativeGemmProblem {
  a: Float32Array;
  b: Float32Array;
  c: Float32Array;
}

/**
 * The engine's ops: problem, named inputs and named outputs. Lengths follow from the problem
 * (`run` checks them). attention.forward writes o and, for softmax, lse (sigmoid, silu: no lse).
 * attention.backward reads o and lse for softmax only (sigmoid, silu: neither) and writes dq, dk, dv
 * and, when the problem has sinks, dsinks [Hq] = -sum over rows e^(sink_h - LSE_i) (dO_i . O_i).
 *
 * Both attention ops take the optional inputs `permQ` and `permK` (Int32Array, the permuted-tiles
 * hook, @attnkit/skeleton PermuteHook): rows tiled in a permuted order. The result equals
 * attention of Q' = Q[permQ], K' = K[permK], V' = V[permK] with every position rule (band,
 * block sparsity, alibi, bias) seeing the tiled positions, scattered back (O, LSE, dQ at permQ;
 * dK, dV at permK). Layout = the LSE layout: permQ [B, Hq, maxSeqQ] or [Hq, totalQ] (entry
 * h * totalQ + startQ[b] + i), permK [B, Hkv, maxSeqK] or [Hkv, totalK]; each (b, h) slice a
 * permutation of 0..n-1 (not checked here; lengths are: RangeError naming the input). Absent =
 * identity.
 */
/**
 * The nn ops (@attnkit/nn's native backend; src/engine/nn_ops.h): dense f32 kernels whose
 * problems are integer fields (Arrays of integers for nn.map's dims and strides and nn.rope's
 * dims) and finite numbers, named as the descriptors in src/engine/addon.cc (nnSpecs) list
 * them; Int32Array inputs are indices (targets, ids, batch maps), checked against their range.
 */
export type NativeNnOp =
  | 'nn.map'
  | 'nn.unary'
  | 'nn.softmax'
  | 'nn.norm'
  | 'nn.normBackward'
  | 'nn.crossEntropy'
  | 'nn.crossEntropyBackward'
  | 'nn.gather'
  | 'nn.scatterAdd'
  | 'nn.rope'
  | 'nn.matmul'
  | 'nn.adamw'
  | 'nn.sgd'
  | 'nn.sumSquares'
  | 'nn.decodeHalf';

export type NativeNnOps = {
  [Op in NativeNnOp]: {
    problem: Record<string, number | readonly number[]>;
    inputs: Record<string, Float32Array | Int32Array>;
    outputs: Record<string, Float32Array>;
  };
};

export interface NativeOpMap extends NativeNnOps {
  'attention.forward': {
    problem: NativeAttentionProblem;
    inputs: {
      q: Float32Array;
      k: Float32Array;
      v: Float32Array;
      permQ?: Int32Array | undefined;
      permK?: Int32Array | undefined;
    };
    outputs: { o: Float32Array; lse?: Float32Array | undefined };
  };
  'attention.backward': {
    problem: NativeAttentionProblem;
    inputs: {
      q: Float32Array;
      k: Float32Array;
      v: Float32Array;
      o?: Float32Array | undefined;
      lse?: Float32Array | undefined;
      dO: Float32Array;
      permQ?: Int32Array | undefined;
      permK?: Int32Array | undefined;
    };
    outputs: {
      dq: Float32Array;
      dk: Float32Array;
      dv: Float32Array;
      dsinks?: Float32Array | undefined;
      /** With problem.hstuRab.posTable: its gradient (optional). */
      dPositionTable?: Float32Array | undefined;
      /** With problem.hstuRab.timeTable: its gradient (optional). */
      dTimestampTable?: Float32Array | undefined;
    };
  };
  gemm: {
    problem: NativeGemmProblem;
    inputs: { a: Float32Array; b: Float32Array };
    /** C (read too when beta != 0): at least (m - 1) ldc + n elements. */
    outputs: { c: Float32Array };
  };
  /**
   * SageAttention2's pre-pass: q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (f32,
   * finite: the kernel rejects with an Error whose message starts with the tensor's name
   * otherwise), qBits [Hq] (4 or 8 each). Outputs in the codec's layout: qCodes [B, Hq, Nq, D],
   * qScale [B, Hq, Q groups], kCodes [B, Hkv, Nk, D], kScale [B, Hkv, K groups]; pvBits 8:
   * vCodes [B, Hkv, Nk, Dv], vScale [B, Hkv, Dv] (= sV / 255); smoothQ: bias
   * [B, Hq, ceil(Nq / 128), Nk].
   */
  'sage.quantize': {
    problem: NativeSageQuantizeProblem;
    inputs: { q: Float32Array; k: Float32Array; v: Float32Array; qBits: Uint8Array };
    outputs: {
      qCodes: Int8Array;
      qScale: Float32Array;
      kCodes: Int8Array;
      kScale: Float32Array;
      vCodes?: Int8Array | undefined;
      vScale?: Float32Array | undefined;
      bias?: Float32Array | undefined;
    };
  };
  /**
   * SageAttention2's kernel on a codec (codes in [-127, 127], finite scales and bias; RangeError
   * naming the input otherwise): o [B, Hq, Nq, Dv] and, optionally, lse [B, Hq, Nq] (a row with
   * no allowed key: o 0, lse -inf). pvBits 8 reads vCodes / vScale, 32 reads v.
   */
  'sage.forward': {
    problem: NativeSageForwardProblem;
    inputs: {
      qCodes: Int8Array;
      qScale: Float32Array;
      kCodes: Int8Array;
      kScale: Float32Array;
      vCodes?: Int8Array | undefined;
      vScale?: Float32Array | undefined;
      v?: Float32Array | undefined;
      bias?: Float32Array | undefined;
    };
    outputs: { o: Float32Array; lse?: Float32Array | undefined };
  };
  /** GLA chunk forward: o and, optionally, the final states ht (h0 absent = zero states). */
  'gla.forward': {
    problem: NativeGlaProblem;
    inputs: {
      q: Float32Array;
      k: Float32Array;
      v: Float32Array;
      gk: Float32Array;
      h0?: Float32Array | undefined;
      cuSeqlens?: Int32Array | undefined;
    };
    outputs: { o: Float32Array; ht?: Float32Array | undefined };
  };
  /**
   * GLA chunk backward (chunk.ts's cancellation-free dgk): dq, dk, dv, dgk and, optionally, dh0;
   * dht absent = no gradient from the final states.
   */
  'gla.backward': {
    problem: NativeGlaProblem;
    inputs: {
      q: Float32Array;
      k: Float32Array;
      v: Float32Array;
      gk: Float32Array;
      h0?: Float32Array | undefined;
      dO: Float32Array;
      dht?: Float32Array | undefined;
      cuSeqlens?: Int32Array | undefined;
    };
    outputs: {
      dq: Float32Array;
      dk: Float32Array;
      dv: Float32Array;
      dgk: Float32Array;
      dh0?: Float32Array | undefined;
    };
  };
}

export type NativeOp = keyof NativeOpMap;

/** One op of the registry. */
export interface NativeOpInfo {
  /** ISAs with a kernel of this op, best first. */
  isas: NativeIsa[];
  /** The ISA `run` uses: the best of `isas` at or below the engine's ISA. */
  chosen: NativeIsa | null;
  inputs: string[];
  outputs: string[];
}

/** The permuted-tiles index arrays of attention.forward / attention.backward (see NativeOpMap). */
export interface NativePermutation {
  permQ?: Int32Array | undefined;
  permK?: Int32Array | undefined;
}

export interface NativeBackwardScratch {
  perThreadBytes: number;
  sharedBytes: number;
}

export interface NativeEngine {
  /**
   * The engine's ISA: each op runs on the best ISA at or below it that has a kernel of the op
   * (the best this CPU has unless forced by `loadNative({ isa })` or ATTNKIT_ISA).
   */
  readonly isa: NativeIsa;
  /** Size of the engine's thread pool (ATTNKIT_NUM_THREADS or the CPUs available). */
  readonly threads: number;
  /** ISAs this CPU can run, fastest first. */
  readonly availableIsas: readonly NativeIsa[];
  /** The op registry: op -> its ISAs, the chosen one, its input and output names. */
  ops(): Record<NativeOp, NativeOpInfo>;
  /**
   * Runs `op` off the JS thread. Rejects with TypeError / RangeError naming the argument
   * (`op`, `problem.*`, `inputs.*`, `outputs.*`) when the call does not match the op's
   * descriptor.
   */
  run<Op extends NativeOp>(
    op: Op,
    problem: NativeOpMap[Op]['problem'],
    inputs: NativeOpMap[Op]['inputs'],
    outputs: NativeOpMap[Op]['outputs'],
  ): Promise<void>;
  /**
   * `run` on the calling thread: the same registry and argument checks (TypeError / RangeError
   * thrown), the kernel run before it returns, its parallel work on the engine's pool. It blocks
   * the JS thread meanwhile: for synchronous callers (@attnkit/nn's kernels), whose arrays are
   * theirs alone during the call.
   */
  runSync<Op extends NativeOp>(
    op: Op,
    problem: NativeOpMap[Op]['problem'],
    inputs: NativeOpMap[Op]['inputs'],
    outputs: NativeOpMap[Op]['outputs'],
  ): void;
  /** run('attention.forward', ...): writes o and (softmax) lse; `perm`: permQ / permK. */
  flashForward(
    p: NativeAttentionProblem,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    o: Float32Array,
    lse: Float32Array | undefined,
    perm?: NativePermutation,
  ): Promise<void>;
  /**
   * run('attention.backward', ...): writes dq, dk, dv (and dsinks with sinks); `perm`: permQ /
   * permK (the forward's); `rab`: the hstuRab tables' gradients to write.
   */
  flashBackward(
    p: NativeAttentionProblem,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    o: Float32Array | undefined,
    lse: Float32Array | undefined,
    dO: Float32Array,
    dq: Float32Array,
    dk: Float32Array,
    dv: Float32Array,
    dsinks?: Float32Array,
    perm?: NativePermutation,
    rab?: NativeRabGrads,
  ): Promise<void>;
  /** run('gemm', ...) with the matrices beside the problem. */
  gemm(args: NativeGemmArgs): Promise<void>;
  /**
   * Bytes attention.backward allocates for `p` besides its arrays: `perThreadBytes` for each of
   * the `threads` pool threads (O(maxSeqQ d): dQ partial sums of one wave of query heads, and
   * block buffers) and `sharedBytes` once (softmax: two floats per lse entry). A permQ input
   * adds blockQ (d + dv) floats per thread (its gathered query tile), not counted here.
   */
  backwardScratch(p: NativeAttentionProblem): NativeBackwardScratch;
  /**
   * The planner attention.forward's `streamK` runs (the C++ twin of the skeleton's
   * planDecodePartition({ kind: 'streamK' })), for tests and tools: `tiles[u]` key tiles of
   * unit u, `workers` 1..2^24. Worker w's pieces are `pieces[3 k .. 3 k + 2]` = (unit, begin,
   * end) for k in [workerStart[w], workerStart[w + 1]). TypeError / RangeError naming `tiles`
   * or `workers`.
   */
  planStreamK(tiles: Float64Array, workers: number): NativeStreamKPlan;
}

/** See NativeEngine.planStreamK. */
export interface NativeStreamKPlan {
  workerStart: Float64Array;
  pieces: Float64Array;
}

export interface LoadNativeOptions {
  /** The engine's ISA (a cap per op); default ATTNKIT_ISA, else the fastest this CPU supports. */
  isa?: NativeIsa;
}

interface Addon {
  info(): { isas: NativeIsa[]; threads: number };
  ops(isa?: string): Record<NativeOp, NativeOpInfo>;
  run(op: string, problem: unknown, inputs: unknown, outputs: unknown, isa?: string): Promise<void>;
  runSync(op: string, problem: unknown, inputs: unknown, outputs: unknown, isa?: string): void;
  scratch(op: string, problem: unknown, isa?: string): NativeBackwardScratch;
  planStreamK(tiles: Float64Array, workers: number): NativeStreamKPlan;
}

interface NodeBuiltins {
  fs: typeof NodeFs;
  module: typeof NodeModule;
  path: typeof NodePath;
  url: typeof NodeUrl;
}

type GetBuiltin = (id: string) => unknown;

/** Node's built-in modules, fetched at run time (no static import), or undefined outside Node. */
function nodeBuiltins(): NodeBuiltins | undefined {
  const proc = (globalThis as { process?: { getBuiltinModule?: GetBuiltin } }).process;
  const get = proc?.getBuiltinModule;
  if (typeof get !== 'function') return undefined;
  return {
    fs: get('node:fs') as typeof NodeFs,
    module: get('node:module') as typeof NodeModule,
    path: get('node:path') as typeof NodePath,
    url: get('node:url') as typeof NodeUrl,
  };
}

function env(name: string): string | undefined {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[
    name
  ];
}

/** Where an addon candidate comes from, in the order the loader tries them. */
export type NativeAddonSource = 'env' | 'local' | 'prebuilt';

export interface NativeAddonCandidate {
  source: NativeAddonSource;
  path: string;
}

/**
 * What the install script (scripts/build-addon.mjs) recorded in build-addon-status.json. No
 * file means it never ran: pnpm 10 blocked it (build scripts of dependencies need
 * `pnpm approve-builds`), or the install used --ignore-scripts.
 */
export interface NativeInstallStatus {
  outcome: 'built' | 'prebuilt' | 'up-to-date' | 'failed' | 'skipped';
  reason?: string;
  /** The node-gyp log of the build it ran. */
  log?: string;
  /** The addon it built or chose. */
  addon?: string;
}

/** The file the install script writes on every run (beside package.json). */
export const NATIVE_STATUS_FILE = 'build-addon-status.json';

/**
 * The addon paths to try, in order: ATTNKIT_NATIVE_ADDON alone when set (an explicit choice
 * never falls back); else this package's own build (build/Release, from the install script or
 * `build:addon`), then the prebuilt that ships for `platform-arch`
 * (prebuilds/<platform>-<arch>/). Pure: `join` is the path module's.
 */
export function nativeAddonCandidates(o: {
  root: string;
  platform: string;
  arch: string;
  override?: string | undefined;
  join: (...parts: string[]) => string;
}): NativeAddonCandidate[] {
  if (o.override !== undefined && o.override !== '') return [{ source: 'env', path: o.override }];
  return [
    { source: 'local', path: o.join(o.root, 'build', 'Release', 'attnkit_native.node') },
    {
      source: 'prebuilt',
      path: o.join(o.root, 'prebuilds', `${o.platform}-${o.arch}`, 'attnkit_native.node'),
    },
  ];
}

/** The outcome of trying the candidates: the first that loads, and why each other did not. */
export interface NativeAddonResolution<T> {
  loaded?: { candidate: NativeAddonCandidate; addon: T } | undefined;
  /** Candidates with no file. */
  missing: NativeAddonCandidate[];
  /** Candidates whose file exists but does not load (message per candidate). */
  failed: { candidate: NativeAddonCandidate; error: string }[];
}

/**
 * Tries the candidates in order (a file that exists but does not load, say a local build for
 * another Node, falls through to the next). `exists` and `load` are injected (fs.existsSync and
 * require in the loader; fakes in tests).
 */
export function resolveNativeAddon<T>(
  candidates: readonly NativeAddonCandidate[],
  exists: (path: string) => boolean,
  load: (path: string) => T,
): NativeAddonResolution<T> {
  const missing: NativeAddonCandidate[] = [];
  const failed: { candidate: NativeAddonCandidate; error: string }[] = [];
  for (const candidate of candidates) {
    if (!exists(candidate.path)) {
      missing.push(candidate);
      continue;
    }
    try {
      return { loaded: { candidate, addon: load(candidate.path) }, missing, failed };
    } catch (e) {
      failed.push({ candidate, error: e instanceof Error ? e.message : String(e) });
    }
  }
  return { missing, failed };
}

/**
 * Why no addon loaded, in one paragraph: which paths were tried, what the install script did
 * (never ran / its build failed, with the log / it skipped the build) and the fix. Pure.
 */
export function describeNativeLoadFailure(o: {
  resolution: NativeAddonResolution<unknown>;
  /** The install script's record; undefined when the file is absent (it never ran). */
  status: NativeInstallStatus | undefined;
  statusPath: string;
  /** Whether the log the status names (if any) exists. */
  logExists: boolean;
  platform: string;
  arch: string;
  /** scripts/build-addon.mjs of this package. */
  scriptPath: string;
}): string {
  const { resolution, status } = o;
  const target = `${o.platform}-${o.arch}`;
  const label = (c: NativeAddonCandidate) =>
    c.source === 'env'
      ? `ATTNKIT_NATIVE_ADDON=${c.path}`
      : c.source === 'local'
        ? `the local build ${c.path}`
        : `the prebuilt for ${target} ${c.path}`;
  const parts: string[] = [];
  if (resolution.failed.length > 0) {
    parts.push(
      resolution.failed
        .map((f) => `failed to load ${f.candidate.path} on ${target}: ${f.error}`)
        .join('; '),
    );
    if (resolution.missing.length > 0)
      parts.push(`also tried ${resolution.missing.map(label).join(', ')} (missing)`);
  } else {
    parts.push(`not built: tried ${resolution.missing.map(label).join(', then ')}; none exists`);
  }
  const env = resolution.missing.find((c) => c.source === 'env');
  if (env) {
    parts.push('unset ATTNKIT_NATIVE_ADDON or point it at an attnkit_native.node');
  } else if (resolution.missing.some((c) => c.source === 'prebuilt')) {
    parts.push(`no prebuilt addon ships for ${target} (prebuilt: linux-x64), so it must compile`);
  }
  let fixTools = false;
  if (status === undefined) {
    parts.push(
      `the install script never ran (no ${o.statusPath}): pnpm 10 blocks the build scripts of ` +
        'dependencies unless approved, so run `pnpm approve-builds` (or add "@attnkit/native" ' +
        'to pnpm.onlyBuiltDependencies in package.json) and reinstall; npm or yarn with ' +
        '--ignore-scripts skip it too',
    );
  } else if (status.outcome === 'failed') {
    const log = status.log && o.logExists ? `; its log: ${status.log}` : '';
    parts.push(
      `the install script's build failed (${status.reason ?? 'no reason recorded'})${log}`,
    );
    fixTools = true;
  } else if (status.outcome === 'skipped') {
    parts.push(
      `the install script skipped the build (${status.reason ?? 'ATTNKIT_SKIP_NATIVE_BUILD=1'})`,
    );
  } else if (resolution.failed.length === 0) {
    parts.push(
      `the install script reported "${status.outcome}"${status.addon ? ` (${status.addon})` : ''}, but no addon is there now`,
    );
  }
  parts.push(
    `to build it (needs python3, make and a C++17 compiler${fixTools ? ': install them first, e.g. `apt-get install python3 make g++`' : ''}): ` +
      'inside the attnkit repository, `pnpm --filter @attnkit/native build:addon`; where ' +
      '@attnkit/native is an installed dependency, `npm rebuild @attnkit/native` (pnpm: ' +
      '`pnpm approve-builds`, then `pnpm rebuild @attnkit/native`), or with any package ' +
      `manager \`node ${o.scriptPath} --strict\``,
  );
  return `${parts.join('. ')}.`;
}

/**
 * Where the addon is loaded from: ATTNKIT_NATIVE_ADDON; else the first of this package's build
 * (build/Release) and its prebuilt for this platform-arch that exists; else the build path
 * (undefined outside Node). Does not load it; `nativeAddonSource()` says which one loaded.
 */
export function nativeAddonPath(): string | undefined {
  const node = nodeBuiltins();
  const override = env('ATTNKIT_NATIVE_ADDON');
  if (!node) return override;
  const candidates = candidatesHere(node);
  return (candidates.find((c) => node.fs.existsSync(c.path)) ?? candidates[0]!).path;
}

/** The loaded addon's path and where it came from ('prebuilt': no compiler was needed). */
export function nativeAddonSource(): NativeAddonCandidate | undefined {
  loadAddon();
  return loadedFrom;
}

function packageRoot(node: NodeBuiltins): string {
  return node.path.resolve(node.path.dirname(node.url.fileURLToPath(import.meta.url)), '..');
}

function candidatesHere(node: NodeBuiltins): NativeAddonCandidate[] {
  const proc = (globalThis as { process?: { platform?: string; arch?: string } }).process;
  return nativeAddonCandidates({
    root: packageRoot(node),
    platform: String(proc?.platform),
    arch: String(proc?.arch),
    override: env('ATTNKIT_NATIVE_ADDON'),
    join: node.path.join,
  });
}

function readStatus(node: NodeBuiltins, path: string): NativeInstallStatus | undefined {
  try {
    return JSON.parse(node.fs.readFileSync(path, 'utf8')) as NativeInstallStatus;
  } catch {
    return undefined;
  }
}

let addon: Addon | null | undefined;
let loadError: string | undefined;
let loadedFrom: NativeAddonCandidate | undefined;
let warned = false;
const engines = new Map<NativeIsa, NativeEngine>();

function loadAddon(): Addon | undefined {
  if (addon !== undefined) return addon ?? undefined;
  // An ATTNKIT_ISA that names no ISA is a configuration error, whatever the addon and the CPU.
  const wanted = env('ATTNKIT_ISA');
  if (wanted !== undefined && wanted !== '' && !isIsa(wanted)) {
    loadError = `ATTNKIT_ISA: expected one of ${NATIVE_ISAS.join(', ')}, got ${JSON.stringify(wanted)}`;
    addon = null;
    return undefined;
  }
  const node = nodeBuiltins();
  if (!node) {
    const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
    loadError = proc?.versions?.node
      ? `Node ${proc.versions.node} lacks process.getBuiltinModule (Node >= 20.16 loads the addon)`
      : 'the native engine runs in Node only';
    addon = null;
    return undefined;
  }
  const require = node.module.createRequire(import.meta.url);
  const resolution = resolveNativeAddon(candidatesHere(node), node.fs.existsSync, (path) => {
    const loaded = require(path) as Partial<Addon>;
    if (typeof loaded?.info !== 'function' || typeof loaded.run !== 'function') {
      throw new Error('it is not the attnkit addon (no info / run exports)');
    }
    return loaded as Addon;
  });
  if (resolution.loaded) {
    addon = resolution.loaded.addon;
    loadedFrom = resolution.loaded.candidate;
    return addon;
  }
  const root = packageRoot(node);
  const statusPath = node.path.join(root, NATIVE_STATUS_FILE);
  const status = readStatus(node, statusPath);
  const proc = (globalThis as { process?: { platform?: string; arch?: string } }).process;
  loadError = describeNativeLoadFailure({
    resolution,
    status,
    statusPath,
    logExists: status?.log !== undefined && node.fs.existsSync(status.log),
    platform: String(proc?.platform),
    arch: String(proc?.arch),
    scriptPath: node.path.join(root, 'scripts', 'build-addon.mjs'),
  });
  addon = null;
  return undefined;
}

function warnOnce(): void {
  if (warned) return;
  warned = true;
  console.warn(`@attnkit/native: native engine unavailable, ${loadError}`);
}

/** Why the native engine is unavailable (undefined when it loads). Loads the addon. */
export function nativeLoadError(): string | undefined {
  loadAddon();
  if (loadError === undefined) checkEnvIsa();
  return loadError;
}

function isIsa(x: unknown): x is NativeIsa {
  return typeof x === 'string' && (NATIVE_ISAS as readonly string[]).includes(x);
}

function checkEnvIsa(): NativeIsa | undefined {
  const wanted = env('ATTNKIT_ISA');
  if (wanted === undefined || wanted === '' || !addon) return undefined;
  const isas = addon.info().isas;
  if (!isIsa(wanted) || !isas.includes(wanted)) {
    loadError = `ATTNKIT_ISA: expected one of the ISAs this CPU supports (${isas.join(', ')}), got ${JSON.stringify(wanted)}`;
    return undefined;
  }
  return wanted;
}

/**
 * The native engine, or undefined (with one console warning saying why; nativeLoadError()
 * returns it) when the addon is not built, fails to load, is not in Node, or ATTNKIT_ISA is set
 * to a value that is not an ISA (checked before the addon loads) or names an ISA this CPU lacks. Engines
 * are cached per ISA. The first call loads the addon.
 */
export function loadNative(options: LoadNativeOptions = {}): NativeEngine | undefined {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`options: expected an object, got ${String(options)}`);
  }
  const a = loadAddon();
  if (!a) {
    warnOnce();
    return undefined;
  }
  const { isas, threads } = a.info();
  let isa: NativeIsa;
  let cap: NativeIsa | undefined;
  if (options.isa !== undefined) {
    if (!isIsa(options.isa) || !isas.includes(options.isa)) {
      throw new RangeError(
        `options.isa: expected one of the ISAs this CPU supports (${isas.join(', ')}), got ${String(options.isa)}`,
      );
    }
    isa = cap = options.isa;
  } else {
    const fromEnv = checkEnvIsa();
    if (env('ATTNKIT_ISA') && !fromEnv) {
      warnOnce();
      return undefined;
    }
    cap = fromEnv;
    isa = fromEnv ?? isas[0]!;
  }
  // Capping at the best ISA this CPU has is no cap: one engine per ISA.
  let engine = engines.get(isa);
  if (!engine) {
    engine = makeEngine(a, isa, cap, isas, threads);
    engines.set(isa, engine);
  }
  return engine;
}

function makeEngine(
  a: Addon,
  isa: NativeIsa,
  cap: NativeIsa | undefined,
  isas: readonly NativeIsa[],
  threads: number,
): NativeEngine {
  const engine: NativeEngine = {
    isa,
    threads,
    availableIsas: Object.freeze([...isas]),
    ops: () => a.ops(cap),
    run: async (op, problem, inputs, outputs) => a.run(op, problem, inputs, outputs, cap),
    runSync: (op, problem, inputs, outputs) => a.runSync(op, problem, inputs, outputs, cap),
    flashForward: (p, q, k, v, o, lse, perm) => {
      const inputs: NativeOpMap['attention.forward']['inputs'] = { q, k, v };
      if (perm?.permQ !== undefined) inputs.permQ = perm.permQ;
      if (perm?.permK !== undefined) inputs.permK = perm.permK;
      return engine.run('attention.forward', p, inputs, lse === undefined ? { o } : { o, lse });
    },
    flashBackward: (p, q, k, v, o, lse, dO, dq, dk, dv, dsinks, perm, rab) => {
      const inputs: NativeOpMap['attention.backward']['inputs'] = { q, k, v, dO };
      if (o !== undefined) inputs.o = o;
      if (lse !== undefined) inputs.lse = lse;
      if (perm?.permQ !== undefined) inputs.permQ = perm.permQ;
      if (perm?.permK !== undefined) inputs.permK = perm.permK;
      const outputs: NativeOpMap['attention.backward']['outputs'] = { dq, dk, dv };
      if (dsinks !== undefined) outputs.dsinks = dsinks;
      if (rab?.dPositionTable !== undefined) outputs.dPositionTable = rab.dPositionTable;
      if (rab?.dTimestampTable !== undefined) outputs.dTimestampTable = rab.dTimestampTable;
      return engine.run('attention.backward', p, inputs, outputs);
    },
    gemm: async (args) => {
      if (args === null || typeof args !== 'object') {
        throw new TypeError(`args: expected an object (NativeGemmArgs), got ${String(args)}`);
      }
      const { a: ma, b: mb, c: mc, ...problem } = args;
      return engine.run('gemm', problem, { a: ma, b: mb }, { c: mc });
    },
    backwardScratch: (p) => {
      const { perThreadBytes, sharedBytes } = a.scratch('attention.backward', p, cap);
      return { perThreadBytes, sharedBytes };
    },
    planStreamK: (tiles, workers) => a.planStreamK(tiles, workers),
  };
  return engine;
}
