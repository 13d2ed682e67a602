import { planTiles, tileFootprint } from '@attnkit/io-complexity';
import {
  planFlashTiles,
  planWebGpuFlash,
  type WebGpuFlashKernel,
  type WebGpuFlashPlan,
  type WebGpuTileConfig,
} from '@attnkit/skeleton';
import { describe, ValueError } from '@attnkit/tensor';
import {
  type CpuDeviceClass,
  type DeviceClass,
  resolveDevice,
  type WebGpuDeviceClass,
} from './devices.js';
import { resolveBand, tileCounts } from './tile-counts.js';

/**
 * FastAttention's two-level tiling (KERNELS.md "FastAttention"): an outer tile (BR query rows x
 * BC keys) whose working set lives in the device-level fast memory (WebGPU workgroup storage,
 * a CPU core's L2), and an inner tile (the block of the score tile one invocation / one SIMD
 * micro-kernel holds in registers). The tiles run on the skeleton's FA2 kernels unchanged: on
 * WebGPU they are its WebGpuTileConfig (BR = 4 ty rv, BC = 4 tx cu, per-thread 4 rv x 4 cu
 * score block, chunk depths kc / mc), on the CPU its TS kernel's blockQ / blockK.
 *
 * The choice is the I/O model's (@attnkit/io-complexity): among the tiles that fit the device,
 * the least predicted slow-memory traffic of the forward, counted with the tiling-mask
 * (./tile-counts.ts: only the key tiles the band and block mask leave are loaded). The
 * skeleton's own planner prefers the most threads first; this one prices every shape that fits
 * the device, so its predicted traffic is never above the skeleton's default plan's where that
 * plan fits the same limits (tests assert it per device class).
 */

export interface FastProblem {
  /** Query rows (Nq). */
  seqQ: number;
  /** Keys (Nk). */
  seqK: number;
  /** Head dim D. */
  headDim: number;
  /** Value head dim Dv (default D). */
  headDimV?: number;
  /** Storage dtype of Q, K, V (default f32); the kernels stage and accumulate in f32. */
  dtype?: 'f32' | 'f16' | 'bf16';
  causal?: boolean;
  window?: readonly [number, number];
}

export interface OuterTile {
  /** Query rows per tile (BR). */
  blockQ: number;
  /** Keys per tile (BC). */
  blockK: number;
  /** Bytes of fast memory the tile uses (WebGPU: the kernel's workgroup storage; CPU: the I/O model's f32 working set). */
  fastBytes: number;
  /** The device's fast memory (maxComputeWorkgroupStorageSize or L2). */
  fastMemoryBytes: number;
}

export interface InnerTile {
  /** Score-tile rows one invocation / micro-kernel holds. */
  rows: number;
  /** Score-tile columns one invocation / micro-kernel holds. */
  cols: number;
  /** WebGPU: estimated f32 registers per invocation; CPU: SIMD registers the block uses. */
  registers: number;
}

export interface TwoLevelPlan {
  device: string;
  kind: 'webgpu' | 'cpu';
  /** The forward's outer tile. */
  outer: OuterTile;
  /** The forward's inner tile. */
  inner: InnerTile;
  /**
   * Predicted slow-memory traffic of the forward for one (batch, head), elements: Q read once,
   * K and V rows of every visited tile, O and LSE written (the I/O model's FA2 count with the
   * tiling-mask; equal to io-complexity's closed form when dense and Nq = Nk).
   */
  predictedIO: number;
  /** The skeleton's default tiles for the same device and their traffic, or undefined where they do not fit the class. */
  defaultPlan: { blockQ: number; blockK: number; predictedIO: number } | undefined;
  /** WebGPU: the skeleton tile configs per kernel (pass as the `tiles` option) and their layouts. */
  webgpu?: {
    tiles: Record<WebGpuFlashKernel, WebGpuTileConfig>;
    plans: Record<WebGpuFlashKernel, WebGpuFlashPlan>;
  };
}

