import { describe, ValueError } from '@attnkit/tensor';

export interface PassTiming {
  label: string;
  /** GPU time of the pass in nanoseconds (end - begin timestamps). */
  ns: number;
  /**
   * When the pass began, in nanoseconds after the first pass of the same read() began (gaps
   * between one pass's end and the next one's start are GPU time no timed pass used).
   */
  startNs: number;
}

/**
 * GPU time per compute pass from timestamp queries (feature 'timestamp-query'). Passes get
 * `timestampWrites` from `passTimestamps(label)`; `resolve(encoder)` copies the counters into a
 * readable buffer at the end of the command buffer, and `read()` maps it after submission.
 * Without the feature the profiler is disabled: passTimestamps returns undefined and read()
 * returns no timings, so callers need no branches.
 */
export class GpuProfiler {
  readonly enabled: boolean;
  private readonly querySet: GPUQuerySet | undefined;
  private readonly resolveBuffer: GPUBuffer | undefined;
  private readonly readBuffer: GPUBuffer | undefined;
  private labels: string[] = [];

  constructor(
    device: GPUDevice,
    /** Passes that can be timed between two read() calls. */
    readonly capacity = 64,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 2048) {
      throw new ValueError(
        `capacity: expected an integer in [1, 2048], got ${describe(capacity)}`,
        'capacity',
      );
    }
    this.enabled = device.features.has('timestamp-query');
    if (!this.enabled) return;
    const bytes = capacity * 2 * 8;
    this.querySet = device.createQuerySet({ type: 'timestamp', count: capacity * 2 });
    this.resolveBuffer = device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    this.readBuffer = device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
  }

  /** Timestamp writes for the next pass, or undefined when disabled or full. */
  passTimestamps(label: string): GPUComputePassTimestampWrites | undefined {
    if (!this.enabled || this.labels.length >= this.capacity) return undefined;
    const i = this.labels.length;
    this.labels.push(label);
    return {
      querySet: this.querySet!,
      beginningOfPassWriteIndex: 2 * i,
      endOfPassWriteIndex: 2 * i + 1,
    };
  }

  /** Records the copy of this command buffer's timestamps; call once, last. */
  resolve(encoder: GPUCommandEncoder): void {
    const n = this.labels.length;
    if (!this.enabled || n === 0) return;
    encoder.resolveQuerySet(this.querySet!, 0, 2 * n, this.resolveBuffer!, 0);
    encoder.copyBufferToBuffer(this.resolveBuffer!, 0, this.readBuffer!, 0, 2 * n * 8);
  }

  /** Timings of the passes recorded since the last read (after their submission). */
  async read(): Promise<PassTiming[]> {
    const labels = this.labels;
    this.labels = [];
    if (!this.enabled || labels.length === 0) return [];
    await this.readBuffer!.mapAsync(GPUMapMode.READ, 0, labels.length * 16);
    const ticks = new BigUint64Array(
      this.readBuffer!.getMappedRange(0, labels.length * 16).slice(0),
    );
    this.readBuffer!.unmap();
    const t0 = ticks[0]!;
    return labels.map((label, i) => ({
      label,
      ns: Number(ticks[2 * i + 1]! - ticks[2 * i]!),
      startNs: Number(ticks[2 * i]! - t0),
    }));
  }

  destroy(): void {
    this.querySet?.destroy();
    this.resolveBuffer?.destroy();
    this.readBuffer?.destroy();
  }
}
