import { type PlannerAlgorithm, planTiles, tileFootprint } from '@attnkit/io-complexity';
import { describe, ValueError } from '@attnkit/tensor';

/**
 * Tile plans of the WGSL FlashAttention-2 kernels (pure: unit-tested without a device).
 *
 * Every kernel is a pair of register-tiled GEMMs over one (row tile x column tile) block, as a
 * tiled SIMT matmul: a workgroup of TX x TY threads owns BR = 4 TY rows; each thread owns 4
 * rows x CN = 4 CU columns of the score tile S (BC = 4 TX CU columns) and 4 rows x 4 WU columns
 * of the output accumulator, so the forward's O needs no cross-thread reduction (FA2, Sec. 3.3).
 * Rows are queries in the forward and dQ kernels, keys in the dK/dV kernel.
 *
 * Workgroup memory holds a staging area (the two operand chunks of S = A B^T, KC deep; or an
 * MC-row chunk of the second GEMM's operand; or the forward's row-statistic exchange) and the
 * transposed probability tile P^T (BC x BR), which the second GEMM reads.
 *
 * The thread and register shapes were chosen by H100 measurements; the I/O model of
 * @attnkit/io-complexity prices each shape (`predictedIO`) and decides between shapes with the
 * same thread count, which the measurements do not order by speed alone.
 */

export type WebGpuFlashKernel = 'forward' | 'dq' | 'dkdv';

export interface WebGpuTileConfig {
  /** Threads along the columns; a power of two. */
  tx: number;
  /** Threads along the rows (4 rv rows each). */
  ty: number;
  /**
   * vec4 row groups per thread (1 or 2). 8 rows per thread cut the loads per multiply-add, but
   * were slower on the H100 (2026-11-22 sweep: 16-20 vs 23.6 TFLOP/s forward), so the search
   * uses 1; tile overrides may ask for 2.
   */
  rv: number;
  /** vec4 column groups per thread in the score tile. */
  cu: number;
  /** Depth of the staged chunks of S = A B^T (multiple of 4). */
  kc: number;
  /** Rows of the second GEMM's operand staged at once (divides BC). */
  mc: number;
}

export interface WebGpuFlashPlan extends WebGpuTileConfig {
  kernel: WebGpuFlashKernel;
  /** Rows per workgroup tile (4 ty rv). */
  br: number;
  /** Columns per tile (4 tx cu). */
  bc: number;
  threads: number;
  /** vec4 groups per thread of the accumulators of width D and Dv. */
  wuD: number;
  wuV: number;
  /** Staging area and P^T tile, in f32 elements. */
  stageFloats: number;
  zFloats: number;
  workgroupBytes: number;
  /** Forward row max/sum across the TX threads of a row with subgroup shuffles instead of workgroup memory. */
  subgroupReduce: boolean;
  /**
   * Slow-memory traffic the I/O model predicts for this tile, in elements per N^2 as N grows
   * (@attnkit/io-complexity planTiles without seqLen): FA2's forward closed form for the
   * forward and dQ kernels (a query tile stays resident while K and V stream past it), FA2's
   * backward for dK/dV (a key tile stays resident while Q, dO stream). Lower is better.
   */
  predictedIO: number;
  /** The model's working set of this tile (tileFootprint, f32): registers and workgroup memory together. */
  ioFootprintBytes: number;
}

export interface WebGpuPlanInput {
  kernel: WebGpuFlashKernel;
  d: number;
  dv: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  /** Smallest subgroup size of the device; 0 when subgroups are unavailable. */
  subgroupMinSize?: number;
  /** Tile sizes to use instead of the search (benchmarks sweep these). */
  tiles?: Partial<WebGpuTileConfig>;
}

/**
 * Candidate (tx, ty, cu) in order of preference, thread counts descending: 256 threads with 4x4 register tiles (a 64x64
 * block, the shape of a naive WGSL matmul that reaches ~29 TFLOP/s on an H100), then shapes
 * that need less workgroup memory or fewer threads.
 */
export const WEBGPU_TILE_CANDIDATES: readonly (readonly [number, number, number])[] = [
  [16, 16, 1],
  [8, 16, 2],
  [16, 8, 1],
  [8, 8, 1],
  [8, 4, 1],
  [4, 4, 1],
  [4, 2, 1],
];
/**
 * Chunk depths in order of preference. 16 first: on the H100 (2026-11-22 sweep at B4 H16
 * N4096 D128, f32) KC = MC = 16 beat 32 by 30% forward and 15% backward, the smaller staging
 * area leaving room for more resident workgroups.
 */