interface Resolved {
  nq: number;
  nk: number;
  d: number;
  dv: number;
  causal: boolean;
  window: readonly [number, number];
}

function int(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new ValueError(`${name}: expected an integer >= ${min}, got ${describe(value)}`, name);
  }
  return value;
}

function resolveProblem(problem: FastProblem): Resolved {
  if (problem === null || typeof problem !== 'object') {
    throw new ValueError(
      `problem: expected { seqQ, seqK, headDim, headDimV?, dtype?, causal?, window? }, got ${describe(problem)}`,
      'problem',
    );
  }
  const nq = int(problem.seqQ, 'seqQ', 1);
  const nk = int(problem.seqK, 'seqK', 1);
  const d = int(problem.headDim, 'headDim', 1);
  const dv = problem.headDimV === undefined ? d : int(problem.headDimV, 'headDimV', 1);
  const dtype = problem.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16') {
    throw new ValueError(`dtype: expected f32, f16 or bf16, got ${describe(dtype)}`, 'dtype');
  }
  resolveBand(problem.causal, problem.window);
  return {
    nq,
    nk,
    d,
    dv,
    causal: problem.causal ?? false,
    window: problem.window ?? [-1, -1],
  };
}

/** The forward's traffic with the tiling-mask for BR x BC tiles (see TwoLevelPlan.predictedIO). */
function forwardIO(r: Resolved, br: number, bc: number, backend: 'ts' | 'webgpu'): number {
  const c = tileCounts(
    { seqQ: r.nq, seqK: r.nk, causal: r.causal, window: r.window },
    { blockQ: br, blockK: bc },
    { backend },
  );
  return r.nq * r.d + c.keyRowsLoaded * (r.d + r.dv) + r.nq * (r.dv + 1);
}

/** FA2 backward's closed form for the dK/dV kernel (rows are keys), at N = max(Nq, Nk). */
function backwardIO(r: Resolved, keyRows: number, queryCols: number): number {
  const n = Math.max(r.nq, r.nk);
  const blockQ = Math.min(queryCols, n);
  const blockK = Math.min(keyRows, n);
  const shape = {
    headDim: r.d,
    headDimV: r.dv,
    dtype: 'f32' as const,
    algo: 'fa2-backward' as const,
  };
  const { bytes } = tileFootprint({ ...shape, blockQ, blockK });
  return planTiles({
    ...shape,
    fastMemoryBytes: bytes,
    seqLen: n,
    minBlockQ: blockQ,
    maxBlockQ: blockQ,
    minBlockK: blockK,
    maxBlockK: blockK,
  }).predictedIO;
}

// ---------------------------------------------------------------------------------------------
// WebGPU

/** Chunk depths the skeleton's kernels take (webgpu/plan.ts DEPTHS), its order of preference. */
const DEPTHS = [16, 32, 8, 4];
/**
 * Rows or columns of an outer tile at most: past 128 a workgroup's serial work grows while the
 * I/O it saves shrinks (1/BR), and coarser tiles skip less of a causal or window band.
 */
const MAX_EXTENT = 128;
/**
 * The streamed tile's extent at least (forward and dQ: the key tile BC; dK/dV: the query tile
 * BR), where some tile has it: every streamed tile costs a barrier-separated staging step and a
 * rescale of the accumulators that the I/O model does not price. On the H200 under the default
 * limits (issue 15, session 12) the D = 64 forward's I/O-optimal 128 x 16 ran 1.35-2.1x slower
 * than 64 x 32 at N 4096-16384 (benchmarks/gpu/results/s12-h200/run1-s12-log.txt); on llvmpipe
 * the two were within 5%.
 */
const MIN_STREAMED = 32;

/**
 * f32 registers one invocation of the skeleton's kernels holds: its 4 rv x 4 cu score block,
 * its accumulators (forward: 4 rv x 4 wuV of O; dQ: 4 rv x 4 wuD; dK/dV: 4 rv x 4 (wuD + wuV)),
 * row statistics (2 x 4 rv) and one operand vec4 per row and column group of the staged GEMM.
 */
