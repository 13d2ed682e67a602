import { describe, ValueError } from '@attnkit/tensor';

/**
 * Reuses GPU buffers by size class and usage. Creating a buffer costs a driver allocation;
 * kernels that run per layer allocate the same sizes again and again. Releasing a buffer while
 * earlier commands still use it is safe: WebGPU executes a queue's commands in order, so the
 * next user's writes come after them.
 */
export class BufferPool {
  private readonly free = new Map<string, GPUBuffer[]>();
  private cached = 0;
  /** Buffers handed out and not yet released, and their bytes. */
  live = 0;
  liveBytes = 0;
  /**
   * The most bytes handed out at once (liveBytes' peak) since the pool was made or
   * `resetHighWater()` last ran: what a caller with a GPU memory budget asserts against.
   */
  highWaterBytes = 0;

  constructor(
    private readonly device: GPUDevice,
    /** Bytes kept for reuse; past it released buffers are destroyed. */
    readonly maxCachedBytes = 512 * 1024 * 1024,
  ) {}

  /**
   * Size classes: multiples of 256 bytes up to 64 KiB, then steps of 1/8 of the power of two
   * below, so a reused buffer wastes at most ~12%.
   */
  static sizeClass(bytes: number): number {
    if (!Number.isInteger(bytes) || bytes < 0) {
      throw new ValueError(
        `bytes: expected a non-negative integer, got ${describe(bytes)}`,
        'bytes',
      );
    }
    const n = Math.max(bytes, 4);
    if (n <= 65536) return Math.ceil(n / 256) * 256;
    const step = 2 ** (Math.floor(Math.log2(n)) - 3);
    return Math.ceil(n / step) * step;
  }

  /** A buffer of at least `bytes` bytes (its `size` is the size class) with `usage`. */
  acquire(bytes: number, usage: GPUBufferUsageFlags, label?: string): GPUBuffer {
    const size = BufferPool.sizeClass(bytes);
    const key = `${usage}:${size}`;
    const list = this.free.get(key);
    let buffer = list?.pop();
    if (buffer) this.cached -= size;
    else buffer = this.device.createBuffer({ size, usage, label });
    this.live++;
    this.liveBytes += size;
    if (this.liveBytes > this.highWaterBytes) this.highWaterBytes = this.liveBytes;
    return buffer;
  }

  /**
   * Set by code that encodes GPU work later than its callers ask for it (@attnkit/nn's webgpu
   * kernels queue theirs): while it returns a promise, a released buffer goes back to the free
   * lists (or is destroyed) only once that promise settles, i.e. once the queued work that may
   * still read or write the buffer has been submitted. Queue order then makes reuse safe, as
   * for buffers released after a submit.
   */
  releaseFence: (() => Promise<unknown> | undefined) | undefined = undefined;

  release(buffer: GPUBuffer): void {
    const fence = this.releaseFence?.();
    if (fence) {
      const now = () => this.releaseNow(buffer);
      fence.then(now, now);
      return;
    }
    this.releaseNow(buffer);
  }

  /** release() without the fence: for buffers no queued work can use. */
  releaseNow(buffer: GPUBuffer): void {
    this.live--;
    this.liveBytes -= buffer.size;
    if (this.cached + buffer.size > this.maxCachedBytes) {
      buffer.destroy();
      return;
    }
    const key = `${buffer.usage}:${buffer.size}`;
    let list = this.free.get(key);
    if (!list) this.free.set(key, (list = []));
    list.push(buffer);
    this.cached += buffer.size;
  }

  /** Starts a new high-water mark at the bytes handed out now; returns them. */
  resetHighWater(): number {
    this.highWaterBytes = this.liveBytes;
    return this.liveBytes;
  }

  /** Bytes held for reuse. */
  get cachedBytes(): number {
    return this.cached;
  }

  /** Destroys every cached buffer (live ones are untouched). */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.cached = 0;
  }
}
