import { type AttentionProblem, qBase } from '@attnkit/attention';
import { describe, ValueError } from '@attnkit/tensor';
import type { SubgroupMatrixConfig } from '@attnkit/webgpu';

/**
 * Tile candidates of the tensor-core (subgroup-matrix) FlashAttention-2 kernels, f16 x f16 ->
 * f32 (pure: unit-tested without a device; issue 20 item 2). The kernels try them best first
 * and fall back to the next when a pipeline does not compile in time (`compileFirstInTime` of
 * @attnkit/webgpu).
 *
 * Layout, as FA2 splits work between warps (Sec. 3.3): a workgroup owns BR rows (queries in the
 * forward and dQ passes, keys in dK/dV) and walks the other side in BC-wide tiles, staged in
 * workgroup memory as f16 and shared by its subgroups. Each subgroup owns a strip of
 * `rowsPerSubgroup = mRows * M` rows against the whole tile, so the row statistics of the
 * online softmax never cross subgroups. Per subgroup, in result matrices of the config
 * (M x N, f32):
 * - score tiles `mRows x nCols` with BC = nCols * N: S (forward); S and dP (dQ, dK/dV);
 * - output accumulators `mRows x ceil(width / N)` for each output of the pass: O (width Dv),
 *   dQ (D), or dK (D) and dV (Dv).
 * Score tiles leave the matrices through per-subgroup workgroup scratch (WGSL gives no
 * per-element access to subgroup matrices): S in f32, P (or dS) back in f16 as the next
 * multiply's left operand, plus the rows' statistics (max, sum or LSE, delta) in f32.
 *
 * Model (constants below), each rule from the H200 probes of ../shared/gpu/README.md section 2:
 * 1. **Registers**: a subgroup's accumulators take `matrices * M * N / subgroupSize` f32 per
 *    invocation; at most TC_REGISTER_BUDGET_FLOATS (128: the 4x4 matrices of 16x16 that a
 *    GEMM held at 55 TFLOP/s, compiling in 0.1 s; 4x8 and 8x8 spilled, ran at 2.5-3 TFLOP/s and
 *    took 5-11 s to compile). Score tiles are at most 4 x 4 matrices (TC_MAX_MATRICES_PER_SIDE).
 * 2. **Workgroup memory**: `buffers * stageBytes + scratchBytes` within
 *    maxComputeWorkgroupStorageSize; two staging buffers (loading the next tile while the
 *    current one multiplies) when they fit, else one.
 * 3. **Order** (best first), keys compared in turn:
 *    a. the config's shape, largest M*N*K first (16x16x16 before 16x8x16 before 16x8x8: more
 *       work per instruction and per load);
 *    b. 128-256 invocations per workgroup (4-8 subgroups of 32) before others;
 *    c. more score matrices per subgroup first (4x4, then 2x4 / 4x2, then 2x2, ...), square
 *       ones first among equals: the 4x4 and 2x2 shapes ran fastest in the GEMM probe, and a
 *       wider tile spreads each step's fixed costs (barriers, the score round trip through
 *       workgroup memory, rescaling the output) over more multiplies;
 *    d. double-buffered before single;
 *    e. larger BR * BC first (a staged tile is reused by more rows, fewer tile steps);
 *    f. more invocations first, then smaller workgroup memory (more resident workgroups).
 * Head dims are padded to a multiple of the config's K and N (the kernel fills zeros).
 * Empty when the adapter has no f16 x f16 -> f32 config, no subgroups, or nothing fits: the
 * SIMT kernels are used then.
 */

export type TcPass = 'forward' | 'dq' | 'dkdv';

/** Largest score tile per subgroup, in matrices along each side. */
export const TC_MAX_MATRICES_PER_SIDE = 4;
/** f32 accumulator values per invocation a subgroup may hold (4x4 result matrices of 16x16 at 32 lanes). */
export const TC_REGISTER_BUDGET_FLOATS = 128;
/** Subgroups per workgroup tried. */
const SUBGROUP_COUNTS = [1, 2, 4, 8, 16];
const SIDES = [1, 2, 4];
const F16 = 2;
const F32 = 4;

export interface TcPlanInput {
  pass: TcPass;
  /** Head dim of Q and K. */
  d: number;
  /** Head dim of V (and O, dO). */
  dv: number;
  /** The adapter's configs (ctx.features.subgroupMatrixConfigs). */
  subgroupMatrixConfigs: readonly SubgroupMatrixConfig[];
  /** Smallest and largest subgroup sizes (0 without subgroups). */
  subgroupMinSize: number;
  subgroupMaxSize?: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
}