export function invocationRegisters(p: WebGpuFlashPlan): number {
  const rows = 4 * p.rv;
  const acc =
    p.kernel === 'forward' ? 4 * p.wuV : p.kernel === 'dq' ? 4 * p.wuD : 4 * (p.wuD + p.wuV);
  const score = p.kernel === 'dkdv' ? 2 * 4 * p.cu : 4 * p.cu;
  return rows * score + rows * acc + 2 * rows + rows + 4 * p.cu;
}

function pow2Upto(n: number): number[] {
  const out: number[] = [];
  for (let x = 1; x <= n; x *= 2) out.push(x);
  return out;
}

function webGpuLimits(dev: WebGpuDeviceClass) {
  return {
    maxComputeWorkgroupStorageSize: dev.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: dev.maxComputeInvocationsPerWorkgroup,
    subgroupMinSize: dev.subgroups ? (dev.subgroupMinSize ?? 0) : 0,
  };
}

/** The traffic this kernel's tile is priced by (forward and dQ: query tiles resident; dK/dV: key tiles). */
function kernelIO(r: Resolved, p: WebGpuFlashPlan): number {
  return p.kernel === 'dkdv' ? backwardIO(r, p.br, p.bc) : forwardIO(r, p.br, p.bc, 'webgpu');
}

function planWebGpuKernel(
  dev: WebGpuDeviceClass,
  r: Resolved,
  kernel: WebGpuFlashKernel,
): { plan: WebGpuFlashPlan; io: number } {
  const limits = webGpuLimits(dev);
  const contraction = Math.max(r.d, r.dv);
  const depths = DEPTHS.filter((k) => k <= Math.max(4, Math.ceil(contraction / 4) * 4));
  const inv = dev.maxComputeInvocationsPerWorkgroup;
  let best: { plan: WebGpuFlashPlan; io: number } | undefined;
  const streamed = (p: WebGpuFlashPlan) => (kernel === 'dkdv' ? p.br : p.bc) >= MIN_STREAMED;
  const better = (a: { plan: WebGpuFlashPlan; io: number }) => {
    if (best === undefined) return true;
    if (streamed(a.plan) !== streamed(best.plan)) return streamed(a.plan);
    if (a.io !== best.io) return a.io < best.io;
    if (a.plan.threads !== best.plan.threads) return a.plan.threads > best.plan.threads;
    if (a.plan.br * a.plan.bc !== best.plan.br * best.plan.bc)
      return a.plan.br * a.plan.bc > best.plan.br * best.plan.bc;
    return a.plan.workgroupBytes < best.plan.workgroupBytes;
  };
  for (const tx of pow2Upto(inv)) {
    for (const ty of pow2Upto(Math.floor(inv / tx))) {
      for (const rv of [1, 2]) {
        for (const cu of [1, 2]) {
          const br = 4 * ty * rv;
          const bc = 4 * tx * cu;
          if (br > MAX_EXTENT || bc > MAX_EXTENT) continue;
          // The first chunk depths that fit (deeper chunks change neither the tile nor its I/O).
          let found: WebGpuFlashPlan | undefined;
          for (const kc of depths) {
            for (const mc of DEPTHS.filter((m) => m <= bc && bc % m === 0)) {
              try {
                found = planWebGpuFlash({
                  kernel,
                  d: r.d,
                  dv: r.dv,
                  ...limits,
                  tiles: { tx, ty, rv, cu, kc, mc },
                });
              } catch {
                found = undefined;
              }
              if (found) break;
            }
            if (found) break;
          }
          if (!found || invocationRegisters(found) > dev.registerFloats) continue;
          const cand = { plan: found, io: kernelIO(r, found) };
          if (better(cand)) best = cand;
        }
      }
    }
  }
  if (best === undefined) {
    throw new ValueError(
      `device: head dims D = ${r.d}, Dv = ${r.dv} need more than ${dev.name}'s ${dev.maxComputeWorkgroupStorageSize} bytes of workgroup storage, ${inv} invocations or ${dev.registerFloats} registers per invocation for any ${kernel} tile`,
      'device',
    );
  }
  return best;
}