const DEPTHS = [16, 32, 8, 4];

function positiveInt(value: unknown, name: string, min = 1): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new ValueError(`${name}: expected an integer >= ${min}, got ${describe(value)}`, name);
  }
  return value;
}

/**
 * The I/O model's view of a (BR x BC) tile: the algorithm whose loop order the kernel runs and
 * its blocks (rows are keys in dK/dV), priced by planTiles with the blocks pinned.
 */
function tileIO(
  kernel: WebGpuFlashKernel,
  d: number,
  dv: number,
  br: number,
  bc: number,
): { predictedIO: number; ioFootprintBytes: number } {
  const algo: PlannerAlgorithm = kernel === 'dkdv' ? 'fa2-backward' : 'fa2';
  const [blockQ, blockK] = kernel === 'dkdv' ? [bc, br] : [br, bc];
  const shape = { headDim: d, headDimV: dv, dtype: 'f32' as const };
  const { bytes } = tileFootprint({ ...shape, algo, blockQ, blockK });
  const { predictedIO } = planTiles({
    ...shape,
    algo,
    fastMemoryBytes: bytes,
    minBlockQ: blockQ,
    maxBlockQ: blockQ,
    minBlockK: blockK,
    maxBlockK: blockK,
  });
  return { predictedIO, ioFootprintBytes: bytes };
}

type Layout = Omit<WebGpuFlashPlan, 'predictedIO' | 'ioFootprintBytes'>;

/** The plan of a layout: its tile priced by the I/O model (the chunk depths do not change it). */
function priced(input: WebGpuPlanInput, l: Layout): WebGpuFlashPlan {
  return { ...l, ...tileIO(input.kernel, input.d, input.dv, l.br, l.bc) };
}

function layout(input: WebGpuPlanInput, cfg: WebGpuTileConfig, subgroups: number): Layout {
  const { tx, ty, rv, cu, kc, mc } = cfg;
  const br = 4 * ty * rv;
  const bc = 4 * tx * cu;
  const wuD = Math.ceil(input.d / (4 * tx));
  const wuV = Math.ceil(input.dv / (4 * tx));
  // Widths of the second GEMM's operand: V (forward), K (dQ), dO and Q (dK/dV).
  const width = input.kernel === 'forward' ? wuV : input.kernel === 'dq' ? wuD : Math.max(wuD, wuV);
  const subgroupReduce = input.kernel === 'forward' && subgroups >= tx;
  const exchange = input.kernel === 'forward' ? tx * br : 0;
  const stageFloats = Math.max(kc * (br + bc), mc * 4 * tx * width, exchange);
  const zFloats = bc * br;
  return {
    kernel: input.kernel,
    tx,
    ty,
    rv,
    cu,
    kc,
    mc,
    br,
    bc,
    threads: tx * ty,
    wuD,
    wuV,
    stageFloats,
    zFloats,
    workgroupBytes: 4 * (stageFloats + zFloats),
    subgroupReduce,
  };
}

function checkConfig(cfg: WebGpuTileConfig): void {
  const pow2 = (n: number) => (n & (n - 1)) === 0;
  if (!pow2(cfg.tx))
    throw new ValueError(`tiles.tx: expected a power of two, got ${cfg.tx}`, 'tiles.tx');
  if (cfg.rv !== 1 && cfg.rv !== 2)
    throw new ValueError(`tiles.rv: expected 1 or 2, got ${cfg.rv}`, 'tiles.rv');
  if (cfg.kc % 4 !== 0)
    throw new ValueError(`tiles.kc: expected a multiple of 4, got ${cfg.kc}`, 'tiles.kc');
  const bc = 4 * cfg.tx * cfg.cu;
  if (bc % cfg.mc !== 0) {
    throw new ValueError(
      `tiles.mc: expected a divisor of BC = ${bc} (4 tx cu), got ${cfg.mc}`,
      'tiles.mc',
    );
  }
}

