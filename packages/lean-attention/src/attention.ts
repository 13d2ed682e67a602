import {
  defineTiledFamily,
  nativeAvailable,
  type TiledBackend,
  type TiledOptions,
} from '@attnkit/skeleton';
import { DTypeError, describe, type Tensor, ValueError } from '@attnkit/tensor';

/** The three partitions of the LeanAttention paper's comparison (KERNELS.md "LeanAttention"). */
export type LeanPartition = 'fa2' | 'splitK' | 'streamK';

/**
 * Options of leanAttention: KERNELS.md "Common" (scale, causal, window, layout, cuSeqlensQ/K,
 * score and mask mods, backend, checkFinite, ...) plus the decode partition. The
 * skeleton's own partition options (numSplits, streamKWorkers) and `algorithm` are not taken:
 * `partition`, `splits` and `workers` say it once.
 */
export interface LeanAttentionOptions
  extends Omit<TiledOptions, 'numSplits' | 'streamKWorkers' | 'algorithm'> {
  /**
   * How the key tiles are spread over workers (default 'streamK'):
   * - 'fa2': one worker per (batch, head, query tile), no split (the skeleton's band schedule);
   * - 'splitK': each unit's key tiles cut into `splits` ranges and merged (FlashDecoding);
   * - 'streamK': all units' key tiles cut into `workers` equal ranges, partials merged by a
   *   fix-up (LeanAttention).
   */
  partition?: LeanPartition;
  /** streamK only: the number of workers; default DEFAULT_WORKERS' rule for the backend. */
  workers?: number;
  /** splitK only: key ranges per unit; default defaultLeanSplits' rule (16 on webgpu, else 4). */
  splits?: number;
}

/** splitK's default number of key ranges per (batch, head, query tile) (FlashDecoding's few). */
export const DEFAULT_SPLITS = 4;
/**
 * splitK's default on WebGPU for one sequence: with 4, B 1 and Hkv 8 fill 32 workgroups of a GPU
 * with 132 SMs. On the H200 (bench-lean, session 5, benchmarks/gpu/results/lean-h200/run-sweep;
 * timestamps then ticked at 65.5 us) 16 beat 4 at every B 1 shape measured (Hq 32, 256K Hkv 8:
 * 0.524 against 1.507 ms; 32K Hkv 32: 0.197 against 0.262; 32K Hkv 8: tied), and every device
 * run since used 16. Larger batches fill the device themselves: defaultLeanSplits keeps batch x
 * splits <= WEBGPU_SPLIT_BUDGET, so the partials (rows x splits x Dv floats) and the dispatch
 * (batch x splits workgroups along z) stay bounded by the batch-1 case.
 */
export const WEBGPU_DEFAULT_SPLITS = 16;
/** WebGPU split-K default: batch x splits at most this (16 splits up to B 4, 1 from B 64). */
export const WEBGPU_SPLIT_BUDGET = 64;
/** Compute units assumed for a WebGPU adapter (WebGPU does not report them): an H100/H200's SMs. */
export const WEBGPU_ASSUMED_COMPUTE_UNITS = 132;
/** Workers per CPU thread for native stream-K: a few per thread hide a tail's imbalance. */
export const WORKERS_PER_UNIT = 2;
/**
 * Stream-K workgroups per assumed compute unit on WebGPU: one, for the decode kernel's
 * 512-thread layout (skeleton DECODE_WIDE_THREADS, where the device holds it): on the H200
 * (bench-lean, session 15, benchmarks/gpu/results/s15-h200/run6) 132 workers ran B 1, Hq 32,
 * Hkv 8 at 256K in 0.424 ms against 0.540 at 264 and Hkv 32 at 32K in 0.188 against 0.212 (a
 * second wave of 512-thread workgroups waits for the first). With the 256-thread layout the
 * result is mixed: 132 beat 264 at Hkv 8 (0.484 against 0.600 ms at 256K, 0.171 against 0.271
 * at 32K) and lost at Hkv 32, 32K (0.262 against 0.211).
 */
