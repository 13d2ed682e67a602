import { describe, ValueError } from '@attnkit/tensor';
import { BufferPool } from '@attnkit/webgpu';

/**
 * The plan of FastAttention's CPU-GPU cooperative long context (pure: no device). K/V stay in
 * host memory; the GPU holds, per work group (a batch entry, a group of kv heads with their
 * query heads, a chunk of query rows), the query chunk, the running softmax state of its rows
 * (f32 acc and LSE) and two K/V chunk buffers (double buffering: one is uploaded while the
 * kernel reads the other). Every size below is what the @attnkit/webgpu buffer pool hands out
 * (BufferPool.sizeClass), so the plan's total bounds the pool's high-water mark of one call.
 */

export type StreamDType = 'f32' | 'f16' | 'bf16';

export interface StreamProblem {
  batch: number;
  /** Query heads and kv heads (hq a multiple of hkv). */
  hq: number;
  hkv: number;
  nq: number;
  nk: number;
  d: number;
  dv: number;
  dtype: StreamDType;
  /** The band, causal folded in as FlashAttention does (right 0 when causal); -1 = unbounded. */
  left: number;
  right: number;
  /** Whether o and lse are made on the GPU (q on the GPU) and so count against the budget. */
  outputOnGpu: boolean;
}

export interface StreamLimits {
  /** The forward kernel's query rows and keys per tile: chunks are multiples of them. */
  queryTile: number;
  keyTile: number;
  /** The device's largest binding and buffer: no one buffer of the plan may be larger. */
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  /** Keys per chunk the planner starts from (default 4096): fewer, larger uploads. */
  targetKeyChunk?: number;
}

/** Pool bytes of each buffer one work group holds, by role. */
export interface StreamBuffers {
  /** The query chunk [hqG, queryChunk, D] (dtype). */
  q: number;
  /** The running state: acc [hqG, queryChunk, Dv] f32 and LSE [hqG, queryChunk] f32. */
  acc: number;
  lse: number;
  /** One K and one V chunk buffer [hkvG, keyChunk, D or Dv] (dtype); the plan holds `chunkBuffers` of each. */
  k: number;
  v: number;
  /** The kernel's o and lse of one chunk (dtype, f32). */
  chunkO: number;
  chunkLse: number;
  /** The group's finished o (dtype), and its read-back staging when o goes to the host. */
  groupO: number;
  staging: number;
  /** Uniform and table buffers of the kernel and merge launches (small, 256 bytes each). */
  launch: number;
  /** o and lse of the whole problem when they live on the GPU (else 0). */
  output: number;
}

export interface StreamPlan {
  /** Kv heads per work group (their query heads come along: hkvGroup x hq / hkv). */
  hkvGroup: number;
  hqGroup: number;
  /** Query rows per work group and keys per chunk (multiples of the kernel's tiles, or all of them). */
  queryChunk: number;
  keyChunk: number;
  /** K/V chunk buffers of each kind: 2, double buffering. */
  chunkBuffers: 2;
  buffers: StreamBuffers;
  /** The most pool bytes the call holds at once (the sum of every buffer above). */
  totalBytes: number;
  budgetBytes: number;
  /** Work groups: batch x kv-head groups x query chunks. */
  groups: number;
}

/** A GPU byte budget smaller than the least the streaming plan needs (one tile pair plus the resident part). */
export class GpuBudgetError extends ValueError {
  override name = 'GpuBudgetError';
  constructor(
    message: string,
    /** The least budget that works for this problem. */
    readonly requiredBytes: number,
    readonly budgetBytes: number,
  ) {
    super(message, 'gpuBudgetBytes');
  }
}

const BYTES: Record<StreamDType, number> = { f32: 4, f16: 2, bf16: 2 };
const LAUNCH_BUFFERS = 5;
const size = (bytes: number) => BufferPool.sizeClass(bytes);

function checkInt(name: string, x: unknown, min: number): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < min)
    throw new ValueError(`${name}: expected an integer >= ${min}, got ${describe(x)}`, name);
  return x;
}