/** The tile plan for one kernel and head dims on a device with these limits. */
export function planWebGpuFlash(input: WebGpuPlanInput): WebGpuFlashPlan {
  if (input === null || typeof input !== 'object') {
    throw new ValueError(`input: expected an object, got ${describe(input)}`, 'input');
  }
  if (input.kernel !== 'forward' && input.kernel !== 'dq' && input.kernel !== 'dkdv') {
    throw new ValueError(
      `kernel: expected "forward", "dq" or "dkdv", got ${describe(input.kernel)}`,
      'kernel',
    );
  }
  positiveInt(input.d, 'd');
  positiveInt(input.dv, 'dv');
  const storage = positiveInt(
    input.maxComputeWorkgroupStorageSize,
    'maxComputeWorkgroupStorageSize',
  );
  const invocations = positiveInt(
    input.maxComputeInvocationsPerWorkgroup,
    'maxComputeInvocationsPerWorkgroup',
  );
  const subgroups = input.subgroupMinSize ?? 0;
  positiveInt(subgroups, 'subgroupMinSize', 0);
  const fits = (p: Layout) => p.workgroupBytes <= storage && p.threads <= invocations;

  const t = input.tiles;
  if (t !== undefined && t.tx !== undefined && t.ty !== undefined) {
    const cfg: WebGpuTileConfig = {
      tx: positiveInt(t.tx, 'tiles.tx'),
      ty: positiveInt(t.ty, 'tiles.ty'),
      rv: positiveInt(t.rv ?? 1, 'tiles.rv'),
      cu: positiveInt(t.cu ?? 1, 'tiles.cu'),
      kc: positiveInt(t.kc ?? 16, 'tiles.kc'),
      mc: positiveInt(t.mc ?? 16, 'tiles.mc'),
    };
    checkConfig(cfg);
    const plan = layout(input, cfg, subgroups);
    if (!fits(plan)) {
      throw new ValueError(
        `tiles: ${describe(cfg)} needs ${plan.workgroupBytes} bytes of workgroup memory and ${plan.threads} threads; the device allows ${storage} and ${invocations}`,
        'tiles',
      );
    }
    return priced(input, plan);
  }
  const key = `${input.kernel},${input.d},${input.dv},${storage},${invocations},${subgroups}`;
  const cached = searched.get(key);
  if (cached !== undefined) return { ...cached };
  const found = search(input, storage, invocations, subgroups);
  if (searched.size >= SEARCH_CACHE_SIZE) searched.clear();
  searched.set(key, found);
  return { ...found };
}

/**
 * Plans already searched (the host plans every dispatch; pricing the candidates costs about
 * 10 us, a dispatch's worth of CPU time on small problems).
 */
const searched = new Map<string, WebGpuFlashPlan>();
const SEARCH_CACHE_SIZE = 256;

function search(
  input: WebGpuPlanInput,
  storage: number,
  invocations: number,
  subgroups: number,
): WebGpuFlashPlan {
  const contraction = Math.max(input.d, input.dv);
  const fits = (p: Layout) => p.workgroupBytes <= storage && p.threads <= invocations;
  // Chunks deeper than the head dim would stage only zeros.
  const depths = DEPTHS.filter((k) => k <= Math.max(4, Math.ceil(contraction / 4) * 4));
  const firstFit = (tx: number, ty: number, cu: number): WebGpuFlashPlan | undefined => {
    const bc = 4 * tx * cu;
    for (const kc of depths) {
      for (const mc of DEPTHS.filter((m) => m <= bc && bc % m === 0)) {
        const plan = layout(input, { tx, ty, rv: 1, cu, kc, mc }, subgroups);
        if (fits(plan)) return priced(input, plan);
      }
    }
    return undefined;
  };
  // The most threads that fit win (measured); among shapes with that many threads, the least
  // predicted I/O, ties in the measured order.
  let best: WebGpuFlashPlan | undefined;
  for (const [tx, ty, cu] of WEBGPU_TILE_CANDIDATES) {
    if (best !== undefined && tx * ty < best.threads) break;
    const plan = firstFit(tx, ty, cu);
    if (plan !== undefined && (best === undefined || plan.predictedIO < best.predictedIO)) {
      best = plan;
    }
  }
  if (best !== undefined) return best;
  throw new ValueError(
    `d/dv: head dims ${input.d}/${input.dv} need more than the device's ${storage} bytes of workgroup memory or ${invocations} threads`,
    'd',
  );
}