const WEBGPU_WORKERS_PER_UNIT = 1;
/** CPU threads assumed until they are known (loadCpuThreads), e.g. in a bundle without Node. */
const FALLBACK_CPU_THREADS = 8;

let cpuThreads: number | undefined;

/**
 * The native engine's thread count, by its own rule (ATTNKIT_NUM_THREADS, else the CPUs
 * available), read once; leanAttention awaits it before planning. Outside Node it stays
 * unknown and FALLBACK_CPU_THREADS (8) is assumed.
 */
async function loadCpuThreads(): Promise<void> {
  if (cpuThreads !== undefined) return;
  const g = globalThis as { process?: { env?: Record<string, string | undefined> } };
  const fromEnv = Number(g.process?.env?.ATTNKIT_NUM_THREADS);
  if (Number.isSafeInteger(fromEnv) && fromEnv > 0) {
    cpuThreads = fromEnv;
    return;
  }
  try {
    // A computed specifier: bundlers do not follow it, so a browser bundle stays Node-free.
    const osName = 'node:os';
    const os = (await import(/* @vite-ignore */ /* webpackIgnore: true */ osName)) as {
      availableParallelism?: () => number;
      cpus: () => unknown[];
    };
    cpuThreads = os.availableParallelism?.() ?? os.cpus().length;
  } catch {
    cpuThreads = FALLBACK_CPU_THREADS;
  }
}

/** The backend a call will run on: `backend`, else the registry's default for q's device. */
function backendOf(options: LeanAttentionOptions, q: Tensor): TiledBackend {
  if (options.backend !== undefined) return options.backend;
  if (q.device === 'webgpu') return 'webgpu';
  return nativeAvailable() === true ? 'native' : 'ts';
}

/** Sequences: B in BHND, the cuSeqlensQ entries less one in THD. */
function batchOf(options: LeanAttentionOptions, q: Tensor): number {
  const cu = options.cuSeqlensQ;
  return options.layout === 'THD' ? (cu?.length ?? 2) - 1 : (q.shape[0] ?? 1);
}

/** (batch, query head) pairs: the units when Nq fits one query tile (decode). */
function headUnits(options: LeanAttentionOptions, q: Tensor): number {
  return Math.max(1, batchOf(options, q) * (q.shape[1] ?? 1));
}

/**
 * The default stream-K worker count for a backend (documented in the README):
 * - ts: one worker per (batch, query head) unit (the TS loop is sequential: the plan still
 *   balances the key tiles across units, which exercises the same fix-up);
 * - native: WORKERS_PER_UNIT (2) x the engine's threads;
 * - webgpu: WEBGPU_ASSUMED_COMPUTE_UNITS (132) workgroups, one 512-thread decode workgroup per
 *   SM (measured best on the H200).
 * More workers than key tiles is fine: the planner leaves the extra ones empty.
 */
export function defaultLeanWorkers(backend: TiledBackend, units: number): number {
  if (backend === 'ts') return Math.max(1, units);
  if (backend === 'native') return WORKERS_PER_UNIT * (cpuThreads ?? FALLBACK_CPU_THREADS);
  return WEBGPU_WORKERS_PER_UNIT * WEBGPU_ASSUMED_COMPUTE_UNITS;
}

/**
 * The default split-K ranges per unit: on webgpu WEBGPU_DEFAULT_SPLITS (16) for up to 4
 * sequences, then fewer so that batch x splits <= WEBGPU_SPLIT_BUDGET (64), at least 1; on ts
 * and native DEFAULT_SPLITS (4; the native decode path splits keys across its threads anyway).
 */