export interface TcTilePlan {
  pass: TcPass;
  /** The multiply shape used (component f16, result f32). */
  config: SubgroupMatrixConfig;
  /** Rows per workgroup: queries (forward, dq) or keys (dkdv). */
  br: number;
  /** Columns per staged tile: keys (forward, dq) or queries (dkdv). */
  bc: number;
  subgroups: number;
  /** The subgroup size the plan assumes (the adapter's largest). */
  subgroupSize: number;
  /** Invocations per workgroup (subgroups * subgroupSize). */
  threads: number;
  rowsPerSubgroup: number;
  /** Score tile per subgroup, in result matrices: rows x cols (e.g. 4x4). */
  matrices: { rows: number; cols: number };
  /** Result matrices one subgroup holds: score tiles and output accumulators. */
  accumulatorMatrices: number;
  /** f32 accumulator values per invocation (at the smallest subgroup size). */
  registerFloats: number;
  /** Head dims padded to the config's K and N. */
  dPad: number;
  dvPad: number;
  /** One staged tile (K and V, or Q and dO with their LSE and delta), bytes. */
  stageBytes: number;
  /** Staging buffers: 2 = double buffering. */
  buffers: 1 | 2;
  /** Per-subgroup scratch (S f32, P/dS f16, row statistics) of all subgroups, bytes. */
  scratchBytes: number;
  /** buffers * stageBytes + scratchBytes. */
  workgroupBytes: number;
}

function positiveInt(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new ValueError(`${name}: expected an integer >= 1, got ${describe(value)}`, name);
  }
  return value;
}

function nonNegativeInt(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new ValueError(`${name}: expected an integer >= 0, got ${describe(value)}`, name);
  }
  return value;
}

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;

/** How many score tiles and which output widths a pass accumulates per subgroup. */
function passShape(pass: TcPass, d: number, dv: number): { scores: number; widths: number[] } {
  if (pass === 'forward') return { scores: 1, widths: [dv] };
  if (pass === 'dq') return { scores: 2, widths: [d] };
  return { scores: 2, widths: [d, dv] };
}

/** The sort key of rule 3 (smaller sorts first). */
function rankKey(p: TcTilePlan): number[] {
  const { M, N, K } = p.config;
  const square = p.matrices.rows === p.matrices.cols;
  return [
    -(M * N * K),
    p.threads >= 128 && p.threads <= 256 ? 0 : 1,
    -(p.matrices.rows * p.matrices.cols),
    square ? 0 : 1,
    p.buffers === 2 ? 0 : 1,
    -(p.br * p.bc),
    -p.threads,
    p.workgroupBytes,
  ];
}