/** The pool bytes of a work group of `hkvG` kv heads, `qc` query rows and `kc` keys per chunk. */
export function streamBuffers(
  p: StreamProblem,
  hkvG: number,
  qc: number,
  kc: number,
): StreamBuffers {
  const e = BYTES[p.dtype];
  const hqG = hkvG * (p.hq / p.hkv);
  const rows = hqG * qc;
  return {
    q: size(rows * p.d * e),
    acc: size(rows * p.dv * 4),
    lse: size(rows * 4),
    k: size(hkvG * kc * p.d * e),
    v: size(hkvG * kc * p.dv * e),
    chunkO: size(rows * p.dv * e),
    chunkLse: size(rows * 4),
    groupO: size(rows * p.dv * e),
    staging: p.outputOnGpu ? 0 : size(rows * p.dv * e) + size(rows * 4),
    launch: LAUNCH_BUFFERS * size(256),
    output: p.outputOnGpu
      ? size(p.batch * p.hq * p.nq * p.dv * e) + size(p.batch * p.hq * p.nq * 4)
      : 0,
  };
}

/** The sum over roles, with two K and two V chunk buffers. */
export function totalOf(b: StreamBuffers): number {
  return (
    b.q +
    b.acc +
    b.lse +
    2 * (b.k + b.v) +
    b.chunkO +
    b.chunkLse +
    b.groupO +
    b.staging +
    b.launch +
    b.output
  );
}

function checkProblem(p: StreamProblem): void {
  if (p === null || typeof p !== 'object')
    throw new ValueError(`problem: expected an object, got ${describe(p)}`, 'problem');
  for (const k of ['batch', 'hq', 'hkv', 'd', 'dv'] as const) checkInt(k, p[k], 1);
  for (const k of ['nq', 'nk'] as const) checkInt(k, p[k], 0);
  for (const k of ['left', 'right'] as const) checkInt(k, p[k], -1);
  if (p.hq % p.hkv !== 0)
    throw new ValueError(`hq: expected a multiple of hkv (${p.hkv}), got ${p.hq}`, 'hq');
  if (!(p.dtype in BYTES))
    throw new ValueError(`dtype: expected f32, f16 or bf16, got ${describe(p.dtype)}`, 'dtype');
}

const roundDown = (x: number, m: number) => Math.floor(x / m) * m;
const roundUp = (x: number, m: number) => Math.ceil(x / m) * m;

/**
 * The largest work group that fits `budgetBytes`: all kv heads together where they fit (else
 * the largest divisor of hkv that does), keys per chunk from `targetKeyChunk` down to one key
 * tile, then as many query rows as the rest of the budget holds (whole query tiles; every row
 * when they fit). K/V are streamed once per query chunk, so the query chunk is what the plan
 * makes large. With a bounded left window the query chunk is at most the key chunk (then
 * every chunk's sub-band is expressible: streamSchedule). A budget below one query tile and
 * one key tile of one kv head, plus the resident part, is a GpuBudgetError before any work.
 */