export function defaultLeanSplits(backend: TiledBackend, batch = 1): number {
  if (backend !== 'ts' && backend !== 'native' && backend !== 'webgpu')
    throw new ValueError(
      `backend: expected "ts", "native" or "webgpu", got ${describe(backend)}`,
      'backend',
    );
  if (!Number.isSafeInteger(batch) || batch < 0)
    throw new ValueError(
      `batch: expected a non-negative integer (sequences), got ${describe(batch)}`,
      'batch',
    );
  if (backend !== 'webgpu') return DEFAULT_SPLITS;
  const perBatch = Math.floor(WEBGPU_SPLIT_BUDGET / Math.max(1, batch));
  return Math.max(1, Math.min(WEBGPU_DEFAULT_SPLITS, perBatch));
}

function positiveInt(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1)
    throw new ValueError(`${name}: expected a positive integer, got ${describe(value)}`, name);
  return value;
}

/**
 * The lean options as the skeleton's: partition 'fa2' -> the band schedule (neither option),
 * 'splitK' -> numSplits, 'streamK' -> streamKWorkers (with the backend's default workers).
 * Typed errors naming partition / workers / splits. Exported for tests.
 * @internal
 */
export function leanTiledOptions(options: LeanAttentionOptions, q: Tensor): TiledOptions {
  const { partition = 'streamK', workers, splits, ...rest } = options;
  if (partition !== 'fa2' && partition !== 'splitK' && partition !== 'streamK')
    throw new ValueError(
      `partition: expected "fa2", "splitK" or "streamK", got ${describe(partition)}`,
      'partition',
    );
  if (workers !== undefined && partition !== 'streamK')
    throw new ValueError(
      `workers: expected only with partition "streamK" (the stream-K worker count), got workers ${describe(workers)} with partition "${partition}"`,
      'workers',
    );
  if (splits !== undefined && partition !== 'splitK')
    throw new ValueError(
      `splits: expected only with partition "splitK" (key ranges per unit), got splits ${describe(splits)} with partition "${partition}"`,
      'splits',
    );
  const o: TiledOptions = { ...rest };
  if (partition === 'splitK')
    o.numSplits =
      splits === undefined
        ? defaultLeanSplits(backendOf(options, q), batchOf(options, q))
        : positiveInt(splits, 'splits');
  if (partition === 'streamK')
    o.streamKWorkers =
      workers === undefined
        ? defaultLeanWorkers(backendOf(options, q), headUnits(options, q))
        : positiveInt(workers, 'workers');
  return o;
}

/**
 * The 'lean' family on the tiled skeleton: softmax normalisation (o and the natural-log LSE),
 * the partition mapped to the skeleton's schedule. Registered on ts, native and webgpu.
 */
const family = defineTiledFamily<LeanAttentionOptions>({
  family: 'lean',
  normalize: () => ({ kind: 'softmax' as const }),
  extraOptions: ['partition', 'workers', 'splits'],
  omitOptions: ['numSplits', 'streamKWorkers', 'algorithm'],
  forwardOutputs: ['o', 'lse'],
  toTiled: (o, q) => leanTiledOptions(o, q),
});

export interface LeanAttentionResult {
  /** Layout of q, dtype of q. */
  o: Tensor;
  /** Natural-log LSE, f32 ([B, Hq, Nq] or [Hq, totalQ]); -Infinity for a row without keys. */
  lse: Tensor;
}

/**
 * Decode attention over contiguous K/V (KERNELS.md "Common" and "LeanAttention"): softmax
 * attention of a few query tokens per sequence (Nq 1..16 is the intended regime; any Nq works,
 * a long one just tiles its queries as FlashAttention does) against Nk keys, with the key tiles
 * partitioned as `partition` says. Typed errors name the argument (ShapeError / DTypeError /
 * ValueError / UnsupportedError from @attnkit/tensor).
 */
export async function leanAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: LeanAttentionOptions = {},
): Promise<LeanAttentionResult> {
  if (q && (q as Tensor).dtype === 'f64')
    throw new DTypeError(
      'q: expected f32, f16 or bf16 (the kernels compute in f32), got f64; for float64 results use softmaxAttentionReference from @attnkit/attention',
      'q',
    );
  await loadCpuThreads();
  const r = await family.forward(q, k, v, options);
  return { o: r.o, lse: r.lse! };
}