function compareKeys(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** Candidate tensor-core tiles for one pass, best first (see the model above); [] when none. */
export function planTensorCoreTiles(input: TcPlanInput): TcTilePlan[] {
  if (input === null || typeof input !== 'object') {
    throw new ValueError(`input: expected an object, got ${describe(input)}`, 'input');
  }
  const { pass } = input;
  if (pass !== 'forward' && pass !== 'dq' && pass !== 'dkdv') {
    throw new ValueError(`pass: expected "forward", "dq" or "dkdv", got ${describe(pass)}`, 'pass');
  }
  const d = positiveInt(input.d, 'd');
  const dv = positiveInt(input.dv, 'dv');
  const storage = positiveInt(
    input.maxComputeWorkgroupStorageSize,
    'maxComputeWorkgroupStorageSize',
  );
  const invocations = positiveInt(
    input.maxComputeInvocationsPerWorkgroup,
    'maxComputeInvocationsPerWorkgroup',
  );
  const minSize = nonNegativeInt(input.subgroupMinSize, 'subgroupMinSize');
  const maxSize = nonNegativeInt(input.subgroupMaxSize ?? minSize, 'subgroupMaxSize');
  if (!Array.isArray(input.subgroupMatrixConfigs)) {
    throw new ValueError(
      `subgroupMatrixConfigs: expected an array (ctx.features.subgroupMatrixConfigs), got ${describe(input.subgroupMatrixConfigs)}`,
      'subgroupMatrixConfigs',
    );
  }
  // Subgroup matrices live in subgroups: without a known size nothing can be planned.
  if (minSize === 0 || maxSize < minSize) return [];
  const configs = input.subgroupMatrixConfigs.filter(
    (c) => c?.component === 'f16' && c.result === 'f32',
  );
  const { scores, widths } = passShape(pass, d, dv);
  const plans: TcTilePlan[] = [];
  for (const config of configs) {
    const { M, N, K } = config;
    // D is the inner dim of S = Q K^T (K-multiple) and an output width (N-multiple); likewise Dv
    // for dP = dO V^T and O, dV.
    const pad = Math.max(K, N);
    const dPad = roundUp(d, pad);
    const dvPad = roundUp(dv, pad);
    const padded = widths.map((w) => (w === d ? dPad : dvPad));
    const outputCols = padded.reduce((s, w) => s + w / N, 0);
    for (const subgroups of SUBGROUP_COUNTS) {
      const threads = subgroups * maxSize;
      if (threads > invocations) continue;
      for (const mRows of SIDES) {
        for (const nCols of SIDES) {
          if (mRows > TC_MAX_MATRICES_PER_SIDE || nCols > TC_MAX_MATRICES_PER_SIDE) continue;
          const bc = nCols * N;
          // BC is the inner dim of P V (and dS K, P^T dO, dS^T Q).
          if (bc % K !== 0) continue;
          const accumulatorMatrices = scores * mRows * nCols + mRows * outputCols;
          const registerFloats = (accumulatorMatrices * M * N) / minSize;
          if (registerFloats > TC_REGISTER_BUDGET_FLOATS) continue;
          const rowsPerSubgroup = mRows * M;
          const br = subgroups * rowsPerSubgroup;
          // K and V (or Q and dO, with each column's LSE and delta in dK/dV) as f16.
          const stageBytes = bc * (dPad + dvPad) * F16 + (pass === 'dkdv' ? bc * 2 * F32 : 0);
          const perSubgroup =
            scores * rowsPerSubgroup * bc * (F32 + F16) + rowsPerSubgroup * 2 * F32;
          const scratchBytes = subgroups * perSubgroup;
          let buffers: 1 | 2;
          if (2 * stageBytes + scratchBytes <= storage) buffers = 2;
          else if (stageBytes + scratchBytes <= storage) buffers = 1;
          else continue;
          plans.push({
            pass,
            config: { ...config },
            br,
            bc,
            subgroups,
            subgroupSize: maxSize,
            threads,
            rowsPerSubgroup,
            matrices: { rows: mRows, cols: nCols },
            accumulatorMatrices,
            registerFloats,
            dPad,
            dvPad,
            stageBytes,
            buffers,
            scratchBytes,
            workgroupBytes: buffers * stageBytes + scratchBytes,
          });
        }
      }
    }
  }
  return plans
    .map((p) => ({ p, key: rankKey(p) }))
    .sort((a, b) => compareKeys(a.key, b.key))
    .map(({ p }) => p);
}

/** `16x16x16 4 sg x 1x4 mats br=64 bc=64 x2`: a plan as benchmarks and errors print it. */
export function describeTcPlan(p: TcTilePlan): string {
  const { M, N, K } = p.config;
  return `${M}x${N}x${K} ${p.subgroups}sg ${p.matrices.rows}x${p.matrices.cols} br=${p.br} bc=${p.bc} ${p.threads}thr ${p.workgroupBytes}B x${p.buffers}`;
}

/**
 * Whether the tensor-core forward may load Q's matrices straight from storage
 * (TcForwardConfig.qDirect; `tensor` 'o': the dQ pass's dO blocks, TcBackwardConfig.blockDirect)
 * for problem `p` with the tensor in a buffer of `elements` elements: the
 * kernel loads whole 16-row blocks, rows 0 .. ceil16(nq) - 1 of every sequence and query head,
 * so the last block of every (sequence, last head) must end within the buffer. A block that
 * straddles the end is dropped whole by Tint's robustness (every row of it, valid ones too),
 * so such a problem stages Q instead. Rows of a block past the sequence read other rows of q
 * or the buffer's slack; they only feed rows that are never written.
 */
export function tcQDirectFits(
  p: Pick<
    AttentionProblem,
    'layout' | 'batch' | 'hq' | 'd' | 'dv' | 'maxSeqQ' | 'seqQ' | 'startQ' | 'qRow' | 'oRow'
  >,
  elements: number,
  tensor: 'q' | 'o' = 'q',
): boolean {
  if (!(Number.isFinite(elements) && elements >= 0))
    throw new ValueError(
      `elements: expected a non-negative number (the buffer's element count), got ${describe(elements)}`,
      'elements',
    );
  if (tensor !== 'q' && tensor !== 'o')
    throw new ValueError(`tensor: expected "q" or "o", got ${describe(tensor)}`, 'tensor');
  // o's layout (width Dv, row stride oRow) is also dO's, whose blocks the dQ pass loads.
  const [width, row] = tensor === 'q' ? [p.d, p.qRow] : [p.dv, p.oRow];
  for (let b = 0; b < p.batch; b++) {
    const nq = p.seqQ[b]!;
    if (nq <= 0) continue;
    const end = qBase(p, b, p.hq - 1, width) + (Math.ceil(nq / 16) * 16 - 1) * row + width;
    if (end > elements) return false;
  }
  return true;
}