const configOf = (p: WebGpuFlashPlan): WebGpuTileConfig => ({
  tx: p.tx,
  ty: p.ty,
  rv: p.rv,
  cu: p.cu,
  kc: p.kc,
  mc: p.mc,
});

function planWebGpu(dev: WebGpuDeviceClass, r: Resolved): TwoLevelPlan {
  const kernels: WebGpuFlashKernel[] = ['forward', 'dq', 'dkdv'];
  const plans = {} as Record<WebGpuFlashKernel, WebGpuFlashPlan>;
  const tiles = {} as Record<WebGpuFlashKernel, WebGpuTileConfig>;
  let forwardIo = 0;
  for (const k of kernels) {
    const { plan, io } = planWebGpuKernel(dev, r, k);
    plans[k] = plan;
    tiles[k] = configOf(plan);
    if (k === 'forward') forwardIo = io;
  }
  const f = plans.forward;
  let defaultPlan: TwoLevelPlan['defaultPlan'];
  try {
    const def = planWebGpuFlash({ kernel: 'forward', d: r.d, dv: r.dv, ...webGpuLimits(dev) });
    if (invocationRegisters(def) <= dev.registerFloats) {
      defaultPlan = { blockQ: def.br, blockK: def.bc, predictedIO: kernelIO(r, def) };
    }
  } catch {
    defaultPlan = undefined;
  }
  return {
    device: dev.name,
    kind: 'webgpu',
    outer: {
      blockQ: f.br,
      blockK: f.bc,
      fastBytes: f.workgroupBytes,
      fastMemoryBytes: dev.maxComputeWorkgroupStorageSize,
    },
    inner: { rows: 4 * f.rv, cols: 4 * f.cu, registers: invocationRegisters(f) },
    predictedIO: forwardIo,
    defaultPlan,
    webgpu: { tiles, plans },
  };
}

// ---------------------------------------------------------------------------------------------
// CPU

/** Powers of two below n up to cap, and n itself when n <= cap (skeleton plan.ts powerTiles). */
function powerTiles(n: number, cap: number): number[] {
  const out: number[] = [];
  for (let t = 1; t <= cap && t < n; t *= 2) out.push(t);
  if (n <= cap) out.push(Math.max(1, n));
  return out;
}

/** Largest outer tile side on the CPU (a 1 MiB L2 holds 512 x 16 tiles at D = 128). */
const CPU_MAX_TILE = 512;
/** The key block's floor when one fits (skeleton plan.ts MIN_KEY_TILE: per-tile rescale cost). */
const CPU_MIN_KEY_TILE = 16;

function forwardBytes(r: Resolved, bq: number, bk: number): number {
  return tileFootprint({
    algo: 'fa2',
    headDim: r.d,
    headDimV: r.dv,
    dtype: 'f32',
    blockQ: bq,
    blockK: bk,
  }).bytes;
}

/**
 * The SIMD micro-kernel's register block: rows x (vectors SIMD registers) accumulators, one
 * broadcast A value and `vectors` B registers must fit the register file. Each k step loads
 * rows broadcasts and `vectors` B registers for rows x vectors FMAs, so the block maximises
 * rows * vectors / (rows + vectors) (ties: larger block, then more rows). AVX2 (16 registers):
 * 4 x 3 vectors (4 x 24 floats); AVX-512 and NEON (32): 5 x 5.
 */
