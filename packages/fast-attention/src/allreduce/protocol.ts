import type { AllReducePlan } from './plan.js';

/**
 * What the caller and the device workers share: the job each worker gets, the layout of the
 * control block (an Int32Array over a SharedArrayBuffer that carries the per-tile ready and
 * reduced counts and the epoch every Atomics wait / notify is on), the timings, the messages.
 */

/** The attention problem every device computes a head range of. */
export interface AllReduceDims {
  batch: number;
  hq: number;
  hkv: number;
  seqQ: number;
  seqK: number;
  d: number;
  dv: number;
  /** Columns of W_o (the model width the projection maps back to). */
  dModel: number;
  scale: number;
  causal: boolean;
}

/** For tests of the failure paths: what a device does at a tile instead of computing it. */
export interface AllReduceFault {
  device: number;
  tile: number;
  /** exit: the worker thread exits (code 1); throw: an error in the tile; hang: it never finishes the tile. */
  kind: 'exit' | 'throw' | 'hang';
}

export interface AllReduceJob {
  plan: AllReducePlan;
  dims: AllReduceDims;
  /** f32: q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv], wo [Hq Dv, dModel]. */
  q: SharedArrayBuffer;
  k: SharedArrayBuffer;
  v: SharedArrayBuffer;
  wo: SharedArrayBuffer;
  /** f32 [P, slots, tileRows, dModel]: device p's partial of tile t in slot t mod slots. */
  partials: SharedArrayBuffer;
  /** f32 [B, Nq, dModel]: the reduced output. */
  output: SharedArrayBuffer;
  /** Int32 control block (see controlLength). */
  control: SharedArrayBuffer;
  /** Float64 [P, TIMING_FIELDS]. */
  timings: SharedArrayBuffer;
  /** A device that sees no progress for this long gives up (and so does the caller). */
  timeoutMs: number;
  fault?: AllReduceFault | undefined;
}

/** control[ABORT] != 0: the caller gave up (a device failed); every device stops. */
export const ABORT = 0;
/** Incremented (and notified) on every tile ready / reduced: the one address devices wait on. */
export const EPOCH = 1;
const HEADER = 2;
/** control[readySlot(t)]: devices whose partial of tile t is written (P = all). */
export const readySlot = (t: number): number => HEADER + t;
/** control[reducedSlot(T, t)]: devices that have summed their chunk of tile t (P: its slots are free). */
export const reducedSlot = (tiles: number, t: number): number => HEADER + tiles + t;
export const controlLength = (tiles: number): number => HEADER + 2 * tiles;

/** Per device, absolute times in ms (performance.timeOrigin + now()) and sums. */
export const T_START = 0; // tile loop start (after the device's setup)
export const T_COMPUTE_END = 1; // last tile's partial written
export const T_END = 2; // its chunk of the last tile reduced
export const T_COMPUTE_MS = 3; // sum of tile compute times (attention + projection)
export const T_REDUCE_MS = 4; // sum of reduce times of its chunks
export const T_SETUP_MS = 5; // gathering the device's heads
export const T_REDUCE_OVERLAPPED_MS = 6; // the part of T_REDUCE_MS spent while its own tile computed
export const TIMING_FIELDS = 7;

export type ToWorker =
  | { kind: 'init'; device: number; backend: 'native' | 'webgpu' }
  | { kind: 'run'; job: AllReduceJob }
  /** Release the device (a WebGPU device is destroyed) and exit. */
  | { kind: 'close' };

export interface WorkerErrorInfo {
  name: string;
  message: string;
  argument?: string | undefined;
  tile?: number | undefined;
}

export type FromWorker =
  | { kind: 'ready' }
  | { kind: 'done' }
  /** It saw ABORT and stopped between engine calls: safe to terminate. */
  | { kind: 'stopped' }
  | { kind: 'failed'; error: WorkerErrorInfo };
