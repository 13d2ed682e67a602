import type { RowTile } from './plan.js';
import {
  ABORT,
  type AllReduceJob,
  EPOCH,
  readySlot,
  reducedSlot,
  T_COMPUTE_END,
  T_COMPUTE_MS,
  T_END,
  T_REDUCE_MS,
  T_REDUCE_OVERLAPPED_MS,
  T_START,
  TIMING_FIELDS,
} from './protocol.js';

/**
 * One device's side of the tiling-AllReduce, whatever computes the tiles: compute every row
 * tile's partial (attention of this device's heads, then O_p W_o[p rows]) into a slot of the
 * shared partials, publish it (ready count + notify), and sum this device's column chunk of
 * each tile once all P partials of the tile are there. With overlap the chunks are reduced while
 * the next tile computes (the compute runs off this thread: the native pool or the GPU); without, after
 * this device's last tile. Every wait is on the control block's epoch with a time slice (never
 * a spin), ends when the caller sets ABORT, and gives up after `timeoutMs` without progress.
 */

/** What computes a tile's partial: rows x dModel floats into `out`. */
export interface TileDevice {
  computeTile(tile: RowTile, out: Float32Array): Promise<void>;
}

/** The caller gave up (another device failed): stop quietly. */
export class AbortedRun extends Error {
  override name = 'AbortedRun';
}

/** No progress for timeoutMs. */
export class StalledRun extends Error {
  override name = 'StalledRun';
}

const SLICE_MS = 50;

// Atomics.waitAsync (Node >= 16; typed from ES2024, beyond this package's lib).
type WaitAsync = (
  ta: Int32Array,
  index: number,
  value: number,
  timeoutMs: number,
) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;
const now = () => performance.timeOrigin + performance.now();

export async function runTileLoop(
  job: AllReduceJob,
  device: number,
  dev: TileDevice,
  hooks: { beforeTile?: (tile: RowTile) => Promise<void> | void } = {},
): Promise<void> {
  const { plan, dims } = job;
  const P = plan.devices;
  const T = plan.tiles.length;
  const S = plan.slots;
  const ctl = new Int32Array(job.control);
  const timing = new Float64Array(job.timings, device * TIMING_FIELDS * 8, TIMING_FIELDS);
  const slotFloats = plan.tileRows * dims.dModel;
  const partials = new Float32Array(job.partials);
  const output = new Float32Array(job.output);
  const slotOf = (p: number, t: number) => (p * S + (t % S)) * slotFloats;
  const { start: c0, end: c1 } = plan.chunks[device]!;
  let nextReduce = 0;

  let seen = Atomics.load(ctl, EPOCH);
  let lastProgress = now();
  const bump = (slot: number, by: number) => {
    Atomics.add(ctl, slot, by);
    Atomics.add(ctl, EPOCH, 1);
    Atomics.notify(ctl, EPOCH);
  };
  const checkAbort = () => {
    if (Atomics.load(ctl, ABORT) !== 0) throw new AbortedRun('aborted by the caller');
  };
  /** Waits (one slice at most) for the epoch to move from what this device last saw. */
  const waitEpoch = async (): Promise<void> => {
    checkAbort();
    const r = waitAsync(ctl, EPOCH, seen, SLICE_MS);
    if (r.async) await r.value;
    checkAbort();
    const e = Atomics.load(ctl, EPOCH);
    if (e !== seen) {
      seen = e;
      lastProgress = now();
    } else if (now() - lastProgress > job.timeoutMs) {
      throw new StalledRun(
        `no device made progress for ${job.timeoutMs} ms (device ${device} waiting; timeoutMs)`,
      );
    }
  };
  /** Sums this device's column chunk of every tile whose P partials are all written, in order. */
  const reduceReady = (overlapped = false) => {
    while (nextReduce < T) {
      const tile = plan.tiles[nextReduce]!;
      if (Atomics.load(ctl, readySlot(tile.index)) !== P) return;
      const t0 = now();
      const rows = tile.rowEnd - tile.rowStart;
      const at = (tile.batch * dims.seqQ + tile.rowStart) * dims.dModel;
      for (let r = 0; r < rows; r++) {
        const row = r * dims.dModel;
        const y = output.subarray(at + row + c0, at + row + c1);
        // A fixed order (device 0, 1, ...): the same sum whatever the timing.
        const s0 = slotOf(0, tile.index) + row;
        y.set(partials.subarray(s0 + c0, s0 + c1));
        for (let p = 1; p < P; p++) {
          const src = slotOf(p, tile.index) + row + c0;
          for (let i = 0; i < c1 - c0; i++) y[i]! += partials[src + i]!;
        }
      }
      const ms = now() - t0;
      timing[T_REDUCE_MS]! += ms;
      if (overlapped) timing[T_REDUCE_OVERLAPPED_MS]! += ms;
      nextReduce++;
      bump(reducedSlot(T, tile.index), 1);
    }
  };

  // Fault in this device's partial slots and a 1/P share of the output's pages before the clock
  // starts:
  // with overlap off the slots hold every tile (P x the output), and first-touch page faults
  // inside the loop would be charged to the schedule.
  const page = 1024;
  for (let i = slotOf(device, 0); i < slotOf(device, 0) + S * slotFloats; i += page)
    partials[i] = 0;
  const outputFloats = dims.batch * dims.seqQ * dims.dModel;
  for (let i = device * page; i < outputFloats; i += P * page) output[i] = 0;
  timing[T_START] = now();
  for (const tile of plan.tiles) {
    // The slot of tile t held tile t - S: free once every device has reduced its chunk of it.
    const freed = () => tile.index < S || Atomics.load(ctl, reducedSlot(T, tile.index - S)) === P;
    while (!freed()) {
      if (plan.overlap) reduceReady();
      if (freed()) break;
      await waitEpoch();
    }
    checkAbort();
    await hooks.beforeTile?.(tile);
    const rows = tile.rowEnd - tile.rowStart;
    const out = partials.subarray(
      slotOf(device, tile.index),
      slotOf(device, tile.index) + rows * dims.dModel,
    );
    const t0 = now();
    let done = false;
    let t1 = 0;
    const computing = dev.computeTile(tile, out).finally(() => {
      done = true;
      t1 = now();
    });
    if (plan.overlap) {
      // Reduce what is ready while this tile computes; wake on either. An abort is seen once
      // the compute has settled: a worker is only ever stopped between engine calls.
      computing.catch(() => {});
      while (!done && Atomics.load(ctl, ABORT) === 0) {
        reduceReady(true);
        if (done) break;
        const r = waitAsync(ctl, EPOCH, seen, SLICE_MS);
        if (r.async) await Promise.race([r.value, computing]);
        seen = Atomics.load(ctl, EPOCH);
      }
    }
    await computing;
    timing[T_COMPUTE_MS]! += t1 - t0;
    checkAbort();
    lastProgress = now();
    bump(readySlot(tile.index), 1);
  }
  timing[T_COMPUTE_END] = now();
  for (;;) {
    reduceReady();
    if (nextReduce === T) break;
    await waitEpoch();
  }
  timing[T_END] = now();
}