export function simdRegisterBlock(vectorRegisters: number): {
  rows: number;
  vectors: number;
  registers: number;
} {
  let best = { rows: 1, vectors: 1, registers: 3 };
  const score = (r: number, c: number) => (r * c) / (r + c);
  for (let c = 1; c < vectorRegisters; c++) {
    for (let rows = 1; rows * c + c + 1 <= vectorRegisters; rows++) {
      const s = score(rows, c);
      const b = score(best.rows, best.vectors);
      const area = rows * c;
      const bestArea = best.rows * best.vectors;
      if (
        s > b + 1e-12 ||
        (Math.abs(s - b) <= 1e-12 && (area > bestArea || (area === bestArea && rows > best.rows)))
      ) {
        best = { rows, vectors: c, registers: rows * c + c + 1 };
      }
    }
  }
  return best;
}

function planCpu(dev: CpuDeviceClass, r: Resolved): TwoLevelPlan {
  const qs = powerTiles(r.nq, CPU_MAX_TILE);
  const ks = powerTiles(r.nk, CPU_MAX_TILE);
  const minK = Math.min(CPU_MIN_KEY_TILE, r.nk);
  let best: { bq: number; bk: number; io: number; bytes: number } | undefined;
  const search = (floor: number) => {
    for (const bq of qs) {
      for (const bk of ks) {
        if (bk < floor) continue;
        const bytes = forwardBytes(r, bq, bk);
        if (bytes > dev.l2Bytes) continue;
        const io = forwardIO(r, bq, bk, 'ts');
        if (
          best === undefined ||
          io < best.io ||
          (io === best.io &&
            (bq * bk > best.bq * best.bk || (bq * bk === best.bq * best.bk && bq > best.bq)))
        ) {
          best = { bq, bk, io, bytes };
        }
      }
    }
  };
  search(minK);
  if (best === undefined) search(1);
  if (best === undefined) {
    throw new ValueError(
      `device: D = ${r.d}, Dv = ${r.dv} need ${forwardBytes(r, 1, 1)} bytes for a 1 x 1 tile, more than ${dev.name}'s L2 of ${dev.l2Bytes}`,
      'device',
    );
  }
  const chosen = best as { bq: number; bk: number; io: number; bytes: number };
  const def = planFlashTiles({ nq: r.nq, nk: r.nk, d: r.d, dv: r.dv });
  const defaultPlan =
    forwardBytes(r, def.blockQ, def.blockK) <= dev.l2Bytes
      ? { ...def, predictedIO: forwardIO(r, def.blockQ, def.blockK, 'ts') }
      : undefined;
  const reg = simdRegisterBlock(dev.vectorRegisters);
  return {
    device: dev.name,
    kind: 'cpu',
    outer: {
      blockQ: chosen.bq,
      blockK: chosen.bk,
      fastBytes: chosen.bytes,
      fastMemoryBytes: dev.l2Bytes,
    },
    inner: {
      rows: Math.min(reg.rows, chosen.bq),
      cols: Math.min(reg.vectors * dev.simdWidth, chosen.bk),
      registers: reg.registers,
    },
    predictedIO: chosen.io,
    defaultPlan,
  };
}

const cache = new Map<string, TwoLevelPlan>();
const CACHE_SIZE = 128;

/**
 * The two-level plan for `problem` on `device` (a DEVICE_CLASSES name or a class object):
 * the outer tile in the device's fast memory and the inner register block, chosen by least
 * predicted traffic (see the module comment). Pure and deterministic; typed errors name the
 * argument. WebGPU plans carry the skeleton tile config of every kernel (forward, dQ, dK/dV).
 */
export function planTwoLevel(device: DeviceClass | string, problem: FastProblem): TwoLevelPlan {
  const dev = resolveDevice(device);
  const r = resolveProblem(problem);
  const key = JSON.stringify([dev, r]);
  const hit = cache.get(key);
  if (hit) return structuredClone(hit);
  const plan = dev.kind === 'webgpu' ? planWebGpu(dev, r) : planCpu(dev, r);
  if (cache.size >= CACHE_SIZE) cache.clear();
  cache.set(key, plan);
  return structuredClone(plan);
}