export function planStreaming(
  problem: StreamProblem,
  budgetBytes: number,
  limits: StreamLimits,
): StreamPlan {
  checkProblem(problem);
  if (typeof budgetBytes !== 'number' || !Number.isSafeInteger(budgetBytes) || budgetBytes <= 0)
    throw new ValueError(
      `gpuBudgetBytes: expected a positive integer (bytes), got ${describe(budgetBytes)}`,
      'gpuBudgetBytes',
    );
  const qt = checkInt('limits.queryTile', limits?.queryTile, 1);
  const kt = checkInt('limits.keyTile', limits.keyTile, 1);
  const maxBuffer = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const p = problem;
  const nq = Math.max(1, p.nq);
  const nk = Math.max(1, p.nk);
  const minQ = Math.min(nq, qt);
  const minK = Math.min(nk, kt);
  const fitsBuffers = (b: StreamBuffers) =>
    Math.max(b.q, b.acc, b.k, b.v, b.chunkO, b.groupO) <= maxBuffer;
  const kvDivisors: number[] = [];
  for (let g = p.hkv; g >= 1; g--) if (p.hkv % g === 0) kvDivisors.push(g);
  const target = roundUp(checkInt('limits.targetKeyChunk', limits.targetKeyChunk ?? 4096, 1), kt);
  for (const hkvG of kvDivisors) {
    for (let kc = Math.min(roundUp(nk, kt), target); ; kc = Math.max(kt, roundDown(kc / 2, kt))) {
      const kChunk = Math.min(kc, nk);
      const fixed = totalOf(streamBuffers(p, hkvG, 0, kChunk));
      // Bytes per query row beyond the fixed part, measured on one tile (size classes round up).
      const perTile = totalOf(streamBuffers(p, hkvG, minQ, kChunk)) - fixed;
      // A bounded left window needs query chunks no longer than key chunks (streamSchedule).
      const cap = p.left >= 0 && kChunk < nq ? (kChunk >= qt ? roundDown(kChunk, qt) : kChunk) : nq;
      const lowest = Math.min(minQ, cap);
      let qc = perTile <= 0 ? nq : Math.floor((budgetBytes - fixed) / perTile) * minQ;
      if (qc < nq) qc = roundDown(qc, qt);
      qc = Math.min(qc, cap);
      // Size classes are not linear: step down until the real total fits.
      while (qc >= lowest && qc > 0) {
        const b = streamBuffers(p, hkvG, qc, kChunk);
        if (totalOf(b) <= budgetBytes && fitsBuffers(b)) {
          return {
            hkvGroup: hkvG,
            hqGroup: hkvG * (p.hq / p.hkv),
            queryChunk: qc,
            keyChunk: kChunk,
            chunkBuffers: 2,
            buffers: b,
            totalBytes: totalOf(b),
            budgetBytes,
            groups: p.batch * (p.hkv / hkvG) * Math.ceil(nq / qc),
          };
        }
        qc = qc > qt ? roundDown(qc - 1, qt) : qc === lowest ? 0 : lowest;
      }
      if (kc <= kt) break;
    }
  }
  const least = streamBuffers(p, 1, minQ, minK);
  const required = totalOf(least);
  throw new GpuBudgetError(
    `gpuBudgetBytes: expected at least ${required} bytes (one tile pair: ${minQ} query rows and 2 x ${minK} keys of one kv head, plus the resident part${p.outputOnGpu ? `, with o and lse on the GPU (${least.output} bytes)` : ''}${fitsBuffers(least) ? '' : `; and no buffer above ${maxBuffer} bytes`}), got ${budgetBytes}`,
    required,
    budgetBytes,
  );
}

/** One key chunk of a work group: keys [k0, k1) and the sub-problem's band (see streamSchedule). */
export interface KeyChunk {
  k0: number;
  k1: number;
  /** The band of the sub-problem (queries [q0, q1) x keys [k0, k1)), -1 = unbounded. */
  left: number;
  right: number;
}

/**
 * The key chunks query rows [q0, q1) of a problem with nq queries and nk keys visit, and each
 * one's band as a sub-problem. KERNELS.md's band is bottom-right aligned: key j is allowed for
 * query i iff i + (nk - nq) - left <= j <= i + (nk - nq) + right. The sub-problem of rows
 * [q0, q1) and keys [k0, k1) has its own diagonal (k1 - k0) - (q1 - q0), which is the full
 * problem's shifted by s = q1 + (nk - nq) - k1; so its band is [left - s, right + s]. Only
 * keys some row sees are visited (chunks above the causal diagonal are never uploaded), the
 * last chunk ends at the last row's right edge (s >= -right) and chunks start at the first
 * row's left edge (s <= left when keyChunk >= q1 - q0): both bounds stay >= 0, expressible.
 */
export function streamSchedule(
  p: Pick<StreamProblem, 'nq' | 'nk' | 'left' | 'right'>,
  q0: number,
  q1: number,
  keyChunk: number,
): KeyChunk[] {
  const off = p.nk - p.nq;
  const lo = p.left < 0 ? 0 : Math.max(0, q0 + off - p.left);
  const hi = p.right < 0 ? p.nk : Math.min(p.nk, q1 - 1 + off + p.right + 1);
  const out: KeyChunk[] = [];
  for (let k0 = lo; k0 < hi; k0 += keyChunk) {
    const k1 = Math.min(hi, k0 + keyChunk);
    const s = q1 + off - k1;
    const left = p.left < 0 ? -1 : p.left - s;
    const right = p.right < 0 ? -1 : p.right + s;
    if ((p.left >= 0 && left < 0) || (p.right >= 0 && right < 0))
      throw new ValueError(
        `keyChunk: expected at least the query chunk (${q1 - q0} rows) with a bounded left window, got ${keyChunk}`,
        'keyChunk',
      );
    out.push({ k0, k1, left, right });
  }
  return out;
}
